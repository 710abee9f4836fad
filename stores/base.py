"""The persona store protocol: a few abstract primitives, everything else written once on top.

Write protocol (crash-safe, never half-written): new items are added under ids that carry their post's
content hash, then the persona's index entry (the commit record, holding the persona JSON and every post's
hash) is written, then items of superseded post versions are deleted. Readers only use items whose hash
matches the committed entry, so a crash at any point leaves the old or the new version readable.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from vptt.core.errors import PersonaNotFoundError, StoreError
from vptt.core.models import Persona, Post
from vptt.stores.embedders import Embedder
from vptt.stores.records import EmbeddedPersona, Item, assemble, build_post_items, post_items_texts


@dataclass(frozen=True)
class IndexEntry:
    """The commit record of one persona."""

    persona_id: str
    persona_json: str
    content_hash: str
    card_text: str
    card_emb: np.ndarray
    post_hashes: dict[str, str]
    embedder: str

    def persona(self) -> Persona:
        return Persona.model_validate_json(self.persona_json)


@dataclass
class UpsertResult:
    """What one upsert changed."""

    persona_id: str
    status: Literal["created", "updated", "unchanged"]
    posts_added: list[str] = field(default_factory=list)
    posts_updated: list[str] = field(default_factory=list)
    posts_removed: list[str] = field(default_factory=list)
    texts_embedded: int = 0


@dataclass
class _Plan:
    persona: Persona
    old: IndexEntry | None
    changed: list[Post]
    removed: list[str]
    result: UpsertResult


class PersonaStore(ABC):
    """Persona memory. Subclasses implement the five ``_`` primitives; reads are scoped to one persona.

    Args:
        embedder: embeds captions, elements and persona cards (wrap it in a ``CachedEmbedder`` to never
            re-embed a text).
        cache_size: how many personas' matrices to keep in memory after first use (the hot path).
    """

    kind: str = "store"

    def __init__(self, embedder: Embedder, *, cache_size: int = 4096) -> None:
        self.embedder = embedder
        self.cache_size = cache_size
        self._cache: OrderedDict[str, EmbeddedPersona] = OrderedDict()
        self._lock = threading.RLock()

    # -- primitives ----------------------------------------------------------------------------------------
    @abstractmethod
    def _read_entry(self, persona_id: str) -> IndexEntry | None:
        """The committed index entry of a persona, or None."""

    @abstractmethod
    def _read_items(self, persona_id: str) -> list[Item]:
        """Every stored item of this persona (possibly including superseded versions)."""

    def _read_item_versions(self, persona_id: str) -> list[tuple[str, str, str]]:
        """``(item id, post_id, post_hash)`` of every stored item; backends may skip loading embeddings."""
        return [(it.id, it.post_id, it.post_hash) for it in self._read_items(persona_id)]

    @abstractmethod
    def _write(self, entry: IndexEntry, add: list[Item], stale: list[str]) -> None:
        """Add ``add``, then commit ``entry``, then delete item ids ``stale`` — in this order."""

    @abstractmethod
    def _delete(self, persona_id: str) -> bool:
        """Remove the persona's entry and items; False if it did not exist."""

    @abstractmethod
    def _list_ids(self) -> list[str]:
        """Every committed persona id, sorted."""

    # -- reads ---------------------------------------------------------------------------------------------
    def _entry_or_raise(self, persona_id: str) -> IndexEntry:
        entry = self._read_entry(persona_id)
        if entry is None:
            raise PersonaNotFoundError(persona_id, self.kind)
        if entry.embedder != self.embedder.name:
            raise StoreError(f"persona {persona_id!r} was embedded with {entry.embedder!r} but this store uses "
                             f"{self.embedder.name!r}; open the store with the same embedder or re-ingest")
        return entry

    def get(self, persona_id: str) -> Persona:
        """The persona (``PersonaNotFoundError`` if absent)."""
        return self._entry_or_raise(persona_id).persona()

    def embedded(self, persona_id: str) -> EmbeddedPersona:
        """The persona's matrices; cached in memory after the first read (invalidated by writes)."""
        with self._lock:
            hit = self._cache.get(persona_id)
            if hit is not None:
                self._cache.move_to_end(persona_id)
                return hit
        entry = self._entry_or_raise(persona_id)
        items = self._read_items(persona_id)
        try:
            emb = assemble(entry.persona(), entry.card_emb, items, entry.embedder)
        except LookupError as exc:
            raise StoreError(f"{exc}; the store is incomplete, re-ingest this persona") from exc
        with self._lock:
            self._cache[persona_id] = emb
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return emb

    def list_ids(self) -> list[str]:
        """Every persona id in the store, sorted."""
        return self._list_ids()

    def __contains__(self, persona_id: object) -> bool:
        return isinstance(persona_id, str) and self._read_entry(persona_id) is not None

    def __len__(self) -> int:
        return len(self._list_ids())

    def invalidate(self, persona_id: str | None = None) -> None:
        """Drop cached matrices (of one persona, or all) so the next read goes to the backend."""
        with self._lock:
            if persona_id is None:
                self._cache.clear()
            else:
                self._cache.pop(persona_id, None)

    # -- writes --------------------------------------------------------------------------------------------
    def upsert(self, persona: Persona) -> UpsertResult:
        """Insert or update one persona; only changed posts (and a changed card) are embedded and written."""
        return self.upsert_many([persona], progress=False)[0]

    def upsert_many(self, personas: Sequence[Persona], *, progress: bool | Callable[[int], None] = False,
                    batch_texts: int = 2048) -> list[UpsertResult]:
        """Upsert many personas; texts of all of them are embedded in large batches.

        Everything is embedded before anything is written, so an embedding failure writes nothing.
        ``progress`` shows a tqdm bar over texts (True) or is called with the count of texts embedded.
        """
        ids = [p.persona_id for p in personas]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise StoreError(f"persona ids repeated in one upsert: {dup}")
        plans = [self._plan(p) for p in personas]
        texts = list(dict.fromkeys(t for plan in plans for t in self._plan_texts(plan)))
        vectors = self._embed_all(texts, progress, batch_texts)
        results = []
        for plan in plans:
            if plan.result.status != "unchanged":
                self._apply(plan, vectors)
            plan.result.texts_embedded = len(self._plan_texts(plan))
            results.append(plan.result)
        return results

    def add_post(self, persona_id: str, post: Post) -> UpsertResult:
        """Add (or replace) one post; only that post is embedded."""
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
        """Delete a persona and all its items; False if it was not there."""
        self.invalidate(persona_id)
        return self._delete(persona_id)

    # -- internals -----------------------------------------------------------------------------------------
    def _plan(self, persona: Persona) -> _Plan:
        old = self._read_entry(persona.persona_id)
        if old is not None and old.embedder != self.embedder.name:
            raise StoreError(f"persona {persona.persona_id!r} is stored with embedder {old.embedder!r}; "
                             f"delete it first to re-embed with {self.embedder.name!r}")
        old_hashes = old.post_hashes if old else {}
        new_hashes = {p.post_id: p.content_hash() for p in persona.posts}
        result = UpsertResult(persona.persona_id, "created" if old is None else "updated")
        changed = [p for p in persona.posts if old_hashes.get(p.post_id) != new_hashes[p.post_id]]
        result.posts_added = [p.post_id for p in changed if p.post_id not in old_hashes]
        result.posts_updated = [p.post_id for p in changed if p.post_id in old_hashes]
        result.posts_removed = [pid for pid in old_hashes if pid not in new_hashes]
        if old is not None and old.content_hash == persona.content_hash():
            result.status = "unchanged"
            changed = []
        return _Plan(persona, old, changed, result.posts_removed, result)

    def _plan_texts(self, plan: _Plan) -> list[str]:
        if plan.result.status == "unchanged":
            return []
        texts = [t for post in plan.changed for _, t, _, _ in post_items_texts(post)]
        if plan.old is None or plan.old.card_text != plan.persona.card_text():
            texts.append(plan.persona.card_text())
        return list(dict.fromkeys(texts))

    def _embed_all(self, texts: list[str], progress: bool | Callable[[int], None],
                   batch: int) -> dict[str, np.ndarray]:
        bar = None
        if not texts:
            return {}
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="embedding", unit="text")
        vectors: dict[str, np.ndarray] = {}
        try:
            for start in range(0, len(texts), batch):
                chunk = texts[start:start + batch]
                vectors.update(zip(chunk, self.embedder.embed(chunk)))
                if bar is not None:
                    bar.update(len(chunk))
                elif callable(progress):
                    progress(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return vectors

    def _apply(self, plan: _Plan, vectors: dict[str, np.ndarray]) -> None:
        persona = plan.persona
        card_text = persona.card_text()
        card_emb = vectors[card_text] if card_text in vectors else plan.old.card_emb  # type: ignore[union-attr]
        add = [it for post in plan.changed for it in build_post_items(post, vectors)]
        new_hashes = {p.post_id: p.content_hash() for p in persona.posts}
        entry = IndexEntry(persona.persona_id, json.dumps(persona.model_dump(mode="json"), ensure_ascii=False),
                           persona.content_hash(), card_text, np.asarray(card_emb, np.float32), new_hashes,
                           self.embedder.name)
        stale: list[str] = []
        if plan.old is not None:
            stale = [item_id for item_id, post_id, post_hash in self._read_item_versions(persona.persona_id)
                     if new_hashes.get(post_id) != post_hash]
        self.invalidate(persona.persona_id)
        self._write(entry, add, stale)
        self.invalidate(persona.persona_id)

