"""The `vptt` CLI through typer's runner, against an embedded Chroma store in a temp dir."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.conftest import make_persona
from vptt import dump_personas
from vptt.sdk.cli.main import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path, two_personas):
    f = tmp_path / "p.jsonl"
    dump_personas(two_personas, f)
    return {"VPTT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}, f


def test_ingest_list_show_personalize_delete(env) -> None:
    e, f = env
    r = runner.invoke(app, ["ingest", str(f)], env=e)
    assert r.exit_code == 0, r.output
    assert "created 2" in r.output
    r = runner.invoke(app, ["ingest", str(f)], env=e)
    assert "unchanged 2" in r.output and "embedded 0 texts" in r.output
    r = runner.invoke(app, ["personas", "list", "--json"], env=e)
    assert json.loads(r.output) == ["alice", "bob"]
    r = runner.invoke(app, ["personas", "show", "alice", "--json"], env=e)
    assert json.loads(r.output)["persona_id"] == "alice"
    r = runner.invoke(app, ["personalize", "alice", "A preferred outdoor spot", "--json"], env=e)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["method"] == "vprag" and "A preferred outdoor spot" in out["prompt"]  # led by the summary S_p
    r = runner.invoke(app, ["personalize", "alice", "A preferred outdoor spot"], env=e)
    assert r.output.strip() == out["prompt"]  # stdout is not a terminal: the prompt alone
    r = runner.invoke(app, ["personalize", "alice", "A preferred outdoor spot", "--pretty"], env=e)
    assert "n_eff" in r.output and "quotas" in r.output
    r = runner.invoke(app, ["personas", "delete", "alice"], env=e)
    assert r.exit_code == 0
    r = runner.invoke(app, ["personalize", "alice", "x"], env=e)
    assert r.exit_code == 1 and "not found" in r.output


def test_bad_file_is_reported_and_writes_nothing(env, tmp_path) -> None:
    e, f = env
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f.read_text() + '{"persona_id": "c", "posts": [{"post_id": "1", "caption": ""}]}\n')
    r = runner.invoke(app, ["ingest", str(bad)], env=e)
    assert r.exit_code == 2 and "bad.jsonl:3: posts[0].caption" in r.output.replace("\n", "")
    r = runner.invoke(app, ["personas", "list", "--json"], env=e)
    assert json.loads(r.output) == []
    r = runner.invoke(app, ["ingest", str(bad), "--on-error", "skip"], env=e)
    assert r.exit_code == 0 and "created 2" in r.output and "skipped" in r.output


def test_demo_runs_on_a_small_file(env, tmp_path) -> None:
    e, _ = env
    f = tmp_path / "demo.jsonl"
    dump_personas([make_persona("p01_kyoto_ceramicist", ["A moss garden in the rain at a Kyoto temple."])], f)
    r = runner.invoke(app, ["demo", "--file", str(f)], env=e)
    assert r.exit_code == 0, r.output
    assert "A preferred outdoor spot" in r.output and "n_eff" in r.output


def test_personalize_through_the_agent_with_gate_and_checkpoint(env, tmp_path) -> None:
    e, f = env
    runner.invoke(app, ["ingest", str(f)], env=e)
    ck = tmp_path / "ck.sqlite"
    r = runner.invoke(app, ["personalize", "alice", "A preferred outdoor spot", "--gate-threshold", "0.1",
                            "--checkpoint", str(ck), "--thread-id", "t1", "--json"], env=e)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["status"] == "deferred" and out["candidates"][0]["passed"] is True and out["thread_id"] == "t1"
    r = runner.invoke(app, ["resume", "t1", "--checkpoint", str(ck), "--json"], env=e)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["prompt"] == out["prompt"]
    r = runner.invoke(app, ["personalize", "alice", "x", "--stream", "--json"], env=e)
    lines = [json.loads(line) for line in r.stdout.splitlines()]  # JSON lines only
    assert r.exit_code == 0 and lines[0]["kind"] == "node" and lines[-1]["kind"] == "result"
    assert {"node", "retrieval", "candidate", "gate"} <= {x["kind"] for x in lines}


def test_personalize_with_a_trained_reranker(env, tmp_path) -> None:
    from vptt.evaluators.feedback import FeedbackConfig, FeedbackModel

    e, f = env
    runner.invoke(app, ["ingest", str(f)], env=e)
    FeedbackModel(FeedbackConfig(seed=1)).save(tmp_path / "fb")
    r = runner.invoke(app, ["personalize", "alice", "A preferred outdoor spot", "--reranker", str(tmp_path / "fb"),
                            "--rerank-m", "4", "--json"], env=e)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["rerank"]["best_index"] == max(range(len(out["rerank"]["scores"])),
                                              key=lambda i: (out["rerank"]["scores"][i], -i))
