import json

import pytest
import torch
from conftest import image_set, text_set
from datasets import load_dataset

import hf_distill
from hf_distill import DistilledDataset
from hf_distill.synthetic import DATA_FILE, META_FILE, initial_label_logits


@pytest.mark.parametrize("make", [image_set, text_set])
def test_save_load_is_exact(tmp_path, make):
    distilled = make()
    distilled.save(tmp_path / "set")
    loaded = DistilledDataset.load(tmp_path / "set")
    assert torch.equal(loaded.inputs, distilled.inputs)
    assert torch.equal(loaded.soft_labels, distilled.soft_labels)
    assert torch.equal(loaded.step_sizes, distilled.step_sizes)
    assert loaded.label_names == distilled.label_names and loaded.modality == distilled.modality
    as_json = json.loads(json.dumps(distilled.metadata))  # tuples come back as lists
    assert loaded.metadata == {**as_json, "hf_distill_version": hf_distill.__version__}
    if distilled.attention_mask is not None:
        assert torch.equal(loaded.attention_mask, distilled.attention_mask) and loaded.previews == distilled.previews
    if distilled.learner_init is not None:
        assert all(torch.equal(loaded.learner_init[k], v) for k, v in distilled.learner_init.items())


def test_saved_set_is_a_plain_dataset_with_previews(tmp_path):
    image_set().save(tmp_path / "images")
    text_set().save(tmp_path / "text")
    images = load_dataset(str(tmp_path / "images"), split="train")
    assert images.features["label"].names == ["a", "b", "c"] and len(images) == 6
    assert images[0]["image"].size == (8, 8)
    assert (tmp_path / "images" / "preview.png").is_file()
    text = load_dataset(str(tmp_path / "text"), split="train")
    assert text.column_names == ["labels", "label", "inputs_embeds", "attention_mask", "preview"]
    assert (
        "[pos]" in (tmp_path / "text" / "preview.txt").read_text()
        or "[neg]" in (tmp_path / "text" / "preview.txt").read_text()
    )


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DistilledDataset.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a distilled set"):
        DistilledDataset.load(tmp_path / "empty")
    image_set().save(tmp_path / "newer")
    meta = json.loads((tmp_path / "newer" / META_FILE).read_text())
    (tmp_path / "newer" / META_FILE).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match=r"format 99.0, which this hf_distill \(format 1.0\) cannot read"):
        DistilledDataset.load(tmp_path / "newer")


def test_newer_minor_format_keys_warn_and_are_ignored(tmp_path):
    image_set().save(tmp_path / "set")
    meta = json.loads((tmp_path / "set" / META_FILE).read_text())
    (tmp_path / "set" / META_FILE).write_text(json.dumps({**meta, "format_version": "1.7", "new_field": 3}))
    with pytest.warns(UserWarning, match=r"ignoring keys unknown .*\['new_field'\]"):
        loaded = DistilledDataset.load(tmp_path / "set")
    assert "new_field" not in loaded.metadata and torch.equal(loaded.inputs, image_set().inputs)


def test_data_from_another_save_is_refused(tmp_path):
    image_set().save(tmp_path / "a")
    other = image_set()
    other.inputs = other.inputs + 1
    other.save(tmp_path / "b")
    (tmp_path / "a" / DATA_FILE).write_bytes((tmp_path / "b" / DATA_FILE).read_bytes())
    with pytest.raises(ValueError, match="does not match distillation.json"):
        DistilledDataset.load(tmp_path / "a")


@pytest.mark.parametrize("make", [image_set, text_set])
def test_train_learner_rebuilds_the_learner_and_trains_it(make):
    distilled = make()
    model = distilled.train_learner()
    assert type(model).__name__ == distilled.metadata["learner"]
    untrained = distilled.train_learner(protocol="adam", steps=0)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), untrained.parameters()))
    with pytest.raises(ValueError, match="protocol must be"):
        distilled.train_learner(protocol="rmsprop")
    if distilled.modality == "image":
        other, message = hf_distill.build_learner("textcnn", 3, hidden_size=7), "TextCNN is for text data"
    else:
        other, message = (
            hf_distill.build_learner("convnet", 2, num_channels=1, image_size=8),
            "ConvNet is for image data",
        )
    with pytest.raises(ValueError, match=message):
        distilled.train_learner(other)


def test_train_learner_with_a_learner_for_other_images_is_an_error():
    distilled = image_set()  # 1x8x8 images
    for kwargs, built in (
        ({"num_channels": 3, "image_size": 8}, "3x8x8"),
        ({"num_channels": 1, "image_size": 32}, "1x32x32"),
    ):
        learner = hf_distill.build_learner("convnet", 3, **kwargs)
        with pytest.raises(
            ValueError, match=f"ConvNet is built for {built} images and these are 1x8x8: build it with"
        ):
            distilled.train_learner(learner)


def test_train_learner_follows_the_protocol_the_set_was_evaluated_with():
    """A matching objective's set (no learned step sizes) is trained as `evaluate()` trained it: with Adam."""
    distilled = image_set()
    distilled.metadata["config"] = {"eval_protocol": "adam", "eval_train_steps": 7, "eval_learning_rate": 0.01}

    def weights(model):
        return [p.detach() for p in model.parameters()]

    default = weights(distilled.train_learner())
    assert all(
        torch.equal(a, b) for a, b in zip(default, weights(distilled.train_learner(protocol="adam", steps=7, lr=0.01)))
    )
    assert any(not torch.equal(a, b) for a, b in zip(default, weights(distilled.train_learner(protocol="learned"))))


def test_train_learner_with_sgd_gets_sgd_defaults_and_augments_images_only():
    distilled = image_set()  # evaluated with the learned step sizes: Adam's settings in its config are the baseline's
    distilled.metadata["config"] = {"eval_protocol": "learned", "eval_train_steps": 7, "eval_learning_rate": 0.5}

    def weights(model):
        return [p.detach() for p in model.parameters()]

    sgd = weights(distilled.train_learner(protocol="sgd", steps=3))
    at_its_rate = weights(distilled.train_learner(protocol="sgd", steps=3, lr=0.01))
    assert all(torch.equal(a, b) for a, b in zip(sgd, at_its_rate))
    assert any(not torch.equal(a, b) for a, b in zip(sgd, weights(distilled.train_learner(protocol="adam", steps=3))))
    crop = weights(distilled.train_learner(protocol="sgd", steps=3, augmentation="crop"))
    assert any(not torch.equal(a, b) for a, b in zip(sgd, crop))
    # a set evaluated with SGD and augmentation is trained that way again by default
    distilled.metadata["config"] = {"eval_protocol": "sgd", "eval_train_steps": 3, "eval_learning_rate": 0.01}
    distilled.metadata["config"].update(eval_augmentation=True, augmentation="crop")
    assert all(torch.equal(a, b) for a, b in zip(crop, weights(distilled.train_learner())))
    with pytest.raises(ValueError, match="augmentation transforms images; this is a text set"):
        text_set().train_learner(protocol="sgd", augmentation="crop")


def test_initial_labels_cover_every_class_even_with_fewer_examples():
    logits = initial_label_logits(3, 7)
    assert (logits.max(0).values > 0).all()  # every class is some example's label
    assert logits.argmax(-1).tolist() == [0, 1, 2]
    assert initial_label_logits(4, 2).argmax(-1).tolist() == [0, 1, 0, 1]


def test_fixed_labels_are_exact_and_learned_ones_start_soft():
    fixed = initial_label_logits(4, 2, learned=False).softmax(-1)
    assert torch.equal(fixed, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    covering = initial_label_logits(2, 4, learned=False).softmax(-1)  # each example covers two classes
    assert torch.equal(covering, torch.tensor([[0.5, 0.0, 0.5, 0.0], [0.0, 0.5, 0.0, 0.5]]))
    learned = initial_label_logits(4, 2).softmax(-1)
    assert (learned > 0.01).all() and (learned.argmax(-1) == fixed.argmax(-1)).all()


def test_per_tensor_step_sizes_must_match_the_learner():
    distilled = image_set()
    num_tensors = len(list(distilled.train_learner(protocol="adam", steps=0).parameters()))
    steps = len(distilled.step_sizes)
    distilled.step_sizes = torch.full((steps, num_tensors), 0.05)
    distilled.train_learner()  # one rate per step and per tensor of the recorded learner
    distilled.step_sizes = torch.full((steps, num_tensors + 1), 0.05)
    with pytest.raises(ValueError, match=rf"per weight tensor \({num_tensors + 1} tensors\) but the learner has"):
        distilled.train_learner()
