"""Chroma-specific behaviour: persistence, crash safety, concurrent writers, torn reads, the old layout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT, make_persona
from tests.store_helpers import Counting, Hash384, expected_vectors, n_vectors
from vptt import PersonaNotFoundError, StoreError
from vptt.stores.chroma import ChromaPersonaStore
from vptt.stores.chroma_legacy import migrate, write_legacy
from vptt.stores.records import persona_texts, text_key


def versions(pid: str = "alice") -> tuple:
    v0 = make_persona(pid, ["A wooden boat on a misty lake at dawn.", "A bowl of ramen under paper lanterns."])
    v1, v2 = v0.model_copy(deep=True), v0.model_copy(deep=True)
    v1.posts[0].caption = "Version one: a desert road at noon."
    v2.posts[0].caption = "Version two: a snowy pass at dusk."
    return v0, v1, v2


def test_persists_across_clients(embedder, tmp_path, two_personas) -> None:
    ChromaPersonaStore(embedder, path=tmp_path / "db").upsert_many(two_personas)
    reopened = ChromaPersonaStore(embedder, path=tmp_path / "db")
    assert reopened.list_ids() == ["alice", "bob"]
    assert reopened.upsert(two_personas[0]).status == "unchanged"
    assert reopened.embedded("bob").persona == two_personas[1]


def test_vectors_round_trip_bit_exact(tmp_path, embedder, two_personas) -> None:
    store = ChromaPersonaStore(embedder, path=tmp_path / "db")
    store.upsert_many(two_personas)
    emb = store.embedded("alice")
    assert np.array_equal(emb.card_emb, embedder.embed([two_personas[0].card_text()])[0])
    texts = persona_texts(two_personas[0])
    stored = store._get_vectors([text_key(embedder.name, t) for t in texts])
    assert len(stored) == len(texts) == 11  # 3 captions, 3 subjects, 3 places, 2 shared lighting terms
    for text in texts:  # the cache returns the bits that were written: Chroma must give them back unchanged
        assert np.array_equal(stored[text_key(embedder.name, text)], embedder.embed([text])[0])


def test_crash_before_commit_keeps_old_version_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    store = ChromaPersonaStore(Hash384(), path=tmp_path / "db")
    old, new, _ = versions()
    store.upsert(old)
    vectors_before = n_vectors(store)

    def crash(entries):
        raise OSError("disk full")

    monkeypatch.setattr(store, "_put_entries", crash)
    with pytest.raises(OSError):
        store.upsert(new)
    monkeypatch.undo()
    store.invalidate()
    assert store.get("alice") == old and store.embedded("alice").persona == old
    assert n_vectors(store) == vectors_before and store._get_journals() == []  # the failed write cleaned up
    assert store.upsert(new).status == "updated" and store.check().ok


_KILLED_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.store_helpers import Hash384
from tests.test_chroma_store import versions
from vptt.stores.chroma import ChromaPersonaStore
store = ChromaPersonaStore(Hash384(), path={db!r})
def hang(entries):
    Path({marker!r}).write_text("vectors written")
    time.sleep(600)
store._put_entries = hang
store.upsert(versions()[1])
"""


def test_kill_9_during_update_then_any_write_cleans_up(tmp_path) -> None:
    """Issue 12: orphans of a killed writer must not stay forever; the next write removes them."""
    db, marker = tmp_path / "db", tmp_path / "marker"
    store = ChromaPersonaStore(Hash384(), path=db)
    old, new, _ = versions()
    store.upsert(old)
    script = _KILLED_WRITER.format(root=str(ROOT), db=str(db), marker=str(marker))
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), "the writer never reached its commit"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reopened = ChromaPersonaStore(Hash384(), path=db)
    assert reopened.embedded("alice").persona == old  # the old version, whole
    report = reopened.check()
    assert report.orphan_vectors == 1 and report.stale_journals == 1
    assert reopened.upsert(old).status == "unchanged"  # an idempotent re-ingest ...
    assert reopened.check().ok and n_vectors(reopened) == expected_vectors(reopened)  # ... removed them


@pytest.mark.parametrize("backend", ["embedded", "server"])
def test_two_writers_of_different_versions_leave_no_orphans(backend, tmp_path, request, monkeypatch) -> None:
    """Issue 12: writer B planned against v0, writer A committed v1 meanwhile, then B commits v2."""
    if backend == "server":
        host, port = request.getfixturevalue("chroma_server")
        kwargs = {"host": host, "port": port, "prefix": f"two{os.getpid()}"}
    else:
        kwargs = {"path": tmp_path / "db"}
    a, b = ChromaPersonaStore(Hash384(), **kwargs), ChromaPersonaStore(Hash384(), **kwargs)
    v0, v1, v2 = versions()
    a.upsert(v0)
    original = b._put_vectors

    def a_commits_first(vectors):
        a.upsert(v1)
        original(vectors)

    monkeypatch.setattr(b, "_put_vectors", a_commits_first)
    assert b.upsert(v2).status == "updated"
    monkeypatch.undo()
    b.invalidate()
    assert b.embedded("alice").persona == v2
    assert b.check().ok and n_vectors(b) == expected_vectors(b)


@pytest.mark.parametrize("backend", ["embedded", "server"])
def test_cache_never_hides_another_writers_commit(backend, tmp_path, request) -> None:
    """The in-memory matrices are derived: a write by another process shows at the next read."""
    if backend == "server":
        host, port = request.getfixturevalue("chroma_server")
        kwargs = {"host": host, "port": port, "prefix": f"cache{os.getpid()}"}
    else:
        kwargs = {"path": tmp_path / "db"}
    reader, writer = ChromaPersonaStore(Hash384(), **kwargs), ChromaPersonaStore(Hash384(), **kwargs)
    v0, v1, _ = versions()
    writer.upsert(v0)
    assert reader.embedded("alice").persona == v0
    writer.upsert(v1)
    assert reader.embedded("alice").persona == v1
    assert np.allclose(reader.embedded("alice").caption_embs, Hash384().embed([p.caption for p in v1.posts]))
    writer.delete("alice")
    with pytest.raises(PersonaNotFoundError):
        reader.embedded("alice")


def test_torn_record_reads_are_retried(tmp_path, monkeypatch) -> None:
    """Chroma can return a record under replacement half old, half new: the seal catches it."""
    store = ChromaPersonaStore(Hash384(), path=tmp_path / "db")
    v0, v1, _ = versions()
    store.upsert(v0)
    col = store._cols["v2-personas"]
    real_get, calls = col.get, []

    def torn_once(**kwargs):
        got = real_get(**kwargs)
        calls.append(1)
        if len(calls) == 1 and got["metadatas"]:
            got["metadatas"][0] = {**got["metadatas"][0], "content_hash": "from-another-version"}
        return got

    monkeypatch.setattr(col, "get", torn_once)
    assert store.get("alice") == v0 and len(calls) == 2


def test_collections_have_no_embedding_function(embedder, tmp_path) -> None:
    store = ChromaPersonaStore(embedder, path=tmp_path / "db")
    store.upsert(make_persona("solo", ["A quiet harbour at dawn."]))
    names = {col.name for col in store._client.list_collections()}
    assert names == {"vptt-v2-personas", "vptt-v2-vectors", "vptt-v2-journal"}  # no collection per persona
    for col in store._client.list_collections():
        assert col.configuration.get("embedding_function") is None


def test_old_layout_is_detected_and_migrated_without_embedding(tmp_path) -> None:
    import chromadb
    from chromadb.config import Settings

    embedder = Hash384()
    personas = [make_persona(f"p{k}", [f"Caption {k} about a harbour.", "A shared caption."]) for k in range(3)]
    client = chromadb.PersistentClient(path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False))
    write_legacy(client, "vptt", personas, embedder)
    del client
    with pytest.raises(StoreError, match="old layout.*vptt store migrate"):
        ChromaPersonaStore(embedder, path=tmp_path / "db")
    counting = Counting(embedder)
    store = ChromaPersonaStore(counting, path=tmp_path / "db", allow_legacy=True)
    assert store.check().notes and not store.check().ok
    report = migrate(store)
    assert sorted(report.migrated) == ["p0", "p1", "p2"] and report.texts_reembedded == 0 and counting.texts == []
    assert report.old_collections_deleted == 4 and store.legacy is None
    reopened = ChromaPersonaStore(embedder, path=tmp_path / "db")
    for p in personas:
        emb = reopened.embedded(p.persona_id)
        assert emb.persona == p
        assert np.allclose(emb.caption_embs, embedder.embed([x.caption for x in p.posts]), atol=1e-6)
    assert reopened.check().ok and n_vectors(reopened) == expected_vectors(reopened)
    assert migrate(reopened).migrated == []  # nothing left to do
