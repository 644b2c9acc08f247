import logging

import numpy as np
from conftest import quick_config

from hf_distill import DistillationTrainer
from hf_distill.selection import nearest_distinct, random_rows


def test_a_class_named_twice_gets_two_different_rows_while_it_has_them():
    labels = np.array([0, 0, 1, 1, 1, 2])
    for seed in range(50):
        rows = random_rows(labels, [0, 1, 0, 1, 1, 2, 2], seed)
        assert [labels[r] for r in rows] == [0, 1, 0, 1, 1, 2, 2]
        assert len(set(rows[:5])) == 5  # classes 0 and 1 have enough rows for every request
        assert rows[5] == rows[6] == 5  # class 2 has one row: it repeats


def test_without_repeats_the_rows_are_independent_draws_as_before():
    # Sets recorded before repeats were redrawn start from the same rows when no row came up twice
    labels = np.repeat(np.arange(3), 1000)
    classes = [0, 1, 2] * 4
    rng = np.random.default_rng(7)
    independent = [int(rng.choice(np.flatnonzero(labels == c))) for c in classes]
    assert len(set(independent)) == len(classes) and random_rows(labels, classes, 7) == independent


def test_more_synthetic_examples_than_real_ones_warns(tmp_path, image_data, caplog):
    train, _ = image_data  # 100 per class
    with caplog.at_level(logging.WARNING, logger="hf_distill.trainer"):
        trainer = DistillationTrainer(
            args=quick_config(tmp_path, learner="convnet", synthetic_per_class=101), train_dataset=train
        )
    assert "101 synthetic examples of class 'class_0' start from its 100 real examples" in caplog.text
    synthetic = trainer.model
    class_0 = synthetic.inputs.detach()[synthetic.label_logits.argmax(-1) == 0]
    assert len(class_0) == 101 and len({x.numpy().tobytes() for x in class_0}) == 100  # one repeat, no more


def test_two_centres_nearest_one_row_take_different_rows():
    features = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 1.0]])
    assert nearest_distinct(np.array([[0.0, 0.1], [0.0, 0.2], [5.0, 5.0]]), features) == [0, 2, 1]
    assert nearest_distinct(np.array([[0.0, 0.9], [5.0, 4.0]]), features) == [2, 1]  # no clash: the nearest rows
