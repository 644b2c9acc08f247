"""The dataset card of a distilled set, rendered from `templates/dataset_card.md`.

Generated sections sit between `<!-- hf_distill:begin NAME -->` and `<!-- hf_distill:end NAME -->`. Updating a card
rewrites only those and hf_distill's YAML keys: the owner's own sections and the `configs:` / `dataset_info:` that
`datasets` writes stay as they are.
"""

import re
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

from .noise import describe as describe_noise

TEMPLATE = Path(__file__).parent / "templates" / "dataset_card.md"
SECTION = re.compile(r"<!-- hf_distill:begin (\w+) -->.*?<!-- hf_distill:end \1 -->", re.S)
TAGS = ["dataset-distillation", "hf_distill", "synthetic"]
TASKS = {"text": "text-classification", "image": "image-classification"}
HYPERPARAMETERS = (
    "distill_method", "augmentation", "synthetic_per_class", "num_synthetic", "synthetic_init", "learn_labels",
    "label_softmax", "inner_steps", "inner_epochs", "inner_optimizer", "step_size_init", "learn_step_sizes",
    "per_layer_step_sizes", "backprop_steps", "random_truncation", "max_steps", "learning_rate", "label_learning_rate",
    "step_size_learning_rate", "synthetic_ema_decay", "per_device_train_batch_size", "seed",
)  # fmt: skip
METHODS = {
    "unrolled": "unrolled soft-label distillation (Sucholutsky & Schonlau): synthetic inputs, soft labels and "
    "per-step learning rates are learned by back-propagating a real-data loss through the learner's training steps.",
    "gradient_matching": "gradient matching (Zhao et al., ICLR 2021): per class, the learner's loss gradients on the "
    "synthetic examples are matched to those on real examples, under fresh learner inits.",
    "distribution_matching": "distribution matching (Zhao & Bilen, WACV 2023): per class, the mean embedding of the "
    "synthetic examples is matched to that of real examples under randomly initialised learners.",
}
PREVIEW_TOKENS = 48  # tokens per sequence shown in the card; preview.txt has all of them


def _percent(metrics: dict, key: str) -> str | None:
    if metrics.get(key) is None:
        return None
    std = metrics.get(f"{key}_std")
    return f"{100 * metrics[key]:.1f} ± {100 * std:.1f} %" if std is not None else f"{100 * metrics[key]:.1f} %"


def _is_hub_id(name: str | None) -> bool:
    return (
        bool(name)
        and name != "digits"
        and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None
        and not Path(name).exists()
    )


def _protocol(meta: dict, config: dict) -> str:
    metrics = meta.get("metrics") or {}
    n = metrics.get("eval_num_models", config.get("num_eval_models"))
    init = meta.get("learner_init", "random")
    who = "the fixed init it was distilled for" if init == "fixed" else f"{init} inits never used in distillation"
    protocol, steps = config.get("eval_protocol", "learned"), config.get("eval_train_steps")
    optimizer = (
        f"SGD steps (momentum 0.9, weight decay 5e-4) at lr {config.get('eval_learning_rate')}, divided by 10 after "
        "half of them"
        if protocol == "sgd"
        else f"Adam steps at lr {config.get('eval_learning_rate')}"
    )
    augmented = ""
    if config.get("eval_augmentation"):
        augmented = f", each on images augmented with one of {config.get('augmentation', '').replace('_', ', ')}"
        optimizer += augmented
    if protocol == "learned":
        how = f"its learned step sizes (one full-batch gradient step each{augmented})"
    else:
        how = f"{steps} full-batch {optimizer}"
    size = metrics.get("eval_num_examples")
    return (
        f"mean ± std over {n} fresh learners ({who}), each trained on the set with {how} and measured on the "
        f"evaluation split{f' ({size:,} examples)' if size else ''}. The random real subset is trained from the same "
        f"inits with {steps} full-batch {optimizer}, and hard labels."
    )


def render_card(distilled, repo_id: str | None = None) -> DatasetCard:
    """A fresh card for `distilled` (a `DistilledDataset`); `repo_id` is where it will live on the Hub, if anywhere."""
    from . import __version__

    meta, config = distilled.metadata, distilled.metadata.get("config") or {}
    metrics = meta.get("metrics") or {}
    source = meta.get("source_dataset") or "an unrecorded dataset"
    learner = meta.get("learner") or "learner"
    name = f"{Path(source).name} distilled: {len(distilled)} synthetic examples for {learner}"
    data = DatasetCardData(
        pretty_name=name,
        tags=TAGS + [TASKS[distilled.modality]],
        task_categories=[TASKS[distilled.modality]],
        size_categories=["n<1K"],
        source_datasets=[source] if _is_hub_id(meta.get("source_dataset")) else None,
    )
    method = METHODS[config.get("distill_method", "unrolled")]
    if config.get("inner_optimizer") == "adam":
        method += " Each inner step is an Adam step, its rate the learned step size."
    if config.get("augmentation") and config.get("distill_method", "unrolled") == "unrolled":
        ops = config["augmentation"].replace("_", ", ")
        method += f" Each inner step trains on the synthetic images augmented with one of {ops} (a fresh draw each)."
    if config.get("label_softmax") is False and config.get("learn_labels"):
        method += (
            " Its soft labels are unconstrained real vectors (`label_softmax=False`), not distributions: train on"
            " them with `-sum(labels * log_softmax(logits))`."
        )
    if config.get("synthetic_ema_decay"):
        decay = config["synthetic_ema_decay"]
        method += f" The set is the exponential moving average (decay {decay}) of the set over the outer steps."
    if config.get("random_truncation"):
        method += " The unroll is back-propagated through a random window (RaT-BPTT, Feng et al.)."
    return DatasetCard.from_template(
        data,
        template_path=str(TEMPLATE),
        pretty_name=name,
        modality=distilled.modality,
        num_examples=len(distilled),
        num_labels=len(distilled.label_names),
        label_names=distilled.label_names,
        learner=learner,
        learner_init=meta.get("learner_init", "random"),
        learner_id=meta.get("learner_id"),
        learner_revision=meta.get("learner_revision"),
        source_dataset=source,
        source_revision=meta.get("source_revision"),
        num_source_examples=meta.get("num_source_examples"),
        embedding_model=meta.get("embedding_model"),
        embedding_revision=meta.get("embedding_revision"),
        label_noise=describe_noise(meta.get("label_noise")),
        accuracy=_percent(metrics, "eval_accuracy"),
        baseline_accuracy=_percent(metrics, "eval_baseline_accuracy"),
        full_data_accuracy=_percent(metrics, "eval_full_data_accuracy"),
        protocol=_protocol(meta, config),
        method=method,
        hyperparameters=[(k, config[k]) for k in HYPERPARAMETERS if config.get(k) is not None],
        random_truncation=config.get("random_truncation"),
        hf_distill_version=meta.get("hf_distill_version", __version__),
        environment=meta.get("environment"),
        preview_lines=[" ".join(line.split(" ")[: PREVIEW_TOKENS + 2]) for line in distilled.preview_lines()]
        if distilled.modality == "text"
        else [],
        load_call=f'from_hub("{repo_id}")' if repo_id else 'load("path/to/this/folder")',
        columns=", ".join(f"`{c}`" for c in distilled.to_dataset().column_names),
        max_length=distilled.inputs.shape[1] if distilled.modality == "text" else None,
        image_shape=", ".join(map(str, distilled.inputs.shape[1:])),
        image_mean=meta.get("image_mean") or [0.0] * distilled.inputs.shape[1],
        image_std=meta.get("image_std") or [1.0] * distilled.inputs.shape[1],
        dataset_path=repo_id or "path/to/this/folder",
    )


def update_card(existing: DatasetCard | None, distilled, repo_id: str | None = None) -> DatasetCard:
    """`existing` (the card on the Hub) with hf_distill's sections and YAML keys brought up to date."""
    fresh = render_card(distilled, repo_id)
    if existing is None:
        return fresh
    card = DatasetCard(existing.content)
    ours = fresh.data.to_dict()
    card.data["tags"] = list(dict.fromkeys((card.data.get("tags") or []) + ours["tags"]))
    for key in ("task_categories", "size_categories", "source_datasets", "pretty_name"):
        if ours.get(key) is not None and (key != "pretty_name" or not card.data.get(key)):
            card.data[key] = ours[key]
    sections = {m.group(1): m.group(0) for m in SECTION.finditer(fresh.text)}
    if SECTION.search(card.text):
        card.text = SECTION.sub(lambda m: sections.get(m.group(1), m.group(0)), card.text)
    else:  # a card hf_distill didn't write (e.g. the bare one datasets makes): ours first, theirs kept below
        card.text = fresh.text + ("\n" + card.text.strip() + "\n" if card.text.strip() else "")
    return card
