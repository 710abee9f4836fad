"""The LangGraph agent: deferred rendering, text and image gates, diffusers through the graph, checkpoint
resume, streaming, async, LLM candidates and secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sqlite3
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import respx
from PIL import Image

from tests.conftest import HashEmbedderBase, make_persona
from vptt.agents.composer import TemplateComposer
from vptt.agents.gates import (
    FunctionImageEvaluator,
    ImageGateConfig,
    MaskedSimilarityEvaluator,
    TextGateConfig,
    VLMJudgeEvaluator,
    VPTTTextScorer,
    candidate_specs,
    subset_trace,
)
from vptt.agents.generators import ImageGenerator
from vptt.agents.graph import NODES
from vptt.agents.llm_composer import LLMComposer
from vptt.agents.personalizer import Personalizer
from vptt.agents.results import PersonalizationResult
from vptt.core.errors import ConfigError, EmptyQueryError, ProviderError
from vptt.core.providers import RetryConfig, RunTimeoutError
from vptt.sdk.agent import PersonalizationAgent
from vptt.stores.memory import InMemoryPersonaStore

BASE = "http://testserver/v1"
KEY = "sk-GRAPH-SECRET-9090"
QUERY = "a quiet lake at dawn"
TEXT_ONLY = ["load_persona", "retrieve", "compose", "text_gate", "result"]


class HashEmbedder(HashEmbedderBase):
    """Deterministic bag-of-words hashing embedder (fast; no model)."""

    name, dim = "hash-test", 64


class Scorer:
    """A text scorer from a function of the prompt; records every call."""

    def __init__(self, fn, name: str = "fake") -> None:
        self.fn, self.name, self.calls = fn, name, []

    def __call__(self, persona, prompt: str) -> float:
        self.calls.append(prompt)
        return float(self.fn(prompt))


class CountingComposer(TemplateComposer):
    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def compose(self, query, trace, persona):
        self.calls += 1
        return super().compose(query, trace, persona)


class FakeGenerator(ImageGenerator):
    """Solid images whose colour encodes the seed; can fail its first ``fail`` calls or sleep."""

    name, supports_edit = "fake", True

    def __init__(self, fail: int = 0, sleep: float = 0.0) -> None:
        self.fail, self.sleep, self.requests = fail, sleep, []

    def _generate(self, request):
        self.requests.append(request)
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail > 0:
            self.fail -= 1
            raise ProviderError("injected failure: endpoint answered HTTP 503")
        if request.on_progress:
            request.on_progress(1, 1)
        return Image.new("RGB", (8, 8), (request.seed % 256, 0, 0)), request.seed, {"prompt": request.prompt}


@pytest.fixture
def personalizer() -> Personalizer:
    p = Personalizer(InMemoryPersonaStore(HashEmbedder()))
    p.store.upsert(make_persona("alice", ["A wooden boat on a misty lake at dawn with pine trees.",
                                          "A bowl of ramen steaming on a counter under paper lanterns.",
                                          "Cherry blossoms over a stone path in a temple garden."]))
    p.store.upsert(make_persona("nobody", ["x"]).model_copy(update={"posts": []}))
    return p


def _nodes(events) -> list[str]:
    return [e.node for e in events if e.kind == "node"]


def test_deferred_rendering_matches_the_bare_path(personalizer: Personalizer) -> None:
    agent = PersonalizationAgent(personalizer, text_scorer=Scorer(lambda p: 0.9))
    assert set(NODES) <= set(agent._graph.get_graph().nodes) and len(NODES) == 7  # a real StateGraph
    res = agent.run("alice", QUERY)
    bare = personalizer.personalize("alice", QUERY)
    assert isinstance(res, PersonalizationResult) and res.status == "deferred" and res.accepted
    assert res.prompt == bare.prompt and res.trace.kept_elements() == bare.trace.kept_elements()
    assert res.trace.composition == bare.trace.composition and res.images == [] and res.image is None
    assert res.text_gate.action == "accept" and [c.score for c in res.candidates] == [0.9]
    assert {"load_persona", "embed_query", "retrieve", "compose", "text_gate", "total"} <= set(res.timings_ms)
    assert _nodes(agent.stream("alice", QUERY)) == TEXT_ONLY  # stops after the text gate
    with pytest.raises(EmptyQueryError):
        agent.run("alice", "  ")
    with pytest.raises(ConfigError, match="did you mean 'vprag'"):
        agent.run("alice", QUERY, method="vpraq")
    with pytest.raises(ConfigError, match="checkpoint"):
        agent.run("alice", QUERY, thread_id="t1")

    class NoEdit(FakeGenerator):
        supports_edit = False
    with pytest.raises(ConfigError, match="cannot edit"):  # checked before anything runs
        PersonalizationAgent(personalizer, generator=NoEdit()).run("alice", QUERY,
                                                                  init_image=Image.new("RGB", (8, 8)))


def test_early_rejection_generates_nothing(personalizer: Personalizer, tmp_path: Path) -> None:
    gen, scorer = FakeGenerator(), Scorer(lambda p: 0.1)
    agent = PersonalizationAgent(personalizer, text_scorer=scorer, generator=gen)
    res = agent.run("alice", QUERY)
    n_kept = len(personalizer.personalize("alice", QUERY).trace.kept_elements())
    plan = candidate_specs(TextGateConfig(), n_kept, temperature_aware=False)
    assert res.status == "rejected" and not res.accepted and gen.requests == [] and res.images == []
    assert [c.label for c in res.candidates] == [s.label for s in plan] and len(plan) == 4
    assert all(c.score == 0.1 and c.passed is False for c in res.candidates)
    assert res.text_gate.action == "reject" and "no image generated" in res.text_gate.reason
    best = PersonalizationAgent(personalizer, text_scorer=scorer, generator=gen, save_dir=tmp_path,
                                text_gate=TextGateConfig(on_reject="best")).run("alice", QUERY, seed=5)
    assert best.status == "completed" and best.text_gate.action == "accept_best" and len(gen.requests) == 1


def test_text_gate_keeps_the_best_candidate(personalizer: Personalizer) -> None:
    scorer = Scorer(lambda p: 1.0 / len(p.split(",")))  # fewer elements score higher
    agent = PersonalizationAgent(personalizer, text_scorer=scorer,
                                 text_gate=TextGateConfig(threshold=2.0, stop_on_pass=False,
                                                          on_reject="best"))
    res = agent.run("alice", QUERY)
    scores = [c.score for c in res.candidates]
    best = int(np.argmax(scores))
    assert res.text_gate.chosen == best and res.prompt == res.candidates[best].prompt
    assert res.candidates[best].label.startswith("top 1/")  # the one-element subset
    assert [e.text for e in res.trace.elements if e.status == "kept"] == res.prompt.split(", ")[1:]
    assert any("text gate" in n for n in res.trace.notes)
    # duplicates are scored once
    dup = PersonalizationAgent(personalizer, text_scorer=scorer, composer=TemplateComposer(),
                               text_gate=TextGateConfig(threshold=2.0, keep_fractions=(1.0,),
                                                        stop_on_pass=False))
    assert len(dup.run("alice", QUERY, method="brag").candidates) == 1  # nothing to vary: one candidate


def test_candidate_plan_and_subsets() -> None:
    cfg = TextGateConfig(max_candidates=5, temperatures=(1.0, 0.3), keep_fractions=(0.5, 0.75, 0.2))
    assert [s.label for s in candidate_specs(cfg, 10, True)] == [
        "initial", "temperature 1", "top 5/10 elements", "temperature 0.3", "top 8/10 elements"]
    assert [s.keep for s in candidate_specs(cfg, 2, False)] == [None, 1]  # ceil(.5*2)=1, .75 -> 2 = all
    from vptt.agents.trace import ElementChoice, RetrievalTrace

    t = RetrievalTrace(method="vprag", elements=[
        ElementChoice(text=str(i), category="c", post_id="p", score=s)
        for i, s in enumerate([0.2, 0.9, 0.5])])
    assert subset_trace(t, 2).kept_elements() == ["1", "2"] and t.kept_elements() == ["0", "1", "2"]


def test_vptt_adapter_matches_the_definition(personalizer: Personalizer) -> None:
    scorer = VPTTTextScorer(personalizer.embedder)
    mem = personalizer.embedded("alice")
    prompt = "a quiet lake at dawn, misty lake at dawn with pine trees"
    score, terms = scorer.explain(mem, prompt)
    v = personalizer.embedder.embed_one(prompt).astype(np.float64)
    card, caps = mem.card_emb.astype(np.float64), mem.caption_embs.astype(np.float64)
    pa = v @ card / np.linalg.norm(card) / np.linalg.norm(v)
    coef = np.linalg.lstsq(caps.T, v, rcond=None)[0]
    proj = caps.T @ coef  # projection onto span(C), independent of Gram-Schmidt
    gs = proj @ v / np.linalg.norm(proj) / np.linalg.norm(v)
    unit = caps / np.linalg.norm(caps, axis=1, keepdims=True)
    # k = min(5, n) = 3 clusters for 3 captions: one centroid per caption
    cp = math.exp(-min(np.linalg.norm(proj / np.linalg.norm(v) - c) for c in unit))

    def tri(s):
        w = re.findall(r"[\w']+", s.lower())
        return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}
    nv = 1 - max(len(tri(prompt) & tri(c)) for c in mem.captions) / len(tri(prompt))
    assert (terms["pa"], terms["gs"], terms["cp"], terms["nv"]) == pytest.approx((pa, gs, cp, nv), abs=1e-5)
    assert score == pytest.approx(0.2 * pa + 0.3 * gs + 0.3 * cp + 0.2 * nv, abs=1e-5)
    assert VPTTTextScorer(personalizer.embedder, variant="score_c")(mem, prompt) == pytest.approx(
        (pa + gs + cp) / 3, abs=1e-5)
    res = PersonalizationAgent(personalizer).run("alice", QUERY)  # the default scorer is the VPTT score
    assert res.candidates[0].score == pytest.approx(scorer(mem, res.candidates[0].prompt))


def test_persona_without_posts_falls_back_and_skips_the_gate(personalizer: Personalizer) -> None:
    res = PersonalizationAgent(personalizer).run("nobody", QUERY)
    assert res.method == "persona_only" and "fell back" in res.fallback
    assert res.status == "deferred" and res.text_gate.action == "skipped"
    assert "cannot score" in res.text_gate.reason


def test_image_gate_retries_with_new_seeds(personalizer: Personalizer, tmp_path: Path) -> None:
    gen = FakeGenerator()
    red = FunctionImageEvaluator("red", lambda im, ctx: im.getpixel((0, 0))[0], threshold=12)
    agent = PersonalizationAgent(personalizer, text_scorer=Scorer(lambda p: 1.0), generator=gen,
                                 evaluators=[red], image_gate=ImageGateConfig(max_attempts=4),
                                 save_dir=tmp_path)
    res = agent.run("alice", QUERY, seed=10)
    assert [r.seed for r in res.images] == [10, 11, 12]
    assert [r.passed for r in res.images] == [False, False, True]
    assert res.status == "completed" and res.image_gate.chosen == 2
    assert res.image.getpixel((0, 0)) == (12, 0, 0)
    assert all(Path(r.path).parent == tmp_path and Path(r.path).is_file() for r in res.images)
    assert res.images[0].checks[0].score == 10 and res.images[0].checks[0].threshold == 12
    never = FunctionImageEvaluator("never", lambda im, ctx: -abs(im.getpixel((0, 0))[0] - 21), threshold=1)
    nan = FunctionImageEvaluator("nan", lambda im, ctx: math.nan, threshold=0)
    res = PersonalizationAgent(personalizer, text_scorer=Scorer(lambda p: 1.0), generator=FakeGenerator(),
                               evaluators=[never, nan], save_dir=tmp_path).run("alice", QUERY, seed=20)
    assert res.status == "image_rejected" and len(res.images) == 3 and res.image_gate.chosen == 1  # seed 21
    assert res.images[0].checks[1].score is None and res.images[0].checks[1].passed is None


def test_image_evaluator_adapters(personalizer: Personalizer, tmp_path: Path) -> None:
    class FakeMasc:
        def score(self, ref, ref_mask, out, out_mask, prompt, subject):
            self.args = (ref, ref_mask, out_mask, prompt, subject)
            return type("R", (), {"cp": 0.7, "pf": 0.2})()

    masc = FakeMasc()
    mask = np.ones((8, 8), np.uint8) * 255
    ev = MaskedSimilarityEvaluator(masc, reference_mask=mask, metric="pf", subject="bowl", threshold=0.1)
    from vptt.agents.gates import ImageGateContext

    init = Image.new("RGB", (8, 8))
    ctx = ImageGateContext(persona=personalizer.embedded("alice"), query="q", prompt="p", init_image=init)
    assert ev(Image.new("RGB", (8, 8)), ctx) == 0.2 and masc.args[0] is init and masc.args[2] is mask
    img = tmp_path / "post.png"
    Image.new("RGB", (16, 16), (9, 9, 9)).save(img)
    from vptt.evaluators.vlm_judge import JudgeConfig, assign_labels

    scores = {"output": 4.5, "anchor": 1.0}  # the judge needs two images: the input image is the anchor
    reply = "\n".join(f"{lab}: Score={scores[m]} - lantern light" for lab, m in
                      assign_labels("alice", ["output", "anchor"]).items())
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=httpx.Response(200, json={
            "id": "j", "object": "chat.completion", "created": 0, "model": "judge",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply}}]}))
        judge = VLMJudgeEvaluator(config=JudgeConfig(model="judge", base_url=BASE, api_key=KEY),
                                  persona_images=[img], http_client=httpx.Client(), threshold=4.0)
        assert judge(Image.new("RGB", (8, 8)), ctx) == 4.5 and route.call_count == 1
    sent = json.loads(route.calls[0].request.content)["messages"][1]["content"][0]["text"]
    assert "IMAGE 1 (Input Image)" in sent  # an edit: the judge saw the input image
    assert math.isnan(VLMJudgeEvaluator(judge=object())(init, ctx))  # posts without images: cannot judge


def test_tiny_diffusers_through_the_graph(personalizer: Personalizer, tmp_path: Path) -> None:
    from tests.tiny_diffusion import shared_pipeline, torch_threads
    from vptt.agents.generators.diffusers_gen import DiffusersGenerator

    with torch_threads(1):
        _diffusers_through_the_graph(DiffusersGenerator, shared_pipeline(), personalizer, tmp_path)


def _diffusers_through_the_graph(cls, pipe, personalizer: Personalizer, tmp_path: Path) -> None:
    gen = cls(pipe, num_inference_steps=2, guidance_scale=2.0, height=32, width=32)
    agent = PersonalizationAgent(personalizer, text_scorer=Scorer(lambda p: 1.0), generator=gen,
                                 save_dir=tmp_path)
    events = list(agent.stream("alice", QUERY, seed=3))
    assert _nodes(events) == [*TEXT_ONLY[:-1], "generate", "image_gate", "result"]
    assert [(e.data["step"], e.data["total"]) for e in events if e.kind == "progress"] == [(1, 2), (2, 2)]
    res = events[-1].result
    assert res.status == "completed" and res.image.size == (32, 32) and res.images[0].seed == 3
    saved = Image.open(res.images[0].path).convert("RGB")
    assert np.array_equal(np.asarray(saved), np.asarray(res.image.convert("RGB")))
    assert res.images[0].params["prompt"] == res.prompt
    edit = agent.run("alice", "make the lake blue", init_image=Image.new("RGB", (32, 32), (90, 10, 10)),
                     seed=3)
    assert edit.status == "completed" and edit.images[0].params["task"] == "edit"
    assert edit.image.size == (32, 32)


def test_checkpoint_resume_after_failure_in_generate(personalizer: Personalizer, tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    composer = CountingComposer()
    agent = PersonalizationAgent(personalizer, composer=composer, text_scorer=Scorer(lambda p: 1.0),
                                 generator=FakeGenerator(fail=1), checkpoint=str(db), save_dir=tmp_path)
    with pytest.raises(ProviderError, match="injected"):
        agent.run("alice", QUERY, thread_id="run-1", seed=7)
    assert composer.calls == 1
    snap = agent._checkpointed().get_state({"configurable": {"thread_id": "run-1"}})
    assert snap.next == ("generate",) and snap.values["prompt"]
    agent.close()
    # a new agent (as after a restart) on the same database finishes the run without recomposing
    composer2 = CountingComposer()
    with PersonalizationAgent(personalizer, composer=composer2, text_scorer=Scorer(lambda p: 1.0),
                              generator=FakeGenerator(), checkpoint=str(db), save_dir=tmp_path) as agent2:
        res = agent2.resume("run-1")
        assert res.status == "completed" and res.thread_id == "run-1" and res.images[0].seed == 7
        assert composer2.calls == 0 and res.prompt == personalizer.personalize("alice", QUERY).prompt
        assert agent2.resume("run-1").prompt == res.prompt  # a finished run is returned as is
        follow = agent2.run("alice", "now make it autumn", thread_id="run-1")  # a thread is a conversation
        assert follow.refines == res.run_id != follow.run_id and follow.previous_prompt == res.prompt
        assert follow.prompt.startswith(res.prompt + ", now make it autumn")
        with pytest.raises(ConfigError, match="no run"):
            agent2.resume("nope")
    adhoc = make_persona("carol", ["A red kite over green hills."])
    agent3 = PersonalizationAgent(personalizer, text_scorer=Scorer(lambda p: 1.0),
                                  generator=FakeGenerator(fail=1), checkpoint=":memory:", save_dir=tmp_path)
    with pytest.raises(ProviderError):
        agent3.run(adhoc, "a kite", thread_id="adhoc")
    with pytest.raises(ConfigError, match="unfinished run"):  # an interrupted turn is resumed, not skipped
        agent3.run(adhoc, "a kite at dusk", thread_id="adhoc")
    assert agent3.resume("adhoc").persona_id == "carol"  # ad-hoc personas are kept in the state


async def test_async_run_stream_and_resume(personalizer: Personalizer, tmp_path: Path) -> None:
    agent = PersonalizationAgent(personalizer, text_scorer=Scorer(lambda p: 1.0),
                                 generator=FakeGenerator(fail=1), checkpoint=str(tmp_path / "a.sqlite"),
                                 save_dir=tmp_path)
    with pytest.raises(ProviderError):
        await agent.arun("alice", QUERY, thread_id="a1", seed=1)
    res = await agent.aresume("a1")
    assert res.status == "completed" and res.images[0].seed == 1
    events = [e async for e in agent.astream("alice", QUERY, seed=2)]
    assert _nodes(events) == [*TEXT_ONLY[:-1], "generate", "image_gate", "result"]
    assert events[-1].kind == "result" and events[-1].result.prompt == res.prompt
    plain = PersonalizationAgent(personalizer, text_scorer=Scorer(lambda p: 1.0))
    results = await asyncio.gather(*(plain.arun("alice", q) for q in (QUERY, "ramen at night")))
    assert [r.prompt for r in results] == [personalizer.personalize("alice", q).prompt
                                           for q in (QUERY, "ramen at night")]


async def test_run_timeouts(personalizer: Personalizer, tmp_path: Path) -> None:
    slow_scorer = Scorer(lambda p: time.sleep(0.3) or 1.0)
    with pytest.raises(RunTimeoutError, match="time limit"):
        PersonalizationAgent(personalizer, text_scorer=slow_scorer, generator=FakeGenerator(),
                             run_timeout_s=0.2, save_dir=tmp_path).run("alice", QUERY)  # before generate
    agent = PersonalizationAgent(personalizer, text_scorer=Scorer(lambda p: 1.0),
                                 generator=FakeGenerator(sleep=1.5), run_timeout_s=0.4, save_dir=tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(RunTimeoutError, match="run_timeout_s"):
        await agent.arun("alice", QUERY)
    assert time.perf_counter() - t0 < 1.2  # cancelled, not waited for


def sse_chat(text: str) -> httpx.Response:
    """An OpenAI chat-completions stream (server-sent events) that sends ``text`` word by word."""
    words = text.split(" ")
    chunks = [{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
               "choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w}, "finish_reason": None}]}
              for i, w in enumerate(words)]
    chunks.append({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


def _chat(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    text = f"lake story t{body['temperature']}"
    if body.get("stream"):
        return sse_chat(text)
    message = {"role": "assistant", "content": text}
    return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                     "choices": [{"index": 0, "finish_reason": "stop", "message": message}]})


def test_llm_candidates_and_secrets(personalizer: Personalizer, tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "s.sqlite"
    llm = LLMComposer(model="m", base_url=BASE, api_key=KEY, http_client=httpx.Client(),
                      retry=RetryConfig(initial_interval=0, jitter=False))
    agent = PersonalizationAgent(personalizer, composer=llm, text_scorer=Scorer(lambda p: float("t1.0" in p)),
                                 generator=FakeGenerator(), checkpoint=str(db), save_dir=tmp_path)
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(side_effect=_chat)
        events = list(agent.stream("alice", QUERY, seed=1))
    res = events[-1].result
    tokens = [(e.data["candidate"], e.data["text"]) for e in events if e.kind == "token"]
    assert tokens == [(0, "lake"), (0, " story"), (0, " t0.7"), (1, "lake"), (1, " story"), (1, " t1.0")]
    assert all(json.loads(r.request.content)["stream"] for r in route.calls)  # streamed because we stream
    assert route.call_count == 2 and [c.temperature for c in res.candidates] == [0.7, 1.0]
    assert res.prompt == "lake story t1.0" and res.text_gate.chosen == 1 and res.status == "completed"
    assert res.token_usage()["prompt_tokens"] == sum(c.usage["prompt_tokens"] for c in res.candidates) > 0
    assert all(KEY in r.request.headers["authorization"] for r in route.calls)  # it was used ...
    dumped = [repr(agent), repr(llm), res.model_dump_json(), caplog.text,
              *(e.model_dump_json() for e in events)]
    assert not any(KEY in text for text in dumped)  # ... and is nowhere else
    assert KEY.encode() not in db.read_bytes()
    with sqlite3.connect(db) as con:  # the checkpoint really holds this run
        assert con.execute("select count(*) from checkpoints").fetchone()[0] > 0


def test_all_remote_providers_through_respx(tmp_path: Path) -> None:
    """OpenAI-compatible embeddings, chat and images in one graph run, all answered by respx."""
    import base64
    import io

    from vptt.agents.generators.openai_images import OpenAIImageGenerator
    from vptt.stores.embedders import OpenAIEmbedder

    hashing = HashEmbedder()

    def embeddings(request: httpx.Request) -> httpx.Response:
        texts = json.loads(request.content)["input"]
        vecs = hashing.embed(texts)
        return httpx.Response(200, json={"object": "list", "model": "e", "usage": {"prompt_tokens": 1,
                                                                                  "total_tokens": 1},
                                         "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                                                  for i, v in enumerate(vecs)]})

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    image_reply = {"created": 0, "data": [{"b64_json": base64.b64encode(buf.getvalue()).decode()}]}
    with respx.mock(base_url=BASE) as mock:
        emb_route = mock.post("/embeddings").mock(side_effect=embeddings)
        mock.post("/chat/completions").mock(side_effect=_chat)
        img_route = mock.post("/images/generations").mock(return_value=httpx.Response(200, json=image_reply))
        emb = OpenAIEmbedder("e", dim=64, base_url=BASE, api_key=KEY, http_client=httpx.Client())
        p = Personalizer(InMemoryPersonaStore(emb))
        p.store.upsert(make_persona("alice", ["A wooden boat on a misty lake at dawn."]))
        llm = LLMComposer(model="m", base_url=BASE, api_key=KEY, http_client=httpx.Client())
        gen = OpenAIImageGenerator(model="gpt-image-1", base_url=BASE, api_key=KEY,
                                   http_client=httpx.Client())
        res = PersonalizationAgent(p, composer=llm, generator=gen, text_gate=TextGateConfig(threshold=-1.0),
                                   save_dir=tmp_path).run("alice", QUERY)
    assert res.status == "completed" and res.prompt == "lake story t0.7"
    assert res.candidates[0].score is not None
    assert res.image.getpixel((0, 0)) == (1, 2, 3) and img_route.call_count == 1
    assert emb_route.call_count >= 3  # persona texts, the query, the prompt (VPTT gate)
