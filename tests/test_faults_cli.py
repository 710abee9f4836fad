"""The CLI answers bad input with one readable ``error:`` line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vptt.sdk.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A data dir holding one persona whose text fields carry terminal escape sequences."""
    d = tmp_path_factory.mktemp("cli-faults")
    f = d / "p.jsonl"
    persona = {"persona_id": "evil", "demographics": {"occupation": "\x1b[31mred\x1b[0m [bold]x[/bold]",
                                                      "city": "\u202eevil"},
               "posts": [{"post_id": "1", "caption": "A boat \x1b]0;title\x07 on a lake.",
                          "elements": {"objects": ["boat"], " objects": ["oar"]}}]}
    f.write_text(json.dumps(persona) + "\n" + '{"persona_id": "bad\\u001b[31m", "posts": []}\n')
    env = {"VPTT_DATA_DIR": str(d / "data"), "HF_HUB_OFFLINE": "1"}
    r = runner.invoke(app, ["ingest", str(f), "--on-error", "skip"], env=env)
    assert r.exit_code == 0, r.output
    assert "p.jsonl:2: persona_id" in r.output.replace("\n", "") and "\x1b" not in r.output
    return env


def _one_error_line(r: object, words: str, code: int = 2) -> None:
    assert r.exit_code == code, r.output  # type: ignore[attr-defined]
    assert isinstance(r.exception, SystemExit), repr(r.exception)  # type: ignore[attr-defined]
    out = r.output  # type: ignore[attr-defined]
    assert "Traceback" not in out and out.count("error:") == 1 and words in out.replace("\n", " ")


@pytest.mark.parametrize("var,value,words", [
    ("VPTT_TAU", "-1", "VPTT_TAU"), ("VPTT_TAU", "0", "greater than 0"), ("VPTT_TAU", "abc", "valid number"),
    ("VPTT_TAU", "nan", "VPTT_TAU"), ("VPTT_TOKEN_BUDGET", "-5", "VPTT_TOKEN_BUDGET"),
    ("VPTT_PER_CATEGORY_BUDGET", "-1", "VPTT_PER_CATEGORY_BUDGET"), ("VPTT_STORE", "mongo", "'chroma' or 'memory'"),
    ("VPTT_EMBEDDER", "bert", "'minilm' or 'openai'"), ("VPTT_CHROMA_PORT", "http", "VPTT_CHROMA_PORT"),
    ("VPTT_CHROMA_PORT", "70000", "65535"), ("VPTT_TEXT_GATE_THRESHOLD", "55", "VPTT_TEXT_GATE_THRESHOLD"),
    ("VPTT_DEVICE", "tpu", "cuda:N"), ("VPTT_REQUEST_TIMEOUT_S", "-1", "VPTT_REQUEST_TIMEOUT_S")])
def test_bad_settings(var: str, value: str, words: str, tmp_path: Path) -> None:
    r = runner.invoke(app, ["personas", "list"], env={"VPTT_DATA_DIR": str(tmp_path), var: value})
    _one_error_line(r, words)


def test_device_without_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = runner.invoke(app, ["personalize", "x", "a lake"], env={"VPTT_DATA_DIR": str(tmp_path),
                                                              "VPTT_DEVICE": "cuda"})
    _one_error_line(r, "CUDA is not available")


def test_terminal_escapes_in_data_are_shown_escaped(store: dict[str, str]) -> None:
    for args in (["personas", "list"], ["personas", "show", "evil"]):
        r = runner.invoke(app, args, env=store)
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.output and "\u202e" not in r.output and "\x07" not in r.output
        assert "\\x1b" in r.output
    assert "[bold]x[/bold]" in runner.invoke(app, ["personas", "list"], env=store).output  # markup is data
    r = runner.invoke(app, ["personas", "show", "evil", "--json"], env=store)
    assert json.loads(r.output)["posts"][0]["elements"] == {"objects": ["boat", "oar"]}


@pytest.mark.parametrize("args,words", [
    (["personalize", "evil", "a \udcff lake"], "invalid text"),
    (["personalize", "evil", "   "], "non-empty"),
    (["personalize", "evil", "a lake", "--method", "VPRAG"], "did you mean 'vprag'"),
    (["personalize", "evil", "a lake", "--token-budget", "-5"], "token_budget"),
    (["personalize", "evil", "a lake", "--token-budget", "0"], "token_budget"),
    (["personalize", "evil", "a lake", "--gate-threshold", "55"], "outside [-1, 1]"),
    (["evaluate", "--task", "bad name=q"], "task"),
    (["evaluate", "--task", "x:bogus=q"], "kind"),
])
def test_bad_arguments(store: dict[str, str], args: list[str], words: str) -> None:
    _one_error_line(runner.invoke(app, args, env=store), words)  # invalid input: exit 2


def test_unknown_persona_is_an_error_not_invalid_input(store: dict[str, str]) -> None:
    _one_error_line(runner.invoke(app, ["personalize", "nobody", "a lake"], env=store), "not found", code=1)


@pytest.mark.parametrize("damage", [b"{}\n", b"\xff\xfe\x00garbage\n", b'{"persona_id": "a", "ta\n'])
def test_bench_report_on_damaged_rows(tmp_path: Path, damage: bytes) -> None:
    good = json.dumps({"persona_id": "a", "task": "t", "method": "vprag", "score": 0.5}).encode() + b"\n"
    (tmp_path / "rows.jsonl").write_bytes(good + damage + good.replace(b'"a"', b'"b"'))
    _one_error_line(runner.invoke(app, ["bench", "report", str(tmp_path)]), "rows.jsonl:2", code=1)


def test_bench_report_on_an_empty_manifest(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(json.dumps({"persona_id": "a", "task": "t", "method": "m",
                                                     "score": 0.5}) + "\n")
    (tmp_path / "manifest.json").write_text("")
    _one_error_line(runner.invoke(app, ["bench", "report", str(tmp_path)]), "is empty", code=1)
