"""Bad input gets a typed error that says what to do (issue 12 "raw tracebacks" and issue 10 "clear errors").

Each test reproduces one case of the reliability audit: before the fix it ended in a raw Python error, a
silent wrong result, or control characters reaching the terminal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import HashEmbedderBase, make_persona
from vptt.agents.composer import TemplateComposer
from vptt.agents.gates import (
    FunctionImageEvaluator,
    MaskedSimilarityEvaluator,
    TextGateConfig,
    VLMJudgeEvaluator,
    VPTTTextScorer,
)
from vptt.agents.methods import get_method
from vptt.agents.personalizer import Personalizer
from vptt.agents.tasks import resolve_tasks
from vptt.core.errors import (
    ConfigError,
    EmptyQueryError,
    InvalidQueryError,
    PersonaTypeError,
    PersonaValidationError,
    VPTTError,
)
from vptt.core.models import Persona
from vptt.core.personas import load_personas, parse_persona
from vptt.sdk.agent import PersonalizationAgent
from vptt.sdk.api import personalize
from vptt.stores.memory import InMemoryPersonaStore

GOOD = {"persona_id": "good", "posts": [{"post_id": "1", "caption": "a wooden boat on a lake"}]}


class HashEmbedder(HashEmbedderBase):
    name, dim = "hash-faults", 64


@pytest.fixture(scope="module")
def pz() -> Personalizer:
    p = Personalizer(InMemoryPersonaStore(HashEmbedder()))
    p.ingest([make_persona("alice", ["A wooden boat on a misty lake.", "Ramen under paper lanterns."])])
    return p


# ----------------------------------------------------------------------------------- persona data
def test_category_keys_differing_by_whitespace_are_merged_not_dropped() -> None:
    p = Persona.model_validate({"persona_id": "x", "elements": {"objects": ["cup"], " objects": ["bowl"]},
                                "posts": [{"post_id": "1", "caption": "c", "elements": {
                                    "objects": ["lamp"], "objects\t": ["kettle"], " objects ": ["tray"],
                                    "back  ground": ["sea"], "back ground": ["sky"]}}]})
    assert p.elements == {"objects": ["cup", "bowl"]}
    assert p.posts[0].elements == {"objects": ["lamp", "kettle", "tray"], "back ground": ["sea", "sky"]}
    again = Persona.model_validate(p.model_dump(mode="json"))  # a round trip is stable
    assert again.posts[0].elements == p.posts[0].elements


@pytest.mark.parametrize("bad", ["red\x1b[31m", "a\x00b", "bell\x07", "rtl\u202eevil", "zero\u200bwidth",
                                 "line\u2028sep", "c1\x9b31m", "tab\tid", "new\nline"])
def test_control_characters_in_ids_are_rejected(bad: str) -> None:
    with pytest.raises(PersonaValidationError, match="control character U\\+") as info:
        parse_persona({**GOOD, "persona_id": bad}, file="f.jsonl", line=3)
    assert info.value.problems[0].field == "persona_id" and info.value.problems[0].line == 3
    with pytest.raises(PersonaValidationError, match="posts\\[0\\].post_id"):
        parse_persona({"persona_id": "ok", "posts": [{"post_id": bad, "caption": "c"}]})


def test_unicode_ids_without_controls_are_fine() -> None:
    assert parse_persona({**GOOD, "persona_id": "名前-é 👩‍🎨"}).persona_id == "名前-é 👩‍🎨"  # ZWJ inside emoji


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _good(pid: str) -> bytes:
    return json.dumps({**GOOD, "persona_id": pid}).encode()


BAD_LINES = {
    "invalid_utf8": (b'{"persona_id": "x\xff\xfe", "posts": []}', "<encoding>", "invalid UTF-8"),
    "lone_surrogate": (b'{"persona_id": "s", "summary": "bad \\ud800", "posts": []}', "summary", "surrogate"),
    "surrogate_key": (b'{"persona_id": "s", "\\udc00": 1}', "<record>", "surrogate"),
    "deep_nesting": (b'{"persona_id": "d", "x": ' + b"[" * 50000 + b"]" * 50000 + b"}", "<json>", "deeper"),
    "moderate_nesting": (b'{"persona_id": "d", "x": ' + b"[" * 500 + b"]" * 500 + b"}", "x[0]", "deeper"),
    "not_an_object": (b"[1, 2]", "<record>", "JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_jsonl_lines_name_file_line_and_field(tmp_path: Path, case: str) -> None:
    raw, field, words = BAD_LINES[case]
    path = _write(tmp_path / "p.jsonl", [_good("a"), raw, _good("b")])
    with pytest.raises(PersonaValidationError) as info:
        load_personas(path)
    problem = info.value.problems[0]
    assert (problem.file, problem.line) == (str(path), 2) and problem.field.startswith(field)
    assert words in problem.message
    loaded = load_personas(path, on_error="skip")  # the good lines still load, the report names the bad one
    assert [p.persona_id for p in loaded] == ["a", "b"] and loaded.skipped_lines == [2]


def test_wrong_typed_unknown_keys_are_kept_not_crashing(tmp_path: Path) -> None:
    lines = [json.dumps({**GOOD, "persona_id": f"e{i}", "extra": v}).encode()
             for i, v in enumerate([5, [1, 2], "str", None, {"k": {"deep": [1, None]}}])]
    lines.append(json.dumps({**GOOD, "persona_id": "w", "weird": {"a": [1, {"b": None}]}, "n": 1e308}).encode())
    loaded = load_personas(_write(tmp_path / "p.jsonl", lines))
    assert [p.extra.get("extra") for p in loaded[:3]] == [5, [1, 2], "str"]
    assert loaded[4].extra == {"k": {"deep": [1, None]}} and loaded[5].extra["weird"] == {"a": [1, {"b": None}]}
    for p in loaded:  # round trip keeps every unknown key
        assert Persona.model_validate(p.model_dump(mode="json")) == p
        p.content_hash()


def test_bom_at_file_start_is_accepted(tmp_path: Path) -> None:
    assert [p.persona_id for p in load_personas(_write(tmp_path / "p.jsonl", [b"\xef\xbb\xbf" + _good("a")]))] == ["a"]


# ----------------------------------------------------------------------------------- API arguments
@pytest.mark.parametrize("query,error", [(b"\xff\xfe", InvalidQueryError), ("abc \udcff", InvalidQueryError),
                                         ("\ud800", InvalidQueryError), (None, InvalidQueryError),
                                         (42, InvalidQueryError), ("   ", EmptyQueryError)])
def test_bad_queries(pz: Personalizer, query: object, error: type) -> None:
    with pytest.raises(error, match="query"):
        pz.personalize("alice", query)  # type: ignore[arg-type]
    with pytest.raises(error, match="query"):
        personalize("alice", query, personalizer=pz)  # type: ignore[arg-type]
    assert issubclass(error, InvalidQueryError) and issubclass(error, ValueError)


@pytest.mark.parametrize("method", [None, 3, ["vprag"]])
def test_method_that_is_not_a_string(pz: Personalizer, method: object) -> None:
    with pytest.raises(ConfigError, match="method must be a method name"):
        pz.personalize("alice", "a lake", method=method)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="method must be a method name"):
        personalize("alice", "a lake", method=method, personalizer=pz)  # type: ignore[arg-type]


@pytest.mark.parametrize("name,hint", [("VPRAG", "'vprag'"), ("Persona-Only", "'persona_only'"),
                                       ("BRAG ", "'brag'"), ("vprga", "'vprag'")])
def test_method_in_capitals_or_misspelt_gets_did_you_mean(name: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=f"did you mean {hint}"):
        get_method(name)


@pytest.mark.parametrize("persona", [{"persona_id": "alice"}, 5, None, ["alice"], ""])
def test_non_persona_objects(pz: Personalizer, persona: object) -> None:
    with pytest.raises(PersonaTypeError) as bare:
        pz.personalize(persona, "a lake")  # type: ignore[arg-type]
    with pytest.raises(PersonaTypeError):
        personalize(persona, "a lake", personalizer=pz)  # type: ignore[arg-type]
    assert isinstance(bare.value, TypeError) and isinstance(bare.value, VPTTError)
    if isinstance(persona, dict):
        assert "Persona.model_validate" in str(bare.value)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), "high", True, None])
def test_text_gate_threshold_that_is_no_number(threshold: object) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        TextGateConfig(threshold=threshold)
    assert TextGateConfig(threshold=0.62).threshold == 0.62


@pytest.mark.parametrize("threshold", [55, -3, 1.01])
def test_text_gate_threshold_outside_the_vptt_score_range(pz: Personalizer, threshold: float) -> None:
    with pytest.raises(ConfigError, match=r"outside \[-1, 1\]"):
        PersonalizationAgent(pz, text_gate=TextGateConfig(threshold=threshold))
    with pytest.raises(ConfigError, match="outside"):  # the variant scorer has the same range
        PersonalizationAgent(pz, text_scorer=VPTTTextScorer(pz.embedder, variant="score_c"),
                             text_gate=TextGateConfig(threshold=threshold))
    PersonalizationAgent(pz, text_scorer=lambda_scorer(), text_gate=TextGateConfig(threshold=threshold))


def lambda_scorer() -> object:
    """A custom scorer on its own scale (no ``score_range``): any finite threshold is the user's call."""
    return type("S", (), {"name": "custom", "__call__": lambda self, persona, prompt: 10.0})()


def test_image_gate_thresholds_are_checked() -> None:
    with pytest.raises(ConfigError, match="0-5"):
        VLMJudgeEvaluator(judge=object(), threshold=55)
    with pytest.raises(ConfigError, match="cosines"):
        MaskedSimilarityEvaluator(object(), reference_mask=None, threshold=3)
    with pytest.raises(ConfigError, match="threshold"):
        FunctionImageEvaluator("f", lambda i, c: 0.0, float("nan"))


@pytest.mark.parametrize("budget", [-5, 0, 2.5, True])
def test_bad_token_budget(budget: object) -> None:
    with pytest.raises(ConfigError, match="token_budget"):
        TemplateComposer(budget)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["bad name=q", "=q", "x:bogus=q", "x=", "nothing", "x=\udcff"])
def test_malformed_task(spec: str) -> None:
    with pytest.raises(ConfigError, match="task"):
        resolve_tasks([spec])


def test_malformed_task_file(tmp_path: Path) -> None:
    for body in (b"{not json", b"\xff\xfe", b'{"name": "x"}', b'[{"name": "x"}]'):
        (tmp_path / "t.json").write_bytes(body)
        with pytest.raises(ConfigError, match="t.json"):
            resolve_tasks([str(tmp_path / "t.json")])
