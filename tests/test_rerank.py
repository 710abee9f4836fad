"""Tests of feedback re-ranking: pick_best, the re-ranker against the model, candidate sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import HashEmbedderBase, make_persona
from vptt.agents.composer import TemplateComposer
from vptt.agents.gates import TextScorer
from vptt.agents.personalizer import Personalizer
from vptt.agents.rerank import FeedbackReranker, RerankResult, candidate_grid, candidate_prompts, pick_best
from vptt.agents.vprag import VPRAGConfig
from vptt.core.errors import ConfigError, EmptyQueryError
from vptt.evaluators.feedback import FeedbackConfig, FeedbackModel
from vptt.evaluators.feedback_data import profile_tokens, prompt_segments
from vptt.stores.memory import InMemoryPersonaStore
from vptt.stores.records import embed_persona

QUERY = "a quiet lake at dawn"


class HashEmbedder(HashEmbedderBase):
    """Deterministic bag-of-words hashing embedder (fast; no model)."""

    name, dim = "hash-rerank", 32


def tiny_model(**kw: object) -> FeedbackModel:
    cfg = dict(profile_dim=32, prompt_dim=32, hidden=16, heads=4, ffn=32, head_hidden=(16, 8),
               max_profile_tokens=4, embedder="hash-rerank", seed=3)
    return FeedbackModel(FeedbackConfig(**{**cfg, **kw}))


def persona():
    caps = ["A wooden boat on a misty lake at dawn with pine trees.",
            "A bowl of ramen steaming on a counter under paper lanterns.",
            "Cherry blossoms over a stone path in a temple garden.",
            "Snow on a red torii gate at dusk.", "A cat asleep on warm tatami."]
    els = None
    p = make_persona("alice", caps, elements=els)
    posts = []
    for i, post in enumerate(p.posts):  # give each post its own elements so budgets change the prompt
        posts.append(post.model_copy(update={"elements": {
            "foreground": [f"subject {i} a", f"subject {i} b"], "lighting": [f"light {i}", "soft dusk"],
            "environment": [f"place {i}", f"misty lake {i}"], "objects": [f"object {i}"]}}))
    return p.model_copy(update={"posts": posts})


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ----------------------------------------------------------------------------- pick_best
def test_pick_best_against_naive_loop():
    g = np.random.default_rng(0)
    for _ in range(50):
        s = g.choice([0.1, 0.5, 0.9], size=int(g.integers(1, 8)))
        best = 0
        for i, v in enumerate(s):
            if v > s[best]:
                best = i
        assert pick_best(s) == best
    assert pick_best([0.3, 0.7, 0.7]) == 1
    assert pick_best([float("nan"), 0.1]) == 1
    with pytest.raises(ConfigError):
        pick_best([])


# ----------------------------------------------------------------------------- re-ranker
def test_rerank_picks_the_candidate_the_model_scores_highest():
    emb, model = HashEmbedder(), tiny_model()
    mem = embed_persona(persona(), emb)
    rr = FeedbackReranker(model, emb)
    cands = ["a misty lake with a wooden boat", "a neon arcade at night", "paper lanterns over ramen",
             "a parking lot", "cherry blossoms on a stone path"]
    res = rr.rerank(mem, cands)
    tok, mask = profile_tokens(mem.card_emb, mem.caption_embs, 4)
    expected = model.predict(np.repeat(tok[None], 5, 0), np.repeat(mask[None], 5, 0),
                             emb.embed(cands)[:, None])
    assert isinstance(res, RerankResult)
    assert np.allclose(res.scores, expected, atol=1e-6)
    assert res.best_index == int(np.argmax(expected)) and res.chosen == cands[res.best_index]
    assert res.candidates == cands and res.embedder == "hash-rerank"
    assert isinstance(rr, TextScorer) and rr(mem, cands[2]) == pytest.approx(expected[2], abs=1e-6)


def test_rerank_uses_prompt_segments():
    emb, model = HashEmbedder(), tiny_model(max_prompt_tokens=3)
    mem = embed_persona(persona(), emb)
    prompt = "a lake, a boat, pine trees, dawn"
    segs = prompt_segments(prompt, 3)
    tok, mask = profile_tokens(mem.card_emb, mem.caption_embs, 4)
    expected = model.predict(tok[None], mask[None], emb.embed(segs)[None])
    assert FeedbackReranker(model, emb).score(mem, [prompt]) == pytest.approx(expected, abs=1e-6)


class FixedModel:
    """Stands in for FeedbackModel: returns given scores in order."""

    def __init__(self, scores: list[float]) -> None:
        self.config = FeedbackConfig(profile_dim=32, prompt_dim=32, max_profile_tokens=4)
        self.scores = np.array(scores, np.float32)

    def predict(self, profile, profile_mask, prompt, prompt_mask=None):
        assert profile.shape[0] == prompt.shape[0] == len(self.scores)
        return self.scores


def test_rerank_ties_go_to_the_first():
    mem = embed_persona(persona(), HashEmbedder())
    res = FeedbackReranker(FixedModel([0.2, 0.8, 0.8, 0.1]), HashEmbedder()).rerank(mem, ["a", "b", "c", "d"])
    assert (res.best_index, res.chosen) == (1, "b")


def test_reranker_checks_embedder(tmp_path: Path):
    emb = HashEmbedder()
    with pytest.raises(ConfigError, match="trained with embedder"):
        FeedbackReranker(tiny_model(embedder="minilm:all-MiniLM-L6-v2"), emb)
    with pytest.raises(ConfigError, match="expects 16-d"):
        FeedbackReranker(tiny_model(profile_dim=16, prompt_dim=16), emb)
    rr = FeedbackReranker(tiny_model(embedder="other"), emb, strict_embedder=False)
    with pytest.raises(ConfigError, match="non-empty list"):
        rr.score(embed_persona(persona(), emb), [])
    tiny_model().save(tmp_path / "m")
    loaded = FeedbackReranker.load(tmp_path / "m", emb)
    mem = embed_persona(persona(), emb)
    fresh = FeedbackReranker(tiny_model(), emb).score(mem, ["a lake"])
    assert loaded.score(mem, ["a lake"]) == pytest.approx(fresh)


def test_reranker_rejects_persona_from_another_embedder():
    class Other(HashEmbedder):
        name = "other-hash"

    mem = embed_persona(persona(), Other())
    with pytest.raises(ConfigError, match="embedded with 'other-hash'"):
        FeedbackReranker(tiny_model(), HashEmbedder()).rerank(mem, ["x"])


# ----------------------------------------------------------------------------- candidates
@pytest.fixture
def pz() -> Personalizer:
    return Personalizer(InMemoryPersonaStore(HashEmbedder()))


def test_candidate_grid_starts_with_base_and_has_no_repeats():
    grid = candidate_grid(VPRAGConfig(tau=0.1, per_category_budget=3), taus=(0.1, 0.2), budgets=(1, 3))
    assert (grid[0].tau, grid[0].per_category_budget, grid[0].three_phrase) == (0.1, 3, False)
    keys = [(c.tau, c.per_category_budget, c.three_phrase) for c in grid]
    expected = {(t, b, False) for t in (0.1, 0.2) for b in (1, 3)} | {(t, 3, True) for t in (0.1, 0.2)}
    assert len(keys) == len(set(keys)) and set(keys) == expected


def test_candidate_prompts_deterministic_distinct_and_first_is_plain(pz: Personalizer):
    p = persona()
    a = candidate_prompts(pz, p, QUERY, m=6, seed=1)
    assert [c.prompt for c in a] == [c.prompt for c in candidate_prompts(pz, p, QUERY, m=6, seed=1)]
    assert 2 <= len(a) <= 6 and len({c.prompt for c in a}) == len(a)
    assert a[0].prompt == pz.personalize(p, QUERY).prompt and a[0].label.startswith("initial")
    assert [c.index for c in a] == list(range(len(a)))
    assert all(c.trace is not None and c.trace.method == "vprag" for c in a)
    orders = {tuple(c.label for c in candidate_prompts(pz, p, QUERY, m=6, seed=s)) for s in range(5)}
    assert len(orders) > 1  # the seed changes which grid points are tried
    assert len(candidate_prompts(pz, p, QUERY, m=1)) == 1


def test_candidate_prompts_validation_and_no_posts(pz: Personalizer):
    with pytest.raises(ConfigError):
        candidate_prompts(pz, persona(), QUERY, m=0)
    with pytest.raises(ConfigError):
        candidate_prompts(pz, persona(), QUERY, m=2, method="brag")
    with pytest.raises(EmptyQueryError):
        candidate_prompts(pz, persona(), " ", m=2)
    bare = make_persona("bare", []).model_copy(update={"posts": []})
    [only] = candidate_prompts(pz, bare, QUERY, m=4)
    assert only.label == "fallback: persona_only" and QUERY in only.prompt


def test_end_to_end_rerank_of_sampled_candidates(pz: Personalizer):
    p = persona()
    cands = candidate_prompts(pz, p, QUERY, m=5, seed=0)
    rr = FeedbackReranker(tiny_model(), pz.embedder)
    res = rr.rerank(pz.embedded(p), [c.prompt for c in cands])
    assert res.chosen == cands[res.best_index].prompt
    assert res.scores[res.best_index] == max(res.scores)


def test_candidate_prompts_takes_embedded_persona_composer_and_config(pz: Personalizer):
    p = persona()
    mem = pz.embedded(p)
    a = candidate_prompts(pz, mem, QUERY, m=3, seed=2)
    assert [c.prompt for c in a] == [c.prompt for c in candidate_prompts(pz, p, QUERY, m=3, seed=2)]

    class Upper(TemplateComposer):
        name = "upper"

        def compose(self, query, trace, persona):
            return super().compose(query, trace, persona).upper()

    up = candidate_prompts(pz, mem, QUERY, m=3, seed=2, composer=Upper())
    assert [c.prompt for c in up] == [c.prompt.upper() for c in a]
    cfg = VPRAGConfig(tau=0.5, per_category_budget=1)
    [b] = candidate_prompts(pz, mem, QUERY, m=1, config=cfg)
    assert (b.tau, b.per_category_budget) == (0.5, 1)
    assert b.prompt == pz.personalize(p, QUERY, config=cfg).prompt
