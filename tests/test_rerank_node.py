"""The learnable-feedback re-ranker as a node of the agent graph."""

from __future__ import annotations

import numpy as np

from vptt import Personalizer
from vptt.agents.rerank import FeedbackReranker, candidate_prompts, pick_best
from vptt.evaluators.feedback import FeedbackConfig, FeedbackModel
from vptt.sdk.agent import PersonalizationAgent
from vptt.stores.memory import InMemoryPersonaStore


def test_graph_rerank_node_picks_the_models_argmax(embedder, two_personas) -> None:
    pz = Personalizer(InMemoryPersonaStore(embedder))
    pz.ingest(two_personas)
    model = FeedbackModel(FeedbackConfig(seed=3))
    reranker = FeedbackReranker(model, embedder)
    agent = PersonalizationAgent(pz, text_scorer=None, reranker=reranker, rerank_m=5, seed=7)
    r = agent.run("alice", "A preferred outdoor spot")
    assert r.rerank is not None and len(r.rerank["prompts"]) == len(r.rerank["scores"]) >= 2
    best = r.rerank["best_index"]
    assert best == pick_best(r.rerank["scores"])
    # independent check: the model's own scores of the same candidates, and the composed prompt is the winner
    cands = candidate_prompts(pz, pz.store.embedded("alice"), "A preferred outdoor spot", m=5, seed=7)
    assert [c.prompt for c in cands] == r.rerank["prompts"]
    direct = reranker.rerank(pz.store.embedded("alice"), [c.prompt for c in cands]).scores
    assert np.allclose(direct, r.rerank["scores"], atol=1e-6)
    assert r.prompt == r.rerank["prompts"][int(np.argmax(direct))]
    assert any("re-ranked" in n for n in r.trace.notes)
    plain = PersonalizationAgent(pz, text_scorer=None).run("alice", "A preferred outdoor spot")
    assert plain.rerank is None


def test_rerank_of_a_follow_up_retrieves_on_the_threads_chained_query(embedder, two_personas, tmp_path) -> None:
    """A follow-up's candidates come from retrieval on the request chained with the previous one, as the plain
    retrieve node does; otherwise a re-ranked follow-up would forget the conversation."""
    from vptt.agents.conversation import retrieval_query

    pz = Personalizer(InMemoryPersonaStore(embedder))
    pz.ingest(two_personas)
    reranker = FeedbackReranker(FeedbackModel(FeedbackConfig(seed=3)), embedder)
    agent = PersonalizationAgent(pz, text_scorer=None, reranker=reranker, rerank_m=4, seed=7,
                                 checkpoint=tmp_path / "ck.sqlite")
    agent.run("alice", "A preferred outdoor spot", thread_id="t1")
    r = agent.run("alice", "now make it autumn", thread_id="t1")
    chained = retrieval_query("now make it autumn", {"query": "A preferred outdoor spot"})
    mem = pz.store.embedded("alice")
    want = candidate_prompts(pz, mem, "now make it autumn", m=4, seed=7, retrieval_text=chained)
    alone = candidate_prompts(pz, mem, "now make it autumn", m=4, seed=7)
    assert [c.trace.weights for c in want] != [c.trace.weights for c in alone]  # the test can tell them apart
    chosen = r.rerank["best_index"]
    assert np.allclose(r.trace.weights, want[chosen].trace.weights)
