"""Label-noise injection: seeded, recorded, clean labels kept aside; the mappings of the noisy-label literature."""

import json

import numpy as np
import pytest
from conftest import QUICK_FLAGS as QUICK

from hf_distill.cli import main
from hf_distill.data import pixel_dataset
from hf_distill.noise import ASYMMETRIC_MAPPINGS, CLEAN_LABELS, add_label_noise, noisy_labels

LABELS = np.repeat(np.arange(10), 500)


def test_symmetric_noise_moves_the_given_share_to_other_classes_reproducibly():
    noisy = noisy_labels(LABELS, "symmetric", 0.4, 10, seed=0)
    changed = noisy != LABELS
    assert abs(changed.mean() - 0.4) < 0.03
    assert len(np.unique(noisy[changed])) == 10  # spread over every class, never the true one (changed)
    assert np.array_equal(noisy, noisy_labels(LABELS, "symmetric", 0.4, 10, seed=0))
    assert not np.array_equal(noisy, noisy_labels(LABELS, "symmetric", 0.4, 10, seed=1))


def test_asymmetric_noise_follows_the_mnist_mapping():
    mapping = ASYMMETRIC_MAPPINGS["mnist"]
    noisy = noisy_labels(LABELS, "asymmetric", 0.4, 10, seed=0, mapping=mapping)
    changed = noisy != LABELS
    assert all(noisy[i] == mapping[LABELS[i]] for i in np.flatnonzero(changed))
    assert not changed[~np.isin(LABELS, list(mapping))].any()  # classes without a target keep their labels
    assert abs(changed[np.isin(LABELS, list(mapping))].mean() - 0.4) < 0.04


def dataset(num_classes, n=400):
    labels = [i % num_classes for i in range(n)]
    return pixel_dataset(
        np.zeros((n, 1, 2, 2), np.float32), labels, [str(c) for c in range(num_classes)], [0.0], [1.0]
    )


def test_two_classes_flip_one_way_and_the_clean_labels_are_kept():
    noised, record = add_label_noise(dataset(2), "asymmetric", 0.3, seed=0)
    clean, noisy = np.asarray(noised[CLEAN_LABELS]), np.asarray(noised["labels"])
    assert np.array_equal(clean, np.arange(400) % 2)
    assert set(zip(clean[clean != noisy].tolist(), noisy[clean != noisy].tolist())) == {(0, 1)}
    assert record["changed"] == pytest.approx((clean != noisy).mean())
    assert (record["type"], record["rate"], record["seed"]) == ("asymmetric", 0.3, 0)


def test_asymmetric_noise_needs_a_mapping_or_pair_flip():
    with pytest.raises(ValueError, match="label_noise_pair_flip"):
        add_label_noise(dataset(4), "asymmetric", 0.3, seed=0)
    noised, record = add_label_noise(dataset(4), "asymmetric", 0.3, seed=0, pair_flip=True)
    assert record["mapping"] == {"0": 1, "1": 2, "2": 3, "3": 0}


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_rates_outside_zero_one_are_refused(rate):
    with pytest.raises(ValueError, match=r"label_noise_rate must be in \[0, 1\)"):
        add_label_noise(dataset(4), "symmetric", rate, seed=0)


def test_cli_records_the_noise_with_the_set_and_on_its_card(tmp_path, image_dataset_dir):
    out = tmp_path / "out"
    flags = ["--label_noise_type", "symmetric", "--label_noise_rate", "0.4", "--learner", "convnet"]
    assert main(["distill", "--dataset", image_dataset_dir, "--output_dir", str(out), *flags, *QUICK]) == 0
    noise = json.loads((out / "distillation.json").read_text())["label_noise"]
    assert (noise["type"], noise["rate"], noise["seed"]) == ("symmetric", 0.4, 42)
    assert 0.25 < noise["changed"] < 0.55  # 120 training images
    assert "symmetric noise at rate 40%" in (out / "README.md").read_text()
