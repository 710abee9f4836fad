"""LLM-backed `vptt evaluate` and `vptt bench run` against a real local OpenAI-compatible server process.

Rows record model, sampling parameters, tokens, latency and the cache; a repeated run buys nothing; a run
killed with -9 and started again loses nothing, duplicates nothing and buys no completion twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT, make_persona
from tests.fake_llm_server import FakeLLMServer, data_block, reply_for
from tests.test_bench_run import keyed, read_rows
from vptt import Personalizer, VPTTSettings, dump_personas
from vptt.agents.llm_composer import LLMComposer, LLMComposerConfig, clean_completion
from vptt.core.llm_cache import ResponseCache
from vptt.core.providers import RetryConfig
from vptt.sdk.bench import run_bench
from vptt.sdk.evaluate import evaluate
from vptt.stores.memory import InMemoryPersonaStore

TASKS = ["outdoor_spot", "garden"]
EXPECTED_KEYS = {"persona_only": {"query", "demographics"}, "brag": {"query", "captions"},
                 "vprag": {"query", "summary", "elements"}, "comb": {"query", "summary", "elements", "captions"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeLLMServer]:
    with FakeLLMServer(tmp_path_factory.mktemp("llm-server")) as srv:
        yield srv


@pytest.fixture
def pz(embedder, two_personas, tmp_path) -> Personalizer:  # type: ignore[no-untyped-def]
    p = Personalizer(InMemoryPersonaStore(embedder), settings=VPTTSettings(store="memory",
                                                                           data_dir=tmp_path / "data"))
    p.ingest(two_personas)
    return p


def fake_llm(server: FakeLLMServer, cache: Path, **kw: Any) -> LLMComposer:
    opts = {"model": "fake-m", "base_url": server.base_url, "api_key": "EMPTY", "temperature": 0.1, "seed": 42,
            "cache_path": cache, "retry": RetryConfig(initial_interval=0, jitter=False), **kw}
    return LLMComposer(LLMComposerConfig(**opts))


def test_evaluate_with_the_llm_records_every_row_and_reruns_from_the_cache(pz, server, tmp_path) -> None:
    cache = tmp_path / "llm.sqlite"
    n0 = len(server.requests())
    run = evaluate(pz, tmp_path / "a", tasks=TASKS, composer=fake_llm(server, cache), progress=False)
    log = server.requests()[n0:]
    # Baseline makes no call; alice and bob have the same demographics, so Persona Only sends the same request
    # for both: one completion is bought and shared (2 tasks x 4 methods x 2 personas - 2 = 14)
    assert len(log) == 14 == len({e["key"] for e in log})
    by_prompt = {clean_completion(reply_for(e["body"]), 150)[0]: e for e in log}
    rows = read_rows(Path(run.rows_path))
    shared = [r for r in rows if r["llm"]["cached"]]
    assert {(r["method"]) for r in shared} == {"persona_only"} and len(shared) == 2
    assert len(rows) == 20 and run.llm == {"calls": 14, "cache_hits": 2, "rows_with_llm": 20,
                                           "tokens_in": sum(r["llm"]["tokens_in"] for r in rows if r not in shared),
                                           "tokens_out": sum(r["llm"]["tokens_out"] for r in rows
                                                             if r not in shared)}  # bought tokens only
    for r in rows:
        llm = r["llm"]
        assert (llm["model"], llm["temperature"], llm["top_p"], llm["max_tokens"], llm["seed"]) == (
            "fake-m", 0.1, None, 400, 42) and r["composer"] == "llm:fake-m"
        if r["method"] == "baseline":
            assert r["prompt"] == r["query"] and not llm["called"] and llm["tokens_in"] == llm["tokens_out"] == 0
            continue
        entry = by_prompt[r["prompt"]]  # the completion this row was made from
        body = entry["body"]
        assert set(data_block(body)) == EXPECTED_KEYS[r["method"]]
        words = sum(len(m["content"].split()) for m in body["messages"])
        assert (llm["tokens_in"], llm["tokens_out"], llm["tokens_source"]) == (
            words, len(reply_for(body).split()), "reported")
        assert llm["called"] and llm["latency_ms"] > 0 and llm["finish_reason"] == "stop"
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["config"]["llm"]["model"] == "fake-m" and manifest["config"]["composer"] == "llm:fake-m"
    assert manifest["llm_totals"]["calls"] == 14 and manifest["sessions"][0]["llm"]["calls"] == 14
    assert "| fake-m | " in (tmp_path / "a" / "report.md").read_text()

    # the same evaluation into another directory: every completion from the cache, nothing bought
    again = evaluate(pz, tmp_path / "b", tasks=TASKS, composer=fake_llm(server, cache), progress=False)
    assert len(server.requests()) - n0 == 14 and again.llm["calls"] == 0 and again.llm["cache_hits"] == 16
    ref = keyed(rows)
    for r in read_rows(Path(again.rows_path)):
        want = ref[(r["persona_id"], r["task"], r["method"])]
        assert r["prompt"] == want["prompt"] and r["score"] == pytest.approx(want["score"], abs=1e-9)
        assert r["llm"]["cached"] == want["llm"]["called"] and r["llm"]["latency_ms"] == want["llm"]["latency_ms"]
        assert r["llm"]["tokens_in"] == want["llm"]["tokens_in"]

    # another sampling configuration is another run: refused in the same directory, new requests elsewhere
    from vptt.core.errors import ConfigError

    with pytest.raises(ConfigError, match="different configuration"):
        evaluate(pz, tmp_path / "a", tasks=TASKS, composer=fake_llm(server, cache, top_p=0.5), progress=False)


def test_evaluate_cli_with_the_llm(server, two_personas, tmp_path) -> None:
    from vptt.sdk.cli import app

    dump_personas(two_personas, tmp_path / "p.jsonl")
    env = {"VPTT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "VPTT_LLM_API_KEY": "EMPTY"}
    r = CliRunner().invoke(app, ["ingest", str(tmp_path / "p.jsonl")], env=env)
    assert r.exit_code == 0, r.output
    n0 = len(server.requests())
    args = ["evaluate", "--out", str(tmp_path / "ev"), "--task", "outdoor_spot", "--methods", "baseline,vprag,brag",
            "--composer", "llm", "--llm-base-url", server.base_url, "--llm-preset", "qwen2.5-7b-instruct",
            "--llm-model", "fake-q", "--seed", "7", "--llm-concurrency", "4", "--no-progress"]
    r = CliRunner().invoke(app, args, env=env)
    assert r.exit_code == 0, r.output
    # a short summary and the report's path, not the Markdown report re-wrapped
    assert "6 rows written" in r.output and "LLM: 4 completions bought, 0 from the cache" in r.output
    assert "report:" in r.output and str(tmp_path / "ev" / "report.md") in r.output.replace("\n", "")
    assert "| LLM | Method" not in r.output and len(r.output.splitlines()) < 25
    bodies = [e["body"] for e in server.requests()[n0:]]
    assert len(bodies) == 4 and all((b["model"], b["temperature"], b["top_p"], b["max_tokens"], b["seed"]) ==
                                    ("fake-q", 0.1, 0.9, 256, 7) for b in bodies)
    assert len(ResponseCache(tmp_path / "data" / "llm_cache.sqlite")) == 4  # the data directory's shared cache
    rows = read_rows(tmp_path / "ev" / "rows.jsonl")
    assert {r["llm"]["model"] for r in rows} == {"fake-q"}
    r = CliRunner().invoke(app, ["evaluate", "--out", str(tmp_path / "ev2"), "--llm-preset", "qwen"], env=env)
    assert r.exit_code == 2 and "only apply with --composer llm" in r.output


def test_bench_run_local_with_the_llm_equals_evaluate_and_shares_the_cache(pz, server, tmp_path) -> None:
    cache = tmp_path / "llm.sqlite"
    ev = evaluate(pz, tmp_path / "ev", tasks=TASKS, composer=fake_llm(server, cache), progress=False, report=False)
    n0 = len(server.requests())
    pz.composer = fake_llm(server, cache, concurrency=3)  # concurrency does not change results
    run = run_bench(pz, tmp_path / "b", tasks=TASKS, progress=False)
    assert len(server.requests()) == n0 and run.llm["cache_hits"] == 16 and run.llm["calls"] == 0
    ref = keyed(read_rows(Path(ev.rows_path)))
    for r in read_rows(Path(run.rows_path)):
        want = ref[(r["persona_id"], r["task"], r["method"])]
        assert r["prompt"] == want["prompt"] and r["score"] == pytest.approx(want["score"], abs=1e-9)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["config"]["llm"]["model"] == "fake-m" and manifest["sessions"][-1]["llm"]["cache_hits"] == 16


def test_a_failed_completion_stops_the_run_and_keeps_what_was_bought(pz, server, tmp_path) -> None:
    from vptt.core.errors import ProviderError

    cache = tmp_path / "llm.sqlite"
    server.control(faults=["500"] * 3)  # the first request fails for good (3 attempts)
    comp = fake_llm(server, cache, concurrency=1, retry=RetryConfig(max_attempts=3, initial_interval=0,
                                                                    jitter=False))
    with pytest.raises(ProviderError, match="HTTP 500 after 3 attempt"):
        evaluate(pz, tmp_path / "e", tasks=TASKS, composer=comp, progress=False, report=False)
    got = len(ResponseCache(cache))
    done = evaluate(pz, tmp_path / "e", tasks=TASKS, composer=fake_llm(server, cache), progress=False,
                    report=False)
    # the other requests in flight were let finish and cached, not cancelled: all 14 distinct ones but the
    # failed one (which bob's identical Persona Only request may have bought after alice's had failed)
    assert got in (13, 14) and done.rows_total == 20
    assert done.llm["calls"] == 14 - got  # 14 distinct completions in all: what the failed run bought is reused


def _bench_cli(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "vptt", "--store", "memory", "--data-dir", str(data), "bench", "run", *args]


def test_kill_9_then_the_same_command_buys_nothing_twice(tmp_path) -> None:
    personas = [make_persona(f"p{i}", [f"Photo {i} of a quiet harbour at dawn with boats.",
                                       f"Street market {i} with lanterns and fruit stalls."]) for i in range(6)]
    dump_personas(personas, tmp_path / "p.jsonl")
    data, out = tmp_path / "data", tmp_path / "out"
    with FakeLLMServer(tmp_path / "srv", latency_ms=400) as srv:
        args = _bench_cli(data, str(tmp_path / "p.jsonl"), "-o", str(out), "--task", "outdoor_spot", "--task",
                          "garden", "--methods", "baseline,brag,vprag", "--composer", "llm", "--llm-base-url",
                          srv.base_url, "--llm-model", "fake-m", "--llm-concurrency", "2", "--no-report",
                          "--no-progress")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VPTT_LLM_API_KEY": "EMPTY"}
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        rows_file, deadline = out / "rows.jsonl", time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if rows_file.exists() and rows_file.read_bytes().count(b"\n") >= 6:  # a persona or more written
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stdout.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        bought = ResponseCache(data / "llm_cache.sqlite").keys()  # what the killed run had received
        partial = rows_file.read_bytes().count(b"\n")
        assert 6 <= partial < 36 and bought
        done = subprocess.run(args + ["--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        summary = json.loads(done.stdout)
        log = srv.requests()
    rows = read_rows(rows_file)
    assert len(rows) == len(keyed(rows)) == 36 and summary["rows_written"] == 36 - partial
    served = Counter(e["key"] for e in log if e["status"] == 200)
    assert all(served[k] == 1 for k in bought)  # no completion received before the kill was bought again
    assert sum(n - 1 for n in served.values()) <= 2  # repeats: at most the requests in flight at the kill
    assert len(served) == 6 * 2 * 2 and summary["llm"]["calls"] == 24 - len(bought)  # the rest came from the cache
    assert sorted(json.loads(x)["persona_id"] for x in open(out / "personas.jsonl")) == [f"p{i}" for i in range(6)]
    for r in rows:
        assert (r["prompt"] == r["query"]) if r["method"] == "baseline" else r["llm"]["called"]
