"""The personalization agent: persona memory -> retrieval -> composition -> text gate -> image -> image gate.

:class:`PersonalizationAgent` runs :func:`agents.graph.build_graph` (a LangGraph ``StateGraph``, compiled
once per agent) around a :class:`~sdk.personalizer.Personalizer`. Runs can be checkpointed to SQLite and
resumed by thread id, streamed node by node (chat apps) and awaited.

Example:
    >>> agent = PersonalizationAgent(personalizer, checkpoint="runs.sqlite")       # doctest: +SKIP
    >>> res = agent.run("p01_kyoto_ceramicist", "A preferred outdoor spot")        # doctest: +SKIP
    >>> res.status, res.prompt, [c.score for c in res.candidates]                  # doctest: +SKIP
    >>> for event in agent.stream("p01_kyoto_ceramicist", "A cup of tea"):        # doctest: +SKIP
    ...     print(event.kind, event.node)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from vptt.agents.composer import Composer
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
from vptt.agents.graph import AgentComponents, RunContext, build_graph, recursion_limit
from vptt.agents.llm_composer import LLMComposer, LLMComposerConfig
from vptt.agents.methods import get_method
from vptt.agents.personalizer import Personalizer
from vptt.agents.results import PersonalizationResult
from vptt.agents.trace import RetrievalTrace
from vptt.core.checks import check_persona_arg, check_query
from vptt.core.errors import ConfigError
from vptt.core.models import Persona
from vptt.core.providers import RunTimeoutError

log = logging.getLogger("vptt.agents")
InputImage = Union[Image.Image, str, "os.PathLike[str]", None]
_INTERNAL = frozenset({"trace", "candidate_traces", "persona_json"})


class AgentConfig(BaseModel):
    """Operational settings of :class:`PersonalizationAgent` (unknown fields are rejected).

    Args:
        text_gate / image_gate: gate settings.
        checkpoint: SQLite file for checkpoints (resume by thread id), ``":memory:"`` for in-process ones,
            None for none (fastest).
        durability: when checkpoints are written: ``"sync"`` (before the next step), ``"async"``, ``"exit"``.
        save_dir: where generated images go (default: a temporary directory of this agent).
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
    seed: int | None = None
    run_timeout_s: float | None = Field(default=None, gt=0)
    strict: bool = False
    negative_prompt: str | None = None


class NodeEvent(BaseModel):
    """A streamed event: a node finished (``node``), generation progress (``progress``), or the ``result``."""

    kind: Literal["node", "progress", "result"]
    node: str
    data: dict[str, Any] = Field(default_factory=dict)
    result: PersonalizationResult | None = None


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
    """

    def __init__(self, personalizer: Personalizer | None = None, *,
                 composer: Composer | LLMComposerConfig | None = None,
                 text_scorer: TextScorer | Literal["vptt"] | None = "vptt",
                 generator: ImageGenerator | str | None = None,
                 generator_options: dict[str, Any] | None = None,
                 evaluators: Sequence[ImageEvaluator] = (), config: AgentConfig | None = None,
                 reranker: Any = None, rerank_m: int = 8, **overrides: Any) -> None:
        self.config = AgentConfig(**{**dict(config or AgentConfig()), **overrides})
        self.personalizer = personalizer or Personalizer()
        if isinstance(composer, LLMComposerConfig):
            composer = LLMComposer(composer)
        scorer = default_text_scorer(self.personalizer.embedder) if text_scorer == "vptt" else text_scorer
        if scorer is not None:
            check_text_gate(self.config.text_gate, scorer)
        self.components = AgentComponents(
            personalizer=self.personalizer, composer=composer or self.personalizer.composer,
            text_scorer=scorer, text_gate=self.config.text_gate,  # type: ignore[arg-type]
            generator=build_generator(generator, **(generator_options or {})), evaluators=tuple(evaluators),
            image_gate=self.config.image_gate, save_dir=self.config.save_dir, strict=self.config.strict,
            negative_prompt=self.config.negative_prompt, reranker=reranker, rerank_m=rerank_m)
        self._builder = build_graph(rerank_node=reranker is not None)
        self._graph = self._builder.compile()
        self._saved: Any = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._limit = recursion_limit(self.config.text_gate, self.config.image_gate)

    def __repr__(self) -> str:
        c = self.components
        return (f"PersonalizationAgent(composer={getattr(c.composer, 'name', c.composer)!r}, "
                f"generator={getattr(c.generator, 'name', None)!r}, "
                f"text_scorer={getattr(c.text_scorer, 'name', None)!r}, "
                f"evaluators={[e.name for e in c.evaluators]}, checkpoint={self.config.checkpoint!r})")

    # -- graphs ----------------------------------------------------------------------------------------------
    def _checkpointed(self) -> Any:
        path = self.config.checkpoint
        if path is None:
            raise ConfigError("this agent keeps no checkpoints; create it with checkpoint='runs.sqlite' (or "
                              "':memory:') to use thread ids and resume")
        with self._lock:
            return self._saved or self._compile_checkpointed(str(path))

    def _compile_checkpointed(self, path: str) -> Any:
        if path == ":memory:":
            from langgraph.checkpoint.memory import InMemorySaver

            saver: Any = InMemorySaver()
        else:
            from langgraph.checkpoint.sqlite import SqliteSaver

            self._conn = sqlite3.connect(path, check_same_thread=False)
            self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe if the process dies
            saver = SqliteSaver(self._conn)
        self._saved = self._builder.compile(checkpointer=saver)
        return self._saved

    @contextlib.asynccontextmanager
    async def _agraph(self, thread_id: str | None) -> AsyncIterator[Any]:
        path = self.config.checkpoint
        if thread_id is None:
            yield self._graph
        elif str(path) == ":memory:":
            yield self._checkpointed()
        else:
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
                yield self._builder.compile(checkpointer=saver)

    def close(self) -> None:
        """Close the checkpoint database."""
        if self._conn is not None:
            self._conn.close()
            self._conn, self._saved = None, None

    def __enter__(self) -> PersonalizationAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- preparing a run -------------------------------------------------------------------------------------
    def _prepare(self, persona: Persona | str, query: str, method: str, thread_id: str | None,
                 init_image: InputImage, seed: int | None
                 ) -> tuple[dict[str, Any], dict[str, Any], RunContext]:
        check_query(query)
        persona = check_persona_arg(persona)
        get_method(method)
        gen = self.components.generator
        if init_image is not None and gen is not None and not gen.supports_edit:
            raise ConfigError(f"{gen.name} cannot edit images; drop init_image or use a generator that edits")
        if thread_id is None and self.config.checkpoint is not None:
            thread_id = uuid.uuid4().hex
        elif thread_id is not None and self._checkpointed().get_state(self._config(thread_id)).values:
            raise ConfigError(f"thread {thread_id!r} already holds a run; finish it with "
                              f"resume({thread_id!r}) or start a new run under a new thread_id")
        run_id = (thread_id or uuid.uuid4().hex)[:16]
        if seed is None:
            seed = self.config.seed
        if seed is None:
            seed = random.SystemRandom().randrange(2 ** 30)
        pid = persona if isinstance(persona, str) else persona.persona_id
        state = {"run_id": run_id, "persona_id": pid, "query": query, "method": method, "seed": int(seed),
                 "init_image": self._input_path(init_image, run_id),
                 "persona_json": None if isinstance(persona, str) else persona.model_dump_json()}
        return state, self._config(thread_id), self._context(persona, pid)

    def _input_path(self, image: InputImage, run_id: str) -> str | None:
        if image is None:
            return None
        if isinstance(image, Image.Image):
            return str(save_png(image, self.components.image_dir(), f"{run_id}-input"))
        if not Path(image).is_file():
            raise ConfigError(f"init_image {os.fspath(image)!r} is not a file; pass a PIL image or a path")
        return os.fspath(image)

    def _config(self, thread_id: str | None) -> dict[str, Any]:
        cfg: dict[str, Any] = {"recursion_limit": self._limit}
        if thread_id is not None:
            cfg["configurable"] = {"thread_id": thread_id}
        return cfg

    def _context(self, persona: Persona | str, pid: str) -> RunContext:
        t = self.config.run_timeout_s
        return RunContext(self.components, persona, pid, deadline=time.monotonic() + t if t else None)

    def _result(self, values: dict[str, Any], cfg: dict[str, Any], ctx: RunContext, t0: float) -> PersonalizationResult:
        traces = values.get("candidate_traces") or []
        chosen = values.get("chosen", 0)
        trace = ctx.memo.get(("trace", chosen)) or RetrievalTrace.model_validate(
            traces[chosen] if chosen < len(traces) else values["trace"])
        images = [ImageRecord.model_validate(r) for r in values.get("images") or []]
        for rec in images:
            rec._image = ctx.memo.get(("image", rec.attempt))
        timings = {**values.get("timings_ms", {}), "total": round((time.perf_counter() - t0) * 1000, 3)}
        res = PersonalizationResult(
            prompt=values.get("prompt", ""), query=values["query"], method=values["method"],
            persona_id=values["persona_id"], trace=trace, timings_ms=timings, fallback=values.get("fallback"),
            status=values["status"], run_id=values["run_id"], seed=values.get("seed"),
            thread_id=cfg.get("configurable", {}).get("thread_id"),
            candidates=values.get("candidates") or [], text_gate=values.get("text_gate"), images=images,
            image_gate=values.get("image_gate"), rerank=values.get("rerank"))
        log.debug("run %s for %s: %s", res.run_id, res.persona_id, res.status)
        return res

    def _graph_for(self, cfg: dict[str, Any]) -> Any:
        return self._checkpointed() if "configurable" in cfg else self._graph

    def _kw(self, cfg: dict[str, Any]) -> dict[str, Any]:  # durability only means something with checkpoints
        return {"durability": self.config.durability} if "configurable" in cfg else {}

    # -- running ---------------------------------------------------------------------------------------------
    def run(self, persona: Persona | str, query: str, *, method: str = "vprag", thread_id: str | None = None,
            init_image: InputImage = None, seed: int | None = None) -> PersonalizationResult:
        """Run the graph once and return the :class:`PersonalizationResult`.

        Args:
            persona: a Persona or the id of a stored persona.
            query: what the user asked for.
            method: retrieval method (``vprag``, ``brag``, ``comb``, ``persona_only``, ``baseline``).
            thread_id: checkpoint thread (needs ``checkpoint``); one is made when checkpoints are on.
            init_image: the image to edit (edit tasks), a PIL image or a path.
            seed: base seed of this run's image generation.

        Raises:
            EmptyQueryError, ConfigError, PersonaNotFoundError: bad arguments (checked before anything runs).
            ProviderError: a provider failed after its retries (the run can be resumed by thread id).
            RunTimeoutError: the run passed ``run_timeout_s``.
        """
        t0 = time.perf_counter()
        state, cfg, ctx = self._prepare(persona, query, method, thread_id, init_image, seed)
        values = self._graph_for(cfg).invoke(state, cfg, context=ctx, **self._kw(cfg))
        return self._result(values, cfg, ctx, t0)

    def resume(self, thread_id: str, *, persona: Persona | None = None) -> PersonalizationResult:
        """Finish (or fetch) the run checkpointed under ``thread_id`` after a failure or an interruption."""
        t0 = time.perf_counter()
        cfg = self._config(thread_id)
        graph = self._checkpointed()
        snap = graph.get_state(cfg)
        ctx = self._resume_context(snap.values, thread_id, persona)
        values = graph.invoke(None, cfg, context=ctx, **self._kw(cfg)) if snap.next \
            else snap.values
        return self._result(values, cfg, ctx, t0)

    def _resume_context(self, values: dict[str, Any], thread_id: str, persona: Persona | None) -> RunContext:
        if not values:
            raise ConfigError(f"no run with thread_id {thread_id!r} in {self.config.checkpoint!r}")
        if persona is None:
            blob = values.get("persona_json")
            persona_ref: Persona | str = Persona.model_validate_json(blob) if blob else values["persona_id"]
        else:
            persona_ref = persona
        return self._context(persona_ref, values["persona_id"])

    async def arun(self, persona: Persona | str, query: str, *, method: str = "vprag",
                   thread_id: str | None = None, init_image: InputImage = None,
                   seed: int | None = None) -> PersonalizationResult:
        """Async :meth:`run` (nodes run in worker threads; ``run_timeout_s`` cancels the run)."""
        t0 = time.perf_counter()
        state, cfg, ctx = self._prepare(persona, query, method, thread_id, init_image, seed)
        async with self._agraph(cfg.get("configurable", {}).get("thread_id")) as graph:
            coro = graph.ainvoke(state, cfg, context=ctx, **self._kw(cfg))
            values = await self._with_timeout(coro)
        return self._result(values, cfg, ctx, t0)

    async def aresume(self, thread_id: str, *, persona: Persona | None = None) -> PersonalizationResult:
        """Async :meth:`resume`."""
        t0 = time.perf_counter()
        cfg = self._config(thread_id)
        self._checkpointed()
        async with self._agraph(thread_id) as graph:
            snap = await graph.aget_state(cfg)
            ctx = self._resume_context(snap.values, thread_id, persona)
            values = snap.values
            if snap.next:
                values = await self._with_timeout(graph.ainvoke(None, cfg, context=ctx, **self._kw(cfg)))
        return self._result(values, cfg, ctx, t0)

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
               seed: int | None = None) -> Iterator[NodeEvent]:
        """Run and yield a :class:`NodeEvent` per finished node and per progress step, then the result."""
        t0 = time.perf_counter()
        state, cfg, ctx = self._prepare(persona, query, method, thread_id, init_image, seed)
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
                      seed: int | None = None) -> AsyncIterator[NodeEvent]:
        """Async :meth:`stream`."""
        t0 = time.perf_counter()
        state, cfg, ctx = self._prepare(persona, query, method, thread_id, init_image, seed)
        values: dict[str, Any] = {}
        async with self._agraph(cfg.get("configurable", {}).get("thread_id")) as graph:
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
        yield NodeEvent(kind="progress", node=str(chunk.get("node", "")), data=dict(chunk))
        return
    for node, update in chunk.items():
        if not node.startswith("__"):
            yield NodeEvent(kind="node", node=node,
                            data={k: v for k, v in (update or {}).items() if k not in _INTERNAL})
