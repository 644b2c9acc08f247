import json

import pytest
import torch
from datasets import load_dataset

from hf_distill import DistilledDataset
from hf_distill.synthetic import META_FILE, initial_label_logits


def image_set():
    g = torch.Generator().manual_seed(0)
    return DistilledDataset(
        inputs=torch.randn(6, 1, 8, 8, generator=g),
        soft_labels=torch.softmax(torch.randn(6, 3, generator=g), -1),
        label_names=["a", "b", "c"],
        step_sizes=torch.rand(4, generator=g),
        learner_init={"w": torch.randn(3, 2, generator=g)},
        metadata={"image_mean": [0.5], "image_std": [0.25], "learner": "ConvNet"},
    )


def text_set():
    g = torch.Generator().manual_seed(1)
    return DistilledDataset(
        inputs=torch.randn(4, 5, 7, generator=g),
        soft_labels=torch.softmax(torch.randn(4, 2, generator=g), -1),
        label_names=["neg", "pos"],
        step_sizes=torch.rand(3, generator=g),
        attention_mask=torch.ones(4, 5, dtype=torch.long),
        previews=["a b c d e"] * 4,
        metadata={"embedding_model": "tiny"},
    )


@pytest.mark.parametrize("make", [image_set, text_set])
def test_save_load_is_exact(tmp_path, make):
    distilled = make()
    distilled.save(tmp_path / "set")
    loaded = DistilledDataset.load(tmp_path / "set")
    assert torch.equal(loaded.inputs, distilled.inputs)
    assert torch.equal(loaded.soft_labels, distilled.soft_labels)
    assert torch.equal(loaded.step_sizes, distilled.step_sizes)
    assert loaded.label_names == distilled.label_names and loaded.modality == distilled.modality
    assert loaded.metadata == distilled.metadata
    if distilled.attention_mask is not None:
        assert torch.equal(loaded.attention_mask, distilled.attention_mask) and loaded.previews == distilled.previews
    if distilled.learner_init is not None:
        assert torch.equal(loaded.learner_init["w"], distilled.learner_init["w"])


def test_saved_set_is_a_plain_dataset_with_previews(tmp_path):
    image_set().save(tmp_path / "images")
    text_set().save(tmp_path / "text")
    images = load_dataset(str(tmp_path / "images"), split="train")
    assert images.features["label"].names == ["a", "b", "c"] and len(images) == 6
    assert images[0]["image"].size == (8, 8)
    assert (tmp_path / "images" / "preview.png").is_file()
    text = load_dataset(str(tmp_path / "text"), split="train")
    assert text.column_names == ["soft_label", "label", "inputs_embeds", "attention_mask", "preview"]
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
    with pytest.raises(ValueError, match="format 99, newer than"):
        DistilledDataset.load(tmp_path / "newer")


def test_initial_labels_cover_every_class_even_with_fewer_examples():
    logits = initial_label_logits(3, 7)
    assert (logits.max(0).values > 0).all()  # every class is some example's label
    assert logits.argmax(-1).tolist() == [0, 1, 2]
    assert initial_label_logits(4, 2).argmax(-1).tolist() == [0, 1, 0, 1]
