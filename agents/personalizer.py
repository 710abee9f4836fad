"""The :class:`Personalizer`: persona memory + VPRAG retrieval + composition (the text path)."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from vptt.agents.composer import Composer, TemplateComposer
from vptt.agents.methods import CAPTION_METHODS, get_method
from vptt.agents.results import IngestReport, PersonalizationResult
from vptt.agents.trace import RetrievalTrace
from vptt.agents.vprag import VPRAGConfig
from vptt.core.checks import check_persona_arg, check_query
from vptt.core.errors import ConfigError, FieldProblem, NoPostsError
from vptt.core.models import Persona
from vptt.core.personas import OnError
from vptt.core.settings import VPTTSettings
from vptt.stores.base import PersonaStore
from vptt.stores.embedders import Embedder
from vptt.stores.records import EmbeddedPersona, embed_persona

if TYPE_CHECKING:
    from collections.abc import Callable

    from vptt.stores.engine import EmbedEngine


class Personalizer:
    """Persona memory + retrieval + composition: the text path of the SDK.

    Args:
        store: the persona store; built from ``settings`` when omitted.
        embedder: embeds queries (and personas); defaults to the store's embedder.
        settings: :class:`VPTTSettings`; read from ``VPTT_*`` environment variables when omitted.
        composer: turns retrieval into a prompt; defaults to the template composer.
        config: VPRAG settings; defaults from ``settings``.

    Example:
        >>> from vptt import InMemoryPersonaStore, MiniLMEmbedder     # doctest: +SKIP
        >>> p = Personalizer(InMemoryPersonaStore(MiniLMEmbedder()))  # doctest: +SKIP
        >>> p.ingest("examples/data/personas.jsonl")                 # doctest: +SKIP
        >>> p.personalize("p01_kyoto_ceramicist", "A preferred outdoor spot").prompt  # doctest: +SKIP
    """

    def __init__(self, store: PersonaStore | None = None, *, embedder: Embedder | None = None,
                 settings: VPTTSettings | None = None, composer: Composer | None = None,
                 config: VPRAGConfig | None = None, adhoc_cache_size: int = 256) -> None:
        from vptt.stores.factory import build_embedder, build_store

        if isinstance(store, VPTTSettings):
            raise ConfigError("Personalizer's first argument is the store; pass settings as a keyword: "
                              "Personalizer(settings=VPTTSettings(...))")
        if store is not None and not isinstance(store, PersonaStore):
            raise ConfigError(f"store must be a PersonaStore (InMemoryPersonaStore, ChromaPersonaStore), got "
                              f"{type(store).__name__}")
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
               progress: bool | Callable[[int], None] = False, engine: EmbedEngine | None = None,
               batch_texts: int | None = None) -> IngestReport:
        """Validate a JSONL file (or personas) and upsert every persona; bad input writes nothing.

        Each unique text is embedded once (texts the store already holds are not embedded again); a large file
        is streamed, and the next batch embeds while the previous one is written.

        Args:
            source: a persona JSONL file, or personas.
            on_error: ``"raise"`` (a bad line stops everything before any write) or ``"skip"`` bad lines.
            progress: a tqdm bar over embedded texts (True) or a callback called with counts of texts.
            engine: how to embed, e.g. ``vptt.sdk.ray_ingest.RayEmbedEngine``; default: in this process.
            batch_texts: new texts per write batch (default: the store's).
        """
        from vptt.stores.ingest import validated_personas

        t0 = time.perf_counter()
        skipped: list[FieldProblem] = []
        path = ""
        if isinstance(source, (str, os.PathLike)):
            personas: Iterable[Persona] = validated_personas(source, on_error=on_error, skipped=skipped)
            path = str(source)
        else:
            personas = source
        results = self.store.upsert_many(personas, progress=progress, engine=engine, batch_texts=batch_texts)
        report = IngestReport(path=path, skipped=[str(p) for p in skipped])
        for r in results:
            getattr(report, r.status).append(r.persona_id)
            report.texts_embedded += r.texts_embedded
        report.seconds = round(time.perf_counter() - t0, 3)
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
            InvalidQueryError: the query is not a string or holds invalid Unicode.
            PersonaTypeError: ``persona`` is neither a Persona nor a string (e.g. a dict).
            PersonaNotFoundError: no stored persona has this id.
            ConfigError: unknown method.
        """
        t0 = time.perf_counter()
        check_query(query)
        persona = check_persona_arg(persona)
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
        method, trace, fallback = self.retrieve_embedded(mem, query_emb, method=method, config=config,
                                                         strict=strict)
        t3 = time.perf_counter()
        prompt = (composer or self.composer).compose(query.strip(), trace, mem.persona)
        t4 = time.perf_counter()
        timings = {"retrieve": t3 - t2, "compose": t4 - t3, "total": t4 - t2}
        return PersonalizationResult(prompt=prompt, query=query, method=method, persona_id=mem.persona_id,
                                     trace=trace, fallback=fallback,
                                     timings_ms={k: round(v * 1000, 3) for k, v in timings.items()})

    def retrieve_embedded(self, mem: EmbeddedPersona, query_emb: np.ndarray, *, method: str = "vprag",
                          config: VPRAGConfig | None = None, strict: bool = False
                          ) -> tuple[str, RetrievalTrace, str | None]:
        """The retrieval half of :meth:`personalize_embedded`: ``(method that ran, trace, fallback note)``.

        Bulk runs compose the traces later (an LLM composer many at a time).
        """
        fn = get_method(method)
        fallback = None
        if not mem.persona.posts and method in CAPTION_METHODS:
            if strict:
                raise NoPostsError(f"persona {mem.persona_id!r} has no posts; add posts or use "
                                   "method='persona_only'")
            fallback = f"persona {mem.persona_id!r} has no posts: fell back from {method!r} to 'persona_only'"
            method, fn = "persona_only", get_method("persona_only")
        cats = self.category_embeddings(mem.categories) if method in ("vprag", "comb") else {}
        return method, fn(query_emb, mem, cats, config or self.config), fallback
