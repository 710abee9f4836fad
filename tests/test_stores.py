"""One suite, every backend: in-memory, embedded Chroma, and a real `chroma run` server."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.conftest import make_persona
from tests.store_helpers import Counting, Hash384, expected_vectors, n_vectors
from vptt import PersonaNotFoundError, Post, StoreError
from vptt.stores.embedders import Embedder
from vptt.stores.records import persona_texts


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
    rows = [(int(i), c, int(j)) for i, c, j in zip(emb.elements.post_idx, emb.elements.category,
                                                   emb.elements.position)]
    assert rows == sorted(rows)  # post, then category name, then position
    for m, text in enumerate(emb.elements.texts):
        assert np.allclose(emb.elements.embs[m], store.embedder.embed([text])[0], atol=1e-6)


def test_each_text_embedded_once_and_stored_once(store, two_personas) -> None:
    counting = Counting(store.embedder)
    store.embedder = counting
    store.upsert_many(two_personas)
    vocab = persona_texts(two_personas[0]) + persona_texts(two_personas[1])
    assert len(counting.texts) == len(set(counting.texts))  # "warm lantern glow" (in both) embedded once
    assert set(counting.texts) == set(vocab) | {p.card_text() for p in two_personas}
    assert n_vectors(store) == len(set(vocab)) == expected_vectors(store)
    a, b = store.embedded("alice"), store.embedded("bob")
    glow_a = a.elements.embs[a.elements.texts.index("warm lantern glow")]
    assert np.array_equal(glow_a, b.elements.embs[b.elements.texts.index("warm lantern glow")])


def test_reingest_is_idempotent(store, two_personas) -> None:
    store.upsert_many(two_personas)
    before = n_vectors(store)
    again = store.upsert_many(two_personas)
    assert [r.status for r in again] == ["unchanged", "unchanged"]
    assert all(r.texts_embedded == 0 for r in again)
    assert n_vectors(store) == before and store.list_ids() == ["alice", "bob"]


TRICKY_IDS = ["../../x", "/etc/passwd", "a b", "a_b", "a/b", "A_B", "ünï cødé", "x" * 300, "%2e%2e", "a\\b",
              "'; DROP TABLE x; --", "alice", "Alice", "c|p|1", "p-00"]


def test_isolation_with_tricky_ids_and_shared_texts(store) -> None:
    store.embedder = Hash384()
    shared = "A red kayak on a calm alpine lake under a clear morning sky."
    personas = [make_persona(pid, [shared, f"Photo {k} of street {k} at night."]) for k, pid in enumerate(TRICKY_IDS)]
    store.upsert_many(personas)
    assert store.list_ids() == sorted(TRICKY_IDS)
    for persona in personas:
        emb = store.embedded(persona.persona_id)
        assert emb.persona == persona
        assert set(emb.elements.texts) == set(persona_texts(persona)) - {p.caption for p in persona.posts}
        want = store.embedder.embed([p.caption for p in persona.posts])
        assert np.allclose(emb.caption_embs, want, atol=1e-6)
    store.delete("alice")
    assert store.embedded("Alice").persona == personas[TRICKY_IDS.index("Alice")]
    assert np.allclose(store.embedded("a b").caption_embs[0], store.embedder.embed([shared])[0], atol=1e-6)
    assert n_vectors(store) == expected_vectors(store)


def test_add_and_remove_post_touch_only_that_post(store, two_personas) -> None:
    counting = Counting(store.embedder)
    store.embedder = counting
    store.upsert(two_personas[0])
    counting.texts.clear()
    post = Post(post_id="new", caption="A lighthouse in a storm at night.",
                elements={"lighting": ["lighthouse beam", "soft dusk"], "environment": ["stormy sea"]})
    res = store.add_post("alice", post)
    assert res.status == "updated" and res.posts_added == ["new"]
    assert sorted(counting.texts) == sorted([post.caption, "lighthouse beam", "stormy sea"])  # "soft dusk" is stored
    assert store.embedded("alice").caption_embs.shape[0] == 4
    assert n_vectors(store) == expected_vectors(store)
    counting.texts.clear()
    res = store.remove_post("alice", "alice-00")
    assert res.posts_removed == ["alice-00"] and counting.texts == []
    assert [p.post_id for p in store.get("alice").posts] == ["alice-01", "alice-02", "new"]
    assert n_vectors(store) == expected_vectors(store)  # the removed post's own vectors are gone
    with pytest.raises(KeyError):
        store.remove_post("alice", "nope")


def test_updated_post_leaves_no_stale_vectors_and_keeps_shared_ones(store, two_personas) -> None:
    store.upsert_many(two_personas)
    changed = two_personas[0].model_copy(deep=True)
    changed.posts[0].caption = "An entirely different caption about snow."
    changed.posts[0].elements["environment"] = ["snowfield"]  # "place 0" is still bob's
    res = store.upsert(changed)
    assert res.posts_updated == ["alice-00"] and res.texts_embedded == 2
    assert n_vectors(store) == expected_vectors(store)
    assert store.embedded("alice").persona.posts[0].caption.startswith("An entirely")
    assert "place 0" in store.embedded("bob").elements.texts


def test_delete_and_missing_name_the_store(store, two_personas) -> None:
    store.upsert_many(two_personas)
    assert store.delete("alice") is True and store.delete("alice") is False
    assert store.list_ids() == ["bob"]
    assert n_vectors(store) == expected_vectors(store)
    with pytest.raises(PersonaNotFoundError) as ei:
        store.get("alice")
    assert isinstance(ei.value, KeyError) and "vptt personas list" in str(ei.value)
    assert store.location in str(ei.value) and "1 persona there" in str(ei.value)
    with pytest.raises(PersonaNotFoundError):
        store.embedded("alice")


def test_embedding_failure_writes_nothing(store, two_personas) -> None:
    class Broken(Embedder):
        name, dim = store.embedder.name, 384

        def _embed(self, texts: list[str]) -> np.ndarray:
            raise RuntimeError("endpoint down")

    store.upsert(two_personas[1])
    before = n_vectors(store)
    store.embedder = Broken()
    with pytest.raises(RuntimeError, match="endpoint down"):
        store.upsert_many(two_personas)
    assert store.list_ids() == ["bob"] and n_vectors(store) == before


def test_failure_mid_stream_keeps_earlier_batches_and_rerun_finishes(store) -> None:
    embedder = Hash384()
    personas = [make_persona(f"p{k}", [f"Caption {k} about a harbour.", f"Caption {k} about a market."])
                for k in range(6)]

    class FailsOnce(Embedder):
        name, dim, calls = embedder.name, 384, 0

        def _embed(self, texts: list[str]) -> np.ndarray:
            FailsOnce.calls += 1
            if FailsOnce.calls == 3:
                raise RuntimeError("flaky endpoint")
            return embedder.embed(texts)

    store.embedder = FailsOnce()
    with pytest.raises(RuntimeError, match="flaky"):
        store.upsert_many(personas, batch_texts=4)
    done = store.list_ids()
    assert 0 < len(done) < 6 and done == [f"p{k}" for k in range(len(done))]
    assert n_vectors(store) == expected_vectors(store)  # the failed batch left nothing behind
    res = store.upsert_many(personas, batch_texts=4)
    assert [r.status for r in res] == ["unchanged"] * len(done) + ["created"] * (6 - len(done))
    assert store.embedded("p5").persona == personas[5]


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
    with pytest.raises(StoreError, match="stored with embedder"):
        store.upsert(two_personas[0])


def test_hot_path_reads_backend_once(store, two_personas, monkeypatch) -> None:
    store.upsert(two_personas[0])
    calls = []
    original = store._get_vectors
    monkeypatch.setattr(store, "_get_vectors", lambda keys: calls.append(len(keys)) or original(keys))
    first = store.embedded("alice")
    assert store.embedded("alice") is first and len(calls) == 1
    store.add_post("alice", Post(post_id="z", caption="A cat."))
    assert store.embedded("alice").caption_embs.shape[0] == 4  # cache invalidated by the write


def test_embedded_many_equals_embedded(store, two_personas) -> None:
    store.upsert_many(two_personas)
    bulk = list(store.embedded_many(["bob", "alice"]))
    assert [e.persona_id for e in bulk] == ["bob", "alice"]
    for e in bulk:
        one = store.embedded(e.persona_id)
        assert e.persona == one.persona and np.array_equal(e.caption_embs, one.caption_embs)
        assert e.elements.texts == one.elements.texts and np.array_equal(e.elements.embs, one.elements.embs)


def test_reads_during_upserts_see_old_or_new_never_a_mix(store) -> None:
    """Issue 12: a read in the process of an upsert of the same persona raised "store is incomplete"."""
    store.embedder = Hash384()
    versions = [make_persona("flip", [f"Version {v} caption {i} of a quiet street." for i in range(4)])
                for v in range(2)]
    store.upsert_many(versions[:1])
    store.upsert(versions[1])  # every text of both versions embedded (cached) before the race starts
    captions = {v: store.embedder.embed([p.caption for p in versions[v].posts]) for v in range(2)}
    stop, errors = threading.Event(), []

    def writer() -> None:
        k = 0
        while not stop.is_set():
            store.upsert(versions[k % 2])
            k += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(60):
            store.invalidate("flip")
            try:
                emb = store.embedded("flip")
            except StoreError as exc:
                errors.append(exc)
                continue
            v = int(emb.persona.posts[0].caption.split()[1])
            assert emb.persona == versions[v] and np.allclose(emb.caption_embs, captions[v], atol=1e-6)
    finally:
        stop.set()
        thread.join()
    assert errors == []


def test_check_and_repair(store, two_personas) -> None:
    store.upsert_many(two_personas)
    assert store.check().ok
    orphan = {"0" * 32: np.ones(384, np.float32) / np.sqrt(384)}
    store._put_vectors(orphan)
    lost = store._get_entries(["bob"])["bob"].keys[:2]
    store._delete_vectors(list(lost))
    store.invalidate()
    with pytest.raises(StoreError, match="missing"):
        store.embedded("bob")
    report = store.check()
    assert report.orphan_vectors == 1 and report.missing_vectors == {"bob": 2} and not report.ok
    fixed = store.check(repair=True)
    assert fixed.removed_vectors == 1 and fixed.reembedded_vectors == 2
    assert store.check().ok and n_vectors(store) == expected_vectors(store)
    assert store.embedded("bob").persona == two_personas[1]


def test_reingest_heals_missing_vectors(store, two_personas) -> None:
    store.upsert_many(two_personas)
    store._delete_vectors(list(store._get_entries(["alice"])["alice"].keys[:3]))
    res = store.upsert_many(two_personas)
    assert [r.status for r in res] == ["unchanged", "unchanged"] and res[0].texts_embedded == 3
    store.invalidate()
    assert store.embedded("alice").persona == two_personas[0] and store.check().ok
