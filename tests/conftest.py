"""Tiny offline data and models: nothing here downloads."""

from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import BertConfig, BertModel, BertTokenizerFast

from hf_distill import DistillationConfig
from hf_distill.data import pixel_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
POSITIVE = "good great fine nice superb lovely".split()
NEGATIVE = "bad awful poor nasty dull boring".split()
FILLER = "the a movie film plot it was and very quite".split()


def quick_config(tmp_path, **kwargs) -> DistillationConfig:
    """A config for seconds-long runs: few steps, no progress bars, no checkpoints unless asked."""
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=5,
        inner_steps=3,
        inner_epochs=1,
        num_eval_models=2,
        per_device_train_batch_size=32,
        eval_train_steps=20,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=100,
        report_to="none",
    )
    return DistillationConfig(**{**defaults, **kwargs})


def toy_images(n_per_class=100, num_classes=4, noise=2.5, seed=0):
    """Noisy copies of one template per class (a bright quadrant): one sample is a poor prototype, the mean a good."""
    templates = -np.ones((num_classes, 1, 8, 8))
    for c in range(num_classes):
        templates[c, 0, 4 * (c // 2) : 4 * (c // 2) + 4, 4 * (c % 2) : 4 * (c % 2) + 4] = 1.0
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    x = (templates[labels] + noise * rng.standard_normal((len(labels), 1, 8, 8))).astype(np.float32)
    return x, labels.tolist()


@pytest.fixture
def image_data():
    names = [f"class_{i}" for i in range(4)]
    return (
        pixel_dataset(*toy_images(seed=0), names, [0.0], [1.0]),
        pixel_dataset(*toy_images(n_per_class=50, seed=1), names, [0.0], [1.0]),
    )


def _sentences(n, seed):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(FILLER, 6)) + list(rng.choice(POSITIVE if label else NEGATIVE, 2))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="session")
def tiny_embedding_model(tmp_path_factory) -> str:
    """A tiny random BERT and a word-level tokenizer, saved to a folder like a Hub model."""
    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + FILLER + POSITIVE + NEGATIVE
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def text_dataset_dir(tmp_path_factory) -> str:
    """A folder of parquet split files, like ../shared/data/imdb."""
    path = tmp_path_factory.mktemp("toy-sentiment")
    label = ClassLabel(names=["neg", "pos"])
    for split, n, seed in (("train", 200, 0), ("test", 100, 1)):
        texts, labels = _sentences(n, seed)
        Dataset.from_dict({"text": texts, "label": labels}).cast_column("label", label).to_parquet(
            str(path / f"{split}.parquet")
        )
    return str(path)


@pytest.fixture(scope="session")
def image_dataset_dir(tmp_path_factory) -> str:
    """A `save_to_disk` folder of PNG images with a ClassLabel, like the Hub's MNIST."""
    from PIL import Image

    path = tmp_path_factory.mktemp("toy-images")
    label = ClassLabel(names=[f"class_{i}" for i in range(4)])
    splits = {}
    for split, seed in (("train", 0), ("test", 1)):
        x, y = toy_images(n_per_class=30, seed=seed)
        images = [Image.fromarray(((np.clip(a[0], -4, 4) + 4) * 31).astype(np.uint8)) for a in x]
        splits[split] = Dataset.from_dict({"image": images, "label": y}).cast_column("label", label)
    DatasetDict(splits).save_to_disk(str(path))
    return str(path)


def shared_data(name: str) -> str:
    path = SHARED / "data" / name
    if not path.is_dir():
        pytest.skip(f"{path} is not present (real data lives in ../shared)")
    return str(path)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
