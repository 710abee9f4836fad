"""The CLI's root options, exit codes and the personas commands that change or export the store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vptt import __version__, dump_personas, load_personas
from vptt.sdk.cli.main import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path, two_personas):
    f = tmp_path / "p.jsonl"
    dump_personas(two_personas, f)
    e = {"VPTT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    assert runner.invoke(app, ["-q", "ingest", str(f)], env=e).exit_code == 0
    return e


def test_version_and_exit_codes_in_help() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"vptt {__version__}"
    r = runner.invoke(app, ["--help"])
    assert "Exit codes" in r.output and "3 nothing accepted" in " ".join(r.output.split())


@pytest.mark.parametrize("args,env,needle", [
    (["--log-level", "loud", "personas", "list"], {}, "--log-level must be"),
    (["personas", "list"], {"VPTT_TAU": "abc"}, "VPTT_TAU='abc'"),
    (["--chroma-port", "0", "personas", "list"], {}, "chroma_port=0"),
])
def test_bad_settings_exit_2_with_one_line(args, env, needle, tmp_path) -> None:
    r = runner.invoke(app, args, env={"VPTT_DATA_DIR": str(tmp_path), **env})
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) <= 3  # one message (terminal may wrap)


def test_quiet_prints_no_progress(tmp_path, two_personas) -> None:
    f = tmp_path / "p.jsonl"
    dump_personas(two_personas, f)
    e = {"VPTT_DATA_DIR": str(tmp_path / "d"), "HF_HUB_OFFLINE": "1"}
    r = runner.invoke(app, ["--quiet", "ingest", str(f)], env=e)
    assert r.exit_code == 0 and "embedding" not in r.output and "%|" not in r.output


def test_add_remove_post_and_export_round_trip(env, tmp_path) -> None:
    post = {"post_id": "alice-new", "type": "selfie", "caption": "A lantern festival on the river at night.",
            "elements": {"lighting": ["lantern glow"], "environment": ["river bank"]}}
    f = tmp_path / "post.json"
    f.write_text(json.dumps(post))
    r = runner.invoke(app, ["personas", "add-post", "alice", str(f)], env=env)
    assert r.exit_code == 0, r.output
    assert "added 1 post(s)" in r.output
    r = runner.invoke(app, ["personas", "add-post", "alice", "--caption", "Steam rising from a tea bowl.",
                            "--post-id", "tea", "--element", "objects=tea bowl", "--element", "objects=whisk"],
                      env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["personas", "add-post", "alice", "-"], input=json.dumps({**post, "post_id": "in"}),
                      env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["personas", "show", "alice", "--json"], env=env)
    shown = json.loads(r.output)
    ids = [p["post_id"] for p in shown["posts"]]
    assert ids[-3:] == ["alice-new", "tea", "in"]
    assert shown["posts"][-2]["elements"] == {"objects": ["tea bowl", "whisk"]}

    r = runner.invoke(app, ["personas", "remove-post", "alice", "tea"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["personas", "remove-post", "alice", "tea"], env=env)
    assert r.exit_code == 2 and "has no post 'tea'" in r.output

    out = tmp_path / "export.jsonl"
    r = runner.invoke(app, ["personas", "export", "--out", str(out)], env=env)
    assert r.exit_code == 0, r.output
    exported = load_personas(out)
    assert [p.persona_id for p in exported] == ["alice", "bob"]
    assert [p.post_id for p in exported[0].posts][-2:] == ["alice-new", "in"]
    r = runner.invoke(app, ["personas", "export", "bob"], env=env)  # stdout: JSONL that ingest reads back
    assert r.exit_code == 0 and json.loads(r.output)["persona_id"] == "bob"
    env2 = {**env, "VPTT_DATA_DIR": str(tmp_path / "data2")}
    r = runner.invoke(app, ["ingest", str(out)], env=env2)
    assert r.exit_code == 0 and "created 2" in r.output


def test_add_post_rejects_bad_input_and_writes_nothing(env, tmp_path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"post_id": "x", "caption": "fine"}\n{"post_id": "y", "caption": ""}\n')
    r = runner.invoke(app, ["personas", "add-post", "alice", str(f)], env=env)
    assert r.exit_code == 2 and "bad.jsonl:2: caption" in " ".join(r.output.split())
    r = runner.invoke(app, ["personas", "show", "alice", "--json"], env=env)
    assert "x" not in [p["post_id"] for p in json.loads(r.output)["posts"]]
    r = runner.invoke(app, ["personas", "add-post", "alice", "--caption", "c", "--element", "lighting"], env=env)
    assert r.exit_code == 2 and "CATEGORY=ITEM" in r.output
    r = runner.invoke(app, ["personas", "add-post", "nobody", "--caption", "c"], env=env)
    assert r.exit_code == 1 and "not found" in r.output


def test_serve_passes_root_options_to_the_served_graph(tmp_path, monkeypatch) -> None:
    """`vptt --embedder-backend torch serve` builds its agent with that backend (the graph's settings come from
    VPTT_* in its process), never the default."""
    pytest.importorskip("uvicorn")
    import uvicorn

    from vptt.agents import context as agent_context

    seen: dict = {}

    def fake_run(app_, **kwargs) -> None:  # what uvicorn would serve: the agent is built by now
        seen["settings"] = app_.state.service.personalizer.settings

    monkeypatch.setattr(uvicorn, "run", fake_run)
    for var in ("VPTT_EMBEDDER_BACKEND", "VPTT_TAU", "VPTT_LLM_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    agent_context.clear_cache()
    try:
        r = runner.invoke(app, ["--data-dir", str(tmp_path / "d"), "--embedder-backend", "torch", "serve"],
                          env={"HF_HUB_OFFLINE": "1", "VPTT_TAU": "0.2", "VPTT_LLM_API_KEY": "sk-secret"})
        assert r.exit_code == 0, r.output
        s = seen["settings"]
        assert s.embedder_backend == "torch" and s.tau == 0.2 and s.data_dir == tmp_path / "d"
    finally:
        for var in ("VPTT_EMBEDDER_BACKEND", "VPTT_TAU", "VPTT_DATA_DIR", "VPTT_LLM_API_KEY", "VPTT_STORE"):
            monkeypatch.delenv(var, raising=False)
        agent_context.clear_cache()
