"""Chroma persona store: embedded ``PersistentClient`` by default, a Chroma server through ``HttpClient``.

Layout: one index collection (``<prefix>-personas``: one record per persona holding the persona JSON, its
commit hashes and the persona-card embedding) and one collection per persona for its captions and elements.
A persona's matrices therefore load with one un-filtered ``get`` of a small collection (a few ms) instead of a
filtered query over every persona's vectors, and no read can reach another persona's data.

Chroma's default embedding function is never used: collections are created with ``embedding_function=None``
and every write passes embeddings. Telemetry is off.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from vptt.core.errors import ConfigError, StoreError
from vptt.stores.base import IndexEntry, PersonaStore
from vptt.stores.embedders import Embedder
from vptt.stores.records import Item

_INDEX_SUFFIX = "personas"
_MAX_BATCH = 4000


def _client(path: str | os.PathLike[str] | None, host: str | None, port: int, ssl: bool) -> Any:
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False, allow_reset=False)
    if host:
        try:
            return chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=settings)
        except Exception as exc:  # chromadb raises ValueError / ConnectionError variants
            raise StoreError(f"cannot reach the Chroma server at {host}:{port}: {exc}; start it with "
                             f"`chroma run --host {host} --port {port} --path DIR`") from exc
    if path is None:
        raise ConfigError("ChromaPersonaStore needs a path (embedded) or a host (server)")
    os.makedirs(path, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


class ChromaPersonaStore(PersonaStore):
    """Persona memory in Chroma.

    Args:
        embedder: the embedder every persona in this store is embedded with (recorded per persona).
        path: directory of an embedded Chroma database (``PersistentClient``).
        host, port, ssl: a Chroma server instead (``HttpClient``).
        prefix: collection-name prefix, so several stores can share one Chroma database.
        client: an existing Chroma client (overrides path/host).
    """

    kind = "chroma"

    def __init__(self, embedder: Embedder, *, path: str | os.PathLike[str] | None = None,
                 host: str | None = None, port: int = 8000, ssl: bool = False, prefix: str = "vptt",
                 client: Any = None, cache_size: int = 4096) -> None:
        super().__init__(embedder, cache_size=cache_size)
        if not prefix.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"prefix must be alphanumeric (with - or _), got {prefix!r}")
        self.prefix = prefix
        self.location = f"{host}:{port}" if host else str(path)
        self._client = client if client is not None else _client(path, host, port, ssl)
        self._collections: dict[str, Any] = {}
        self._index = self._collection(f"{prefix}-{_INDEX_SUFFIX}")

    def __repr__(self) -> str:
        return f"ChromaPersonaStore(location={self.location!r}, prefix={self.prefix!r}, embedder={self.embedder!r})"

    def _collection(self, name: str) -> Any:
        col = self._collections.get(name)
        if col is None:
            col = self._client.get_or_create_collection(name, embedding_function=None,
                                                        metadata={"hnsw:space": "cosine"})
            self._collections[name] = col
        return col

    def _persona_collection_name(self, persona_id: str) -> str:
        return f"{self.prefix}-p-{hashlib.sha256(persona_id.encode()).hexdigest()[:32]}"

    # -- primitives ----------------------------------------------------------------------------------------
    def _read_entry(self, persona_id: str) -> IndexEntry | None:
        got = self._index.get(ids=[persona_id], include=["embeddings", "documents", "metadatas"])
        if not got["ids"]:
            return None
        meta = got["metadatas"][0]
        return IndexEntry(persona_id=persona_id, persona_json=got["documents"][0],
                          content_hash=str(meta["content_hash"]), card_text=str(meta["card_text"]),
                          card_emb=np.asarray(got["embeddings"][0], dtype=np.float32),
                          post_hashes=json.loads(str(meta["post_hashes"])), embedder=str(meta["embedder"]))

    def _read_items(self, persona_id: str) -> list[Item]:
        col = self._collection(self._persona_collection_name(persona_id))
        got = col.get(include=["embeddings", "documents", "metadatas"])
        embs = np.asarray(got["embeddings"], dtype=np.float32) if len(got["ids"]) else []
        return [Item(id=i, kind=str(m["kind"]), post_id=str(m["post_id"]), post_hash=str(m["post_hash"]),
                     text=doc, embedding=embs[k], category=str(m["category"]), position=int(m["position"]))
                for k, (i, doc, m) in enumerate(zip(got["ids"], got["documents"], got["metadatas"]))]

    def _read_item_versions(self, persona_id: str) -> list[tuple[str, str, str]]:
        got = self._collection(self._persona_collection_name(persona_id)).get(include=["metadatas"])
        return [(i, str(m["post_id"]), str(m["post_hash"])) for i, m in zip(got["ids"], got["metadatas"])]

    def _write(self, entry: IndexEntry, add: list[Item], stale: list[str]) -> None:
        col = self._collection(self._persona_collection_name(entry.persona_id))
        for start in range(0, len(add), _MAX_BATCH):
            chunk = add[start:start + _MAX_BATCH]
            col.upsert(ids=[it.id for it in chunk], embeddings=np.stack([it.embedding for it in chunk]),
                       documents=[it.text for it in chunk], metadatas=[it.metadata() for it in chunk])
        self._index.upsert(
            ids=[entry.persona_id], embeddings=entry.card_emb[None, :], documents=[entry.persona_json],
            metadatas=[{"content_hash": entry.content_hash, "card_text": entry.card_text,
                        "post_hashes": json.dumps(entry.post_hashes), "embedder": entry.embedder,
                        "collection": col.name}])
        for start in range(0, len(stale), _MAX_BATCH):
            col.delete(ids=stale[start:start + _MAX_BATCH])

    def _delete(self, persona_id: str) -> bool:
        existed = bool(self._index.get(ids=[persona_id], include=[])["ids"])
        self._index.delete(ids=[persona_id])
        name = self._persona_collection_name(persona_id)
        self._collections.pop(name, None)
        try:
            self._client.delete_collection(name)
        except Exception:  # noqa: BLE001 - absent collection: nothing to delete
            pass
        return existed

    def _list_ids(self) -> list[str]:
        return sorted(self._index.get(include=[])["ids"])
