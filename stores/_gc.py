"""Garbage collection and consistency checks of a persona store.

A vector is garbage when no committed index entry references it and no live writer's journal lists it. A
journal is *stale* when its writer is gone: a process on this host that no longer runs (or this process, for
a journal it no longer tracks), or a writer elsewhere whose lease expired. Before anything is deleted its
references are checked once more, right before the delete, so a writer that committed meanwhile keeps its
vectors (and every writer verifies its vectors after committing, re-embedding any a collection removed).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vptt.stores.records import persona_texts, text_key

if TYPE_CHECKING:
    from vptt.stores._entries import Journal
    from vptt.stores.base import PersonaStore

#: Journals of writers running in this process (a journal of this pid not in here was left by a failure).
live_journal_ids: set[str] = set()


@dataclass
class StoreCheck:
    """What :meth:`PersonaStore.check` found (and, with ``repair``, fixed)."""

    location: str
    personas: int = 0
    vectors: int = 0
    orphan_vectors: int = 0  # stored, referenced by no persona and no live writer
    missing_vectors: dict[str, int] = field(default_factory=dict)  # persona id -> vectors it lacks
    foreign_embedder: dict[str, str] = field(default_factory=dict)  # persona id -> embedder, if not the store's
    stale_journals: int = 0
    live_journals: int = 0
    notes: list[str] = field(default_factory=list)
    repaired: bool = False
    removed_vectors: int = 0
    reembedded_vectors: int = 0

    @property
    def problems(self) -> list[str]:
        """What was found, one line each (empty when the store is healthy)."""
        out = list(self.notes)
        if self.orphan_vectors:
            out.append(f"{self.orphan_vectors} orphan vector(s) no persona uses (left by a crash or by concurrent "
                       "writers; reads ignore them)")
        if self.missing_vectors:
            n = sum(self.missing_vectors.values())
            some = ", ".join(repr(p) for p in list(self.missing_vectors)[:3])
            out.append(f"{n} vector(s) missing for {len(self.missing_vectors)} persona(s), e.g. {some}")
        if self.stale_journals:
            out.append(f"{self.stale_journals} journal(s) of writers that died")
        if self.foreign_embedder:
            pid, name = next(iter(self.foreign_embedder.items()))
            out.append(f"{len(self.foreign_embedder)} persona(s) embedded with another embedder (e.g. {pid!r}: "
                       f"{name!r}); open the store with that embedder, or delete and re-ingest them")
        return out

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.problems


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(journal: Journal, now: float | None = None) -> bool:
    """Whether the writer of ``journal`` is gone."""
    if journal.host == socket.gethostname():
        if journal.pid == os.getpid():
            return journal.journal_id not in live_journal_ids
        if not _alive(journal.pid):
            return True
    return (now or time.time()) > journal.expires


def collect(store: PersonaStore, candidates: Iterable[str], *, own: str | None = None) -> int:
    """Delete the ``candidates`` that no entry references and no live journal (but ``own``) lists."""
    cands = set(candidates)
    if not cands:
        return 0
    for journal in store._get_journals():
        if journal.journal_id != own and not is_stale(journal):
            cands.difference_update(journal.keys)
    if cands:
        cands.difference_update(store._referenced(list(cands)))
    if cands:
        store._delete_vectors(sorted(cands))
    return len(cands)


def recover_journals(store: PersonaStore) -> int:
    """Clean up after writers that died: their unreferenced vectors, then their journals. Returns vectors removed."""
    removed = 0
    for journal in store._get_journals():
        if is_stale(journal):
            removed += collect(store, journal.keys, own=journal.journal_id)
            store._delete_journal(journal.journal_id)
    return removed


def _scan(store: PersonaStore) -> tuple[dict[str, tuple[str, tuple[str, ...]]], set[str]]:
    entries = {e.persona_id: (e.embedder, e.keys) for page in store._scan_entries() for e in page}
    vectors = {k for page in store._scan_vector_keys() for k in page}
    return entries, vectors


def full_gc(store: PersonaStore) -> int:
    """Recover stale journals, then delete every vector that nothing references. Returns vectors removed."""
    removed = recover_journals(store)
    entries, vectors = _scan(store)
    referenced = {k for _, keys in entries.values() for k in keys}
    return removed + collect(store, vectors - referenced)  # collect spares what live journals list


def check(store: PersonaStore, *, repair: bool) -> StoreCheck:
    """See :meth:`PersonaStore.check`."""
    report = StoreCheck(store.location)
    report.notes.extend(store.layout_notes())
    journals = store._get_journals()
    report.stale_journals = sum(is_stale(j) for j in journals)
    report.live_journals = len(journals) - report.stale_journals
    protected = {k for j in journals if not is_stale(j) for k in j.keys}
    entries, vectors = _scan(store)
    report.personas, report.vectors = len(entries), len(vectors)
    referenced = set()
    for pid, (embedder, keys) in entries.items():
        referenced.update(keys)
        if embedder != store.embedder.name:
            report.foreign_embedder[pid] = embedder
        lacking = sum(1 for k in keys if k not in vectors)
        if lacking:
            report.missing_vectors[pid] = lacking
    report.orphan_vectors = len(vectors - referenced - protected)
    if repair:
        report.removed_vectors = full_gc(store)
        report.reembedded_vectors = _reembed(store, [p for p in report.missing_vectors
                                                     if p not in report.foreign_embedder])
        report.repaired = True
    return report


def _reembed(store: PersonaStore, persona_ids: list[str]) -> int:
    """Embed and store the missing vectors of these personas (texts from their own entries)."""
    done = 0
    for start in range(0, len(persona_ids), 64):
        entries = store._get_entries(persona_ids[start:start + 64])
        need: dict[str, str] = {}
        for entry in entries.values():
            texts = persona_texts(entry.persona())
            need.update((text_key(entry.embedder, t), t) for t in texts)
        have = store._has_vectors(list(need))
        missing = [k for k in need if k not in have]
        if missing:
            vecs = store.embedder.embed([need[k] for k in missing])
            store._put_vectors(dict(zip(missing, vecs)))
            done += len(missing)
    return done
