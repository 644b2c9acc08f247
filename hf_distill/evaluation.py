"""How a distilled set is judged: train fresh learners on it, measure them on real held-out data."""

import itertools

import numpy as np
import torch
from transformers import EvalPrediction

from .learners import adam_learning_rate, soft_cross_entropy
from .methods.unrolled import learner_logits, unroll


def accuracy(eval_pred: EvalPrediction) -> dict[str, float]:
    """Offline drop-in for `evaluate.load("accuracy")`, in the `compute_metrics` signature."""
    logits, labels = eval_pred
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


EVAL_TRAIN_STEPS = {"adam": 300, "sgd": 1000}  # each evaluation optimiser's default number of full-batch steps


def eval_optimizer(protocol: str) -> str:
    """The optimiser of evaluation learners trained without the learned step sizes, and of the baseline's: SGD for
    `eval_protocol="sgd"`, else Adam."""
    return "sgd" if protocol == "sgd" else "adam"


def eval_learning_rate(learner, optimizer: str) -> float:
    """Its default step size: the DC/DM code's 0.01 for SGD, else Adam's for this learner."""
    return 0.01 if optimizer == "sgd" else adam_learning_rate(learner)


def train_on_set(
    learner,
    params,
    inputs,
    attention_mask,
    labels,
    *,
    step_sizes=None,
    steps=300,
    lr=1e-3,
    optimizer="adam",
    augment=None,
    inner_optimizer="sgd",
) -> dict:
    """Train a learner from `params` on a (small) set: with the learned `step_sizes` (one full-batch step of
    `inner_optimizer` each, as in distillation), or else with `steps` full-batch steps of `optimizer` (see
    `train_on_batches`); either way each step on `augment(inputs, step)` when given. `labels` are ints or soft
    labels."""
    if step_sizes is not None:
        return unroll(
            learner,
            params,
            inputs,
            attention_mask,
            labels,
            step_sizes,
            create_graph=False,
            optimizer=inner_optimizer,
            augment=augment,
        )
    if augment is not None:
        batches = ((augment(inputs, step), attention_mask, labels) for step in range(steps))
    else:
        batches = itertools.repeat((inputs, attention_mask, labels), steps)
    return train_on_batches(learner, params, batches, lr=lr, optimizer=optimizer, steps=steps)


def learner_optimizer(params, optimizer: str, lr: float) -> torch.optim.Optimizer:
    """The optimiser that trains a learner on a set: Adam, or the matching papers' SGD (momentum 0.9, weight decay
    5e-4)."""
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    raise ValueError(f"optimizer must be one of {', '.join(EVAL_TRAIN_STEPS)}, not {optimizer!r}.")


def train_on_batches(learner, params, batches, *, lr=1e-3, optimizer="adam", steps=None) -> dict:
    """Train a learner from `params`, one step per `(inputs, attention_mask, labels)` of `batches`: with Adam, or
    (`optimizer="sgd"`) with SGD as the gradient- and distribution-matching papers' code evaluates a set (momentum
    0.9, weight decay 5e-4, `lr` divided by 10 after half of the `steps`)."""
    if optimizer == "sgd" and steps is None:
        raise ValueError("optimizer='sgd' needs `steps`: its rate drops tenfold after half of them.")
    params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    opt, schedule = learner_optimizer(params.values(), optimizer, lr), None
    if optimizer == "sgd":
        schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[steps // 2], gamma=0.1)
    with torch.enable_grad():
        for inputs, attention_mask, labels in batches:
            opt.zero_grad()
            soft_cross_entropy(learner_logits(learner, params, inputs, attention_mask), labels).backward()
            opt.step()
            if schedule is not None:
                schedule.step()
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
