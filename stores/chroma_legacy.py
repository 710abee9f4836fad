"""The Chroma layout of vptt 0.x (one collection per persona): detection, migration, and a writer for tests.

Old layout: ``<prefix>-personas`` (one record per persona: persona JSON as document, card vector, metadata with
``content_hash``, ``card_text``, ``post_hashes``, ``embedder`` and the name of its collection) and
``<prefix>-p-<sha256(persona id)[:32]>`` per persona (one record per caption and per element occurrence, ids
``c|post|hash`` and ``e|post|hash|category|position``).

:func:`migrate` converts it in place into the shared layout of :mod:`vptt.stores.chroma` without embedding
anything: the old vectors are looked up by text. It is resumable (personas already converted are skipped) and
deletes the old collections only once every persona is converted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vptt.core.models import Persona
from vptt.stores.embedders import Embedder
from vptt.stores.records import post_texts

if TYPE_CHECKING:
    from vptt.stores.chroma import ChromaPersonaStore

_PAGE = 64


def legacy_index(client: Any, prefix: str) -> Any | None:
    """The old layout's index collection of ``prefix``, if it exists and holds personas."""
    try:
        col = client.get_collection(f"{prefix}-personas", embedding_function=None)
    except Exception:  # noqa: BLE001 - chromadb raises NotFoundError (ValueError in older versions)
        return None
    return col if col.count() else None


def persona_collection_name(prefix: str, persona_id: str) -> str:
    return f"{prefix}-p-{hashlib.sha256(persona_id.encode()).hexdigest()[:32]}"


@dataclass
class MigrationReport:
    """What :func:`migrate` did."""

    location: str
    migrated: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # persona id -> why
    texts_reembedded: int = 0
    old_collections_deleted: int = 0


class _LookupEngine:
    """Serves vectors from the old layout by text; embeds (and counts) only what it lacks."""

    def __init__(self, embedder: Embedder, vectors: dict[str, np.ndarray]) -> None:
        self.embedder, self.name, self.dim, self.vectors = embedder, embedder.name, embedder.dim, vectors
        self.embedded = 0

    def embed_stream(self, chunks: Iterable[list[str]]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            lacking = [t for t in dict.fromkeys(chunk) if t not in self.vectors]
            if lacking:
                self.vectors.update(zip(lacking, self.embedder.embed(lacking)))
                self.embedded += len(lacking)
            yield np.stack([self.vectors[t] for t in chunk])


def _read_page(client: Any, index: Any, offset: int) -> tuple[list[Persona], dict[str, np.ndarray], list[str],
                                                                   dict[str, str]]:
    got = index.get(include=["documents", "metadatas", "embeddings"], limit=_PAGE, offset=offset)
    personas, vectors, names, embedders = [], {}, [], {}
    for i, pid in enumerate(got["ids"]):
        meta = got["metadatas"][i]
        persona = Persona.model_validate_json(got["documents"][i])
        personas.append(persona)
        embedders[pid] = str(meta.get("embedder", ""))
        vectors[persona.card_text()] = np.asarray(got["embeddings"][i], np.float32)
        name = str(meta.get("collection") or "")
        names.append(name)
        if not name:
            continue
        hashes = json.loads(str(meta.get("post_hashes", "{}")))
        try:
            items = client.get_collection(name, embedding_function=None).get(include=["documents", "metadatas",
                                                                                   "embeddings"])
        except Exception:  # noqa: BLE001 - a persona whose collection is gone: its texts get embedded
            continue
        for k, (doc, m) in enumerate(zip(items["documents"], items["metadatas"])):
            if hashes.get(m.get("post_id")) == m.get("post_hash"):
                vectors.setdefault(doc, np.asarray(items["embeddings"][k], np.float32))
    return personas, vectors, names, embedders


def migrate(store: ChromaPersonaStore, *, keep_old: bool = False,
            progress: Callable[[int], None] | None = None) -> MigrationReport:
    """Convert the old layout of ``store``'s prefix into the shared layout (see the module docstring).

    Personas embedded with another embedder than ``store.embedder`` are left in place and reported.
    """
    report = MigrationReport(store.location)
    index = legacy_index(store._client, store.prefix)
    if index is None:
        return report
    names: list[str] = []
    offset = 0
    while True:
        with store._guard("reading the old layout"):
            personas, vectors, page_names, embedders = _read_page(store._client, index, offset)
        if not personas:
            break
        offset += len(personas)
        names.extend(page_names)
        todo = []
        for p in personas:
            if embedders[p.persona_id] != store.embedder.name:
                report.skipped[p.persona_id] = (f"embedded with {embedders[p.persona_id]!r}, not "
                                                f"{store.embedder.name!r}")
            else:
                todo.append(p)
        engine = _LookupEngine(store.embedder, vectors)
        for res in store.upsert_many(todo, engine=engine):
            (report.already if res.status == "unchanged" else report.migrated).append(res.persona_id)
        report.texts_reembedded += engine.embedded
        if progress is not None:
            progress(len(personas))
    if not report.skipped and not keep_old:
        report.old_collections_deleted = _drop_old(store, names)
    store.legacy = legacy_index(store._client, store.prefix)
    return report


def _drop_old(store: ChromaPersonaStore, names: Sequence[str]) -> int:
    dropped = 0
    with store._guard("deleting the old layout"):
        for name in [*dict.fromkeys(n for n in names if n), f"{store.prefix}-personas"]:
            try:
                store._client.delete_collection(name)
                dropped += 1
            except Exception:  # noqa: BLE001 - already gone
                pass
    return dropped


def write_legacy(client: Any, prefix: str, personas: Sequence[Persona], embedder: Embedder) -> None:
    """Write personas in the old layout (for tests of :func:`migrate` and for layout benchmarks)."""
    index = client.get_or_create_collection(f"{prefix}-personas", embedding_function=None,
                                            metadata={"hnsw:space": "cosine"})
    for persona in personas:
        texts = [persona.card_text(), *dict.fromkeys(t for post in persona.posts for t in post_texts(post))]
        vec = dict(zip(texts, embedder.embed(texts)))
        col = client.get_or_create_collection(persona_collection_name(prefix, persona.persona_id),
                                              embedding_function=None, metadata={"hnsw:space": "cosine"})
        ids, embs, docs, metas = [], [], [], []
        for post in persona.posts:
            h = post.content_hash()
            ids.append(f"c|{post.post_id}|{h}")
            embs.append(vec[post.caption])
            docs.append(post.caption)
            metas.append({"kind": "caption", "post_id": post.post_id, "post_hash": h, "category": "", "position": 0})
            for cat, items in post.elements.items():
                for j, text in enumerate(items):
                    ids.append(f"e|{post.post_id}|{h}|{cat}|{j}")
                    embs.append(vec[text])
                    docs.append(text)
                    metas.append({"kind": "element", "post_id": post.post_id, "post_hash": h, "category": cat,
                                  "position": j})
        for start in range(0, len(ids), 4000):
            col.upsert(ids=ids[start:start + 4000], embeddings=np.stack(embs[start:start + 4000]),
                       documents=docs[start:start + 4000], metadatas=metas[start:start + 4000])
        index.upsert(ids=[persona.persona_id], embeddings=vec[persona.card_text()][None, :],
                     documents=[json.dumps(persona.model_dump(mode="json"), ensure_ascii=False)],
                     metadatas=[{"content_hash": persona.content_hash(), "card_text": persona.card_text(),
                                 "post_hashes": json.dumps({p.post_id: p.content_hash() for p in persona.posts}),
                                 "embedder": embedder.name, "collection": col.name}])
