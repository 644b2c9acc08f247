"""Two objectives that avoid unrolling the learner's training, for `distill_method`:

- gradient matching (Zhao, Mopuri & Bilen, *Dataset Condensation with Gradient Matching*, ICLR 2021): per class, the
  gradient of the learner's loss on the synthetic examples should point where the gradient on real examples points
  (1 - cosine per output unit of every weight tensor, summed, as in the paper's code);
- distribution matching (Zhao & Bilen, *Dataset Condensation with Distribution Matching*, WACV 2023): per class,
  the mean embedding of the synthetic examples should equal that of real examples, under a randomly initialised
  learner (the embedding is the learner's penultimate layer, the last of its `hidden_states`).

Both take the learner's weights `params` (a fresh init per outer step) and one real batch, and compare per class
over the classes present in that batch; `syn_classes` gives the class each synthetic example stands for. With
`augment(x, c)` (differentiable Siamese augmentation, `hf_distill.augment`), the real and synthetic examples of class
`c` pass through the same augmentation before they are compared.
"""

import torch
import torch.nn.functional as F

from ..learners import soft_cross_entropy
from .unrolled import learner_logits, learner_output


def _per_class(y: torch.Tensor, syn_classes: torch.Tensor):
    """(class, real rows, synthetic rows) for each class with examples on both sides."""
    for c in y.unique().tolist():
        real, syn = y == c, syn_classes == c
        if syn.any():
            yield c, real, syn


def _unaugmented(inputs: torch.Tensor, c: int) -> torch.Tensor:
    return inputs


def _rows(mask: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if mask is None else mask[rows]


def learner_features(learner, params: dict, inputs: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """The learner's penultimate-layer embedding `[B, F]` (hf_distill's learners return it as `hidden_states[-1]`)."""
    return learner_output(learner, params, inputs, attention_mask).hidden_states[-1]


def distribution_matching_loss(
    learner, params, x_syn, mask_syn, syn_classes, x, mask, y, augment=None
) -> torch.Tensor:
    """Sum over classes of the squared distance between real and synthetic mean embeddings. One class at a time:
    each example's embedding is its own, so this equals one pass over the whole batch up to float rounding, and
    on a CPU it is faster for the ConvNet (a class's activations fit the cache; docs/benchmarks-methods.md)."""
    augment = augment or _unaugmented
    losses = []
    for c, r, s in _per_class(y, syn_classes):
        with torch.no_grad():
            real = learner_features(learner, params, augment(x[r], c), _rows(mask, r))
        syn = learner_features(learner, params, augment(x_syn[s], c), _rows(mask_syn, s))
        losses.append((real.mean(0) - syn.mean(0)).pow(2).sum())
    return torch.stack(losses).sum()


def _gradient_distance(real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """DC's layer distance: 1 - cosine similarity per output unit (rows of the flattened weight), summed."""
    return (1 - F.cosine_similarity(real.flatten(1), syn.flatten(1), dim=1, eps=1e-6)).sum()


def gradient_matching_loss(
    learner, params, x_syn, mask_syn, soft_labels, syn_classes, x, mask, y, augment=None
) -> torch.Tensor:
    """Sum over classes and weight tensors of the distance between real and synthetic loss gradients."""
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    weights = [v for v in params.values() if v.dim() > 1]  # the paper matches weights, not biases or norms
    augment = augment or _unaugmented
    losses = []
    for c, r, s in _per_class(y, syn_classes):
        real_loss = F.cross_entropy(learner_logits(learner, params, augment(x[r], c), _rows(mask, r)), y[r])
        real_grads = torch.autograd.grad(real_loss, weights)
        syn_inputs = augment(x_syn[s], c)
        syn_loss = soft_cross_entropy(learner_logits(learner, params, syn_inputs, _rows(mask_syn, s)), soft_labels[s])
        syn_grads = torch.autograd.grad(syn_loss, weights, create_graph=True)
        losses += [_gradient_distance(g.detach(), h) for g, h in zip(real_grads, syn_grads)]
    return torch.stack(losses).sum()
