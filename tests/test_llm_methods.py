"""What each method's LLM sees (and does not see): the real HTTP request of every method, through respx.

Paper Sec. 4.1 and DESIGN.md: Baseline — nothing, no call; Persona Only — the demographics fields only;
BRAG — all captions in decreasing cosine to the query; VPRAG — the summary S_p and the VPRAG elements in
retrieval order; Comb. — BRAG's captions plus VPRAG's summary and elements. One system prompt for all.
"""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
import respx

from tests.conftest import make_persona
from vptt import Personalizer, VPTTSettings
from vptt.agents.llm_composer import (
    LLM_PRESETS,
    MEMORY_CLOSE,
    MEMORY_OPEN,
    SYSTEM_TEMPLATE,
    LLMComposer,
    LLMComposerConfig,
)
from vptt.core.errors import ConfigError
from vptt.core.providers import RetryConfig
from vptt.sdk.cli._llm import llm_config
from vptt.stores.memory import InMemoryPersonaStore

BASE = "http://llm.test/v1"
QUERY = "A preferred outdoor spot"
CAPTIONS = ["CAPMARK0 A wooden boat on a misty lake at dawn with pine trees.",
            "CAPMARK1 A bowl of ramen steaming on a counter under paper lanterns.",
            "CAPMARK2 Surfers riding a wave at sunset on a sandy beach in summer.",
            "CAPMARK3 Cherry blossoms over a stone path in a quiet temple garden."]
DEMOGRAPHICS = {"age": 41, "gender": "female", "country": "Japan", "city": "Kyoto", "ethnicity": "ETHMARK",
                "occupation": "OCCMARK potter", "interests": ["raku", "hiking"], "personality": ["patient"],
                "social_media_tone": "TONEMARK quiet"}
SUMMARY = "SUMMARYMARK A potter who walks by lakes and temples."


@pytest.fixture
def pz(embedder) -> Personalizer:  # type: ignore[no-untyped-def]
    persona = make_persona("kyo", CAPTIONS, summary=SUMMARY, demographics=DEMOGRAPHICS,
                           elements={"environment": ["ELMARK misty lake shore"], "lighting": ["ELMARK dawn mist"],
                                     "objects": ["ELMARK wooden boat"]})
    p = Personalizer(InMemoryPersonaStore(embedder), settings=VPTTSettings(store="memory"))
    p.ingest([persona])
    return p


def _composer() -> LLMComposer:
    return LLMComposer(LLMComposerConfig(model="m", base_url=BASE, api_key="k", temperature=0.1, top_p=0.9,
                                         max_tokens=256, seed=42,
                                         retry=RetryConfig(initial_interval=0, jitter=False)),
                       http_client=httpx.Client())


def _data(body: dict) -> dict:
    user = body["messages"][1]["content"]
    return json.loads(user[user.index(MEMORY_OPEN) + len(MEMORY_OPEN):user.index(MEMORY_CLOSE)])


def _requests_per_method(pz: Personalizer) -> tuple[dict, dict]:
    seen: dict[str, list[dict]] = {}
    results = {}
    with respx.mock(base_url=BASE) as mock:
        current = {"m": ""}

        def reply(request: httpx.Request) -> httpx.Response:
            seen.setdefault(current["m"], []).append(json.loads(request.content))
            return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                             "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                                 "role": "assistant", "content": f"rewritten {current['m']}"}}],
                                             "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                                       "total_tokens": 7}})
        mock.post("/chat/completions").mock(side_effect=reply)
        for m in ("baseline", "persona_only", "brag", "vprag", "comb"):
            current["m"] = m
            results[m] = pz.personalize("kyo", QUERY, method=m, composer=_composer())
    return seen, results


def test_each_method_sees_exactly_what_the_paper_gives_it(pz: Personalizer) -> None:
    seen, results = _requests_per_method(pz)
    # Baseline: no access to any asset -> p' = p and no request at all
    assert "baseline" not in seen and results["baseline"].prompt == QUERY
    assert set(seen) == {"persona_only", "brag", "vprag", "comb"} and all(len(v) == 1 for v in seen.values())
    bodies = {m: v[0] for m, v in seen.items()}
    raw = {m: json.dumps(b) for m, b in bodies.items()}
    data = {m: _data(b) for m, b in bodies.items()}

    # one system prompt, identical for every method, with no method-specific instruction
    systems = {b["messages"][0]["content"] for b in bodies.values()}
    assert systems == {SYSTEM_TEMPLATE.format(max_words=150)}
    assert not re.search(r"verbatim|do not copy|don't copy", systems.pop(), re.I)
    for b in bodies.values():
        assert (b["model"], b["temperature"], b["top_p"], b["max_tokens"], b["seed"]) == ("m", 0.1, 0.9, 256, 42)

    # Persona Only: the demographics fields, nothing derived from posts (no summary, caption or element)
    assert data["persona_only"] == {"query": QUERY, "demographics": DEMOGRAPHICS}
    assert not re.search("SUMMARYMARK|CAPMARK|ELMARK", raw["persona_only"])

    # BRAG: all captions, in decreasing cosine to the query (computed here independently)
    q = pz.embedder.embed([QUERY])[0]
    caps = pz.embedder.embed(CAPTIONS)
    cos = caps @ q / (np.linalg.norm(caps, axis=1) * np.linalg.norm(q))
    ranked = [CAPTIONS[i] for i in sorted(range(len(CAPTIONS)), key=lambda i: (-cos[i], i))]
    assert data["brag"] == {"query": QUERY, "captions": ranked}
    assert not re.search("SUMMARYMARK|ELMARK|ETHMARK|OCCMARK|TONEMARK", raw["brag"])

    # VPRAG: the summary S_p and the VPRAG elements in retrieval order; no caption, no demographics
    kept = [(e.category, e.text) for e in results["vprag"].trace.elements if e.status == "kept"]
    assert kept and data["vprag"] == {"query": QUERY, "summary": SUMMARY,
                                      "elements": [{"category": c, "text": t} for c, t in kept]}
    assert not re.search("CAPMARK|ETHMARK|OCCMARK|TONEMARK", raw["vprag"])

    # Comb.: BRAG's captions plus VPRAG's summary and elements
    assert data["comb"] == {**data["vprag"], "captions": ranked}
    assert not re.search("ETHMARK|OCCMARK|TONEMARK", raw["comb"])
    for m in ("persona_only", "brag", "vprag", "comb"):
        assert results[m].prompt == f"rewritten {m}"
        assert results[m].trace.composition.inputs == [k for k in data[m] if k != "query"]


def test_summary_ablation_and_caps(pz: Personalizer) -> None:
    comp = LLMComposer(LLMComposerConfig(model="m", base_url=BASE, api_key="k", include_summary=False,
                                         max_captions=2, max_elements=1), http_client=httpx.Client())
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=httpx.Response(200, json={
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x y"}, "finish_reason": "stop"}]}))
        pz.personalize("kyo", QUERY, method="comb", composer=comp)
    data = _data(json.loads(route.calls[0].request.content))
    assert set(data) == {"query", "elements", "captions"} and len(data["captions"]) == 2 and len(data["elements"]) == 1


def test_presets_and_cli_options(monkeypatch: pytest.MonkeyPatch) -> None:
    qwen = LLMComposerConfig.from_preset("qwen")
    assert (qwen.model, qwen.temperature, qwen.top_p, qwen.max_tokens, qwen.seed) == (
        "Qwen/Qwen2.5-7B-Instruct", 0.1, 0.9, 256, 42)
    mini = LLMComposerConfig.from_preset("gpt-4o-mini")
    assert (mini.temperature, mini.seed, mini.top_p, mini.max_tokens) == (0.1, 42, None, None)
    gem = LLMComposerConfig.from_preset("gemini-2.5-pro", model="gemini-2.5-pro-exp", temperature=None)
    assert (gem.model, gem.temperature, gem.top_p, gem.seed) == ("gemini-2.5-pro-exp", 0.7, 0.95, None)
    assert set(LLM_PRESETS) == {"qwen2.5-7b-instruct", "gpt-4o-mini", "gemini-2.5-pro"}
    with pytest.raises(ConfigError, match="unknown LLM preset"):
        LLMComposerConfig.from_preset("llama")
    # the CLI's mapping: preset, then explicit flags; the key from VPTT_LLM_API_KEY, else OPENAI_API_KEY
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    opts = {"composer": "llm", "base_url": "http://v:8000/v1", "model": None, "preset": "qwen2.5-7b-instruct",
            "temperature": 0.3, "top_p": None, "max_tokens": None, "seed": 7, "concurrency": 32, "rpm": None,
            "tpm": 90000.0, "timeout": None, "cache": None}
    cfg = llm_config(VPTTSettings(store="memory"), **opts)
    assert (cfg.model, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed) == (
        "Qwen/Qwen2.5-7B-Instruct", 0.3, 0.9, 256, 7)
    assert (cfg.base_url, cfg.concurrency, cfg.tokens_per_min, cfg.cache) == ("http://v:8000/v1", 32, 90000.0, True)
    assert cfg.api_key.get_secret_value() == "sk-openai"
    monkeypatch.setenv("VPTT_LLM_API_KEY", "sk-vptt")
    cfg = llm_config(VPTTSettings(store="memory", llm_model="served-name"), **{**opts, "cache": False})
    assert cfg.api_key.get_secret_value() == "sk-vptt" and cfg.model == "served-name" and not cfg.cache
    assert "sk-vptt" not in json.dumps(cfg.describe()) and "sk-vptt" not in repr(cfg)
    assert llm_config(VPTTSettings(store="memory"), **{**opts, "composer": "template", "preset": None,
                                                       "base_url": None, "temperature": None, "seed": None}) is None
    with pytest.raises(ConfigError, match="only apply with --composer llm"):
        llm_config(VPTTSettings(store="memory"), **{**opts, "composer": "template"})
