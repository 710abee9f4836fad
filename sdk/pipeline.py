"""Rows of personas × tasks × methods, with LLM calls in flight while other personas are scored.

One row per (persona, task, method): the prompt p', the VPTT terms, and how the prompt was made. With the
template composer a persona is composed and scored in one go. With an :class:`~agents.llm_composer.LLMComposer`
and a :class:`~vptt.core.llm_client.ChatClient` the work is a pipeline: this thread retrieves for persona
after persona and submits their requests (the client keeps ``concurrency`` of them in flight on its own
thread), and scores each persona (MiniLM embedding of its prompts, the VPTT terms) as soon as all its
completions are in — so the scoring loop and the LLM calls overlap instead of waiting for each other.

:class:`RunMeter` turns finished rows into the progress bar's figures (rows/s, LLM calls/s, tokens/s, cache
hits) and a run's token totals.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vptt.agents.methods import CAPTION_METHODS
from vptt.agents.personalizer import Personalizer
from vptt.agents.tasks import Task
from vptt.agents.trace import RetrievalTrace
from vptt.agents.vprag import VPRAGConfig
from vptt.core.errors import VPTTError
from vptt.core.llm_cache import ChatRequest
from vptt.stores.records import EmbeddedPersona

__all__ = ["PersonaRows", "RowPipeline", "RunMeter", "is_llm_composer", "llm_totals"]

Job = tuple["str | EmbeddedPersona", Collection[tuple[str, str]]]
"""A persona (its id, or its memory already read) and the (task, method) pairs to skip."""
"""A persona id and the (task, method) pairs to skip for it (already done)."""


def is_llm_composer(composer: Any) -> bool:
    """Whether ``composer`` builds chat requests (:class:`~agents.llm_composer.LLMComposer` or alike)."""
    return callable(getattr(composer, "chat_request", None)) and callable(getattr(composer, "finish", None))


@dataclass
class _Slot:
    task: Task
    method: str
    trace: RetrievalTrace
    fallback: str | None
    prompt: str | None = None
    request: ChatRequest | None = None
    future: concurrent.futures.Future[Any] | None = None
    llm: dict[str, Any] | None = None


@dataclass
class PersonaRows:
    """One persona's finished rows (and its embedded memory, for whoever needs more of it)."""

    persona_id: str
    mem: EmbeddedPersona
    rows: list[dict[str, Any]]


@dataclass
class _Pending:
    persona_id: str
    mem: EmbeddedPersona
    slots: list[_Slot] = field(default_factory=list)

    def outstanding(self) -> int:
        return sum(1 for s in self.slots if s.future is not None and not s.future.done())


class RowPipeline:
    """Personalize and score the rows of many personas.

    Args:
        pz: the Personalizer (store, retrieval, embedder).
        scorer: a :class:`~evaluators.vptt_score.VPTTScorer`.
        tasks / methods / config: what to compute.
        query_embs: each task's query embedding, by task name.
        composer: the composer (default ``pz.composer``).
        client: a :class:`~vptt.core.llm_client.ChatClient`; with an LLM composer, requests go through it
            (many in flight). Without one, an LLM composer composes one request at a time.
        max_outstanding: requests submitted and not answered at most (default: twice the client's
            concurrency, at least 32), which bounds how many personas are retrieved ahead.
    """

    def __init__(self, pz: Personalizer, scorer: Any, tasks: Sequence[Task], methods: Sequence[str],
                 query_embs: dict[str, np.ndarray], config: VPRAGConfig, *, composer: Any = None,
                 client: Any = None, max_outstanding: int | None = None) -> None:
        self.pz, self.scorer = pz, scorer
        self.tasks, self.methods, self.config = list(tasks), list(methods), config
        self.query_embs = query_embs
        self.composer = composer if composer is not None else pz.composer
        self.llm = is_llm_composer(self.composer)
        self.client = client if self.llm else None
        conc = getattr(client, "concurrency", 16)
        self.max_outstanding = max_outstanding or max(32, 2 * conc)

    @property
    def composer_name(self) -> str:
        return str(getattr(self.composer, "name", type(self.composer).__name__))

    def _memory(self, ref: str | EmbeddedPersona) -> EmbeddedPersona:
        return ref if isinstance(ref, EmbeddedPersona) else self.pz.store.embedded(ref)

    # -- one persona, synchronously ------------------------------------------------------------------------
    def rows_for(self, mem: EmbeddedPersona, skip: Collection[tuple[str, str]] = ()) -> list[dict[str, Any]]:
        """Every (task, method) row of one persona not in ``skip`` (pairs of task and method names)."""
        pending = self._plan(mem, skip, submit=self.client is not None)
        return self._finish(pending) if pending.slots else []

    # -- many personas, pipelined --------------------------------------------------------------------------
    def run(self, jobs: Iterable[Job]) -> Iterator[PersonaRows]:
        """Rows persona by persona (in the order they finish; personas with nothing to do are skipped).

        Raises:
            ProviderError: an LLM request failed for good (after its retries); rows of personas already
                yielded stand, completions already received are in the client's cache.
        """
        if self.client is None:
            for ref, skip in jobs:
                mem = self._memory(ref)
                rows = self.rows_for(mem, skip)
                if rows:
                    yield PersonaRows(mem.persona_id, mem, rows)
            return
        todo = iter(jobs)
        pending: deque[_Pending] = deque()
        exhausted = False
        while True:
            while not exhausted and sum(p.outstanding() for p in pending) < self.max_outstanding:
                job = next(todo, None)
                if job is None:
                    exhausted = True
                    break
                planned = self._plan(self._memory(job[0]), job[1], submit=True)
                if planned.slots:
                    pending.append(planned)
            if not pending:
                return
            ready = next((p for p in pending if p.outstanding() == 0), None)
            if ready is None:
                waiting = [s.future for p in pending for s in p.slots if s.future is not None]
                concurrent.futures.wait([f for f in waiting if not f.done()],
                                        return_when=concurrent.futures.FIRST_COMPLETED)
                continue
            pending.remove(ready)
            try:
                rows = self._finish(ready)
            except VPTTError:  # a request failed for good: let the others land in the cache first
                self._drain(pending)
                raise
            yield PersonaRows(ready.persona_id, ready.mem, rows)

    # -- internals -----------------------------------------------------------------------------------------
    def _drain(self, pending: Iterable[_Pending]) -> None:
        """Wait (at most one request timeout) for the requests still in flight, so that what they buy is
        cached for the next run instead of cancelled."""
        futures = [s.future for p in pending for s in p.slots if s.future is not None and not s.future.done()]
        if futures:
            concurrent.futures.wait(futures, timeout=getattr(self.client, "timeout_s", 60.0))

    def _plan(self, mem: EmbeddedPersona, skip: Collection[tuple[str, str]], *, submit: bool) -> _Pending:
        """Retrieve every wanted (task, method); compose template prompts now, submit LLM requests."""
        out = _Pending(mem.persona_id, mem)
        skip = set(skip)
        for task in self.tasks:
            for m in self.methods:
                if (task.name, m) in skip:
                    continue
                method, trace, fallback = self.pz.retrieve_embedded(mem, self.query_embs[task.name], method=m,
                                                                    config=self.config)
                slot = _Slot(task, method, trace, fallback)
                query = task.query.strip()
                if not self.llm:
                    slot.prompt = self.composer.compose(query, trace, mem.persona)
                else:
                    slot.request = self.composer.chat_request(
                        query, trace, mem.persona, tag=f"persona {mem.persona_id!r}, task {task.name!r}, "
                                                       f"method {method!r}")
                    if slot.request is None:  # Baseline: p' = p, no call
                        comp = self.composer.no_call(query, trace)
                        slot.prompt, slot.llm = comp.prompt, _llm_fields(comp)
                    elif submit:
                        slot.future = self.client.submit(slot.request)
                out.slots.append(slot)
        return out

    def _compose_llm(self, slot: _Slot, mem: EmbeddedPersona) -> None:
        if slot.prompt is not None:
            return
        if slot.future is not None:
            comp = self.composer.finish(slot.future.result(), slot.request, slot.trace, estimate_tokens=False)
        else:
            comp = self.composer.compose_detailed(slot.task.query.strip(), slot.trace, mem.persona)
        slot.prompt, slot.llm = comp.prompt, _llm_fields(comp)

    def _finish(self, pending: _Pending) -> list[dict[str, Any]]:
        """Compose what came back and score the persona's prompts in one batch."""
        from vptt.evaluators.vptt_score import PersonaEmbeddings, combine, score_prepared

        mem = pending.mem
        for slot in pending.slots:
            self._compose_llm(slot, mem)
        prompts = [s.prompt or "" for s in pending.slots]
        unique = list(dict.fromkeys(prompts))
        embs = np.asarray(self.scorer.embedder.embed(unique))
        index = {p: i for i, p in enumerate(unique)}
        geo = self.scorer.prepare(PersonaEmbeddings(mem.persona_id, mem.card_emb, mem.caption_embs,
                                                    mem.captions))
        batch = score_prepared(geo, prompts, embs[[index[p] for p in prompts]], caption_conditioned=True)
        rows = []
        for i, slot in enumerate(pending.slots):
            conditioned = slot.method in CAPTION_METHODS
            s = batch[i]
            nv = s.nv if conditioned else 0.0  # the paper reports NV = 0 for methods that never saw captions
            score = s.score if conditioned else float(combine(s.pa, s.gs, s.cp, 0.0)[0])
            t = slot.trace
            rows.append({"persona_id": mem.persona_id, "task": slot.task.name, "task_kind": slot.task.kind,
                         "method": slot.method, "query": slot.task.query, "prompt": slot.prompt, "pa": s.pa,
                         "gs": s.gs, "cp": s.cp, "nv": nv, "score": score, "score_c": s.score_c,
                         "caption_conditioned": conditioned, "n_eff": t.n_eff, "k": t.k,
                         "elements": len(t.kept_elements()),
                         "tokens": t.composition.tokens if t.composition else None, "fallback": slot.fallback,
                         "composer": self.composer_name, "llm": slot.llm})
        return rows


def _llm_fields(comp: Any) -> dict[str, Any]:
    from vptt.agents.llm_composer import llm_row_fields

    return llm_row_fields(comp)


def llm_totals(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """LLM figures of ``rows``: completions bought, served from the cache, tokens in/out (bought ones)."""
    out = {"calls": 0, "cache_hits": 0, "tokens_in": 0, "tokens_out": 0, "rows_with_llm": 0}
    for r in rows:
        llm = r.get("llm")
        if not llm:
            continue
        out["rows_with_llm"] += 1
        if not llm.get("called"):
            continue
        if llm.get("cached"):
            out["cache_hits"] += 1
        else:
            out["calls"] += 1
            out["tokens_in"] += int(llm.get("tokens_in") or 0)
            out["tokens_out"] += int(llm.get("tokens_out") or 0)
    return out


class RunMeter:
    """Running figures of a run for its progress bar: rows/s, LLM calls/s, tokens/s and cache hits."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.rows = 0
        self.totals = llm_totals([])

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows += len(rows)
        for k, v in llm_totals(rows).items():
            self.totals[k] += v

    def postfix(self) -> str:
        """``"llm 41.2 calls/s, 9.8k tok/s, 120 cached"`` (empty without LLM rows)."""
        if not self.totals["rows_with_llm"]:
            return ""
        dt = max(time.perf_counter() - self.t0, 1e-9)
        tok = (self.totals["tokens_in"] + self.totals["tokens_out"]) / dt
        tok_s = f"{tok / 1000:.1f}k" if tok >= 1000 else f"{tok:.0f}"
        return f"llm {self.totals['calls'] / dt:.1f} calls/s, {tok_s} tok/s, {self.totals['cache_hits']} cached"
