"""The unrolled objective of Wang et al. / Sucholutsky & Schonlau: train the learner on the synthetic set for T
gradient steps (functionally, with `torch.func`), so that the loss of the trained learner on real data can be
back-propagated into the synthetic inputs, their soft labels and the step sizes."""

import torch
from torch.func import functional_call

from ..learners import soft_cross_entropy

INNER_OPTIMIZERS = ("sgd", "adam")  # what one inner step is: a plain gradient step, or Adam's
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


def learner_output(learner, params: dict, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """The learner's output with `params` in place of its own weights (images: no mask; text: `inputs_embeds`)."""
    kwargs = (
        {"pixel_values": inputs}
        if attention_mask is None
        else {"inputs_embeds": inputs, "attention_mask": attention_mask}
    )
    return functional_call(learner, params, args=(), kwargs=kwargs)


def learner_logits(learner, params: dict, inputs: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """The learner's logits with `params` in place of its own weights."""
    return learner_output(learner, params, inputs, attention_mask).logits


def unroll(
    learner,
    params: dict,
    inputs,
    attention_mask,
    soft_labels,
    step_sizes,
    *,
    create_graph: bool = True,
    backprop_steps: int | None = None,
    optimizer: str = "sgd",
    augment=None,
) -> dict:
    """Take one gradient step per row of `step_sizes` on the whole synthetic set and return the trained params.

    A row is one step size for all of `params`, or one per tensor of `params`, in their order. `optimizer="sgd"`
    steps along the gradient; `"adam"` takes `torch.optim.Adam`'s step (its defaults, the row as its rate, the
    moments starting at zero), differentiable also where a gradient is exactly 0 (a dead unit). With `augment`, step
    `t` trains on `augment(inputs, t)` (images: a differentiable augmentation, `hf_distill.augment`).

    With `create_graph`, the result stays differentiable w.r.t. the synthetic tensors and step sizes, through the
    last `backprop_steps` steps only when that is set (truncated back-propagation; the earlier steps are replayed
    without a graph, so memory grows with `backprop_steps`, not with the number of steps).
    """
    if optimizer not in INNER_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(INNER_OPTIMIZERS)}, not {optimizer!r}.")
    adam = optimizer == "adam"
    moments = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()} if adam else {}  # m, v
    num_steps = len(step_sizes)
    first_tracked = (
        num_steps - backprop_steps if (create_graph and backprop_steps) else (0 if create_graph else num_steps)
    )
    for t in range(num_steps):
        tracked = t >= first_tracked
        if not tracked or t == first_tracked:  # a fresh leaf: no graph reaches back before this step
            params = {k: v.detach().requires_grad_() for k, v in params.items()}
            moments = {k: (m.detach(), v.detach()) for k, (m, v) in moments.items()}
        x, y, lr = (
            (inputs, soft_labels, step_sizes[t])
            if tracked
            else (inputs.detach(), soft_labels.detach(), step_sizes[t].detach())
        )
        if augment is not None:
            x = augment(x, t)
        with torch.enable_grad():
            loss = soft_cross_entropy(learner_logits(learner, params, x, attention_mask), y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=tracked)
        if adam:
            grads, moments = adam_directions(grads, moments, t + 1)
        lrs = lr.expand(len(grads))  # one step size per tensor
        params = {k: p - r * g for (k, p), g, r in zip(params.items(), grads, lrs)}
    return params if create_graph else {k: v.detach() for k, v in params.items()}


def adam_directions(grads, moments: dict, count: int):
    """Adam's update directions for step number `count` (from 1), and the new moments."""
    beta1, beta2 = ADAM_BETAS
    correction1, correction2 = 1 - beta1**count, 1 - beta2**count
    moments = {
        k: (beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g)
        for (k, (m, v)), g in zip(moments.items(), grads)
    }
    return [(m / correction1) / (safe_sqrt(v) / correction2**0.5 + ADAM_EPS) for m, v in moments.values()], moments


def safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """`v.sqrt()` for v >= 0, with a zero gradient (not an infinite one) where v is 0."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))
