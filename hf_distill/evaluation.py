"""How a distilled set is judged: train fresh learners on it, measure them on real held-out data."""

import itertools

import numpy as np
import torch
from transformers import EvalPrediction

from .learners import soft_cross_entropy
from .methods.unrolled import learner_logits, unroll


def accuracy(eval_pred: EvalPrediction) -> dict[str, float]:
    """Offline drop-in for `evaluate.load("accuracy")`, in the `compute_metrics` signature."""
    logits, labels = eval_pred
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


def train_on_set(
    learner, params, inputs, attention_mask, labels, *, step_sizes=None, steps=300, lr=1e-3, augment=None
) -> dict:
    """Train a learner from `params` on a (small) set: with the learned `step_sizes` (one full-batch SGD step
    each, as in distillation), or else with `steps` full-batch Adam steps, each on `augment(inputs, step)` when
    given. `labels` are ints or soft labels."""
    if step_sizes is not None:
        return unroll(learner, params, inputs, attention_mask, labels, step_sizes, create_graph=False)
    if augment is not None:
        batches = ((augment(inputs, step), attention_mask, labels) for step in range(steps))
    else:
        batches = itertools.repeat((inputs, attention_mask, labels), steps)
    return train_on_batches(learner, params, batches, lr=lr)


def train_on_batches(learner, params, batches, *, lr=1e-3) -> dict:
    """Train a learner from `params` with Adam, one step per `(inputs, attention_mask, labels)` of `batches`."""
    params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    with torch.enable_grad():
        for inputs, attention_mask, labels in batches:
            optimizer.zero_grad()
            soft_cross_entropy(learner_logits(learner, params, inputs, attention_mask), labels).backward()
            optimizer.step()
    return {k: v.detach() for k, v in params.items()}


@torch.no_grad()
def predict(learner, params, batches) -> EvalPrediction:
    """Logits and labels of the learner (with `params`) over an iterable of `(inputs, attention_mask, labels)`."""
    logits, labels = [], []
    for inputs, attention_mask, y in batches:
        logits.append(learner_logits(learner, params, inputs, attention_mask).float().cpu())
        labels.append(y.cpu())
    return EvalPrediction(predictions=torch.cat(logits).numpy(), label_ids=torch.cat(labels).numpy())


def summarize(runs: list[dict[str, float]], prefix: str) -> dict[str, float]:
    """Mean and standard deviation of each metric over the runs: `{prefix}_{name}` and `{prefix}_{name}_std`."""
    out = {}
    for name in runs[0]:
        values = np.array([r[name] for r in runs], dtype=np.float64)
        out[f"{prefix}_{name}"] = float(values.mean())
        out[f"{prefix}_{name}_std"] = float(values.std())
    return out
