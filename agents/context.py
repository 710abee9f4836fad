"""What a graph run is configured with, and where its heavy objects come from.

Two ways in, one set of nodes:

* In-process (:class:`~vptt.sdk.agent.PersonalizationAgent`): the agent passes a :class:`RunContext` holding
  its live :class:`AgentComponents` (personalizer, composer, scorer, generator, evaluators) as LangGraph's
  runtime context.
* Served (``langgraph dev``, LangGraph Platform, any app that compiles :func:`vptt.agents.app.make_graph`):
  the runtime context is an :class:`AgentContext`, plain configuration only (names, paths, numbers; never a
  key). The components are built from it inside the graph's process and cached per configuration, so every
  run with the same context reuses one personalizer, store, embedder and composer. API keys come from the
  process environment (``VPTT_LLM_API_KEY``, ``VPTT_IMAGES_API_KEY``, ``OPENAI_API_KEY``), never from a request.

The checkpointed state stays plain data in both cases.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.runtime import Runtime
from PIL import Image

from vptt.agents.composer import Composer
from vptt.agents.gates import ImageEvaluator, ImageGateConfig, TextGateConfig, TextScorer
from vptt.agents.generators.base import ImageGenerator
from vptt.agents.vprag import VPRAGConfig
from vptt.core.errors import ConfigError, RunTimeoutError
from vptt.core.models import Persona
from vptt.stores.records import EmbeddedPersona

if TYPE_CHECKING:
    from vptt.agents.personalizer import Personalizer

_COMPOSERS = ("template", "llm")
_SETTINGS_FIELDS = ("data_dir", "store", "chroma_host", "chroma_port", "token_budget", "include_summary")


@dataclass(frozen=True)
class AgentContext:
    """Plain configuration of a served graph run (LangGraph's ``context_schema``).

    Every field is optional: ``None`` means "from the ``VPTT_*`` environment of the graph's process". Pass it
    as the run's ``context`` (LangGraph SDK: ``client.runs.wait(..., context={...})``) or as
    ``config["configurable"]`` keys.

    Attributes:
        persona_id: persona of runs whose input names none (handy for chat UIs that only send messages).
        data_dir / store / chroma_host / chroma_port: where persona memory lives (see ``VPTTSettings``).
        token_budget / include_summary: template composer settings.
        composer: ``template`` (offline) or ``llm`` (OpenAI-compatible chat at ``llm_base_url``).
        llm_model / llm_base_url: the LLM composer's model and endpoint (key: ``VPTT_LLM_API_KEY``).
        text_gate_threshold: VPTT_score threshold of the text gate (None: no scoring).
        max_candidates: text gate candidates at most.
        generator: ``none``, ``diffusers`` or ``openai``; ``generator_model``, ``images_base_url``,
            ``device`` and ``steps`` configure it (key: ``VPTT_IMAGES_API_KEY``).
        save_dir: where images are written (default: a temporary directory of the process).
        strict: raise for a persona without posts instead of falling back to ``persona_only``.
        reranker: a feedback model directory (``vptt feedback train``); the graph needs its ``rerank`` node
            (:func:`vptt.agents.app.make_graph` adds it when ``configurable.reranker`` is set).
        stream_tokens: ask the LLM composer for a streamed reply, so composer tokens reach
            ``stream_mode="messages"`` / ``"custom"`` (set False for an endpoint that cannot stream).
    """

    persona_id: str | None = None
    data_dir: str | None = None
    store: str | None = None
    chroma_host: str | None = None
    chroma_port: int | None = None
    token_budget: int | None = None
    include_summary: bool | None = None
    composer: str = "template"
    llm_model: str | None = None
    llm_base_url: str | None = None
    text_gate_threshold: float | None = None
    max_candidates: int = 4
    generator: str = "none"
    generator_model: str | None = None
    images_base_url: str | None = None
    device: str | None = None
    steps: int | None = None
    save_dir: str | None = None
    strict: bool = False
    reranker: str | None = None
    stream_tokens: bool = True

    def __post_init__(self) -> None:
        if self.composer not in _COMPOSERS:
            raise ConfigError(f"context composer must be one of {list(_COMPOSERS)}, got {self.composer!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> AgentContext:
        """The context from a dict (``config["configurable"]``); keys that are not fields are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names and v is not None})

    def settings_overrides(self) -> dict[str, Any]:
        """The ``VPTTSettings`` arguments this context sets."""
        return {k: getattr(self, k) for k in _SETTINGS_FIELDS if getattr(self, k) is not None}


@dataclass
class AgentComponents:
    """The heavy, long-lived parts of an agent (never checkpointed)."""

    personalizer: Personalizer
    composer: Composer
    text_scorer: TextScorer | None
    text_gate: TextGateConfig
    generator: ImageGenerator | None
    evaluators: tuple[ImageEvaluator, ...]
    image_gate: ImageGateConfig
    save_dir: Path | None = None
    vprag_config: VPRAGConfig | None = None
    strict: bool = False
    negative_prompt: str | None = None
    reranker: Any = None  # agents.rerank.FeedbackReranker: learnable feedback (paper Sec. 3.3)
    rerank_m: int = 8
    persona_subdirs: bool = False  # images under save_dir/<persona folder>/ (multi-tenant servers)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def image_dir(self) -> Path:
        """Where images are written: ``save_dir``, else a temporary directory made on first use."""
        with self._lock:
            if self.save_dir is None:
                self.save_dir = Path(tempfile.mkdtemp(prefix="vptt-agent-"))
            return self.save_dir


@dataclass
class RunContext:
    """The runtime context of one in-process run: the persona, the components and a deadline."""

    components: AgentComponents
    persona: Persona | str
    persona_id: str
    deadline: float | None = None
    memo: dict[Any, Any] = field(default_factory=dict)
    stream_tokens: bool = False

    @property
    def store(self) -> Any:
        return self.components.personalizer.store

    def check_deadline(self, node: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RunTimeoutError(f"the run passed its time limit before node {node!r}; raise run_timeout_s "
                                  "or resume the run by its thread id")

    def embedded(self) -> EmbeddedPersona:
        mem = self.memo.get("embedded")
        if mem is None:
            mem = self.memo["embedded"] = self.components.personalizer.embedded(self.persona)
        return mem  # type: ignore[no-any-return]

    def input_image(self, state: Mapping[str, Any]) -> Image.Image | None:
        path = state.get("init_image")
        if not path:
            return None
        if "init_image" not in self.memo:
            with Image.open(path) as im:
                self.memo["init_image"] = im.convert("RGB")
        return self.memo["init_image"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- built from configuration
_lock = threading.Lock()
_personalizers: dict[tuple[tuple[str, Any], ...], Personalizer] = {}
_components: OrderedDict[AgentContext, AgentComponents] = OrderedDict()
_MAX_CACHED = 8


def personalizer_for(context: AgentContext) -> Personalizer:
    """One :class:`Personalizer` per store configuration, built on first use in this process."""
    from vptt.agents.personalizer import Personalizer
    from vptt.core.settings import VPTTSettings

    overrides = context.settings_overrides()
    key = tuple(sorted((k, str(v)) for k, v in overrides.items()))
    with _lock:
        hit = _personalizers.get(key)
    if hit is not None:
        return hit
    built = Personalizer(settings=VPTTSettings(**overrides))
    with _lock:
        return _personalizers.setdefault(key, built)


def components_for(context: AgentContext) -> AgentComponents:
    """The components a plain :class:`AgentContext` describes (cached per context, at most 8 kept)."""
    with _lock:
        hit = _components.get(context)
        if hit is not None:
            _components.move_to_end(context)
            return hit
    built = build_components(context)
    with _lock:
        comps = _components.setdefault(context, built)
        while len(_components) > _MAX_CACHED:
            _components.popitem(last=False)
        return comps


def build_components(context: AgentContext) -> AgentComponents:
    """Build personalizer, composer, text scorer and generator from plain configuration."""
    from vptt.agents.gates import VPTTTextScorer
    from vptt.agents.generators import build_generator

    pz = personalizer_for(context)
    s = pz.settings
    composer: Composer = pz.composer
    if context.composer == "llm":
        from vptt.agents.llm_composer import LLMComposer, LLMComposerConfig

        composer = LLMComposer(LLMComposerConfig(model=context.llm_model or s.llm_model,
                                                 base_url=context.llm_base_url or s.base_url("llm"),
                                                 api_key=s.api_key("llm")))
    threshold = context.text_gate_threshold
    threshold = s.text_gate_threshold if threshold is None else threshold
    gate = TextGateConfig(max_candidates=context.max_candidates,
                          **({} if threshold is None else {"threshold": threshold}))
    opts: dict[str, Any] = {}
    if context.generator == "diffusers":
        opts = {"model": context.generator_model, "device": context.device or s.device,
                "num_inference_steps": context.steps}
    elif context.generator == "openai":
        opts = {"model": context.generator_model or s.images_model,
                "base_url": context.images_base_url or s.base_url("images"), "api_key": s.api_key("images")}
    generator = build_generator(context.generator, **{k: v for k, v in opts.items() if v is not None})
    reranker = None
    if context.reranker:
        from vptt.agents.rerank import FeedbackReranker

        reranker = FeedbackReranker.load(context.reranker, pz.embedder)
    return AgentComponents(reranker=reranker, personalizer=pz, composer=composer,
                           text_scorer=None if threshold is None else VPTTTextScorer(pz.embedder),
                           text_gate=gate, generator=generator, evaluators=(), image_gate=ImageGateConfig(),
                           save_dir=Path(context.save_dir) if context.save_dir else None, strict=context.strict)


def run_context(state: Mapping[str, Any], runtime: Runtime[Any]) -> RunContext:
    """The run's :class:`RunContext`: the in-process agent's, or one built from plain configuration."""
    ctx = runtime.context
    if isinstance(ctx, RunContext):
        return ctx
    if not isinstance(ctx, AgentContext):
        from langgraph.config import get_config

        ctx = AgentContext.from_mapping(ctx if isinstance(ctx, Mapping) else
                                        get_config().get("configurable", {}))
    pid = state.get("persona_id") or ctx.persona_id
    if not pid:
        raise ConfigError("no persona: give persona_id in the run's input (or in its context)")
    persona: Persona | str = pid
    blob = state.get("persona_json")
    if blob:
        adhoc = Persona.model_validate_json(blob)
        persona = adhoc if adhoc.persona_id == pid else pid
    return RunContext(components_for(ctx), persona, pid, stream_tokens=ctx.stream_tokens)


def clear_cache() -> None:
    """Forget every personalizer and component set built from configuration (tests, reconfiguration)."""
    with _lock:
        _personalizers.clear()
        _components.clear()
