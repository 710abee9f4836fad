"""Ingest throughput by engine: this process, Ray with 1 and 2 workers (and a GPU when asked), same bank, one run.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_ingest.py [--personas 20] [--rounds 1] [--device cuda]``.

The bank is N procedural personas (``vptt bench generate --procedural N --seed 11``); every run ingests it into a
fresh embedded Chroma store with the real MiniLM, no cache, so each run embeds the same unique texts. Ray runs
happen in a private network namespace (``unshare -n``, loopback only; the script re-executes itself there).
Runs in ABBA order (1, 2, 2, 1 workers) so drifting load from other processes hits both sides alike; each Ray
worker runs torch with one thread. Prints wall time, texts/s, the 2-worker speed-up, a capacity probe of this
machine (what 2 single-thread processes can gain at most here) and projected wall times for 10,000 personas on
32 workers and on one GPU (measured with ``--device cuda``; otherwise not projected).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))


def load() -> float:
    return os.getloadavg()[0]


def timed_ingest(path: Path, folder: Path, embedder, engine) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    from vptt import Personalizer
    from vptt.stores.chroma import ChromaPersonaStore

    store = ChromaPersonaStore(embedder, path=folder)
    t0 = time.perf_counter()
    report = Personalizer(store, embedder=embedder).ingest(path, engine=engine)
    return time.perf_counter() - t0, report.texts_embedded


def inside(args: argparse.Namespace) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from bench_ray import capacity_probe
    from bench_scale import make_bank

    from vptt import VPTTSettings
    from vptt.core.devices import threads_per_worker
    from vptt.sdk.ray_ingest import RayEmbedEngine
    from vptt.stores.embedders import MiniLMEmbedder
    from vptt.stores.engine import LocalEngine

    work = Path(tempfile.mkdtemp(prefix="vptt-bench-ingest-"))
    path, texts = make_bank(args.personas, work)
    print(f"{args.personas} personas, {len(texts)} unique texts; cores {os.cpu_count()}, load {load():.1f}",
          flush=True)
    ceiling = capacity_probe()
    print(f"machine probe: 2 single-thread processes run {ceiling:.2f}x as fast as 1 (load {load():.1f})",
          flush=True)
    minilm = MiniLMEmbedder(device=args.device)
    minilm.embed(["warm-up"])
    results: dict[str, list[float]] = {}
    k = 0

    def run(name: str, engine) -> None:  # type: ignore[no-untyped-def]
        nonlocal k
        k += 1
        wall, n = timed_ingest(path, work / f"db{k}", minilm, engine)
        results.setdefault(name, []).append(wall)
        print(f"{name:<28} {wall:8.1f} s  {n / wall:8.1f} texts/s  load {load():.1f}", flush=True)

    run(f"local ({threads_per_worker(1)} threads, {args.device})", LocalEngine(minilm, threads=threads_per_worker(1)))
    settings = VPTTSettings(device=args.device, data_dir=work / "data")
    from vptt.sdk._ray_backend import init_ray

    # one Ray instance with room for 1 + 2 single-thread workers (the engines stay up between ABBA rounds)
    init_ray(3)
    engines: dict[int, RayEmbedEngine] = {}
    try:
        for w in [1, 2, 2, 1] * args.rounds:
            if w not in engines:
                engines[w] = RayEmbedEngine.from_settings(settings, workers=w, threads_per_worker=1)
            run(f"ray, {w} worker(s) x 1 thread", engines[w])
    finally:
        for e in engines.values():
            e.close()
        import ray

        ray.shutdown()
    one = sum(results["ray, 1 worker(s) x 1 thread"]) / len(results["ray, 1 worker(s) x 1 thread"])
    two = sum(results["ray, 2 worker(s) x 1 thread"]) / len(results["ray, 2 worker(s) x 1 thread"])
    speedup = one / two
    print(f"\n2 Ray workers vs 1: {speedup:.2f}x (goal >= 1.7x); this machine allows at most {ceiling:.2f}x now "
          f"-> {speedup / ceiling:.0%} of it; load {load():.1f}")
    per_persona = one / args.personas
    eff = min(1.0, speedup / 2)
    print(f"one single-thread worker: {per_persona:.2f} s per persona ({len(texts) / one:.1f} texts/s)")
    print(f"projected 10,000 personas: 1 worker {1e4 * per_persona / 3600:.1f} h; 32 workers at the measured "
          f"2-worker efficiency ({eff:.0%}) {1e4 * per_persona / (32 * eff) / 3600:.2f} h (+ start-up)")
    local_name = next(n for n in results if n.startswith("local"))
    if args.device.startswith("cuda"):
        gpu = sum(results[local_name]) / len(results[local_name])
        print(f"projected 10,000 personas on this GPU: {1e4 * gpu / args.personas / 3600:.2f} h (measured rate "
              f"{len(texts) / gpu:.0f} texts/s)")
    else:
        print("one GPU: not measured here (no --device cuda); run this script with --device cuda on a GPU host")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--personas", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="ABBA rounds of (1, 2, 2, 1) Ray workers")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args)
        return
    from bench_ray import rerun_isolated

    rerun_isolated(__file__)

if __name__ == "__main__":
    main()
