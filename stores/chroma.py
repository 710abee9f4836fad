"""Chroma persona store: embedded ``PersistentClient`` by default, a Chroma server through ``HttpClient``.

Layout (three collections per prefix, see ``docs/storage.md``):

* ``<prefix>-v2-personas``: one record per persona, id = persona id. Its embedding is the persona-card vector;
  its metadata holds the persona JSON (zlib + base64), content and post hashes, the embedder, and ``keys``:
  the vocabulary keys of its captions and elements (indexed, so "does anyone use this vector?" is one query).
* ``<prefix>-v2-vectors``: the shared vocabulary, one record per unique (embedder, text), id =
  :func:`~vptt.stores.records.text_key`; the embedding only (texts live in the persona records).
* ``<prefix>-v2-journal``: writers' journals (see :mod:`vptt.stores.base`).

A cold read is two ``get`` calls by id (entry, then its ~100 vectors), whatever the number of personas. Only
``get`` by id is ever used, so the collections' HNSW graphs are configured for cheap writes. Chroma's default
embedding function is never used: collections have ``embedding_function=None`` and every write passes vectors.
Telemetry is off. The layout of vptt 0.x (one collection per persona) is detected and migrated by
:mod:`vptt.stores.chroma_legacy` (``vptt store migrate``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vptt.core.errors import ConfigError, StoreError
from vptt.stores._chroma_client import open_embedded, open_server, translated
from vptt.stores.base import IndexEntry, Journal, PersonaStore
from vptt.stores.embedders import Embedder

LAYOUT = 2
_PERSONAS, _VECTORS, _JOURNAL = "v2-personas", "v2-vectors", "v2-journal"
_UNINDEXED = ("persona_z", "post_hashes", "content_hash", "embedder", "seal", "journal_keys", "host")
_PAGE = 500
_KEY_PAGE = 20000
_TORN_RETRIES = 20


def _schema(unindexed: Sequence[str] = ()) -> Any:
    """No full-text index, no inverted index on bulky metadata, a write-cheap HNSW graph (reads are by id)."""
    from chromadb import FtsIndexConfig, HnswIndexConfig, Schema, StringInvertedIndexConfig, VectorIndexConfig

    schema = Schema()
    schema.delete_index(config=FtsIndexConfig(), key="#document")
    for key in unindexed:
        schema.delete_index(config=StringInvertedIndexConfig(), key=key)
    schema.create_index(config=VectorIndexConfig(space="ip", embedding_function=None,
                                                 hnsw=HnswIndexConfig(ef_construction=16, max_neighbors=4)))
    return schema


def _racing_delete(get: Any, **kwargs: Any) -> Any:
    """``get(**kwargs)``, again if Chroma stumbled on ids deleted while it read them ("Error finding id")."""
    for attempt in range(3):
        try:
            return get(**kwargs)
        except Exception as exc:
            if "error finding id" not in str(exc).lower() or attempt == 2:
                raise
            time.sleep(0.005)
    raise AssertionError("unreachable")  # pragma: no cover


def pack_persona(persona_json: str) -> str:
    """Persona JSON as stored in metadata: zlib, then base64 (a tenth of the bytes Chroma must write)."""
    return base64.b64encode(zlib.compress(persona_json.encode("utf-8"), 3)).decode("ascii")


def unpack_persona(packed: str) -> str:
    return zlib.decompress(base64.b64decode(packed)).decode("utf-8")


class ChromaPersonaStore(PersonaStore):
    """Persona memory in Chroma.

    Args:
        embedder: the embedder every persona in this store is embedded with (recorded per persona).
        path: directory of an embedded Chroma database (``PersistentClient``). A directory this process cannot
            write is opened read-only (listing and reading work; writes raise ``StoreError``).
        host, port, ssl: a Chroma server instead (``HttpClient``).
        prefix: collection-name prefix, so several stores can share one Chroma database.
        client: an existing Chroma client (overrides path/host).
        timeout_s: seconds a Chroma server may take to answer one request.
        cache_size, batch_texts, lease_s, verify_cache: see :class:`~vptt.stores.base.PersonaStore`.
        allow_legacy: open a database that still holds the old per-persona layout (``vptt store migrate`` does).

    Raises:
        StoreError: the server cannot be reached, the database is damaged or is a file, or it holds the old
            per-persona layout (the message says how to migrate it).
    """

    kind = "chroma"

    def __init__(self, embedder: Embedder, *, path: str | os.PathLike[str] | None = None,
                 host: str | None = None, port: int = 8000, ssl: bool = False, prefix: str = "vptt",
                 client: Any = None, timeout_s: float = 60.0, cache_size: int = 4096, batch_texts: int = 4096,
                 lease_s: float = 600.0, verify_cache: bool = True, allow_legacy: bool = False) -> None:
        super().__init__(embedder, cache_size=cache_size, batch_texts=batch_texts, lease_s=lease_s,
                         verify_cache=verify_cache)
        if not prefix.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"prefix must be alphanumeric (with - or _), got {prefix!r}")
        if client is None and not host and path is None:
            raise ConfigError("ChromaPersonaStore needs a path (embedded) or a host (server)")
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._server = bool(host) and client is None
        self.path = Path(path).expanduser() if path is not None and not host else None
        self._where = f"{host}:{port}" if host else str(self.path or "a given client")
        if client is not None:
            self._client = client
        elif host:
            self._client = open_server(host, port, ssl, timeout_s)
        else:
            self._client, self.read_only, _ = open_embedded(path)  # type: ignore[arg-type]
        with self._guard("opening the collections"):
            self._open_collections(allow_legacy)

    @property
    def location(self) -> str:
        if self._server:
            where = f"the Chroma server at {self._where}"
        elif self.path is not None:
            where = f"the Chroma database at {self.path}"
        else:
            where = "a Chroma client"
        return f"{where} (prefix {self.prefix!r}{', read-only' if self.read_only else ''})"

    def __repr__(self) -> str:
        return f"ChromaPersonaStore(location={self._where!r}, prefix={self.prefix!r}, embedder={self.embedder!r})"

    def _guard(self, doing: str) -> Any:
        return translated(self._where, doing, server=self._server, path=self.path, timeout=self.timeout_s)

    def _open_collections(self, allow_legacy: bool) -> None:
        from vptt.stores.chroma_legacy import legacy_index

        # a read-only store is a private copy, so creating absent collections there changes nothing real
        self._cols = {s: self._get_or_create(f"{self.prefix}-{s}", s) for s in (_PERSONAS, _VECTORS, _JOURNAL)}
        self.legacy = legacy_index(self._client, self.prefix)
        if self.legacy is not None and not allow_legacy:
            hint = ("; it is read-only here, so copy the directory somewhere writable first" if self.read_only
                    else "")
            raise StoreError(f"{self.location} holds {self.legacy.count()} persona(s) in the old layout (one "
                             "collection per persona); convert it once with `vptt store migrate` (with the same "
                             f"--data-dir / --chroma-host options): it keeps every embedding and embeds nothing{hint}")

    def _get_or_create(self, name: str, part: str) -> Any:
        unindexed = () if part == _VECTORS else _UNINDEXED
        return self._client.get_or_create_collection(name, embedding_function=None, schema=_schema(unindexed))

    def layout_notes(self) -> list[str]:
        """Problems of the layout itself (an unmigrated old layout), for :meth:`check`."""
        if self.legacy is not None:
            return [f"{self.legacy.count()} persona(s) still in the old per-persona layout; run `vptt store migrate`"]
        return []

    def _chunks(self, seq: Sequence[Any], size: int | None = None) -> Iterator[Sequence[Any]]:
        size = size or self._max_batch()
        for start in range(0, len(seq), size):
            yield seq[start:start + size]

    def _max_batch(self) -> int:
        if not hasattr(self, "_batch_limit"):
            try:
                self._batch_limit = min(5000, int(self._client.get_max_batch_size()))
            except Exception:  # noqa: BLE001 - older servers: a safe default
                self._batch_limit = 1000
        return self._batch_limit

    # -- index entries -------------------------------------------------------------------------------------
    @staticmethod
    def _seal(meta: dict[str, Any], card: np.ndarray) -> str:
        """A checksum over a record's fields: Chroma may return a record being replaced half old, half new."""
        h = hashlib.sha256()
        for part in (meta["persona_z"], meta["content_hash"], meta["post_hashes"], meta["embedder"],
                     " ".join(meta.get("keys") or ())):
            h.update(str(part).encode("utf-8") + b"\x00")
        h.update(np.asarray(card, dtype="<f4").tobytes())
        return h.hexdigest()[:32]

    @classmethod
    def _entry(cls, pid: str, meta: dict[str, Any], emb: Any) -> IndexEntry | None:
        """The entry of a record; None for a torn read (fields of two versions)."""
        if meta.get("layout") != LAYOUT:
            raise StoreError(f"persona record {pid!r} has layout {meta.get('layout')!r}, expected {LAYOUT}")
        card = np.asarray(emb, dtype=np.float32)
        if meta.get("seal") != cls._seal(meta, card):
            return None
        return IndexEntry(persona_id=pid, persona_json=unpack_persona(str(meta["persona_z"])),
                          content_hash=str(meta["content_hash"]), card_emb=card,
                          post_hashes=json.loads(str(meta["post_hashes"])), embedder=str(meta["embedder"]),
                          keys=tuple(meta.get("keys") or ()))

    @classmethod
    def _meta(cls, entry: IndexEntry) -> dict[str, Any]:
        meta: dict[str, Any] = {"layout": LAYOUT, "persona_z": pack_persona(entry.persona_json),
                                "content_hash": entry.content_hash, "post_hashes": json.dumps(entry.post_hashes),
                                "embedder": entry.embedder}
        if entry.keys:  # Chroma refuses empty lists
            meta["keys"] = list(entry.keys)
        meta["seal"] = cls._seal(meta, entry.card_emb)
        return meta

    def _get_entries(self, ids: Sequence[str]) -> dict[str, IndexEntry]:
        out: dict[str, IndexEntry] = {}
        todo = list(dict.fromkeys(ids))
        for attempt in range(_TORN_RETRIES):
            torn = []
            with self._guard("reading persona records"):
                for chunk in self._chunks(todo, _PAGE):
                    got = _racing_delete(self._cols[_PERSONAS].get, ids=list(chunk),
                                         include=["metadatas", "embeddings"])
                    for i, pid in enumerate(got["ids"]):
                        entry = self._entry(pid, got["metadatas"][i], got["embeddings"][i])
                        if entry is None:
                            torn.append(pid)
                        else:
                            out[pid] = entry
            if not torn:
                return out
            todo = torn
            time.sleep(0.005 * (attempt + 1))  # a concurrent commit of these records is under way
        raise StoreError(f"{self.location}: the records of {todo[:3]} stayed inconsistent over {_TORN_RETRIES} "
                         "reads; if no write is running, re-ingest these personas")

    def _put_entries(self, entries: Sequence[IndexEntry]) -> None:
        with self._guard("committing persona records"):
            for chunk in self._chunks(list(entries), _PAGE):
                self._cols[_PERSONAS].upsert(ids=[e.persona_id for e in chunk],
                                             embeddings=np.stack([e.card_emb for e in chunk]),
                                             metadatas=[self._meta(e) for e in chunk],
                                             documents=[e.content_hash for e in chunk])  # the version, cheap to read

    def _get_versions(self, ids: Sequence[str]) -> dict[str, str]:
        with self._guard("reading persona versions"):
            got = _racing_delete(self._cols[_PERSONAS].get, ids=list(dict.fromkeys(ids)), include=["documents"])
        return dict(zip(got["ids"], got["documents"]))

    def _delete_entries(self, ids: Sequence[str]) -> None:
        with self._guard("deleting persona records"):
            for chunk in self._chunks(list(ids)):
                self._cols[_PERSONAS].delete(ids=list(chunk))

    def _list_ids(self) -> list[str]:
        with self._guard("listing personas"):
            return sorted(self._cols[_PERSONAS].get(include=[])["ids"])

    def _scan_entries(self) -> Iterator[list[IndexEntry]]:
        offset = 0
        while True:
            with self._guard("scanning persona records"):
                got = self._cols[_PERSONAS].get(include=["metadatas", "embeddings"], limit=_PAGE, offset=offset)
            if not got["ids"]:
                return
            page = [self._entry(pid, got["metadatas"][i], got["embeddings"][i]) for i, pid in enumerate(got["ids"])]
            torn = [pid for pid, e in zip(got["ids"], page) if e is None]
            yield [e for e in page if e is not None] + list(self._get_entries(torn).values())
            offset += len(got["ids"])

    # -- vocabulary ----------------------------------------------------------------------------------------
    def _get_vectors(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._guard("reading vectors"):
            for chunk in self._chunks(list(dict.fromkeys(keys))):
                got = _racing_delete(self._cols[_VECTORS].get, ids=list(chunk), include=["embeddings"])
                if len(got["ids"]):
                    out.update(zip(got["ids"], np.asarray(got["embeddings"], dtype=np.float32)))
        return out

    def _has_vectors(self, keys: Sequence[str]) -> set[str]:
        out: set[str] = set()
        with self._guard("looking up vectors"):
            for chunk in self._chunks(list(dict.fromkeys(keys))):
                out.update(self._cols[_VECTORS].get(ids=list(chunk), include=[])["ids"])
        return out

    def _put_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        keys = list(vectors)
        with self._guard("writing vectors"):
            for chunk in self._chunks(keys):
                self._cols[_VECTORS].upsert(ids=list(chunk), embeddings=np.stack([vectors[k] for k in chunk]))

    def _delete_vectors(self, keys: Sequence[str]) -> None:
        with self._guard("deleting vectors"):
            for chunk in self._chunks(list(keys)):
                self._cols[_VECTORS].delete(ids=list(chunk))

    def _scan_vector_keys(self) -> Iterator[list[str]]:
        offset = 0
        while True:
            with self._guard("scanning vectors"):
                ids = self._cols[_VECTORS].get(include=[], limit=_KEY_PAGE, offset=offset)["ids"]
            if not ids:
                return
            yield list(ids)
            offset += len(ids)

    def _referenced(self, keys: Sequence[str]) -> set[str]:
        out = set()
        with self._guard("checking vector references"):
            for key in keys:
                if self._cols[_PERSONAS].get(where={"keys": {"$contains": key}}, limit=1, include=[])["ids"]:
                    out.add(key)
        return out

    # -- journals ------------------------------------------------------------------------------------------
    def _put_journal(self, journal: Journal) -> None:
        packed = base64.b64encode(zlib.compress(" ".join(journal.keys).encode("ascii"), 6)).decode("ascii")
        with self._guard("writing a journal"):
            self._cols[_JOURNAL].upsert(ids=[journal.journal_id], embeddings=np.ones((1, 1), np.float32),
                                        metadatas=[{"journal_keys": packed, "host": journal.host,
                                                    "pid": journal.pid, "expires": journal.expires}])

    def _get_journals(self) -> list[Journal]:
        with self._guard("reading journals"):
            got = self._cols[_JOURNAL].get(include=["metadatas"])
        out = []
        for jid, meta in zip(got["ids"], got["metadatas"]):
            keys = zlib.decompress(base64.b64decode(str(meta["journal_keys"]))).decode("ascii").split()
            out.append(Journal(jid, tuple(keys), str(meta["host"]), int(meta["pid"]), float(meta["expires"])))
        return out

    def _delete_journal(self, journal_id: str) -> None:
        with self._guard("deleting a journal"):
            self._cols[_JOURNAL].delete(ids=[journal_id])
