"""LLM-backed runs against a real local OpenAI-compatible server (tests/fake_llm_server.py) with fixed latency.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_llm.py [--latency-ms 100] [--rounds 10]``.
Prints, in one run, each figure with the 1-minute load average beside it:

1. the client alone: completions/s at 1, 8, 32 and 64 requests in flight (real chat requests of the sample set's
   personas, cache off) and the ratio to the ideal ``concurrency / latency`` (goal >= 0.8 up to 64);
2. the persistent cache: the same requests again from a fresh client on the same cache file (goal >= 20x
   faster), and a whole ``evaluate()`` repeated into a new directory (every completion from the cache: its
   rows/s is what retrieval, request building and scoring cost on the CPU alone);
3. ``evaluate()`` end to end with the LLM composer at 1, 8, 32, 64 in flight (scoring with a cheap hashing
   embedder), against the LLM's ideal and against the pipelined bound ``min(LLM ideal, CPU-only rate)``: a
   ratio near 1 to the bound means the LLM calls and the CPU work overlap instead of adding up;
4. per-method means (PA, GS, CP, NV, VPTT_score-c, VPTT_score) on the sample set (24 personas x the paper's 4
   tasks), MiniLM scoring, with the template composer and with the fake LLM.

The fake server's replies are a deterministic function of the request (the query plus pieces of the persona
data block, copying the first words of the best caption), not a language model: the means of 4. show how the
pipeline treats each method's inputs, not how a real rewriter scores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load() -> str:
    return f"(load {os.getloadavg()[0]:.1f})"


def sample_requests(pz, composer, n: int) -> list:  # type: ignore[no-untyped-def]
    """``n`` distinct real chat requests: every persona x task x method of the sample set, seeds varied."""
    from dataclasses import replace

    from vptt.agents.tasks import PAPER_TABLE3, resolve_tasks

    tasks = resolve_tasks(PAPER_TABLE3)
    q = pz.embedder.embed([t.query for t in tasks])
    base = []
    for pid in pz.store.list_ids():
        mem = pz.store.embedded(pid)
        for t, qe in zip(tasks, q):
            for m in ("persona_only", "brag", "vprag", "comb"):
                method, trace, _ = pz.retrieve_embedded(mem, qe, method=m)
                base.append(composer.chat_request(t.query, trace, mem.persona))
    return [replace(base[i % len(base)], seed=1000 + i // len(base)) for i in range(n)]


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) another process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_throughput(url: str, requests: list, conc: int, latency: float,  # type: ignore[no-untyped-def]
                      cache=None, server_pid: int | None = None) -> tuple[float, float, float]:
    """Wall seconds for ``requests``, this process's CPU ms per request, and the server's CPU share of one
    core over the same window (the fake server runs on the same cores: when it nears 1.0, the single-process
    server, not the client, sets the pace)."""
    from vptt.core.llm_client import ChatClient

    with ChatClient(url, "EMPTY", concurrency=conc, cache=cache) as client:
        client.complete(requests[0].__class__(model="warm", messages=(("user", "warm up"),)))
        s0 = process_cpu_s(server_pid) if server_pid else 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        futures = [client.submit(r) for r in requests]
        for f in futures:
            f.result()
        dt = time.perf_counter() - t0
        server = (process_cpu_s(server_pid) - s0) / dt if server_pid else float("nan")
        return dt, (time.process_time() - c0) * 1000 / len(requests), server


def raw_throughput(url: str, requests: list, conc: int) -> float:  # type: ignore[no-untyped-def]
    """Wall seconds for the same requests through a bare aiohttp loop (no retries, cache, limits or
    accounting): the reference for what any client could get from this server on these cores."""
    import asyncio

    import aiohttp

    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run

    async def go() -> float:
        sem = asyncio.Semaphore(conc)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(body: dict) -> None:  # type: ignore[type-arg]
                async with sem, session.post(url + "/chat/completions", json=body) as resp:
                    await resp.read()

            await one({"model": "warm", "messages": [{"role": "user", "content": "warm up"}]})
            t0 = time.perf_counter()
            await asyncio.gather(*(one(r.body()) for r in requests))
            return time.perf_counter() - t0

    return run(go())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--rounds", type=int, default=10, help="requests per concurrency level = rounds x level")
    ap.add_argument("--skip-means", action="store_true", help="skip part 4 (MiniLM scoring of 2 x 480 rows)")
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from tests.conftest import HashEmbedderBase
    from tests.fake_llm_server import FakeLLMServer
    from vptt import Personalizer, load_personas
    from vptt.agents.llm_composer import LLMComposer, LLMComposerConfig
    from vptt.core.llm_cache import ResponseCache
    from vptt.core.settings import VPTTSettings
    from vptt.evaluators.vptt_score import VPTTScorer
    from vptt.sdk.evaluate import evaluate
    from vptt.stores.memory import InMemoryPersonaStore

    tmp = Path(tempfile.mkdtemp(prefix="vptt-bench-llm-"))
    latency = args.latency_ms / 1000
    personas = load_personas(ROOT / "examples" / "data" / "personas.jsonl")

    class Hash(HashEmbedderBase):
        name, dim = "hash-bench", 384

    with FakeLLMServer(tmp, latency_ms=args.latency_ms, log=False) as srv:
        def composer(conc: int, cache: bool = False, path: Path | None = None) -> LLMComposer:
            return LLMComposer(LLMComposerConfig.from_preset("qwen2.5-7b-instruct", model="fake",
                                                             base_url=srv.base_url, api_key="EMPTY",
                                                             concurrency=conc, cache=cache, cache_path=path))

        hashed = Personalizer(InMemoryPersonaStore(Hash()), settings=VPTTSettings(store="memory", data_dir=tmp))
        hashed.ingest(personas)
        print(f"server latency {args.latency_ms:.0f} ms per completion; {len(personas)} personas")

        print("\n1. client alone (real requests of the sample set, cache off)")
        for conc in (1, 8, 32, 64):
            reqs = sample_requests(hashed, composer(conc), conc * args.rounds)
            dt, cpu, server = client_throughput(srv.base_url, reqs, conc, latency,
                                                server_pid=srv.proc.pid if srv.proc else None)
            rate = len(reqs) / dt
            raw = len(reqs) / raw_throughput(srv.base_url, reqs, conc)
            print(f"   concurrency {conc:>2}: {len(reqs):>4} completions in {dt:6.2f} s = {rate:7.1f}/s; "
                  f"ideal {conc / latency:6.0f}/s; ratio {rate / (conc / latency):.2f}; bare aiohttp loop "
                  f"{raw:6.1f}/s (ratio {raw / (conc / latency):.2f}; ours/bare {rate / raw:.2f}); client CPU "
                  f"{cpu:.2f} ms/completion ({cpu * rate / 1000:.2f} core); fake server {server:.2f} core "
                  f"{load()}")

        print("\n2. the persistent cache")
        reqs = sample_requests(hashed, composer(16), 384)
        cache_path = tmp / "cache" / "llm.sqlite"
        first, _, _ = client_throughput(srv.base_url, reqs, 16, latency, ResponseCache(cache_path))
        again, _, _ = client_throughput(srv.base_url, reqs, 16, latency, ResponseCache(cache_path))
        print(f"   client, 384 requests at concurrency 16: first {first:.2f} s, again from the cache {again:.3f} s "
              f"= {first / again:.0f}x faster (goal >= 20) {load()}")
        before = srv.stats()["requests"]
        runs = [evaluate(hashed, tmp / name, composer=composer(16, True, tmp / "cache2" / "llm.sqlite"),
                         scorer=VPTTScorer(hashed.embedder), progress=False, report=False)
                for name in ("cache-first", "cache-again")]
        cpu_rate = runs[1].prompts_per_s
        print(f"   evaluate() of 480 rows (hashing embedder): first {runs[0].seconds:.2f} s ({runs[0].llm['calls']} "
              f"completions bought), again into a new directory {runs[1].seconds:.2f} s ({runs[1].llm['calls']} "
              f"bought, {runs[1].llm['cache_hits']} from the cache) = {runs[0].seconds / runs[1].seconds:.1f}x "
              f"faster; server requests {srv.stats()['requests'] - before}. The cached run is all CPU "
              f"(retrieval, requests, scoring): {cpu_rate:.0f} rows/s {load()}")

        print("\n3. evaluate() end to end with the LLM composer (hashing embedder; cache off)")
        print(f"   pipelined bound = min(LLM ideal, the all-CPU rate of 2. = {cpu_rate:.0f} rows/s)")
        for conc in (1, 8, 32, 64):
            tasks = ["social_post"] if conc == 1 else ["social_post", "cultural_site", "garden", "living_room"]
            run = evaluate(hashed, tmp / f"e2e-{conc}", tasks=tasks, composer=composer(conc),
                           scorer=VPTTScorer(hashed.embedder), progress=False, report=False)
            calls = run.llm["calls"] if run.llm else 0
            ideal_rows = (conc / latency) * run.rows_written / max(calls, 1)  # baseline rows need no call
            bound = min(ideal_rows, cpu_rate)
            print(f"   concurrency {conc:>2}: {run.rows_written} rows ({calls} completions) in {run.seconds:6.2f} s "
                  f"= {run.prompts_per_s:7.1f} rows/s; LLM ideal {ideal_rows:5.0f} (ratio "
                  f"{run.prompts_per_s / ideal_rows:.2f}); pipelined bound {bound:5.0f} (ratio "
                  f"{run.prompts_per_s / bound:.2f}) {load()}")

        if args.skip_means:
            return
        print("\n4. per-method means on the sample set (MiniLM scoring; fake LLM = a deterministic echo)")
        from vptt.stores.embedders import MiniLMEmbedder
        from vptt.stores.embedding_cache import CachedEmbedder

        mini = Personalizer(InMemoryPersonaStore(CachedEmbedder(MiniLMEmbedder(), tmp / "emb.sqlite")),
                            settings=VPTTSettings(store="memory", data_dir=tmp))
        mini.ingest(personas)
        for label, comp in (("template", None), ("fake LLM", composer(16, True, tmp / "cache3" / "llm.sqlite"))):
            run = evaluate(mini, tmp / f"means-{label.replace(' ', '-')}", composer=comp, progress=False,
                           report=False)
            import json

            rows = [json.loads(x) for x in open(run.rows_path)]
            by = defaultdict(list)
            for r in rows:
                by[r["method"]].append(r)
            print(f"   {label}: {run.rows_written} rows in {run.seconds:.1f} s ({run.prompts_per_s} rows/s) {load()}")
            print("      method        PA     GS     CP     NV   score-c  score")
            for m in ("baseline", "persona_only", "brag", "vprag", "comb"):
                rr = by[m]
                mean = {k: sum(r[k] for r in rr) / len(rr) for k in ("pa", "gs", "cp", "nv", "score_c", "score")}
                print(f"      {m:<12} {mean['pa']:.3f}  {mean['gs']:.3f}  {mean['cp']:.3f}  {mean['nv']:.3f}  "
                      f"{mean['score_c']:.3f}    {mean['score']:.3f}")


if __name__ == "__main__":
    main()
