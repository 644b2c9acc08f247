"""Gradient matching and distribution matching (`distill_method`), on the toy image problem and a toy text one."""

import pytest
import torch
from conftest import quick_config

from hf_distill import DistillationConfig, DistillationTrainer, build_learner
from hf_distill.card import render_card
from hf_distill.evaluation import train_on_set
from hf_distill.learners import soft_cross_entropy
from hf_distill.methods import distribution_matching_loss, gradient_matching_loss, learner_features
from hf_distill.methods.unrolled import learner_logits

METHODS = ["gradient_matching", "distribution_matching"]


def objective(trainer, method, x, y, mask=None):
    """The method's loss on the whole real set `x, y` (text: with `mask`) under the trainer's fixed init."""
    synthetic = trainer.model
    x_syn, mask_syn, soft, _ = synthetic()
    classes = synthetic.label_logits.argmax(-1)
    params = trainer.fixed_init
    with torch.enable_grad():
        if method == "distribution_matching":
            return distribution_matching_loss(trainer.learner, params, x_syn, mask_syn, classes, x, mask, y)
        return gradient_matching_loss(trainer.learner, params, x_syn, mask_syn, soft, classes, x, mask, y)


@pytest.mark.parametrize("method", METHODS)
def test_matching_lowers_its_own_loss_and_changes_the_set(tmp_path, image_data, method):
    train, test = image_data
    args = quick_config(
        tmp_path, distill_method=method, learner_init="fixed", max_steps=30, learning_rate=0.05, num_eval_models=1
    )
    learner = build_learner("convnet", 4, image_size=8, width=8)
    trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=learner)
    real = train.with_format("torch")[:]
    x, y = real["pixel_values"], real["labels"]
    before_inputs = trainer.model.inputs.detach().clone()
    before = objective(trainer, method, x, y).item()
    trainer.train()
    after = objective(trainer, method, x, y).item()
    assert after < 0.8 * before, (before, after)
    assert not torch.equal(before_inputs, trainer.model.inputs.detach())
    assert not trainer.model.log_step_sizes.requires_grad  # nothing to learn them from
    metrics = trainer.evaluate()  # with Adam (eval_protocol defaults to "adam" for matching objectives)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_matching_lowers_its_own_loss_on_text(tmp_path, tiny_embedding_model, text_dataset_dir, method):
    from transformers import AutoTokenizer

    from hf_distill import load_real_data
    from hf_distill.data import DataArguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    data = load_real_data(DataArguments(dataset=text_dataset_dir, max_length=12), tokenizer=tokenizer)
    args = quick_config(
        tmp_path,
        distill_method=method,
        learner_init="fixed",
        embedding_model=tiny_embedding_model,
        learner="textcnn",
        synthetic_per_class=2,
        max_steps=30,
        learning_rate=0.05,
        per_device_train_batch_size=len(data.train),  # every outer step sees the whole (toy) training set
        num_eval_models=1,
    )
    trainer = DistillationTrainer(args=args, train_dataset=data.train, eval_dataset=data.eval)
    x, mask, y = trainer._real_inputs(next(iter(trainer.get_train_dataloader())))
    before_inputs = trainer.model.inputs.detach().clone()
    before = objective(trainer, method, x, y, mask).item()
    trainer.train()
    after = objective(trainer, method, x, y, mask).item()
    assert after < 0.8 * before, (before, after)
    assert not torch.equal(before_inputs, trainer.model.inputs.detach())


def test_distribution_matching_beats_random_real_subset(tmp_path, image_data):
    train, test = image_data
    args = quick_config(
        tmp_path,
        distill_method="distribution_matching",
        max_steps=100,
        learning_rate=0.1,
        num_eval_models=3,
        eval_train_steps=100,
        synthetic_init="noise",
    )
    learner = build_learner("convnet", 4, image_size=8, width=8)
    trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=learner)
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_accuracy"] > metrics["eval_baseline_accuracy"] + 0.1, metrics


def test_learners_return_their_penultimate_features():
    for name, inputs in (("lenet", torch.randn(2, 1, 28, 28)), ("convnet", torch.randn(2, 1, 8, 8))):
        learner = build_learner(name, 3, image_size=inputs.shape[-1]).eval()
        features = learner_features(learner, dict(learner.named_parameters()), inputs)
        assert features.shape[0] == 2 and features.dim() == 2
        head = learner.fc3 if name == "lenet" else learner.classifier
        assert torch.allclose(head(features), learner(pixel_values=inputs).logits)
    text = build_learner("textcnn", 2, hidden_size=8, width=4).eval()
    embeds, mask = torch.randn(2, 6, 8), torch.ones(2, 6)
    assert learner_features(text, dict(text.named_parameters()), embeds, mask).shape == (2, 12)


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"distill_method": "distribution_matching", "learn_labels": True}, "learn_labels"),
        ({"distill_method": "distribution_matching", "learn_step_sizes": True}, "learn_step_sizes"),
        ({"distill_method": "gradient_matching", "eval_protocol": "learned"}, "eval_protocol='learned'"),
        ({"distill_method": "gradient_matching", "backprop_steps": 2}, "backprop_steps"),
        ({"distill_method": "gradient_matching", "max_step_size": 0.1}, "max_step_size"),
        ({"distill_method": "gradient_matching", "per_layer_step_sizes": True}, "per_layer_step_sizes"),
        ({"distill_method": "gradient_matching", "inner_optimizer": "adam"}, "inner_optimizer='adam'"),
        ({"distill_method": "other"}, "distill_method must be one of"),
        ({"matching_outer_loop": 2}, "matching_outer_loop"),
        ({"distill_method": "gradient_matching", "matching_outer_loop": 0}, "matching_outer_loop"),
        ({"distill_method": "gradient_matching", "matching_inner_loop": 0}, "matching_inner_loop"),
    ],
)
def test_options_a_matching_objective_cannot_honour_fail_at_configuration(tmp_path, kwargs, option):
    with pytest.raises(ValueError, match=option.replace("(", r"\(")):
        DistillationConfig(output_dir=str(tmp_path), **kwargs)


def test_defaults_follow_the_method(tmp_path):
    dm = DistillationConfig(output_dir=str(tmp_path), distill_method="distribution_matching")
    assert (dm.learn_labels, dm.learn_step_sizes, dm.eval_protocol) == (False, False, "adam")
    gm = DistillationConfig(output_dir=str(tmp_path), distill_method="gradient_matching")
    assert (gm.learn_labels, gm.learn_step_sizes, gm.eval_protocol) == (True, False, "adam")
    unrolled = DistillationConfig(output_dir=str(tmp_path))
    assert (unrolled.learn_labels, unrolled.learn_step_sizes, unrolled.eval_protocol) == (True, True, "learned")
    assert (dm.eval_train_steps, unrolled.eval_train_steps) == (300, 300)
    sgd = DistillationConfig(output_dir=str(tmp_path), distill_method="distribution_matching", eval_protocol="sgd")
    assert sgd.eval_train_steps == 1000  # the DC/DM code's 1,000 epochs (one full batch each for a small set)
    with pytest.raises(ValueError, match="eval_protocol must be one of 'learned', 'adam', 'sgd'"):
        DistillationConfig(output_dir=str(tmp_path), eval_protocol="rmsprop")


def test_distribution_matching_trains_learners_on_hard_labels(tmp_path, image_data):
    """The labels it does not learn are the classes the examples were made for, exactly: smoothed ones (0.87 on the
    class for AG News' four) cost 120 real AG News texts 3.4 points (78.6 → 75.2 %, docs/benchmarks.md, AG News)."""
    train, _ = image_data
    args = quick_config(tmp_path, distill_method="distribution_matching", synthetic_per_class=2, max_steps=2)
    trainer = DistillationTrainer(args=args, train_dataset=train, learner=build_learner("convnet", 4, image_size=8))
    trainer.train()
    labels = trainer.distilled_dataset().soft_labels
    assert torch.equal(labels, torch.nn.functional.one_hot(labels.argmax(-1), 4).float())


def test_matching_needs_an_example_per_class(tmp_path, image_data):
    train, test = image_data
    args = quick_config(tmp_path, distill_method="gradient_matching", num_synthetic=2)
    with pytest.raises(ValueError, match="at least one synthetic example per class"):
        DistillationTrainer(args=args, train_dataset=train, eval_dataset=test)


def test_sgd_evaluation_is_the_matching_papers_sgd():
    """`optimizer="sgd"`: momentum 0.9, weight decay 5e-4, and the rate divided by 10 after half of the steps."""
    learner = build_learner("convnet", 3, num_channels=1, image_size=8, width=4).eval()
    params = {k: v.detach() for k, v in learner.named_parameters()}
    x, y = torch.randn(4, 1, 8, 8), torch.softmax(torch.randn(4, 3), -1)

    def gradients(p):
        p = {k: v.detach().requires_grad_() for k, v in p.items()}
        loss = soft_cross_entropy(learner_logits(learner, p, x, None), y)
        return dict(zip(p, torch.autograd.grad(loss, list(p.values()))))

    expected, momentum = dict(params), {}
    for step, rate in enumerate([0.1, 0.01]):  # 2 steps: the second after half of them
        g = gradients(expected)
        for k in expected:
            d = g[k] + 5e-4 * expected[k]
            momentum[k] = d if step == 0 else 0.9 * momentum[k] + d
            expected[k] = expected[k] - rate * momentum[k]
    trained = train_on_set(learner, params, x, None, y, steps=2, lr=0.1, optimizer="sgd")
    assert all(torch.allclose(trained[k], expected[k], atol=1e-6) for k in expected)


def test_evaluate_with_sgd_trains_the_set_and_the_baseline_alike_and_says_so(tmp_path, image_data):
    train, test = image_data

    def evaluate(**kw):
        args = quick_config(tmp_path, distill_method="distribution_matching", max_steps=1, eval_train_steps=20, **kw)
        learner = build_learner("convnet", 4, image_size=8, width=8)
        trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=learner)
        return trainer, trainer.evaluate()

    _, adam = evaluate()
    trainer, sgd = evaluate(eval_protocol="sgd")
    assert trainer.args.eval_learning_rate == 0.01  # SGD's default rate, not Adam's
    assert sgd["eval_accuracy"] != adam["eval_accuracy"]
    assert sgd["eval_baseline_accuracy"] != adam["eval_baseline_accuracy"]
    card = render_card(trainer.distilled_dataset()).text
    assert "20 full-batch SGD steps (momentum 0.9, weight decay 5e-4) at lr 0.01" in card


def _record_trajectory(trainer) -> list:
    """(outer step, synthetic inputs and labels as the step found them, the learner's weights) per outer step."""
    seen, weights_of = [], trainer._trajectory_weights

    def recording(x_syn, mask_syn, soft_labels, device):
        weights = weights_of(x_syn, mask_syn, soft_labels, device)
        seen.append((trainer.state.global_step, x_syn.detach().clone(), soft_labels.detach().clone(), weights))
        return weights

    trainer._trajectory_weights = recording
    return seen


def test_matching_cycle_trains_one_init_on_the_set_between_outer_steps(tmp_path, image_data):
    train, test = image_data
    args = quick_config(
        tmp_path, distill_method="gradient_matching", matching_outer_loop=3, matching_inner_loop=2, max_steps=4
    )
    trainer = DistillationTrainer(
        args=args, train_dataset=train, eval_dataset=test, learner=build_learner("convnet", 4, image_size=8, width=8)
    )
    seen = _record_trajectory(trainer)
    trainer.train()
    assert [step for step, *_ in seen] == [0, 1, 2, 3]
    init = trainer._learner_init(hash((args.seed, 104_729, 0)) % 2**31)
    assert all(torch.equal(seen[0][3][k], v) for k, v in init.items())  # the cycle starts from a fresh init
    _, x_syn, soft, weights = seen[1]  # ... trained 2 Adam steps on the set as outer step 1 found it
    expected = train_on_set(trainer.learner, init, x_syn, None, soft, steps=2, lr=args.eval_learning_rate)
    assert all(torch.allclose(weights[k], expected[k], atol=1e-6) for k in expected)
    assert not torch.equal(weights["classifier.weight"], init["classifier.weight"])
    second = trainer._learner_init(hash((args.seed, 104_729, 1)) % 2**31)
    assert all(torch.equal(seen[3][3][k], v) for k, v in second.items())  # step 3 starts the next cycle


def test_resume_continues_a_matching_cycle_where_it_stopped(tmp_path, image_data):
    train, test = image_data
    common = dict(distill_method="gradient_matching", matching_outer_loop=4, max_steps=6, seed=3)
    args = quick_config(tmp_path, save_strategy="steps", save_steps=3, **common)
    full = DistillationTrainer(
        args=args, train_dataset=train, eval_dataset=test, learner=build_learner("convnet", 4, image_size=8, width=8)
    )
    full.train()
    checkpoint = tmp_path / "out" / "checkpoint-3"  # in the middle of the first cycle (steps 0-3)
    assert (checkpoint / "matching_learner.safetensors").is_file()
    args = quick_config(tmp_path, save_strategy="no", output_dir=str(tmp_path / "resumed"), **common)
    resumed = DistillationTrainer(
        args=args, train_dataset=train, eval_dataset=test, learner=build_learner("convnet", 4, image_size=8, width=8)
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert torch.allclose(full.model.inputs, resumed.model.inputs, atol=1e-5)
    assert resumed.trajectory.cycle == full.trajectory.cycle == 1
    for name, weights in full.trajectory.weights().items():
        assert torch.allclose(weights, resumed.trajectory.weights()[name], atol=1e-5), name
