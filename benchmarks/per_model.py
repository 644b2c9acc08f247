"""Accuracy of each of N fresh learners trained on a saved distilled set (what `evaluate()` averages).

    python benchmarks/per_model.py OUTPUT_DIR ../shared/data/mnist --models 10
    python benchmarks/per_model.py OUTPUT_DIR ../shared/data/imdb   # text: tokenised and embedded as the set was

A mean with a large standard deviation can hide one learner that diverged; this prints every learner's accuracy on
the dataset's test split (or the fixed subset `--eval_max_samples` selects, as `hf-distill distill` does), and the
set's learned step sizes. Learner i starts from the init of seed `--seed + i` and is trained as `evaluate()` trained
the set's learners (`DistilledDataset.train_learner`: learned step sizes, or Adam), or with the recipe that
`--protocol`, `--steps` and `--lr` give. Text sets are scored through the
tokenizer and frozen input embeddings of the embedding model they record, at their own sequence length.
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from hf_distill import DataArguments, DistilledDataset, load_real_data
from hf_distill.data import load_input_embeddings
from hf_distill.synthetic import SyntheticSet

IMAGE_BATCH = 1024  # real examples per forward pass
TEXT_BATCH = 256  # text is embedded a batch at a time: all of IMDB's test split at once would take ~10 GB


def real_image_data(distilled: DistilledDataset, where: str, dataset: str, max_samples: int | None = None):
    """The real dataset's splits scaled as the set's pixels were; exits unless `distilled` is an image set."""
    if distilled.modality != "image":
        raise SystemExit(f"{where} is a {distilled.modality} set; this script scores image sets.")
    mean, std = distilled.metadata.get("image_mean"), distilled.metadata.get("image_std")
    return load_real_data(DataArguments(dataset=dataset, eval_max_samples=max_samples), image_mean=mean, image_std=std)


def pixels_and_labels(split) -> tuple[torch.Tensor, np.ndarray]:
    return torch.tensor(np.asarray(split["pixel_values"]), dtype=torch.float32), np.asarray(split["labels"])


def pixel_batches(pixels: torch.Tensor):
    """For `accuracy`: the images as model inputs, batch by batch."""
    return lambda: ({"pixel_values": x} for x in pixels.split(IMAGE_BATCH))


def text_batches(distilled: DistilledDataset, dataset: str, max_samples: int | None = None):
    """For `accuracy`: the test split's reviews or sentences tokenised and embedded as the set's were (its embedding
    model, its sequence length), a batch at a time; and their labels."""
    embedding_model = distilled.metadata.get("embedding_model")
    if embedding_model is None:
        raise SystemExit("This text set records no embedding_model; its real text cannot be embedded.")
    matrix, tokenizer = load_input_embeddings(embedding_model)
    data_args = DataArguments(dataset=dataset, max_length=distilled.inputs.shape[1], eval_max_samples=max_samples)
    split = load_real_data(data_args, tokenizer=tokenizer).eval
    ids, mask = (torch.tensor(np.asarray(split[c])) for c in ("input_ids", "attention_mask"))

    def batches():
        for i, m in zip(ids.split(TEXT_BATCH), mask.split(TEXT_BATCH)):
            yield {"inputs_embeds": F.embedding(i, matrix), "attention_mask": m}

    return batches, np.asarray(split["labels"])


def last_set(distilled: DistilledDataset, folder: str) -> DistilledDataset:
    """The run's last set, from the raw state in `folder`'s model.safetensors, where `distilled` (the saved dataset)
    is the moving average a run with `synthetic_ema_decay` saves."""
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: --last needs the output folder of a run, not a bare dataset.")
    state = load_file(str(path))
    log_steps = state["log_step_sizes"]
    config = distilled.metadata.get("config") or {}
    groups = log_steps.shape[1] if log_steps.ndim == 2 else None  # per-layer step sizes
    synthetic = SyntheticSet(
        state["inputs"],
        state["label_logits"],
        len(log_steps),
        1.0,
        max_step_size=config.get("max_step_size"),
        num_step_size_groups=groups,
        label_softmax=config.get("label_softmax", True),
    )
    synthetic.load_state_dict(state, strict=False)  # the log step sizes, and the averages this module does not keep
    inputs, _, soft_labels, step_sizes = (t.detach() if t is not None else None for t in synthetic())
    return dataclasses.replace(distilled, inputs=inputs, soft_labels=soft_labels, step_sizes=step_sizes)


def accuracy(learner, batches, labels: np.ndarray) -> float:
    """`batches()` yields the model inputs of the examples whose `labels` are given, in order."""
    with torch.no_grad():
        predicted = torch.cat([learner(**inputs).logits.argmax(-1) for inputs in batches()])
    return float((predicted.numpy() == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distilled", help="a folder written by hf-distill distill (or DistilledDataset.save)")
    parser.add_argument("dataset", help="the real dataset (a local folder or Hub id); its test split is scored")
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--eval_max_samples", type=int, default=None, help="score this fixed subset of the split")
    parser.add_argument("--protocol", default=None, help="learned, adam or sgd (default: as the set was evaluated)")
    parser.add_argument("--steps", type=int, default=None, help="full-batch steps of adam or sgd")
    parser.add_argument("--lr", type=float, default=None, help="their step size")
    parser.add_argument(
        "--last", action="store_true", help="score a run's last set, not the moving average synthetic_ema_decay saves"
    )
    args = parser.parse_args()
    distilled = DistilledDataset.load(args.distilled)
    if args.last:
        distilled = last_set(distilled, args.distilled)
    if distilled.modality == "text":
        batches, labels = text_batches(distilled, args.dataset, args.eval_max_samples)
    else:
        pixels, labels = pixels_and_labels(
            real_image_data(distilled, args.distilled, args.dataset, args.eval_max_samples).eval
        )
        batches = pixel_batches(pixels)
    recipe = {"protocol": args.protocol, "steps": args.steps, "lr": args.lr}
    accuracies = [
        accuracy(distilled.train_learner(seed=args.seed + i, **recipe), batches, labels) for i in range(args.models)
    ]
    print("per model:", " ".join(f"{a:.3f}" for a in accuracies))
    print(f"mean {np.mean(accuracies):.4f} ± {np.std(accuracies):.4f}; median {np.median(accuracies):.4f}")
    print(f"test examples: {len(labels)}")
    if distilled.step_sizes is not None:  # large learned step sizes are what makes some inits diverge
        steps = distilled.step_sizes
        print(f"learned step sizes: {steps.min():.3f}-{steps.max():.3f} (mean {steps.mean():.3f})")


if __name__ == "__main__":
    main()
