"""Feedback re-ranking (VPTT paper Algorithm 1, lines 24-27): sample M candidate prompts, keep argmax f_theta.

* :func:`candidate_prompts` samples M candidate re-prompts ``p'_m`` for one query from the spine: VPRAG (or
  Comb.) re-run under a grid of post temperatures ``tau`` and per-category budgets ``Q^(k)`` (plus the
  three-phrase mode), composed by the personalizer's composer. Candidate 0 is always the personalizer's own
  configuration (the plain p'); the rest are drawn from the grid in an order shuffled by ``seed``, skipping
  configurations that compose an identical prompt. Deterministic for a seed.
* :class:`FeedbackReranker` holds a trained :class:`~evaluators.feedback.FeedbackModel` and the embedder it
  was trained with; :meth:`~FeedbackReranker.rerank` scores every candidate and keeps :func:`pick_best`. It
  is also a :class:`~agents.gates.TextScorer` (``reranker(persona, prompt) -> float``).

torch loads only when a model is loaded (this module itself imports none).

Use in the agent graph (a node after ``retrieve``; the chosen prompt then goes to the text gate)::

    mem = ctx.embedded()
    cands = candidate_prompts(comps.personalizer, mem, state["query"], m=8, seed=state["seed"],
                              composer=comps.composer, config=comps.vprag_config)
    res = reranker.rerank(mem, [c.prompt for c in cands])
    # -> prompt = res.chosen, trace = cands[res.best_index].trace, and res.model_dump() in the run trace

Example:
    >>> pick_best([0.2, 0.9, 0.9, 0.1])
    1
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from vptt.agents.methods import get_method
from vptt.agents.trace import RetrievalTrace
from vptt.agents.vprag import VPRAGConfig
from vptt.core.errors import ConfigError, EmptyQueryError
from vptt.evaluators.feedback_data import profile_tokens, prompt_segments
from vptt.stores.records import EmbeddedPersona

if TYPE_CHECKING:
    from vptt.agents.composer import Composer
    from vptt.agents.personalizer import Personalizer
    from vptt.core.models import Persona
    from vptt.evaluators.feedback import FeedbackModel
    from vptt.stores.embedders import Embedder

TAU_GRID: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5)
BUDGET_GRID: tuple[int, ...] = (1, 2, 3, 4)


def pick_best(scores: Sequence[float] | np.ndarray) -> int:
    """Index of the highest score; ties go to the earliest; NaN ranks last. Empty input is an error."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ConfigError(f"need a non-empty 1-d list of scores, got shape {s.shape}")
    return int(np.argmax(np.where(np.isnan(s), -np.inf, s)))  # argmax returns the first maximum


class CandidatePrompt(BaseModel):
    """One sampled candidate p'_m and the retrieval settings that produced it."""

    index: int
    prompt: str
    label: str
    tau: float
    per_category_budget: int
    three_phrase: bool = False
    trace: RetrievalTrace | None = Field(default=None, repr=False)


class RerankResult(BaseModel):
    """What the re-ranker saw and chose (for the run's trace)."""

    best_index: int
    scores: list[float]
    chosen: str
    candidates: list[str]
    embedder: str = ""
    elapsed_ms: float = 0.0


def candidate_grid(base: VPRAGConfig, taus: Sequence[float] = TAU_GRID,
                   budgets: Sequence[int] = BUDGET_GRID) -> list[VPRAGConfig]:
    """``base`` first, then every (tau, budget) pair and a three-phrase config per tau (no repeats)."""
    grid = [base]
    for tau in taus:
        grid += [VPRAGConfig(tau=tau, per_category_budget=b) for b in budgets]
        grid.append(VPRAGConfig(tau=tau, per_category_budget=base.per_category_budget, three_phrase=True))
    unique: list[VPRAGConfig] = []
    for cfg in grid:
        if all((cfg.tau, cfg.per_category_budget, cfg.three_phrase, dict(cfg.category_budgets))
               != (u.tau, u.per_category_budget, u.three_phrase, dict(u.category_budgets)) for u in unique):
            unique.append(cfg)
    return unique


def _label(cfg: VPRAGConfig, first: bool) -> str:
    mode = "three-phrase" if cfg.three_phrase else f"Q^(k)={cfg.per_category_budget}"
    return ("initial: " if first else "") + f"tau={cfg.tau:g}, {mode}"


def candidate_prompts(personalizer: Personalizer, persona: Persona | str | EmbeddedPersona, query: str,
                      m: int, seed: int = 0, *, method: str = "vprag", composer: Composer | None = None,
                      config: VPRAGConfig | None = None, taus: Sequence[float] = TAU_GRID,
                      budgets: Sequence[int] = BUDGET_GRID,
                      retrieval_text: str | None = None) -> list[CandidatePrompt]:
    """Up to ``m`` distinct candidate prompts (fewer if the grid composes fewer distinct ones).

    Args:
        personalizer: supplies the embedder, category embeddings and the default composer and config.
        persona: a Persona, a stored persona id, or an already embedded persona (used as is).
        query: the user's prompt p.
        m: M, the number of candidates wanted (>= 1).
        seed: shuffles the order in which grid points after the first are tried.
        method: ``"vprag"`` or ``"comb"`` (the methods that take a VPRAG config).
        composer: composes each candidate (default: the personalizer's).
        config: the base VPRAG config, candidate 0 (default: the personalizer's).
        retrieval_text: the text retrieval embeds, when it is not ``query`` (a follow-up turn of a thread
            retrieves on the request chained with the previous retrieval query).

    A persona without posts cannot run VPRAG: the single candidate is the ``persona_only`` composition.
    """
    if m < 1:
        raise ConfigError(f"m must be >= 1, got {m}")
    if method not in ("vprag", "comb"):
        raise ConfigError(f"method must be 'vprag' or 'comb' for candidate sampling, got {method!r}")
    if not isinstance(query, str) or not query.strip():
        raise EmptyQueryError("query must be a non-empty string, e.g. 'A preferred outdoor spot'")
    mem = persona if isinstance(persona, EmbeddedPersona) else personalizer.embedded(persona)
    base, compose = config or personalizer.config, (composer or personalizer.composer).compose
    q_emb = personalizer.embedder.embed_one(retrieval_text or query)
    if not mem.persona.posts:
        trace = get_method("persona_only")(q_emb, mem, {}, base)
        return [CandidatePrompt(index=0, prompt=compose(query.strip(), trace, mem.persona),
                                label="fallback: persona_only", tau=base.tau,
                                per_category_budget=base.per_category_budget, trace=trace)]
    cats = personalizer.category_embeddings(mem.categories)
    grid = candidate_grid(base, taus, budgets)
    rest = grid[1:]
    random.Random(seed).shuffle(rest)
    out: list[CandidatePrompt] = []
    for cfg in [grid[0], *rest]:
        if len(out) == m:
            break
        trace = get_method(method)(q_emb, mem, cats, cfg)
        prompt = compose(query.strip(), trace, mem.persona)
        if any(c.prompt == prompt for c in out):
            continue
        out.append(CandidatePrompt(index=len(out), prompt=prompt, label=_label(cfg, not out), tau=cfg.tau,
                                   per_category_budget=cfg.per_category_budget, three_phrase=cfg.three_phrase,
                                   trace=trace))
    return out


class FeedbackReranker:
    """``p'* = argmax_m f_theta(Emb(p'_m), Emb(P))`` over candidate prompts.

    Args:
        model: a trained :class:`~evaluators.feedback.FeedbackModel`.
        embedder: embeds candidates; must be the embedder the model was trained with (checked by name and
            dimension; the persona's stored embeddings must come from it too).
        strict_embedder: raise on an embedder-name mismatch (False: allow, e.g. a renamed local copy).
    """

    name = "feedback"

    def __init__(self, model: FeedbackModel, embedder: Embedder, *, strict_embedder: bool = True) -> None:
        cfg = model.config
        if embedder.dim != cfg.prompt_dim:
            raise ConfigError(f"embedder {embedder.name!r} gives {embedder.dim}-d vectors but the feedback "
                              f"model expects {cfg.prompt_dim}-d; use the embedder it was trained with "
                              f"({cfg.embedder or 'see its config.json'})")
        if strict_embedder and cfg.embedder and embedder.name != cfg.embedder:
            raise ConfigError(f"the feedback model was trained with embedder {cfg.embedder!r}, not "
                              f"{embedder.name!r}; pass that embedder (or strict_embedder=False)")
        self.model = model
        self.embedder = embedder
        self.strict_embedder = strict_embedder

    def __repr__(self) -> str:
        return f"FeedbackReranker({self.model!r}, embedder={self.embedder.name!r})"

    @classmethod
    def load(cls, directory: str | os.PathLike[str], embedder: Embedder, *,
             strict_embedder: bool = True) -> FeedbackReranker:
        """Load a model saved by ``vptt feedback train`` (imports torch)."""
        from vptt.evaluators.feedback import FeedbackModel

        return cls(FeedbackModel.load(directory), embedder, strict_embedder=strict_embedder)

    def _profile(self, persona: EmbeddedPersona) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.model.config
        if persona.card_emb.shape[-1] != cfg.profile_dim:
            raise ConfigError(f"persona {persona.persona_id!r} is embedded in {persona.card_emb.shape[-1]}-d,"
                              f" the feedback model expects {cfg.profile_dim}-d; re-embed it with "
                              f"{cfg.embedder or 'the model embedder'}")
        if self.strict_embedder and cfg.embedder and persona.embedder and persona.embedder != cfg.embedder:
            raise ConfigError(f"persona {persona.persona_id!r} was embedded with {persona.embedder!r}, the "
                              f"feedback model with {cfg.embedder!r}; use one embedder for both")
        return profile_tokens(persona.card_emb, persona.caption_embs, cfg.max_profile_tokens)

    def score(self, persona: EmbeddedPersona, prompts: Sequence[str]) -> np.ndarray:
        """``f_theta`` of every prompt for this persona, shape ``(len(prompts),)``."""
        if isinstance(prompts, str) or not prompts or \
                not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ConfigError("prompts must be a non-empty list of non-empty strings")
        tokens, mask = self._profile(persona)
        s = self.model.config.max_prompt_tokens
        segs = [prompt_segments(p, s) for p in prompts]
        flat = list(dict.fromkeys(x for ss in segs for x in ss))
        vec = dict(zip(flat, self.embedder.embed(flat)))
        prompt = np.zeros((len(prompts), s, self.embedder.dim), np.float32)
        pmask = np.zeros((len(prompts), s), bool)
        for i, ss in enumerate(segs):
            prompt[i, : len(ss)] = np.stack([vec[x] for x in ss])
            pmask[i, : len(ss)] = True
        n = len(prompts)
        return self.model.predict(np.repeat(tokens[None], n, 0), np.repeat(mask[None], n, 0), prompt, pmask)

    def rerank(self, embedded_persona: EmbeddedPersona, candidates: Sequence[str]) -> RerankResult:
        """Score the candidates and keep the best (ties: the earliest)."""
        t0 = time.perf_counter()
        scores = self.score(embedded_persona, candidates)
        best = pick_best(scores)
        return RerankResult(best_index=best, scores=[float(x) for x in scores], chosen=candidates[best],
                            candidates=list(candidates), embedder=self.embedder.name,
                            elapsed_ms=round((time.perf_counter() - t0) * 1000, 3))

    def __call__(self, persona: EmbeddedPersona, prompt: str) -> float:
        """:class:`~agents.gates.TextScorer` form: the predicted alignment of one prompt."""
        value = float(self.score(persona, [prompt])[0])
        return value if math.isfinite(value) else 0.0
