"""Checks that a learner and a `DistillationConfig` fit each other and the data, before any distillation starts."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from safetensors import safe_open

from .learners import _Learner, checkpointable_layers

# The settings that shape the synthetic set's tensors, and (the last two) its optimiser's parameter groups
SET_SHAPING_SETTINGS = (
    "synthetic_per_class",
    "num_synthetic",
    "inner_steps",
    "inner_epochs",
    "per_layer_step_sizes",
    "synthetic_ema_decay",
    "learn_labels",
    "learn_step_sizes",
)


def check_output_dir(output_dir: str) -> None:
    """`output_dir` is a folder, or can be made one: checked before anything is loaded or trained."""
    path = os.path.abspath(os.path.expanduser(output_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"output_dir {output_dir!r} is a file, not a folder.")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"output_dir {output_dir!r} cannot be made: {existing!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"output_dir {output_dir!r} cannot be written: {existing!r} is not writable.")


def real_columns(dataset, name: str) -> tuple[str, str, list[str]]:
    """(label column, modality, input columns) of a real dataset handed to the trainer; a `ValueError` naming
    `name` and the columns it has when one is missing or the dataset is empty."""
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"{name} is of type {type(dataset).__name__}, not datasets.Dataset: distillation holds the real data in "
            "memory, so load it without streaming (or build one with Dataset.from_dict / from_generator)."
        )
    columns = list(dataset.column_names)
    label_column = next((c for c in ("labels", "label") if c in columns), None)
    if label_column is None:
        raise ValueError(f"{name} has no 'labels' or 'label' column (columns: {', '.join(columns)}).")
    if "pixel_values" in columns:
        modality, inputs = "image", ["pixel_values"]
    elif "input_ids" in columns and "attention_mask" in columns:
        modality, inputs = "text", ["input_ids", "attention_mask"]
    else:
        raise ValueError(
            f"{name} needs 'pixel_values' or 'input_ids' + 'attention_mask' (columns: {', '.join(columns)})."
        )
    if len(dataset) == 0:
        raise ValueError(f"{name} has no rows.")
    return label_column, modality, inputs


def label_ids(dataset, label_column: str, name: str) -> np.ndarray:
    """The integer class id of every row of `dataset`; a `ValueError` when the column holds anything else."""
    ids = np.asarray(dataset.select_columns([label_column]).with_format("numpy")[:][label_column])
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        kind = "strings" if ids.dtype.kind in "OUS" else f"{ids.dtype} values"
        kind += f" of shape {list(ids.shape[1:])}" if ids.ndim > 1 else ""
        raise ValueError(
            f"{name}'s {label_column!r} column holds {kind}, not class ids: encode them first "
            f"(dataset.class_encode_column({label_column!r})) or load the data with load_real_data."
        )
    if ids.min() < 0:
        raise ValueError(f"{name}'s {label_column!r} column has label {ids.min()}: class ids start at 0.")
    return ids


def class_names_and_ids(dataset, label_column: str, name: str) -> tuple[list[str], np.ndarray]:
    """The class names and the class id of every row: a `ClassLabel`'s names, or for a plain integer column the ids
    themselves as names, which must then run from 0 to K-1."""
    ids = label_ids(dataset, label_column, name)
    names = getattr(dataset.features[label_column], "names", None)
    if names is None:
        names = [str(i) for i in range(int(ids.max()) + 1)]
        missing = sorted(set(range(len(names))) - set(ids.tolist()))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise ValueError(
                f"{name}'s {label_column!r} column has class ids up to {len(names) - 1} but none of {shown}: class "
                "ids must run from 0 to K-1 (or give the column a ClassLabel feature with the class names)."
            )
    if ids.max() >= len(names):
        raise ValueError(f"{name}'s {label_column!r} column has label {ids.max()}, beyond its {len(names)} classes.")
    return list(names), ids


def check_same_length(dataset, column: str, name: str) -> None:
    """Token rows must be padded to one length: a synthetic sequence has one `max_length`, and real batches stack."""
    values = dataset.select_columns([column]).with_format("arrow")[:][column]
    if not pa.types.is_list(values.type) and not pa.types.is_large_list(values.type):
        return  # fixed-size lists (an Array2D, a Sequence with a length) have one length already
    lengths = pc.min_max(pc.list_value_length(values))
    shortest, longest = lengths["min"].as_py(), lengths["max"].as_py()
    if shortest != longest:
        raise ValueError(
            f"{name}'s {column!r} rows have {shortest} to {longest} tokens: pad them to one length "
            "(tokenizer(..., padding='max_length', truncation=True, max_length=N), as load_real_data does)."
        )


def check_pixel_dtype(dtype: np.dtype, name: str) -> None:
    """Pixels must be floats (normalised, as image processors and `load_real_data` give them), not raw integers."""
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"{name}'s pixel_values are {dtype}: give normalised float pixels (an image processor's output, or "
            "load_real_data's)."
        )


def check_eval_dataset(dataset, name: str, modality: str, example_shape: tuple, class_names: list[str]) -> str:
    """The label column of an evaluation dataset, after checking that it has the training data's kind of inputs,
    their shape (images) or one row length (text), and no label beyond the training classes."""
    label_column, eval_modality, _ = real_columns(dataset, name)
    if eval_modality != modality:
        raise ValueError(f"{name} is {eval_modality} data and the training data is {modality}.")
    if modality == "text":
        check_same_length(dataset, "input_ids", name)
    else:
        first = dataset.select_columns(["pixel_values"]).with_format("numpy")[0]["pixel_values"]
        check_pixel_dtype(first.dtype, name)
        shape = tuple(first.shape)
        if shape != tuple(example_shape):
            raise ValueError(f"{name}'s images are {list(shape)} and the training images are {list(example_shape)}.")
    top = int(label_ids(dataset, label_column, name).max())
    if top >= len(class_names):
        raise ValueError(
            f"{name} has label {top}, and the training data has {len(class_names)} classes "
            f"({', '.join(class_names)}): encode both splits' labels the same way."
        )
    return label_column


def check_setup(args, learner, class_names: list[str], train_labels, embedding_matrix=None, input_ids=None):
    """Raise a `ValueError` naming both sides when `args` asks for what `learner` or the real data cannot do.
    `embedding_matrix`, `input_ids`: the embedding model's input embeddings and the real token ids, for text."""
    num_labels = len(class_names)
    if num_labels < 2:
        raise ValueError(
            f"The training labels have {num_labels} class ({', '.join(class_names)}): distilling a classifier's data "
            "needs at least two (is the label column the right one?)."
        )
    pretrained = not isinstance(learner, _Learner)
    if learner.config.num_labels != num_labels:
        raise ValueError(
            f"The learner has {learner.config.num_labels} labels but the data has {num_labels} "
            f"({', '.join(class_names)})."
        )
    if pretrained and args.learner_init == "random":
        raise ValueError(
            "A pretrained learner keeps its pretrained weights: use learner_init='pretrained' (a fresh head "
            "every run) or 'fixed' (one head)."
        )
    if not pretrained and args.learner_init == "pretrained":
        raise ValueError(f"learner_init='pretrained' needs a pretrained learner, not {type(learner).__name__}.")
    if embedding_matrix is not None:
        width = learner.get_input_embeddings().embedding_dim if pretrained else learner.config.hidden_size
        if width != embedding_matrix.shape[1]:
            raise ValueError(
                f"The learner's input embeddings are {width} wide but those of the embedding model "
                f"{args.embedding_model!r} are {embedding_matrix.shape[1]} wide."
            )
    if input_ids is not None and embedding_matrix is not None and int(input_ids.max()) >= len(embedding_matrix):
        raise ValueError(
            f"The real data has token id {int(input_ids.max())}, beyond the {len(embedding_matrix)} input embeddings "
            f"of {args.embedding_model!r}: tokenise it with that model's tokenizer."
        )
    if args.augmentation and embedding_matrix is not None:
        raise ValueError(
            f"augmentation={args.augmentation!r} transforms images, and this dataset is text (embedding sequences)."
        )
    if args.distill_method != "unrolled":
        n = args.num_synthetic or args.synthetic_per_class * num_labels
        if n < num_labels:
            raise ValueError(
                f"{args.distill_method} matches each class separately: it needs at least one synthetic example "
                f"per class ({num_labels}), not num_synthetic={n}."
            )
        if pretrained and args.distill_method == "distribution_matching":
            raise ValueError(
                "distribution_matching compares the penultimate embeddings of hf_distill's own learners; "
                f"use 'unrolled' or 'gradient_matching' with {args.learner!r}."
            )
    if args.checkpoints_activations:
        if args.distill_method != "unrolled":
            raise ValueError(
                "activation_checkpointing recomputes the learner's layers on the real batch of the unrolled "
                f"objective; distill_method={args.distill_method!r} does not use it."
            )
        if not checkpointable_layers(learner):
            raise ValueError(
                "activation_checkpointing recomputes the layers of a transformers learner (a pretrained "
                f"transformer); {type(learner).__name__} has none."
            )
    if args.trust_aware:
        counts = np.bincount(train_labels, minlength=num_labels)
        if counts.min() < 2:
            raise ValueError(
                "trust_aware needs at least two real examples per class to split them by loss; class "
                f"{class_names[int(counts.argmin())]!r} has {int(counts.min())}."
            )
    if args.synthetic_init == "kmeans" and pretrained:
        raise ValueError(
            "synthetic_init='kmeans' clusters the penultimate features of hf_distill's own learners; use 'real' "
            f"or 'noise' with {args.learner!r}."
        )


def check_checkpoint_fits(checkpoint: str, state_dict: dict, args) -> None:
    """Raise one `ValueError` naming what differs when the synthetic set saved in `checkpoint` (or its optimiser's
    parameter groups) cannot continue as this run's `state_dict` under `args`, before anything is loaded."""
    with safe_open(os.path.join(checkpoint, "model.safetensors"), framework="pt") as f:
        saved = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    here = {k: list(v.shape) for k, v in state_dict.items()}
    tensors = [
        f"{k} {saved.get(k, 'absent')} there, {here.get(k, 'absent')} here"
        for k in sorted(saved.keys() | here.keys())
        if saved.get(k) != here.get(k)
    ]
    config_path = os.path.join(checkpoint, "distillation.json")
    config = {}
    if os.path.isfile(config_path):
        with open(config_path) as f:
            config = json.load(f).get("config") or {}
    differ = [k for k in SET_SHAPING_SETTINGS if k in config and config[k] != getattr(args, k)]
    if tensors or {"learn_labels", "learn_step_sizes"} & set(differ):  # else it loads, and resumes as asked
        settings = [f"{k}={config[k]!r} there, {getattr(args, k)!r} here" for k in differ]
        raise ValueError(
            f"{checkpoint} does not fit this run ({'; '.join(settings + tensors)}): resume with the settings and data "
            "of the run that saved it."
        )
