"""What distillation adds over where it starts: evaluate a benchmark's synthetic set before any outer step.

    python benchmarks/start_probe.py text8/ag_news-textcnn-30pc-random-dm
    python benchmarks/start_probe.py text8/ag_news-textcnn-30pc-random-dm --synthetic_init kmeans

builds the row's `DistillationTrainer` (its flags, then any hf-distill flags given here) and runs `evaluate()` on the
starting set: the real examples it starts from (`synthetic_init` real or kmeans), with its initial labels, trained
like the row's distilled set (`num_eval_models` fresh learners). No baseline is trained: the row's record has it.
Prints one JSON line of the accuracy metrics; writes nothing to benchmarks/results.jsonl.
"""

import json
import sys
import tempfile

from run import SHARED_DATA, describe

from hf_distill import DistillationTrainer, load_real_data
from hf_distill.cli import parse_args
from hf_distill.data import load_input_embeddings


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    flags, _ = describe(argv[0], SHARED_DATA if SHARED_DATA.is_dir() else None, quick=False)
    with tempfile.TemporaryDirectory() as out:
        data_args, args = parse_args(
            flags + ["--eval_baseline", "false", "--report_to", "none", "--output_dir", out] + argv[1:]
        )
        embeddings = tokenizer = None
        if args.embedding_model:
            embeddings, tokenizer = load_input_embeddings(args.embedding_model)
        data = load_real_data(data_args, tokenizer=tokenizer, image_mean=args.image_mean, image_std=args.image_std)
        trainer = DistillationTrainer(
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            embedding_matrix=embeddings,
        )
        metrics = trainer.evaluate()
    print(json.dumps({"row": argv[0], "flags": argv[1:], **{k: v for k, v in metrics.items() if "accuracy" in k}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
