"""Tiny offline data and models: nothing here downloads. The only Hub is a local fake one (tests/hub_server.py)."""

import os
import socket
import tempfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# huggingface_hub and datasets read these when first imported, so they are set before anything imports them:
# every Hub call in the tests goes to the local server, with no saved token and a throwaway cache.
HUB_PORT = _free_port()
os.environ.update(
    HF_ENDPOINT=f"http://127.0.0.1:{HUB_PORT}",
    HF_HUB_DISABLE_XET="1",
    HF_HOME=tempfile.mkdtemp(prefix="hf_distill_tests_"),
    HF_HUB_DISABLE_TELEMETRY="1",
)
os.environ.pop("HF_TOKEN", None)
# The tests' models and batches are tiny: one thread per process is faster for them (a toy distillation of
# test_trust.py: 7.3 s against 29.0 s with two, beside a one-core benchmark), and the subprocess tests (CLI runs,
# suite rows side by side) do not fight for the cores.
# Set before torch is imported, so that this process and every subprocess it starts read it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import ClassLabel, Dataset, DatasetDict  # noqa: E402
from hub_server import FakeHub  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast  # noqa: E402

from hf_distill import DistillationConfig, DistilledDataset, build_learner  # noqa: E402
from hf_distill.data import pixel_dataset  # noqa: E402

TOKENS = {"hf_alice": "alice", "hf_bob": "bob"}  # token -> user on the fake Hub


@pytest.fixture(scope="session")
def hub():
    """The local Hub server, on the port HF_ENDPOINT names."""
    server = FakeHub(tokens=TOKENS, port=HUB_PORT).start()
    yield server
    server.stop()


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
POSITIVE = "good great fine nice superb lovely".split()
NEGATIVE = "bad awful poor nasty dull boring".split()
FILLER = "the a movie film plot it was and very quite".split()


# CLI flags for seconds-long runs
QUICK_FLAGS = [
    "--max_steps",
    "3",
    "--inner_steps",
    "2",
    "--inner_epochs",
    "1",
    "--num_eval_models",
    "2",
    "--eval_train_steps",
    "5",
    "--disable_tqdm",
    "true",
    "--save_strategy",
    "no",
]


# Settings under which distillation clearly beats a random real subset on `toy_images`
TOY_SETTINGS = dict(
    inner_steps=10,
    num_eval_models=3,
    eval_train_steps=100,
    learning_rate=0.05,
    step_size_init=0.3,
    synthetic_init="noise",
)


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


def distilled_set(learner, inputs, soft_labels, label_names, **extra) -> DistilledDataset:
    g = torch.Generator().manual_seed(0)
    return DistilledDataset(
        inputs=inputs,
        soft_labels=soft_labels,
        label_names=label_names,
        step_sizes=0.01 + 0.01 * torch.rand(4, generator=g),
        metadata={
            "learner": type(learner).__name__,
            "learner_config": learner.config.to_dict(),
            "learner_init": "random",
            "source_dataset": "toy",
            "metrics": {"eval_accuracy": 0.9, "eval_accuracy_std": 0.01, "eval_baseline_accuracy": 0.5},
            "config": {"synthetic_per_class": 2, "inner_steps": 4, "eval_train_steps": 300, "num_eval_models": 2},
            **extra.pop("metadata", {}),
        },
        **extra,
    )


def image_set() -> DistilledDataset:
    """A small distilled image set (random tensors) for a ConvNet, with a fixed init."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        learner = build_learner("convnet", 3, num_channels=1, image_size=8)
    return distilled_set(
        learner,
        torch.randn(6, 1, 8, 8, generator=g),
        torch.softmax(torch.randn(6, 3, generator=g), -1),
        ["a", "b", "c"],
        learner_init={k: v.detach().clone() for k, v in learner.named_parameters()},
        metadata={"image_mean": [0.5], "image_std": [0.25], "learner_init": "fixed"},
    )


def text_set() -> DistilledDataset:
    """A small distilled text set (random embedding sequences) for a TextCNN."""
    g = torch.Generator().manual_seed(1)
    learner = build_learner("textcnn", 2, hidden_size=7)
    return distilled_set(
        learner,
        torch.randn(4, 5, 7, generator=g),
        torch.softmax(torch.randn(4, 2, generator=g), -1),
        ["neg", "pos"],
        attention_mask=torch.ones(4, 5, dtype=torch.long),
        previews=["a b c d e"] * 4,
        metadata={"embedding_model": "tiny"},
    )


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
    tokenizer = BertTokenizerFast(vocab=str(path / "vocab.txt"))  # transformers 5 ignores vocab_file=
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    with torch.random.fork_rng(devices=[]):  # the same weights in every session, whichever test asks first
        torch.manual_seed(0)
        BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_pretrained_model(tmp_path_factory, tiny_embedding_model) -> str:
    """The tiny BERT after a few steps on toy sentiment sentences, saved without its head: like a real pretrained
    transformer, its features already tell the classes apart, so that two steps on a fresh head can learn them."""
    tokenizer = BertTokenizerFast.from_pretrained(tiny_embedding_model)
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_embedding_model, num_labels=2)
    texts, labels = _sentences(200, seed=2)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(10):  # enough to make the features useful, not enough to solve the task from any head
        optimizer.zero_grad()
        model(**batch, labels=torch.tensor(labels)).loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("tiny-bert-pretrained")
    model.bert.save_pretrained(path)
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
def _seeded():
    """torch seeds its global generator differently in each process (`torch.initial_seed()` varies from run to run),
    so a test that draws from it unseeded (a model's default init) would see other numbers in every run."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
