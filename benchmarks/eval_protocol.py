"""Score a saved image set, and same-size random real subsets, under another evaluation protocol: the one of the
gradient- and distribution-matching papers' code, to tell how much of a gap to their figures is the evaluation.

    python benchmarks/eval_protocol.py OUTPUT_DIR ../shared/data/mnist --protocol sgd --augmentation crop_scale_rotate

hf_distill evaluates a matching set with 300 full-batch Adam steps at 1e-3 and no augmentation (`--protocol adam`,
the default here too). The DC/DM code (`VICO-UoE/DatasetCondensation`, `evaluate_synset`) trains each ConvNet with
SGD (momentum 0.9, weight decay 5e-4, step 0.01, divided by 10 after half of the epochs) and, for MNIST, passes each
image through one of crop, scale and rotate. `--protocol sgd` is that optimiser, one full batch per step (a set of
up to 256 images is one batch there too); `--augmentation` applies one of the given `hf_distill.augment` operations
per step, with per-image parameters and DSA's ranges (rotations up to ±15°, where DC's MNIST evaluation rotates up
to ±45°). Learner i starts from the init of seed `--seed + i` (as in benchmarks/per_model.py); its random real subset,
one real image for each synthetic image's class with a hard label, is drawn with the same seed and trained the same
way, so the baseline gets the same protocol.
"""

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from per_model import accuracy, pixels_and_labels, real_image_data

from hf_distill import DistilledDataset
from hf_distill.augment import augment, parse_augmentation
from hf_distill.learners import soft_cross_entropy
from hf_distill.selection import random_rows
from hf_distill.synthetic import initial_label_logits


def train(learner, inputs, targets, *, protocol: str, steps: int, ops: tuple[str, ...], seed: int):
    """Full-batch training of `learner` in place: Adam at 1e-3, or SGD as in the DC/DM code."""
    weights = [p for p in learner.parameters() if p.requires_grad]
    if protocol == "adam":
        optimizer = torch.optim.Adam(weights, lr=1e-3)
    else:
        optimizer = torch.optim.SGD(weights, lr=0.01, momentum=0.9, weight_decay=5e-4)
    for step in range(steps):
        if protocol == "sgd" and step == steps // 2:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        x = augment(inputs, ops, seed * 1_000_003 + step, per_example=True)
        optimizer.zero_grad()
        soft_cross_entropy(learner(pixel_values=x).logits, targets).backward()
        optimizer.step()
    return learner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distilled", help="a folder written by hf-distill distill (or DistilledDataset.save)")
    parser.add_argument("dataset", help="the real dataset (a local folder or Hub id); its test split is scored")
    parser.add_argument("--protocol", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--steps", type=int, default=300, help="full-batch steps (epochs, for a set of ≤ 256)")
    parser.add_argument("--augmentation", default="", help="hf_distill.augment operations, e.g. crop_scale_rotate")
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    try:
        ops = parse_augmentation(args.augmentation)
    except ValueError as e:
        parser.error(str(e))
    distilled = DistilledDataset.load(args.distilled)
    real = real_image_data(distilled, args.distilled, args.dataset)
    test_pixels, test_labels = pixels_and_labels(real.eval)
    train_pixels, train_labels = pixels_and_labels(real.train)
    classes = initial_label_logits(*distilled.soft_labels.shape).argmax(-1).tolist()  # as evaluate()'s baseline
    num_labels = distilled.soft_labels.shape[1]

    start, scores = time.time(), {"distilled": [], "random real": []}
    for i in range(args.models):
        seed = args.seed + i
        options = dict(protocol=args.protocol, steps=args.steps, ops=ops, seed=seed)
        fresh = distilled.train_learner(protocol="adam", steps=0, seed=seed)  # no step: the init of this seed
        trained = train(fresh, distilled.inputs, distilled.soft_labels, **options)
        scores["distilled"].append(accuracy(trained, test_pixels, test_labels))
        rows = random_rows(train_labels, classes, seed)
        targets = F.one_hot(torch.as_tensor(train_labels[rows]), num_labels).float()
        fresh = distilled.train_learner(protocol="adam", steps=0, seed=seed)
        trained = train(fresh, train_pixels[rows], targets, **options)
        scores["random real"].append(accuracy(trained, test_pixels, test_labels))
    print(f"protocol {args.protocol}, {args.steps} steps, augmentation {args.augmentation or 'none'}:")
    for name, values in scores.items():
        print(f"{name}: {np.mean(values):.4f} ± {np.std(values):.4f} ({' '.join(f'{v:.3f}' for v in values)})")
    print(f"{args.models} models, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
