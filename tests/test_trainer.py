import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TOY_SETTINGS, quick_config
from datasets import ClassLabel, Dataset
from safetensors.torch import load_file
from transformers import TrainerCallback

import hf_distill.trainer
from hf_distill import DistillationDivergedError, DistillationTrainer, DistilledDataset, build_learner, load_real_data
from hf_distill.data import DataArguments, pixel_dataset
from hf_distill.environment import PORTABLE_CPU_ENV
from hf_distill.synthetic import AVERAGED


def small_convnet(num_labels=4):
    return build_learner("convnet", num_labels, image_size=8, width=8)


def test_synthetic_set_changes_during_training(tmp_path, image_data):
    train, test = image_data
    trainer = DistillationTrainer(
        args=quick_config(tmp_path), train_dataset=train, eval_dataset=test, learner=small_convnet()
    )
    assert trainer.args.eval_learning_rate == 1e-3  # hf_distill's own learners: Adam at 1e-3 for eval and baseline
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    for name, value in trainer.model.named_parameters():
        assert not torch.equal(before[name], value.detach()), f"{name} did not change"


def test_real_batches_are_pinned_only_where_there_is_an_accelerator(tmp_path, image_data, recwarn):
    from hf_distill.config import _has_accelerator

    train, test = image_data
    args = quick_config(tmp_path, max_steps=2)
    assert args.dataloader_pin_memory == _has_accelerator()
    assert not quick_config(tmp_path, use_cpu=True).dataloader_pin_memory
    DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=small_convnet()).train()
    assert not [w for w in recwarn if "pin_memory" in str(w.message)]


def test_distilled_set_beats_random_real_subset(tmp_path, image_data):
    train, test = image_data
    args = quick_config(tmp_path, max_steps=100, **TOY_SETTINGS)
    trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=small_convnet())
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_num_models"] == 3
    assert metrics["eval_accuracy"] > metrics["eval_baseline_accuracy"] + 0.1, metrics


def test_baseline_keeps_the_classes_the_set_was_made_for(tmp_path, image_data):
    train, test = image_data
    trainer = DistillationTrainer(
        args=quick_config(tmp_path, synthetic_per_class=2),
        train_dataset=train,
        eval_dataset=test,
        learner=small_convnet(),
    )
    with torch.no_grad():  # every learned label drifts to class 0
        trainer.model.label_logits.zero_()
        trainer.model.label_logits[:, 0] = 5.0
    drawn = []
    real_examples = trainer._real_examples
    trainer._real_examples = lambda dataset, classes, seed: (
        drawn.append(classes) or real_examples(dataset, classes, seed)
    )
    trainer.evaluate()
    assert drawn and all(sorted(classes) == [0, 0, 1, 1, 2, 2, 3, 3] for classes in drawn), drawn


def two_variant_images(n_per_variant=40, seed=0):
    """Four classes, each drawn half from one template and half from another (a bright quadrant or its opposite
    corner), with little noise: two clear sub-clusters per class. Returns the dataset and each row's variant."""
    rng = np.random.default_rng(seed)
    x, labels, variants = [], [], []
    for c in range(4):
        for v in range(2):
            template = -np.ones((1, 8, 8), dtype=np.float32)
            r, q = (c // 2, c % 2) if v == 0 else (1 - c // 2, 1 - c % 2)
            template[0, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] = 1.0
            template[0, 0, c] = 3.0  # a class mark, so the two variants of different classes differ
            x += [template + 0.3 * rng.standard_normal((1, 8, 8)).astype(np.float32) for _ in range(n_per_variant)]
            labels += [c] * n_per_variant
            variants += [v] * n_per_variant
    names = [f"class_{i}" for i in range(4)]
    return pixel_dataset(np.stack(x), labels, names, [0.0], [1.0]), np.array(variants)


def test_kmeans_init_starts_from_real_examples_that_cover_each_class(tmp_path):
    train, variants = two_variant_images()
    pixels = torch.tensor(np.stack(train["pixel_values"]))

    def start_rows(synthetic_init, seed):
        args = quick_config(tmp_path, synthetic_per_class=2, synthetic_init=synthetic_init, seed=seed)
        synthetic = DistillationTrainer(args=args, train_dataset=train, learner=small_convnet()).model
        classes = synthetic.label_logits.argmax(-1).tolist()
        # each synthetic example starts as one real example, exactly, of the class it stands for
        rows = [int((pixels == x).flatten(1).all(1).nonzero().item()) for x in synthetic.inputs.detach()]
        assert [int(train["labels"][r]) for r in rows] == classes
        return {c: sorted(variants[[r for r, k in zip(rows, classes) if k == c]]) for c in range(4)}

    covered = {"real": [], "kmeans": []}
    for seed in range(4):
        for init in covered:
            covered[init].append(all(v == [0, 1] for v in start_rows(init, seed).values()))
    assert all(covered["kmeans"])  # one medoid per sub-cluster of every class, whatever the seed
    assert not all(covered["real"])  # random picks cover all 8 sub-clusters with probability 1/16


def test_fixed_init_uses_one_init_and_saves_it(tmp_path, image_data, monkeypatch):
    train, test = image_data
    trainer = DistillationTrainer(
        args=quick_config(tmp_path, learner_init="fixed", eval_baseline=False),
        train_dataset=train,
        eval_dataset=test,
        learner=small_convnet(),
    )
    trainer.train()
    calls = []
    train_on_set = hf_distill.trainer.train_on_set
    monkeypatch.setattr(hf_distill.trainer, "train_on_set", lambda *a, **k: calls.append(1) or train_on_set(*a, **k))
    metrics = trainer.evaluate()
    assert metrics["eval_accuracy_std"] == 0.0  # every eval learner starts from the same init with the same steps
    # so the set is trained on once, not once per model
    assert metrics["eval_num_models"] == trainer.args.num_eval_models > 1 and len(calls) == 1
    trainer.save_model()
    saved = DistilledDataset.load(tmp_path / "out").learner_init
    assert all(torch.equal(saved[k], v) for k, v in trainer.fixed_init.items())


def test_fewer_synthetic_examples_than_classes(tmp_path, image_data):
    train, test = image_data
    trainer = DistillationTrainer(
        args=quick_config(tmp_path, num_synthetic=2), train_dataset=train, eval_dataset=test, learner=small_convnet()
    )
    trainer.train()
    distilled = trainer.distilled_dataset()
    assert distilled.inputs.shape == (2, 1, 8, 8) and distilled.soft_labels.shape == (2, 4)
    assert math.isfinite(trainer.evaluate()["eval_accuracy"])


def test_max_step_size_bounds_the_learned_step_sizes(tmp_path, image_data):
    train, test = image_data
    saved = {}
    for bound in (None, 0.03):
        args = quick_config(
            tmp_path,
            max_steps=8,
            step_size_init=0.02,
            step_size_learning_rate=0.3,
            max_step_size=bound,
            output_dir=str(tmp_path / str(bound)),
        )
        trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=small_convnet())
        trainer.train()
        trainer.save_model()
        saved[bound] = DistilledDataset.load(tmp_path / str(bound)).step_sizes
    assert saved[None].max() > 0.03  # the steps would grow past the bound without it
    assert saved[0.03].max() <= 0.03 + 1e-6 and torch.isclose(saved[0.03].max(), torch.tensor(0.03))
    with pytest.raises(ValueError, match="max_step_size must be >= step_size_init"):
        quick_config(tmp_path, step_size_init=0.05, max_step_size=0.01)


class SpikeAtStep12(DistillationTrainer):
    """Scales the outer loss of step 12 by `scale`: a gradient spike (1e4) or no gradient at all (0)."""

    scale = 1.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return loss * self.scale if self.state.global_step == 12 else loss


def test_skip_gradient_spikes_drops_the_spike_and_nothing_else(tmp_path, image_data):
    train, test = image_data

    def run(scale, skip):
        args = quick_config(tmp_path, max_steps=14, skip_gradient_spikes=skip, learning_rate=0.01)
        trainer = SpikeAtStep12(args=args, train_dataset=train, eval_dataset=test, learner=small_convnet())
        trainer.scale = scale
        trainer.train()
        return trainer.skipped_steps, [p.detach().clone() for p in trainer.model.parameters()]

    skipped_without_spike, without_spike = run(0.0, 50.0)  # step 12 contributes no gradient at all
    skipped_with_spike, with_spike = run(1e4, 50.0)
    _, spike_kept = run(1e4, None)
    assert (skipped_without_spike, skipped_with_spike) == (0, 1)
    assert all(torch.equal(a, b) for a, b in zip(with_spike, without_spike))  # the spike's gradient was dropped
    assert not all(torch.equal(a, b) for a, b in zip(spike_kept, without_spike))  # it moves the set when kept
    with pytest.raises(ValueError, match="skip_gradient_spikes must be > 1"):
        quick_config(tmp_path, skip_gradient_spikes=1.0)


def test_per_layer_step_sizes_are_learned_saved_and_used(tmp_path, image_data):
    train, test = image_data
    args = quick_config(tmp_path, max_steps=4, per_layer_step_sizes=True, step_size_learning_rate=0.3)
    learner = small_convnet()
    trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=learner)
    trainer.train()
    trainer.save_model()
    steps = DistilledDataset.load(args.output_dir).step_sizes
    assert steps.shape == (args.total_inner_steps, len(list(learner.parameters())))
    assert len(steps.unique()) > 1  # the tensors' rates moved apart from their common start
    assert math.isfinite(trainer.evaluate()["eval_accuracy"])


def test_adam_inner_steps_are_learned_saved_and_replayed(tmp_path, image_data):
    train, test = image_data
    weights, inputs = {}, {}
    for inner in ("sgd", "adam"):
        args = quick_config(
            tmp_path,
            max_steps=4,
            learner_init="fixed",
            inner_optimizer=inner,
            step_size_init=0.01,
            step_size_learning_rate=0.3,
            output_dir=str(tmp_path / inner),
        )
        trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=small_convnet())
        trainer.train()
        trainer.save_model()
        distilled = DistilledDataset.load(args.output_dir)
        assert not torch.allclose(distilled.step_sizes, torch.tensor(0.01))  # learned as Adam's rates too
        model = distilled.train_learner()  # what the card tells users to do: the steps evaluate() took
        x, y = torch.tensor(np.array(test["pixel_values"])), np.array(test["labels"])
        replayed = (model(pixel_values=x).logits.argmax(-1).numpy() == y).mean()
        assert math.isclose(replayed, trainer.evaluate()["eval_accuracy"], abs_tol=1e-6)
        weights[inner], inputs[inner] = [p.detach() for p in model.parameters()], distilled.inputs
    assert not torch.allclose(inputs["sgd"], inputs["adam"], atol=1e-4)  # distillation unrolled Adam's steps
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(weights["sgd"], weights["adam"]))
    with pytest.raises(ValueError, match="inner_optimizer must be"):
        quick_config(tmp_path, inner_optimizer="momentum")


def test_label_softmax_false_learns_unconstrained_labels_and_trains_on_them(tmp_path, image_data):
    train, test = image_data
    sets = {}
    for softmax in (True, False):
        args = quick_config(
            tmp_path, max_steps=6, label_softmax=softmax, label_learning_rate=0.05, learner_init="fixed"
        )
        trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=small_convnet())
        sets[softmax] = trainer.model()[2].detach().clone()  # the soft labels the set starts from
        trainer.train()
        trainer.save_model()
    torch.testing.assert_close(sets[False], sets[True])  # the same start: only the parametrisation differs
    saved = DistilledDataset.load(args.output_dir)
    torch.testing.assert_close(saved.soft_labels, trainer.model.label_logits.detach())  # the vectors themselves
    sums = saved.soft_labels.sum(-1)
    assert (sums - 1).abs().max() > 1e-3, sums  # no longer distributions
    assert "unconstrained real vectors" in (Path(args.output_dir) / "README.md").read_text()
    model = saved.train_learner()  # the replay trains on the same unconstrained labels as evaluate()
    x, y = torch.tensor(np.array(test["pixel_values"])), np.array(test["labels"])
    replayed = (model(pixel_values=x).logits.argmax(-1).numpy() == y).mean()
    assert math.isclose(replayed, trainer.evaluate()["eval_accuracy"], abs_tol=1e-6)


def test_label_softmax_does_not_change_fixed_labels(tmp_path, image_data):
    train, test = image_data
    inputs = []
    for softmax in (True, False):
        args = quick_config(tmp_path, max_steps=3, label_softmax=softmax, learn_labels=False, learner_init="fixed")
        trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=small_convnet())
        trainer.train()
        inputs.append(trainer.model.inputs.detach())
        torch.testing.assert_close(trainer.model()[2], torch.eye(4)[trainer.model.label_logits.argmax(-1)])
    torch.testing.assert_close(inputs[0], inputs[1])


class RecordSet(TrainerCallback):
    """Keeps the synthetic tensors the set starts from and has after each outer step."""

    def __init__(self):
        self.sets = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.sets.append([getattr(model, n).detach().clone() for n in AVERAGED])

    on_step_end = on_train_begin


def test_synthetic_ema_decay_evaluates_and_saves_the_moving_average(tmp_path, image_data):
    train, test = image_data
    args = quick_config(tmp_path, max_steps=6, synthetic_ema_decay=0.5, learner_init="fixed")
    record = RecordSet()
    trainer = DistillationTrainer(
        args=args, train_dataset=train, eval_dataset=test, learner=small_convnet(), callbacks=[record]
    )
    trainer.train()
    trainer.save_model()
    steps = record.sets[1:]  # outer step s of 6 weighs 0.5 ** (6 - s), normalised: the start is not in it
    weights = torch.tensor([0.5 ** (len(steps) - s) for s in range(1, len(steps) + 1)])
    weights /= weights.sum()
    inputs, label_logits, log_step_sizes = (sum(w * t[i] for w, t in zip(weights, steps)) for i in range(3))
    saved = DistilledDataset.load(args.output_dir)
    torch.testing.assert_close(saved.inputs, inputs)
    torch.testing.assert_close(saved.soft_labels, label_logits.softmax(-1))
    torch.testing.assert_close(saved.step_sizes, log_step_sizes.exp())
    assert not torch.allclose(saved.inputs, record.sets[-1][0], atol=1e-4)  # not the last set
    assert "exponential moving average (decay 0.5)" in (Path(args.output_dir) / "README.md").read_text()
    model = saved.train_learner()  # evaluate() trained on the average too: the same accuracy from the saved set
    x, y = torch.tensor(np.array(test["pixel_values"])), np.array(test["labels"])
    replayed = (model(pixel_values=x).logits.argmax(-1).numpy() == y).mean()
    assert math.isclose(replayed, trainer.evaluate()["eval_accuracy"], abs_tol=1e-6)
    with pytest.raises(ValueError, match="synthetic_ema_decay must be in"):
        quick_config(tmp_path, synthetic_ema_decay=1.0)


@pytest.mark.parametrize("ema_decay", [None, 0.5])
def test_checkpoint_resume_continues_from_the_same_state(tmp_path, image_data, ema_decay):
    train, test = image_data
    args = quick_config(
        tmp_path, max_steps=6, save_strategy="steps", save_steps=3, seed=3, synthetic_ema_decay=ema_decay
    )
    full = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=small_convnet())
    full.train()
    checkpoint = tmp_path / "out" / "checkpoint-3"
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "distillation.json").is_file()

    args = quick_config(
        tmp_path,
        max_steps=6,
        save_strategy="no",
        seed=3,
        output_dir=str(tmp_path / "resumed"),
        synthetic_ema_decay=ema_decay,
    )
    resumed = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=small_convnet())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 6
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), f"{name} differs after resume"
    saved = load_file(str(checkpoint / "model.safetensors")).keys()
    assert saved == full.model.state_dict().keys() and ("ema_inputs" in saved) == (ema_decay is not None)


def test_resume_with_settings_that_do_not_fit_is_one_clear_error(tmp_path, image_data):
    train, _ = image_data
    args = quick_config(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    DistillationTrainer(args=args, train_dataset=train, learner=small_convnet()).train()
    checkpoint = str(tmp_path / "out" / "checkpoint-2")
    cases = [
        (
            {"synthetic_per_class": 2},
            r"synthetic_per_class=1 there, 2 here; inputs \[4, 1, 8, 8\] there, \[8, 1, 8, 8\]",
        ),
        ({"inner_steps": 2}, r"inner_steps=3 there, 2 here; log_step_sizes \[3\] there, \[2\] here"),
        ({"learn_labels": False}, r"learn_labels=True there, False here\): resume with the settings"),
        ({"synthetic_ema_decay": 0.9}, r"ema_inputs absent there, \[4, 1, 8, 8\] here"),
    ]
    for change, message in cases:
        args = quick_config(tmp_path, max_steps=4, output_dir=str(tmp_path / "resumed"), **change)
        trainer = DistillationTrainer(args=args, train_dataset=train, learner=small_convnet())
        with pytest.raises(ValueError, match=f"checkpoint-2 does not fit this run \\(.*{message}"):
            trainer.train(resume_from_checkpoint=checkpoint)
    assert list((tmp_path / "resumed").iterdir()) == []  # made by Trainer.__init__, nothing written into it
    # Settings that leave the tensors and their optimiser alone resume as asked
    args = quick_config(tmp_path, max_steps=4, output_dir=str(tmp_path / "resumed"), inner_steps=1, inner_epochs=3)
    trainer = DistillationTrainer(args=args, train_dataset=train, learner=small_convnet())
    assert trainer.train(resume_from_checkpoint=checkpoint).global_step == 4


def test_load_best_model_at_end_keeps_the_set_that_scored_best(tmp_path, image_data):
    train, validation = image_data
    scores = iter([0.9, 0.5, 0.7])  # the evaluations at steps 2, 4 and 6: the first checkpoint is the best
    args = quick_config(
        tmp_path,
        max_steps=6,
        learner_init="fixed",  # one init: one compute_metrics call per evaluation
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
    )
    assert args.metric_for_best_model == "accuracy" and args.greater_is_better
    trainer = DistillationTrainer(
        args=args,
        train_dataset=train,
        eval_dataset=validation,
        learner=small_convnet(),
        compute_metrics=lambda _: {"accuracy": next(scores)},
    )
    trainer.train()
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2") and trainer.state.best_metric == 0.9
    out = tmp_path / "out"
    best, last = (load_file(str(out / f"checkpoint-{s}" / "model.safetensors")) for s in (2, 6))
    state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    assert all(torch.equal(state[k], best[k]) for k in best)  # the trainer holds the best set again
    assert not all(torch.equal(state[k], last[k]) for k in last)
    evaluations = [log for log in trainer.state.log_history if "eval_accuracy" in log]
    assert [log["step"] for log in evaluations] == [2, 4, 6]
    assert not any("eval_baseline_accuracy" in log for log in evaluations)  # the baseline waits for the end


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, image_data):
    train, test = image_data
    args = quick_config(tmp_path, max_steps=10, save_strategy="steps", save_steps=2)
    trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=small_convnet())
    original = trainer.compute_loss

    def compute_loss(model, inputs, **kwargs):  # the step sizes turn NaN after the first checkpoint
        if trainer.state.global_step >= 2:
            with torch.no_grad():
                trainer.model.log_step_sizes.fill_(float("nan"))
        return original(model, inputs, **kwargs)

    trainer.compute_loss = compute_loss
    with pytest.raises(DistillationDivergedError, match="diverged at step 2"):
        trainer.train()
    assert (tmp_path / "out" / "checkpoint-2" / "model.safetensors").is_file()
    assert torch.isfinite(DistilledDataset.load(tmp_path / "out" / "checkpoint-2").step_sizes).all()


def test_text_distillation_with_embedding_model(tmp_path, tiny_embedding_model, text_dataset_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    data = load_real_data(DataArguments(dataset=text_dataset_dir, max_length=12), tokenizer=tokenizer)
    args = quick_config(tmp_path, embedding_model=tiny_embedding_model, learner="textcnn", synthetic_per_class=2)
    trainer = DistillationTrainer(args=args, train_dataset=data.train, eval_dataset=data.eval)
    before = trainer.model.inputs.detach().clone()
    trainer.train()
    assert not torch.equal(before, trainer.model.inputs.detach())
    assert trainer.model.inputs.shape == (4, 12, 16)
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    trainer.save_model()
    distilled = DistilledDataset.load(tmp_path / "out")
    assert distilled.modality == "text" and len(distilled.previews[0].split()) == 12
    assert all(tok in tokenizer.get_vocab() for tok in distilled.previews[0].split())
    assert tokenizer("good movie")["input_ids"][1:3] == tokenizer.convert_tokens_to_ids(["good", "movie"])  # no [UNK]


def test_token_ids_beyond_the_embedding_matrix_are_an_error(tmp_path, tiny_embedding_model, text_dataset_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    data = load_real_data(DataArguments(dataset=text_dataset_dir, max_length=12), tokenizer=tokenizer)
    top = int(data.train[:]["input_ids"].max())
    args = quick_config(tmp_path, embedding_model=tiny_embedding_model, learner="textcnn")
    with pytest.raises(ValueError, match=f"token id {top}, beyond the {top} input embeddings of .*: tokenise it with"):
        DistillationTrainer(args=args, train_dataset=data.train, embedding_matrix=torch.randn(top, 16))
    assert not (tmp_path / "out").exists()


def test_token_rows_of_different_lengths_are_an_error(tmp_path, tiny_embedding_model):
    # Tokenised without padding, as for a DataCollatorWithPadding: a synthetic sequence needs one max_length
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    texts, labels = ["good movie", "bad boring film", "great film", "awful movie"], [1, 0, 1, 0]
    ragged = Dataset.from_dict({**tokenizer(texts), "label": labels})
    padded = Dataset.from_dict({**tokenizer(texts, padding="max_length", max_length=6), "label": labels})
    args = quick_config(tmp_path, embedding_model=tiny_embedding_model, learner="textcnn")
    with pytest.raises(ValueError, match=r"train_dataset's 'input_ids' rows have 4 to 5 tokens: pad them"):
        DistillationTrainer(args=args, train_dataset=ragged)
    with pytest.raises(ValueError, match=r"eval_dataset's 'input_ids' rows have 4 to 5 tokens: pad them"):
        DistillationTrainer(args=args, train_dataset=padded, eval_dataset=ragged)
    assert not (tmp_path / "out").exists()


def test_textlstm_learner_distils(tmp_path, tiny_embedding_model, text_dataset_dir):
    from transformers import AutoTokenizer

    data = load_real_data(
        DataArguments(dataset=text_dataset_dir, max_length=8),
        tokenizer=AutoTokenizer.from_pretrained(tiny_embedding_model),
    )
    args = quick_config(tmp_path, embedding_model=tiny_embedding_model, learner="textlstm", max_steps=2)
    trainer = DistillationTrainer(args=args, train_dataset=data.train, eval_dataset=data.eval)
    before = trainer.model.inputs.detach().clone()
    trainer.train()
    assert not torch.equal(before, trainer.model.inputs.detach())


def test_images_a_learner_cannot_take_are_an_error(tmp_path, image_data):
    train, _ = image_data  # 1x8x8
    learner = build_learner("convnet", 4, num_channels=1, image_size=32)
    with pytest.raises(ValueError, match="ConvNet is built for 1x32x32 images and these are 1x8x8"):
        DistillationTrainer(args=quick_config(tmp_path), train_dataset=train, learner=learner)
    wide = plain_dataset(np.zeros((8, 1, 8, 12), np.float32), [0, 1] * 4)
    with pytest.raises(ValueError, match="ConvNet takes square images; these are 8x12: resize them"):
        DistillationTrainer(args=quick_config(tmp_path, learner="convnet"), train_dataset=wide)
    assert not (tmp_path / "out").exists()


def test_a_dict_of_eval_datasets_is_evaluated_per_name_as_trainer_does(tmp_path, image_data):
    train, test = image_data
    half = test.select(range(100))
    config = quick_config(tmp_path, learner="convnet", eval_strategy="steps", eval_steps=5, eval_baseline=False)
    trainer = DistillationTrainer(args=config, train_dataset=train, eval_dataset={"all": test, "half": half})
    trainer.train()  # evaluates on both at step 5
    logs = trainer.state.log_history
    assert sum("eval_half_accuracy" in log for log in logs) == sum("eval_all_accuracy" in log for log in logs) == 1
    metrics = trainer.evaluate()
    assert metrics["eval_all_accuracy"] == trainer.evaluate(test)["eval_accuracy"]
    assert metrics["eval_half_num_examples"] == 100 and metrics["eval_all_num_examples"] == len(test)
    with pytest.raises(ValueError, match=r"eval_dataset\['empty'\] has no rows"):
        DistillationTrainer(args=config, train_dataset=train, eval_dataset={"all": test, "empty": test.select([])})


def test_predict_points_to_a_learner_trained_on_the_set(tmp_path, image_data):
    train, test = image_data
    trainer = DistillationTrainer(args=quick_config(tmp_path, learner="convnet"), train_dataset=train)
    with pytest.raises(
        NotImplementedError, match=r"train a learner on it \(trainer.distilled_dataset\(\).train_learner"
    ):
        trainer.predict(test)


def test_learner_label_count_mismatch_is_an_error(tmp_path, image_data):
    train, test = image_data
    with pytest.raises(ValueError, match="learner has 3 labels but the data has 4"):
        DistillationTrainer(args=quick_config(tmp_path), train_dataset=train, learner=small_convnet(num_labels=3))
    assert not (tmp_path / "out").exists()


def test_a_learner_for_the_other_modality_is_an_error(tmp_path, image_data, tiny_embedding_model, text_dataset_dir):
    from transformers import AutoTokenizer

    train, _ = image_data
    for learner in ("textcnn", "textlstm"):
        with pytest.raises(ValueError, match=f"learner '{learner}' is for text data and this dataset is images"):
            DistillationTrainer(args=quick_config(tmp_path, learner=learner), train_dataset=train)
    textcnn = build_learner("textcnn", 4, hidden_size=16)
    with pytest.raises(ValueError, match="learner TextCNN is for text data and this dataset is images"):
        DistillationTrainer(args=quick_config(tmp_path), train_dataset=train, learner=textcnn)
    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    text = load_real_data(DataArguments(dataset=text_dataset_dir, max_length=12), tokenizer=tokenizer).train
    args = quick_config(tmp_path, learner="lenet", embedding_model=tiny_embedding_model)
    with pytest.raises(ValueError, match="learner 'lenet' is for image data and this dataset is text: choose one"):
        DistillationTrainer(args=args, train_dataset=text)
    with pytest.raises(ValueError, match="learner ConvNet is for image data and this dataset is text"):
        DistillationTrainer(args=quick_config(tmp_path), train_dataset=text, learner=small_convnet(num_labels=2))
    assert not (tmp_path / "out").exists()


def test_evaluation_labels_beyond_the_training_classes_are_an_error(tmp_path, image_data):
    train, test = image_data
    trainer = DistillationTrainer(args=quick_config(tmp_path), train_dataset=train, learner=small_convnet())
    wider = test.cast_column("labels", ClassLabel(names=["a", "b", "c", "d", "e"]))
    wider = wider.map(lambda row: {"labels": 4 if row["labels"] == 3 else row["labels"]})
    with pytest.raises(ValueError, match=r"eval_dataset has label 4, and the training data has 4 classes \("):
        trainer.evaluate(wider)


def test_one_class_is_an_error(tmp_path, image_data):
    train, _ = image_data
    one = train.filter(lambda row: row["labels"] == 0).cast_column("labels", ClassLabel(names=["only"]))
    with pytest.raises(ValueError, match=r"labels have 1 class \(only\): .* needs at least two"):
        DistillationTrainer(args=quick_config(tmp_path), train_dataset=one, learner=small_convnet(num_labels=1))
    assert not (tmp_path / "out").exists()


def test_missing_columns_are_an_error(tmp_path, image_data):
    train, _ = image_data
    with pytest.raises(ValueError, match="no 'labels' or 'label' column"):
        DistillationTrainer(args=quick_config(tmp_path), train_dataset=train.remove_columns("labels"))
    with pytest.raises(ValueError, match="needs 'pixel_values' or 'input_ids'"):
        DistillationTrainer(args=quick_config(tmp_path), train_dataset=train.remove_columns("pixel_values"))


def plain_dataset(x, labels, fmt=None) -> Dataset:
    """A dataset as a user builds it: integer labels without a ClassLabel, in a given format."""
    return Dataset.from_dict({"pixel_values": x, "label": labels}).with_format(fmt)


@pytest.mark.parametrize("fmt", [None, "numpy", "torch"])
def test_a_plain_dataset_in_any_format_distils_like_the_loaders_output(tmp_path, image_data, fmt):
    # Integer labels (no ClassLabel), float64 pixels, lists / numpy / torch rows: the same run as pixel_dataset's
    train, test = image_data
    x, y = np.asarray(train["pixel_values"], dtype=np.float64), list(train["labels"])
    ex, ey = np.asarray(test["pixel_values"], dtype=np.float64), list(test["labels"])
    config = quick_config(tmp_path, learner="convnet")
    reference = DistillationTrainer(args=config, train_dataset=train, eval_dataset=test)
    reference.train()
    plain = DistillationTrainer(
        args=quick_config(tmp_path, learner="convnet"),
        train_dataset=plain_dataset(x, y, fmt),
        eval_dataset=plain_dataset(ex, ey, fmt),
    )
    plain.train()
    assert plain.class_names == ["0", "1", "2", "3"]
    torch.testing.assert_close(plain.model.inputs, reference.model.inputs)
    assert plain.evaluate()["eval_accuracy"] == reference.evaluate()["eval_accuracy"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, y: (x, [str(v) for v in y]), "'label' column holds strings, not class ids"),
        (lambda x, y: (x, [float(v) for v in y]), "'label' column holds float"),
        (lambda x, y: (x, [v if v != 1 else 4 for v in y]), "class ids up to 4 but none of 1:"),
        (lambda x, y: (x, [-1] + y[1:]), "'label' column has label -1: class ids start at 0"),
        (lambda x, y: ((x * 100).astype(np.int64), y), "pixel_values are int64: give normalised float pixels"),
        (lambda x, y: (x[:0], y[:0]), "train_dataset has no rows"),
    ],
)
def test_real_data_the_trainer_cannot_read_is_an_error_naming_it(tmp_path, image_data, change, message):
    train, _ = image_data
    x, y = change(np.asarray(train["pixel_values"]), list(train["labels"]))
    with pytest.raises(ValueError, match=re.escape(message)):
        DistillationTrainer(args=quick_config(tmp_path, learner="convnet"), train_dataset=plain_dataset(x, y))
    assert not (tmp_path / "out").exists()


def test_a_streaming_dataset_is_an_error_that_says_to_load_it_in_memory(tmp_path, image_data):
    train, test = image_data
    with pytest.raises(
        TypeError, match="train_dataset is of type IterableDataset, not datasets.Dataset: .* without stream"
    ):
        DistillationTrainer(args=quick_config(tmp_path), train_dataset=train.to_iterable_dataset())
    with pytest.raises(TypeError, match="eval_dataset is of type IterableDataset"):
        DistillationTrainer(args=quick_config(tmp_path), train_dataset=train, eval_dataset=test.to_iterable_dataset())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.remove_columns("labels"), "eval_dataset has no 'labels' or 'label' column"),
        (lambda d: d.remove_columns("pixel_values"), "eval_dataset needs 'pixel_values' or 'input_ids'"),
        (
            lambda d: plain_dataset(np.zeros((len(d), 1, 9, 9), np.float32), list(d["labels"])),
            "eval_dataset's images are [1, 9, 9] and the training images are [1, 8, 8]",
        ),
    ],
)
def test_an_eval_dataset_that_does_not_fit_fails_before_training(tmp_path, image_data, change, message):
    train, test = image_data
    with pytest.raises(ValueError, match=re.escape(message)):
        DistillationTrainer(
            args=quick_config(tmp_path, learner="convnet"), train_dataset=train, eval_dataset=change(test)
        )
    assert not (tmp_path / "out").exists()


def test_real_mnist_smoke(tmp_path):
    from conftest import shared_data

    data = load_real_data(DataArguments(dataset=shared_data("mnist"), max_train_samples=1000, eval_max_samples=200))
    trainer = DistillationTrainer(
        args=quick_config(tmp_path, learner="lenet", image_mean=data.image_mean, image_std=data.image_std),
        train_dataset=data.train,
        eval_dataset=data.eval,
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model()
    assert trainer.model.inputs.shape == (10, 1, 28, 28) and 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert (tmp_path / "out" / "preview.png").is_file()


PORTABLE_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import quick_config, toy_images
from hf_distill import DistillationTrainer, build_learner
from hf_distill.data import pixel_dataset
from hf_distill.environment import portable_cpu_kernels
from pathlib import Path
train = pixel_dataset(*toy_images(n_per_class=5), [f"c{{i}}" for i in range(4)], [0.0], [1.0])
learner = build_learner("convnet", 4, image_size=8, width=8)
DistillationTrainer(args=quick_config(Path({out!r}), full_determinism=True), train_dataset=train, learner=learner)
onednn, nnpack = torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled()
print("portable", portable_cpu_kernels(), "onednn", onednn, "nnpack", nnpack)
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="MKL's compatible mode is x86-64's")
@pytest.mark.parametrize("env_first", [False, True])
def test_full_determinism_on_cpu_warns_when_the_kernels_are_already_fixed(tmp_path, env_first):
    # ATen fixes its kernel level at torch's first operation (building the toy data here), so only variables set
    # before Python starts make a Trainer-API run portable; the trainer says so rather than recording a false promise
    script = PORTABLE_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_CPU_ENV} | (PORTABLE_CPU_ENV if env_first else {})
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"portable {env_first} onednn False nnpack False" in done.stdout  # NNPACK's convolutions need AVX2
    assert ("torch's CPU kernels were fixed before the trainer was built" in done.stderr) is not env_first
