"""The store's writer: plan batches, embed each new text once, write and commit batch by batch.

Per batch, on the write side (a thread, so the next batch embeds meanwhile):

1. journal the vector keys about to be added (so a crash can be cleaned up by whoever comes next);
2. add the new vectors; 3. commit the changed index entries (one upsert);
4. verify every vector the committed entries need is there (re-embed any a concurrent collection removed);
5. delete the vectors the commit superseded that nothing references; 6. delete the journal.

Planning (on the embedding side) reads the batch's old entries in one call, skips unchanged personas (but
re-embeds any of their vectors that went missing), and asks the store which of the remaining texts it already
holds, so a text shared by many personas, or already stored by an earlier ingest, is never embedded again.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vptt.core.errors import EmbedderError, StoreError
from vptt.core.models import Persona
from vptt.stores._entries import IndexEntry, Journal, UpsertResult, fingerprint, post_fingerprints
from vptt.stores._gc import collect, live_journal_ids, recover_journals
from vptt.stores.engine import EmbedEngine, LocalEngine
from vptt.stores.records import persona_texts, text_key

if TYPE_CHECKING:
    from vptt.stores.base import PersonaStore

MAX_BATCH_PERSONAS = 512
CHUNK_TEXTS = 256  # texts per engine chunk, unless the engine names its own ``chunk_texts``


@dataclass
class _Plan:
    persona: Persona
    texts: list[str]  # its unique caption and element texts
    keys: list[str]  # their vocabulary keys
    old: IndexEntry | None = None
    result: UpsertResult | None = None
    card_text: str | None = None  # to embed; None: unchanged, or the old card vector is reused
    persona_json: str = ""
    content_hash: str = ""  # fingerprint(persona_json), computed once
    post_hashes: dict[str, str] = field(default_factory=dict)
    entry: IndexEntry | None = None


@dataclass
class _Batch:
    plans: list[_Plan]
    texts: list[str]  # new vocabulary texts, then card texts: the order vectors come back in
    n_vocab: int
    vectors: list[np.ndarray] = field(default_factory=list)

    @property
    def received(self) -> int:
        return sum(len(v) for v in self.vectors)

    @property
    def complete(self) -> bool:
        return self.received >= len(self.texts)


class Writer:
    """One ``upsert_many`` call (see :meth:`PersonaStore.upsert_many`)."""

    def __init__(self, store: PersonaStore, *, engine: EmbedEngine | None, batch_texts: int, pipeline: bool,
                 progress: bool | Callable[[int], None]) -> None:
        self.store = store
        self.engine = engine or LocalEngine(store.embedder)
        if self.engine.name != store.embedder.name or self.engine.dim != store.embedder.dim:
            raise StoreError(f"the embedding engine embeds with {self.engine.name!r} ({self.engine.dim}-d) but "
                             f"{store.location} uses {store.embedder.name!r} ({store.embedder.dim}-d)")
        self.name = store.embedder.name
        self.batch_texts = max(1, batch_texts)
        self.pipeline = pipeline
        self.progress = progress
        self.planned: set[str] = set()  # keys this run writes (or wrote)
        self.known: set[str] = set()  # keys the store already held when asked
        self.seen_ids: set[str] = set()
        self.pending: deque[_Batch] = deque()
        self.results: list[UpsertResult] = []
        self._sink: _WriteThread | None = None

    # -- driver ------------------------------------------------------------------------------------------
    def run(self, personas: Iterable[Persona]) -> list[UpsertResult]:
        recover_journals(self.store)
        bar = None
        if self.progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(desc="embedding", unit="text")
        self._sink = _WriteThread(self._write) if self.pipeline else None
        try:
            for vecs in self.engine.embed_stream(self._chunks(personas)):
                vecs = np.asarray(vecs, dtype=np.float32)
                self.pending[0].vectors.append(vecs)
                if bar is not None:
                    bar.update(len(vecs))
                elif callable(self.progress):
                    self.progress(len(vecs))
                self._flush()
            self._flush()
            if self.pending:
                raise EmbedderError("the embedding engine returned fewer chunks than it was given")
        except BaseException:
            if self._sink is not None:
                self._sink.close(reraise=False)  # complete batches already queued are still written
            raise
        finally:
            if bar is not None:
                bar.close()
        if self._sink is not None:
            self._sink.close()
        return self.results

    def _chunks(self, personas: Iterable[Persona]) -> Iterator[list[str]]:
        """Plan batches lazily and yield their texts in chunks (an engine reading ahead plans ahead)."""
        size = int(getattr(self.engine, "chunk_texts", CHUNK_TEXTS))
        for batch in self._batches(personas):
            self.pending.append(batch)
            self._flush()
            for start in range(0, len(batch.texts), size):
                yield batch.texts[start:start + size]

    def _flush(self) -> None:
        """Hand every complete batch at the head of the queue to the writer, in order."""
        while self.pending and self.pending[0].complete:
            batch = self.pending.popleft()
            if self._sink is not None:
                self._sink.put(batch)
            else:
                self._write(batch)

    # -- planning ----------------------------------------------------------------------------------------
    def _batches(self, personas: Iterable[Persona]) -> Iterator[_Batch]:
        group: list[_Plan] = []
        estimate = 0
        for persona in personas:
            if persona.persona_id in self.seen_ids:
                raise StoreError(f"persona id {persona.persona_id!r} repeated in one upsert")
            self.seen_ids.add(persona.persona_id)
            texts = persona_texts(persona)
            plan = _Plan(persona, texts, [text_key(self.name, t) for t in texts])
            group.append(plan)
            estimate += sum(1 for k in plan.keys if k not in self.planned and k not in self.known)
            if estimate >= self.batch_texts or len(group) >= MAX_BATCH_PERSONAS:
                yield self._plan(group)
                group, estimate = [], 0
        if group:
            yield self._plan(group)

    def _plan(self, plans: list[_Plan]) -> _Batch:
        olds = self.store._get_entries([p.persona.persona_id for p in plans])
        for plan in plans:
            self._plan_one(plan, olds.get(plan.persona.persona_id))
        unknown = list({k for plan in plans for k in plan.keys if k not in self.planned and k not in self.known})
        if unknown:
            self.known.update(self.store._has_vectors(unknown))
        vocab: dict[str, None] = {}
        cards: dict[str, None] = {}
        for plan in plans:
            result = plan.result
            assert result is not None
            for text, key in zip(plan.texts, plan.keys):
                if key not in self.planned and key not in self.known:
                    self.planned.add(key)
                    vocab[text] = None
                    result.texts_embedded += 1
            if plan.card_text is not None and plan.card_text not in cards and plan.card_text not in vocab:
                cards[plan.card_text] = None
                result.texts_embedded += 1
        return _Batch(plans, [*vocab, *cards], len(vocab))

    def _plan_one(self, plan: _Plan, old: IndexEntry | None) -> None:
        persona = plan.persona
        if old is not None and old.embedder != self.name:
            raise StoreError(f"persona {persona.persona_id!r} is stored with embedder {old.embedder!r}; delete it "
                             f"first to re-embed with {self.name!r}")
        plan.old = old
        plan.persona_json = persona.model_dump_json()
        plan.content_hash = fingerprint(plan.persona_json)
        plan.result = result = UpsertResult(persona.persona_id, "created" if old is None else "updated")
        if old is not None and old.content_hash == plan.content_hash:
            result.status = "unchanged"
            return
        old_hashes = old.post_hashes if old else {}
        plan.post_hashes = new_hashes = post_fingerprints(persona)
        result.posts_added = [pid for pid in new_hashes if pid not in old_hashes]
        result.posts_updated = [pid for pid, h in new_hashes.items() if pid in old_hashes and old_hashes[pid] != h]
        result.posts_removed = [pid for pid in old_hashes if pid not in new_hashes]
        card = persona.card_text()
        same_card = old is not None and old.persona().card_text() == card
        plan.card_text = None if same_card else card

    # -- writing (the writer thread) ---------------------------------------------------------------------
    def _write(self, batch: _Batch) -> None:
        store = self.store
        vecs = np.concatenate(batch.vectors) if batch.vectors else np.zeros((0, store.embedder.dim), np.float32)
        if len(vecs) != len(batch.texts) or (len(vecs) and vecs.shape[1] != store.embedder.dim):
            raise EmbedderError(f"the embedding engine returned {vecs.shape} vectors for {len(batch.texts)} texts of "
                                f"dimension {store.embedder.dim}")
        by_text = dict(zip(batch.texts, vecs))
        new = {text_key(self.name, t): by_text[t] for t in batch.texts[:batch.n_vocab]}
        journal = None
        if new:
            journal = Journal(uuid.uuid4().hex, tuple(new), socket.gethostname(), os.getpid(),
                              time.time() + store.lease_s)
            live_journal_ids.add(journal.journal_id)
            store._put_journal(journal)
        try:
            if new:
                store._put_vectors(new)
            commits = [p for p in batch.plans if p.result is not None and p.result.status != "unchanged"]
            for plan in commits:
                card = by_text[plan.card_text] if plan.card_text is not None else plan.old.card_emb  # type: ignore[union-attr]
                plan.entry = IndexEntry(plan.persona.persona_id, plan.persona_json, plan.content_hash,
                                        np.asarray(card, np.float32), plan.post_hashes, self.name, tuple(plan.keys))
            superseded = self._commit(commits)
            self._verify(batch)
            collect(store, superseded)
        except BaseException:
            if journal is not None:
                _cleanup(store, journal)
            raise
        if journal is not None:
            store._delete_journal(journal.journal_id)
            live_journal_ids.discard(journal.journal_id)
        self.results.extend(p.result for p in batch.plans if p.result is not None)

    def _commit(self, commits: list[_Plan]) -> set[str]:
        """Commit the entries; returns the keys they superseded (of the planned old entries, and of entries
        another writer committed since planning) that they do not use themselves."""
        if not commits:
            return set()
        current = self.store._get_entries([p.persona.persona_id for p in commits])
        superseded = {k for p in commits if p.old is not None for k in p.old.keys}
        superseded.update(k for e in current.values() for k in e.keys)
        for plan in commits:
            self.store.invalidate(plan.persona.persona_id)
        self.store._put_entries([p.entry for p in commits])  # type: ignore[misc]
        for plan in commits:
            self.store.invalidate(plan.persona.persona_id)
        superseded.difference_update(k for p in commits for k in p.keys)
        return superseded

    def _verify(self, batch: _Batch) -> None:
        """Every vector the batch's personas need exists; re-embed any that a concurrent collection removed."""
        need: dict[str, str] = {}
        for plan in batch.plans:
            need.update(zip(plan.keys, plan.texts))
        if not need:
            return
        have = self.store._has_vectors(list(need))
        missing = [k for k in need if k not in have]
        if missing:
            texts = [need[k] for k in missing]
            self.store._put_vectors(dict(zip(missing, self.store.embedder.embed(texts))))


def _cleanup(store: PersonaStore, journal: Journal) -> None:
    """After a failed write: remove the vectors it added that nothing references, then its journal."""
    try:
        collect(store, journal.keys, own=journal.journal_id)
        store._delete_journal(journal.journal_id)
        live_journal_ids.discard(journal.journal_id)
    except Exception:  # noqa: BLE001 - the store is failing; the journal stays for the next writer to clean
        live_journal_ids.discard(journal.journal_id)


class _WriteThread:
    """Runs ``write(batch)`` for queued batches in a thread; the first error stops it and is re-raised."""

    def __init__(self, write: Callable[[_Batch], None]) -> None:
        self._write = write
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=1)  # back-pressure: one batch ahead
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="vptt-store-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is None:
                try:
                    self._write(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self._error = exc

    def put(self, batch: _Batch) -> None:
        self._raise()
        self._queue.put(batch)

    def close(self, *, reraise: bool = True) -> None:
        """Write what is queued, stop, and (``reraise``) re-raise the first write error."""
        self._queue.put(None)
        self._thread.join()
        if reraise:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
