"""``personalize()`` and the :class:`Personalizer` it uses."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.composer import Composer, TemplateComposer
from agents.methods import CAPTION_METHODS, get_method
from agents.vprag import VPRAGConfig
from stores.base import PersonaStore
from stores.embedders import Embedder
from stores.records import EmbeddedPersona, embed_persona

from .errors import EmptyQueryError, NoPostsError
from .models import Persona
from .personas import OnError, load_personas
from .results import IngestReport, PersonalizationResult
from .settings import VPTTSettings

if TYPE_CHECKING:
    from collections.abc import Callable


class Personalizer:
    """Persona memory + retrieval + composition: the text path of the SDK.

    Args:
        store: the persona store; built from ``settings`` when omitted.
        embedder: embeds queries (and personas); defaults to the store's embedder.
        settings: :class:`VPTTSettings`; read from ``VPTT_*`` environment variables when omitted.
        composer: turns retrieval into a prompt; defaults to the template composer.
        config: VPRAG settings; defaults from ``settings``.

    Example:
        >>> from stores.memory import InMemoryPersonaStore           # doctest: +SKIP
        >>> p = Personalizer(InMemoryPersonaStore(MiniLMEmbedder()))  # doctest: +SKIP
        >>> p.ingest("examples/data/personas.jsonl")                 # doctest: +SKIP
        >>> p.personalize("p01_kyoto_ceramicist", "A preferred outdoor spot").prompt  # doctest: +SKIP
    """

    def __init__(self, store: PersonaStore | None = None, *, embedder: Embedder | None = None,
                 settings: VPTTSettings | None = None, composer: Composer | None = None,
                 config: VPRAGConfig | None = None, adhoc_cache_size: int = 256) -> None:
        from .factory import build_embedder, build_store

        self.settings = settings or VPTTSettings()
        s = self.settings
        self.embedder = embedder or (store.embedder if store is not None else build_embedder(s))
        self.store = store if store is not None else build_store(s, self.embedder)
        self.composer: Composer = composer or TemplateComposer(s.token_budget, s.include_summary)
        self.config = config or VPRAGConfig(tau=s.tau, per_category_budget=s.per_category_budget)
        self._categories: dict[str, np.ndarray] = {}
        self._adhoc: OrderedDict[tuple[str, str], EmbeddedPersona] = OrderedDict()
        self._adhoc_size = adhoc_cache_size
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Personalizer(store={self.store!r}, composer={getattr(self.composer, 'name', self.composer)!r})"

    # -- memory --------------------------------------------------------------------------------------------
    def ingest(self, source: str | os.PathLike[str] | Iterable[Persona], *, on_error: OnError = "raise",
               progress: bool | Callable[[int], None] = False) -> IngestReport:
        """Validate a JSONL file (or personas) and upsert every persona; bad input writes nothing."""
        skipped: list[str] = []
        path = ""
        if isinstance(source, (str, os.PathLike)):
            loaded = load_personas(source, on_error=on_error)
            personas: Sequence[Persona] = loaded
            skipped = [str(p) for p in loaded.skipped]
            path = str(source)
        else:
            personas = list(source)
        results = self.store.upsert_many(personas, progress=progress)
        report = IngestReport(path=path, skipped=skipped)
        for r in results:
            getattr(report, r.status).append(r.persona_id)
            report.texts_embedded += r.texts_embedded
        return report

    def embedded(self, persona: Persona | str) -> EmbeddedPersona:
        """A persona's embedded memory: from the store by id, or embedded on the fly (cached by content)."""
        if isinstance(persona, str):
            return self.store.embedded(persona)
        key = (persona.persona_id, persona.content_hash())
        with self._lock:
            hit = self._adhoc.get(key)
            if hit is not None:
                self._adhoc.move_to_end(key)
                return hit
        emb = embed_persona(persona, self.embedder)
        with self._lock:
            self._adhoc[key] = emb
            while len(self._adhoc) > self._adhoc_size:
                self._adhoc.popitem(last=False)
        return emb

    def category_embeddings(self, categories: Sequence[str]) -> dict[str, np.ndarray]:
        """``Emb(category name)`` for each category (computed once per Personalizer)."""
        missing = [c for c in categories if c not in self._categories]
        if missing:
            self._categories.update(zip(missing, self.embedder.embed(missing)))
        return {c: self._categories[c] for c in categories}

    # -- personalization -----------------------------------------------------------------------------------
    def personalize(self, persona: Persona | str, query: str, *, method: str = "vprag",
                    config: VPRAGConfig | None = None, composer: Composer | None = None,
                    strict: bool = False) -> PersonalizationResult:
        """Rewrite ``query`` for ``persona`` (a :class:`Persona` or a stored persona id).

        Args:
            persona: a Persona object (embedded on the fly, cached) or the id of a stored persona.
            query: what the user asked for, e.g. ``"A preferred outdoor spot"``.
            method: ``"vprag"`` (default), ``"baseline"``, ``"persona_only"``, ``"brag"`` or ``"comb"``.
            config: VPRAG settings for this call.
            composer: composer for this call.
            strict: raise :class:`NoPostsError` for a persona without posts instead of falling back to
                ``persona_only`` (the fallback is flagged in ``result.fallback``).

        Raises:
            EmptyQueryError: the query is empty.
            PersonaNotFoundError: no stored persona has this id.
            ConfigError: unknown method.
        """
        t0 = time.perf_counter()
        if not isinstance(query, str) or not query.strip():
            raise EmptyQueryError("query must be a non-empty string, e.g. 'A preferred outdoor spot'")
        get_method(method)  # fail fast on a typo, before any embedding
        q_emb = self.embedder.embed_one(query)
        t1 = time.perf_counter()
        mem = self.embedded(persona)
        t2 = time.perf_counter()
        result = self.personalize_embedded(mem, query, q_emb, method=method, config=config, composer=composer,
                                           strict=strict)
        result.timings_ms.update(embed_query=round((t1 - t0) * 1000, 3), load_persona=round((t2 - t1) * 1000, 3),
                                 total=round((time.perf_counter() - t0) * 1000, 3))
        return result

    def personalize_embedded(self, mem: EmbeddedPersona, query: str, query_emb: np.ndarray, *,
                             method: str = "vprag", config: VPRAGConfig | None = None,
                             composer: Composer | None = None, strict: bool = False) -> PersonalizationResult:
        """Retrieval and composition for an already embedded persona and query (no embedding, no I/O).

        Bulk evaluation and the agent graph use this to reuse one query embedding across personas.
        """
        t2 = time.perf_counter()
        fn = get_method(method)
        fallback = None
        if not mem.persona.posts and method in CAPTION_METHODS:
            if strict:
                raise NoPostsError(f"persona {mem.persona_id!r} has no posts; add posts or use "
                                   "method='persona_only'")
            fallback = f"persona {mem.persona_id!r} has no posts: fell back from {method!r} to 'persona_only'"
            method, fn = "persona_only", get_method("persona_only")
        cats = self.category_embeddings(mem.categories) if method in ("vprag", "comb") else {}
        trace = fn(query_emb, mem, cats, config or self.config)
        t3 = time.perf_counter()
        prompt = (composer or self.composer).compose(query.strip(), trace, mem.persona)
        t4 = time.perf_counter()
        timings = {"retrieve": t3 - t2, "compose": t4 - t3, "total": t4 - t2}
        return PersonalizationResult(prompt=prompt, query=query, method=method, persona_id=mem.persona_id,
                                     trace=trace, fallback=fallback,
                                     timings_ms={k: round(v * 1000, 3) for k, v in timings.items()})


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
            from agents.gates import TextGateConfig

            from .agent import PersonalizationAgent

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
        The result; from the graph it is an :class:`~sdk.agent.AgentResult` (a PersonalizationResult with
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
