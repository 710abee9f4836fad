"""`vptt personalize` / `vptt resume` as a shell user meets them: exit codes, pipes, JSON lines, resume of an
interrupted run as the README shows it, follow-ups in a thread, separate LLM and image endpoints and keys.
Remote endpoints are the fake OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fake_openai import serve as fake_openai
from vptt import dump_personas
from vptt.sdk.cli.main import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path, two_personas):
    f = tmp_path / "p.jsonl"
    dump_personas(two_personas, f)
    e = {"VPTT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    assert runner.invoke(app, ["ingest", str(f)], env=e).exit_code == 0
    return e


def test_exit_codes_and_piped_output(env) -> None:
    r = runner.invoke(app, ["personalize", "alice", "A preferred outdoor spot", "--gate-threshold", "0.99",
                            "--max-candidates", "1", "--json"], env=env)
    assert r.exit_code == 3 and json.loads(r.stdout)["status"] == "rejected"  # JSON still printed
    assert "rejected" in r.stderr and "early rejection" in r.stderr
    r = runner.invoke(app, ["personalize", "alice", "A preferred outdoor spot"], env=env)
    assert r.exit_code == 0 and "\n" not in r.stdout.strip() and "A preferred outdoor spot, " in r.stdout
    for method in ("baseline", "persona_only", "brag", "vprag", "comb"):  # every method renders
        r = runner.invoke(app, ["personalize", "alice", "a lake", "--method", method, "--pretty"], env=env)
        assert r.exit_code == 0 and "status: deferred" in r.stdout, (method, r.output)
    r = runner.invoke(app, ["personalize", "zed", "x"], env=env)
    assert r.exit_code == 1 and "not found" in r.stderr and r.stdout == ""
    r = runner.invoke(app, ["personalize", "--help"])
    assert "Exit codes" in r.stdout and "3 rejected" in r.stdout


def test_resume_as_the_readme_shows_and_follow_ups(env, tmp_path: Path) -> None:
    srv = fake_openai(delay=0.0, fail_images=1)
    base = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    ck = str(tmp_path / "ck.sqlite")
    try:
        r = runner.invoke(app, ["personalize", "alice", "A preferred outdoor spot", "--composer", "llm",
                                "--llm-base-url", base, "--llm-api-key", "sk-chat-1234", "--generator", "openai",
                                "--images-base-url", base, "--images-api-key", "sk-images-5678",
                                "--save-dir", str(tmp_path / "img"), "--checkpoint", ck, "--thread-id", "t1"],
                          env=env)
        assert r.exit_code == 1 and "injected failure" in r.stderr  # the image endpoint failed once
        assert srv.auth["/v1/chat/completions"] == "Bearer sk-chat-1234"
        assert srv.auth["/v1/images/generations"] == "Bearer sk-images-5678"
        # `vptt resume t1 --checkpoint ck.sqlite`: the agent is rebuilt from the run's recorded options;
        # keys are never recorded, so they come from the environment
        renv = {**env, "VPTT_IMAGES_API_KEY": "sk-images-env", "VPTT_LLM_API_KEY": "sk-chat-env"}
        r = runner.invoke(app, ["resume", "t1", "--checkpoint", ck, "--json"], env=renv)
        assert r.exit_code == 0, r.output
        done = json.loads(r.stdout)
        assert done["status"] == "completed" and Path(done["images"][0]["path"]).is_file()
        assert srv.stats["/v1/chat/completions"] == 1  # the prompt was not composed again
        assert srv.auth["/v1/images/generations"] == "Bearer sk-images-env"
        assert b"sk-chat-1234" not in Path(ck).read_bytes() and b"sk-images" not in Path(ck).read_bytes()
        r = runner.invoke(app, ["personalize", "alice", "now make it autumn", "--composer", "llm",
                                "--llm-base-url", base, "--checkpoint", ck, "--thread-id", "t1", "--stream",
                                "--json"], env=renv)
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        assert r.exit_code == 0 and lines[-1]["kind"] == "result"
        follow = lines[-1]["result"]
        assert follow["refines"] == done["run_id"] and follow["prompt"].startswith(done["prompt"])
        assert "now make it autumn" in follow["prompt"] and any(x["kind"] == "token" for x in lines)
        r = runner.invoke(app, ["resume", "nope", "--checkpoint", ck], env=renv)
        assert r.exit_code == 2 and "no run with thread_id 'nope'" in r.stderr
    finally:
        srv.shutdown()
