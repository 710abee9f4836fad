"""The module-level front door: ``personalize()`` / ``apersonalize()`` run the agent graph; ``score_prompt()``,
``compare_methods()`` and ``add_photos()`` serve apps (``vptt serve`` is a thin layer over these)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from vptt.agents.personalizer import Personalizer
from vptt.agents.results import PersonalizationResult
from vptt.core.checks import check_query
from vptt.core.errors import NoPostsError
from vptt.core.models import Persona

_default: Personalizer | None = None
_default_lock = threading.Lock()
_agents: weakref.WeakKeyDictionary[Personalizer, Any] = weakref.WeakKeyDictionary()
_BARE_ONLY = ("config", "composer", "strict")


def default_personalizer() -> Personalizer:
    """The process-wide Personalizer built from ``VPTT_*`` settings on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Personalizer()
        return _default


def agent_for(personalizer: Personalizer) -> Any:
    """The :class:`~sdk.agent.PersonalizationAgent` that ``personalize()`` runs for this Personalizer.

    One agent (one compiled graph) per Personalizer. Its text gate scores prompts only when
    ``settings.text_gate_threshold`` is set; with no generator the graph stops after the text gate.
    """
    with _default_lock:
        agent = _agents.get(personalizer)
        if agent is None:
            from vptt.agents.gates import TextGateConfig
            from vptt.sdk.agent import PersonalizationAgent

            threshold = personalizer.settings.text_gate_threshold
            gate = TextGateConfig() if threshold is None else TextGateConfig(threshold=threshold)
            agent = PersonalizationAgent(personalizer, text_scorer=None if threshold is None else "vptt",
                                         text_gate=gate)
            _agents[personalizer] = agent
        return agent


def personalize(persona: Persona | str, query: str, *, method: str = "vprag",
                personalizer: Personalizer | None = None, agent: Any = None, thread_id: str | None = None,
                **kwargs: Any) -> PersonalizationResult:
    """Personalize ``query`` for ``persona`` by running the agent graph (load → retrieve → compose → text gate).

    Args:
        persona: a :class:`Persona` or the id of a stored persona.
        query: what the user asked for.
        method: ``vprag`` (default), ``baseline``, ``persona_only``, ``brag`` or ``comb``.
        personalizer: whose store and settings to use (default: built from ``VPTT_*`` settings).
        agent: a configured :class:`~sdk.agent.PersonalizationAgent` (LLM composer, generator, gates).
        thread_id: checkpoint thread of this run (with an agent that has a checkpointer).
        **kwargs: ``config``, ``composer`` or ``strict`` run the bare path
            (:meth:`Personalizer.personalize`) with those per-call settings.

    Returns:
        The result; from the graph it is an :class:`PersonalizationResult` (with
        gate decisions, candidates and images).
    """
    unknown = set(kwargs) - set(_BARE_ONLY)
    if unknown:
        raise TypeError(f"personalize() got unexpected arguments {sorted(unknown)}")
    p = personalizer or (agent.personalizer if agent is not None else default_personalizer())
    if kwargs:
        return p.personalize(persona, query, method=method, **kwargs)
    return (agent or agent_for(p)).run(persona, query, method=method, thread_id=thread_id)


async def apersonalize(persona: Persona | str, query: str, *, method: str = "vprag",
                       personalizer: Personalizer | None = None, agent: Any = None,
                       thread_id: str | None = None) -> PersonalizationResult:
    """Async :func:`personalize` (runs the graph with ``ainvoke``)."""
    p = personalizer or (agent.personalizer if agent is not None else default_personalizer())
    return await (agent or agent_for(p)).arun(persona, query, method=method, thread_id=thread_id)


# --------------------------------------------------------------------------- scoring and comparing
class PromptScore(BaseModel):
    """The VPTT score of one prompt for one persona, with its terms (DESIGN: PA, GS, CP, NV)."""

    persona_id: str
    prompt: str
    score: float = Field(description="VPTT_score = 0.2 PA + 0.3 GS + 0.3 CP + 0.2 NV")
    score_c: float = Field(description="VPTT_score-c = (PA + GS + CP) / 3")
    pa: float
    gs: float
    cp: float
    nv: float


class MethodComparison(BaseModel):
    """One method's prompt for a query and its VPTT score (NV = 0 for methods that never saw captions, as in
    the paper's reports)."""

    method: str
    prompt: str
    score: PromptScore
    caption_conditioned: bool
    elements: list[str] = Field(default_factory=list)
    fallback: str | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)


_scorers: weakref.WeakKeyDictionary[Personalizer, Any] = weakref.WeakKeyDictionary()


def _scorer(p: Personalizer) -> Any:
    with _default_lock:
        scorer = _scorers.get(p)
        if scorer is None:
            from vptt.evaluators.vptt_score import VPTTScorer

            scorer = _scorers[p] = VPTTScorer(p.embedder)
        return scorer


def _scores(p: Personalizer, mem: Any, prompts: list[str], conditioned: list[bool]) -> list[PromptScore]:
    from vptt.evaluators.vptt_score import PersonaEmbeddings, combine, score_prepared

    if not mem.persona.posts:
        raise NoPostsError(f"persona {mem.persona_id!r} has no posts: the VPTT score needs captions; add posts")
    scorer = _scorer(p)
    unique = list(dict.fromkeys(prompts))
    embs = np.asarray(p.embedder.embed(unique))
    index = {t: i for i, t in enumerate(unique)}
    geo = scorer.prepare(PersonaEmbeddings(mem.persona_id, mem.card_emb, mem.caption_embs, mem.captions))
    batch = score_prepared(geo, prompts, embs[[index[t] for t in prompts]], caption_conditioned=True)
    out = []
    for prompt, s, cond in zip(prompts, batch, conditioned):
        nv = s.nv if cond else 0.0
        score = s.score if cond else float(combine(s.pa, s.gs, s.cp, 0.0)[0])
        out.append(PromptScore(persona_id=mem.persona_id, prompt=prompt, score=score, score_c=s.score_c,
                               pa=s.pa, gs=s.gs, cp=s.cp, nv=nv))
    return out


def score_prompt(persona: Persona | str, prompt: str, *, personalizer: Personalizer | None = None) -> PromptScore:
    """The VPTT score of ``prompt`` for ``persona`` (its NV term measured against the persona's captions).

    Raises:
        EmptyQueryError: the prompt is empty. NoPostsError: the persona has no captions to score against.
    """
    check_query(prompt, "prompt")
    p = personalizer or default_personalizer()
    return _scores(p, p.embedded(persona), [prompt], [True])[0]


def compare_methods(persona: Persona | str, query: str, *, methods: Sequence[str] | None = None,
                    personalizer: Personalizer | None = None, composer: Any = None) -> list[MethodComparison]:
    """Every method's prompt for ``query`` side by side, each with its VPTT score (one query embedding).

    Args:
        methods: default: all five (baseline, persona_only, brag, vprag, comb).
        composer: the composer to compare with (default: the personalizer's). Baseline is always p' = p.
    """
    from vptt.agents.composer import TemplateComposer
    from vptt.agents.methods import CAPTION_METHODS, METHODS, get_method

    check_query(query)
    names = list(methods or METHODS)
    for m in names:
        get_method(m)
    p = personalizer or default_personalizer()
    q = p.embedder.embed_one(query)
    mem = p.embedded(persona)
    results = [p.personalize_embedded(mem, query, q, method=m,
                                      composer=TemplateComposer() if m == "baseline" else composer)
               for m in names]
    conditioned = [r.method in CAPTION_METHODS for r in results]
    scores = _scores(p, mem, [r.prompt for r in results], conditioned)
    return [MethodComparison(method=r.method, prompt=r.prompt, score=s, caption_conditioned=c,
                             elements=r.trace.kept_elements(), fallback=r.fallback, timings_ms=r.timings_ms)
            for r, s, c in zip(results, scores, conditioned)]


# --------------------------------------------------------------------------- photos (inverse mode)
class PhotosReport(BaseModel):
    """What :func:`add_photos` did."""

    persona_id: str
    status: str
    captioned: list[str] = Field(default_factory=list)
    reused: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)
    posts: int = 0


def add_photos(persona_id: str, photos: Sequence[tuple[str, bytes]], chat: Any, *,
               personalizer: Personalizer | None = None, demographics: dict[str, Any] | None = None
               ) -> PhotosReport:
    """Caption photos into posts of ``persona_id`` through the inverse mode, and upsert the persona.

    The photos are written to a temporary folder for the vision model and deleted afterwards: the posts keep
    the file name and the image's SHA-256, never a path to the bytes. The same photo again is reused, not
    captioned again (post ids come from the image content).

    Args:
        photos: ``(file name, bytes)`` pairs.
        chat: the vision chat endpoint (:class:`~vptt.agents.persona_gen.pipeline.JSONChat`).
    """
    import tempfile
    from pathlib import Path

    from vptt.agents.persona_gen.inverse import IMAGE_EXTENSIONS, build_persona_from_photos
    from vptt.core.errors import ConfigError

    p = personalizer or default_personalizer()
    if not photos:
        raise ConfigError("no photos given; send at least one image file")
    store = p.store
    existing = store.get(persona_id) if persona_id in store else None
    original: dict[str, str] = {}  # temporary file name -> the user's file name
    with tempfile.TemporaryDirectory(prefix="vptt-photos-") as tmp:
        root = Path(tmp).resolve()
        for i, (name, data) in enumerate(photos):
            suffix = Path(name).suffix.lower()
            if suffix not in IMAGE_EXTENSIONS:
                raise ConfigError(f"{name!r} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
            (root / f"{i:04d}{suffix}").write_bytes(data)
            original[f"{i:04d}{suffix}"] = Path(name).name
        res = build_persona_from_photos(root, persona_id, chat, existing=existing, demographics=demographics)
    posts = []
    for post in res.persona.posts:
        if post.image and Path(post.image).parent == root:  # the bytes are gone: keep the name, not the path
            post = post.model_copy(update={"image": None, "file_name": original.get(Path(post.image).name)})
        posts.append(post)
    up = store.upsert(res.persona.model_copy(update={"posts": posts}))
    failed = {original.get(Path(k).name, k): v for k, v in res.failed.items()}
    return PhotosReport(persona_id=persona_id, status=up.status, captioned=res.captioned, reused=res.reused,
                        failed=failed, posts=len(posts))
