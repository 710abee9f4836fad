"""The judge's profile canvas shows the 10 posts matched to the generated prompt(s), chosen deterministically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import respx

from tests.test_vlm_judge import BASE, completion, decode, make_judge, reply_for, solid
from vptt import ConfigError
from vptt.evaluators._canvas import grid_layout, match_scores, select_profile_posts

# 12 distinct colours, one per post
PALETTE = [(20 * i + 10, 250 - 20 * i, (97 * i) % 256) for i in range(12)]


def at_degrees(*angles: float) -> np.ndarray:
    rad = np.deg2rad(angles)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


CAPTIONS = at_degrees(*range(0, 120, 10))  # post i sits at 10 i degrees


def test_matched_posts_by_hand() -> None:
    # one prompt at 110 degrees: posts 0 and 1 (0 and 10 degrees) are the farthest, the rest is shown
    assert select_profile_posts(12, caption_embs=CAPTIONS, prompt_embs=at_degrees(110)) == list(range(2, 12))
    # prompts at 0 and 110 degrees: the mean cosine ranks by closeness to 55 degrees; posts 0 and 11 drop
    assert select_profile_posts(12, caption_embs=CAPTIONS, prompt_embs=at_degrees(0, 110)) == list(range(1, 11))
    np.testing.assert_allclose(match_scores(CAPTIONS, at_degrees(0, 110)),
                               np.cos(np.deg2rad(55)) * np.cos(np.deg2rad(np.arange(0, 120, 10) - 55)))
    # unnormalised inputs give the same choice (cosine)
    assert select_profile_posts(12, caption_embs=CAPTIONS * 3.0, prompt_embs=at_degrees(110) * 0.2) == \
        list(range(2, 12))
    # the shown count and the first-N option
    assert select_profile_posts(12, max_images=3, caption_embs=CAPTIONS, prompt_embs=at_degrees(45)) == [3, 4, 5]
    assert select_profile_posts(12, mode="first") == list(range(10))
    assert select_profile_posts(7, caption_embs=None, prompt_embs=None) == list(range(7))  # all fit


def test_ties_go_to_the_earlier_post() -> None:
    caps = np.vstack([at_degrees(90, 80, 70, 60, 50, 40, 30, 20), at_degrees(5, 5, 5, 5)])
    # posts 8..11 are identical: two of them fit, the earlier two (8, 9)
    assert select_profile_posts(12, caption_embs=caps, prompt_embs=at_degrees(90)) == list(range(10))
    reordered = caps[[0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 7]]  # post 7 last now, still chosen over later ties
    assert select_profile_posts(12, caption_embs=reordered, prompt_embs=at_degrees(90)) == \
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 11]


def test_bad_selection_inputs() -> None:
    with pytest.raises(ConfigError, match="needs the posts' caption embeddings"):
        select_profile_posts(12)
    with pytest.raises(ConfigError, match="12 posts"):
        select_profile_posts(12, caption_embs=CAPTIONS[:5], prompt_embs=at_degrees(0))
    with pytest.raises(ConfigError, match="differ in size"):
        select_profile_posts(12, caption_embs=CAPTIONS, prompt_embs=np.ones((1, 3)))
    with pytest.raises(ConfigError, match="'matched' or 'first'"):
        select_profile_posts(12, mode="best")  # type: ignore[arg-type]


def test_judge_canvas_shows_and_records_the_matched_posts() -> None:
    posts = [solid(c) for c in PALETTE]
    ids = [f"post-{i:02d}" for i in range(12)]
    inputs = {"persona_id": "persona-001", "persona_images": posts, "post_ids": ids, "prompt": "a walk",
              "method_images": {"a": solid((1, 1, 1)), "b": solid((2, 2, 2))}}
    judge = make_judge()
    req = judge.prepare(**inputs, caption_embeddings=CAPTIONS, prompt_embeddings=at_degrees(110))
    assert req.profile_posts == tuple(ids[2:])
    g = grid_layout(10, cols=5, tile=32, label_height=32, gap=8)
    px = np.asarray(req.profile_canvas)
    assert [tuple(px[b.center[1], b.center[0]]) for b in g.tiles] == PALETTE[2:]  # in post order
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=completion(reply_for("AB", [3.0, 1.0])))
        result = judge.judge(**inputs, caption_embeddings=CAPTIONS, prompt_embeddings=at_degrees(0))
    assert result.profile_posts == ids[:10] and result.ok
    sent = decode(json.loads(route.calls[0].request.content)["messages"][1]["content"][1]["image_url"]["url"])
    assert sent.size == req.profile_canvas.size
    first = make_judge(profile_posts="first").prepare(**inputs)
    assert first.profile_posts == tuple(ids[:10])
    unnamed = make_judge().prepare(**{**inputs, "post_ids": None}, caption_embeddings=CAPTIONS,
                                   prompt_embeddings=at_degrees(110))
    assert unnamed.profile_posts == tuple(str(i) for i in range(2, 12))
    with pytest.raises(ConfigError, match="profile_posts='first'"):
        make_judge().prepare(**inputs)
    with pytest.raises(ConfigError, match="post_ids has 3"):
        make_judge().prepare(**{**inputs, "post_ids": ids[:3]})


def test_image_gate_judge_matches_posts_to_the_prompt() -> None:
    from types import SimpleNamespace

    from vptt.agents.gates import ImageGateContext, VLMJudgeEvaluator
    from vptt.core.models import Persona
    from vptt.stores.records import ElementTable, EmbeddedPersona

    posts = [{"post_id": f"q{i}", "caption": f"post {i}", "image": f"/img/{i}.png"} for i in range(12)]
    posts.insert(5, {"post_id": "no-image", "caption": "text only"})  # never a candidate
    caps = np.insert(CAPTIONS, 5, at_degrees(110), axis=0)
    mem = EmbeddedPersona(Persona.model_validate({"persona_id": "p", "posts": posts}), np.ones(2), caps,
                          ElementTable.empty(2))
    ctx = ImageGateContext(persona=mem, query="a walk", prompt="a walk by the sea")

    class Recorder:
        config = SimpleNamespace(max_profile_images=10, profile_posts="matched")

        def judge(self, **kwargs):  # type: ignore[no-untyped-def]
            self.kwargs = kwargs
            shown = select_profile_posts(len(kwargs["persona_images"]), caption_embs=kwargs["caption_embeddings"],
                                         prompt_embs=kwargs["prompt_embeddings"])
            self.shown = [kwargs["post_ids"][i] for i in shown]
            return SimpleNamespace(scores={"output": 4.0})

    embedder = SimpleNamespace(embed=lambda texts: at_degrees(110) if texts == ["a walk by the sea"] else None)
    rec = Recorder()
    assert VLMJudgeEvaluator(rec, embedder=embedder)(solid((0, 0, 0)), ctx) == 4.0
    assert rec.shown == [f"q{i}" for i in range(2, 12)] and len(rec.kwargs["persona_images"]) == 12
    with pytest.raises(ConfigError, match="pass embedder="):
        VLMJudgeEvaluator(Recorder())(solid((0, 0, 0)), ctx)
