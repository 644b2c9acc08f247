"""Label noise for experiments: corrupt a share of the training labels, seeded, keeping the clean ones aside.

Symmetric noise moves a label to another class chosen uniformly; asymmetric noise moves it to a fixed similar class
(the mappings of the noisy-label literature, e.g. Patrini et al., CVPR 2017; Han et al., NeurIPS 2018), or to the
next class (pair flip, i -> i+1) when asked to; with two classes it flips one direction only (class 0 -> class 1).
"""

import numpy as np
from datasets import Dataset

NOISE_TYPES = ("symmetric", "asymmetric")
CLEAN_LABELS = "clean_labels"  # the column that keeps the true labels of a noised training split
ASYMMETRIC_MAPPINGS = {  # preset name -> {true class: noisy class}
    "mnist": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},  # truck->automobile, bird->airplane, deer->horse, cat<->dog
}


def check_noise_options(noise_type: str | None, rate: float) -> None:
    """The options that can be checked without the data."""
    if noise_type is not None and noise_type not in NOISE_TYPES:
        raise ValueError(f"label_noise_type must be one of {', '.join(NOISE_TYPES)} (got {noise_type!r}).")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label_noise_rate must be in [0, 1) (got {rate}).")
    if rate > 0 and noise_type is None:
        raise ValueError("label_noise_rate needs label_noise_type (symmetric or asymmetric).")


def asymmetric_mapping(num_labels: int, preset: str | None, pair_flip: bool) -> dict[int, int]:
    """The class each class is flipped to under asymmetric noise."""
    if num_labels == 2:
        return {0: 1}
    if preset in ASYMMETRIC_MAPPINGS:
        return ASYMMETRIC_MAPPINGS[preset]
    if pair_flip:
        return {c: (c + 1) % num_labels for c in range(num_labels)}
    raise ValueError(
        f"No known asymmetric label-noise mapping for this dataset (preset {preset!r}, {num_labels} classes); "
        f"known: {', '.join(ASYMMETRIC_MAPPINGS)} and any two-class data. Pass label_noise_pair_flip=True to flip "
        "each class i into class i+1."
    )


def noisy_labels(labels: np.ndarray, noise_type: str, rate: float, num_labels: int, seed: int, mapping=None):
    """`labels` with a share `rate` corrupted: every example (of a mapped class, for asymmetric) flips with
    probability `rate`."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    flip = rng.random(len(labels)) < rate
    noisy = labels.copy()
    if noise_type == "symmetric":  # another class, uniformly: shift by 1..K-1
        noisy[flip] = (labels[flip] + rng.integers(1, num_labels, flip.sum())) % num_labels
    else:
        target = np.array([mapping.get(c, c) for c in range(num_labels)])
        noisy[flip] = target[labels[flip]]
    return noisy


def add_label_noise(
    dataset: Dataset,
    noise_type: str,
    rate: float,
    seed: int,
    preset: str | None = None,
    pair_flip: bool = False,
    label_column: str = "labels",
) -> tuple[Dataset, dict]:
    """Corrupt `label_column`, keep the true labels in `clean_labels`, and describe what was done."""
    check_noise_options(noise_type, rate)
    num_labels = dataset.features[label_column].num_classes
    mapping = asymmetric_mapping(num_labels, preset, pair_flip) if noise_type == "asymmetric" else None
    clean = np.asarray(dataset[label_column])
    noisy = noisy_labels(clean, noise_type, rate, num_labels, seed, mapping)
    noised = (
        dataset.rename_column(label_column, CLEAN_LABELS)
        .add_column(label_column, noisy.tolist(), feature=dataset.features[label_column])
        .with_format(dataset.format["type"])
    )
    record = {
        "type": noise_type,
        "rate": rate,
        "seed": seed,
        "changed": float((noisy != clean).mean()),
        "mapping": None if mapping is None else {str(k): v for k, v in mapping.items()},
    }
    return noised, record


def describe(record: dict | None) -> str | None:
    """One line for the dataset card."""
    if not record:
        return None
    what = f"{record['type']} noise at rate {record['rate']:.0%} (seed {record['seed']})"
    return f"{what}, {record['changed']:.1%} of the training labels changed"
