"""`vptt serve` under load: 1, 8 and 32 concurrent clients for a bounded time against a real server process.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_serve.py [--clients 1,8,32] [--duration 15]
[--personas 4] [--torch-threads 2]``.

Setup: the first ``--personas`` sample personas are ingested into a fresh data directory (embedded Chroma,
real MiniLM). Then, in this process, the same personalizer and agent (template composer, no gate, no
checkpoint) run ``agent.run`` from 2 threads for ``--duration`` seconds: the in-process reference. Then
``vptt serve`` starts on 127.0.0.1 (a separate process with the same settings) and each client count runs
for ``--duration`` seconds after a short warm-up; every client is a thread with its own keep-alive
connection, posting ``/api/personalize``. Every request has a distinct query (the base queries with a
variation number), so the query embedding is computed each time, never read from the embedding cache.

Printed per client count (``--rounds`` times each): requests, requests/s, p50 and p99 latency, errors (goal 0), the server's RSS at
the start and end (goal: flat), and the 1-minute load average. Goals: at 32 clients p99 <= 5x the
single-client p50, and the best throughput >= 0.8x the in-process throughput with 2 threads.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "examples" / "data" / "personas.jsonl"
QUERIES = ["A preferred outdoor spot", "A photo showing my next social media post with my style and content",
           "A cultural site I would visit", "Here is a convention center. Add a preferred event",
           "Here is a garden. Add my favourite things", "Here is an empty living room. Furnish it my way"]


def requests_stream(pids: list[str], tag: str):
    """Endless distinct (persona, query) pairs."""
    for n in itertools.count():
        yield pids[n % len(pids)], f"{QUERIES[n % len(QUERIES)]}, variation {tag}{n}"


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))] if s else float("nan")


def load() -> float:
    return os.getloadavg()[0]


def run_clients(n: int, seconds: float, call, pids: list[str], tag: str) -> dict:
    """``n`` threads calling ``call(pid, query)`` until the deadline; latencies and errors."""
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    source = requests_stream(pids, tag)
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        state = {}
        while time.perf_counter() < deadline:
            with lock:
                pid, q = next(source)
            t0 = time.perf_counter()
            try:
                call(pid, q, state)
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": n, "requests": len(lat), "rps": len(lat) / wall, "p50_ms": percentile(lat, 0.5) * 1000,
            "p99_ms": percentile(lat, 0.99) * 1000, "errors": len(errors), "first_errors": errors[:3],
            "load": load()}


def main() -> None:
    from tests.procs import free_port, start_http, stop

    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--personas", type=int, default=4)
    ap.add_argument("--torch-threads", type=int, default=2, help="torch threads, here and in the server")
    ap.add_argument("--rounds", type=int, default=1, help="rounds per client count (RSS should stay flat)")
    ap.add_argument("--data-dir", type=Path, default=None, help="reuse a data directory (personas ingested)")
    args = ap.parse_args()
    counts = [int(x) for x in args.clients.split(",")]

    import httpx
    import psutil
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(args.torch_threads)
    hf_logging.disable_progress_bar()
    from vptt.agents.personalizer import Personalizer
    from vptt.core.models import Persona
    from vptt.core.settings import VPTTSettings
    from vptt.sdk.agent import PersonalizationAgent

    data = args.data_dir or Path(tempfile.mkdtemp(prefix="vptt-bench-serve-"))
    personas = [Persona.model_validate_json(line) for line in SAMPLE.read_text().splitlines()[:args.personas]]
    pids = [p.persona_id for p in personas]
    pz = Personalizer(settings=VPTTSettings(data_dir=data))
    t0 = time.perf_counter()
    report = pz.ingest(personas)
    print(f"ingested {len(pids)} personas ({report.texts_embedded} texts) in {time.perf_counter() - t0:.1f} s; "
          f"data dir {data}")

    agent = PersonalizationAgent(pz, text_scorer=None)
    for pid in pids:  # warm: personas cached, tokenizer loaded
        agent.run(pid, QUERIES[0])
    inproc = run_clients(2, args.duration, lambda pid, q, st: agent.run(pid, q), pids, "inproc-")
    print(f"in-process agent.run, 2 threads: {inproc['rps']:.1f} req/s, p50 {inproc['p50_ms']:.1f} ms, "
          f"p99 {inproc['p99_ms']:.1f} ms, errors {inproc['errors']}  [load {inproc['load']:.2f}]")
    agent.close()

    port = free_port()
    env = {**os.environ, "VPTT_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.torch_threads)}
    server = start_http([sys.executable, "-m", "vptt", "serve", "--port", str(port), "--log-level", "warning"],
                        log=data / "serve.log", health_url=f"http://127.0.0.1:{port}/api/health",
                        what="vptt serve", timeout=180, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        proc = psutil.Process(server.pid)

        def call(pid: str, q: str, st: dict) -> None:
            client = st.get("c") or st.setdefault("c", httpx.Client(base_url=url, timeout=120))
            r = client.post("/api/personalize", json={"persona_id": pid, "query": q})
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:120]}")

        # warm-up at the highest concurrency: worker threads, their allocator arenas and torch state exist
        # before the first measured round, so the RSS columns show growth under load, not start-up
        run_clients(max(counts), args.warmup, call, pids, "warm-")
        rows = []
        print(f"\n{'clients':>7} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
              f"{'RSS start→end MiB':>19} {'load':>6}")
        for n in [c for c in counts for _ in range(args.rounds)]:
            rss0 = proc.memory_info().rss / 2 ** 20
            row = run_clients(n, args.duration, call, pids, f"c{n}-")
            row["rss_start_mib"], row["rss_end_mib"] = rss0, proc.memory_info().rss / 2 ** 20
            rows.append(row)
            print(f"{n:>7} {row['requests']:>9} {row['rps']:>8.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
                  f"{row['errors']:>7} {row['rss_start_mib']:>8.0f} → {row['rss_end_mib']:<8.0f} {row['load']:>6.2f}")
            for e in row["first_errors"]:
                print(f"        error: {e}")
        single = next((r for r in rows if r["clients"] == 1), rows[0])
        most = rows[-1]
        best = max(r["rps"] for r in rows)
        print(f"\np99 at {most['clients']} clients / p50 at 1 client: {most['p99_ms'] / single['p50_ms']:.2f}x "
              f"(goal <= 5)")
        print(f"server throughput at {most['clients']} clients / in-process (2 threads): "
              f"{most['rps'] / inproc['rps']:.2f}x (goal >= 0.8); best level {best / inproc['rps']:.2f}x")
        print(f"errors: {sum(r['errors'] for r in rows)} (goal 0); RSS {rows[0]['rss_start_mib']:.0f} → "
              f"{rows[-1]['rss_end_mib']:.0f} MiB")
    finally:
        stop(server)


if __name__ == "__main__":
    main()
