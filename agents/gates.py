"""The text gate (VPTT score before rendering) and the image gate (image evaluators after it).

The text gate judges the "script before the film" (paper, supplement 7.1): the composed prompt is scored
with a :class:`TextScorer` (the VPTT score by default) against a threshold; below it, up to M candidates are
composed (other temperatures, subsets of the retrieved elements) and the best is kept. Every candidate and
its score is recorded. The image gate runs :class:`ImageEvaluator` objects (masked similarity, VLM judge,
any callable) on a generated image and asks for a new seed while they score below their thresholds.

Scorers and evaluators are small protocols; the adapters import the evaluator modules lazily.

Example:
    >>> plan = candidate_specs(TextGateConfig(max_candidates=3), n_kept=8, temperature_aware=False)
    >>> [s.label for s in plan]
    ['initial', 'top 4/8 elements', 'top 6/8 elements']
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from vptt.agents.trace import RetrievalTrace
from vptt.core.checks import check_threshold, explain_validation
from vptt.core.errors import ConfigError
from vptt.stores.records import EmbeddedPersona


# --------------------------------------------------------------------------- text gate
@runtime_checkable
class TextScorer(Protocol):
    """Scores a prompt for a persona (higher = more personalized)."""

    name: str

    def __call__(self, persona: EmbeddedPersona, prompt: str) -> float: ...


class VPTTTextScorer:
    """:class:`TextScorer` over :class:`evaluators.vptt_score.VPTTScorer` (imported on first use).

    Args:
        embedder: embeds prompts; must be the embedder the persona store used.
        variant: ``"score"`` (VPTT_score, with novelty) or ``"score_c"`` ((PA + GS + CP) / 3).
    """

    def __init__(self, embedder: Any, *, variant: Literal["score", "score_c"] = "score") -> None:
        if variant not in ("score", "score_c"):
            raise ConfigError(f"variant must be 'score' or 'score_c', got {variant!r}")
        from vptt.evaluators.vptt_score import VPTTScorer

        self._scorer = VPTTScorer(embedder)
        self.variant = variant
        self.name = "vptt_score" if variant == "score" else "vptt_score_c"

    score_range = (-1.0, 1.0)
    """Every score lies here (cosines and exp(-d) weighted to at most 1), so a threshold must too."""

    def __repr__(self) -> str:
        return f"VPTTTextScorer(variant={self.variant!r})"

    def explain(self, persona: EmbeddedPersona, prompt: str) -> tuple[float, dict[str, float]]:
        """The score and its terms (PA, GS, CP, NV)."""
        from vptt.evaluators.vptt_score import PersonaEmbeddings

        pe = PersonaEmbeddings(persona.persona_id, persona.card_emb, persona.caption_embs, persona.captions)
        s = self._scorer.score(pe, prompt)
        terms = {"pa": s.pa, "gs": s.gs, "cp": s.cp, "nv": s.nv, "score": s.score, "score_c": s.score_c}
        return float(getattr(s, self.variant)), {k: round(float(v), 6) for k, v in terms.items()}

    def __call__(self, persona: EmbeddedPersona, prompt: str) -> float:
        return self.explain(persona, prompt)[0]


def check_text_gate(cfg: TextGateConfig, scorer: Any) -> None:
    """A :class:`ConfigError` when the threshold lies outside the scorer's ``score_range`` (if it has one).

    A threshold of 55 for a score in [-1, 1] would reject every prompt; this says so before anything runs.
    """
    low, high = getattr(scorer, "score_range", (-math.inf, math.inf))
    check_threshold(cfg.threshold, f"text gate threshold for {getattr(scorer, 'name', 'the scorer')}", low, high,
                    "the paper's baselines sit near 0.32, VPRAG near 0.62" if high == 1.0 else "")


def default_text_scorer(embedder: Any) -> TextScorer | None:
    """The VPTT-score scorer, or None when :mod:`evaluators.vptt_score` is not installed."""
    try:
        return VPTTTextScorer(embedder)
    except ImportError:
        return None


class TextGateConfig(BaseModel):
    """Text gate settings.

    Args:
        threshold: minimum score to accept (VPTT_score, in [-1, 1]: the paper's baselines sit near 0.32, VPRAG
            near 0.62). Must be finite; :func:`check_text_gate` (run by the agent) rejects a threshold outside
            the scorer's ``score_range`` with a :class:`~vptt.core.errors.ConfigError`.
        max_candidates: M, the most prompts composed in all (the first included).
        temperatures: temperatures tried for re-compositions by composers that take one (LLM).
        keep_fractions: element subsets tried: the most relevant fraction of the kept elements.
        stop_on_pass: stop at the first candidate that passes (else compose all M and keep the best).
        on_reject: ``"stop"`` (early rejection: no image for a rejected prompt) or ``"best"`` (go on with the
            best candidate anyway, flagged).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = 0.5
    max_candidates: int = Field(default=4, ge=1, le=32)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(explain_validation(exc, "TextGateConfig")) from None

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_in_range(cls, v: float) -> float:
        return check_threshold(v, "threshold", -math.inf, math.inf)
    temperatures: tuple[float, ...] = (1.0, 0.3, 1.3)
    keep_fractions: tuple[float, ...] = (0.5, 0.75, 0.25)
    stop_on_pass: bool = True
    on_reject: Literal["stop", "best"] = "stop"


@dataclass(frozen=True)
class CandidateSpec:
    """How to compose one candidate: a temperature override and/or a subset of the elements."""

    label: str
    temperature: float | None = None
    keep: int | None = None  # keep the top-``keep`` elements by relevance; None = all


def candidate_specs(cfg: TextGateConfig, n_kept: int, temperature_aware: bool) -> list[CandidateSpec]:
    """The candidate plan: the initial composition, then temperatures and element subsets interleaved."""
    temps = [CandidateSpec(f"temperature {t:g}", temperature=t) for t in cfg.temperatures] \
        if temperature_aware else []
    subsets: list[CandidateSpec] = []
    seen: set[int] = set()
    for f in cfg.keep_fractions:
        k = max(1, math.ceil(f * n_kept))
        if k < n_kept and k not in seen:
            seen.add(k)
            subsets.append(CandidateSpec(f"top {k}/{n_kept} elements", keep=k))
    mixed = [s for pair in zip(temps, subsets) for s in pair]
    mixed += temps[len(subsets):] + subsets[len(temps):]
    return [CandidateSpec("initial"), *mixed][: cfg.max_candidates]


def subset_trace(trace: RetrievalTrace, keep: int) -> RetrievalTrace:
    """A copy of ``trace`` keeping only the ``keep`` most relevant kept elements (others ``over_budget``)."""
    out = trace.model_copy(deep=True)
    kept = [e for e in out.elements if e.status == "kept"]
    ranked = sorted(range(len(kept)), key=lambda j: (-kept[j].score, j))
    for j in ranked[keep:]:
        kept[j].status = "over_budget"
    out.notes.append(f"text gate: candidate kept the {min(keep, len(kept))} most relevant of {len(kept)} "
                     "elements")
    return out


class Candidate(BaseModel):
    """One composed prompt the text gate saw, and its score."""

    index: int
    label: str
    prompt: str
    score: float | None = None
    terms: dict[str, float] = Field(default_factory=dict)
    passed: bool | None = None
    temperature: float | None = None
    n_elements: int = 0
    composer: str = ""
    usage: dict[str, Any] | None = None
    duplicate_of: int | None = None
    compose_ms: float = 0.0


class GateDecision(BaseModel):
    """What a gate decided: ``accept``, ``reject`` (early rejection), ``accept_best`` or ``skipped``."""

    gate: Literal["text", "image"]
    passed: bool
    action: Literal["accept", "reject", "accept_best", "skipped"]
    chosen: int | None = None
    best_score: float | None = None
    threshold: float | None = None
    evaluated: int = 0
    reason: str = ""


def best_candidate(cands: Sequence[Candidate]) -> Candidate:
    """The highest-scoring candidate (ties: the earlier); unscored ones rank last."""
    return max(cands, key=lambda c: -math.inf if c.score is None else c.score)


# --------------------------------------------------------------------------- image gate
@dataclass(frozen=True)
class ImageGateContext:
    """What an image evaluator may look at besides the image."""

    persona: EmbeddedPersona
    query: str
    prompt: str
    init_image: Image.Image | None = None
    attempt: int = 0


@runtime_checkable
class ImageEvaluator(Protocol):
    """Scores a generated image; ``threshold`` is the minimum to pass. NaN means "cannot judge"."""

    name: str
    threshold: float

    def __call__(self, image: Image.Image, context: ImageGateContext) -> float: ...


class ImageGateConfig(BaseModel):
    """Image gate settings: attempts in all (each retry uses a new seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=32)


class ImageCheck(BaseModel):
    """One evaluator's verdict on one image (``score`` None: it could not judge)."""

    evaluator: str
    score: float | None
    threshold: float
    passed: bool | None


class ImageRecord(BaseModel):
    """One generated image: where it is, its seed and parameters, and the image gate's checks."""

    attempt: int
    path: str | None
    seed: int | None
    params: dict[str, Any] = Field(default_factory=dict)
    generator: str = ""
    elapsed_ms: float = 0.0
    checks: list[ImageCheck] = Field(default_factory=list)
    passed: bool | None = None
    _image: Image.Image | None = PrivateAttr(default=None)

    @property
    def image(self) -> Image.Image | None:
        """The PIL image (kept from this run, else opened from ``path``)."""
        if self._image is None and self.path and Path(self.path).exists():
            with Image.open(self.path) as im:
                self._image = im.copy()
        return self._image


def run_image_checks(evaluators: Sequence[ImageEvaluator], image: Image.Image,
                     context: ImageGateContext) -> list[ImageCheck]:
    """Run every evaluator on ``image``; NaN/None scores are recorded as "cannot judge"."""
    checks = []
    for ev in evaluators:
        raw = ev(image, context)
        score = None if raw is None or not math.isfinite(float(raw)) else float(raw)
        checks.append(ImageCheck(evaluator=ev.name, score=score, threshold=float(ev.threshold),
                                 passed=None if score is None else score >= ev.threshold))
    return checks


def image_verdict(checks: Sequence[ImageCheck]) -> tuple[bool, float]:
    """``(passed, margin)``: passed when every judging evaluator passed; margin = min(score - threshold)."""
    judged = [c for c in checks if c.score is not None]
    margin = min((c.score - c.threshold for c in judged), default=0.0)  # type: ignore[operator]
    return all(c.passed for c in judged), float(margin)


class FunctionImageEvaluator:
    """Any ``fn(image, context) -> float`` as an :class:`ImageEvaluator`."""

    def __init__(self, name: str, fn: Callable[[Image.Image, ImageGateContext], float],
                 threshold: float) -> None:
        self.name, self.fn = name, fn
        self.threshold = check_threshold(threshold, f"{name} threshold", -math.inf, math.inf)

    def __call__(self, image: Image.Image, context: ImageGateContext) -> float:
        return float(self.fn(image, context))


class MaskedSimilarityEvaluator:
    """MaSC concept preservation (``cp``) or prompt following (``pf``) of the output against a reference.

    Args:
        scorer: a :class:`evaluators.masked_similarity.MaskedSimilarity`, or a checkpoint to build one from.
        reference: the reference image; ``None`` uses the run's input image (edit tasks).
        reference_mask: foreground mask of the reference.
        output_mask: foreground mask of the output; ``None`` reuses ``reference_mask`` (edits keep layout).
        metric: ``"cp"`` or ``"pf"``.
        subject: subject removed from the prompt before PF.
    """

    def __init__(self, scorer: Any, *, reference_mask: Any, reference: Any = None, output_mask: Any = None,
                 metric: Literal["cp", "pf"] = "cp", subject: str | None = None, threshold: float = 0.5,
                 name: str | None = None, **scorer_kwargs: Any) -> None:
        if metric not in ("cp", "pf"):
            raise ConfigError(f"metric must be 'cp' or 'pf', got {metric!r}")
        if isinstance(scorer, (str, os.PathLike)):
            from vptt.evaluators.masked_similarity import MaskedSimilarity

            scorer = MaskedSimilarity(scorer, **scorer_kwargs)
        self.scorer, self.reference, self.reference_mask = scorer, reference, reference_mask
        self.output_mask = output_mask if output_mask is not None else reference_mask
        self.metric, self.subject = metric, subject
        self.threshold = check_threshold(threshold, f"masc_{metric} threshold", -1.0, 1.0, "MaSC scores are cosines")
        self.name = name or f"masc_{metric}"

    def __call__(self, image: Image.Image, context: ImageGateContext) -> float:
        ref = self.reference if self.reference is not None else context.init_image
        if ref is None:
            raise ConfigError(f"{self.name}: no reference image; pass reference=... or run an edit task")
        res = self.scorer.score(ref, self.reference_mask, image, self.output_mask, context.prompt,
                                self.subject)
        return float(getattr(res, self.metric))


class VLMJudgeEvaluator:
    """The paper's VLM judge (0-5) on one image against the persona's post images.

    Args:
        judge: an :class:`evaluators.vlm_judge.VLMJudge`, or None to build one from ``config``.
        persona_images: the profile images; default: the ``image`` paths of the persona's posts.
        task: ``"generation"`` or ``"editing"``; default follows whether the run edits an input image.
        anchor: a second image shown beside the output, since the judge compares 2-5 images (its score is
            ignored); default: the unedited input image for edits, else a flat grey placeholder.
        embedder: the persona store's embedder; with more post images than the profile canvas holds, it
            embeds the prompt so the canvas shows the posts whose captions match it best (the judge's
            default ``profile_posts="matched"``).
    """

    def __init__(self, judge: Any = None, *, config: Any = None, threshold: float = 3.0,
                 persona_images: Sequence[Any] | None = None, task: str | None = None,
                 name: str = "vlm_judge", http_client: Any = None, anchor: Image.Image | None = None,
                 embedder: Any = None) -> None:
        if judge is None:
            from vptt.evaluators.vlm_judge import VLMJudge

            judge = VLMJudge(config, http_client=http_client)
        self.judge, self.persona_images, self.task = judge, persona_images, task
        self.threshold = check_threshold(threshold, f"{name} threshold", 0.0, 5.0, "the judge scores 0-5")
        self.name, self.anchor, self.embedder = name, anchor, embedder

    def _match(self, context: ImageGateContext) -> dict[str, Any]:
        """Post ids and embeddings for matched profile posts, when the posts outnumber the canvas places."""
        posts = [(i, p) for i, p in enumerate(context.persona.persona.posts) if p.image]
        cfg = getattr(self.judge, "config", None)
        if self.persona_images or len(posts) <= getattr(cfg, "max_profile_images", 10) or \
                getattr(cfg, "profile_posts", "matched") != "matched":
            return {}
        if self.embedder is None:
            raise ConfigError(f"{self.name}: persona {context.persona.persona_id!r} has {len(posts)} post "
                              "images; pass embedder= (the store's embedder) to show the posts matched to "
                              "the prompt, or JudgeConfig(profile_posts='first')")
        rows = [i for i, _ in posts]
        return {"post_ids": [p.post_id for _, p in posts],
                "caption_embeddings": np.asarray(context.persona.caption_embs)[rows],
                "prompt_embeddings": np.asarray(self.embedder.embed([context.prompt]))}

    def __call__(self, image: Image.Image, context: ImageGateContext) -> float:
        images = list(self.persona_images or [p.image for p in context.persona.persona.posts if p.image])
        if not images:
            return math.nan
        task = self.task or ("editing" if context.init_image is not None else "generation")
        anchor = self.anchor or context.init_image or Image.new("RGB", image.size, (128, 128, 128))
        res = self.judge.judge(persona_id=context.persona.persona_id, persona_images=images,
                               method_images={"output": image, "anchor": anchor}, prompt=context.query,
                               task=task, input_image=context.init_image, **self._match(context))
        return float(res.scores.get("output", math.nan))
