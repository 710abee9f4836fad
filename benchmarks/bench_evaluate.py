"""Bulk evaluation throughput on the bundled sample set (issue: VPTT score and `vptt evaluate`).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_evaluate.py [--backend auto|torch|onnx|onnx-int8]``.
Prints, in one run:
* end to end: personalize + prompt embedding (MiniLM, the chosen engine; default: auto = ONNX fp32 on CPU) +
  VPTT score, prompts/s, over 24 personas x 4 tasks x 5 methods (personas already ingested; their embeddings
  are not part of the figure), with the 1-minute load average;
* the math alone: VPTT score of the same prompts with their embeddings precomputed, prompts/s;
* the ordering of the methods by mean VPTT_score and VPTT_score-c.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description="bulk evaluation throughput on the sample set")
    ap.add_argument("--backend", default="auto", help="MiniLM engine: auto, torch, onnx or onnx-int8")
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from vptt import Personalizer, load_personas
    from vptt.evaluators.vptt_score import PersonaEmbeddings, VPTTScorer, score_prepared
    from vptt.sdk.evaluate import evaluate
    from vptt.stores.embedders import MiniLMEmbedder
    from vptt.stores.embedding_cache import CachedEmbedder
    from vptt.stores.memory import InMemoryPersonaStore

    tmp = Path(tempfile.mkdtemp(prefix="vptt-bench-eval-"))
    minilm = MiniLMEmbedder(backend=args.backend)
    store = InMemoryPersonaStore(CachedEmbedder(minilm, tmp / "cache.sqlite"))
    pz = Personalizer(store)
    t0 = time.perf_counter()
    pz.ingest(load_personas(ROOT / "examples" / "data" / "personas.jsonl"))
    print(f"ingest of the sample set (not part of the figures): {time.perf_counter() - t0:.1f} s; engine "
          f"{minilm.engine}")

    # end to end: a scorer over the bare MiniLM so that every prompt is really embedded
    pz_bare = Personalizer(store, embedder=minilm)
    run = evaluate(pz_bare, tmp / "run", scorer=VPTTScorer(minilm), progress=False, report=False)
    print(f"end to end (personalize + embed + score): {run.rows_written} prompts in {run.seconds:.2f} s "
          f"= {run.prompts_per_s:.1f} prompts/s (goal >= 140); load {os.getloadavg()[0]:.1f}")

    rows = [json.loads(line) for line in open(tmp / "run" / "rows.jsonl")]
    words = np.mean([len(r["prompt"].split()) for r in rows])
    print(f"mean prompt length: {words:.0f} words")

    # the math alone: embeddings precomputed
    by_persona = defaultdict(list)
    for r in rows:
        by_persona[r["persona_id"]].append(r["prompt"])
    embs = {pid: minilm.embed(ps) for pid, ps in by_persona.items()}
    geos = {}
    for pid in by_persona:
        mem = store.embedded(pid)
        geos[pid] = VPTTScorer(minilm).prepare(PersonaEmbeddings(pid, mem.card_emb, mem.caption_embs, mem.captions))
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        for pid, prompts in by_persona.items():
            score_prepared(geos[pid], prompts, embs[pid])
    math_rate = reps * len(rows) / (time.perf_counter() - t0)
    print(f"math alone (embeddings and persona geometry precomputed): {math_rate:,.0f} prompts/s (goal >= 20,000)")

    print("\nmethod ordering on the sample set (mean over 24 personas x 4 tasks):")
    for key in ("score", "score_c"):
        means = defaultdict(list)
        for r in rows:
            means[r["method"]].append(r[key])
        order = sorted(means, key=lambda m: -np.mean(means[m]))
        print(f"  VPTT_{key:<8}: " + " > ".join(f"{m} {np.mean(means[m]):.3f}" for m in order))


if __name__ == "__main__":
    main()
