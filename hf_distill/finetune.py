"""Fine-tune any transformers classifier on a distilled set with the plain `Trainer`.

    trainer = Trainer(
        model=AutoModelForSequenceClassification.from_pretrained(learner_id, num_labels=2),
        args=TrainingArguments(...),
        train_dataset=load_dataset("you/imdb-distilled", split="train"),
        data_collator=DistilledDataCollator(model),
        compute_loss_func=soft_label_loss,
    )

The rows' `inputs_embeds` live in the input-embedding space of the model the set was distilled for, so the
fine-tuned model then classifies real text through its own tokenizer as usual.
"""

import inspect
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

INPUT_COLUMNS = ("inputs_embeds", "attention_mask", "pixel_values")


def check_model_fits(model: PreTrainedModel, inputs: torch.Tensor, num_labels: int, text: bool) -> None:
    """Raise a ValueError naming both sides if `model` cannot train on these distilled inputs and labels."""
    name = type(model).__name__
    if model.config.num_labels != num_labels:
        raise ValueError(
            f"The distilled set has {num_labels} classes but {name} has num_labels={model.config.num_labels}."
        )
    if not text:
        return
    if "inputs_embeds" not in inspect.signature(model.forward).parameters:
        raise ValueError(f"{name} does not accept inputs_embeds, so it cannot train on distilled text.")
    embeddings = model.get_input_embeddings()
    width = embeddings.embedding_dim if isinstance(embeddings, torch.nn.Embedding) else model.config.hidden_size
    if width != inputs.shape[-1]:
        raise ValueError(
            f"The distilled sequences are {inputs.shape[-1]} wide but {name}'s input embeddings are {width} wide: "
            "fine-tune the model the set was distilled for (its `learner_id` / `embedding_model`)."
        )


@dataclass
class DistilledDataCollator:
    """Batches rows of a distilled set for `Trainer`: `inputs_embeds` + `attention_mask` (text) or `pixel_values`
    (images), and the soft labels as float `labels` `[B, K]`. With `model`, the first batch is checked against it
    (embedding width, number of labels, `inputs_embeds` support) before any training step."""

    model: PreTrainedModel | None = None
    _checked: bool = False

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if "labels" not in features[0]:
            raise ValueError(
                f"A distilled-set row needs 'labels' (the soft labels); this one has {', '.join(features[0])}."
            )
        batch = {
            k: torch.as_tensor(np.stack([np.asarray(f[k]) for f in features]))
            for k in INPUT_COLUMNS
            if k in features[0]
        }
        for key in batch:  # rows may arrive as Python lists: floats become float64
            batch[key] = batch[key].long() if key == "attention_mask" else batch[key].float()
        batch["labels"] = torch.as_tensor(np.stack([np.asarray(f["labels"]) for f in features]), dtype=torch.float32)
        if self.model is not None and not self._checked:
            text = "inputs_embeds" in batch
            check_model_fits(
                self.model, batch["inputs_embeds" if text else "pixel_values"], batch["labels"].shape[-1], text
            )
            self._checked = True
        return batch


def soft_label_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy against soft labels `[B, K]`, in the signature of `Trainer(compute_loss_func=...)`.

    `Trainer` counts `num_items_in_batch` as label entries that are not -100, i.e. B·K per batch here; the loss is
    summed over examples and divided by `num_items_in_batch / K`, so gradient accumulation averages correctly."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    per_example = -(labels.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1)
    if num_items_in_batch is None:
        return per_example.mean()
    return per_example.sum() * labels.shape[-1] / num_items_in_batch
