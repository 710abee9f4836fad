"""The Ray backend of `vptt bench run` equals the local backend (local 2-CPU Ray, Chroma server, no network).

Everything Ray runs in a child process inside a private network namespace (``unshare -n``, loopback only):
Ray probes cloud-metadata addresses when it starts and that traffic must never leave the machine. The child
(this module run with ``python -m tests.test_ray_backend DIR``) starts ``chroma run`` on 127.0.0.1 inside the
namespace, ingests personas, runs the local backend, then Ray with 2 workers, then a Ray resume after a
simulated crash, then ``vptt bench run --backend ray --composer llm`` (the CLI) against the fake LLM server of
``tests/fake_llm_server.py`` started inside the namespace too, and writes a summary that the test compares.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_persona
from tests.test_bench_run import assert_rows_close, keyed, read_rows
from vptt.sdk._ray_backend import default_shard_size, isolated_argv, isolation_available, shards

TASKS = ["outdoor_spot", "garden"]
CAPTIONS = ["A wooden boat on a misty lake at dawn with pine trees.",
            "A bowl of ramen steaming on a counter under paper lanterns.",
            "Surfers riding a wave at sunset on a sandy beach.",
            "A neon-lit street food stall at night with skewers grilling.",
            "Cherry blossoms over a stone path in a temple garden.",
            "A cyclist on a cobbled bridge in autumn rain."]


def test_shards_and_isolated_argv() -> None:
    jobs = [(f"p{i}", frozenset()) for i in range(5)]
    assert [[j[0] for j in s] for s in shards(jobs, 2)] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert [default_shard_size(n, 2) for n in (5, 200, 10_000)] == [1, 7, 8]
    argv = isolated_argv(["python", "-c", "print('a b')"])
    assert argv[:2] == ["unshare", "-n"] and argv[-3:] == ["python", "-c", "print('a b')"]


def test_ray_backend_equals_local(tmp_path) -> None:
    ok, why = isolation_available()
    if not ok:
        pytest.skip(f"cannot isolate Ray from the network here: {why}")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
           "ANONYMIZED_TELEMETRY": "False"}
    child = isolated_argv([sys.executable, "-m", "tests.test_ray_backend", str(tmp_path)])
    proc = subprocess.run(child, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["network_unreachable"]
    local = keyed(read_rows(tmp_path / "local" / "rows.jsonl"))
    ray_rows = read_rows(tmp_path / "ray" / "rows.jsonl")
    assert len(ray_rows) == len(keyed(ray_rows)) == len(local) == 6 * 2 * 5
    for r in ray_rows:
        assert_rows_close(r, local[(r["persona_id"], r["task"], r["method"])])
    first = summary["ray"]
    assert first["backend"] == "ray" and first["workers"] == 2 and first["rows_written"] == 60
    assert sorted(first["worker_personas"]) == ["0", "1"] and sum(first["worker_personas"].values()) == 6
    resumed = summary["ray_resume"]  # 23 whole rows and a torn line were left: personas 2..5 recomputed
    assert (resumed["rows_resumed"], resumed["rows_written"], resumed["rows_total"]) == (23, 37, 60)
    for name in ("local", "ray"):
        recs = {json.loads(x)["persona_id"]: json.loads(x) for x in open(tmp_path / name / "personas.jsonl")}
        assert sorted(recs) == [f"p{i}" for i in range(6)]
    loc_p = {json.loads(x)["persona_id"]: json.loads(x) for x in open(tmp_path / "local" / "personas.jsonl")}
    for pid, rec in recs.items():
        assert rec["age"] == loc_p[pid]["age"] == 20 + 9 * int(pid[1:])
        assert rec["n_posts"] == loc_p[pid]["n_posts"]
    cfg = [json.loads((tmp_path / n / "manifest.json").read_text())["config"] for n in ("local", "ray")]
    assert cfg[0] == cfg[1]
    # `vptt bench run --backend ray --composer llm` against the fake LLM server: every completion bought once
    # (2 workers sharing --llm-concurrency 4), rows equal to the local backend's, which bought nothing
    llm = summary["ray_llm"]
    assert llm["returncode"] == 0, llm["output"]
    assert llm["summary"]["workers"] == 2 and llm["summary"]["rows_written"] == 60
    assert len(llm["requests"]) == len(set(llm["requests"])) == 6 * 2 * 4 == llm["summary"]["llm"]["calls"]
    assert summary["local_llm"]["requests_after"] == 48 and summary["local_llm"]["llm"]["cache_hits"] == 48
    ray_llm = read_rows(tmp_path / "ray_llm" / "rows.jsonl")
    local_llm = keyed(read_rows(tmp_path / "local_llm" / "rows.jsonl"))
    assert len(ray_llm) == len(local_llm) == 60
    for r in ray_llm:
        want = local_llm[(r["persona_id"], r["task"], r["method"])]
        assert r["prompt"] == want["prompt"] and r["llm"]["model"] == "fake-m"
        assert r["score"] == pytest.approx(want["score"], abs=1e-6) and r["seed"] == want["seed"]
    cfg = [json.loads((tmp_path / n / "manifest.json").read_text())["config"] for n in ("ray_llm", "local_llm")]
    assert cfg[0] == cfg[1] and cfg[0]["llm"]["model"] == "fake-m"


def _child(work: Path) -> None:
    """Runs inside the network namespace: Chroma server + local run + Ray run + Ray resume."""
    from vptt import VPTTSettings
    from vptt.sdk._ray_backend import ChromaServer, init_ray
    from vptt.sdk.bench import BenchRecipe, run_bench

    try:
        socket.create_connection(("10.255.255.1", 80), timeout=1).close()
        unreachable = False
    except OSError:
        unreachable = True
    personas = [make_persona(f"p{i}", [CAPTIONS[(i + j) % len(CAPTIONS)] for j in range(2 + i % 3)],
                             demographics={"age": 20 + 9 * i, "country": "Japan", "occupation": "potter"})
                for i in range(6)]
    with ChromaServer(work / "chroma") as srv:
        settings = VPTTSettings(chroma_host=srv.host, chroma_port=srv.port, data_dir=work / "data",
                                embedding_cache=False, collection_prefix="raytest")
        recipe = BenchRecipe(settings)
        recipe.build_personalizer().ingest(personas)
        local = run_bench(recipe, work / "local", tasks=TASKS, progress=False)
        init_ray(2)  # kept up for both Ray runs
        ray_run = run_bench(recipe, work / "ray", tasks=TASKS, backend="ray", workers=2, shard_size=1,
                            progress=False)
        rows = (work / "ray" / "rows.jsonl").read_bytes().splitlines(keepends=True)
        (work / "ray" / "rows.jsonl").write_bytes(b"".join(rows[:23]) + rows[23][:40])  # a kill mid-append
        resumed = run_bench(recipe, work / "ray", tasks=TASKS, backend="ray", workers=2, progress=False)
        llm = _llm_runs(work, srv, recipe)
    summary = {"network_unreachable": unreachable, "local": local.model_dump(), "ray": ray_run.model_dump(),
               "ray_resume": resumed.model_dump(), **llm}
    (work / "summary.json").write_text(json.dumps(summary))


def _llm_runs(work: Path, chroma: object, recipe: object) -> dict:
    """`vptt bench run --backend ray --composer llm` (the CLI, joining the Ray cluster that is up) against the
    fake LLM server started inside the namespace, then the local backend in process from the same cache."""
    from dataclasses import replace

    import ray

    from tests.fake_llm_server import FakeLLMServer
    from vptt.agents.llm_composer import LLMComposerConfig
    from vptt.sdk.bench import run_bench

    with FakeLLMServer(work / "llm-server") as srv:
        cli = [sys.executable, "-m", "vptt", "--chroma-host", chroma.host, "--chroma-port", str(chroma.port),
               "--data-dir", str(work / "data"), "bench", "run", "-o", str(work / "ray_llm"), "--task", TASKS[0],
               "--task", TASKS[1], "--backend", "ray", "--workers", "2", "--address",
               ray.get_runtime_context().gcs_address, "--composer", "llm", "--llm-base-url", srv.base_url,
               "--llm-model", "fake-m", "--llm-concurrency", "4", "--no-report", "--no-progress", "--json"]
        env = {**os.environ, "VPTT_EMBEDDING_CACHE": "false", "VPTT_COLLECTION_PREFIX": "raytest",
               "VPTT_LLM_API_KEY": "EMPTY"}
        proc = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        after_ray = [e["key"] for e in srv.requests()]
        cfg = LLMComposerConfig(model="fake-m", base_url=srv.base_url, api_key="EMPTY")
        local = run_bench(replace(recipe, llm=cfg), work / "local_llm", tasks=TASKS, progress=False)
        after_local = len(srv.requests())
    return {"ray_llm": {"returncode": proc.returncode, "output": (proc.stdout + proc.stderr)[-3000:],
                        "summary": json.loads(proc.stdout) if proc.returncode == 0 else None,
                        "requests": after_ray},
            "local_llm": {**local.model_dump(), "requests_after": after_local}}


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
