"""Human-ratings files: the JSONL and CSV formats, and strict errors naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vptt.core.errors import RatingsValidationError
from vptt.evaluators.ratings import Rating, load_ratings, normalize_method
from vptt.sdk.cli.main import app

GOOD = [
    {"annotator": "a1", "persona_id": "p1", "task": "outdoor_spot", "method": "VPRAG (Ours)", "llm": "gpt-4o-mini",
     "score": 3.5, "image": "images/p1/outdoor_spot/vprag.png"},
    {"annotator": "a1", "persona_id": "p1", "task": "outdoor_spot", "method": "Persona Only", "llm": "gpt-4o-mini",
     "score": 0},
    {"annotator": "a2", "persona_id": "p1", "task": "outdoor_spot", "method": "vprag", "llm": "gpt-4o-mini",
     "score": 4.25},
]


def write_jsonl(path: Path, records: list) -> Path:  # type: ignore[type-arg]
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_jsonl_and_csv_read_the_same_ratings(tmp_path) -> None:
    js = load_ratings(write_jsonl(tmp_path / "r.jsonl", [GOOD[0], "", GOOD[1], GOOD[2]]))
    assert [(r.annotator, r.method, r.score, r.line) for r in js] == [
        ("a1", "vprag", 3.5, 1), ("a1", "persona_only", 0.0, 3), ("a2", "vprag", 4.25, 4)]
    assert js[0].image == "images/p1/outdoor_spot/vprag.png" and js[1].image is None
    csv = tmp_path / "r.csv"
    csv.write_text("\ufeffannotator,persona_id,task,method,llm,score,image\n"  # Excel's BOM is accepted
                   "a1,p1,outdoor_spot,VPRAG (Ours),gpt-4o-mini,3.5,images/p1/outdoor_spot/vprag.png\n"
                   "a1,p1,outdoor_spot,Persona Only,gpt-4o-mini,0,\n\n"
                   "a2,p1,outdoor_spot,vprag,gpt-4o-mini,4.25,\n")
    got = load_ratings(csv)
    strip = [(r.annotator, r.persona_id, r.task, r.method, r.llm, r.score, r.image) for r in got]
    assert strip == [(r.annotator, r.persona_id, r.task, r.method, r.llm, r.score, r.image) for r in js]
    assert [r.line for r in got] == [2, 3, 5]
    both = load_ratings([tmp_path / "r.jsonl", write_jsonl(tmp_path / "s.jsonl", [{**GOOD[0], "annotator": "a3"}])])
    assert len(both) == 4 and both[-1].file.endswith("s.jsonl")
    no_llm = load_ratings(write_jsonl(tmp_path / "n.jsonl", [{k: v for k, v in GOOD[0].items() if k != "llm"}]))
    assert no_llm == [Rating("a1", "p1", "outdoor_spot", "vprag", 3.5, None, GOOD[0]["image"],
                             str(tmp_path / "n.jsonl"), 1)]


def test_method_labels_are_normalised() -> None:
    assert [normalize_method(m) for m in ["Baseline", "Persona Only", "persona-only", "BRAG", "VPRAG (Ours)",
                                          "Comb. (Ours)", "Comb. (BRAG+VPRAG)", "brag + vprag", "my_method"]] == [
        "baseline", "persona_only", "persona_only", "brag", "vprag", "comb", "comb", "comb", "my_method"]


def problems_of(path: Path, **kwargs) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(RatingsValidationError) as info:
        load_ratings(path, **kwargs)
    assert all(str(p).startswith(str(path)) for p in info.value.problems)
    return [f"{p.line}:{p.field}:{p.message}" for p in info.value.problems]


def test_bad_jsonl_reports_every_problem_with_line_and_field(tmp_path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        GOOD[0],
        "{not json",
        "[1, 2]",
        {**GOOD[1], "score": 5.5},
        {**GOOD[1], "score": "high", "annotator": ""},
        {**GOOD[1], "score": True},
        {k: v for k, v in GOOD[1].items() if k != "task"},
        {**GOOD[1], "scroe": 3},
        {**GOOD[1], "persona_id": 17.5},
        {**GOOD[0]},  # the same rating again
        {**GOOD[1], "score": float("nan")},
    ])
    got = problems_of(bad)
    assert got[0].startswith("2:line:not valid JSON")
    assert got[1] == "3:line:must be a JSON object, got list"
    assert "4:score:must be a number in [0, 5], got 5.5" in got
    assert "5:annotator:missing or empty" in got and "5:score:must be a number in [0, 5], got 'high'" in got
    assert "6:score:must be a number in [0, 5], got True" in got
    assert "7:task:missing or empty" in got
    assert "8:scroe:unknown field; did you mean 'score'?" in got
    assert any(p.startswith("9:persona_id:must be a string") for p in got)
    assert any(p.startswith("10:annotator:duplicate rating") and "bad.jsonl:1" in p for p in got)
    assert any(p.startswith("11:score:") for p in got)
    assert len(got) == 11
    assert len(load_ratings(write_jsonl(tmp_path / "x.jsonl", [{**GOOD[0], "comment": "ok"}]), extra="ignore")) == 1


def test_bad_csv_and_bad_files(tmp_path) -> None:
    head = tmp_path / "head.csv"
    head.write_text("annotator,persona,task,method,score\n")
    assert problems_of(head) == ["1:persona:unknown field; did you mean 'persona_id'?",
                                 "1:persona_id:required column missing from the header"]
    cells = tmp_path / "cells.csv"
    cells.write_text("annotator,persona_id,task,method,score\na1,p1,t,vprag,3\na1,p1,t,brag\na1,p1,t,base,9\n")
    assert problems_of(cells) == ["3:line:has 4 cells, the header has 5",
                                  "4:score:must be a number in [0, 5], got '9'"]
    (tmp_path / "r.txt").write_text("x")
    assert problems_of(tmp_path / "r.txt") == ["0:file:unknown format: use .jsonl or .csv"]
    (tmp_path / "empty.jsonl").write_text("\n")
    assert problems_of(tmp_path / "empty.jsonl") == ["0:file:no ratings found"]
    with pytest.raises(FileNotFoundError):
        load_ratings(tmp_path / "missing.jsonl")


def test_cli_rejects_a_bad_file_with_exit_2(tmp_path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], {**GOOD[1], "score": -1}])
    (tmp_path / "run").mkdir()
    res = CliRunner().invoke(app, ["validate", str(bad), "--run", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert f"{bad}:2: score: must be a number in [0, 5], got -1" in " ".join(res.output.split())
