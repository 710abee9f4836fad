"""Persona memory through LangGraph's BaseStore interface, against every persona-store backend."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from langgraph.store.base import GetOp, InvalidNamespaceError, PutOp

from tests.conftest import make_persona
from vptt.agents.memory_store import PersonaMemoryStore
from vptt.core.errors import PersonaValidationError


def test_basestore_reads_and_writes_persona_memory(store) -> None:
    ms = PersonaMemoryStore(store)
    store.upsert(make_persona("alice", ["A wooden boat on a misty lake at dawn with pine trees.",
                                        "A bowl of ramen steaming on a counter under paper lanterns."]))
    profile = ms.get(("personas", "alice"), "profile")
    assert profile.value["summary"].startswith("Persona alice") and "posts" not in profile.value
    post = ms.get(("personas", "alice", "posts"), "alice-01")
    assert post.value["caption"].startswith("A bowl of ramen") and post.namespace == ("personas", "alice", "posts")
    assert ms.get(("personas", "alice", "posts"), "nope") is None and ms.get(("personas", "zed"), "profile") is None

    # writes go through the store's upsert (embedded, readable by retrieval at once)
    ms.put(("personas", "ana"), "profile", {"summary": "Cyclist in Lisbon.", "demographics": {"city": "Lisbon"}})
    ms.put(("personas", "ana", "posts"), "p1", {"caption": "A yellow tram climbing a steep street at dusk.",
                                                 "elements": {"objects": ["yellow tram"]}})
    ms.put(("personas", "ana", "posts"), "p2", {"caption": "Grilled sardines on a plate with bread."})
    mem = store.embedded("ana")
    assert [p.post_id for p in mem.persona.posts] == ["p1", "p2"] and mem.persona.demographics.city == "Lisbon"
    assert mem.caption_embs.shape[0] == 2 and np.allclose(np.linalg.norm(mem.caption_embs, axis=1), 1, atol=1e-4)

    # search: by cosine to the query embedding (an independent computation below), filters, prefixes
    hits = ms.search(("personas", "ana"), query="a tram on a steep street")
    q = store.embedder.embed_one("a tram on a steep street")
    expect = sorted([("p1", float(mem.caption_embs[0] @ q)), ("p2", float(mem.caption_embs[1] @ q)),
                     ("profile", float(mem.card_emb @ q))], key=lambda kv: -kv[1])
    assert [(h.key, h.score) for h in hits] == [(k, pytest.approx(s, abs=1e-5)) for k, s in expect]
    assert [h.key for h in ms.search(("personas", "ana", "posts"))] == ["p1", "p2"]
    assert [h.key for h in ms.search(("personas",), filter={"type": "activity"}, limit=50)
            if h.namespace[1] == "ana"] == ["p1", "p2"]
    assert ms.search(("personas", "ana", "posts"), filter={"caption": {"$ne": "x"}}, limit=1, offset=1)[0].key == "p2"
    assert ms.list_namespaces(prefix=("personas",), max_depth=2) == [("personas", "alice"), ("personas", "ana")]
    assert ("personas", "ana", "posts") in ms.list_namespaces(suffix=("posts",))

    # one batch: reads see the state before its writes; puts for one persona become one upsert
    res = ms.batch([PutOp(("personas", "ana", "posts"), "p3", {"caption": "Tiles in blue and white."}),
                    GetOp(("personas", "ana", "posts"), "p3"),
                    PutOp(("personas", "ana", "posts"), "p2", None)])
    assert res == [None, None, None]
    assert [p.post_id for p in store.get("ana").posts] == ["p1", "p3"]
    got = asyncio.run(ms.aget(("personas", "ana", "posts"), "p3"))
    assert got.value["caption"] == "Tiles in blue and white."

    # errors are the SDK's, nothing half-written
    with pytest.raises(PersonaValidationError, match="caption"):
        ms.put(("personas", "ana", "posts"), "bad", {"caption": ""})
    assert [p.post_id for p in store.get("ana").posts] == ["p1", "p3"]
    with pytest.raises(InvalidNamespaceError):
        ms.put(("memories", "ana"), "x", {"a": 1})
    with pytest.raises(InvalidNamespaceError):
        ms.put(("personas", "ana"), "not-profile", {"a": 1})

    ms.delete(("personas", "ana"), "profile")
    assert "ana" not in store and ms.get(("personas", "ana"), "profile") is None
