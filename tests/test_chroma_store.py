"""Chroma-specific behaviour: persistence, crash safety, no default embedding function."""

from __future__ import annotations

import pytest

from tests.conftest import make_persona
from vptt.stores.chroma import ChromaPersonaStore


def test_persists_across_clients(embedder, tmp_path, two_personas) -> None:
    ChromaPersonaStore(embedder, path=tmp_path / "db").upsert_many(two_personas)
    reopened = ChromaPersonaStore(embedder, path=tmp_path / "db")
    assert reopened.list_ids() == ["alice", "bob"]
    assert reopened.upsert(two_personas[0]).status == "unchanged"
    assert reopened.embedded("bob").persona == two_personas[1]


def test_crash_before_commit_keeps_old_version_readable(embedder, tmp_path, two_personas, monkeypatch) -> None:
    store = ChromaPersonaStore(embedder, path=tmp_path / "db")
    old = two_personas[0]
    store.upsert(old)
    new = old.model_copy(deep=True)
    new.posts[0].caption = "A completely new caption about a desert."

    def crash(**kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store._index, "upsert", crash)
    with pytest.raises(OSError):
        store.upsert(new)
    monkeypatch.undo()
    assert len(store._read_items("alice")) == 15 + 5  # the new post version was added, never committed
    store.invalidate()
    assert store.get("alice") == old
    assert store.embedded("alice").persona.posts[0].caption == old.posts[0].caption
    assert store.upsert(new).status == "updated"
    assert len(store._read_items("alice")) == 15  # superseded items cleaned up by the next write


def test_collections_have_no_embedding_function(embedder, tmp_path) -> None:
    store = ChromaPersonaStore(embedder, path=tmp_path / "db")
    store.upsert(make_persona("solo", ["A quiet harbour at dawn."]))
    for col in store._client.list_collections():
        assert col.configuration.get("embedding_function") is None
