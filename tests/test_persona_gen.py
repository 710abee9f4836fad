"""Persona pipeline through respx: retries of malformed JSON, exclusions, the content mix, bias mitigation,
resumable JSONL output and the report; the procedural generator and the ``bench generate`` CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
import respx
import typer
from typer.testing import CliRunner

from vptt.agents.persona_gen import prompts as P
from vptt.agents.persona_gen.faces import stable_u64
from vptt.agents.persona_gen.pipeline import (
    GenerationConfig,
    JSONChat,
    LLMConfig,
    generate_persona,
    remap_location,
    resolve_gender,
)
from vptt.agents.persona_gen.procedural import PROCEDURAL_LABEL, REGIONS, generate_procedural
from vptt.agents.persona_gen.runner import (
    existing_ids,
    generate_personas,
    load_seeds,
    select_seeds,
    write_procedural,
)
from vptt.core.models import CANONICAL_CATEGORIES
from vptt.core.personas import load_personas
from vptt.core.providers import RetryConfig

BASE = "http://testserver/v1"
WORDS = ("warm light falls across carved stone while the person arranges clay cups on a low wooden table "
         "near an open courtyard and the market hums beyond the arch").split()


def _reply(content: str) -> httpx.Response:
    return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": content}}]})


def _data(messages: list[dict]) -> dict:
    user = messages[1]["content"]
    return json.loads(user[user.index("<data>") + 6:user.index("</data>")])


def _caption(n: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n)) + "."


class FakeLLM:
    """Scripted chat endpoint. Seeds carry ``TAG=X``; later stages find X in the occupation ``potter X``."""

    def __init__(self, *, demo_bad_once: set[str] = frozenset(), vocab_bad: set[str] = frozenset(),
                 short_captions: set[str] = frozenset(), country: str = "India", confidence: float = 0.2):
        self.demo_bad_once, self.vocab_bad, self.short = demo_bad_once, vocab_bad, short_captions
        self.country, self.confidence = country, confidence
        self.bodies: list[dict] = []
        self.tags: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        msgs, retry = body["messages"], len(body["messages"]) > 2
        system, data = msgs[0]["content"], _data(body["messages"])
        text = json.dumps(data)
        tag = re.search(r"TAG=(\w)|potter (\w)", text)
        tag = (tag.group(1) or tag.group(2)) if tag else "?"
        self.tags.append(tag)
        if system == P.DEMOGRAPHICS_SYSTEM:
            if tag in self.demo_bad_once and not retry:
                return _reply('Sure! Here it is: {"age": 34, "country": "India",')
            return _reply(json.dumps({"age": 34, "gender": "female", "gender_stated_in_seed": True,
                                      "country": self.country, "city": "Jaipur", "ethnicity": "Rajasthani",
                                      "location_confidence": self.confidence, "location_evidence": "none"}))
        if system == P.COMPLETION_SYSTEM:
            return _reply(json.dumps({"occupation": f"potter {tag}", "education": "art school",
                                      "interests": ["clay", "tea", "markets", "kilns", "glazes"],
                                      "personality": ["patient"], "social_media_tone": "quiet",
                                      "lifestyle": ["early riser"], "nested": {"ignored": 1}}))
        if system.startswith(P.VOCABULARY_SYSTEM[:60]):
            if tag in self.vocab_bad:
                return _reply('{"elements": {"foreground": ["a", ')
            return _reply(json.dumps({"elements": {c: [f"{c} term {i}" for i in range(22)]
                                                   for c in CANONICAL_CATEGORIES}}))
        if system.startswith(P.PREFERENCES_SYSTEM[:60]):
            return _reply(json.dumps({"preferences": [f"prefers thing {i}" for i in range(16)],
                                      "summary": f"A potter {tag} who photographs clay."}))
        if system == P.SCENARIOS_SYSTEM:
            return _reply("```json\n" + json.dumps({"scenarios": [
                {"slot": s["slot"], "title": f"scene {s['slot']}",
                 "scenario": f"A {s['type']} at {s['time_of_day']}."}
                for s in data["slots"]]}) + "\n```")
        assert system.startswith(P.CAPTION_SYSTEM[:60]), system[:80]
        slot = data["post"]["slot"]
        n = 20 if tag in self.short and slot > 8 else 160
        els = {c: [f"{c} term {slot % 22}", f"{c} term {(slot + 1) % 22}"] for c in CANONICAL_CATEGORIES}
        return _reply(json.dumps({"caption": _caption(n), "elements": els}))


def _chat() -> JSONChat:
    return JSONChat(LLMConfig(model="qwen-test", base_url=BASE, api_key="sk-test",
                              retry=RetryConfig(max_attempts=1)), http_client=httpx.Client())


def _remapped_index(country: str = "India") -> int:
    return next(i for i in range(200) if remap_location(i, country, "Jaipur", "x", 0.2).new is not None)


@pytest.fixture()
def run(tmp_path: Path):
    """Seeds: A (one malformed reply, recovered), B (vocabulary always malformed), C (22 short captions)."""
    ia = _remapped_index()
    seeds = [f"filler {i}" for i in range(ia + 3)]
    seeds[ia], seeds[ia + 1], seeds[ia + 2] = ("TAG=A. Throws pottery and loves tea.", "TAG=B. A teacher.",
                                               "TAG=C. A cook.")
    fake = FakeLLM(demo_bad_once={"A"}, vocab_bad={"B"}, short_captions={"C"})
    out = tmp_path / "personas.jsonl"
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(side_effect=fake)
        report = generate_personas(seeds, out, chat=_chat(), indices=[ia, ia + 1, ia + 2], workers=3,
                                   progress=False)
    return {"ia": ia, "seeds": seeds, "fake": fake, "out": out, "report": report, "tmp": tmp_path}


def test_pipeline_output_report_and_exclusions(run: dict) -> None:
    ia, report, out = run["ia"], run["report"], run["out"]
    personas = load_personas(out)
    assert [p.persona_id for p in personas] == [f"vptt_{ia:06d}"]
    a = personas[0]
    assert len(a.posts) == 30 and a.extra["generator"] == "llm:qwen-test"
    # malformed demographics reply: retried, succeeded, and reported with its raw text
    rec = [m for m in report.malformed if m.persona_id == a.persona_id]
    assert len(rec) == 1 and rec[0].recovered and rec[0].stage == "demographics" and "Sure!" in rec[0].raw
    # B: vocabulary malformed on every attempt -> excluded, each raw reply reported
    b_id, c_id = f"vptt_{ia + 1:06d}", f"vptt_{ia + 2:06d}"
    excluded = {e.persona_id: e for e in report.excluded}
    assert "vocabulary" in excluded[b_id].reason
    b_bad = [m for m in report.malformed if m.persona_id == b_id]
    assert len(b_bad) == 3 and not any(m.recovered for m in b_bad)
    assert all('"foreground"' in m.raw for m in b_bad)
    # C: 22 captions too short after 3 attempts each -> 8 valid posts -> excluded, posts reported
    assert excluded[c_id].valid_posts == 8 and "fewer than 10" in excluded[c_id].reason
    assert sum(p.persona_id == c_id for p in report.invalid_posts) == 22
    saved = json.loads(Path(f"{out}.report.json").read_text())
    assert saved["generated"] == [a.persona_id] and len(saved["excluded"]) == 2
    assert any("Sure!" in m["raw"] for m in saved["malformed"])


def test_persona_content_mix_slots_and_elements(run: dict) -> None:
    a = load_personas(run["out"])[0]
    assert Counter(p.type for p in a.posts) == {"activity": 10, "appreciation": 8, "shared": 7, "selfie": 5}
    plan = P.plan_slots(30, stable_u64(f"slots|{a.persona_id}") % 2**32)
    assert [p.type for p in a.posts] == [s.type for s in plan]
    assert {p.model_extra["social"] for p in a.posts if p.type == "appreciation"} == {"no people"}
    assert Counter(p.model_extra["social"] for p in a.posts) == {"no people": 8, "solo": 11, "group": 11}
    assert sorted(Counter(p.model_extra["season"] for p in a.posts).values()) == [7, 7, 8, 8]
    assert set(Counter(p.model_extra["time_of_day"] for p in a.posts).values()) == {6}
    # vocabulary cut to 20 per category, then pruned to entries used by posts
    used = {t for p in a.posts for v in p.elements.values() for t in v}
    assert a.elements and all(set(v) <= used for v in a.elements.values())
    assert a.extra["generation"]["vocabulary_size"] == 8 * 20
    assert len(a.preferences) == 16 and a.demographics.occupation == "potter A"
    assert a.demographics.model_extra["education"] == "art school"
    assert "nested" not in a.demographics.model_extra


def test_bias_mitigation_and_gender_wired_through(run: dict) -> None:
    a = load_personas(run["out"])[0]
    decision = remap_location(run["ia"], "India", "Jaipur", "Rajasthani", 0.2)
    assert decision.new is not None
    assert (a.demographics.country, a.demographics.city) == (decision.new["country"], decision.new["city"])
    assert a.extra["generation"]["bias_remap"]["remapped"] is True
    assert run["report"].remapped[0]["to"]["city"] == a.demographics.city
    completion = next(b for b, t in zip(run["fake"].bodies, run["fake"].tags)
                      if t == "A" and b["messages"][0]["content"] == P.COMPLETION_SYSTEM)
    assert _data(completion["messages"])["demographics"]["city"] == decision.new["city"]
    # the seed states no gender, so the model's "female" is not used
    assert a.demographics.gender == "unknown"


def test_request_shape(run: dict) -> None:
    bodies = run["fake"].bodies
    assert all(b["model"] == "qwen-test" and b["response_format"] == {"type": "json_object"} for b in bodies)
    scen = [b for b in bodies if b["messages"][0]["content"] == P.SCENARIOS_SYSTEM]
    assert scen and all(b["temperature"] == 0.9 for b in scen)
    assert all(len(_data(b["messages"])["slots"]) == 6 for b in scen)
    retry = next(b for b in bodies if len(b["messages"]) == 4)
    assert retry["messages"][2]["role"] == "assistant"
    assert "could not be used" in retry["messages"][3]["content"]


def test_resume_skips_written_personas_and_repairs_torn_line(run: dict) -> None:
    out, ia = run["out"], run["ia"]
    with open(out, "ab") as fh:
        fh.write(b'{"persona_id": "torn", "posts": [')
    assert existing_ids(out) == {f"vptt_{ia:06d}"}
    assert out.read_bytes().endswith(b"\n")
    fake = FakeLLM(vocab_bad={"B"}, short_captions={"C"})
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(side_effect=fake)
        report = generate_personas(run["seeds"], out, chat=_chat(), indices=[ia, ia + 1, ia + 2],
                                   progress=False)
    assert report.skipped_existing == [f"vptt_{ia:06d}"] and "A" not in fake.tags
    assert len(load_personas(out)) == 1


def test_custom_config_batches_and_mix() -> None:
    fake = FakeLLM(country="Peru", confidence=0.9)
    cfg = GenerationConfig(n_posts=12, scenario_batch=8, id_prefix="t_", min_valid_posts=12,
                           prune_unused=False)
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(side_effect=fake)
        out = generate_persona("TAG=D. He is a chef in Cusco.", 4, _chat(), cfg)
    assert out.excluded is None and out.persona is not None and out.persona.persona_id == "t_000004"
    p = out.persona
    assert Counter(x.type for x in p.posts) == P.content_type_counts(12) == {
        "activity": 4, "appreciation": 3, "shared": 3, "selfie": 2}
    batches = [len(_data(b["messages"])["slots"]) for b in fake.bodies
               if b["messages"][0]["content"] == P.SCENARIOS_SYSTEM]
    assert batches == [8, 4]
    assert p.demographics.gender == "unknown"  # the model's "female" contradicts the seed's "He"
    assert (p.demographics.country, p.extra["generation"]["bias_remap"]["remapped"]) == ("Peru", False)
    assert all(len(v) == 20 for v in p.elements.values())  # not pruned


def test_resolve_gender_and_remap_rates() -> None:
    assert resolve_gender("female", True, "She runs a bakery in Lyon.") == "female"
    assert resolve_gender("female", True, "Runs a bakery in Lyon.") == "unknown"
    assert resolve_gender("male", False, "He runs a bakery.") == "unknown"
    assert resolve_gender("female", True, "He runs a bakery.") == "unknown"
    assert resolve_gender("Woman", True, "A mother of two and her husband run a bakery.") == "female"
    assert resolve_gender("male", True, "A grandfather who fishes.") == "male"
    assert resolve_gender("non-binary", True, "A nonbinary DJ in Berlin.") == "non-binary"
    assert resolve_gender("unknown", True, "She runs a bakery.") == "unknown"
    n = 4000
    for country, rate in (("India", 0.70), ("USA", 0.65), ("United Kingdom", 0.60), ("Canada", 0.50)):
        hits = [remap_location(i, country, "c", "e", 0.3) for i in range(n)]
        frac = sum(h.new is not None for h in hits) / n
        assert abs(frac - rate) < 0.03, (country, frac)
        assert remap_location(7, country, "c", "e", 0.3) == hits[7]  # deterministic per seed index
    india = [remap_location(i, "India", "c", "e", 0.1).new for i in range(n)]
    regions = Counter(x["region"] for x in india if x)
    assert "south_asia" not in regions and set(regions) == set(REGIONS) - {"south_asia"}
    assert all(remap_location(i, "India", "c", "e", 0.9).new is None for i in range(200))
    assert all(remap_location(i, "Peru", "c", "e", 0.1).new is None for i in range(200))


@pytest.mark.parametrize("n", [1, 7, 10, 30, 31, 100])
def test_content_type_counts_largest_remainder(n: int) -> None:
    counts = P.content_type_counts(n)
    assert sum(counts.values()) == n
    for t, share in P.CONTENT_MIX.items():
        assert abs(counts[t] - n * share) < 1
    assert P.content_type_counts(30) == {"activity": 10, "appreciation": 8, "shared": 7, "selfie": 5}


def test_seeds_loading_and_selection(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text('{"persona": "a nurse"}\n\n"a chef"\n{"text": "a farmer"}\n')
    assert load_seeds(f) == ["a nurse", "a chef", "a farmer"]
    t = tmp_path / "s.txt"
    t.write_text("one\n\ntwo\n")
    assert load_seeds(t) == ["one", "two"]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"persona": "x"}\n{"other": 1}\n')
    with pytest.raises(ValueError, match="b.jsonl:2"):
        load_seeds(bad)
    assert select_seeds(10, 3, offset=2) == [2, 3, 4]
    h = select_seeds(50, 50, mode="hash")
    assert sorted(h) == list(range(50)) and h == select_seeds(50, 50, mode="hash") and h != list(range(50))


def test_procedural_is_labelled_and_valid(tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    report = write_procedural(out, 9, seed=3)
    personas = load_personas(out)
    assert len(personas) == 9 and report.mode == "procedural"
    assert {p.extra["generator"] for p in personas} == {PROCEDURAL_LABEL}
    assert {p.extra["generation"]["region"] for p in personas} == set(REGIONS)
    for p in personas:
        assert Counter(x.type for x in p.posts) == P.content_type_counts(30)
        assert all(150 <= len(x.caption.split()) <= 250 for x in p.posts)
        assert all(set(x.elements) == set(CANONICAL_CATEGORIES) for x in p.posts)
    assert write_procedural(out, 9, seed=3).skipped_existing == [p.persona_id for p in personas]
    assert [p.model_dump() for p in generate_procedural(2, seed=3)] == [p.model_dump() for p in personas[:2]]


def test_cli_generate_procedural_and_errors(tmp_path: Path) -> None:
    from vptt.sdk.cli.generate import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """root"""

    register(app)
    runner = CliRunner()
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["bench", "generate", "--out", str(out), "--procedural", "2", "--posts", "12"])
    assert r.exit_code == 0, r.output
    assert "not LLM-generated" in r.output and len(load_personas(out)) == 2
    r = runner.invoke(app, ["bench", "generate", "--out", str(out)])
    assert r.exit_code == 2 and "SEEDS" in r.output
    assert runner.invoke(app, ["ingest-photos", "--help"]).exit_code == 0


@pytest.mark.parametrize("text,expected", [('{"a": 1}', {"a": 1}), ('```json\n{"a": 2}\n```', {"a": 2}),
                                           ('Sure: {"a": 3} hope it helps', {"a": 3})])
def test_extract_json_accepts(text: str, expected: dict) -> None:
    assert P.extract_json(text) == expected


@pytest.mark.parametrize("text,match", [('{"a": [1,', "unterminated"), ("hello", "no JSON object"),
                                        ("[1, 2]", "expected a JSON object"), ("", "empty")])
def test_extract_json_rejects(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        P.extract_json(text)


def test_existing_ids_refuses_a_bad_middle_line(tmp_path: Path) -> None:
    f = tmp_path / "o.jsonl"
    f.write_text('{"persona_id": "a"}\nnot json\n{"persona_id": "b"}\n')
    with pytest.raises(ValueError, match="o.jsonl:2"):
        existing_ids(f)
    assert f.read_text().count("\n") == 3  # nothing cut


def test_refused_key_stops_the_run_and_keeps_the_report(tmp_path: Path) -> None:
    from vptt.core.providers import ProviderAuthError

    out = tmp_path / "o.jsonl"
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=httpx.Response(401, json={"error": "no"}))
        with pytest.raises(ProviderAuthError, match="API key"):
            generate_personas([f"seed {i}" for i in range(20)], out, chat=_chat(), workers=2, progress=False)
    assert route.call_count < 20
    assert json.loads(Path(f"{out}.report.json").read_text())["generated"] == []
