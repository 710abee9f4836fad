"""VPTT score: the text-level personalization proxy of the VPTT paper (Sec. 3.4), hard (evaluation) forms.

``VPTT_score = 0.2 PA + 0.3 GS + 0.3 CP + 0.2 NV`` and ``VPTT_score-c = (PA + GS + CP) / 3`` with the exact
choices documented in ``docs/evaluators/vptt-score.md``:

* PA = cos(p', P), P the persona card embedding.
* GS = cos(v, B B^T v), B an orthonormal basis of the caption span by modified Gram-Schmidt (a residual of
  norm < 1e-6 is dropped); 0 when the projection is zero.
* CP = exp(-min_k ||B^T v - c_k||), c_k the k-means centroids (k = min(5, n), k-means++ init, seed 0,
  ``n_init=10`` restarts, best inertia kept) of the captions in GS coordinates.
* NV = 1 - max_i |Tri(p') & Tri(c_i)| / |Tri(p')| over distinct lower-cased word trigrams (tokens are
  regex ``[\\w']+``); 1 when p' has no trigram. Reports for methods not conditioned on captions set NV to 0.

Normalisation: every embedding is L2-normalised here (defensively, in float64), so callers may pass raw
vectors. A zero (or missing, or non-finite) persona card embedding, e.g. from an empty persona summary, gives
PA = 0 and ``pa_defined=False``; a zero prompt embedding gives PA = GS = 0. Caption and prompt embeddings must
be finite and caption rows non-zero (:class:`~vptt.core.errors.ConfigError` otherwise).

Example:
    >>> import numpy as np
    >>> caps = np.eye(4)[:2]
    >>> round(gs_reconstruction(np.array([1.0, 0.0, 1.0, 0.0]), caps), 4)  # half of it lies in the span
    0.7071
    >>> novelty("a red ceramic bowl", ["a red ceramic cup"])
    0.5
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from vptt.core.errors import ConfigError, EmbedderError, NoPostsError
from vptt.evaluators._vptt_trigrams import (  # noqa: F401 - part of this module's public API
    TrigramTable,
    _novelty_table,
    build_trigram_table,
    novelty,
    tokens,
    trigrams,
)

__all__ = [
    "GS_TOL", "KMEANS_N_INIT", "MAX_CLUSTERS", "WEIGHTS", "PersonaEmbeddings", "PersonaGeometry",
    "TextEmbedder", "TrigramTable", "VPTTScore", "VPTTScoreBatch", "VPTTScorer", "build_trigram_table",
    "cluster_centroids", "cluster_proximity", "cluster_proximity_batch", "combine", "gs_basis",
    "gs_reconstruction", "gs_reconstruction_batch", "novelty", "novelty_batch", "persona_alignment",
    "persona_alignment_batch", "prepare_persona", "score_prepared", "tokens", "trigrams", "vptt_score",
    "vptt_score_batch",
]

GS_TOL = 1e-6  #: residual norm below which Gram-Schmidt drops a caption (it adds no new direction)
MAX_CLUSTERS = 5  #: k = min(MAX_CLUSTERS, number of captions)
KMEANS_N_INIT = 10  #: k-means++ restarts (random_state=0); the lowest-inertia run is kept
WEIGHTS = (0.2, 0.3, 0.3, 0.2)  #: (PA, GS, CP, NV) weights of VPTT_score
ArrayOrFloat = TypeVar("ArrayOrFloat", float, np.ndarray)


# --------------------------------------------------------------------------- validation / normalisation
def _matrix(x: np.ndarray | Sequence[Sequence[float]], name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0:
        raise ConfigError(f"{name} must be a vector or an (n, D) matrix, got shape {np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{name} contains NaN or inf; re-embed the text")
    return a


def _normalise(a: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))[:, None]
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def _prompts(prompt_embs: np.ndarray | Sequence[Sequence[float]], dim: int) -> np.ndarray:
    v = _normalise(_matrix(prompt_embs, "prompt_emb"))
    if v.shape[1] != dim:
        raise ConfigError(f"prompt embedding has dimension {v.shape[1]} but captions have {dim}; "
                          "embed both with the same model")
    return v


def _captions(caption_embs: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    c = _matrix(caption_embs, "caption_embs")
    if c.shape[0] == 0:
        raise NoPostsError("the persona has no caption embeddings; ingest its posts first")
    zero = np.flatnonzero(np.linalg.norm(c, axis=1) == 0)
    if zero.size:
        raise ConfigError(f"caption embedding row(s) {zero.tolist()} are zero; re-embed those captions")
    return _normalise(c)


def _card(persona_emb: np.ndarray | Sequence[float] | None, dim: int | None) -> np.ndarray | None:
    """Normalised card embedding, or None when it is missing, zero or non-finite (PA is then 0)."""
    if persona_emb is None:
        return None
    p = np.asarray(persona_emb, dtype=np.float64).reshape(-1)
    if dim is not None and p.size != dim:
        raise ConfigError(f"persona_emb has dimension {p.size}, expected {dim}; use the same embedder")
    norm = float(np.linalg.norm(p)) if np.all(np.isfinite(p)) else 0.0
    return p / norm if norm > 0 else None


# --------------------------------------------------------------------------- embedding terms
def persona_alignment_batch(prompt_embs: np.ndarray, persona_emb: np.ndarray | None) -> np.ndarray:
    """PA = cos(p', P) for each row of ``prompt_embs`` (m, D); zeros when the card embedding is undefined."""
    v = _normalise(_matrix(prompt_embs, "prompt_emb"))
    p = _card(persona_emb, v.shape[1])
    return np.zeros(v.shape[0]) if p is None else v @ p


def persona_alignment(prompt_emb: np.ndarray, persona_emb: np.ndarray | None) -> float:
    """PA = cos(Emb(p'), Emb(P)); 0 when the persona card embedding is zero, missing or non-finite."""
    return float(persona_alignment_batch(prompt_emb, persona_emb)[0])


def gs_basis(caption_embs: np.ndarray) -> np.ndarray:
    """Orthonormal basis (D, r) of span(captions) by modified Gram-Schmidt, in caption order.

    Each normalised caption has its components along the earlier basis vectors removed one at a time
    (modified GS); a residual of norm < ``GS_TOL`` is dropped, so duplicates give a rank-deficient basis.
    """
    caps = _captions(caption_embs)
    cols: list[np.ndarray] = []
    for c in caps:
        w = c.copy()
        for q in cols:
            w -= (q @ w) * q
        norm = float(np.linalg.norm(w))
        if norm >= GS_TOL:
            cols.append(w / norm)
    return np.stack(cols, axis=1)


def _gs_from_coords(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """GS from x = B^T v: with B orthonormal, cos(v, B B^T v) = ||B^T v|| / ||v|| (0 for zero v or x)."""
    vn, xn = np.sqrt(np.einsum("ij,ij->i", v, v)), np.sqrt(np.einsum("ij,ij->i", x, x))
    return np.clip(np.divide(xn, vn, out=np.zeros_like(xn), where=vn > 0), 0.0, 1.0)


def gs_reconstruction_batch(prompt_embs: np.ndarray, caption_embs: np.ndarray) -> np.ndarray:
    """GS = cos(v, B B^T v) for each prompt row (0 where the projection or the prompt is zero)."""
    basis = gs_basis(caption_embs)
    v = _prompts(prompt_embs, basis.shape[0])
    return _gs_from_coords(v, v @ basis)


def gs_reconstruction(prompt_emb: np.ndarray, caption_embs: np.ndarray) -> float:
    """GS = cos(v, B B^T v), B = :func:`gs_basis` of the captions; 0 when the projection is zero."""
    return float(gs_reconstruction_batch(prompt_emb, caption_embs)[0])


@functools.cache
def _threadpools() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # inspecting the loaded libraries takes ms: do it once


def _kmeans_centroids(coords: np.ndarray) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    k = min(MAX_CLUSTERS, coords.shape[0])
    # one thread: for ~30 points OpenMP start-up and spinning cost 10-40x more than the work on a busy host
    with warnings.catch_warnings(), _threadpools().limit(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # duplicate captions: < k distinct points
        km = KMeans(n_clusters=k, init="k-means++", random_state=0, n_init=KMEANS_N_INIT).fit(coords)
    return np.asarray(km.cluster_centers_, dtype=np.float64)


def cluster_centroids(caption_embs: np.ndarray) -> np.ndarray:
    """K-means centroids (k, r) of the captions in GS coordinates X_i = B^T v_i, k = min(5, n).

    sklearn ``KMeans(n_clusters=k, init="k-means++", random_state=0, n_init=10)``: ten k-means++ starts
    drawn from one RNG seeded 0 (the first equals the ``n_init=1`` start), the lowest inertia kept.
    """
    caps = _captions(caption_embs)
    return _kmeans_centroids(caps @ gs_basis(caps))


def _cp_from_coords(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CP and nearest centroid: argmin via ||x||^2 - 2 x.c + ||c||^2, then the exact distance to it."""
    sq = (x * x).sum(axis=1, keepdims=True) - 2.0 * (x @ centroids.T) + (centroids * centroids).sum(axis=1)
    nearest = np.argmin(sq, axis=1)
    diff = x - centroids[nearest]
    return np.exp(-np.sqrt(np.einsum("ij,ij->i", diff, diff))), nearest


def cluster_proximity_batch(prompt_embs: np.ndarray, caption_embs: np.ndarray) -> np.ndarray:
    """CP = exp(-min_k ||B^T v - c_k||_2) for each prompt row."""
    geo = prepare_persona(None, caption_embs)
    return _cp_from_coords(_prompts(prompt_embs, geo.dim) @ geo.basis, geo.centroids)[0]


def cluster_proximity(prompt_emb: np.ndarray, caption_embs: np.ndarray) -> float:
    """CP = exp(-min_k ||B^T v - c_k||_2) with the centroids of :func:`cluster_centroids`."""
    return float(cluster_proximity_batch(prompt_emb, caption_embs)[0])


def novelty_batch(prompt_texts: Sequence[str], captions: Sequence[str]) -> np.ndarray:
    """:func:`novelty` for many prompts against one caption set (the caption trigrams built once)."""
    return _novelty_table(list(prompt_texts), build_trigram_table(captions))[0]


# --------------------------------------------------------------------------- results
def combine(pa: ArrayOrFloat, gs: ArrayOrFloat, cp: ArrayOrFloat, nv: ArrayOrFloat
            ) -> tuple[ArrayOrFloat, ArrayOrFloat]:
    """(VPTT_score, VPTT_score-c) = (0.2 PA + 0.3 GS + 0.3 CP + 0.2 NV, (PA + GS + CP) / 3).

    Example:
        >>> [round(x, 3) for x in combine(0.316, 0.597, 0.674, 0.858)]  # paper Table 7, BRAG / 4o-mini
        [0.616, 0.529]
    """
    w_pa, w_gs, w_cp, w_nv = WEIGHTS
    return w_pa * pa + w_gs * gs + w_cp * cp + w_nv * nv, (pa + gs + cp) / 3.0


@dataclass(frozen=True)
class VPTTScore:
    """VPTT score of one prompt: the four terms, both combinations and diagnostics.

    Attributes:
        pa, gs, cp, nv: the terms (``nv`` is 0 when ``caption_conditioned`` is False).
        score: 0.2 PA + 0.3 GS + 0.3 CP + 0.2 NV.  score_c: (PA + GS + CP) / 3.
        caption_conditioned: whether NV entered the score.  pa_defined: False when the card was unusable.
        max_overlap: max_i |Tri(p') & Tri(c_i)| / |Tri(p')| (computed either way).
        best_caption: index of that caption, -1 when no trigram is shared.
        nearest_cluster: index of the nearest centroid.  rank: GS basis rank.  n_clusters: k.
    """

    pa: float
    gs: float
    cp: float
    nv: float
    score: float
    score_c: float
    caption_conditioned: bool = True
    pa_defined: bool = True
    max_overlap: float = 0.0
    best_caption: int = -1
    nearest_cluster: int = 0
    rank: int = 0
    n_clusters: int = 0


@dataclass(frozen=True, eq=False)
class VPTTScoreBatch(Sequence[VPTTScore]):
    """Scores of many prompts for one persona as arrays of shape (m,); ``batch[i]`` is a VPTTScore."""

    pa: np.ndarray
    gs: np.ndarray
    cp: np.ndarray
    nv: np.ndarray
    score: np.ndarray
    score_c: np.ndarray
    max_overlap: np.ndarray
    best_caption: np.ndarray
    nearest_cluster: np.ndarray
    caption_conditioned: bool
    pa_defined: bool
    rank: int
    n_clusters: int

    def __len__(self) -> int:
        return len(self.score)

    def __getitem__(self, i: int) -> VPTTScore:  # type: ignore[override]
        return VPTTScore(
            pa=float(self.pa[i]), gs=float(self.gs[i]), cp=float(self.cp[i]), nv=float(self.nv[i]),
            score=float(self.score[i]), score_c=float(self.score_c[i]),
            caption_conditioned=self.caption_conditioned, pa_defined=self.pa_defined,
            max_overlap=float(self.max_overlap[i]), best_caption=int(self.best_caption[i]),
            nearest_cluster=int(self.nearest_cluster[i]), rank=self.rank, n_clusters=self.n_clusters)

    def __iter__(self) -> Iterator[VPTTScore]:
        return (self[i] for i in range(len(self)))


# --------------------------------------------------------------------------- per-persona preparation
@dataclass(frozen=True, eq=False)
class PersonaGeometry:
    """Everything the score needs from one persona, computed once: card, basis, centroids, trigrams."""

    card: np.ndarray | None
    basis: np.ndarray
    centroids: np.ndarray
    trigrams: TrigramTable

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.basis.shape[0])


def prepare_persona(persona_emb: np.ndarray | None, caption_embs: np.ndarray,
                    captions: Sequence[str] = ()) -> PersonaGeometry:
    """Precompute the persona side of the score (basis, centroids, caption trigram table).

    ``captions`` may be left empty when only PA/GS/CP are needed; scoring with NV then raises.
    """
    caps = _captions(caption_embs)
    if len(captions) and len(captions) != caps.shape[0]:
        raise ConfigError(f"{len(captions)} caption texts but {caps.shape[0]} caption embeddings; "
                          "pass one text per embedding row")
    basis = gs_basis(caps)
    return PersonaGeometry(card=_card(persona_emb, caps.shape[1]), basis=basis,
                           centroids=_kmeans_centroids(caps @ basis),
                           trigrams=build_trigram_table(captions))


def score_prepared(geo: PersonaGeometry, prompt_texts: Sequence[str], prompt_embs: np.ndarray,
                   caption_conditioned: bool = True) -> VPTTScoreBatch:
    """Score many prompts (texts and (m, D) embeddings) against a prepared persona, vectorised."""
    texts = list(prompt_texts)
    v = _prompts(prompt_embs, geo.dim)
    if v.shape[0] != len(texts):
        raise ConfigError(f"{len(texts)} prompt texts but {v.shape[0]} prompt embeddings")
    if caption_conditioned and geo.trigrams.n_captions == 0:
        raise ConfigError("NV needs the caption texts: pass captions to prepare_persona / vptt_score, "
                          "or caption_conditioned=False")
    with _threadpools().limit(limits=1, user_api="blas"):  # (m, D) @ (D, r<=30): threads only add overhead
        pa = np.zeros(len(texts)) if geo.card is None else v @ geo.card
        x = v @ geo.basis
        cp, nearest = _cp_from_coords(x, geo.centroids)
    gs = _gs_from_coords(v, x)
    nv_raw, best = _novelty_table(texts, geo.trigrams)
    nv = nv_raw if caption_conditioned else np.zeros_like(nv_raw)
    score, score_c = combine(pa, gs, cp, nv)
    return VPTTScoreBatch(
        pa=pa, gs=gs, cp=cp, nv=nv, score=score, score_c=score_c, max_overlap=1.0 - nv_raw,
        best_caption=best, nearest_cluster=nearest, caption_conditioned=caption_conditioned,
        pa_defined=geo.card is not None, rank=int(geo.basis.shape[1]), n_clusters=int(geo.centroids.shape[0]))


def vptt_score_batch(prompt_texts: Sequence[str], prompt_embs: np.ndarray, persona_emb: np.ndarray | None,
                     caption_embs: np.ndarray, captions: Sequence[str],
                     caption_conditioned: bool = True) -> VPTTScoreBatch:
    """VPTT score of many prompts for one persona (the persona side computed once)."""
    return score_prepared(prepare_persona(persona_emb, caption_embs, captions), prompt_texts, prompt_embs,
                          caption_conditioned)


def vptt_score(prompt_text: str, prompt_emb: np.ndarray, persona_emb: np.ndarray | None,
               caption_embs: np.ndarray, captions: Sequence[str], caption_conditioned: bool = True
               ) -> VPTTScore:
    """VPTT score of one prompt. ``caption_conditioned=False`` sets NV to 0 (Baseline, Persona Only).

    Args:
        prompt_text: the personalised prompt p'.
        prompt_emb: Emb(p'), shape (D,).
        persona_emb: Emb(persona card), shape (D,); None/zero gives PA = 0.
        caption_embs: the persona's caption embeddings, shape (n, D), n >= 1.
        captions: the caption texts, one per row (may be empty only with ``caption_conditioned=False``).
        caption_conditioned: False for methods that never saw the captions (NV reported as 0).
    """
    emb = np.asarray(prompt_emb)
    if emb.ndim != 1:
        raise ConfigError(f"prompt_emb must be one vector (D,), got shape {emb.shape}; "
                          "use vptt_score_batch for many prompts")
    return vptt_score_batch([prompt_text], emb, persona_emb, caption_embs, captions, caption_conditioned)[0]


# --------------------------------------------------------------------------- stateful scorer
@runtime_checkable
class TextEmbedder(Protocol):
    """Anything that embeds texts into L2-normalised rows of shape (n, D)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``; row i is the embedding of ``texts[i]``."""
        ...


@dataclass(frozen=True, eq=False)
class PersonaEmbeddings:
    """The persona side of the score as the store provides it.

    Attributes:
        persona_id: cache key of the persona.
        card_emb: Emb(persona card), shape (D,); None or zero when the card is empty (PA is then 0).
        caption_embs: caption embeddings, shape (n, D), one row per post.
        captions: the caption texts, in the same order as ``caption_embs``.
    """

    persona_id: str
    card_emb: np.ndarray | None
    caption_embs: np.ndarray
    captions: Sequence[str]


def _fingerprint(p: PersonaEmbeddings) -> tuple[object, ...]:
    caps = np.ascontiguousarray(p.caption_embs)
    card = None if p.card_emb is None else np.ascontiguousarray(p.card_emb).tobytes()
    return caps.shape, hash(caps.tobytes()), hash(card), hash(tuple(p.captions))


class VPTTScorer:
    """Scores prompts for personas, caching each persona's basis, centroids and caption trigrams.

    After the first call for a persona, scoring costs one prompt embedding plus a few small matrix
    products; :meth:`score_many` embeds the prompts in batches of ``batch_size`` texts of similar length.

    Args:
        embedder: object with ``embed(texts) -> np.ndarray`` (L2-normalised rows, shape (n, D)).
        batch_size: prompts per ``embed`` call in :meth:`score_many`.
        max_cached_personas: least-recently-used personas beyond this are evicted.
    """

    def __init__(self, embedder: TextEmbedder, *, batch_size: int = 64, max_cached_personas: int = 1024):
        if not callable(getattr(embedder, "embed", None)):
            raise ConfigError("embedder must have a method embed(texts: list[str]) -> np.ndarray")
        if batch_size < 1 or max_cached_personas < 1:
            raise ConfigError("batch_size and max_cached_personas must be >= 1")
        self.embedder = embedder
        self.batch_size = batch_size
        self.max_cached_personas = max_cached_personas
        self._cache: OrderedDict[str, tuple[tuple[object, ...], PersonaGeometry]] = OrderedDict()

    def prepare(self, persona: PersonaEmbeddings) -> PersonaGeometry:
        """The persona's cached :class:`PersonaGeometry` (recomputed if its embeddings changed)."""
        key, fp = persona.persona_id, _fingerprint(persona)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == fp:
            self._cache.move_to_end(key)
            return hit[1]
        geo = prepare_persona(persona.card_emb, persona.caption_embs, list(persona.captions))
        self._cache[key] = (fp, geo)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_cached_personas:
            self._cache.popitem(last=False)
        return geo

    def clear_cache(self) -> None:
        """Forget every cached persona."""
        self._cache.clear()

    @property
    def cached_personas(self) -> list[str]:
        """Ids of the cached personas, least recently used first."""
        return list(self._cache)

    def _embed(self, texts: list[str], dim: int) -> np.ndarray:
        """Embed in batches of similar length (longest first, less padding); rows in the input order."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), dim))
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            emb = np.asarray(self.embedder.embed([texts[i] for i in idx]), dtype=np.float64)
            if emb.shape != (len(idx), dim):
                raise EmbedderError(f"embedder returned shape {emb.shape} for {len(idx)} texts, expected "
                                    f"({len(idx)}, {dim}); use the embedder that embedded the persona")
            out[idx] = emb
        return out

    def score_many(self, persona: PersonaEmbeddings, prompts: Sequence[str],
                   caption_conditioned: bool = True) -> VPTTScoreBatch:
        """Score many prompts for one persona (batched embedding, vectorised math)."""
        if isinstance(prompts, str):
            raise ConfigError("prompts must be a list of strings; use score() for one prompt")
        geo = self.prepare(persona)
        texts = list(prompts)
        return score_prepared(geo, texts, self._embed(texts, geo.dim), caption_conditioned)

    def score(self, persona: PersonaEmbeddings, prompt: str, caption_conditioned: bool = True) -> VPTTScore:
        """Score one prompt; ``caption_conditioned=False`` sets NV to 0 (Baseline, Persona Only)."""
        return self.score_many(persona, [prompt], caption_conditioned)[0]
