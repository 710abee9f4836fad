"""VPTT score (hard forms) against independent computations: numpy by hand, QR / lstsq projections,
sklearn KMeans on the raw embeddings, naive trigram loops, and the paper's own table arithmetic."""

from __future__ import annotations

import re
import warnings
import zlib

import numpy as np
import pytest
from sklearn.cluster import KMeans

from vptt.core.errors import ConfigError, EmbedderError, NoPostsError
from vptt.evaluators import vptt_score as vs
from vptt.evaluators.vptt_score import (
    PersonaEmbeddings,
    VPTTScorer,
    cluster_centroids,
    cluster_proximity,
    combine,
    gs_basis,
    gs_reconstruction,
    novelty,
    novelty_batch,
    persona_alignment,
    vptt_score,
    vptt_score_batch,
)

D = 24
WORDS = ["the", "a", "red", "ceramic", "bowl", "kiln", "glaze", "at", "dawn", "kyoto", "don't", "tea", "cup"]


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def random_texts(rng: np.random.Generator, n: int, lo: int = 0, hi: int = 16) -> list[str]:
    texts = []
    for _ in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(lo, hi))).tolist()
        seps = rng.choice([" ", ", ", ". ", " - ", "  "], size=len(words)).tolist()
        parts = [w for pair in zip(words, seps) for w in pair]
        texts.append("".join(w.upper() if rng.random() < 0.2 else w for w in parts))
    return texts


def naive_trigrams(text: str) -> set[tuple[str, ...]]:
    """Independent tokeniser for ASCII text: scan characters, keep [A-Za-z0-9_'] runs."""
    toks, cur = [], ""
    for ch in text.lower() + " ":
        if ch.isascii() and (ch.isalnum() or ch in "_'"):
            cur += ch
        elif cur:
            toks.append(cur)
            cur = ""
    return {tuple(toks[i:i + 3]) for i in range(len(toks) - 2)}


def naive_novelty(prompt: str, captions: list[str]) -> float:
    tp = naive_trigrams(prompt)
    if not tp:
        return 1.0
    best = 0
    for c in captions:
        shared = 0
        for t in tp:
            if t in naive_trigrams(c):
                shared += 1
        best = max(best, shared)
    return 1.0 - best / len(tp)


def lstsq_projection(v: np.ndarray, caps: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(caps.T, v, rcond=None)
    return caps.T @ coef


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------------------------------- PA
def test_persona_alignment_is_cosine_of_raw_vectors(rng: np.random.Generator) -> None:
    v, p = rng.normal(size=D) * 3, rng.normal(size=D) * 0.2
    assert persona_alignment(v, p) == pytest.approx(cos(v, p), abs=1e-12)


@pytest.mark.parametrize("card", [None, np.zeros(D), np.full(D, np.nan)])
def test_undefined_card_gives_zero_alignment(rng: np.random.Generator, card: np.ndarray | None) -> None:
    caps = rng.normal(size=(4, D))
    assert persona_alignment(rng.normal(size=D), card) == 0.0
    res = vptt_score("a b c d", rng.normal(size=D), card, caps, ["x"] * 4)
    assert res.pa == 0.0 and not res.pa_defined
    assert res.score == pytest.approx(0.3 * res.gs + 0.3 * res.cp + 0.2 * res.nv)


# ------------------------------------------------------------------------------------------- GS
def test_gs_basis_matches_qr_and_is_orthonormal(rng: np.random.Generator) -> None:
    caps = rng.normal(size=(7, D))
    basis = gs_basis(caps)
    q, r = np.linalg.qr(unit(caps).T)
    q = q * np.sign(np.diag(r))  # Gram-Schmidt in caption order = QR with a positive diagonal
    np.testing.assert_allclose(basis, q, atol=1e-10)
    np.testing.assert_allclose(basis.T @ basis, np.eye(7), atol=1e-12)


def test_gs_basis_drops_dependent_residuals(rng: np.random.Generator) -> None:
    a, b = unit(rng.normal(size=(2, D)))
    ortho = unit(rng.normal(size=D) - lstsq_projection(rng.normal(size=D), np.stack([a, b])))
    ortho = unit(ortho - lstsq_projection(ortho, np.stack([a, b])))
    tiny = unit(0.6 * a + 0.8 * b + 1e-8 * ortho)  # residual ~1e-8 < 1e-6: dropped
    small = unit(0.6 * a + 0.8 * b + 1e-4 * ortho)  # residual ~1e-4: kept
    assert gs_basis(np.stack([a, b, a, 2 * b, tiny])).shape == (D, 2)
    assert gs_basis(np.stack([a, b, small])).shape == (D, 3)


def test_gs_reconstruction_equals_lstsq_projection_cosine(rng: np.random.Generator) -> None:
    caps = rng.normal(size=(5, D))
    for _ in range(5):
        v = rng.normal(size=D)
        assert gs_reconstruction(v, caps) == pytest.approx(cos(v, lstsq_projection(v, caps)), abs=1e-10)


def test_gs_reconstruction_extremes(rng: np.random.Generator) -> None:
    caps = rng.normal(size=(3, D))
    inside = caps.T @ rng.normal(size=3)
    outside = rng.normal(size=D) - lstsq_projection(rng.normal(size=D), caps)
    outside = outside - lstsq_projection(outside, caps)
    assert gs_reconstruction(inside, caps) == pytest.approx(1.0, abs=1e-12)
    assert gs_reconstruction(outside, caps) == pytest.approx(0.0, abs=1e-9)
    assert gs_reconstruction(np.zeros(D), caps) == 0.0  # zero projection -> 0, no NaN
    one = rng.normal(size=(1, D))
    v = rng.normal(size=D)
    assert gs_reconstruction(v, one) == pytest.approx(abs(cos(v, one[0])), abs=1e-12)


# ------------------------------------------------------------------------------------------- CP
def test_centroids_equal_kmeans_on_raw_embeddings(rng: np.random.Generator) -> None:
    """GS coordinates are an isometry of span(C), so k-means there = k-means on the raw unit vectors."""
    caps = unit(rng.normal(size=(30, D)) + 2 * rng.normal(size=(5, D)).repeat(6, axis=0))
    cent = cluster_centroids(caps)
    assert cent.shape == (5, gs_basis(caps).shape[1])
    km = KMeans(n_clusters=5, init="k-means++", random_state=0, n_init=10).fit(caps)
    np.testing.assert_allclose(cent @ gs_basis(caps).T, km.cluster_centers_, atol=1e-8)
    x = caps @ gs_basis(caps)
    inertia = ((x[:, None] - cent[None]) ** 2).sum(-1).min(1).sum()
    single = KMeans(n_clusters=5, init="k-means++", random_state=0, n_init=1).fit(x)
    assert inertia == pytest.approx(km.inertia_, rel=1e-9) and inertia <= single.inertia_ + 1e-12


def test_few_captions_are_their_own_centroids(rng: np.random.Generator) -> None:
    caps = rng.normal(size=(3, D))
    x = unit(caps) @ gs_basis(caps)
    cent = cluster_centroids(caps)
    assert cent.shape == (3, 3)
    assert sorted(map(tuple, np.round(cent, 9))) == sorted(map(tuple, np.round(x, 9)))


def test_cluster_proximity_independent(rng: np.random.Generator) -> None:
    caps = unit(rng.normal(size=(12, D)))
    km = KMeans(n_clusters=5, init="k-means++", random_state=0, n_init=10).fit(caps)
    for _ in range(4):
        v = rng.normal(size=D)
        proj = lstsq_projection(unit(v), caps)  # B B^T v, compared with centroids in the ambient space
        expect = np.exp(-np.linalg.norm(km.cluster_centers_ - proj, axis=1).min())
        assert cluster_proximity(v, caps) == pytest.approx(expect, abs=1e-8)


def test_cluster_proximity_one_caption_by_hand() -> None:
    theta = 0.7
    v = np.array([np.cos(theta), np.sin(theta), 0.0])
    assert cluster_proximity(v, np.array([[2.0, 0.0, 0.0]])) == pytest.approx(np.exp(-(1 - np.cos(theta))))


# ------------------------------------------------------------------------------------------- NV
@pytest.mark.parametrize(("prompt", "captions", "expected"), [
    ("a red ceramic bowl", ["A Red ceramic cup"], 0.5),
    ("a red ceramic bowl", ["nothing here at all", "red ceramic bowl!"], 0.5),
    ("don't stop, the kiln", ["don't stop the kiln now"], 0.0),  # apostrophes stay in the token
    ("a b c a b c", ["x a b c"], 2 / 3),  # Tri(p') = {abc, bca, cab}: distinct
    ("red bowl", ["red bowl"], 1.0),  # fewer than three words -> no trigram -> 1
    ("a red ceramic bowl", [], 1.0),
    ("a red ceramic bowl", ["a red"], 1.0),
])
def test_novelty_hand_worked(prompt: str, captions: list[str], expected: float) -> None:
    assert novelty(prompt, captions) == pytest.approx(expected)
    assert novelty_batch([prompt], captions)[0] == pytest.approx(expected)


def test_novelty_matches_naive_loop_and_batch(rng: np.random.Generator) -> None:
    caps = random_texts(rng, 6, 0, 14)
    prompts = random_texts(rng, 300)
    expected = np.array([naive_novelty(p, caps) for p in prompts])
    np.testing.assert_allclose([novelty(p, caps) for p in prompts], expected, atol=1e-15)
    np.testing.assert_allclose(novelty_batch(prompts, caps), expected, atol=1e-15)


def test_novelty_batch_splits_chunks_exactly(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    caps = random_texts(rng, 5, 3, 14)
    prompts = random_texts(rng, 40)
    expected = novelty_batch(prompts, caps)
    monkeypatch.setattr("vptt.evaluators._vptt_trigrams._CHUNK", 7)
    monkeypatch.setattr("vptt.evaluators._vptt_trigrams._fits", lambda n_ids, n_prompts: n_prompts <= 2)  # force recursive splits
    np.testing.assert_array_equal(novelty_batch(prompts, caps), expected)


def test_unicode_tokens() -> None:
    assert novelty("Café crème brûlée ici", ["le café crème brûlée"]) == pytest.approx(0.5)
    assert vs.tokens("KELVIN \u212a-Bowl, naïve_x don't") == ["kelvin", "k", "bowl", "naïve_x", "don't"]


def test_ascii_fast_path_equals_the_regex(rng: np.random.Generator) -> None:
    alphabet = [chr(i) for i in range(128)] + list("ab c'") * 20 + ["é", "ß", "\u00a0", "\u212a"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 30))).tolist())
        assert vs.tokens(text) == re.findall(r"[\w']+", text.lower()), repr(text)


# ------------------------------------------------------------------------------------------- score
@pytest.mark.parametrize(("pa", "gs", "cp", "nv", "v", "vc"), [
    (0.150, 0.375, 0.589, 0.0, 0.319, 0.371),  # Table 7 Baseline, 4o-mini (NV reported as 0)
    (0.316, 0.597, 0.674, 0.858, 0.616, 0.529),  # Table 7 BRAG, 4o-mini
    (0.516, 0.697, 0.707, 0.323, 0.589, 0.640),  # Table 8 BRAG, Qwen
])
def test_combine_reproduces_paper_tables(pa: float, gs: float, cp: float, nv: float, v: float, vc: float
                                         ) -> None:
    score, score_c = combine(pa, gs, cp, nv)
    assert round(score, 3) == pytest.approx(v, abs=1e-3) and round(score_c, 3) == pytest.approx(vc, abs=1e-3)


def test_vptt_score_by_hand_and_unconditioned(rng: np.random.Generator) -> None:
    caps = rng.normal(size=(8, D))
    texts = ["the red ceramic bowl at dawn"] + [f"caption {i} about tea" for i in range(7)]
    v, card = rng.normal(size=D), rng.normal(size=D)
    res = vptt_score("a red ceramic bowl at night", v, card, caps, texts)
    pa, gs, cp = cos(v, card), cos(v, lstsq_projection(v, caps)), cluster_proximity(v, caps)
    nv = naive_novelty("a red ceramic bowl at night", texts)
    assert (res.pa, res.gs, res.cp, res.nv) == pytest.approx((pa, gs, cp, nv), abs=1e-9)
    assert res.score == pytest.approx(0.2 * pa + 0.3 * gs + 0.3 * cp + 0.2 * nv, abs=1e-9)
    assert res.score_c == pytest.approx((pa + gs + cp) / 3, abs=1e-9)
    assert res.best_caption == 0 and res.max_overlap == pytest.approx(1 - nv) and res.rank == 8
    base = vptt_score("a red ceramic bowl at night", v, card, caps, texts, caption_conditioned=False)
    assert base.nv == 0.0 and base.max_overlap == res.max_overlap
    assert base.score == pytest.approx(res.score - 0.2 * nv)


def test_batch_equals_one_at_a_time(rng: np.random.Generator) -> None:
    caps, texts = rng.normal(size=(9, D)), random_texts(rng, 9, 3, 14)
    prompts, embs, card = random_texts(rng, 40), rng.normal(size=(40, D)), rng.normal(size=D)
    batch = vptt_score_batch(prompts, embs, card, caps, texts)
    assert len(batch) == 40
    for i, p in enumerate(prompts):
        one = vptt_score(p, embs[i], card, caps, texts)
        for f in ("pa", "gs", "cp", "nv", "score", "score_c", "max_overlap"):
            assert getattr(batch[i], f) == pytest.approx(getattr(one, f), abs=1e-12)
        assert (batch[i].best_caption, batch[i].nearest_cluster) == (one.best_caption, one.nearest_cluster)
    for name in ("persona_alignment", "gs_reconstruction", "cluster_proximity"):
        single = [getattr(vs, name)(e, card if name == "persona_alignment" else caps) for e in embs]
        arg = card if name == "persona_alignment" else caps
        np.testing.assert_allclose(getattr(vs, f"{name}_batch")(embs, arg), single, atol=1e-12)


def test_edge_cases(rng: np.random.Generator) -> None:
    one = vptt_score("a red ceramic bowl", rng.normal(size=D), rng.normal(size=D),
                     rng.normal(size=(1, D)), ["a red ceramic cup"])
    assert one.rank == 1 and one.n_clusters == 1 and one.nv == 0.5
    dup = np.repeat(rng.normal(size=(2, D)), 3, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning escapes for duplicate captions
        res = vptt_score("hi", rng.normal(size=D), rng.normal(size=D), dup, ["x"] * 6)
    assert res.rank == 2 and res.n_clusters == 5 and res.nv == 1.0 and np.isfinite(res.score)
    zero = vptt_score("a b c", np.zeros(D), rng.normal(size=D), dup, ["a b c"] * 6)
    assert (zero.pa, zero.gs) == (0.0, 0.0) and 0 < zero.cp <= 1


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"caption_embs": np.zeros((0, D))}, NoPostsError),
    ({"caption_embs": np.full((2, D), np.nan)}, ConfigError),
    ({"caption_embs": np.zeros((2, D))}, ConfigError),
    ({"prompt_emb": np.ones(D + 1)}, ConfigError),
    ({"prompt_emb": np.ones((2, D))}, ConfigError),
    ({"persona_emb": np.ones(D + 1)}, ConfigError),
    ({"captions": ["only one"]}, ConfigError),
    ({"captions": []}, ConfigError),  # NV needs the caption texts
])
def test_invalid_inputs(kwargs: dict[str, object], error: type[Exception]) -> None:
    args: dict[str, object] = {"prompt_text": "a b c", "prompt_emb": np.ones(D), "persona_emb": np.ones(D),
                               "caption_embs": np.eye(D)[:2], "captions": ["x", "y"]}
    args.update(kwargs)
    with pytest.raises(error):
        vptt_score(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- scorer
class HashEmbedder:
    """Deterministic bag-of-words embedder that counts its calls."""

    def __init__(self, dim: int = D) -> None:
        self.dim, self.calls = dim, 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()) or ["<empty>"]:
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        return unit(out)


def make_persona(emb: HashEmbedder, pid: str = "p1") -> PersonaEmbeddings:
    captions = ["the red ceramic bowl at dawn", "tea in kyoto", "glaze the cup", "kiln at night",
                "the bowl and the cup"]
    return PersonaEmbeddings(persona_id=pid, card_emb=emb.embed(["potter from kyoto"])[0],
                             caption_embs=emb.embed(captions), captions=captions)


def test_scorer_matches_functional_api_and_batches() -> None:
    emb = HashEmbedder()
    persona = make_persona(emb)
    scorer = VPTTScorer(emb, batch_size=4)
    prompts = [f"a red ceramic bowl {'with tea ' * (i % 4)}number {i}" for i in range(10)]  # mixed lengths
    emb.calls = 0
    got = scorer.score_many(persona, prompts)
    assert emb.calls == 3  # ceil(10 / 4) embedding calls, nothing for the persona
    ref = vptt_score_batch(prompts, HashEmbedder().embed(prompts), persona.card_emb, persona.caption_embs,
                           persona.captions)
    np.testing.assert_allclose(got.score, ref.score, atol=1e-12)
    single = scorer.score(persona, prompts[3], caption_conditioned=False)
    assert single.nv == 0.0 and single.pa == pytest.approx(got[3].pa)
    assert len(scorer.score_many(persona, [])) == 0


def test_scorer_caches_and_refreshes(monkeypatch: pytest.MonkeyPatch) -> None:
    emb = HashEmbedder()
    calls: list[str] = []
    real = vs.prepare_persona
    monkeypatch.setattr(vs, "prepare_persona", lambda *a, **k: calls.append("x") or real(*a, **k))
    scorer = VPTTScorer(emb, max_cached_personas=2)
    p1 = make_persona(emb)
    geo = scorer.prepare(p1)
    for _ in range(3):
        scorer.score(p1, "the bowl")
    assert len(calls) == 1 and scorer.prepare(p1) is geo
    changed = PersonaEmbeddings("p1", p1.card_emb, p1.caption_embs[:3], p1.captions[:3])
    assert scorer.prepare(changed).basis.shape[1] == 3 and len(calls) == 2  # new embeddings: recomputed
    scorer.prepare(make_persona(emb, "p2"))
    scorer.prepare(make_persona(emb, "p3"))
    assert scorer.cached_personas == ["p2", "p3"]


def test_scorer_validates_embedder() -> None:
    with pytest.raises(ConfigError):
        VPTTScorer(object())  # type: ignore[arg-type]
    emb = HashEmbedder()
    persona = make_persona(emb)
    with pytest.raises(EmbedderError):
        VPTTScorer(HashEmbedder(dim=D + 2)).score(persona, "the bowl")
    with pytest.raises(ConfigError):
        VPTTScorer(emb).score_many(persona, "not a list")
