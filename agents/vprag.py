"""VPRAG (VPTT paper Sec. 3.2, Algorithm 1) as pure functions, as ``docs/vprag.md`` documents them.

1. ``s_i = cos(q, v_i)``; ``w = softmax(s / tau)``                                   -> :func:`post_weights`
2. ``H = -sum w log w``; ``n_eff = exp(H)``; ``K = max(1, min(floor(n_eff), 2Q))``     -> :func:`effective_posts`
   ``I`` = top-K posts by ``w`` (ties: earlier post first)                            -> :func:`top_k_posts`
3. category priority ``cos(Emb(category), q)``, visited in decreasing priority        -> :func:`category_order`
4. per-category largest-remainder quotas over ``I``                                  -> :func:`allocate_quotas`
5. top ``q_i`` elements of post ``i`` by ``cos(Emb(element), q)``; union, de-duplicated case-insensitively,
   first (most relevant) kept                                                        -> :func:`retrieve`

Example (the paper's quota rule on a hand-worked case):
    >>> allocate_quotas([0.5, 0.3, 0.2], [3, 3, 3], 3).tolist()
    [1, 1, 1]
    >>> allocate_quotas([0.7, 0.2, 0.1], [4, 0, 2], 3).tolist()
    [3, 0, 0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vptt.agents.trace import CategoryStep, ChosenPost, ElementChoice, RetrievalTrace
from vptt.core.errors import ConfigError
from vptt.stores.records import EmbeddedPersona

_EPS = 1e-9  # guards floor() against round-off (exp(log 3) = 2.9999999999999996)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def post_weights(query_emb: np.ndarray, caption_embs: np.ndarray, tau: float = 0.1) -> np.ndarray:
    """Softmax post weights ``w_i = exp(s_i/tau) / sum_j exp(s_j/tau)`` with ``s_i = cos(q, v_i)``.

    Inputs are L2-normalised defensively (a no-op for normalised embeddings).
    """
    return softmax_weights(cosine_scores(query_emb, caption_embs), tau)


def softmax_weights(sims: np.ndarray, tau: float) -> np.ndarray:
    """``softmax(sims / tau)``, computed stably."""
    if tau <= 0:
        raise ConfigError(f"tau must be positive, got {tau}")
    sims = np.asarray(sims, dtype=np.float64)
    if sims.size == 0:
        return sims
    z = np.exp(sims / tau - (sims / tau).max())
    return z / z.sum()


def cosine_scores(query_emb: np.ndarray, embs: np.ndarray) -> np.ndarray:
    """``cos(q, e_m)`` for every row ``e_m`` of ``embs`` (float64)."""
    embs = np.asarray(embs, dtype=np.float64)
    if embs.size == 0:
        return np.zeros(0)
    return _unit(embs) @ _unit(query_emb)


def effective_posts(weights: np.ndarray, total_budget: int) -> tuple[float, float, int]:
    """``(H, n_eff, K)``: entropy of ``w``, ``exp(H)`` and ``K = max(1, min(floor(n_eff), 2 * total_budget))``.

    ``floor`` is taken of ``n_eff + 1e-9`` so that, e.g., uniform weights over 3 posts give K = 3.
    """
    w = np.asarray(weights, dtype=np.float64)
    nz = w[w > 0]
    entropy = float(-(nz * np.log(nz)).sum()) if nz.size else 0.0
    n_eff = math.exp(entropy)
    k = max(1, min(math.floor(n_eff + _EPS), 2 * int(total_budget)))
    if w.size:
        k = min(k, w.size)
    return entropy, n_eff, k


def top_k_posts(weights: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest weights, largest first; ties keep the earlier post first."""
    w = np.asarray(weights, dtype=np.float64)
    return np.argsort(-w, kind="stable")[:k]


def category_order(priorities: np.ndarray) -> np.ndarray:
    """Category indices by decreasing priority; ties keep the given category order."""
    return np.argsort(-np.asarray(priorities, dtype=np.float64), kind="stable")


def allocate_quotas(weights: Sequence[float] | np.ndarray, counts: Sequence[int] | np.ndarray,
                    budget: int) -> np.ndarray:
    """Largest-remainder quotas ``q_i = floor(w_i c_i / sum_j w_j c_j * budget)`` plus remainders.

    The remaining units go one each to the largest fractional parts (ties: higher ``w``, then earlier post);
    no ``q_i`` exceeds ``c_i`` (a post at its cap is passed over, and passes repeat until the budget is
    spent); a budget at or above ``sum c_i`` takes every element.

    Returns:
        int64 array, one quota per post, summing to ``min(budget, sum(counts))``.
    """
    w = np.asarray(weights, dtype=np.float64)
    c = np.asarray(counts, dtype=np.int64)
    if w.shape != c.shape:
        raise ConfigError(f"weights and counts differ in shape: {w.shape} vs {c.shape}")
    if (c < 0).any() or (w < 0).any():
        raise ConfigError("weights and counts must be non-negative")
    budget = int(budget)
    if budget <= 0 or c.sum() == 0:
        return np.zeros_like(c)
    if c.sum() <= budget:
        return c.copy()
    mass = w * c
    if mass.sum() <= 0:  # every weight underflowed: fall back to supply-proportional
        mass = c.astype(np.float64)
    raw = mass / mass.sum() * budget
    floor = np.floor(raw + _EPS)
    q = np.minimum(floor, c).astype(np.int64)
    frac = np.clip(raw - floor, 0.0, None)
    order = sorted(range(len(c)), key=lambda i: (-frac[i], -w[i], i))
    remaining = budget - int(q.sum())
    while remaining > 0:
        for i in order:
            if remaining == 0:
                break
            if q[i] < c[i]:
                q[i] += 1
                remaining -= 1
    return q


@dataclass(frozen=True)
class VPRAGConfig:
    """VPRAG settings (defaults: tau 0.1, Q^(k) = 3 per category).

    Args:
        tau: softmax temperature of the post weights.
        per_category_budget: ``Q^(k)`` for every category.
        category_budgets: per-category overrides of ``Q^(k)``.
        three_phrase: the paper's "three-phrase budget": ``Q = 3`` in total, one unit to each of the three
            highest-priority categories that have elements in the chosen posts.
    """

    tau: float = 0.1
    per_category_budget: int = 3
    category_budgets: Mapping[str, int] = field(default_factory=dict)
    three_phrase: bool = False

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ConfigError(f"tau must be positive, got {self.tau}")
        if self.per_category_budget < 0 or any(v < 0 for v in self.category_budgets.values()):
            raise ConfigError("category budgets must be >= 0")

    def budgets(self, categories: Sequence[str]) -> dict[str, int]:
        """``Q^(k)`` for each category (before the three-phrase rule)."""
        return {c: int(self.category_budgets.get(c, self.per_category_budget)) for c in categories}


def _three_phrase_budgets(order: Sequence[str], supply: Mapping[str, int], total: int = 3) -> dict[str, int]:
    budgets = dict.fromkeys(order, 0)
    for cat in order:
        if total == 0:
            break
        if supply[cat] > 0:
            budgets[cat] = 1
            total -= 1
    return budgets


def retrieve(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
             config: VPRAGConfig | None = None) -> RetrievalTrace:
    """Run VPRAG steps 1-5 for one persona; returns the full trace (elements in prompt order).

    Args:
        query_emb: the query embedding.
        persona: the persona's embedded memory.
        category_embs: ``Emb(category name)`` for every category of the persona.
        config: :class:`VPRAGConfig` (defaults if None).
    """
    cfg = config or VPRAGConfig()
    post_ids = persona.post_ids
    categories = persona.categories
    budgets = cfg.budgets(categories)
    total = 3 if cfg.three_phrase else sum(budgets.values())
    q = _unit(query_emb)  # stored matrices are L2-normalised (EmbeddedPersona contract): plain dot products
    sims = persona.caption_embs @ q
    w = softmax_weights(sims, cfg.tau)
    entropy, n_eff, k = effective_posts(w, total)
    chosen = top_k_posts(w, k)
    trace = RetrievalTrace(
        method="vprag", tau=cfg.tau, total_budget=total, post_ids=post_ids,
        similarities=sims.tolist(), weights=w.tolist(), entropy=entropy, n_eff=n_eff, k=k,
        chosen_posts=[ChosenPost(index=int(i), post_id=post_ids[i], similarity=float(sims[i]),
                                 weight=float(w[i])) for i in chosen])
    prio = np.stack([category_embs[c] for c in categories]) @ q
    order = [categories[i] for i in category_order(prio)]
    prio_of = dict(zip(categories, prio.tolist()))
    table = persona.elements
    scores = table.embs @ q
    rows_of = table.groups
    supply = {c: sum(len(rows_of.get((int(i), c), ())) for i in chosen) for c in order}
    if cfg.three_phrase:
        budgets = _three_phrase_budgets(order, supply)
    picked: list[tuple[int, float, int, int, int]] = []  # (cat rank, -score, post rank, position, row)
    for rank, cat in enumerate(order):
        counts = np.array([len(rows_of.get((int(i), cat), ())) for i in chosen], dtype=np.int64)
        quotas = allocate_quotas(w[chosen], counts, budgets[cat])
        trace.categories.append(CategoryStep(
            category=cat, priority=float(prio_of[cat]), budget=budgets[cat], supply=int(counts.sum()),
            quotas={post_ids[i]: int(q) for i, q in zip(chosen, quotas) if q > 0}))
        for post_rank, (i, q) in enumerate(zip(chosen, quotas)):
            if q == 0:
                continue
            rows = rows_of[(int(i), cat)]
            best = rows[np.lexsort((table.position[rows], -scores[rows]))[:q]]
            picked.extend((rank, -float(scores[m]), post_rank, int(table.position[m]), int(m)) for m in best)
    seen: set[str] = set()
    for _, neg_score, _, _, m in sorted(picked):
        key = " ".join(table.texts[m].casefold().split())
        status = "duplicate" if key in seen else "kept"
        seen.add(key)
        trace.elements.append(ElementChoice(text=table.texts[m], category=table.category[m],
                                            post_id=post_ids[int(table.post_idx[m])],
                                            score=-neg_score, status=status))
    return trace
