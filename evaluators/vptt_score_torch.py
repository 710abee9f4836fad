"""Differentiable VPTT score terms (torch), for using the score as a learnable objective (paper Sec. 3.4).

The persona side (GS basis B, k-means centroids c_k) is a constant computed once by
:func:`vptt.evaluators.vptt_score.prepare_persona` and handed over with :func:`persona_tensors`; gradients flow to
the prompt embedding (and, for soft NV, to the prompt's trigram embeddings).

* PA = cos(v, P) and GS = cos(v, B B^T v): differentiable as they stand.
* Soft CP (``docs/evaluators/vptt-score.md``): ``sum_k softmax(-d / tau_cp)_k * exp(-d_k)``, d_k = ||B^T v - c_k||; it tends to the
  hard ``exp(-min_k d_k)`` as ``tau_cp -> 0``.
* Soft NV (paper): ``1 - max_i sum_{t in Tri(p')} max_{t' in Tri(c_i)} cos(phi(t), phi(t')) / |Tri(p')|``
  with ``phi`` any callable mapping a list of trigram strings ("w1 w2 w3") to an (n, E) array or tensor
  (e.g. MiniLM). ``tau=None`` uses hard maxima (the paper's form; with one-hot ``phi`` it equals hard NV);
  ``tau > 0`` replaces both maxima by the softmax-weighted mean ``sum softmax(x / tau) * x``, which tends to
  the maximum as ``tau -> 0`` and passes gradients to every candidate.

Example:
    >>> import torch
    >>> v = torch.tensor([1.0, 1.0, 0.0], requires_grad=True)
    >>> basis = torch.eye(3)[:, :1]
    >>> round(gs_reconstruction(v, basis).item(), 4)
    0.7071
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vptt.core.errors import ConfigError
from vptt.evaluators.vptt_score import WEIGHTS, PersonaGeometry, tokens

__all__ = [
    "SoftVPTTTerms", "TrigramEmbedder", "cluster_distances", "cluster_proximity", "gs_reconstruction",
    "persona_alignment", "persona_tensors", "smooth_max", "soft_cluster_proximity", "soft_novelty",
    "soft_novelty_from_embeddings", "soft_vptt_score", "trigram_strings",
]

TrigramEmbedder = Callable[[list[str]], "np.ndarray | torch.Tensor"]
_EPS = 1e-12


def persona_tensors(geo: PersonaGeometry, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                       torch.Tensor]:
    """(basis (D, r), card (D,) or None, centroids (k, r)) of a prepared persona as constant tensors."""
    def as_t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dtype, device=device)

    return as_t(geo.basis), None if geo.card is None else as_t(geo.card), as_t(geo.centroids)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v, dim=-1, eps=_EPS)


def persona_alignment(prompt_emb: torch.Tensor, persona_emb: torch.Tensor | None) -> torch.Tensor:
    """PA = cos(v, P) over the last dimension (batch dims allowed); 0 for a missing or zero card."""
    if persona_emb is None or not bool(torch.isfinite(persona_emb).all() and torch.any(persona_emb != 0)):
        return (prompt_emb * 0).sum(-1)  # keeps the graph and the batch shape
    return (_unit(prompt_emb) * _unit(persona_emb)).sum(-1)


def gs_reconstruction(prompt_emb: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """GS = cos(v, B B^T v) (batch dims allowed); 0 where the projection is zero."""
    proj = (prompt_emb @ basis) @ basis.T
    dots = (prompt_emb * proj).sum(-1)
    denom = prompt_emb.norm(dim=-1) * proj.norm(dim=-1)
    return torch.where(denom > _EPS, dots / denom.clamp_min(_EPS), torch.zeros_like(dots))


def cluster_distances(prompt_emb: torch.Tensor, basis: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """d_k = ||B^T v - c_k||_2 for the normalised prompt v; shape (..., k)."""
    x = _unit(prompt_emb) @ basis
    return torch.linalg.vector_norm(x.unsqueeze(-2) - centroids, dim=-1)


def cluster_proximity(prompt_emb: torch.Tensor, basis: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Hard CP = exp(-min_k d_k) (subgradient through the nearest centroid)."""
    return torch.exp(-cluster_distances(prompt_emb, basis, centroids).amin(dim=-1))


def soft_cluster_proximity(prompt_emb: torch.Tensor, basis: torch.Tensor, centroids: torch.Tensor,
                           tau_cp: float = 0.1) -> torch.Tensor:
    """Soft CP = sum_k softmax(-d / tau_cp)_k * exp(-d_k); -> hard CP as tau_cp -> 0."""
    if tau_cp <= 0:
        raise ConfigError(f"tau_cp must be > 0, got {tau_cp}; use cluster_proximity for the hard form")
    d = cluster_distances(prompt_emb, basis, centroids)
    return (torch.softmax(-d / tau_cp, dim=-1) * torch.exp(-d)).sum(-1)


def smooth_max(x: torch.Tensor, dim: int, tau: float | None) -> torch.Tensor:
    """max over ``dim`` (tau None) or the softmax-weighted mean sum softmax(x/tau) * x (tau > 0)."""
    if tau is None:
        return x.amax(dim=dim)
    if tau <= 0:
        raise ConfigError(f"tau must be > 0 or None (hard max), got {tau}")
    return (torch.softmax(x / tau, dim=dim) * x).sum(dim)


def trigram_strings(text: str) -> list[str]:
    """Distinct word trigrams of the lower-cased text as "w1 w2 w3" strings, in first-seen order."""
    toks = tokens(text)
    return list(dict.fromkeys(" ".join(t) for t in zip(toks, toks[1:], toks[2:])))


def soft_novelty_from_embeddings(prompt_tri: torch.Tensor, caption_tris: Sequence[torch.Tensor],
                                 tau: float | None = None) -> torch.Tensor:
    """NV~ from trigram embeddings: prompt (T, E) and one (T_i, E) tensor per caption.

    A caption without trigrams contributes overlap 0; a prompt without trigrams gives 1.
    """
    if prompt_tri.shape[0] == 0:
        return prompt_tri.sum() * 0 + 1.0
    p = _unit(prompt_tri)
    overlaps = [smooth_max(p @ _unit(c).T, dim=1, tau=tau).sum() / p.shape[0] if c.shape[0] else p.sum() * 0
                for c in caption_tris]
    if not overlaps:
        return p.sum() * 0 + 1.0
    return 1.0 - smooth_max(torch.stack(overlaps), dim=0, tau=tau)


def _embed_trigrams(phi: TrigramEmbedder, tris: list[str], like: torch.Tensor | None) -> torch.Tensor:
    out = phi(tris) if tris else None
    if out is None:
        dim = like.shape[1] if like is not None else 1
        return torch.zeros((0, dim), dtype=torch.float32 if like is None else like.dtype)
    emb = out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out), dtype=torch.float32)
    if emb.ndim != 2 or emb.shape[0] != len(tris):
        raise ConfigError(f"phi returned shape {tuple(emb.shape)} for {len(tris)} trigrams; "
                          "it must return one row per trigram string")
    return emb


def soft_novelty(prompt_text: str, captions: Sequence[str], phi: TrigramEmbedder,
                 tau: float | None = None) -> torch.Tensor:
    """Soft NV of a prompt against captions, embedding distinct trigram strings with ``phi``.

    ``phi(list_of_trigram_strings)`` must return an (n, E) array or tensor; if it returns a tensor with
    ``requires_grad`` the result is differentiable w.r.t. it.
    """
    p = _embed_trigrams(phi, trigram_strings(prompt_text), None)
    caps = [_embed_trigrams(phi, trigram_strings(c), p) for c in captions]
    return soft_novelty_from_embeddings(p, caps, tau)


@dataclass(frozen=True, eq=False)
class SoftVPTTTerms:
    """Differentiable terms and combinations (tensors with the prompt batch shape)."""

    pa: torch.Tensor
    gs: torch.Tensor
    cp: torch.Tensor
    nv: torch.Tensor
    score: torch.Tensor
    score_c: torch.Tensor


def soft_vptt_score(prompt_emb: torch.Tensor, persona_emb: torch.Tensor | None, basis: torch.Tensor,
                    centroids: torch.Tensor, nv: torch.Tensor | float = 0.0, tau_cp: float | None = 0.1
                    ) -> SoftVPTTTerms:
    """0.2 PA + 0.3 GS + 0.3 CP~ + 0.2 NV and (PA + GS + CP~) / 3; ``tau_cp=None`` uses hard CP.

    ``nv`` is a precomputed (soft or hard) novelty; pass 0 for methods not conditioned on captions.
    """
    pa = persona_alignment(prompt_emb, persona_emb)
    gs = gs_reconstruction(prompt_emb, basis)
    cp = (cluster_proximity(prompt_emb, basis, centroids) if tau_cp is None
          else soft_cluster_proximity(prompt_emb, basis, centroids, tau_cp))
    nv_t = torch.as_tensor(nv, dtype=pa.dtype, device=pa.device).expand_as(pa)
    w_pa, w_gs, w_cp, w_nv = WEIGHTS
    return SoftVPTTTerms(pa=pa, gs=gs, cp=cp, nv=nv_t, score=w_pa * pa + w_gs * gs + w_cp * cp + w_nv * nv_t,
                         score_c=(pa + gs + cp) / 3.0)
