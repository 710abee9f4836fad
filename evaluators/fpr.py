"""Finer-Personalization Rank (arXiv:2512.19026): identity preservation as fine-grained retrieval.

Each generated image is a *query* ranked against an identity-labelled *gallery* of real images of every
identity in its group (a fine-grained category set such as CUB species, or the individuals of one Re-ID
dataset). The gallery never holds an image used as a reference for generation: :func:`build_gallery`
drops (or, with ``on_reference="raise"``, refuses) every candidate whose key or decoded pixels equal a
reference, and :class:`Gallery` re-checks this on construction.

Conventions (``docs/evaluators/fpr.md``):

* Features are L2-normalised; distance = ``1 - cos``; a query is ranked only against its own group.
* Relevant = same identity. ``AP = sum_k P@k * rel_k / n_relevant`` (0 when the gallery holds no image of
  the query's identity; such queries are listed in the diagnostics and count as misses in Recall@k).
* **Ties.** Gallery items at exactly the same distance form a block that is retrieved at once: every
  relevant item of a block is credited with the precision at the block's *last* rank. This is
  scikit-learn's ``average_precision_score`` (one threshold per distinct score), so
  ``AP == average_precision_score(relevant, -distance)`` holds with ties. No ordering *inside* a block can
  reproduce it in general: a 3-item block holding 2 relevant items gets ``2 * 2/3`` from scikit-learn, but
  ``1/2 + 2/3`` with the relevant items last and ``1 + 1`` with them first. Without ties the block rule is
  the plain formula above.
* Recall@k is the CMC value at k (share of queries with a relevant item in the top k), the retrieval
  convention of CUB/Cars and Re-ID. The rank of the first relevant item follows the same tie rule: it is
  the last rank of its block (``#{gallery items with distance <= the closest relevant one}``).
* Same-identity cosine: per query the mean cosine to the gallery images of its identity; averaged over the
  queries that have any.

Example:
    >>> import numpy as np
    >>> d = np.array([[0.1, 0.2, 0.2, 0.5]]); rel = np.array([[False, True, True, False]])
    >>> float(average_precision(d, rel)[0])  # block {0.2, 0.2} ends at rank 3: P = 2/3 for both
    0.6666666666666666
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

from vptt.core.errors import ConfigError
from vptt.evaluators._image_encoders import (
    EncoderInfo,
    EncoderSpec,
    as_image_encoder,
    cosine_matrix,
    encode,
    to_jsonable,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

ImageLike = Union[str, Path, "Image.Image"]
OnReference = Literal["exclude", "raise"]
DEFAULT_GROUP = "all"


class ReferenceInGalleryError(ConfigError):
    """A reference image used for generation is among the gallery candidates (``on_reference="raise"``)."""


# ---------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class LabelledImage:
    """One image with its identity and group. ``key`` defaults to the resolved path (or the pixel digest)."""

    image: ImageLike
    identity: str
    group: str = DEFAULT_GROUP
    key: str = ""

    def __post_init__(self) -> None:
        if not str(self.identity):
            raise ConfigError("identity must be a non-empty string")
        if not self.key:
            key = str(Path(self.image).resolve()) if isinstance(self.image, (str, Path)) else ""
            object.__setattr__(self, "key", key or f"pixels:{pixel_digest(self.image)}")

    def load(self) -> Image.Image:
        """The image as RGB PIL."""
        from vptt.evaluators._canvas import load_image

        return load_image(self.image)


def pixel_digest(image: ImageLike) -> str:
    """SHA-1 of the decoded RGB pixels and size: equal for byte-different files holding the same image."""
    from vptt.evaluators._canvas import load_image

    rgb = load_image(image)
    return hashlib.sha1(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


@dataclass(frozen=True)
class Gallery:
    """Identity-labelled real images, guaranteed free of the references used for generation.

    Attributes:
        items: The gallery images.
        digests: Pixel digest of each item (same order).
        reference_keys: Keys of the references this gallery was built against.
        reference_digests: Pixel digests of those references.
        excluded: Keys of candidates dropped because they were references.
    """

    items: tuple[LabelledImage, ...]
    digests: tuple[str, ...]
    reference_keys: frozenset[str] = frozenset()
    reference_digests: frozenset[str] = frozenset()
    excluded: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.items) != len(self.digests):
            raise ConfigError("Gallery needs one digest per item; build it with build_gallery()")
        leaked = [it.key for it, dg in zip(self.items, self.digests)
                  if it.key in self.reference_keys or dg in self.reference_digests]
        if leaked:
            raise ReferenceInGalleryError(f"{len(leaked)} reference image(s) in the gallery, "
                                          f"e.g. {leaked[:3]}")

    @property
    def groups(self) -> list[str]:
        """Group names in first-seen order."""
        return list(dict.fromkeys(it.group for it in self.items))


def build_gallery(candidates: Sequence[LabelledImage], references: Sequence[ImageLike | LabelledImage], *,
                  on_reference: OnReference = "exclude") -> Gallery:
    """Build a gallery from identity-labelled candidates, keeping out every reference image.

    A candidate is a reference when its key (resolved path) or its decoded pixels equal a reference's, so a
    copy of a reference under another file name is caught too.

    Args:
        candidates: Identity-labelled real images.
        references: The images used for generation (paths, PIL images or labelled images).
        on_reference: ``"exclude"`` drops such candidates (listed in ``Gallery.excluded``); ``"raise"``
            raises :class:`ReferenceInGalleryError`.

    Returns:
        The gallery.
    """
    if on_reference not in ("exclude", "raise"):
        raise ConfigError(f"on_reference must be 'exclude' or 'raise', got {on_reference!r}")
    refs = [r if isinstance(r, LabelledImage) else LabelledImage(r, identity="reference") for r in references]
    ref_keys = frozenset(r.key for r in refs)
    ref_digests = frozenset(pixel_digest(r.image) for r in refs)
    kept: list[LabelledImage] = []
    digests: list[str] = []
    excluded: list[str] = []
    for cand in candidates:
        digest = pixel_digest(cand.image)
        if cand.key in ref_keys or digest in ref_digests:
            excluded.append(cand.key)
            continue
        kept.append(cand)
        digests.append(digest)
    if excluded and on_reference == "raise":
        raise ReferenceInGalleryError(f"{len(excluded)} gallery candidate(s) are reference images used for "
                                      f"generation, e.g. {excluded[:3]}; remove them or use on_reference="
                                      "'exclude'")
    if not kept:
        raise ConfigError("the gallery is empty after removing the references; add real images per identity")
    return Gallery(tuple(kept), tuple(digests), ref_keys, ref_digests, tuple(excluded))


# --------------------------------------------------------------------------------------------- pure core


def _check_pair(distances: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d, r = np.atleast_2d(np.asarray(distances, dtype=np.float64)), np.atleast_2d(np.asarray(relevant, bool))
    if d.shape != r.shape:
        raise ConfigError(f"distances {d.shape} and relevant {r.shape} must have the same (Q, G) shape")
    if not np.all(np.isfinite(d)):
        raise ConfigError("distances must be finite")
    return d, r


def _sorted_blocks(d: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relevance in ascending-distance order and, per position, the 0-based last index of its tie block."""
    order = np.argsort(d, axis=1, kind="stable")
    ds, rs = np.take_along_axis(d, order, 1), np.take_along_axis(r, order, 1)
    n = d.shape[1]
    is_last = np.ones_like(rs)
    is_last[:, :-1] = ds[:, 1:] != ds[:, :-1]
    ends = np.where(is_last, np.arange(n), n)
    return rs, np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]


def average_precision(distances: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Per-query AP over a ``(Q, G)`` distance matrix (smaller = closer), ties retrieved as one block.

    Args:
        distances: ``(Q, G)`` (or ``(G,)``) finite distances.
        relevant: Same shape, True where the gallery item has the query's identity.

    Returns:
        ``(Q,)`` AP values; 0 where a query has no relevant item.
    """
    d, r = _check_pair(distances, relevant)
    rs, block_end = _sorted_blocks(d, r)
    tp = np.cumsum(rs, axis=1)
    precision = np.take_along_axis(tp, block_end, 1) / (block_end + 1)
    n_rel = rs.sum(axis=1)
    return np.where(n_rel > 0, (precision * rs).sum(axis=1) / np.maximum(n_rel, 1), 0.0)


def first_relevant_rank(distances: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based rank of each query's first relevant item (last rank of its tie block); 0 when none."""
    d, r = _check_pair(distances, relevant)
    rs, block_end = _sorted_blocks(d, r)
    first = rs.argmax(axis=1)
    rank = block_end[np.arange(len(rs)), first] + 1
    return np.where(rs.any(axis=1), rank, 0)


def cmc_curve(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """CMC: share of queries whose first relevant rank is in ``1..k``, for ``k = 1..max_rank``."""
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        return np.zeros(max_rank)
    ks = np.arange(1, max_rank + 1)
    return ((ranks[:, None] > 0) & (ranks[:, None] <= ks[None, :])).mean(axis=0)


def same_identity_cosine(cosines: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Per query, the mean cosine to the relevant gallery items (NaN when there are none)."""
    c, r = np.atleast_2d(cosines), np.atleast_2d(np.asarray(relevant, bool))
    n = r.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (c * r).sum(axis=1) / n, np.nan)


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class GroupScores:
    """Retrieval scores of one group's queries."""

    group: str
    n_queries: int
    n_gallery: int
    n_identities: int
    map: float
    recall_at_k: dict[int, float]
    same_identity_cosine: float


@dataclass(frozen=True)
class FPRResult:
    """Finer-Personalization Rank of a set of generated images.

    Attributes:
        map: Mean AP over all queries. ``map_macro``: mean of the groups' mAP.
        recall_at_k: CMC value at each requested k. ``cmc``: the curve for ranks ``1..max(ks)``.
        same_identity_cosine: Mean same-identity cosine over queries with positives.
        groups: Per-group scores. ``per_query_ap`` / ``per_query_rank`` / ``query_keys``: per query.
        encoder: Model, feature and preprocessing that produced the features.
        diagnostics: Counts, excluded references, queries without positives, the tie rule.
    """

    map: float
    map_macro: float
    recall_at_k: dict[int, float]
    cmc: tuple[float, ...]
    same_identity_cosine: float
    groups: dict[str, GroupScores]
    per_query_ap: tuple[float, ...]
    per_query_rank: tuple[int, ...]
    query_keys: tuple[str, ...]
    encoder: EncoderInfo
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return to_jsonable(self)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def rank_features(query_feats: np.ndarray, query_ids: Sequence[str], query_groups: Sequence[str],
                  gallery_feats: np.ndarray, gallery_ids: Sequence[str], gallery_groups: Sequence[str],
                  ks: Sequence[int] = (1, 5, 10)) -> tuple[dict[str, np.ndarray], dict[str, GroupScores]]:
    """The whole protocol on features: per-query AP, first-relevant rank, same-identity cosine, per group.

    Returns:
        ``(per_query, groups)``: ``per_query`` has ``ap``, ``rank`` and ``cos`` arrays in query order.
    """
    qg, gg = np.asarray(query_groups, dtype=object), np.asarray(gallery_groups, dtype=object)
    qi, gi = np.asarray(query_ids, dtype=object), np.asarray(gallery_ids, dtype=object)
    missing = sorted(set(qg) - set(gg))
    if missing:
        raise ConfigError(f"query group(s) {missing} have no gallery images; add real images for them")
    ap, rank, cos = np.zeros(len(qi)), np.zeros(len(qi), dtype=int), np.full(len(qi), np.nan)
    groups: dict[str, GroupScores] = {}
    for group in dict.fromkeys(qg):
        qm, gm = qg == group, gg == group
        sim = cosine_matrix(query_feats[qm], gallery_feats[gm])
        rel = qi[qm][:, None] == gi[gm][None, :]
        ap[qm], rank[qm], cos[qm] = (average_precision(1.0 - sim, rel), first_relevant_rank(1.0 - sim, rel),
                                     same_identity_cosine(sim, rel))
        curve = cmc_curve(rank[qm], max(ks))
        groups[str(group)] = GroupScores(str(group), int(qm.sum()), int(gm.sum()), len(set(gi[gm])),
                                         float(ap[qm].mean()), {k: float(curve[k - 1]) for k in ks},
                                         _nanmean(cos[qm]))
    return {"ap": ap, "rank": rank, "cos": cos}, groups


# ------------------------------------------------------------------------------------------------ class


class FinerPersonalizationRank:
    """Holds the image encoder; scores generated images against a :class:`Gallery`.

    Args:
        encoder: Hub id or directory of a CLIP / DINOv2 / SigLIP / DINO-ViT checkpoint, an
            :class:`~vptt.evaluators._image_encoders.HFImageEncoder`, or any callable mapping a list of PIL
            images to an ``(N, D)`` array (e.g. a Re-ID model).
        device: Torch device for a loaded model (``"auto"`` picks CUDA when present).
        dtype: Weight dtype for a loaded model.
        batch_size: Images per forward pass.
        ks: Ranks at which Recall@k is reported.
    """

    def __init__(self, encoder: EncoderSpec, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "float32", batch_size: int = 32, ks: Sequence[int] = (1, 5, 10)):
        if not ks or any(int(k) < 1 for k in ks):
            raise ConfigError(f"ks must be positive ranks, got {list(ks)}")
        self.ks = tuple(sorted({int(k) for k in ks}))
        self.encoder, self.info = as_image_encoder(encoder, device=device, dtype=dtype, batch_size=batch_size)

    def encode(self, images: Sequence[LabelledImage]) -> np.ndarray:
        """L2-normalised features of labelled images."""
        return encode(self.encoder, [it.load() for it in images])

    def score(self, queries: Sequence[LabelledImage], gallery: Gallery, *,
              gallery_features: np.ndarray | None = None) -> FPRResult:
        """Rank every generated image (query) against its group's gallery.

        Args:
            queries: Generated images labelled with the identity (and group) they should show.
            gallery: Built by :func:`build_gallery`.
            gallery_features: Features of ``gallery.items`` from :meth:`encode`, to reuse across methods.

        Returns:
            The :class:`FPRResult`.
        """
        if not queries:
            raise ConfigError("no generated images (queries) to score")
        gallery_keys = {it.key for it in gallery.items}
        leaked = [q.key for q in queries if q.key in gallery_keys]
        if leaked:
            raise ConfigError(f"generated image(s) {leaked[:3]} are also in the gallery; keep them apart")
        gal = self.encode(gallery.items) if gallery_features is None else np.asarray(gallery_features)
        if gal.shape[0] != len(gallery.items):
            raise ConfigError(f"gallery_features has {gal.shape[0]} rows for {len(gallery.items)} items")
        per, groups = rank_features(self.encode(queries), [q.identity for q in queries],
                                    [q.group for q in queries], gal, [it.identity for it in gallery.items],
                                    [it.group for it in gallery.items], self.ks)
        curve = cmc_curve(per["rank"], max(self.ks))
        no_pos = [q.key for q, r in zip(queries, per["rank"]) if r == 0]
        diagnostics = {"n_queries": len(queries), "n_gallery": len(gallery.items),
                       "excluded_references": list(gallery.excluded), "queries_without_positives": no_pos,
                       "distance": "1 - cosine of L2-normalised features",
                       "ties": "tied distances form one block; relevant items get the block's last-rank "
                               "precision (= sklearn average_precision_score)"}
        return FPRResult(float(per["ap"].mean()), float(np.mean([g.map for g in groups.values()])),
                         {k: float(curve[k - 1]) for k in self.ks}, tuple(float(c) for c in curve),
                         _nanmean(per["cos"]), groups, tuple(float(a) for a in per["ap"]),
                         tuple(int(r) for r in per["rank"]), tuple(q.key for q in queries), self.info,
                         diagnostics)


def scan_labelled_dir(root: str | Path) -> list[LabelledImage]:
    """Labelled images from ``root/<identity>/*`` (group ``"all"``) or ``root/<group>/<identity>/*``."""
    from vptt.evaluators._canvas import list_images

    base = Path(root)
    if not base.is_dir():
        raise ConfigError(f"not a directory: {base}")
    out: list[LabelledImage] = []
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        inner = sorted(p for p in sub.iterdir() if p.is_dir())
        if inner:
            out += [LabelledImage(f, identity=ident.name, group=sub.name) for ident in inner
                    for f in list_images(ident)]
        else:
            out += [LabelledImage(f, identity=sub.name) for f in list_images(sub)]
    if not out:
        raise ConfigError(f"no images under {base}; expected {base}/<identity>/*.jpg or "
                          f"{base}/<group>/<identity>/*.jpg")
    return out
