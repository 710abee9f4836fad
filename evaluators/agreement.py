"""Agreement statistics for validating metrics against human ratings (VPTT paper Sec. 4.2.1, Table 1).

Pure functions over numpy arrays; :mod:`evaluators.validation` feeds them the joined ratings.

* Kendall's W per item: one item (persona x task x LLM) is an (annotators x methods) matrix; W says how
  much the annotators agree on the order of the methods (:func:`evaluators.stats.kendalls_w`, tie
  corrected). The paper's "W = 0.651 +- 0.141" is read as the mean and sample standard deviation (ddof=1)
  of the per-item W over the items of a task (:func:`mean_sd`).
* Top-k agreement: per item, the method a metric ranks best lies among the reference's k best methods
  (:func:`top_k_hits`); the share of such items (:func:`top_k_agreement`). With k = 2 this is this
  project's reading of the paper's "Top-2 agreement".
* Bootstrap confidence intervals: percentile intervals over resampled units, seeded
  (:func:`bootstrap_ci`); correlations pooled over images resample whole items (:func:`cluster_bootstrap_ci`),
  since the images of one item share a persona.

Example:
    >>> top_k_agreement([[0.1, 0.9, 0.5]], [[1.0, 3.0, 4.0]], k=2)
    1.0
    >>> mean_sd([1.0, 2.0, 3.0])
    (2.0, 1.0, 3)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from vptt.core.errors import ConfigError
from vptt.evaluators.stats import kendalls_w, spearman_rho

__all__ = ["bootstrap_ci", "cluster_bootstrap_ci", "item_kendalls_w", "mean_absolute_error", "mean_sd",
           "pooled_spearman", "top_k_agreement", "top_k_hits"]

Matrix = np.ndarray | Sequence[Sequence[float]]


def _matrix(x: Matrix, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2:
        raise ConfigError(f"{name} must be an (n_items, n_methods >= 2) matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{name} contains NaN or inf; keep only items every method has a score for")
    return a


def item_kendalls_w(blocks: Sequence[Matrix]) -> np.ndarray:
    """Kendall's W of each item: ``blocks[i]`` is item i's (raters, methods) score matrix.

    An item with fewer than two raters or two methods, or where every rater ties every method, gets NaN
    (no ranking information), so callers can count and drop them.
    """
    out = np.full(len(blocks), math.nan)
    for i, block in enumerate(blocks):
        b = np.asarray(block, dtype=np.float64)
        if b.ndim == 2 and b.shape[0] >= 2 and b.shape[1] >= 2:
            out[i] = kendalls_w(b, tie_correction=True)
    return out


def mean_sd(values: Sequence[float] | np.ndarray) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1) and count of the finite values (NaN where undefined)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    sd = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return float(v.mean()), sd, int(v.size)


def top_k_hits(pred: Matrix, ref: Matrix, k: int = 2, atol: float = 1e-9) -> np.ndarray:
    """Per item, the share of ``pred``'s best methods that lie among ``ref``'s top ``k``.

    ``ref``'s top k holds every method scoring at least the k-th highest value of the item (so methods tied
    with the k-th place count as top k). When several methods tie for ``pred``'s best (within ``atol``), the
    item counts the fraction of them inside ``ref``'s top k, like a tie splitting a win.
    """
    p, r = _matrix(pred, "pred"), _matrix(ref, "ref")
    if p.shape != r.shape:
        raise ConfigError(f"pred and ref must have the same shape, got {p.shape} and {r.shape}")
    if not 1 <= k <= p.shape[1]:
        raise ConfigError(f"k must be between 1 and the number of methods ({p.shape[1]}), got {k}")
    best = p >= p.max(axis=1, keepdims=True) - atol
    kth = -np.sort(-r, axis=1)[:, k - 1:k]
    top = r >= kth - atol
    return (best & top).sum(axis=1) / best.sum(axis=1)


def top_k_agreement(pred: Matrix, ref: Matrix, k: int = 2, atol: float = 1e-9) -> float:
    """Share of items whose ``pred``-best method is in ``ref``'s top ``k`` (mean of :func:`top_k_hits`)."""
    return float(top_k_hits(pred, ref, k, atol).mean())


def mean_absolute_error(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Mean of ``|x - y|`` over pairs (same length, finite)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ConfigError(f"x and y need the same non-zero length, got {a.size} and {b.size}")
    return float(np.abs(a - b).mean())


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` units drawn with replacement.

    ``statistic`` receives an index array of length ``n`` (a resample of ``range(n)``). Resamples where it
    is NaN are dropped; the interval is NaN when fewer than half of them are finite or ``n < 2``.
    Draws come from ``numpy.random.default_rng(seed)``, so the same call gives the same interval.
    """
    if n_boot < 1 or not 0.0 < level < 1.0:
        raise ConfigError(f"n_boot must be >= 1 and level in (0, 1), got {n_boot} and {level}")
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)], dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if stats.size < max(1, n_boot // 2):
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def pooled_spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho of two paired vectors; NaN when fewer than 3 pairs or either side is constant."""
    if len(x) < 3:
        return math.nan
    return spearman_rho(x, y)


def cluster_bootstrap_ci(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                         clusters: Sequence[object], *, n_boot: int = 1000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of the pooled Spearman rho of ``(x, y)``, resampling whole clusters (items).

    Each resample draws as many clusters as there are, with replacement, and pools the pairs of every drawn
    cluster (a cluster drawn twice contributes its pairs twice).
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or len(clusters) != a.size:
        raise ConfigError("x, y and clusters must have the same length")
    keys = list(dict.fromkeys(clusters))
    index = {c: i for i, c in enumerate(keys)}
    members: list[list[int]] = [[] for _ in keys]
    for pos, c in enumerate(clusters):
        members[index[c]].append(pos)
    groups = [np.array(m, dtype=np.int64) for m in members]

    def stat(idx: np.ndarray) -> float:
        take = np.concatenate([groups[i] for i in idx])
        return pooled_spearman(a[take], b[take])

    return bootstrap_ci(stat, len(groups), n_boot=n_boot, seed=seed, level=level)
