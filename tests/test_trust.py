"""Trust-aware distillation on the toy image problem with 40 % symmetric label noise."""

import numpy as np
import pytest
import torch
from conftest import TOY_SETTINGS, quick_config, toy_images
from safetensors.torch import load_file

from hf_distill import DistillationConfig, DistillationTrainer, build_learner
from hf_distill.data import pixel_dataset
from hf_distill.methods.trust import TrustState, consistency_loss, small_loss_split
from hf_distill.noise import add_label_noise
from hf_distill.trainer import TRUST_STATE_FILE

NAMES = [f"class_{i}" for i in range(4)]


def noisy_toy(rate=0.4):
    train = pixel_dataset(*toy_images(seed=0), NAMES, [0.0], [1.0])
    test = pixel_dataset(*toy_images(n_per_class=50, seed=1), NAMES, [0.0], [1.0])
    noisy, record = add_label_noise(train, "symmetric", rate, seed=0)
    return noisy, test, record


def toy_trainer(tmp_path, train, test, trust_aware, max_steps=150, **kwargs):
    # 400 toy examples: one pass is 13 mini-batches, too few for a scoring learner
    kwargs = {"trust_real_epochs": 8, **kwargs}
    args = quick_config(
        tmp_path, max_steps=max_steps, trust_aware=trust_aware, trust_interval=30, **TOY_SETTINGS, **kwargs
    )
    learner = build_learner("convnet", 4, image_size=8, width=8)
    return DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=learner)


def distil(tmp_path, train, test, trust_aware, max_steps=150, **kwargs):
    trainer = toy_trainer(tmp_path, train, test, trust_aware, max_steps, **kwargs)
    trainer.train()
    return trainer, trainer.evaluate()


def test_trust_aware_finds_the_clean_labels_and_beats_plain_distillation(tmp_path):
    train, test, record = noisy_toy()
    _, plain = distil(tmp_path / "plain", train, test, trust_aware=False)
    trainer, trusted = distil(tmp_path / "trust", train, test, trust_aware=True)
    rounds = [log for log in trainer.state.log_history if "trust_trusted" in log]
    assert [r["step"] for r in rounds] == [0, 30, 60, 90, 120]
    clean_share = 1 - record["changed"]
    assert all(r["trust_trusted_precision"] > clean_share + 0.2 for r in rounds), (clean_share, rounds)
    assert rounds[-1]["trust_trusted"] > rounds[0]["trust_trusted"]  # the trusted space grows
    recalibrated = sum(r["trust_recalibrated"] for r in rounds)
    right = sum(r["trust_recalibrated_right"] for r in rounds)
    assert recalibrated >= 20 and right / recalibrated > 0.8, (recalibrated, right)
    assert trusted["eval_accuracy"] > plain["eval_accuracy"] + 0.03, (trusted, plain)
    assert trusted["eval_trust_trusted_precision"] == rounds[-1]["trust_trusted_precision"]


def test_without_recalibration_only_the_split_changes(tmp_path):
    train, test, _ = noisy_toy()
    trainer, metrics = distil(
        tmp_path, train, test, trust_aware=True, trust_recalibrate=False, trust_learners="synthetic", max_steps=60
    )
    rounds = [log for log in trainer.state.log_history if "trust_trusted" in log]
    assert len(rounds) == 1 and rounds[0]["trust_recalibrated"] == 0
    assert (trainer.trust.labels.numpy() == np.asarray(train["labels"])).all()  # no label was changed
    assert rounds[0]["trust_trusted_share"] < 0.9


def test_soft_untrusted_keeps_every_row_with_the_learners_prediction(tmp_path):
    train, test, _ = noisy_toy()
    trainer, _ = distil(tmp_path, train, test, trust_aware=True, trust_untrusted="soft", max_steps=60)
    state, rows = trainer.trust, torch.arange(len(train))
    assert state.predicted.shape == (len(train), 4)
    assert torch.allclose(state.predicted.sum(1), torch.ones(len(train)))
    untrusted = ~state.trusted
    assert 0 < untrusted.sum() < len(train)
    targets = state.targets(rows, 4)
    assert torch.equal(targets[untrusted], state.predicted[untrusted])
    assert torch.equal(targets[state.trusted].argmax(1), state.labels[state.trusted])
    assert (targets[state.trusted].max(1).values == 1).all()
    # the objective sees every row of a batch, the untrusted ones with their soft targets
    x = torch.arange(len(train), dtype=torch.float).unsqueeze(1)
    kept, _, y = trainer._trusted_rows(rows, x, None)
    assert torch.equal(kept, x) and y.shape == (len(train), 4)


def test_learners_trained_on_the_trusted_real_data_score_from_step_0(tmp_path):
    train, test, record = noisy_toy()
    trainer, _ = distil(tmp_path, train, test, trust_aware=True, max_steps=40)
    rounds = [log for log in trainer.state.log_history if "trust_trusted" in log]
    assert [r["step"] for r in rounds] == [0, 30]  # no wait for the synthetic set to be trained
    assert all(r["trust_seconds"] > 0 for r in rounds)
    assert rounds[1]["trust_total_seconds"] == round(rounds[0]["trust_seconds"] + rounds[1]["trust_seconds"], 2)
    clean_share = 1 - record["changed"]
    assert rounds[0]["trust_trusted_precision"] > clean_share + 0.3, (clean_share, rounds)
    assert rounds[0]["trust_recalibrated_right"] > 0.9 * rounds[0]["trust_recalibrated"] > 0, rounds


def test_resume_continues_from_the_checkpoints_trusted_split(tmp_path):
    train, test, _ = noisy_toy()
    full = toy_trainer(tmp_path / "full", train, test, True, max_steps=45, save_strategy="steps", save_steps=40)
    full.train()
    checkpoint = tmp_path / "full" / "out" / "checkpoint-40"
    saved = TrustState.from_tensors(load_file(checkpoint / TRUST_STATE_FILE))
    assert (saved.labels != torch.as_tensor(train["labels"])).any()  # rounds at steps 0 and 30 relabelled some
    resumed = toy_trainer(tmp_path / "resumed", train, test, True, max_steps=45)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    # the history comes with the checkpoint: rounds at steps 0 and 30, none redone after the resume at step 40
    assert [log["step"] for log in resumed.state.log_history if "trust_trusted" in log] == [0, 30]
    assert torch.equal(resumed.trust.labels, full.trust.labels)
    assert torch.equal(resumed.trust.trusted, full.trust.trusted)
    assert resumed.trust_logs == full.trust_logs
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), f"{name} differs after resume"

    with pytest.raises(ValueError, match="holds the trusted split of 400 examples, but train_dataset has 399"):
        toy_trainer(tmp_path / "other", train.select(range(399)), test, True).train(str(checkpoint))


def test_consistency_loss_compares_a_noisy_copy_with_the_clean_prediction_as_target():
    torch.manual_seed(0)
    weight = torch.randn(16, 3, requires_grad=True)
    logits_fn = lambda x, mask: x @ weight  # noqa: E731
    x = torch.randn(32, 16)
    small, large = (consistency_loss(logits_fn, x, None, noise, seed=0) for noise in (0.05, 1.0))
    assert 0 < small < large  # a KL divergence, larger the further the copy is from the example
    assert consistency_loss(logits_fn, x, None, 0.05, seed=0) == small  # the noise is seeded
    assert consistency_loss(logits_fn, x, None, 0.05, seed=1) != small
    (grad,) = torch.autograd.grad(large, weight)
    assert grad.abs().sum() > 0  # it reaches what the logits depend on, through the noisy copy only


def test_consistency_term_adds_to_the_trusted_objective(tmp_path):
    train, test, _ = noisy_toy()
    losses = {}
    for weight in (0.0, 1.0):
        trainer = toy_trainer(tmp_path / str(weight), train, test, True, max_steps=1, trust_consistency_weight=weight)
        batch = next(iter(trainer.get_train_dataloader()))  # the same batch and learner init for both
        losses[weight] = trainer.compute_loss(trainer.model, batch).item()
    assert losses[1.0] > losses[0.0]
    trainer, metrics = distil(tmp_path / "run", train, test, True, max_steps=40, trust_consistency_weight=1.0)
    train_loss = next(log["train_loss"] for log in trainer.state.log_history if "train_loss" in log)
    assert np.isfinite(train_loss) and metrics["eval_accuracy"] > 0.5, metrics


def test_class_weights_give_each_trusted_class_its_share_of_the_data():
    labels = torch.tensor([0] * 6 + [1] * 6 + [2] * 3)
    trusted = torch.tensor([True] * 6 + [True, True, False, False, False, False] + [True, False, False])
    state = TrustState(labels=labels, trusted=trusted)
    weights = state.class_weights(4)
    # weighted, the trusted classes stand as 6 : 6 : 3 as in the data, and the mean weight of a trusted example is 1
    counts = torch.bincount(labels[trusted], minlength=4) * weights
    assert torch.allclose(counts[:3] / counts[:3].sum(), torch.tensor([6.0, 6.0, 3.0]) / 15)
    assert torch.isclose(weights[labels[trusted]].mean(), torch.tensor(1.0))
    assert torch.allclose(TrustState.start(labels).class_weights(3), torch.ones(3))  # all trusted: no weighting


def test_class_balance_weights_the_trusted_objective(tmp_path):
    train, test, _ = noisy_toy()
    losses = {}
    for balance in (False, True):
        trainer = toy_trainer(tmp_path / str(balance), train, test, True, max_steps=1, trust_class_balance=balance)
        trainer.trust.trusted[torch.as_tensor(trainer.train_labels) == 0] = False
        trainer.trust.trusted[: len(train) // 8] = True  # the toy rows run class by class: half of true class 0
        batch = next(iter(trainer.get_train_dataloader()))  # the same batch and learner init for both
        trainer.state.global_step = 1  # past the round at step 0, which would redo the split
        losses[balance] = trainer.compute_loss(trainer.model, batch).item()
    assert losses[True] != pytest.approx(losses[False])
    with pytest.raises(ValueError, match="trust_class_balance .* set trust_aware=True and trust_untrusted='drop'"):
        DistillationConfig(output_dir=str(tmp_path), trust_class_balance=True)
    with pytest.raises(ValueError, match="does not support trust_class_balance"):
        DistillationConfig(
            output_dir=str(tmp_path), distill_method="gradient_matching", trust_aware=True, trust_class_balance=True
        )


def test_small_loss_split_keeps_the_low_loss_mode_of_each_class():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    noisy = rng.random(200) < 0.3
    losses = np.where(noisy, rng.normal(3.0, 0.3, 200), rng.normal(0.5, 0.2, 200))
    trusted = small_loss_split(losses, labels, 2)
    assert (trusted == ~noisy).mean() > 0.97


def test_keep_fraction_trusts_that_share_of_each_class_with_the_smallest_losses():
    labels = np.array([0] * 10 + [1] * 4)
    losses = np.concatenate([np.arange(10.0)[::-1], [0.3, 0.1, 0.4, 0.2]])  # class 0: rows 9, 8, ... lowest
    trusted = small_loss_split(losses, labels, 2, keep_fraction=0.3)
    assert trusted.sum() == 3 + 1
    assert set(np.flatnonzero(trusted)) == {9, 8, 7, 11}


def test_trust_aware_needs_two_examples_per_class(tmp_path):
    train = pixel_dataset(np.zeros((5, 1, 8, 8), np.float32), [0, 0, 1, 1, 2], ["a", "b", "c"], [0.0], [1.0])
    with pytest.raises(ValueError, match="at least two real examples per class.*'c' has 1"):
        DistillationTrainer(args=quick_config(tmp_path, trust_aware=True), train_dataset=train, eval_dataset=train)


def test_trust_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="trust_interval and trust_models must be >= 1 and trust_real_epochs > 0"):
        DistillationConfig(output_dir=str(tmp_path), trust_aware=True, trust_interval=0)
    with pytest.raises(ValueError, match="does not support trust_untrusted='soft'"):
        DistillationConfig(
            output_dir=str(tmp_path), distill_method="gradient_matching", trust_aware=True, trust_untrusted="soft"
        )
    with pytest.raises(ValueError, match="trust_untrusted must be one of 'drop', 'soft'"):
        DistillationConfig(output_dir=str(tmp_path), trust_aware=True, trust_untrusted="keep")
    with pytest.raises(ValueError, match="trust_learners must be one of 'synthetic', 'real'"):
        DistillationConfig(output_dir=str(tmp_path), trust_aware=True, trust_learners="experts")
    with pytest.raises(ValueError, match=r"trust_keep_fraction must be in \(0, 1\] \(got 0.0\)"):
        DistillationConfig(output_dir=str(tmp_path), trust_aware=True, trust_keep_fraction=0.0)
    with pytest.raises(ValueError, match="a term of trust-aware distillation: set trust_aware=True"):
        DistillationConfig(output_dir=str(tmp_path), trust_consistency_weight=1.0)
    with pytest.raises(ValueError, match="trust_consistency_weight must be >= 0 and trust_consistency_noise > 0"):
        DistillationConfig(output_dir=str(tmp_path), trust_aware=True, trust_consistency_noise=0.0)
    with pytest.raises(ValueError, match="does not support trust_consistency_weight"):
        DistillationConfig(
            output_dir=str(tmp_path),
            distill_method="distribution_matching",
            trust_aware=True,
            trust_consistency_weight=1,
        )


def test_the_embedding_model_scores_noisy_text(tmp_path, tiny_pretrained_model, text_dataset_dir):
    """`trust_learners="embedding_model"` fine-tunes the embedding model itself on the trusted sentences and splits
    by its losses: after 30 passes the split finds the clean labels; after one mini-batch it finds nothing."""
    from transformers import AutoTokenizer

    from hf_distill import DataArguments, load_real_data

    tokenizer = AutoTokenizer.from_pretrained(tiny_pretrained_model)
    noise = {"label_noise_type": "symmetric", "label_noise_rate": 0.3}
    data = load_real_data(DataArguments(dataset=text_dataset_dir, max_length=12, **noise), tokenizer=tokenizer, seed=0)
    clean_share = float(np.mean(np.asarray(data.train["labels"]) == np.asarray(data.train["clean_labels"])))

    def first_round(epochs):
        args = quick_config(
            tmp_path / f"epochs{epochs}",
            embedding_model=tiny_pretrained_model,
            trust_aware=True,
            trust_learners="embedding_model",
            trust_batch_size=16,
            trust_real_epochs=epochs,
            trust_recalibrate=False,
        )
        trainer = DistillationTrainer(args=args, train_dataset=data.train, processing_class=tokenizer)
        assert set(trainer.trust_scorer_params) >= {"classifier.weight"}  # the embedding model as a classifier
        trainer._trust_round()
        return trainer.trust_logs

    trained = first_round(epochs=30)
    assert trained["trusted_precision"] > clean_share + 0.2, (clean_share, trained)
    barely = first_round(epochs=0.01)  # one mini-batch of 16 at a fine-tuning rate: the head has hardly moved
    assert barely["trusted_precision"] < clean_share + 0.1, (clean_share, barely)


def test_the_embedding_model_scorer_needs_text(tmp_path):
    train, _, _ = noisy_toy()
    args = quick_config(tmp_path, trust_aware=True, trust_learners="embedding_model")
    with pytest.raises(ValueError, match="trust_learners='embedding_model' fine-tunes the embedding model of text"):
        DistillationTrainer(args=args, train_dataset=train)
    with pytest.raises(ValueError, match=r"trust_batch_size must be >= 1 \(got 0\)"):
        DistillationConfig(output_dir=str(tmp_path), trust_aware=True, trust_batch_size=0)
