"""Accuracy of each of N fresh learners trained on a saved distilled image set (what `evaluate()` averages).

    python benchmarks/per_model.py OUTPUT_DIR ../shared/data/mnist --models 10

A mean with a large standard deviation can hide one learner that diverged; this prints every learner's accuracy on
the dataset's test split, and the set's learned step sizes. Learner i starts from the init of seed `--seed + i`.
"""

import argparse

import numpy as np
import torch

from hf_distill import DataArguments, DistilledDataset, load_real_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distilled", help="a folder written by hf-distill distill (or DistilledDataset.save)")
    parser.add_argument("dataset", help="the real dataset (a local folder or Hub id); its test split is scored")
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    distilled = DistilledDataset.load(args.distilled)
    if distilled.modality != "image":
        raise SystemExit(f"{args.distilled} is a {distilled.modality} set; this script scores image sets.")
    mean, std = distilled.metadata.get("image_mean"), distilled.metadata.get("image_std")
    data = load_real_data(DataArguments(dataset=args.dataset), image_mean=mean, image_std=std)  # the set's scaling
    test = data.eval
    pixels = torch.tensor(np.asarray(test["pixel_values"]), dtype=torch.float32)
    labels = np.asarray(test["labels"])
    accuracies = []
    for i in range(args.models):
        learner = distilled.train_learner(seed=args.seed + i)
        with torch.no_grad():
            predicted = torch.cat([learner(pixel_values=x).logits.argmax(-1) for x in pixels.split(1024)])
        accuracies.append(float((predicted.numpy() == labels).mean()))
    print("per model:", " ".join(f"{a:.3f}" for a in accuracies))
    print(f"mean {np.mean(accuracies):.4f} ± {np.std(accuracies):.4f}; median {np.median(accuracies):.4f}")
    if distilled.step_sizes is not None:  # large learned step sizes are what makes some inits diverge
        steps = distilled.step_sizes
        print(f"learned step sizes: {steps.min():.3f}-{steps.max():.3f} (mean {steps.mean():.3f})")


if __name__ == "__main__":
    main()
