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
