"""Accuracy on real text of a classifier fine-tuned on a distilled text set with the plain `Trainer`.

    python benchmarks/plain_trainer.py DISTILLED ../shared/models/all-MiniLM-L6-v2 ../shared/data/imdb \
        --eval_max_samples 2000

Runs `examples/finetune_distilled.py` (the plain `Trainer` with `DistilledDataCollator` and `soft_label_loss`, then
`pipeline("text-classification")` on raw text) with the texts of the dataset's test split, and prints how many it
classifies right: the path a user takes, end to end, scored. `--eval_max_samples N` takes the same fixed subset as the
distillation's own `--eval_max_samples N`.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from finetune_distilled import main as finetune_and_classify  # noqa: E402

from hf_distill import DistilledDataset  # noqa: E402
from hf_distill.data import eval_subset, find_preset, label_names_of, load_raw  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distilled", help="a folder written by hf-distill distill")
    parser.add_argument("model", help="the classifier to fine-tune: an id or path with the set's input embeddings")
    parser.add_argument("dataset", help="the real dataset (a local folder or Hub id) whose test split is classified")
    parser.add_argument("--eval_max_samples", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--output_dir", default="/tmp/hf_distill_benchmarks/plain-trainer")
    args = parser.parse_args()

    test = load_raw(args.dataset)["test"]
    if args.eval_max_samples:
        test = eval_subset(test, args.eval_max_samples)
    preset = find_preset(args.dataset)
    text_column = preset.input_columns[0] if preset else "text"
    label_column = preset.label_column if preset else "label"
    names = label_names_of(test, label_column)
    set_names = DistilledDataset.load(args.distilled).label_names
    if names != set_names:
        raise SystemExit(f"{args.dataset} has labels {names}, but {args.distilled} has {set_names}.")

    start = time.perf_counter()
    flags = ["--output_dir", args.output_dir, "--epochs", str(args.epochs), "--learning_rate", str(args.learning_rate)]
    predictions = finetune_and_classify([args.distilled, args.model, *test[text_column], *flags])
    right = sum(names.index(p["label"]) == y for p, y in zip(predictions, test[label_column]))
    result = {
        "accuracy": right / len(test),
        "num_examples": len(test),
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
