"""Accuracy of the distilled set of every checkpoint of a run, on the test split and on training images.

    python benchmarks/checkpoints.py OUTPUT_DIR ../shared/data/mnist --models 1

Shows where in a run the set was good: whether accuracy rose steadily or swung, and whether a checkpoint chosen
on training data (`--validation_size` with `--load_best_model_at_end` does this on held-out examples) would beat the
last one. Image sets only; learner i starts from the set's fixed init, or else from seed `--seed + i`.
"""

import argparse
from pathlib import Path

import numpy as np
from per_model import accuracy, pixel_batches, pixels_and_labels, real_image_data

from hf_distill import DistilledDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", help="a folder written by hf-distill distill, with its checkpoint-N folders")
    parser.add_argument("dataset", help="the real dataset (a local folder or Hub id) the set was distilled from")
    parser.add_argument("--models", type=int, default=1, help="learners per checkpoint (1 is enough for a fixed init)")
    parser.add_argument("--train_examples", type=int, default=10_000, help="training images scored beside the test")
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    run = Path(args.output_dir)
    folders = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    if not folders:
        raise SystemExit(f"{run} has no checkpoint-N folders.")
    data = real_image_data(DistilledDataset.load(folders[0]), folders[0], args.dataset)
    train = data.train.shuffle(seed=123).select(range(min(args.train_examples, len(data.train))))
    splits = {"train": pixels_and_labels(train), "test": pixels_and_labels(data.eval)}
    print(f"{'checkpoint':>16}  train images  test")
    for folder in folders:
        distilled = DistilledDataset.load(folder)
        scores = {name: [] for name in splits}
        for i in range(args.models):
            learner = distilled.train_learner(seed=args.seed + i)
            for name, (pixels, labels) in splits.items():
                scores[name].append(accuracy(learner, pixel_batches(pixels), labels))
        train_acc, test_acc = (100 * np.mean(scores[n]) for n in ("train", "test"))
        print(f"{folder.name:>16}  {train_acc:11.2f} %  {test_acc:.2f} %", flush=True)


if __name__ == "__main__":
    main()
