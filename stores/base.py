"""The persona store protocol: a few abstract primitives, everything else written once on top.

Layout (every backend): one **index entry** per persona (the commit record: persona JSON, content and post
hashes, embedder, card vector and the keys of its texts) and one **shared vocabulary** of vectors, one per
unique (embedder, text) under :func:`~vptt.stores.records.text_key`. A caption or element that occurs in many
personas ("golden hour light") is embedded once and stored once.

Write protocol (crash-safe, never half-written, see :mod:`vptt.stores._writer`): a writer first records a
**journal** of the vector keys it is about to add, adds the vectors, commits the index entries (one upsert),
then deletes the keys its commit superseded that no persona references, and finally its journal. A crash at
any point leaves the old or the new version readable; what it leaves behind (vectors no entry references) is
found through the dead writer's journal and removed by the next write, :meth:`PersonaStore.gc` or
``vptt store check --repair``. Vectors are immutable and content-addressed, so a reader that read an entry
finds its vectors, or sees the entry change under it and reads again (old or new version, never a mix).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from vptt.core.errors import PersonaNotFoundError, StoreError
from vptt.core.models import Persona, Post
from vptt.stores._entries import IndexEntry, Journal, UpsertResult
from vptt.stores._gc import StoreCheck, check, collect, full_gc
from vptt.stores._writer import Writer
from vptt.stores.embedders import Embedder
from vptt.stores.records import EmbeddedPersona, assemble, persona_texts, text_key

if TYPE_CHECKING:
    from vptt.stores.engine import EmbedEngine

__all__ = ["IndexEntry", "Journal", "PersonaStore", "StoreCheck", "UpsertResult"]

_READ_RETRIES = 3


class PersonaStore(ABC):
    """Persona memory. Subclasses implement the ``_`` primitives; reads are scoped to one persona.

    Args:
        embedder: embeds captions, elements and persona cards; its ``name`` is part of every vector key.
        cache_size: how many personas' matrices to keep in memory after first use (the hot path).
        verify_cache: on each cached read, ask the backend for the persona's version (a tiny read), so a write
            by another process is never hidden by this process's cache.
        batch_texts: about how many new texts one write batch gathers (the unit of embedding and writing).
        lease_s: how long a writer's journal protects its vectors when the writer runs on another host (a
            writer on this host is checked by process id).
    """

    kind: str = "store"
    read_only: bool = False

    def __init__(self, embedder: Embedder, *, cache_size: int = 4096, batch_texts: int = 4096,
                 lease_s: float = 600.0, verify_cache: bool = True) -> None:
        self.embedder = embedder
        self.cache_size = cache_size
        self.verify_cache = verify_cache
        self.batch_texts = batch_texts
        self.lease_s = lease_s
        self._cache: OrderedDict[str, tuple[EmbeddedPersona, str]] = OrderedDict()  # matrices, version
        self._generation: dict[str, int] = {}
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()

    # -- primitives ----------------------------------------------------------------------------------------
    @abstractmethod
    def _get_entries(self, ids: Sequence[str]) -> dict[str, IndexEntry]:
        """The committed entries of these persona ids (absent ids left out)."""

    @abstractmethod
    def _put_entries(self, entries: Sequence[IndexEntry]) -> None:
        """Commit entries (insert or replace)."""

    @abstractmethod
    def _delete_entries(self, ids: Sequence[str]) -> None:
        """Remove entries (absent ids ignored)."""

    def _get_versions(self, ids: Sequence[str]) -> dict[str, str]:
        """``{persona id: content hash}`` of committed entries; backends make this cheaper than a full read."""
        return {pid: e.content_hash for pid, e in self._get_entries(ids).items()}

    @abstractmethod
    def _list_ids(self) -> list[str]:
        """Every committed persona id, sorted."""

    @abstractmethod
    def _scan_entries(self) -> Iterator[list[IndexEntry]]:
        """Every committed entry, in pages."""

    @abstractmethod
    def _get_vectors(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of these keys (absent keys left out)."""

    @abstractmethod
    def _has_vectors(self, keys: Sequence[str]) -> set[str]:
        """The subset of ``keys`` that has a stored vector."""

    @abstractmethod
    def _put_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        """Store vectors under their keys (idempotent)."""

    @abstractmethod
    def _delete_vectors(self, keys: Sequence[str]) -> None:
        """Remove vectors (absent keys ignored)."""

    @abstractmethod
    def _scan_vector_keys(self) -> Iterator[list[str]]:
        """Every stored vector key, in pages."""

    @abstractmethod
    def _referenced(self, keys: Sequence[str]) -> set[str]:
        """The subset of ``keys`` that some committed entry references."""

    @abstractmethod
    def _put_journal(self, journal: Journal) -> None:
        """Record a writer's journal."""

    @abstractmethod
    def _get_journals(self) -> list[Journal]:
        """Every journal in the store."""

    @abstractmethod
    def _delete_journal(self, journal_id: str) -> None:
        """Remove a journal (absent ignored)."""

    # -- description -----------------------------------------------------------------------------------------
    @property
    def location(self) -> str:
        """Where this store lives, in words (shown in errors and by ``vptt personas list``)."""
        return f"{self.kind} store"

    def layout_notes(self) -> list[str]:
        """Problems of the storage layout itself (e.g. an unmigrated old layout), reported by :meth:`check`."""
        return []

    def _not_found(self, persona_id: str) -> PersonaNotFoundError:
        try:
            n = len(self._list_ids())
            where = f"{self.location} ({n} persona{'s' * (n != 1)} there)"
        except StoreError:
            where = self.location
        return PersonaNotFoundError(persona_id, where)

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.location} is read-only: it can be listed and read, not written; open a "
                             "writable copy (or fix the directory's permissions) to change it")

    # -- reads ---------------------------------------------------------------------------------------------
    def _entry_or_raise(self, persona_id: str, *, same_embedder: bool = True) -> IndexEntry:
        entry = self._get_entries([persona_id]).get(persona_id)
        if entry is None:
            raise self._not_found(persona_id)
        if same_embedder and entry.embedder != self.embedder.name:
            raise StoreError(f"persona {persona_id!r} in {self.location} was embedded with {entry.embedder!r} but "
                             f"this store uses {self.embedder.name!r}; open the store with the same embedder or "
                             "re-ingest")
        return entry

    def get(self, persona_id: str) -> Persona:
        """The persona (``PersonaNotFoundError`` naming the store if absent), whatever embedder embedded it."""
        return self._entry_or_raise(persona_id, same_embedder=False).persona()

    def embedded(self, persona_id: str) -> EmbeddedPersona:
        """The persona's matrices; cached in memory after the first read.

        A cached copy is used only while it is the committed version (``verify_cache``): writes of this store
        drop it at once, writes of other processes are seen at the next read.
        """
        with self._lock:
            hit = self._cache.get(persona_id)
            if hit is not None:
                self._cache.move_to_end(persona_id)
            generation = self._generation.get(persona_id, 0)
        if hit is not None:
            if not self.verify_cache or self._get_versions([persona_id]).get(persona_id) == hit[1]:
                return hit[0]
            self.invalidate(persona_id)
            with self._lock:
                generation = self._generation.get(persona_id, 0)
        emb, version = self._read_embedded(persona_id)
        with self._lock:
            if self._generation.get(persona_id, 0) == generation:  # no write of this persona meanwhile
                self._cache[persona_id] = (emb, version)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return emb

    def _read_embedded(self, persona_id: str) -> tuple[EmbeddedPersona, str]:
        """Entry, then its vectors; if some are gone the entry changed under us (a concurrent update): again."""
        entry = self._entry_or_raise(persona_id)
        for _ in range(_READ_RETRIES):
            vectors = self._get_vectors(entry.keys)
            if len(vectors) == len(set(entry.keys)):
                return self._assemble(entry, vectors), entry.content_hash
            again = self._entry_or_raise(persona_id)
            if again.content_hash == entry.content_hash:
                break
            entry = again
        missing = len(set(entry.keys)) - len(vectors)
        raise StoreError(f"persona {persona_id!r} in {self.location}: {missing} of its vectors are missing (the "
                         "store was damaged or garbage-collected concurrently); run `vptt store check --repair` "
                         "or re-ingest this persona")

    def _assemble(self, entry: IndexEntry, vectors: dict[str, np.ndarray]) -> EmbeddedPersona:
        persona = entry.persona()
        by_text = {t: vectors[text_key(entry.embedder, t)] for t in persona_texts(persona)}
        return assemble(persona, entry.card_emb, by_text, entry.embedder)

    def embedded_many(self, persona_ids: Sequence[str], *, page: int = 64) -> Iterator[EmbeddedPersona]:
        """Matrices of many personas in order, read in pages (one entry read and one vector read per page)."""
        for start in range(0, len(persona_ids), page):
            ids = list(persona_ids[start:start + page])
            entries = self._get_entries(ids)
            keys = list(dict.fromkeys(k for e in entries.values() for k in e.keys))
            vectors = self._get_vectors(keys)
            for pid in ids:
                entry = entries.get(pid)
                if entry is None or entry.embedder != self.embedder.name or any(k not in vectors for k in entry.keys):
                    yield self.embedded(pid)  # absent, foreign or changed meanwhile: the careful path says why
                else:
                    yield self._assemble(entry, vectors)

    def list_ids(self) -> list[str]:
        """Every persona id in the store, sorted."""
        return self._list_ids()

    def __contains__(self, persona_id: object) -> bool:
        return isinstance(persona_id, str) and persona_id in self._get_entries([persona_id])

    def __len__(self) -> int:
        return len(self._list_ids())

    def invalidate(self, persona_id: str | None = None) -> None:
        """Drop cached matrices (of one persona, or all) so the next read goes to the backend."""
        with self._lock:
            if persona_id is None:
                self._cache.clear()
                for pid in self._generation:
                    self._generation[pid] += 1
                return
            self._cache.pop(persona_id, None)
            self._generation[persona_id] = self._generation.get(persona_id, 0) + 1
            if len(self._generation) > 4 * self.cache_size:  # forget counters of personas not cached
                for pid in [p for p in self._generation if p not in self._cache][: len(self._generation) // 2]:
                    del self._generation[pid]

    # -- writes --------------------------------------------------------------------------------------------
    def upsert(self, persona: Persona) -> UpsertResult:
        """Insert or update one persona; only texts the store does not hold yet are embedded."""
        return self.upsert_many([persona])[0]

    def upsert_many(self, personas: Iterable[Persona], *, progress: bool | Callable[[int], None] = False,
                    engine: EmbedEngine | None = None, batch_texts: int | None = None,
                    pipeline: bool = True) -> list[UpsertResult]:
        """Upsert many personas (any iterable, consumed once), embedding each new text once.

        Personas are gathered into batches of about ``batch_texts`` new texts; the next batch is embedded
        while the previous one is written (``pipeline``). Each batch is committed whole; if embedding or
        writing fails, personas of earlier batches stay committed, nothing of the failed batch is visible,
        and running the same upsert again finishes the job (committed personas come back "unchanged").

        Args:
            personas: the personas (ids must be unique).
            progress: a tqdm bar over texts (True) or a callback called with the count of texts embedded.
            engine: how to embed (e.g. Ray workers); default: this store's embedder in this process.
            batch_texts: new texts per batch (default: the store's ``batch_texts``).
            pipeline: write batch i while embedding batch i+1 (a writer thread).
        """
        self._check_writable()
        with self._write_lock:
            return Writer(self, engine=engine, batch_texts=batch_texts or self.batch_texts,
                          pipeline=pipeline, progress=progress).run(personas)

    def add_post(self, persona_id: str, post: Post) -> UpsertResult:
        """Add (or replace) one post; only that post's new texts are embedded."""
        persona = self.get(persona_id)
        posts = [p for p in persona.posts if p.post_id != post.post_id]
        replaced = len(posts) != len(persona.posts)
        if replaced:
            posts = [post if p.post_id == post.post_id else p for p in persona.posts]
        else:
            posts.append(post)
        return self.upsert(persona.model_copy(update={"posts": posts}))

    def remove_post(self, persona_id: str, post_id: str) -> UpsertResult:
        """Remove one post; nothing is embedded."""
        persona = self.get(persona_id)
        persona.post(post_id)  # KeyError naming the post if absent
        posts = [p for p in persona.posts if p.post_id != post_id]
        return self.upsert(persona.model_copy(update={"posts": posts}))

    def delete(self, persona_id: str) -> bool:
        """Delete a persona; its vectors that no other persona uses go too. False if it was not there."""
        self._check_writable()
        with self._write_lock:
            entry = self._get_entries([persona_id]).get(persona_id)
            self.invalidate(persona_id)
            if entry is None:
                return False
            self._delete_entries([persona_id])
            self.invalidate(persona_id)
            collect(self, entry.keys)
            return True

    # -- maintenance -------------------------------------------------------------------------------------------
    def gc(self) -> int:
        """Remove every vector no persona references (left by crashes or concurrent writers); returns the count.

        Vectors that a live writer is adding (its journal) are kept.
        """
        self._check_writable()
        with self._write_lock:
            return full_gc(self)

    def check(self, *, repair: bool = False) -> StoreCheck:
        """Look for orphan vectors, missing vectors and journals of dead writers; with ``repair`` fix them.

        Repair removes orphans and dead writers' journals and re-embeds missing vectors with this store's
        embedder (texts come from the personas' own records).
        """
        if repair:
            self._check_writable()
        with self._write_lock:
            return check(self, repair=repair)
