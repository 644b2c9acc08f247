"""The unrolled objective of Wang et al. / Sucholutsky & Schonlau: train the learner on the synthetic set for T
gradient steps (functionally, with `torch.func`), so that the loss of the trained learner on real data can be
back-propagated into the synthetic inputs, their soft labels and the step sizes."""

import torch
from torch.func import functional_call

from ..learners import soft_cross_entropy


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
) -> dict:
    """Take one gradient step per row of `step_sizes` on the whole synthetic set and return the trained params.

    A row is one step size for all of `params`, or one per tensor of `params`, in their order.

    With `create_graph`, the result stays differentiable w.r.t. the synthetic tensors and step sizes, through the
    last `backprop_steps` steps only when that is set (truncated back-propagation; the earlier steps are replayed
    without a graph, so memory grows with `backprop_steps`, not with the number of steps).
    """
    num_steps = len(step_sizes)
    first_tracked = (
        num_steps - backprop_steps if (create_graph and backprop_steps) else (0 if create_graph else num_steps)
    )
    for t in range(num_steps):
        tracked = t >= first_tracked
        if not tracked or t == first_tracked:  # a fresh leaf: no graph reaches back before this step
            params = {k: v.detach().requires_grad_() for k, v in params.items()}
        x, y, lr = (
            (inputs, soft_labels, step_sizes[t])
            if tracked
            else (inputs.detach(), soft_labels.detach(), step_sizes[t].detach())
        )
        with torch.enable_grad():
            loss = soft_cross_entropy(learner_logits(learner, params, x, attention_mask), y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=tracked)
        lrs = lr.expand(len(grads))  # one step size per tensor
        params = {k: p - r * g for (k, p), g, r in zip(params.items(), grads, lrs)}
    return params if create_graph else {k: v.detach() for k, v in params.items()}
