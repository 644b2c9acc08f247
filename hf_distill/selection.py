"""Which real examples a synthetic set starts from (`synthetic_init`), and the random real subset it is compared with.

- `random_rows`: one random real example of each requested class (distinct within a class while it has enough);
- `kmeans_rows`: per class, k-means with as many centres as that class has synthetic examples, over the penultimate
  features of the learner after two epochs of Adam on the real data (as the benchmarks' full-data ceiling is
  trained); each synthetic example starts from the real example nearest its centre (a medoid), so the examples
  cover the class rather than a random corner of it.
"""

from collections.abc import Callable, Iterator

import numpy as np
import torch

from .learners import soft_cross_entropy
from .methods.matching import learner_features
from .methods.unrolled import learner_logits

# Real examples per class that k-means sees (and the learner is trained on), drawn at random beyond that: enough to
# cover a class, and bounded for the multi-million-example presets.
KMEANS_POOL_PER_CLASS = 5_000
KMEANS_EPOCHS = 2

Batches = Callable[[np.ndarray], Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]]


def random_rows(labels: np.ndarray, classes: list[int], seed: int) -> list[int]:
    """One random row of each class in `classes`, in order. A class named more than once gets a different row each
    time while it has unused rows (a row drawn again is drawn anew, so sets without repeats get the rows they always
    got), then rows repeat. Two synthetic examples that started as one row would stay one: same start, same
    gradients."""
    rng = np.random.default_rng(seed)
    used: dict[int, set[int]] = {}
    rows = []
    for c in classes:
        pool, taken = np.flatnonzero(labels == c), used.setdefault(c, set())
        row = int(rng.choice(pool))
        while row in taken and len(taken) < len(pool):
            row = int(rng.choice(pool))
        taken.add(row)
        rows.append(row)
    return rows


def kmeans_rows(learner, params: dict, batches: Batches, labels: np.ndarray, classes: list[int], lr: float, seed: int):
    """Rows of the real examples nearest the per-class k-means centres, in the order of `classes`.

    `batches(rows)` yields `(inputs, attention_mask, labels)` of those rows, in order, in batches; `params` are the
    learner's initial weights, trained here on the pool (Adam, step `lr`, batches of `batches`) before its features are
    taken.
    """
    rng = np.random.default_rng(seed)
    wanted = {c: classes.count(c) for c in dict.fromkeys(classes)}
    pool = {c: np.flatnonzero(labels == c) for c in wanted}
    pool = {c: rng.choice(r, KMEANS_POOL_PER_CLASS, replace=False) if len(r) > KMEANS_POOL_PER_CLASS else r
            for c, r in pool.items()}  # fmt: skip
    rows = np.concatenate(list(pool.values()))
    params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    with torch.enable_grad():
        for _ in range(KMEANS_EPOCHS):
            for x, mask, y in batches(rng.permutation(rows)):
                optimizer.zero_grad()
                soft_cross_entropy(learner_logits(learner, params, x, mask), y).backward()
                optimizer.step()
    with torch.no_grad():
        features = torch.cat([learner_features(learner, params, x, m) for x, m, _ in batches(rows)]).cpu().numpy()
    ends = np.cumsum([len(r) for r in pool.values()])
    medoids = {
        c: _medoids(features[end - len(r) : end], r, wanted[c], seed) for (c, r), end in zip(pool.items(), ends)
    }
    return [medoids[c].pop(0) for c in classes]


def _medoids(features: np.ndarray, rows: np.ndarray, k: int, seed: int) -> list[int]:
    """The row nearest each of k k-means centres; where a class has fewer than k examples, they repeat."""
    from sklearn.cluster import KMeans  # here: scikit-learn costs every process ~1.5 s to import

    centres = KMeans(min(k, len(rows)), n_init=3, random_state=seed).fit(features).cluster_centers_
    picks = [int(rows[i]) for i in nearest_distinct(centres, features)]
    return [picks[i % len(picks)] for i in range(k)]


def nearest_distinct(centres: np.ndarray, features: np.ndarray) -> list[int]:
    """For each centre in turn, the index of the nearest feature row that no earlier centre took: two centres with
    one nearest row would otherwise start two synthetic examples alike, and alike they would stay."""
    from sklearn.metrics import pairwise_distances

    picks: list[int] = []
    for distances in pairwise_distances(centres, features):
        picks.append(next(int(i) for i in np.argsort(distances, kind="stable") if int(i) not in picks))
    return picks
