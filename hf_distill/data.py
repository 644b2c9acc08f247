"""Real data for distillation: presets, loading any dataset, text -> token ids, images -> normalised tensors."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Array3D, ClassLabel, Dataset, DatasetDict, Features, load_dataset, load_from_disk
from transformers.utils import logging

from .noise import add_label_noise, asymmetric_mapping, check_noise_options

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class Preset:
    """What hf_distill knows about a benchmark: where it lives, its columns, and distillation defaults."""

    hub_id: str
    modality: str  # "text" or "image"
    input_columns: tuple[str, ...]  # text columns are joined with a space
    label_column: str = "label"
    defaults: dict = field(default_factory=dict)  # defaults for DataArguments / DistillationConfig fields


MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# MiniLM's token embeddings have a std of 0.056, so the synthetic sequences get a step size to match (the images' 0.03
# is in units of the pixel std): at 0.01 the TREC-6 and SST-5 unrolls blew up (53.4 / 26.9 % against 80.2 / 36.3 %).
_TEXT = {"learner": "textcnn", "embedding_model": MINILM, "learning_rate": 3e-4}
# Tuned on MNIST/LeNet (docs/benchmarks-mnist.md): a larger real batch and slowly learned step sizes keep the
# unroll stable; 8,000 outer steps take about 25 minutes on one CPU core.
_IMAGE = {
    "learner": "lenet",
    "max_steps": 8000,
    "per_device_train_batch_size": 512,
    "learning_rate": 0.03,
    "label_learning_rate": 0.03,
    "step_size_init": 0.05,
    "step_size_learning_rate": 0.002,
}
PRESETS = {
    # Sucholutsky & Schonlau's text benchmarks
    # 5 inner steps, as the reference code's IMDB command (`--distill_steps 1 --distill_epochs 5`): 30 steps over 20
    # sequences of 256 tokens cost over 12 s per outer step on one CPU core.
    "imdb": Preset(
        "stanfordnlp/imdb",
        "text",
        ("text",),
        defaults={**_TEXT, "max_length": 256, "synthetic_per_class": 10, "inner_steps": 1, "inner_epochs": 5},
    ),
    "sst2": Preset("SetFit/sst2", "text", ("text",), defaults={**_TEXT, "max_length": 64}),
    "sst5": Preset("SetFit/sst5", "text", ("text",), defaults={**_TEXT, "max_length": 64}),
    "trec6": Preset("CogComp/trec", "text", ("text",), "coarse_label", defaults={**_TEXT, "max_length": 32}),
    # Li & Li's eight text benchmarks
    # AG News: 96.6 % of the (local) training texts fit 64 MiniLM tokens; a TextCNN costs what its padded length does
    "ag_news": Preset("fancyzhx/ag_news", "text", ("text",), defaults={**_TEXT, "max_length": 64}),
    "dbpedia": Preset("fancyzhx/dbpedia_14", "text", ("title", "content"), defaults={**_TEXT, "max_length": 128}),
    "yelp_polarity": Preset("fancyzhx/yelp_polarity", "text", ("text",), defaults={**_TEXT, "max_length": 256}),
    "yelp_full": Preset("Yelp/yelp_review_full", "text", ("text",), defaults={**_TEXT, "max_length": 256}),
    "yahoo_answers": Preset(
        "community-datasets/yahoo_answers_topics",
        "text",
        ("question_title", "question_content", "best_answer"),
        "topic",
        defaults={**_TEXT, "max_length": 256},
    ),
    "amazon_polarity": Preset(
        "fancyzhx/amazon_polarity", "text", ("title", "content"), defaults={**_TEXT, "max_length": 256}
    ),
    "amazon_full": Preset("SetFit/amazon_reviews_multi_en", "text", ("text",), defaults={**_TEXT, "max_length": 256}),
    "sogou_news": Preset(
        "community-datasets/sogou_news", "text", ("title", "content"), defaults={**_TEXT, "max_length": 256}
    ),
    # Images (normalisation constants of the dataset-distillation literature)
    "mnist": Preset(
        "ylecun/mnist", "image", ("image",), defaults={**_IMAGE, "image_mean": [0.1307], "image_std": [0.3081]}
    ),
    "fashion_mnist": Preset(
        "zalando-datasets/fashion_mnist",
        "image",
        ("image",),
        defaults={**_IMAGE, "image_mean": [0.2861], "image_std": [0.3530]},
    ),
    "cifar10": Preset(
        "uoft-cs/cifar10",
        "image",
        ("img",),
        defaults={"learner": "convnet", "image_mean": [0.4914, 0.4822, 0.4465], "image_std": [0.2023, 0.1994, 0.2010]},
    ),
    "cifar100": Preset(
        "uoft-cs/cifar100",
        "image",
        ("img",),
        "fine_label",
        defaults={"learner": "convnet", "image_mean": [0.5071, 0.4866, 0.4409], "image_std": [0.2673, 0.2564, 0.2762]},
    ),
    # scikit-learn's 8x8 digits: ships with a dependency, so the demo runs offline
    "digits": Preset("sklearn:digits", "image", ("image",), defaults={"learner": "convnet", "max_steps": 300}),
}


@dataclass
class DataArguments:
    """Which real data to distil, and how to read it."""

    dataset: str = field(
        default="digits",
        metadata={
            "help": "A Hub id, a local dataset folder, a folder of parquet split files, or 'digits' (offline demo)."
        },
    )
    dataset_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of a Hub dataset (recorded on the distilled set)."}
    )
    preset: str | None = field(
        default=None, metadata={"help": f"Preset to apply ({', '.join(PRESETS)}); default: from --dataset."}
    )
    text_column: str | None = field(
        default=None,
        metadata={"help": "Text column (default: from the preset, or 'text'); naming one reads the data as text."},
    )
    image_column: str | None = field(
        default=None, metadata={"help": "Image column (default: from the preset, or 'image')."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Label column (default: from the preset, or 'label')."}
    )
    train_split: str = field(default="train", metadata={"help": "Split to distil from."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split to evaluate on (default: test, else validation)."}
    )
    max_length: int = field(default=128, metadata={"help": "Tokens per text sequence (real and synthetic)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Distil from a random subset of this size."})
    eval_max_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on a fixed random subset of this size."}
    )
    validation_size: int | None = field(
        default=None,
        metadata={
            "help": "Hold out this many training examples as a validation split: what evaluation during training "
            "and --load_best_model_at_end score, so that the test split never chooses a checkpoint."
        },
    )
    label_noise_type: str | None = field(
        default=None,
        metadata={"help": "Corrupt the training labels (experiments).", "choices": ["symmetric", "asymmetric"]},
    )
    label_noise_rate: float = field(default=0.0, metadata={"help": "Share of training labels to corrupt, in [0, 1)."})
    label_noise_pair_flip: bool = field(
        default=False, metadata={"help": "Asymmetric noise without a known mapping: flip class i into i+1."}
    )

    def __post_init__(self):
        check_noise_options(self.label_noise_type, self.label_noise_rate)
        for name in ("validation_size", "max_train_samples", "eval_max_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (got {value}).")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 (got {self.max_length}).")


def find_preset(dataset: str, preset: str | None = None) -> Preset | None:
    """The preset named explicitly, or the one whose name or Hub id matches `dataset` (a path: its folder name)."""
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
        return PRESETS[preset]
    name = Path(dataset.rstrip("/")).name.lower().replace("-", "_")
    for key, p in PRESETS.items():
        if dataset == p.hub_id or name == key:
            return p
    return None


def _is_local(dataset: str) -> bool:
    return dataset.startswith((".", "/", "~")) or os.path.exists(dataset)


def load_raw(dataset: str, revision: str | None = None) -> DatasetDict:
    """Load every split of a Hub dataset, a `save_to_disk` folder, a folder of `<split>.parquet` files, or 'digits'."""
    if dataset == "digits":
        return _sklearn_digits()
    if _is_local(dataset):
        path = Path(dataset).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"Dataset path {dataset!r} does not exist (or is not a folder).")
        if (path / "dataset_dict.json").is_file():
            return load_from_disk(str(path))
        files = sorted(path.glob("*.parquet")) or sorted(path.glob("data/*.parquet"))
        if not files:
            raise FileNotFoundError(
                f"No dataset in {dataset!r}: expected <split>.parquet files or a save_to_disk folder."
            )
        splits = {}
        for f in files:
            splits.setdefault(f.stem.split("-")[0], []).append(str(f))
        return load_dataset("parquet", data_files=splits)
    try:
        return load_dataset(dataset, revision=revision)
    except Exception as e:  # the Hub client raises several types for "not found" / "offline"
        raise FileNotFoundError(
            f"Dataset {dataset!r} is not a local folder and could not be loaded from the Hub: {e}"
        ) from e


def _sklearn_digits() -> DatasetDict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0 * 255).round().astype(np.uint8)
    tr_x, te_x, tr_y, te_y = train_test_split(
        images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    label = ClassLabel(names=[str(d) for d in range(10)])
    split = lambda x, y: Dataset.from_dict({"pixels": x.tolist(), "label": y.tolist()}).cast_column("label", label)
    return DatasetDict({"train": split(tr_x, tr_y), "test": split(te_x, te_y)})


def _pick_column(columns, wanted: str | None, candidates: tuple[str, ...], what: str, split: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(
                f"The {what} column {wanted!r} is not in split {split!r} (columns: {', '.join(columns)})."
            )
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise ValueError(
        f"No {what} column in split {split!r}: looked for {', '.join(candidates)} (columns: {', '.join(columns)})."
    )


def label_names_of(ds: Dataset, label_column: str) -> list[str]:
    feature = ds.features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    return [str(v) for v in sorted(set(ds[label_column]))]


@dataclass
class RealData:
    """Real data for the trainer: `train`/`eval` with `labels` and `input_ids`+`attention_mask` or `pixel_values`."""

    train: Dataset
    eval: Dataset
    label_names: list[str]
    modality: str
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    label_noise: dict | None = None  # what `add_label_noise` did to `train` (which then keeps `clean_labels`)
    validation: Dataset | None = None  # held out of the training split (`validation_size`), noisy labels and all


def eval_subset(evaluation: Dataset, max_samples: int) -> Dataset:
    """The fixed evaluation subset `eval_max_samples` selects: the same examples in every run and script."""
    return evaluation.shuffle(seed=42).select(range(min(max_samples, len(evaluation))))


def load_real_data(
    data_args: DataArguments, tokenizer=None, image_mean=None, image_std=None, seed: int = 42
) -> RealData:
    """Load, validate and prepare the train and eval splits; every bad input fails here, before any training."""
    raw = load_raw(data_args.dataset, data_args.dataset_revision)
    preset = find_preset(data_args.dataset, data_args.preset)
    if data_args.train_split not in raw:
        raise ValueError(
            f"Split {data_args.train_split!r} is not in {data_args.dataset!r} (splits: {', '.join(raw)})."
        )
    eval_split = data_args.eval_split or next((s for s in ("test", "validation") if s in raw), None)
    if eval_split is None:
        raise ValueError(
            f"{data_args.dataset!r} has no 'test' or 'validation' split to evaluate on (splits: {', '.join(raw)}): "
            "name one with eval_split."
        )
    if eval_split not in raw:
        raise ValueError(
            f"Evaluation split {eval_split!r} is not in {data_args.dataset!r} (splits: {', '.join(raw)})."
        )
    if eval_split == data_args.train_split:
        logger.warning(
            f"eval_split is the training split {eval_split!r}: accuracy will be measured on the data the set is "
            "distilled from, not on held-out data."
        )
    train, evaluation = raw[data_args.train_split], raw[eval_split]
    columns = train.column_names
    label_col = _pick_column(
        columns,
        data_args.label_column,
        ((preset.label_column,) if preset else ()) + ("label", "labels"),
        "label",
        data_args.train_split,
    )
    if data_args.text_column and data_args.image_column:
        raise ValueError(
            f"Both text_column={data_args.text_column!r} and image_column={data_args.image_column!r} are set: "
            "a run distils one input column, give one of them."
        )
    if data_args.text_column:  # named by the user: text, even where the dataset also has images
        modality = "text"
        inputs = [_pick_column(columns, data_args.text_column, (), "text", data_args.train_split)]
    elif "pixels" in columns:  # the embedded digits
        modality, inputs = "image", ["pixels"]
    elif data_args.image_column or (preset and preset.modality == "image") or "image" in columns or "img" in columns:
        modality = "image"
        inputs = [
            _pick_column(
                columns,
                data_args.image_column,
                (preset.input_columns if preset else ()) + ("image", "img"),
                "image",
                data_args.train_split,
            )
        ]
    else:
        modality = "text"
        wanted = [c for c in (preset.input_columns if preset else ()) if c in columns]
        inputs = [
            _pick_column(columns, c, ("text", "sentence", "content"), "text", data_args.train_split)
            for c in (wanted or [None])
        ]
    if label_col in inputs:
        raise ValueError(f"Column {label_col!r} is both the label column and an input column.")
    for c in inputs + [label_col]:
        if c not in evaluation.column_names:
            raise ValueError(f"Column {c!r} is in split {data_args.train_split!r} but not in {eval_split!r}.")

    for split, ds in ((data_args.train_split, train), (eval_split, evaluation)):
        unlabelled = ds.select_columns([label_col]).with_format("arrow")[:][label_col].null_count
        if unlabelled:
            raise ValueError(
                f"Split {split!r} has {unlabelled} rows without a label in column {label_col!r}: drop them first "
                f"(dataset.filter(lambda row: row[{label_col!r}] is not None))."
            )
    label_names = label_names_of(train, label_col)
    train = encode_labels(train, label_col, label_names, data_args.train_split)
    evaluation = encode_labels(evaluation, label_col, label_names, eval_split)
    if data_args.max_train_samples:
        train = train.shuffle(seed=seed).select(range(min(data_args.max_train_samples, len(train))))
    if data_args.eval_max_samples:
        evaluation = eval_subset(evaluation, data_args.eval_max_samples)
    if data_args.validation_size is not None and data_args.validation_size >= len(train):
        raise ValueError(
            f"validation_size={data_args.validation_size} leaves nothing to distil from: split "
            f"{data_args.train_split!r} has {len(train)} examples."
        )

    if data_args.label_noise_type == "asymmetric":  # no known mapping: fail before tokenising or reading images
        preset_name = next((k for k, v in PRESETS.items() if v is preset), None)
        asymmetric_mapping(len(label_names), preset_name, data_args.label_noise_pair_flip)

    if modality == "text":
        if tokenizer is None:
            raise ValueError(
                f"{data_args.dataset!r} is a text dataset: an embedding model (--embedding_model) is needed."
            )
        special = tokenizer.num_special_tokens_to_add()
        if data_args.max_length <= special:
            raise ValueError(
                f"max_length={data_args.max_length} leaves no room for text: the tokenizer adds {special} special "
                "tokens to every sequence."
            )
        prepare = lambda ds: tokenize(ds, tokenizer, inputs, label_col, label_names, data_args.max_length)
        data = RealData(prepare(train), prepare(evaluation), label_names, "text")
    else:
        train_x = images_to_array(train[inputs[0]], f"split {data_args.train_split!r}")
        eval_x = images_to_array(evaluation[inputs[0]], f"split {eval_split!r}")
        if eval_x.shape[1:] != train_x.shape[1:]:
            raise ValueError(
                f"The images of split {eval_split!r} are {list(eval_x.shape[1:])} (channels, height, width) and those "
                f"of split {data_args.train_split!r} {list(train_x.shape[1:])}: give both one size and colour mode."
            )
        if image_mean is None or image_std is None:
            image_mean = train_x.mean(axis=(0, 2, 3)).tolist()
            image_std = train_x.std(axis=(0, 2, 3)).tolist()
        if not len(image_mean) == len(image_std) == train_x.shape[1]:
            raise ValueError(
                f"image_mean and image_std have {len(image_mean)} and {len(image_std)} values for images with "
                f"{train_x.shape[1]} channels."
            )
        prepare = lambda ds, x: pixel_dataset(x, ds[label_col], label_names, image_mean, image_std)
        data = RealData(
            prepare(train, train_x),
            prepare(evaluation, eval_x),
            label_names,
            "image",
            list(image_mean),
            list(image_std),
        )
    if data_args.label_noise_type and data_args.label_noise_rate > 0:  # the training labels only; eval stays clean
        preset_name = next((k for k, v in PRESETS.items() if v is preset), None)
        data.train, data.label_noise = add_label_noise(
            data.train,
            data_args.label_noise_type,
            data_args.label_noise_rate,
            seed,
            preset_name,
            data_args.label_noise_pair_flip,
        )
    if data_args.validation_size is not None:  # after the noise: noisy users have no clean validation split
        split = data.train.train_test_split(test_size=data_args.validation_size, seed=seed)
        data.train, data.validation = split["train"], split["test"]
    return data


class TensorRows(torch.utils.data.Dataset):
    """Some columns of a dataset held in memory as tensors, so that a real batch costs one indexing operation.

    Reading a batch of 1,024 MNIST images row by row from Arrow takes longer than an outer step of LeNet on it; the
    model inputs of a distillation run (pixels or padded token ids) fit in memory.
    """

    def __init__(self, dataset: Dataset, columns: list[str], with_index: bool = False):
        table = dataset.select_columns(columns).with_format("numpy")[:]
        self.columns = {c: torch.from_numpy(np.ascontiguousarray(table[c])) for c in columns}
        for c, values in self.columns.items():  # float64 pixels (numpy's default) would not meet float32 weights
            if values.dtype == torch.float64:
                self.columns[c] = values.float()
        if with_index:  # each row also says where it is (trust-aware distillation keeps per-row state)
            self.columns["row_index"] = torch.arange(len(dataset))

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        return {c: v[index] for c, v in self.columns.items()}


def encode_labels(ds: Dataset, label_column: str, label_names: list[str], split: str) -> Dataset:
    """Labels that are not a `ClassLabel` (strings, or ints such as 1-5 stars) -> ids into `label_names`."""
    if isinstance(ds.features[label_column], ClassLabel):
        return ds
    index = {name: i for i, name in enumerate(label_names)}
    unknown = {str(v) for v in ds[label_column]} - index.keys()
    if unknown:
        raise ValueError(f"Split {split!r} has labels the train split lacks: {', '.join(sorted(unknown))}.")
    return ds.map(lambda b: {label_column: [index[str(v)] for v in b[label_column]]}, batched=True)


def tokenize(
    ds: Dataset, tokenizer, text_columns: list[str], label_column: str, label_names, max_length: int
) -> Dataset:
    """Token ids, attention masks and integer `labels`, padded to `max_length`, in torch format."""

    def encode(batch):
        # A missing value (None) is no text, not the word "None"
        texts = [" ".join(str(t) for t in parts if t is not None) for parts in zip(*(batch[c] for c in text_columns))]
        enc = tokenizer(texts, max_length=max_length, padding="max_length", truncation=True)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": list(batch[label_column]),
        }

    out = ds.map(encode, batched=True, remove_columns=ds.column_names, desc="Tokenizing")
    return out.cast_column("labels", ClassLabel(names=label_names)).with_format("torch")


CHANNELS = (1, 3, 4)  # grey, RGB, RGBA


def images_to_array(images, where: str = "the dataset") -> np.ndarray:
    """PIL images (or nested pixel lists) -> float32 array [N, C, H, W] in [0, 1]. `where` names them in errors."""
    arrays = [np.asarray(img, dtype=np.float32) for img in images]
    shapes = list(dict.fromkeys(a.shape for a in arrays))
    if len(shapes) > 1:
        raise ValueError(
            f"The images of {where} differ in shape ({', '.join(map(str, shapes[:3]))}): give them one size and "
            "one colour mode first (e.g. with datasets' map and PIL's resize / convert)."
        )
    array = np.stack(arrays) / 255.0
    if array.ndim == 3:  # [N, H, W]: one channel
        return array[:, None]
    if array.ndim == 4 and array.shape[3] in CHANNELS:  # [N, H, W, C], as PIL and numpy images are
        return array.transpose(0, 3, 1, 2)
    if array.ndim == 4 and array.shape[1] in CHANNELS:  # [N, C, H, W] already
        return array
    raise ValueError(
        f"The images of {where} are arrays of shape {list(array.shape[1:])}: give [H, W], [H, W, C] or [C, H, W] "
        f"pixels with C in {', '.join(map(str, CHANNELS))} (a flat vector needs a reshape first)."
    )


def pixel_dataset(pixels: np.ndarray, labels, label_names, mean, std) -> Dataset:
    """Normalised `pixel_values` and integer `labels` in torch format."""
    x = (pixels - np.array(mean, dtype=np.float32)[:, None, None]) / np.array(std, dtype=np.float32)[:, None, None]
    features = Features(
        {"pixel_values": Array3D(shape=x.shape[1:], dtype="float32"), "labels": ClassLabel(names=label_names)}
    )
    return Dataset.from_dict({"pixel_values": x, "labels": list(labels)}, features=features).with_format("torch")


def load_input_embeddings(name: str) -> tuple[torch.Tensor, object]:
    """The frozen input-embedding matrix `[vocab, hidden]` and tokenizer of an embedding model (Hub id or path)."""
    from transformers import AutoModel, AutoTokenizer

    if _is_local(name) and not os.path.isdir(os.path.expanduser(name)):
        raise FileNotFoundError(f"Embedding model path {name!r} does not exist.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModel.from_pretrained(name)
    except OSError as e:
        raise FileNotFoundError(f"Could not load embedding model {name!r}: {e}") from e
    try:
        embeddings = model.get_input_embeddings()
    except NotImplementedError:
        embeddings = None
    if not isinstance(embeddings, torch.nn.Embedding):
        raise ValueError(f"Embedding model {name!r} ({type(model).__name__}) has no input-embedding matrix.")
    if tokenizer.pad_token is None:  # GPT-style tokenizers: padded positions are masked out, so any token will do
        if tokenizer.eos_token is None:
            raise ValueError(f"The tokenizer of {name!r} has no pad token and no end-of-sequence token to pad with.")
        tokenizer.pad_token = tokenizer.eos_token
        logger.info(f"The tokenizer of {name!r} has no pad token: padding with its eos token {tokenizer.eos_token!r}.")
    return embeddings.weight.detach().clone(), tokenizer


def hub_revision(name: str | None, repo_type: str = "model", revision: str | None = None) -> str | None:
    """The commit a Hub id resolves to (recorded on distilled sets); None for local paths or when offline."""
    if name is None or name == "digits" or _is_local(name):
        return None
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return HfApi().repo_info(name, repo_type=repo_type, revision=revision).sha
    except (HfHubHTTPError, OSError, ValueError):
        return None
