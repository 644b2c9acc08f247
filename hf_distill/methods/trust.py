"""Trust-aware distillation for noisy labels (after Wu et al., *Trust-Aware Diversion for Data-Effective
Distillation*, 2025): split the real training examples into trusted and untrusted ones, distil from the trusted ones,
and move untrusted examples whose features are reliable into the trusted space with their predicted label.

One round (`trust_round`), every `trust_interval` outer steps:

1. score every real training example by its loss (against its current label) under a few learners trained on the
   current synthetic set, and embed it with their penultimate features;
2. outer loop: per class, fit a two-component Gaussian mixture (scikit-learn) on those losses; the examples more
   likely under the low-loss component are trusted (the small-loss criterion), or, with a `keep_fraction`, that
   share of the class with the smallest losses;
3. inner loop (recalibration): anchor each class at the mean feature of its trusted examples; an untrusted example is
   reliable when the learners' predicted class is also the class nearest in Mahalanobis distance (shared covariance
   of the trusted features) and most similar in cosine, and its distance is within what trusted examples show for
   their own class (the median); reliable examples are relabelled with that class and become trusted.

The objective then drops the untrusted examples, or (`trust_untrusted="soft"`) keeps them with the learners' mean
predicted distribution as a soft target (`TrustState.targets`). TAD pairs that trusted-only objective with a
consistency term; `consistency_loss` is hf_distill's form of it (the paper's own term is not reproduced here): the
learner trained on the synthetic set should predict the same for a real example, trusted or not, and for a noisy
copy of it, which uses the untrusted examples' inputs without their labels.
"""

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TrustState:
    """Per real training example: the label distillation uses now, and whether it is trusted."""

    labels: torch.Tensor  # [N] int, the given labels after recalibration
    trusted: torch.Tensor  # [N] bool
    predicted: torch.Tensor | None = None  # [N, K] float, the trust learners' mean predicted distribution

    def targets(self, rows: torch.Tensor, num_labels: int) -> torch.Tensor:
        """[B, K] soft targets of `rows` (after a round): the one-hot label of trusted rows, the predicted
        distribution of the others."""
        one_hot = torch.nn.functional.one_hot(self.labels[rows], num_labels).float()
        return torch.where(self.trusted[rows, None], one_hot, self.predicted[rows])

    def class_weights(self, num_labels: int) -> torch.Tensor:
        """[K] weights that give each class of the trusted examples its share of all examples (by current label):
        the class's share of the data over its share of the trusted examples, 1 on average over trusted examples."""
        everywhere = torch.bincount(self.labels, minlength=num_labels).float()
        trusted = torch.bincount(self.labels[self.trusted], minlength=num_labels).float()
        return everywhere / trusted.clamp(min=1) * (trusted.sum() / everywhere.sum())

    @classmethod
    def start(cls, labels) -> "TrustState":
        labels = torch.as_tensor(np.asarray(labels)).long()
        return cls(labels=labels.clone(), trusted=torch.ones(len(labels), dtype=torch.bool))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The state as named tensors, for a checkpoint's safetensors file."""
        tensors = {"labels": self.labels, "trusted": self.trusted, "predicted": self.predicted}
        return {k: v.contiguous() for k, v in tensors.items() if v is not None}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "TrustState":
        return cls(labels=tensors["labels"], trusted=tensors["trusted"], predicted=tensors.get("predicted"))


def small_loss_split(
    losses: np.ndarray, labels: np.ndarray, num_labels: int, seed: int = 0, keep_fraction: float | None = None
) -> np.ndarray:
    """Trusted mask: per class, the examples a 2-component GMM on their losses assigns to the low-loss component, or
    (`keep_fraction`) that share of the class with the smallest losses."""
    from sklearn.mixture import GaussianMixture  # here: scikit-learn costs every process ~1.5 s to import

    trusted = np.zeros(len(losses), dtype=bool)
    for c in range(num_labels):
        rows = np.flatnonzero(labels == c)
        if keep_fraction is not None:
            keep = max(1, round(keep_fraction * len(rows)))  # an empty class slices to nothing
            trusted[rows[np.argsort(losses[rows], kind="stable")[:keep]]] = True
            continue
        if len(rows) < 2:
            trusted[rows] = True
            continue
        x = losses[rows].reshape(-1, 1)
        gmm = GaussianMixture(n_components=2, reg_covar=1e-4, random_state=seed).fit(x)
        low = int(np.argmin(gmm.means_.ravel()))
        trusted[rows] = gmm.predict_proba(x)[:, low] > 0.5
    return trusted


def reliable_relabels(features: np.ndarray, predicted: np.ndarray, labels: np.ndarray, trusted: np.ndarray):
    """Untrusted examples whose predicted class is confirmed by Mahalanobis distance and cosine similarity to the
    trusted class anchors, within the median distance of trusted examples to their own anchor. Returns their mask."""
    classes = np.unique(labels[trusted])
    if len(classes) < 2:
        return np.zeros(len(labels), dtype=bool)
    anchors = np.stack([features[trusted & (labels == c)].mean(0) for c in classes])
    centred = features[trusted] - anchors[np.searchsorted(classes, labels[trusted])]
    covariance = np.cov(centred, rowvar=False) + 1e-3 * np.eye(features.shape[1])
    precision = np.linalg.pinv(covariance)
    diff = features[:, None, :] - anchors[None]  # [N, C, F]
    mahalanobis = np.sqrt(np.einsum("ncf,fg,ncg->nc", diff, precision, diff).clip(min=0))
    cosine = (features @ anchors.T) / (
        np.linalg.norm(features, axis=1, keepdims=True) * np.linalg.norm(anchors, axis=1)[None] + 1e-12
    )
    nearest = classes[mahalanobis.argmin(1)]
    own = np.searchsorted(classes, labels[trusted])
    typical = np.median(mahalanobis[trusted][np.arange(trusted.sum()), own])
    agree = (nearest == predicted) & (classes[cosine.argmax(1)] == predicted)
    return ~trusted & agree & (mahalanobis.min(1) <= typical) & (predicted != labels)


def consistency_loss(logits_fn, inputs, attention_mask, noise: float, seed: int) -> torch.Tensor:
    """KL(p(inputs) || p(noisy copy)): `logits_fn(inputs, mask)` is the trained learner; the clean prediction is the
    target (no gradient), the copy adds Gaussian noise of `noise` times the batch's standard deviation (seeded)."""
    generator = torch.Generator(device=inputs.device).manual_seed(seed)
    scale = noise * inputs.detach().float().std()
    noisy = inputs + scale * torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
    with torch.no_grad():
        target = logits_fn(inputs, attention_mask).log_softmax(-1)
    log_probs = logits_fn(noisy, attention_mask).log_softmax(-1)
    return torch.nn.functional.kl_div(log_probs, target, log_target=True, reduction="batchmean")


@torch.no_grad()
def score(learner, params_list, batches, labels: torch.Tensor, features_fn, logits_fn):
    """Mean loss (against `labels`), mean penultimate features and mean predicted distribution of the learners."""
    losses, feats, probs, start = [], [], [], 0
    for inputs, mask in batches:
        y = labels[start : start + len(inputs)].to(inputs.device)
        start += len(inputs)
        logits = [logits_fn(learner, p, inputs, mask) for p in params_list]
        losses.append(torch.stack([torch.nn.functional.cross_entropy(z, y, reduction="none") for z in logits]).mean(0))
        feats.append(torch.stack([features_fn(learner, p, inputs, mask) for p in params_list]).mean(0))
        probs.append(torch.stack([z.softmax(-1) for z in logits]).mean(0))
    return (torch.cat(t).float().cpu().numpy() for t in (losses, feats, probs))


def trust_round(
    state: TrustState,
    losses,
    features,
    probs,
    num_labels: int,
    clean_labels=None,
    seed: int = 0,
    recalibrate: bool = True,
    keep_fraction: float | None = None,
):
    """Update `state` in place from one scoring of the real data (`probs`: the learners' mean predicted
    distributions); returns what to log."""
    labels = state.labels.numpy()
    predicted = probs.argmax(1)
    trusted = small_loss_split(losses, labels, num_labels, seed, keep_fraction)
    moved = np.zeros_like(trusted)
    if recalibrate:
        moved = reliable_relabels(features, predicted, labels, trusted)
    labels = np.where(moved, predicted, labels)
    trusted = trusted | moved
    state.labels, state.trusted = torch.from_numpy(labels).long(), torch.from_numpy(trusted)
    state.predicted = torch.from_numpy(probs).float()
    logs = {"trusted": int(trusted.sum()), "trusted_share": float(trusted.mean()), "recalibrated": int(moved.sum())}
    if clean_labels is not None:
        clean = np.asarray(clean_labels)
        logs["trusted_precision"] = float((labels[trusted] == clean[trusted]).mean()) if trusted.any() else 0.0
        logs["recalibrated_right"] = int((labels[moved] == clean[moved]).sum())
    return logs
