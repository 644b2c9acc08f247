"""Differentiable augmentation (`augmentation`, `eval_augmentation`): Siamese for the matching objectives, a fresh
draw per synthetic image and inner step for the unrolled one."""

import pytest
import torch
from conftest import quick_config

from hf_distill import DistillationConfig, DistillationTrainer, DistilledDataset, build_learner
from hf_distill.augment import AUGMENTATIONS, augment, parse_augmentation
from hf_distill.card import render_card


def images(n=6, seed=0):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("op", AUGMENTATIONS)
def test_each_operation_is_seeded_differentiable_and_changes_the_images(op):
    x = images().requires_grad_()
    out = augment(x, (op,), seed=3)
    assert out.shape == x.shape
    assert torch.equal(out, augment(x, (op,), seed=3))
    outputs = [augment(x, (op,), seed=s) for s in range(8)]
    assert any(not torch.allclose(o, x) for o in outputs)  # flip leaves x alone for about half the seeds
    assert any(not torch.allclose(o, outputs[0]) for o in outputs[1:])
    sum(outputs).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", AUGMENTATIONS)
def test_siamese_draws_transform_every_example_alike(op):
    """One draw per call: real and synthetic examples augmented with the same seed go through the same transform."""
    real, synthetic = images(4, seed=1), images(2, seed=2)
    together = augment(torch.cat([real, synthetic]), (op,), seed=5)
    assert torch.allclose(together, torch.cat([augment(real, (op,), 5), augment(synthetic, (op,), 5)]), atol=1e-6)


def test_per_example_draws_differ_between_examples():
    x = images(1).expand(8, -1, -1, -1)
    out = augment(x, ("rotate",), seed=0, per_example=True)
    assert not torch.allclose(out[0], out[1])


def test_strategy_picks_several_operations_across_seeds():
    x = images(2)
    distinct = {augment(x, ("crop", "rotate", "color"), seed=s).sum().item() for s in range(12)}
    assert len(distinct) == 12
    assert augment(x, (), seed=0) is x


def test_parse_augmentation_names_the_unknown_operation():
    assert parse_augmentation("color_crop_cutout_flip_scale_rotate") == AUGMENTATIONS
    assert parse_augmentation(None) == ()
    with pytest.raises(ValueError, match="unknown operation.*'blur'"):
        parse_augmentation("color_blur")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"augmentation": "color_spin", "distill_method": "distribution_matching"}, "unknown operation"),
        ({"distill_method": "distribution_matching", "eval_augmentation": True}, "eval_augmentation"),
    ],
)
def test_augmentation_options_fail_at_configuration(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillationConfig(output_dir=str(tmp_path), **kwargs)


def test_text_data_refuses_augmentation(tmp_path, tiny_embedding_model, text_dataset_dir):
    from transformers import AutoTokenizer

    from hf_distill import load_real_data
    from hf_distill.data import DataArguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model)
    data = load_real_data(DataArguments(dataset=text_dataset_dir, max_length=12), tokenizer=tokenizer)
    args = quick_config(
        tmp_path,
        distill_method="distribution_matching",
        augmentation="crop",
        embedding_model=tiny_embedding_model,
        learner="textcnn",
    )
    with pytest.raises(ValueError, match="transforms images, and this dataset is text"):
        DistillationTrainer(args=args, train_dataset=data.train, eval_dataset=data.eval)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["gradient_matching", "distribution_matching"])
def test_matching_with_augmentation_trains_and_differs_from_without(tmp_path, image_data, method):
    train, test = image_data
    sets = {}
    for ops in (None, "crop_scale_rotate"):
        args = quick_config(
            tmp_path, distill_method=method, augmentation=ops, max_steps=10, learning_rate=0.05, num_eval_models=2
        )
        learner = build_learner("convnet", 4, image_size=8, width=8)
        trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=learner)
        before = trainer.model.inputs.detach().clone()
        trainer.train()
        sets[ops] = trainer.model.inputs.detach().clone()
        assert not torch.equal(before, sets[ops])
    assert not torch.allclose(sets[None], sets["crop_scale_rotate"])


def test_eval_augmentation_changes_the_evaluation_and_repeats(tmp_path, image_data):
    train, test = image_data

    def evaluate(**kwargs):
        args = quick_config(tmp_path, distill_method="distribution_matching", max_steps=1, **kwargs)
        learner = build_learner("convnet", 4, image_size=8, width=8)
        trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=learner)
        return trainer.evaluate()

    plain = evaluate(augmentation="crop")
    augmented = evaluate(augmentation="crop", eval_augmentation=True)
    assert augmented == evaluate(augmentation="crop", eval_augmentation=True)  # seeded
    assert augmented["eval_accuracy"] != plain["eval_accuracy"]
    assert augmented["eval_baseline_accuracy"] != plain["eval_baseline_accuracy"]  # the baseline is trained alike


def test_unrolled_with_augmentation_learns_another_set_and_replays_the_augmented_steps(tmp_path, image_data):
    train, test = image_data
    runs = {}
    for ops in (None, "crop_scale_rotate"):
        args = quick_config(
            tmp_path,
            augmentation=ops,
            eval_augmentation=bool(ops),
            max_steps=4,
            learner_init="fixed",
            output_dir=str(tmp_path / str(ops)),
        )
        trainer = DistillationTrainer(args=args, train_dataset=train, eval_dataset=test, learner=small_learner())
        trainer.train()
        trainer.save_model()
        runs[ops] = trainer
    plain, augmented = runs[None], runs["crop_scale_rotate"]
    assert not torch.allclose(plain.model.inputs, augmented.model.inputs, atol=1e-5)  # the unroll saw augmented images
    # The evaluation replays the learned steps on augmented images: one fixed init, yet the models differ
    metrics = augmented.evaluate()
    assert metrics == augmented.evaluate()  # seeded
    assert metrics["eval_accuracy"] != plain.evaluate()["eval_accuracy"]

    distilled = DistilledDataset.load(augmented.args.output_dir)
    card = render_card(augmented.distilled_dataset()).text  # with the evaluation's metrics
    assert "Each inner step trains on the synthetic images augmented with one of crop, scale, rotate" in card
    assert "learned step sizes (one full-batch gradient step each, each on images augmented with one of crop" in card

    def weights(model):
        return [p.detach() for p in model.parameters()]

    replayed = weights(distilled.train_learner())  # the learned steps, each on augmented images, as evaluated
    assert all(
        torch.equal(a, b) for a, b in zip(replayed, weights(distilled.train_learner(augmentation="crop_scale_rotate")))
    )
    assert any(not torch.equal(a, b) for a, b in zip(replayed, weights(distilled.train_learner(augmentation=""))))


def small_learner():
    return build_learner("convnet", 4, image_size=8, width=8)
