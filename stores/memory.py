"""In-memory persona store (tests, notebooks, short-lived apps)."""

from __future__ import annotations

from vptt.stores.base import IndexEntry, PersonaStore
from vptt.stores.embedders import Embedder
from vptt.stores.records import Item


class InMemoryPersonaStore(PersonaStore):
    """Keeps entries and items in dicts keyed by persona id; nothing persists."""

    kind = "memory"

    def __init__(self, embedder: Embedder, *, cache_size: int = 4096) -> None:
        super().__init__(embedder, cache_size=cache_size)
        self._entries: dict[str, IndexEntry] = {}
        self._items: dict[str, dict[str, Item]] = {}

    def _read_entry(self, persona_id: str) -> IndexEntry | None:
        return self._entries.get(persona_id)

    def _read_items(self, persona_id: str) -> list[Item]:
        return list(self._items.get(persona_id, {}).values())

    def _write(self, entry: IndexEntry, add: list[Item], stale: list[str]) -> None:
        bucket = self._items.setdefault(entry.persona_id, {})
        bucket.update((it.id, it) for it in add)
        self._entries[entry.persona_id] = entry
        for item_id in stale:
            bucket.pop(item_id, None)

    def _delete(self, persona_id: str) -> bool:
        self._items.pop(persona_id, None)
        return self._entries.pop(persona_id, None) is not None

    def _list_ids(self) -> list[str]:
        return sorted(self._entries)
