"""The learnable synthetic set (what `Trainer` optimises) and the distilled set it becomes on disk."""

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from datasets import Array2D, Array3D, ClassLabel, Dataset, Features, Image, List, Value
from PIL import Image as PILImage
from safetensors.torch import load_file, save_file
from torch import nn

# "major.minor": a newer major cannot be read; a newer minor only adds keys to distillation.json (warned, ignored).
FORMAT_VERSION = "1.0"
DATA_FILE = "data/train-00000-of-00001.parquet"  # the path datasets.Dataset.push_to_hub writes, so repo == folder
META_FILE = "distillation.json"
LEARNER_INIT_FILE = "learner_init.safetensors"
CARD_FILE = "README.md"
PREVIEW_FILES = ("preview.png", "preview.txt")
METADATA_KEYS = {  # what format 1.0 may hold in distillation.json beside the tensors' own entries
    "source_dataset", "source_revision", "num_source_examples", "label_noise", "learner", "learner_config",
    "learner_init", "learner_id", "learner_revision", "embedding_model", "embedding_revision", "image_mean",
    "image_std", "inner_steps", "inner_epochs", "metrics", "config", "hf_distill_version", "environment",
}  # fmt: skip
LABEL_INIT_LOGIT = 3.0  # initial logit of an example's own class (soft label ~0.69 on it for 10 classes)
FIXED_OTHER_LOGIT = -1e4  # fixed labels: the other classes' logit, whose softmax is exactly 0 in float32


def initial_label_logits(num_synthetic: int, num_labels: int, learned: bool = True) -> torch.Tensor:
    """One class per example, cycling; with fewer examples than classes, example i covers classes i, i+N, ...

    Labels to be learned start soft (the other classes at logit 0), so that every class gets a gradient. Fixed ones
    (`learned=False`) are exact: one-hot, or uniform over the classes an example covers."""
    logits = torch.full((num_synthetic, num_labels), 0.0 if learned else FIXED_OTHER_LOGIT)
    for c in range(max(num_synthetic, num_labels)):
        logits[c % num_synthetic, c % num_labels] = LABEL_INIT_LOGIT
    return logits


AVERAGED = ("inputs", "label_logits", "log_step_sizes")  # the tensors an exponential moving average follows


class SyntheticSet(nn.Module):
    """The distilled set as a module: its parameters are the synthetic inputs, label logits and log step sizes.
    With `label_softmax=False` the `label_logits` parameter holds the soft labels themselves, free real vectors.

    Being the `Trainer`'s model, it gets the optimiser, schedule, checkpoints, resume and DDP gradient averaging of
    `Trainer` for free. `forward()` takes no real data; it returns the current synthetic tensors.
    """

    def __init__(
        self,
        inputs,
        label_logits,
        num_steps,
        step_size_init,
        attention_mask=None,
        learn_labels=True,
        learn_step_sizes=True,
        max_step_size=None,
        num_step_size_groups=None,
        ema_decay=None,
        label_softmax=True,
    ):
        super().__init__()
        self.inputs = nn.Parameter(inputs.clone())
        self.label_logits = nn.Parameter(label_logits.clone(), requires_grad=learn_labels)
        shape = (num_steps,) if num_step_size_groups is None else (num_steps, num_step_size_groups)
        self.log_step_sizes = nn.Parameter(torch.full(shape, math.log(step_size_init)), requires_grad=learn_step_sizes)
        self.register_buffer("attention_mask", attention_mask)
        self.max_log_step_size = None if max_step_size is None else math.log(max_step_size)
        self.label_softmax = label_softmax
        self.ema_decay = ema_decay
        if ema_decay is not None:  # buffers, so that checkpoints save them and a resume restores them
            for name in AVERAGED:
                self.register_buffer(f"ema_{name}", torch.zeros_like(getattr(self, name)))
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def step_sizes(self, log: torch.Tensor | None = None) -> torch.Tensor:
        # Kept as logs so that they stay positive whatever the update; clamped from above if bounded.
        log = self.log_step_sizes if log is None else log
        return (log if self.max_log_step_size is None else log.clamp(max=self.max_log_step_size)).exp()

    def soft_labels(self, logits: torch.Tensor | None = None) -> torch.Tensor:
        # A distribution over classes, or (`label_softmax=False`) the learned vectors themselves, unconstrained.
        logits = self.label_logits if logits is None else logits
        return logits.softmax(-1) if self.label_softmax else logits

    def forward(self):
        return self.inputs, self.attention_mask, self.soft_labels(), self.step_sizes()

    @torch.no_grad()
    def update_average(self) -> None:
        """One update of the exponential moving average (`ema_decay`) with the current tensors; call it after every
        outer step."""
        for name in AVERAGED:
            getattr(self, f"ema_{name}").lerp_(getattr(self, name), 1 - self.ema_decay)
        self.ema_updates += 1

    def averaged(self):
        """`forward()` of the moving averages, the set that is evaluated and saved when `ema_decay` is set. The
        averages start from zero and are divided by `1 - decay ** updates` (as Adam's moments), so each outer step
        weighs `decay ** age` from the first on; before the first update, the current set."""
        if self.ema_updates == 0:
            return self()
        correction = 1 - self.ema_decay ** self.ema_updates.item()
        inputs, logits, log_steps = (getattr(self, f"ema_{name}") / correction for name in AVERAGED)
        return inputs, self.attention_mask, self.soft_labels(logits), self.step_sizes(log_steps)

    def activation_checkpointing_enable(self, **kwargs):
        """Called by `Trainer` for `activation_checkpointing=True`. The set has no layers to recompute: the
        `DistillationTrainer` checkpoints the learner's layers on the real batch instead."""

    gradient_checkpointing_enable = activation_checkpointing_enable  # the name older transformers releases call


@dataclass
class DistilledDataset:
    """A distilled training set: synthetic inputs with soft labels and the step sizes learned with them.

    `inputs` are `pixel_values` `[N, C, H, W]` for images or `inputs_embeds` `[N, L, D]` for text (then with an
    `attention_mask` `[N, L]`). `metadata` holds the config that produced the set, the learner and embedding model,
    the image normalisation and the evaluation results.
    """

    inputs: torch.Tensor
    soft_labels: torch.Tensor
    label_names: list[str]
    step_sizes: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    previews: list[str] | None = None  # text: nearest vocabulary token of each position
    learner_init: dict[str, torch.Tensor] | None = None  # the init the set was distilled for (learner_init=fixed)
    metadata: dict = field(default_factory=dict)

    @property
    def modality(self) -> str:
        return "text" if self.attention_mask is not None else "image"

    @property
    def labels(self) -> torch.Tensor:
        return self.soft_labels.argmax(-1)

    def __len__(self) -> int:
        return len(self.inputs)

    def to_dataset(self) -> Dataset:
        """The set as a `datasets.Dataset`: the exact tensors, `labels` (soft: `[K]` floats, what `Trainer` trains
        on), `label` (their argmax, a `ClassLabel`) and a human view (`image`, or `preview` tokens)."""
        n = len(self)
        columns = {"labels": self.soft_labels.float().numpy(), "label": self.labels.tolist()}
        features = {
            "labels": List(Value("float32"), length=self.soft_labels.shape[1]),
            "label": ClassLabel(names=list(self.label_names)),
        }
        if self.modality == "text":
            columns["inputs_embeds"] = self.inputs.float().numpy()
            columns["attention_mask"] = self.attention_mask.to(torch.int8).numpy()
            columns["preview"] = self.previews or [""] * n
            features["inputs_embeds"] = Array2D(shape=tuple(self.inputs.shape[1:]), dtype="float32")
            features["attention_mask"] = List(Value("int8"))
            features["preview"] = Value("string")
        else:
            columns["pixel_values"] = self.inputs.float().numpy()
            columns["image"] = [
                to_pil(x, self.metadata.get("image_mean"), self.metadata.get("image_std")) for x in self.inputs
            ]
            features["pixel_values"] = Array3D(shape=tuple(self.inputs.shape[1:]), dtype="float32")
            features["image"] = Image()
        return Dataset.from_dict(columns, features=Features(features))

    def fingerprint(self) -> str:
        """sha256 of the tensors, stored in `distillation.json` so that data and metadata can't be mixed up."""
        digest = hashlib.sha256()
        for t in (self.inputs, self.soft_labels, self.attention_mask):
            if t is not None:
                digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the set as a dataset folder: parquet data, `distillation.json`, previews, the fixed init, a card."""
        if len(self) == 0:
            raise ValueError("The distilled set is empty: there is nothing to save.")
        path = Path(path)
        (path / DATA_FILE).parent.mkdir(parents=True, exist_ok=True)
        self.to_dataset().to_parquet(str(path / DATA_FILE))
        self.save_sidecars(path)
        from .card import render_card

        render_card(self).save(path / CARD_FILE)

    def save_sidecars(self, path: str | os.PathLike) -> list[str]:
        """Everything but the data and the card: `distillation.json`, previews, the fixed init. Returns the names."""
        from . import __version__

        path = Path(path)
        meta = {
            "format_version": FORMAT_VERSION,
            "hf_distill_version": __version__,
            "modality": self.modality,
            "label_names": list(self.label_names),
            "step_sizes": None if self.step_sizes is None else self.step_sizes.tolist(),
            "data_sha256": self.fingerprint(),
            **self.metadata,
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        written = [META_FILE]
        if self.learner_init is not None:
            save_file({k: v.contiguous() for k, v in self.learner_init.items()}, str(path / LEARNER_INIT_FILE))
            written.append(LEARNER_INIT_FILE)
        if self.modality == "image":
            image_grid(self).save(path / "preview.png")
            written.append("preview.png")
        else:
            (path / "preview.txt").write_text("\n".join(self.preview_lines()) + "\n")
            written.append("preview.txt")
        return written

    def preview_lines(self) -> list[str]:
        """Text sets: `index [label]: nearest tokens` per synthetic sequence."""
        previews = self.previews or [""] * len(self)
        return [f"{i} [{self.label_names[y]}]: {p}" for i, (y, p) in enumerate(zip(self.labels.tolist(), previews))]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DistilledDataset":
        """Read a set written by `save` (or pulled from the Hub): tensors are bit-equal to what was saved."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"No distilled set at {path}: the folder does not exist.")
        if not (path / META_FILE).is_file() or not (path / DATA_FILE).is_file():
            raise ValueError(f"{path} is not a distilled set: it has no {META_FILE} and {DATA_FILE}.")
        meta = json.loads((path / META_FILE).read_text())
        major, minor = (int(v) for v in f"{meta.pop('format_version', 0)}.0".split(".")[:2])
        ours = tuple(int(v) for v in FORMAT_VERSION.split("."))
        if major > ours[0]:
            raise ValueError(
                f"{path} was written in distilled-set format {major}.{minor}, which this hf_distill (format "
                f"{FORMAT_VERSION}) cannot read; upgrade hf_distill."
            )
        known = METADATA_KEYS | {"modality", "label_names", "step_sizes", "data_sha256"}
        unknown = sorted(set(meta) - known)
        if unknown:
            warnings.warn(f"{path}: ignoring keys unknown to distilled-set format {FORMAT_VERSION}: {unknown}")
            meta = {k: v for k, v in meta.items() if k in known}
        table = pq.read_table(path / DATA_FILE)
        data = Dataset(table).with_format("numpy")
        text = meta.pop("modality") == "text"
        inputs = torch.from_numpy(np.asarray(data["inputs_embeds" if text else "pixel_values"], dtype=np.float32))
        step_sizes = meta.pop("step_sizes")
        init_file = path / LEARNER_INIT_FILE
        expected = meta.pop("data_sha256", None)
        distilled = cls(
            inputs=inputs,
            soft_labels=torch.from_numpy(np.stack(data["labels"]).astype(np.float32)),
            label_names=meta.pop("label_names"),
            step_sizes=None if step_sizes is None else torch.tensor(step_sizes, dtype=torch.float32),
            attention_mask=torch.from_numpy(np.stack(data["attention_mask"]).astype(np.int64)) if text else None,
            previews=list(data.with_format(None)["preview"]) if text else None,
            learner_init=load_file(str(init_file)) if init_file.is_file() else None,
            metadata=meta,
        )
        if expected is not None and distilled.fingerprint() != expected:
            raise ValueError(
                f"{path}: {DATA_FILE} does not match {META_FILE} (they come from different saves or pushes; "
                "an interrupted push leaves this). Save or push the set again."
            )
        return distilled

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None, **kwargs):
        """Publish the set as the dataset repo `repo_id` (parquet via `datasets`, card, `distillation.json`,
        previews). Keyword arguments `revision` and `commit_message` are passed on. Returns the `CommitInfo`."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, private=private, token=token, **kwargs)

    @classmethod
    def from_hub(cls, repo_id: str, *, revision: str | None = None, token: str | None = None, cache_dir=None):
        """The set pushed to `repo_id` (at `revision`), bit-equal to what was pushed."""
        from .hub import from_hub

        return from_hub(repo_id, revision=revision, token=token, cache_dir=cache_dir)

    def train_learner(
        self, learner=None, *, protocol: str | None = None, seed: int = 0, steps=None, lr=None, augmentation=None
    ):
        """A learner trained on this set, ready for `save_pretrained`. Default: a fresh copy of the learner it was
        distilled for (its fixed init when there is one, else drawn from `seed`). `protocol`: `learned` (one step
        per learned step size), `adam` (`steps` full-batch Adam steps at `lr`: default 300 at 1e-3, or 5e-5 for a
        pretrained transformer) or `sgd` (the gradient- and distribution-matching papers' SGD: default 1,000 steps
        at 0.01, divided by 10 after half), as in `DistillationConfig.eval_protocol`. `augmentation` (image sets):
        operations of `hf_distill.augment` joined by `_`, one drawn per step with per-image parameters.
        `None` (default): the protocol, steps, rate and augmentation the set was evaluated with when it was
        distilled (`adam` for the matching objectives, whose step sizes are not learned), else `learned` when the
        set has step sizes; an explicitly other optimiser gets its own defaults."""
        from .augment import augment, parse_augmentation
        from .config import EVAL_PROTOCOLS
        from .evaluation import EVAL_TRAIN_STEPS, eval_learning_rate, eval_optimizer, train_on_set
        from .learners import (
            LEARNERS,
            LearnerConfig,
            check_image_shape,
            check_learner_modality,
            fresh_head,
            load_pretrained_learner,
            trainable_parameters,
        )

        if learner is None and self.metadata.get("learner_id"):  # a pretrained transformer with a fresh head
            learner = load_pretrained_learner(self.metadata["learner_id"], self.label_names)
            learner.load_state_dict({**fresh_head(learner, seed), **(self.learner_init or {})}, strict=False)
        elif learner is None:
            classes = {c.__name__: c for c in LEARNERS.values()}
            if self.metadata.get("learner") not in classes:
                name = self.metadata.get("learner")
                raise ValueError(f"This set records no hf_distill learner ({name!r}); pass a learner.")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                learner = classes[self.metadata["learner"]](LearnerConfig(**self.metadata["learner_config"]))
            if self.learner_init is not None:
                learner.load_state_dict(self.learner_init, strict=False)
        check_learner_modality(learner, self.modality)
        if self.modality == "image":
            check_image_shape(learner, tuple(self.inputs.shape[1:]))
        if learner.config.num_labels != self.soft_labels.shape[1]:
            raise ValueError(
                f"The learner has {learner.config.num_labels} labels but the set has {self.soft_labels.shape[1]}."
            )
        config = self.metadata.get("config") or {}
        evaluated = config.get("eval_protocol") or ("learned" if self.step_sizes is not None else "adam")
        protocol = evaluated if protocol is None else protocol
        if protocol not in EVAL_PROTOCOLS or (protocol == "learned" and self.step_sizes is None):
            choices = ", ".join(map(repr, EVAL_PROTOCOLS))
            raise ValueError(f"protocol must be one of {choices} ('learned' needs step sizes), not {protocol!r}.")
        optimizer = eval_optimizer(protocol)
        if optimizer == eval_optimizer(evaluated):  # evaluate() trained with it (Adam: `learned`'s baseline)
            steps = config.get("eval_train_steps") if steps is None else steps
            lr = config.get("eval_learning_rate") if lr is None else lr
            if augmentation is None and config.get("eval_augmentation"):
                augmentation = config.get("augmentation")
        steps = EVAL_TRAIN_STEPS[optimizer] if steps is None else steps
        lr = eval_learning_rate(learner, optimizer) if lr is None else lr
        ops = parse_augmentation(augmentation)
        if ops and self.modality != "image":
            raise ValueError(f"augmentation transforms images; this is a {self.modality} set.")
        params = {k: v.detach() for k, v in trainable_parameters(learner).items()}
        per_tensor = protocol == "learned" and self.step_sizes.ndim == 2
        if per_tensor and self.step_sizes.shape[1] != len(params):
            raise ValueError(
                f"The set's step sizes are per weight tensor ({self.step_sizes.shape[1]} tensors) but the learner "
                f"has {len(params)}; pass the learner it was distilled for, or protocol='adam'."
            )
        trained = train_on_set(
            learner.eval(),
            params,
            self.inputs,
            self.attention_mask,
            self.soft_labels,
            step_sizes=self.step_sizes if protocol == "learned" else None,
            steps=steps,
            lr=lr,
            optimizer=optimizer,
            augment=(lambda x, step: augment(x, ops, seed * 1_000_003 + step, per_example=True)) if ops else None,
            inner_optimizer=config.get("inner_optimizer", "sgd"),  # sets saved before it existed took SGD steps
        )
        learner.load_state_dict(trained, strict=False)
        return learner


def to_pil(pixels: torch.Tensor, mean=None, std=None) -> PILImage.Image:
    """One synthetic image, de-normalised (or min-max scaled when the normalisation is unknown), as 8-bit PIL."""
    x = pixels.detach().float().cpu()
    if mean is not None and std is not None:
        x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-8)
    array = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return PILImage.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def image_grid(distilled: DistilledDataset, scale: int = 4) -> PILImage.Image:
    """All synthetic images in a grid, one row per class when every class has the same count."""
    images = [
        to_pil(x, distilled.metadata.get("image_mean"), distilled.metadata.get("image_std")) for x in distilled.inputs
    ]
    n, k = len(images), len(distilled.label_names)
    cols = n // k if n % k == 0 and n > k else min(n, 10)
    rows = math.ceil(n / cols)
    order = distilled.labels.argsort(stable=True).tolist() if cols == n // k else range(n)
    w, h = images[0].width * scale, images[0].height * scale
    grid = PILImage.new("RGB", (cols * (w + 2), rows * (h + 2)), "white")
    for slot, i in enumerate(order):
        grid.paste(
            images[i].convert("RGB").resize((w, h), PILImage.NEAREST),
            ((slot % cols) * (w + 2), (slot // cols) * (h + 2)),
        )
    return grid


def nearest_tokens(inputs_embeds: torch.Tensor, embedding_matrix: torch.Tensor, tokenizer) -> list[str]:
    """For each synthetic sequence, the vocabulary token nearest (cosine) to each position, joined by spaces."""
    known = min(len(tokenizer), len(embedding_matrix))  # embedding matrices are often padded past the vocabulary
    vocab = torch.nn.functional.normalize(embedding_matrix[:known].float(), dim=-1)
    previews = []
    for seq in inputs_embeds.detach().float():
        ids = (torch.nn.functional.normalize(seq.to(vocab.device), dim=-1) @ vocab.T).argmax(-1)
        previews.append(" ".join(tokenizer.convert_ids_to_tokens(ids.tolist())))
    return previews
