"""In-memory persona store (tests, notebooks, short-lived apps): the shared layout in dicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np

from vptt.stores.base import IndexEntry, Journal, PersonaStore
from vptt.stores.embedders import Embedder

_PAGE = 1000


class InMemoryPersonaStore(PersonaStore):
    """Keeps entries, vectors and journals in dicts; nothing persists."""

    kind = "memory"

    def __init__(self, embedder: Embedder, *, cache_size: int = 4096, batch_texts: int = 4096,
                 lease_s: float = 600.0, verify_cache: bool = True) -> None:
        super().__init__(embedder, cache_size=cache_size, batch_texts=batch_texts, lease_s=lease_s,
                         verify_cache=verify_cache)
        self._entries: dict[str, IndexEntry] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._refs: Counter[str] = Counter()
        self._journals: dict[str, Journal] = {}

    @property
    def location(self) -> str:
        return f"in-memory store {id(self):#x}"

    def _get_entries(self, ids: Sequence[str]) -> dict[str, IndexEntry]:
        return {i: self._entries[i] for i in ids if i in self._entries}

    def _put_entries(self, entries: Sequence[IndexEntry]) -> None:
        with self._lock:
            for entry in entries:
                old = self._entries.get(entry.persona_id)
                self._refs.update(entry.keys)
                if old is not None:
                    self._refs.subtract(old.keys)
                self._entries[entry.persona_id] = entry
            self._refs += Counter()  # drop zero counts

    def _delete_entries(self, ids: Sequence[str]) -> None:
        with self._lock:
            for i in ids:
                old = self._entries.pop(i, None)
                if old is not None:
                    self._refs.subtract(old.keys)
            self._refs += Counter()

    def _list_ids(self) -> list[str]:
        return sorted(self._entries)

    def _scan_entries(self) -> Iterator[list[IndexEntry]]:
        entries = list(self._entries.values())
        for start in range(0, len(entries), _PAGE):
            yield entries[start:start + _PAGE]

    def _get_vectors(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return {k: self._vectors[k] for k in keys if k in self._vectors}

    def _has_vectors(self, keys: Sequence[str]) -> set[str]:
        return {k for k in keys if k in self._vectors}

    def _put_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        self._vectors.update((k, np.asarray(v, np.float32)) for k, v in vectors.items())

    def _delete_vectors(self, keys: Sequence[str]) -> None:
        for k in keys:
            self._vectors.pop(k, None)

    def _scan_vector_keys(self) -> Iterator[list[str]]:
        keys = list(self._vectors)
        for start in range(0, len(keys), _PAGE * 10):
            yield keys[start:start + _PAGE * 10]

    def _referenced(self, keys: Sequence[str]) -> set[str]:
        with self._lock:
            return {k for k in keys if self._refs.get(k, 0) > 0}

    def _put_journal(self, journal: Journal) -> None:
        self._journals[journal.journal_id] = journal

    def _get_journals(self) -> list[Journal]:
        return list(self._journals.values())

    def _delete_journal(self, journal_id: str) -> None:
        self._journals.pop(journal_id, None)
