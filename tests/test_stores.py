"""One suite, every backend: in-memory, embedded Chroma, and a real `chroma run` server."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_persona
from vptt import PersonaNotFoundError, Post, StoreError
from vptt.stores.embedders import Embedder


def _n_items(store, pid: str) -> int:
    return len(store._read_items(pid))


def test_upsert_get_and_matrices(store, two_personas) -> None:
    res = store.upsert_many(two_personas)
    assert [r.status for r in res] == ["created", "created"]
    assert store.list_ids() == ["alice", "bob"] and len(store) == 2 and "alice" in store
    assert store.get("alice") == two_personas[0]
    emb = store.embedded("alice")
    assert emb.caption_embs.shape == (3, 384)
    assert len(emb.elements) == 3 * 4
    assert np.allclose(np.linalg.norm(emb.caption_embs, axis=1), 1, atol=1e-5)
    direct = store.embedder.embed([two_personas[0].posts[1].caption])[0]
    assert np.allclose(emb.caption_embs[1], direct, atol=1e-6)
    assert np.allclose(emb.card_emb, store.embedder.embed([two_personas[0].card_text()])[0], atol=1e-6)


def test_reingest_is_idempotent(store, two_personas) -> None:
    store.upsert_many(two_personas)
    before = _n_items(store, "alice")
    again = store.upsert_many(two_personas)
    assert [r.status for r in again] == ["unchanged", "unchanged"]
    assert all(r.texts_embedded == 0 for r in again)
    assert _n_items(store, "alice") == before and store.list_ids() == ["alice", "bob"]


def test_isolation_between_near_identical_personas(store) -> None:
    cap = "A red kayak on a calm alpine lake under a clear morning sky."
    a = make_persona("twin-a", [cap, cap.replace("red", "blue")])
    b = make_persona("twin-b", [cap, cap.replace("red", "green")])
    store.upsert_many([a, b])
    ea, eb = store.embedded("twin-a"), store.embedded("twin-b")
    assert {p.post_id for p in ea.persona.posts} == {"twin-a-00", "twin-a-01"}
    assert all(t.startswith("twin-a") for t in ea.elements.texts if "subject" in t)
    assert all(t.startswith("twin-b") for t in eb.elements.texts if "subject" in t)
    assert ea.caption_embs.shape[0] == 2 and eb.caption_embs.shape[0] == 2
    store.delete("twin-a")
    assert store.embedded("twin-b").persona == b


class Counting(Embedder):
    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dim, self.texts = inner, inner.name, inner.dim, []

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed(texts)


def test_add_and_remove_post_touch_only_that_post(store, two_personas) -> None:
    counting = Counting(store.embedder)
    store.embedder = counting
    store.upsert(two_personas[0])
    counting.texts.clear()
    before = _n_items(store, "alice")
    post = Post(post_id="new", caption="A lighthouse in a storm at night.",
                elements={"lighting": ["lighthouse beam"], "environment": ["stormy sea"]})
    res = store.add_post("alice", post)
    assert res.status == "updated" and res.posts_added == ["new"]
    assert sorted(counting.texts) == sorted([post.caption, "lighthouse beam", "stormy sea"])
    assert _n_items(store, "alice") == before + 3
    assert store.embedded("alice").caption_embs.shape[0] == 4
    counting.texts.clear()
    res = store.remove_post("alice", "alice-00")
    assert res.posts_removed == ["alice-00"] and counting.texts == []
    assert _n_items(store, "alice") == before + 3 - 5  # caption + 4 elements
    assert [p.post_id for p in store.get("alice").posts] == ["alice-01", "alice-02", "new"]
    with pytest.raises(KeyError):
        store.remove_post("alice", "nope")


def test_updated_post_leaves_no_stale_items(store, two_personas) -> None:
    store.upsert(two_personas[0])
    before = _n_items(store, "alice")
    changed = two_personas[0].model_copy(deep=True)
    changed.posts[0].caption = "An entirely different caption about snow."
    res = store.upsert(changed)
    assert res.posts_updated == ["alice-00"] and res.texts_embedded >= 1
    assert _n_items(store, "alice") == before
    assert store.embedded("alice").persona.posts[0].caption.startswith("An entirely")


def test_delete_and_missing(store, two_personas) -> None:
    store.upsert_many(two_personas)
    assert store.delete("alice") is True and store.delete("alice") is False
    assert store.list_ids() == ["bob"]
    with pytest.raises(PersonaNotFoundError) as ei:
        store.get("alice")
    assert isinstance(ei.value, KeyError) and "vptt personas list" in str(ei.value)
    with pytest.raises(PersonaNotFoundError):
        store.embedded("alice")


def test_embedding_failure_writes_nothing(store, two_personas) -> None:
    class Broken(Embedder):
        name, dim = store.embedder.name, 384

        def _embed(self, texts: list[str]) -> np.ndarray:
            raise RuntimeError("endpoint down")

    store.upsert(two_personas[1])
    store.embedder = Broken()
    with pytest.raises(RuntimeError, match="endpoint down"):
        store.upsert_many(two_personas)
    assert store.list_ids() == ["bob"]


def test_embedder_mismatch_is_refused(store, two_personas) -> None:
    store.upsert(two_personas[0])

    class Other(Embedder):
        name, dim = "other-model", 384

        def _embed(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 384))

    store.embedder = Other()
    store.invalidate()
    with pytest.raises(StoreError, match="embedded with"):
        store.embedded("alice")


def test_hot_path_reads_backend_once(store, two_personas, monkeypatch) -> None:
    store.upsert(two_personas[0])
    calls = []
    original = store._read_items
    monkeypatch.setattr(store, "_read_items", lambda pid: calls.append(pid) or original(pid))
    first = store.embedded("alice")
    assert store.embedded("alice") is first and calls == ["alice"]
    store.add_post("alice", Post(post_id="z", caption="A cat."))
    assert store.embedded("alice").caption_embs.shape[0] == 4  # cache invalidated by the write
