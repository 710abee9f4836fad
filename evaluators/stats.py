"""Statistics for VPTT reports: mean, Win%, Cohen's d, Spearman rho and Kendall's W.

Conventions (paper Sec. 4.2, Table 3, Tables 7-10):

* Win%: per item (persona x prompt) the method(s) with the highest score win; a tie among the best splits
  the item's single win equally (``atol`` decides what counts as a tie). Shares sum to 1 over methods.
* Cohen's d: ``|mu_a - mu_b| / s_pooled`` with ``s_pooled = sqrt(((n1-1) s1^2 + (n2-1) s2^2) / (n1+n2-2))``
  (sample variances, ddof=1). Table 3 compares each method with the best one; Tables 7-10 with Baseline.
* Spearman rho: Pearson correlation of average ranks (ties get the mean of their ranks); NaN when either
  side is constant.
* Kendall's W for m raters x n items: ranks within each rater (average ranks for ties), S = sum of squared
  deviations of the item rank sums, ``W = 12 S / (m^2 (n^3 - n) - m sum_j T_j)`` with
  ``T_j = sum_g (t_g^3 - t_g)`` over rater j's tie groups (``tie_correction=True``) or without that term.

Example:
    >>> cohens_d([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    1.0
    >>> win_rates([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]]).tolist()
    [0.25, 0.75, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vptt.core.errors import ConfigError

__all__ = ["MethodSummary", "average_ranks", "cohens_d", "kendalls_w", "mean", "mean_ci", "signed_cohens_d",
           "spearman_rho", "summarize_methods", "win_rates"]

ArrayLike = Sequence[float] | np.ndarray


def _vector(x: ArrayLike, name: str, min_len: int = 1) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1) if np.ndim(x) <= 1 else None
    if a is None:
        raise ConfigError(f"{name} must be one-dimensional, got shape {np.shape(x)}")
    if a.size < min_len:
        raise ConfigError(f"{name} needs at least {min_len} value(s), got {a.size}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{name} contains NaN or inf; drop or impute those items first")
    return a


def mean(values: ArrayLike) -> float:
    """Arithmetic mean of a non-empty vector of finite values."""
    return float(_vector(values, "values").mean())


def win_rates(scores: np.ndarray | Sequence[Sequence[float]], atol: float = 0.0) -> np.ndarray:
    """Share of items each method wins, from an (n_items, n_methods) score matrix (Win% = 100 x this).

    Methods within ``atol`` of an item's best score tie and split that item equally.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ConfigError(f"scores must be an (n_items, n_methods) matrix, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores contain NaN or inf; drop or impute those items first")
    best = s >= s.max(axis=1, keepdims=True) - atol
    return (best / best.sum(axis=1, keepdims=True)).mean(axis=0)


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's d = |mean(a) - mean(b)| / pooled sample std (inf if s_pooled = 0 and means differ, else 0)."""
    x, y = _vector(a, "a"), _vector(b, "b")
    if x.size + y.size < 3:
        raise ConfigError("Cohen's d needs n1 + n2 >= 3 values to estimate a pooled standard deviation")
    ss = ((x - x.mean()) ** 2).sum() + ((y - y.mean()) ** 2).sum()
    s_pooled = math.sqrt(ss / (x.size + y.size - 2))
    diff = abs(float(x.mean() - y.mean()))
    if s_pooled == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / s_pooled


def signed_cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """``(mean(a) - mean(b)) / s_pooled``: :func:`cohens_d` with the sign of the difference."""
    d = cohens_d(a, b)
    diff = float(np.mean(np.asarray(a, dtype=np.float64)) - np.mean(np.asarray(b, dtype=np.float64)))
    return -d if diff < 0 else d


def mean_ci(values: ArrayLike, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its Student-t confidence interval ``mean ± t s / sqrt(n)``.

    The bounds are NaN with fewer than two values (no spread to estimate).

    Example:
        >>> [round(x, 3) for x in mean_ci([1.0, 2.0, 3.0])]
        [2.0, -0.484, 4.484]
    """
    a = _vector(values, "values")
    m = float(a.mean())
    if a.size < 2:
        return m, math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return m, m - half, m + half


def average_ranks(x: ArrayLike) -> np.ndarray:
    """Ranks 1..n, ties receiving the mean of the ranks they span."""
    a = _vector(x, "x")
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_a[1:] != sorted_a[:-1])))
    ends = np.append(starts[1:], a.size)  # group g spans sorted positions [starts[g], ends[g])
    group_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def spearman_rho(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either input is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    if rx.size != ry.size or rx.size < 2:
        raise ConfigError(f"x and y need the same length >= 2, got {rx.size} and {ry.size}")
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((dx**2).sum() * (dy**2).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else math.nan


def kendalls_w(ratings: np.ndarray | Sequence[Sequence[float]], tie_correction: bool = True) -> float:
    """Kendall's coefficient of concordance W for an (m raters, n items) rating matrix.

    Each rater's ratings are turned into average ranks (direction does not matter: W is the same for
    ranks and reversed ranks). NaN when every rater ties every item (no ranking information).
    """
    r = np.asarray(ratings, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2:
        raise ConfigError(f"ratings must be (m raters >= 2, n items >= 2), got shape {r.shape}")
    m, n = r.shape
    ranks = np.vstack([average_ranks(row) for row in r])
    totals = ranks.sum(axis=0)
    s = float(((totals - totals.mean()) ** 2).sum())
    denom = m**2 * (n**3 - n)
    if tie_correction:
        for row in r:
            _, counts = np.unique(row, return_counts=True)
            denom -= m * float((counts**3 - counts).sum())
    return 12.0 * s / denom if denom > 0 else math.nan


@dataclass(frozen=True)
class MethodSummary:
    """One method's row of a report table.

    Attributes:
        name: method name.  n: number of items.  mean, std: mean and sample std (ddof=1) of its scores.
        win_rate: share of items it wins (Win% / 100).
        cohens_d: d against ``reference`` (NaN for the reference itself).  reference: the method compared to.
    """

    name: str
    n: int
    mean: float
    std: float
    win_rate: float
    cohens_d: float
    reference: str


def summarize_methods(scores: Mapping[str, ArrayLike], reference: str | None = None,
                      atol: float = 0.0) -> list[MethodSummary]:
    """Mean, Win% and Cohen's d per method over the same items (paired by position).

    Args:
        scores: method name -> per-item scores, all the same length (item i is the same prompt/persona).
        reference: method to compute d against ("Baseline" as in Tables 7-10); None compares with the
            method of highest mean (Table 3).
        atol: tie tolerance for Win%.

    Cohen's d is NaN where it cannot be estimated (fewer than two items, or no spread).
    """
    names = list(scores)
    if not names:
        raise ConfigError("scores is empty; pass {method name: per-item scores}")
    cols = [_vector(scores[k], f"scores[{k!r}]") for k in names]
    if len({c.size for c in cols}) != 1:
        raise ConfigError("every method needs one score per item (same length, same item order)")
    ref = names[int(np.argmax([c.mean() for c in cols]))] if reference is None else reference
    if ref not in scores:
        raise ConfigError(f"reference {ref!r} is not one of the methods {names}")
    wins = win_rates(np.column_stack(cols), atol=atol)
    ref_col = cols[names.index(ref)]

    def d(k: str, c: np.ndarray) -> float:
        if k == ref:
            return math.nan
        try:
            return cohens_d(c, ref_col)
        except ConfigError:  # too few items, or no spread: d cannot be estimated ("n/a" in reports)
            return math.nan

    return [MethodSummary(name=k, n=int(c.size), mean=float(c.mean()),
                          std=float(c.std(ddof=1)) if c.size > 1 else math.nan, win_rate=float(w),
                          cohens_d=d(k, c), reference=ref)
            for k, c, w in zip(names, cols, wins)]
