"""VPRAG against hand-worked examples from the paper's formulas (DESIGN.md's exact choices)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vptt import CANONICAL_CATEGORIES, ConfigError, Persona
from vptt.agents.vprag import (
    VPRAGConfig,
    allocate_quotas,
    category_order,
    effective_posts,
    post_weights,
    retrieve,
    top_k_posts,
)
from vptt.stores.records import ElementTable, EmbeddedPersona

E = np.eye(6)
R2 = 1 / math.sqrt(2)


def test_post_weights_match_the_softmax_formula() -> None:
    rng = np.random.default_rng(0)
    q, caps = rng.normal(size=8), rng.normal(size=(5, 8))
    for tau in (0.05, 0.1, 1.0):
        w = post_weights(q, caps, tau)
        s = [float(c @ q / np.linalg.norm(c) / np.linalg.norm(q)) for c in caps]
        ref = [math.exp(x / tau) for x in s]
        assert np.allclose(w, [r / sum(ref) for r in ref], rtol=1e-10)
    assert post_weights(q, np.zeros((0, 8))).size == 0
    with pytest.raises(ConfigError):
        post_weights(q, caps, tau=0)


@pytest.mark.parametrize("w,budget,expected_k", [
    ([0.25] * 4, 24, 4),             # uniform: H = log 4, n_eff = 4 exactly (floor guarded)
    ([1 / 3] * 3, 24, 3),
    ([0.1] * 10, 2, 4),              # capped at 2Q
    ([1.0, 0.0, 0.0], 24, 1),        # one-hot: H = 0, n_eff = 1
    ([0.5, 0.5, 0.0], 24, 2),
])
def test_effective_posts(w, budget, expected_k) -> None:
    h, n_eff, k = effective_posts(np.array(w), budget)
    ref_h = -sum(x * math.log(x) for x in w if x > 0)
    assert h == pytest.approx(ref_h) and n_eff == pytest.approx(math.exp(ref_h)) and k == expected_k


def test_effective_posts_floor_and_minimum() -> None:
    w = np.array([0.6, 0.3, 0.1])
    h, n_eff, k = effective_posts(w, 24)
    assert k == math.floor(math.exp(-(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1))))
    assert effective_posts(np.array([1.0]), 0)[2] == 1  # K >= 1 even with a zero budget


def test_top_k_ties_keep_earlier_post() -> None:
    assert top_k_posts(np.array([0.2, 0.3, 0.3, 0.2]), 3).tolist() == [1, 2, 0]
    assert category_order(np.array([0.1, 0.5, 0.5])).tolist() == [1, 2, 0]


@pytest.mark.parametrize("w,c,b,expected", [
    ([0.5, 0.3, 0.2], [3, 3, 3], 3, [1, 1, 1]),       # floors 1,0,0; remainders .9 and .6 win
    ([0.7, 0.2, 0.1], [4, 0, 2], 3, [3, 0, 0]),       # zero count gets nothing
    ([0.25] * 4, [1] * 4, 2, [1, 1, 0, 0]),           # tied fractions and weights: earlier posts
    ([0.2, 0.4, 0.4], [1, 1, 1], 1, [0, 1, 0]),       # tied fractions: higher weight, then earlier
    ([0.5, 0.5], [2, 3], 10, [2, 3]),                 # budget above supply takes everything
    ([0.5, 0.5], [2, 3], 5, [2, 3]),                  # budget equal to supply
    ([0.99, 0.01], [1, 10], 5, [1, 4]),               # capped at c_i, surplus passed on
    ([0.3, 0.7], [0, 0], 3, [0, 0]),                  # nothing to allocate
    ([0.3, 0.7], [2, 2], 0, [0, 0]),                  # zero budget
])
def test_allocate_quotas_hand_worked(w, c, b, expected) -> None:
    assert allocate_quotas(w, c, b).tolist() == expected


def test_allocate_quotas_properties_random() -> None:
    rng = np.random.default_rng(1)
    for _ in range(500):
        n = int(rng.integers(1, 8))
        w = rng.dirichlet(np.ones(n))
        c = rng.integers(0, 6, size=n)
        b = int(rng.integers(0, 15))
        q = allocate_quotas(w, c, b)
        assert q.sum() == min(b, c.sum()) and (q <= c).all() and (q >= 0).all()
        if 0 < b < c.sum():
            raw = w * c / (w * c).sum() * b
            if (np.floor(raw) + 1 <= c).all():  # no cap binds: plain largest remainder (Hamilton)
                assert ((q == np.floor(raw)) | (q == np.floor(raw) + 1)).all()


def _persona() -> EmbeddedPersona:
    posts = [{"post_id": f"p{i}", "caption": f"caption {i}"} for i in range(3)]
    persona = Persona.model_validate({"persona_id": "hand", "summary": "S.", "posts": posts})
    rows = [  # (text, post, category, position, embedding)
        ("Warm glow", 0, "lighting", 0, E[0]), ("dim light", 0, "lighting", 1, E[2]),
        ("teapot", 0, "objects", 0, (E[0] + E[2]) * R2),
        ("warm glow", 1, "lighting", 0, E[0]), ("neon", 1, "lighting", 1, E[1]),
        ("cup", 1, "objects", 0, E[0]), ("bowl", 1, "objects", 1, E[3]),
        ("sun", 2, "lighting", 0, E[0]),
    ]
    table = ElementTable(texts=[r[0] for r in rows], embs=np.stack([r[4] for r in rows]),
                         post_idx=np.array([r[1] for r in rows]), category=[r[2] for r in rows],
                         position=np.array([r[3] for r in rows]))
    captions = np.stack([E[0], (E[0] + E[1]) * R2, E[1]])
    return EmbeddedPersona(persona, E[5], captions, table)


def _cats() -> dict[str, np.ndarray]:
    cats = {c: E[3] for c in CANONICAL_CATEGORIES}
    cats["lighting"], cats["objects"] = E[0], (E[0] + E[1]) * R2
    return cats


def test_retrieve_hand_worked_example() -> None:
    trace = retrieve(E[0], _persona(), _cats(), VPRAGConfig(tau=1.0, per_category_budget=2))
    z = [math.exp(1.0), math.exp(R2), math.exp(0.0)]
    w = [x / sum(z) for x in z]
    h = -sum(x * math.log(x) for x in w)
    assert trace.weights == pytest.approx(w) and trace.entropy == pytest.approx(h)
    assert trace.n_eff == pytest.approx(math.exp(h)) and trace.k == 2 and trace.total_budget == 16
    assert [p.post_id for p in trace.chosen_posts] == ["p0", "p1"]
    assert [c.category for c in trace.categories][:2] == ["lighting", "objects"]
    assert trace.categories[0].quotas == {"p0": 1, "p1": 1}   # raw 1.145 / 0.855
    assert trace.categories[1].quotas == {"p0": 1, "p1": 1}   # raw 0.802 / 1.198
    assert all(c.supply == 0 for c in trace.categories[2:])
    assert [(e.text, e.status) for e in trace.elements] == [
        ("Warm glow", "kept"), ("warm glow", "duplicate"), ("cup", "kept"), ("teapot", "kept")]
    assert trace.elements[3].score == pytest.approx(R2)


def test_retrieve_three_phrase_budget() -> None:
    trace = retrieve(E[0], _persona(), _cats(), VPRAGConfig(tau=1.0, three_phrase=True))
    assert trace.total_budget == 3 and trace.k == 2
    assert [(c.category, c.budget) for c in trace.categories[:3]] == [("lighting", 1), ("objects", 1),
                                                                       ("foreground", 0)]
    assert trace.kept_elements() == ["Warm glow", "cup"]


def test_sharp_query_selects_fewer_posts_than_broad_one() -> None:
    persona = _persona()
    sharp = retrieve(E[0], persona, _cats(), VPRAGConfig(tau=0.1))
    broad = retrieve(E[4], persona, _cats(), VPRAGConfig(tau=0.1))  # orthogonal to every caption
    assert sharp.k == 1 and broad.k == 3 and broad.n_eff == pytest.approx(3.0)
