"""Accuracy of each of N fresh learners trained on a saved distilled image set (what `evaluate()` averages).

    python benchmarks/per_model.py OUTPUT_DIR ../shared/data/mnist --models 10

A mean with a large standard deviation can hide one learner that diverged; this prints every learner's accuracy on
the dataset's test split, and the set's learned step sizes. Learner i starts from the init of seed `--seed + i` and is
trained as `evaluate()` trained the set's learners (`DistilledDataset.train_learner`: learned step sizes, or Adam).
"""

import argparse

import numpy as np
import torch

from hf_distill import DataArguments, DistilledDataset, load_real_data


def real_image_data(distilled: DistilledDataset, where: str, dataset: str):
    """The real dataset's splits scaled as the set's pixels were; exits unless `distilled` is an image set."""
    if distilled.modality != "image":
        raise SystemExit(f"{where} is a {distilled.modality} set; this script scores image sets.")
    mean, std = distilled.metadata.get("image_mean"), distilled.metadata.get("image_std")
    return load_real_data(DataArguments(dataset=dataset), image_mean=mean, image_std=std)


def pixels_and_labels(split) -> tuple[torch.Tensor, np.ndarray]:
    return torch.tensor(np.asarray(split["pixel_values"]), dtype=torch.float32), np.asarray(split["labels"])


def accuracy(learner, pixels: torch.Tensor, labels: np.ndarray) -> float:
    with torch.no_grad():
        predicted = torch.cat([learner(pixel_values=x).logits.argmax(-1) for x in pixels.split(1024)])
    return float((predicted.numpy() == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distilled", help="a folder written by hf-distill distill (or DistilledDataset.save)")
    parser.add_argument("dataset", help="the real dataset (a local folder or Hub id); its test split is scored")
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    distilled = DistilledDataset.load(args.distilled)
    pixels, labels = pixels_and_labels(real_image_data(distilled, args.distilled, args.dataset).eval)
    accuracies = [accuracy(distilled.train_learner(seed=args.seed + i), pixels, labels) for i in range(args.models)]
    print("per model:", " ".join(f"{a:.3f}" for a in accuracies))
    print(f"mean {np.mean(accuracies):.4f} ± {np.std(accuracies):.4f}; median {np.median(accuracies):.4f}")
    if distilled.step_sizes is not None:  # large learned step sizes are what makes some inits diverge
        steps = distilled.step_sizes
        print(f"learned step sizes: {steps.min():.3f}-{steps.max():.3f} (mean {steps.mean():.3f})")


if __name__ == "__main__":
    main()
