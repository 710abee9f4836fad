"""The Ray backend of `vptt bench run` equals the local backend (local 2-CPU Ray, Chroma server, no network).

Everything Ray runs in a child process inside a private network namespace (``unshare -n``, loopback only):
Ray probes cloud-metadata addresses when it starts and that traffic must never leave the machine. The child
(this module run with ``python -m tests.test_ray_backend DIR``) starts ``chroma run`` on 127.0.0.1 inside the
namespace, ingests personas, runs the local backend, then Ray with 2 workers, then a Ray resume after a
simulated crash, and writes a summary that the test compares.
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
    summary = {"network_unreachable": unreachable, "local": local.model_dump(), "ray": ray_run.model_dump(),
               "ray_resume": resumed.model_dump()}
    (work / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
