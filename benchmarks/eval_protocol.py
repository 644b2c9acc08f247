"""Score a saved image set, and same-size random real subsets, under another evaluation protocol: the one of the
gradient- and distribution-matching papers' code, to tell how much of a gap to their figures is the evaluation.

    python benchmarks/eval_protocol.py OUTPUT_DIR ../shared/data/mnist --protocol sgd --augmentation crop_scale_rotate

hf_distill evaluates a matching set with 300 full-batch Adam steps at 1e-3 and no augmentation (`--protocol adam`,
the default here too). The DC/DM code (`VICO-UoE/DatasetCondensation`, `evaluate_synset`) trains each ConvNet with
SGD (momentum 0.9, weight decay 5e-4, step 0.01, divided by 10 after half of the epochs) and, for MNIST, passes each
image through one of crop, scale and rotate. `--protocol sgd` is that optimiser, one full batch per step (a set of
up to 256 images is one batch there too), the library's `eval_protocol="sgd"`; `--augmentation` applies one of the
given `hf_distill.augment` operations per step, with per-image parameters and DSA's ranges (rotations up to ±15°,
where DC's MNIST evaluation rotates up to ±45°). Each learner is `DistilledDataset.train_learner` with those
settings. Learner i starts from the init of seed `--seed + i` (as in benchmarks/per_model.py); its random real
subset, one real image for each synthetic image's class with a hard label, is drawn with the same seed and trained
the same way, so the baseline gets the same protocol.
"""

import argparse
import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F
from per_model import accuracy, pixel_batches, pixels_and_labels, real_image_data

from hf_distill import DistilledDataset
from hf_distill.augment import parse_augmentation
from hf_distill.selection import random_rows
from hf_distill.synthetic import initial_label_logits


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
        parse_augmentation(args.augmentation)
    except ValueError as e:
        parser.error(str(e))
    distilled = DistilledDataset.load(args.distilled)
    real = real_image_data(distilled, args.distilled, args.dataset)
    test_pixels, test_labels = pixels_and_labels(real.eval)
    train_pixels, train_labels = pixels_and_labels(real.train)
    classes = initial_label_logits(*distilled.soft_labels.shape).argmax(-1).tolist()  # as evaluate()'s baseline
    num_labels = distilled.soft_labels.shape[1]

    start, scores = time.time(), {"distilled": [], "random real": []}
    lr = 0.01 if args.protocol == "sgd" else 1e-3
    options = dict(protocol=args.protocol, steps=args.steps, lr=lr, augmentation=args.augmentation)
    for i in range(args.models):
        seed = args.seed + i
        rows = random_rows(train_labels, classes, seed)
        targets = F.one_hot(torch.as_tensor(train_labels[rows]), num_labels).float()
        subset = dataclasses.replace(distilled, inputs=train_pixels[rows], soft_labels=targets, step_sizes=None)
        for name, trained_on in (("distilled", distilled), ("random real", subset)):
            trained = trained_on.train_learner(seed=seed, **options)
            scores[name].append(accuracy(trained, pixel_batches(test_pixels), test_labels))
    print(f"protocol {args.protocol}, {args.steps} steps, augmentation {args.augmentation or 'none'}:")
    for name, values in scores.items():
        print(f"{name}: {np.mean(values):.4f} ± {np.std(values):.4f} ({' '.join(f'{v:.3f}' for v in values)})")
    print(f"{args.models} models, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
