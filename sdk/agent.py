"""The personalization agent: persona memory -> retrieval -> composition -> text gate -> image -> image gate.

:class:`PersonalizationAgent` runs :func:`vptt.agents.graph.build_graph` (a LangGraph ``StateGraph``, compiled
once per agent) around a :class:`~vptt.agents.personalizer.Personalizer`. A thread id names a conversation:
every run in it is a turn, and a follow-up ("now make it autumn") refines the previous prompt for the same
persona. Runs can be checkpointed (SQLite by default, or any injected ``BaseCheckpointSaver``) and resumed by
thread id, streamed (node updates, composer tokens, retrieval traces, gate decisions, images) and awaited.

Example:
    >>> agent = PersonalizationAgent(personalizer, checkpoint="runs.sqlite")       # doctest: +SKIP
    >>> res = agent.run("p01_kyoto_ceramicist", "A preferred outdoor spot", thread_id="chat-1")  # doctest: +SKIP
    >>> agent.run("p01_kyoto_ceramicist", "now make it autumn", thread_id="chat-1").prompt       # doctest: +SKIP
    >>> for event in agent.stream("p01_kyoto_ceramicist", "A cup of tea"):        # doctest: +SKIP
    ...     print(event.kind, event.node)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from vptt.agents.composer import Composer
from vptt.agents.context import AgentComponents, AgentContext, RunContext, components_for
from vptt.agents.conversation import Turn
from vptt.agents.gates import (
    ImageEvaluator,
    ImageGateConfig,
    ImageRecord,
    TextGateConfig,
    TextScorer,
    check_text_gate,
    default_text_scorer,
)
from vptt.agents.generators import ImageGenerator, build_generator, save_png
from vptt.agents.graph import build_graph, recursion_limit
from vptt.agents.llm_composer import LLMComposer, LLMComposerConfig
from vptt.agents.methods import get_method
from vptt.agents.personalizer import Personalizer
from vptt.agents.results import PersonalizationResult
from vptt.agents.trace import RetrievalTrace
from vptt.core.checks import check_persona_arg, check_query
from vptt.core.errors import ConfigError
from vptt.core.models import Persona
from vptt.core.providers import RunTimeoutError
from vptt.sdk._checkpoints import Checkpoints

log = logging.getLogger("vptt.agents")
InputImage = Union[Image.Image, str, "os.PathLike[str]", None]
_INTERNAL = frozenset({"trace", "candidate_traces", "persona_json", "messages", "turns", "previous",
                       "agent_options"})
EventKind = Literal["node", "progress", "token", "retrieval", "candidate", "gate", "image", "result"]


class AgentConfig(BaseModel):
    """Operational settings of :class:`PersonalizationAgent` (unknown fields are rejected).

    Args:
        text_gate / image_gate: gate settings.
        checkpoint: SQLite file for checkpoints (threads, resume), ``":memory:"`` for in-process ones, None for
            none (fastest). An injected ``checkpointer=`` wins over it.
        durability: when checkpoints are written: ``"sync"`` (before the next step), ``"async"``, ``"exit"``.
        save_dir: where generated images go (default: a temporary directory of this agent).
        persona_subdirs: write each persona's images in its own folder under ``save_dir`` (servers).
        auto_thread: with checkpoints on, give a run without ``thread_id`` a thread of its own (resumable);
            False: such runs are not checkpointed (faster; servers checkpoint conversations only).
        seed: base seed of image generation (attempt ``a`` uses ``seed + a``); None draws one per run.
        run_timeout_s: hard limit of one run (checked between nodes and every denoising step; async runs are
            also cancelled).
        strict: raise for a persona without posts instead of falling back to ``persona_only``.
        negative_prompt: passed to generators that take one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_gate: TextGateConfig = Field(default_factory=TextGateConfig)
    image_gate: ImageGateConfig = Field(default_factory=ImageGateConfig)
    checkpoint: str | Path | None = None
    durability: Literal["sync", "async", "exit"] = "sync"
    save_dir: Path | None = None
    persona_subdirs: bool = False
    auto_thread: bool = True
    seed: int | None = None
    run_timeout_s: float | None = Field(default=None, gt=0)
    strict: bool = False
    negative_prompt: str | None = None


class NodeEvent(BaseModel):
    """A streamed event.

    ``kind``: ``node`` (a node finished; ``data`` is its state update), ``token`` (a composer text delta),
    ``retrieval`` (the retrieval trace), ``candidate`` (a scored candidate prompt), ``gate`` (a text or image
    gate decision), ``image`` (an image was saved), ``progress`` (a denoising step) and, last, ``result``.
    """

    kind: EventKind
    node: str
    data: dict[str, Any] = Field(default_factory=dict)
    result: PersonalizationResult | None = None


_NODE_OF = {"token": "compose", "retrieval": "retrieve", "candidate": "text_gate", "image": "generate"}


class PersonalizationAgent:
    """The LangGraph agent around a :class:`Personalizer`.

    Args:
        personalizer: persona memory, embedder and VPRAG settings (built from ``VPTT_*`` settings if None).
        composer: a composer, an :class:`LLMComposerConfig` (builds an :class:`LLMComposer`), or None for the
            personalizer's (template) composer.
        text_scorer: ``"vptt"`` (VPTT score with the personalizer's embedder), a :class:`TextScorer`, or None.
        generator: ``"none"``/None (stop after the text gate), ``"diffusers"``, ``"openai"`` or an
            :class:`ImageGenerator`; ``generator_options`` are its keyword arguments.
        evaluators: image evaluators of the image gate.
        config: :class:`AgentConfig`; keyword arguments override its fields.
        checkpointer: any LangGraph ``BaseCheckpointSaver`` (e.g. ``PostgresSaver``); default: ``checkpoint``.
        options: how this agent was configured, as plain data without secrets; stored with each run so a
            resume in another process can rebuild the same agent (the CLI uses it).
    """

    def __init__(self, personalizer: Personalizer | None = None, *,
                 composer: Composer | LLMComposerConfig | None = None,
                 text_scorer: TextScorer | Literal["vptt"] | None = "vptt",
                 generator: ImageGenerator | str | None = None,
                 generator_options: dict[str, Any] | None = None,
                 evaluators: Sequence[ImageEvaluator] = (), config: AgentConfig | None = None,
                 reranker: Any = None, rerank_m: int = 8, checkpointer: Any = None,
                 options: dict[str, Any] | None = None, **overrides: Any) -> None:
        self.config = AgentConfig(**{**dict(config or AgentConfig()), **overrides})
        self.personalizer = personalizer or Personalizer()
        self.options = dict(options or {})
        if isinstance(composer, LLMComposerConfig):
            composer = LLMComposer(composer)
        scorer = default_text_scorer(self.personalizer.embedder) if text_scorer == "vptt" else text_scorer
        if scorer is not None:
            check_text_gate(self.config.text_gate, scorer)
        c = self.config
        self.components = AgentComponents(
            personalizer=self.personalizer, composer=composer or self.personalizer.composer,
            text_scorer=scorer, text_gate=c.text_gate,  # type: ignore[arg-type]
            generator=build_generator(generator, **(generator_options or {})), evaluators=tuple(evaluators),
            image_gate=c.image_gate, save_dir=c.save_dir, strict=c.strict, negative_prompt=c.negative_prompt,
            reranker=reranker, rerank_m=rerank_m, persona_subdirs=c.persona_subdirs)
        builder = build_graph(rerank_node=reranker is not None)
        self._graph = builder.compile(name="vptt")
        self._checkpoints = Checkpoints(builder, c.checkpoint, checkpointer)
        self._limit = recursion_limit(c.text_gate, c.image_gate)

    @classmethod
    def from_context(cls, context: AgentContext, **config: Any) -> PersonalizationAgent:
        """An agent from plain configuration, built as a served graph builds its components.

        Args:
            context: names, endpoints and numbers (keys come from the environment).
            **config: :class:`AgentConfig` fields and ``checkpointer``.
        """
        c = components_for(context)
        config.setdefault("save_dir", c.save_dir)
        config.setdefault("strict", c.strict)
        return cls(c.personalizer, composer=c.composer, text_scorer=c.text_scorer, generator=c.generator,
                   reranker=c.reranker, text_gate=c.text_gate, **config)

    def __repr__(self) -> str:
        c = self.components
        return (f"PersonalizationAgent(composer={getattr(c.composer, 'name', c.composer)!r}, "
                f"generator={getattr(c.generator, 'name', None)!r}, "
                f"text_scorer={getattr(c.text_scorer, 'name', None)!r}, "
                f"evaluators={[e.name for e in c.evaluators]}, checkpoint={self._checkpoints.describe()})")

    def _checkpointed(self) -> Any:
        return self._checkpoints.graph()

    def close(self) -> None:
        """Close the checkpoint database this agent opened."""
        self._checkpoints.close()

    def __enter__(self) -> PersonalizationAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- preparing a run -------------------------------------------------------------------------------------
    def _prepare(self, persona: Persona | str, query: str, method: str, thread_id: str | None,
                 init_image: InputImage, seed: int | None, refine: bool, streaming: bool = False
                 ) -> tuple[dict[str, Any], dict[str, Any], RunContext]:
        check_query(query)
        persona = check_persona_arg(persona)
        get_method(method)
        gen = self.components.generator
        if init_image is not None and gen is not None and not gen.supports_edit:
            raise ConfigError(f"{gen.name} cannot edit images; drop init_image or use a generator that edits")
        if thread_id is None and self._checkpoints.enabled and self.config.auto_thread:
            thread_id = uuid.uuid4().hex
        elif thread_id is not None:
            snap = self._checkpointed().get_state(self._config(thread_id))
            if snap.next:
                raise ConfigError(f"thread {thread_id!r} has an unfinished run (next: {', '.join(snap.next)}); "
                                  f"finish it with resume({thread_id!r}) before the next request")
        if seed is None:
            seed = self.config.seed
        if seed is None:
            seed = random.SystemRandom().randrange(2 ** 30)
        pid = persona if isinstance(persona, str) else persona.persona_id
        state = {"persona_id": pid, "query": query, "method": method, "seed": int(seed), "refine": refine,
                 "init_image": self._input_path(init_image),
                 "persona_json": None if isinstance(persona, str) else persona.model_dump_json(),
                 "agent_options": self.options or None}
        return state, self._config(thread_id), self._context(persona, pid, streaming)

    def _input_path(self, image: InputImage) -> str | None:
        if image is None:
            return None
        if isinstance(image, Image.Image):
            return str(save_png(image, self.components.image_dir(), f"input-{uuid.uuid4().hex}"))
        if not Path(image).is_file():
            raise ConfigError(f"init_image {os.fspath(image)!r} is not a file; pass a PIL image or a path")
        return os.fspath(image)

    def _config(self, thread_id: str | None) -> dict[str, Any]:
        cfg: dict[str, Any] = {"recursion_limit": self._limit}
        if thread_id is not None:
            cfg["configurable"] = {"thread_id": thread_id}
        return cfg

    def _context(self, persona: Persona | str, pid: str, streaming: bool = False) -> RunContext:
        t = self.config.run_timeout_s
        return RunContext(self.components, persona, pid, deadline=time.monotonic() + t if t else None,
                          stream_tokens=streaming)

    def _result(self, values: dict[str, Any], cfg: dict[str, Any], ctx: RunContext, t0: float) -> PersonalizationResult:
        traces = values.get("candidate_traces") or []
        chosen = values.get("chosen") or 0
        trace = ctx.memo.get(("trace", chosen)) or RetrievalTrace.model_validate(
            traces[chosen] if chosen < len(traces) else values["trace"])
        images = [ImageRecord.model_validate(r) for r in values.get("images") or []]
        for rec in images:
            rec._image = ctx.memo.get(("image", rec.attempt))
        timings = {**values.get("timings_ms", {}), "total": round((time.perf_counter() - t0) * 1000, 3)}
        prev = values.get("previous") or {}
        res = PersonalizationResult(
            prompt=values.get("prompt") or "", query=values["query"], method=values["method"],
            persona_id=values["persona_id"], trace=trace, timings_ms=timings, fallback=values.get("fallback"),
            status=values["status"], run_id=values["run_id"], seed=values.get("seed"),
            thread_id=cfg.get("configurable", {}).get("thread_id"),
            candidates=values.get("candidates") or [], text_gate=values.get("text_gate"), images=images,
            image_gate=values.get("image_gate"), rerank=values.get("rerank"), refines=prev.get("run_id"),
            previous_prompt=prev.get("prompt"))
        log.debug("run %s for %s: %s", res.run_id, res.persona_id, res.status)
        return res

    def _graph_for(self, cfg: dict[str, Any]) -> Any:
        return self._checkpointed() if "configurable" in cfg else self._graph

    def _kw(self, cfg: dict[str, Any]) -> dict[str, Any]:  # durability only means something with checkpoints
        return {"durability": self.config.durability} if "configurable" in cfg else {}

    # -- running ---------------------------------------------------------------------------------------------
    def run(self, persona: Persona | str, query: str, *, method: str = "vprag", thread_id: str | None = None,
            init_image: InputImage = None, seed: int | None = None, refine: bool = True) -> PersonalizationResult:
        """Run the graph once (one turn) and return the :class:`PersonalizationResult`.

        Args:
            persona: a Persona or the id of a stored persona.
            query: what the user asked for (in a thread: a follow-up such as ``"now make it autumn"``).
            method: retrieval method (``vprag``, ``brag``, ``comb``, ``persona_only``, ``baseline``).
            thread_id: the conversation (needs a checkpointer); one is made when checkpoints are on.
            init_image: the image to edit (edit tasks), a PIL image or a path.
            seed: base seed of this run's image generation.
            refine: in a thread that already has a turn for this persona, refine its prompt (False: start
                afresh in the same thread).

        Raises:
            EmptyQueryError, ConfigError, PersonaNotFoundError: bad arguments (checked before anything runs).
            ProviderError: a provider failed after its retries (the run can be resumed by thread id).
            RunTimeoutError: the run passed ``run_timeout_s``.
        """
        t0 = time.perf_counter()
        with self._checkpoints.thread(thread_id):
            state, cfg, ctx = self._prepare(persona, query, method, thread_id, init_image, seed, refine)
            values = self._graph_for(cfg).invoke(state, cfg, context=ctx, **self._kw(cfg))
        return self._result(values, cfg, ctx, t0)

    def resume(self, thread_id: str, *, persona: Persona | None = None) -> PersonalizationResult:
        """Finish (or fetch) the last run of ``thread_id`` after a failure or an interruption."""
        t0 = time.perf_counter()
        cfg = self._config(thread_id)
        graph = self._checkpointed()
        with self._checkpoints.thread(thread_id):
            snap = graph.get_state(cfg)
            ctx = self._resume_context(snap.values, thread_id, persona)
            values = graph.invoke(None, cfg, context=ctx, **self._kw(cfg)) if snap.next else snap.values
        return self._result(values, cfg, ctx, t0)

    def _resume_context(self, values: dict[str, Any], thread_id: str, persona: Persona | None) -> RunContext:
        if not values or "run_id" not in values:
            raise ConfigError(f"no run with thread_id {thread_id!r} in {self._checkpoints.describe()}")
        if persona is None:
            blob = values.get("persona_json")
            persona_ref: Persona | str = Persona.model_validate_json(blob) if blob else values["persona_id"]
        else:
            persona_ref = persona
        return self._context(persona_ref, values["persona_id"])

    def history(self, thread_id: str) -> list[Turn]:
        """The finished turns of a conversation, oldest first."""
        values = self._checkpointed().get_state(self._config(thread_id)).values
        return [Turn.model_validate(t) for t in values.get("turns") or []]

    def thread_state(self, thread_id: str) -> dict[str, Any]:
        """The raw checkpointed state of a thread (plain data and chat messages); empty if none."""
        return dict(self._checkpointed().get_state(self._config(thread_id)).values)

    async def arun(self, persona: Persona | str, query: str, *, method: str = "vprag",
                   thread_id: str | None = None, init_image: InputImage = None,
                   seed: int | None = None, refine: bool = True) -> PersonalizationResult:
        """Async :meth:`run` (nodes run in worker threads; ``run_timeout_s`` cancels the run)."""
        t0 = time.perf_counter()
        async with self._checkpoints.athread(thread_id):
            state, cfg, ctx = self._prepare(persona, query, method, thread_id, init_image, seed, refine)
            async with self._agraph(cfg) as graph:
                values = await self._with_timeout(graph.ainvoke(state, cfg, context=ctx, **self._kw(cfg)))
        return self._result(values, cfg, ctx, t0)

    async def aresume(self, thread_id: str, *, persona: Persona | None = None) -> PersonalizationResult:
        """Async :meth:`resume`."""
        t0 = time.perf_counter()
        cfg = self._config(thread_id)
        async with self._checkpoints.athread(thread_id), self._checkpoints.agraph() as graph:
            snap = await graph.aget_state(cfg)
            ctx = self._resume_context(snap.values, thread_id, persona)
            values = snap.values
            if snap.next:
                values = await self._with_timeout(graph.ainvoke(None, cfg, context=ctx, **self._kw(cfg)))
        return self._result(values, cfg, ctx, t0)

    def _agraph(self, cfg: dict[str, Any]) -> Any:
        if "configurable" in cfg:
            return self._checkpoints.agraph()
        return contextlib.nullcontext(self._graph)

    async def _with_timeout(self, coro: Any) -> Any:
        t = self.config.run_timeout_s
        try:
            return await (asyncio.wait_for(coro, t) if t else coro)
        except asyncio.TimeoutError:
            raise RunTimeoutError(f"the run passed run_timeout_s={t}; raise it, or resume the run by its "
                                  "thread id") from None

    # -- streaming -------------------------------------------------------------------------------------------
    def stream(self, persona: Persona | str, query: str, *, method: str = "vprag",
               thread_id: str | None = None, init_image: InputImage = None,
               seed: int | None = None, refine: bool = True) -> Iterator[NodeEvent]:
        """Run and yield :class:`NodeEvent` objects as they happen (see its kinds), then the ``result``."""
        t0 = time.perf_counter()
        with self._checkpoints.thread(thread_id):
            state, cfg, ctx = self._prepare(persona, query, method, thread_id, init_image, seed, refine,
                                            streaming=True)
            values: dict[str, Any] = {}
            for mode, chunk in self._graph_for(cfg).stream(state, cfg, context=ctx, **self._kw(cfg),
                                                           stream_mode=["updates", "custom", "values"]):
                if mode == "values":
                    values = chunk
                else:
                    yield from _events(mode, chunk)
        yield NodeEvent(kind="result", node="result", result=self._result(values, cfg, ctx, t0))

    async def astream(self, persona: Persona | str, query: str, *, method: str = "vprag",
                      thread_id: str | None = None, init_image: InputImage = None,
                      seed: int | None = None, refine: bool = True) -> AsyncIterator[NodeEvent]:
        """Async :meth:`stream`."""
        t0 = time.perf_counter()
        values: dict[str, Any] = {}
        async with self._checkpoints.athread(thread_id):
            state, cfg, ctx = self._prepare(persona, query, method, thread_id, init_image, seed, refine,
                                            streaming=True)
            async with self._agraph(cfg) as graph:
                async for mode, chunk in graph.astream(state, cfg, context=ctx, **self._kw(cfg),
                                                       stream_mode=["updates", "custom", "values"]):
                    if mode == "values":
                        values = chunk
                    else:
                        for event in _events(mode, chunk):
                            yield event
        yield NodeEvent(kind="result", node="result", result=self._result(values, cfg, ctx, t0))


def _events(mode: str, chunk: Any) -> Iterator[NodeEvent]:
    if mode == "custom":
        kind = chunk.get("event", "progress")
        node = str(chunk.get("node") or _NODE_OF.get(kind) or ("image_gate" if chunk.get("gate") == "image"
                                                                 else "text_gate"))
        yield NodeEvent(kind=kind, node=node, data={k: v for k, v in chunk.items() if k != "event"})
        return
    for node, update in chunk.items():
        if not node.startswith("__"):
            yield NodeEvent(kind="node", node=node,
                            data={k: v for k, v in (update or {}).items() if k not in _INTERNAL})
