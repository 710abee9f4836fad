"""MiniLM engines and the encoding engine: speed, deviation, VPTT-score effect, workers, projection.

Run (quiet machine, full size)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_encoder.py

Smoke size: ``--captions 24 --phrases 64 --reps 1 --personas 4 --bank 200``. Prints, in one run:

1. texts/s of torch, ONNX fp32 and ONNX int8 on short element phrases and on ~225-word procedural captions
   (interleaved repetitions, best of ``--reps``; ``tokens/s`` beside), and each engine's ratio to torch;
2. max |difference| of unit vectors against torch over all those texts;
3. the VPTT score of the sample set (``examples/data/personas.jsonl``, every method, the paper's four tasks)
   with each engine's store and prompts, against torch's: mean and max |delta score|, prompts that changed,
   the method ordering;
4. 1 vs 2 worker processes (:class:`vptt.stores.encoding.PooledEmbedder`, threads split between them) on the
   captions, default engine;
5. the projected wall time to embed the unique texts of a ``--bank``-persona procedural bank (default 10,000,
   ``vptt bench generate --procedural N``) on 32 workers and on one GPU, and how each is projected.

Timings carry the 1-minute load average beside them; figures taken under load are not quotable.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "personas.jsonl"
ENGINES = ("torch", "onnx", "onnx-int8")


def dur(seconds: float) -> str:
    """``seconds`` as s, min or h."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def texts_for(n_captions: int, n_phrases: int) -> tuple[list[str], list[str]]:
    """~225-word procedural captions and short element phrases (sample set and procedural vocabulary)."""
    from vptt import load_personas
    from vptt.agents.persona_gen.procedural import generate_procedural

    bank = generate_procedural(max(1, -(-n_captions // 30)), seed=11)
    captions = [p.caption for persona in bank for p in persona.posts][:n_captions]
    phrases = {e for persona in [*bank, *load_personas(SAMPLE)] for p in persona.posts
               for v in p.elements.values() for e in v}
    return captions, sorted(phrases)[:n_phrases]


def tokens(embedder, texts: list[str]) -> int:
    st = embedder._st
    return sum(len(x) for x in st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"])


def speed(engines: dict, sets: dict[str, list[str]], reps: int) -> dict[tuple[str, str], float]:
    """Best seconds per (engine, set), repetitions interleaved so load hits every engine alike."""
    best: dict[tuple[str, str], float] = defaultdict(lambda: float("inf"))
    for _ in range(reps):
        for kind, texts in sets.items():
            for name, emb in engines.items():
                t0 = time.perf_counter()
                emb.embed(texts)
                best[name, kind] = min(best[name, kind], time.perf_counter() - t0)
    return best


def section_speed(engines: dict, captions: list[str], phrases: list[str], reps: int) -> dict[str, np.ndarray]:
    sets = {"phrases": phrases, "captions": captions}
    for emb in engines.values():
        emb.embed(["warm up"])
    ntok = {k: tokens(engines["torch"], v) for k, v in sets.items()}
    best = speed(engines, sets, reps)
    print(f"\n1. speed ({reps} interleaved repetitions, best; {load()})")
    for kind, texts in sets.items():
        print(f"  {kind}: {len(texts)} texts, {ntok[kind] / len(texts):.0f} tokens each on average")
        for name in engines:
            s = best[name, kind]
            print(f"    {name:10s} {len(texts) / s:8.1f} texts/s {ntok[kind] / s:9.0f} tokens/s   "
                  f"x{best['torch', kind] / s:.2f} vs torch")
    vecs = {name: emb.embed(phrases + captions) for name, emb in engines.items()}
    print("\n2. deviation from torch (unit vectors, phrases + captions)")
    for name in engines:
        d = np.abs(vecs[name] - vecs["torch"])
        cos = (vecs[name] * vecs["torch"]).sum(axis=1)
        print(f"    {name:10s} max |diff| {d.max():.2e}   min cosine {cos.min():.5f}   mean cosine {cos.mean():.5f}")
    return vecs


def section_score(engines: dict, personas: int) -> None:
    from vptt import Personalizer, load_personas
    from vptt.evaluators.vptt_score import VPTTScorer
    from vptt.sdk.evaluate import evaluate
    from vptt.stores.embedding_cache import CachedEmbedder
    from vptt.stores.memory import InMemoryPersonaStore

    tmp = Path(tempfile.mkdtemp(prefix="vptt-bench-encoder-"))
    data = load_personas(SAMPLE)[:personas]
    rows: dict[str, dict[tuple, dict]] = {}
    print(f"\n3. VPTT score of the sample set per engine ({len(data)} personas x 4 tasks x 5 methods; {load()})")
    for name, emb in engines.items():
        t0 = time.perf_counter()
        pz = Personalizer(InMemoryPersonaStore(CachedEmbedder(emb, tmp / f"{name}.sqlite")))
        pz.ingest(data, progress=False)
        run = evaluate(pz, tmp / name, scorer=VPTTScorer(emb), progress=False, report=False)
        import json

        rows[name] = {(r["persona_id"], r["task"], r["method"]): r
                      for r in map(json.loads, open(run.rows_path))}
        print(f"    {name:10s} ingest + evaluate {time.perf_counter() - t0:6.1f} s, {run.prompts_per_s:6.1f} "
              "prompts/s in evaluate")
    ref = rows["torch"]
    for name in engines:
        if name == "torch":
            continue
        d = np.array([abs(rows[name][k]["score"] - ref[k]["score"]) for k in ref])
        changed = np.mean([rows[name][k]["prompt"] != ref[k]["prompt"] for k in ref])
        same = [k for k in ref if rows[name][k]["prompt"] == ref[k]["prompt"]]
        ds = np.array([abs(rows[name][k]["score"] - ref[k]["score"]) for k in same]) if same else np.zeros(1)
        print(f"    {name:10s} |delta VPTT_score| mean {d.mean():.2e} max {d.max():.2e}; prompts changed "
              f"{100 * changed:.1f}%; on unchanged prompts mean {ds.mean():.2e} max {ds.max():.2e}")
    for name, r in rows.items():
        means = defaultdict(list)
        for row in r.values():
            means[row["method"]].append(row["score"])
        order = sorted(means, key=lambda m: -np.mean(means[m]))
        print(f"    {name:10s} " + " > ".join(f"{m} {np.mean(means[m]):.4f}" for m in order))


def section_workers(captions: list[str], reps: int) -> dict[int, float]:
    from vptt.core.devices import available_cores
    from vptt.stores.embedders import MiniLMEmbedder
    from vptt.stores.encoding import PooledEmbedder

    cores = available_cores()
    rates: dict[int, float] = {}
    print(f"\n4. worker processes on {len(captions)} captions (default engine, {cores} cores; {load()})")
    for workers in (1, 2):
        with PooledEmbedder(MiniLMEmbedder(), workers=workers, min_chunk=4) as pool:
            pool.embed(captions[:8])
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                pool.embed(captions)
                best = min(best, time.perf_counter() - t0)
        rates[workers] = len(captions) / best
        print(f"    {workers} worker(s) x {pool.threads} thread(s): {rates[workers]:7.1f} texts/s  ({load()})")
    print(f"    2 workers / 1 worker: x{rates[2] / rates[1]:.2f}")
    return rates


def section_projection(bank: int, per_thread_tokens_s: float, scaling: float, gpu_tflops: float) -> None:
    from vptt.agents.persona_gen.procedural import procedural_persona
    from vptt.stores.embedders import MiniLMEmbedder

    t0 = time.perf_counter()
    seen: set[str] = set()
    kinds = {"caption": 0, "element": 0, "card": 0}
    rng = random.Random(0)
    sample: dict[str, list[str]] = defaultdict(list)
    for i in range(bank):
        p = procedural_persona(i, seed=11)
        items = [("card", p.card_text())] + [("caption", post.caption) for post in p.posts] + \
                [("element", e) for post in p.posts for v in post.elements.values() for e in v]
        for kind, text in items:
            if text not in seen:
                seen.add(text)
                kinds[kind] += 1
                if rng.random() < 0.01 or kinds[kind] <= 20:
                    sample[kind].append(text)
    emb = MiniLMEmbedder(backend="torch")
    emb.embed(["warm"])
    total_tokens = sum(kinds[k] * tokens(emb, sample[k]) / len(sample[k]) for k in kinds if sample[k])
    flops = 2 * 10.65e6 * total_tokens  # 2 x non-embedding parameters of all-MiniLM-L6-v2 per token (attention
    # adds ~10% at 256 tokens; ignored)
    one = total_tokens / per_thread_tokens_s
    print(f"\n5. projection: {bank:,} procedural personas -> {len(seen):,} unique texts ("
          + ", ".join(f"{v:,} {k}s" for k, v in kinds.items()) + f"), ~{total_tokens / 1e6:.1f} M tokens "
          f"(bank built in {time.perf_counter() - t0:.0f} s)")
    how = f"x{scaling:.2f} of the ideal x2" if scaling else "not measured (workers skipped): ideal assumed"
    scaling = scaling or 2.0
    print(f"    measured here: {per_thread_tokens_s:,.0f} tokens/s per worker thread (default engine, captions); "
          f"2-worker scaling {how}")
    eff = min(1.0, scaling / 2)
    print(f"    one thread: {dur(one)}; 32 workers x 1 thread (scaling efficiency {eff:.2f} assumed to "
          f"hold): {dur(one / (32 * eff))}")
    print(f"    one GPU (not measured here: {gpu_tflops:g} TFLOP/s sustained fp32 assumed, --gpu-tflops): "
          f"{dur(flops / (gpu_tflops * 1e12))} for {flops / 1e15:.2f} PFLOP")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--captions", type=int, default=192, help="~225-word captions per speed run")
    ap.add_argument("--phrases", type=int, default=512, help="element phrases per speed run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--personas", type=int, default=24, help="sample personas for the score section (<= 24)")
    ap.add_argument("--bank", type=int, default=10_000, help="personas of the projected procedural bank")
    ap.add_argument("--gpu-tflops", type=float, default=20.0, help="assumed sustained GPU fp32 TFLOP/s")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: speed,score,workers,projection")
    args = ap.parse_args()
    skip = set(args.skip.split(","))

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from vptt.stores.embedders import MiniLMEmbedder

    engines = {name: MiniLMEmbedder(backend=name) for name in ENGINES}
    print(f"engines: {', '.join(f'{n}: {e.name}' for n, e in engines.items())}; {load()}")
    captions, phrases = texts_for(args.captions, args.phrases)
    if "speed" not in skip:
        section_speed(engines, captions, phrases, args.reps)
    if "score" not in skip:
        section_score(engines, args.personas)
    rates = {1: 0.0, 2: 0.0}
    if "workers" not in skip:
        rates = section_workers(captions, args.reps)
    if "projection" not in skip:
        one = MiniLMEmbedder(threads=1)  # the default engine on one thread: one worker of a pool
        one.embed(["warm"])
        t0 = time.perf_counter()
        one.embed(captions)
        per_thread = tokens(one, captions) / (time.perf_counter() - t0)
        scaling = rates[2] / rates[1] if rates[1] else 0.0
        section_projection(args.bank, per_thread, scaling, args.gpu_tflops)


if __name__ == "__main__":
    main()
