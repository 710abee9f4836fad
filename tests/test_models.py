"""Persona validation (good and bad inputs), JSONL round trip, card text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vptt import Persona, PersonaValidationError, dump_personas, load_personas

GOOD = {"persona_id": "p1", "summary": "Likes tea.",
        "demographics": {"age": 40, "gender": "female", "country": "Japan", "city": "Kyoto",
                         "occupation": "potter", "interests": ["tea", "moss"]},
        "preferences": ["soft light"],
        "posts": [{"post_id": "a", "type": "selfie", "caption": "A woman at a wheel.",
                   "elements": {"foreground": ["clay"], "lighting": ["window light"]}, "image": None}]}


def _write(tmp_path: Path, rows: list[object]) -> Path:
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return f


def _with(path: str, value: object) -> dict:
    data = json.loads(json.dumps(GOOD))
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()

BAD = [
    ("missing id", _with("persona_id", _DELETE), "persona_id"),
    ("empty id", _with("persona_id", ""), "persona_id"),
    ("id with spaces", _with("persona_id", " p1 "), "persona_id"),
    ("empty caption", _with("posts.0.caption", "   "), "posts[0].caption"),
    ("missing caption", _with("posts.0.caption", _DELETE), "posts[0].caption"),
    ("element not list", _with("posts.0.elements", {"foreground": "clay"}), "posts[0].elements"),
    ("element item not str", _with("posts.0.elements", {"foreground": [3]}), "posts[0].elements"),
    ("elements not object", _with("posts.0.elements", ["clay"]), "posts[0].elements"),
    ("persona elements not list", _with("elements", {"lighting": 5}), "elements"),
    ("negative age", _with("demographics.age", -3), "demographics.age"),
    ("age text", _with("demographics.age", "forty"), "demographics.age"),
    ("age bool", _with("demographics.age", True), "demographics.age"),
    ("age fraction", _with("demographics.age", 40.5), "demographics.age"),
    ("interests not list", _with("demographics.interests", "tea"), "demographics.interests"),
    ("demographics not object", _with("demographics", "old"), "demographics"),
    ("posts not list", _with("posts", {"a": 1}), "posts"),
    ("bad post type", _with("posts.0.type", "story"), "posts[0].type"),
    ("missing post_id", _with("posts.0.post_id", _DELETE), "posts[0].post_id"),
    ("image not str", _with("posts.0.image", 5), "posts[0].image"),
    ("summary not str", _with("summary", ["x"]), "summary"),
]


@pytest.mark.parametrize("name,record,field", BAD, ids=[b[0] for b in BAD])
def test_bad_record_names_file_line_and_field(tmp_path: Path, name: str, record: dict, field: str) -> None:
    f = _write(tmp_path, [GOOD | {"persona_id": "ok"}, record])
    with pytest.raises(PersonaValidationError) as ei:
        load_personas(f)
    probs = ei.value.problems
    assert probs and all(p.file == str(f) and p.line == 2 for p in probs)
    assert any(p.field == field or p.field.startswith(field) for p in probs), [str(p) for p in probs]
    assert f"{f}:2:" in str(ei.value)


@pytest.mark.parametrize("raw,field", [("{not json", "<json>"), ("[1, 2]", "<record>"), ('"text"', "<record>")])
def test_undecodable_lines(tmp_path: Path, raw: str, field: str) -> None:
    f = _write(tmp_path, [raw])
    with pytest.raises(PersonaValidationError) as ei:
        load_personas(f)
    assert ei.value.problems[0].line == 1 and ei.value.problems[0].field == field


def test_duplicate_post_ids_and_persona_ids(tmp_path: Path) -> None:
    dup_posts = _with("posts", [GOOD["posts"][0], GOOD["posts"][0]])
    with pytest.raises(PersonaValidationError, match="duplicate post_id"):
        load_personas(_write(tmp_path, [dup_posts]))
    with pytest.raises(PersonaValidationError, match=r"duplicate persona_id 'p1' \(first on line 1\)"):
        load_personas(_write(tmp_path, [GOOD, "", GOOD]))


def test_skip_mode_loads_the_rest_and_reports(tmp_path: Path) -> None:
    f = _write(tmp_path, [GOOD, "{oops", _with("persona_id", _DELETE), GOOD | {"persona_id": "p2"}])
    got = load_personas(f, on_error="skip")
    assert [p.persona_id for p in got] == ["p1", "p2"]
    assert got.skipped_lines == [2, 3]
    assert {p.field for p in got.skipped} == {"<json>", "persona_id"}


def test_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    rec = json.loads(json.dumps(GOOD))
    rec["source"] = {"seed": 7}
    rec["demographics"]["education"] = "MFA"
    rec["posts"][0]["likes"] = 12
    rec["posts"][0]["elements"]["mood"] = ["calm"]
    f = _write(tmp_path, [rec])
    personas = load_personas(f)
    assert personas[0].extra == {"source": {"seed": 7}}
    out = tmp_path / "out.jsonl"
    assert dump_personas(personas, out) == 1
    again = json.loads(out.read_text())
    for key in ("source", "persona_id", "summary", "preferences"):
        assert again[key] == rec[key]
    assert again["demographics"]["education"] == "MFA"
    assert again["posts"][0]["likes"] == 12 and again["posts"][0]["elements"]["mood"] == ["calm"]
    assert load_personas(out)[0] == personas[0]


def test_defaults_and_categories() -> None:
    p = Persona.model_validate({"persona_id": "x", "posts": [{"post_id": "1", "caption": "c",
                                                               "elements": {"mood": ["calm"]}}]})
    assert p.demographics.age is None and p.posts[0].type == "activity" and p.posts[0].image is None
    assert p.categories()[-1] == "mood" and p.categories()[0] == "foreground"


def test_card_text_order_and_skipping() -> None:
    p = Persona.model_validate(GOOD)
    assert p.card_text() == ("Likes tea. Age 40, female, potter from Kyoto, Japan. Interests: tea, moss. "
                             "Preferences: soft light.")
    bare = Persona.model_validate({"persona_id": "b", "demographics": {"country": "Peru"}})
    assert bare.card_text() == "from Peru."
