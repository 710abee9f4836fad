"""Spine benchmark: query embedding vs warm personalize() with 1,000 stored personas, and ingest throughput.

Run: ``make bench`` or ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_personalize.py [--personas 1000]``.
Prints figures and ratios measured in one run. The 1,000 personas are made by resampling the bundled sample set
(each a copy of a sample persona with its posts resampled), stored in an embedded Chroma in a temp dir.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "personas.jsonl"
QUERIES = ["A preferred outdoor spot", "A photo showing my next social media post with my style and content",
           "A cultural site I would visit", "Here is a convention center. Add a preferred event",
           "Here is a garden. Add my favourite things", "Here is an empty living room. Furnish it my way"]


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def resample(personas: list, n: int, seed: int = 0) -> list:
    """``n`` personas: copies of the sample personas, each with its 30 posts resampled with replacement."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        base = personas[k % len(personas)]
        posts = [rng.choice(base.posts) for _ in base.posts]
        posts = [p.model_copy(update={"post_id": f"{p.post_id}-r{j}"}) for j, p in enumerate(posts)]
        out.append(base.model_copy(update={"persona_id": f"{base.persona_id}-x{k:05d}", "posts": posts}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--personas", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--store-dir", type=Path, default=None,
                    help="reuse (or create) the store here; a second run skips the slow Chroma writes")
    args = ap.parse_args()

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from vptt import Personalizer, load_personas
    from vptt.stores.chroma import ChromaPersonaStore
    from vptt.stores.embedders import MiniLMEmbedder
    from vptt.stores.embedding_cache import CachedEmbedder

    sample = list(load_personas(SAMPLE))
    minilm = MiniLMEmbedder()
    minilm.embed(["warm-up"])
    tmp = args.store_dir or Path(tempfile.mkdtemp(prefix="vptt-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)

    # -- ingest throughput vs raw encode rate (sample set, nothing cached) --------------------------------------
    from vptt.stores.records import texts_to_embed

    texts = list(dict.fromkeys(t for p in sample for t in texts_to_embed(p)))
    t0 = time.perf_counter()
    minilm.embed(texts)
    raw_rate = len(texts) / (time.perf_counter() - t0)
    cached = CachedEmbedder(minilm, tmp / "cache.sqlite")
    store = ChromaPersonaStore(cached, path=tmp / "chroma")
    t0 = time.perf_counter()
    results = store.upsert_many(sample)
    ingest_s = time.perf_counter() - t0
    embedded = sum(r.texts_embedded for r in results)
    print(f"sample set: {len(sample)} personas, {embedded} unique texts")
    print(f"raw MiniLM encode rate:          {raw_rate:8.1f} texts/s")
    print(f"ingest (embed + Chroma write):   {embedded / ingest_s:8.1f} texts/s  "
          f"({embedded / ingest_s / raw_rate:.2f}x raw encode; {len(sample) / ingest_s:.2f} personas/s)")
    t0 = time.perf_counter()
    again = store.upsert_many(sample)
    print(f"re-ingest (unchanged):           {time.perf_counter() - t0:8.3f} s, "
          f"{sum(r.texts_embedded for r in again)} texts embedded")

    # -- 1,000 stored personas ------------------------------------------------------------------------------------
    many = resample(sample, args.personas)
    t0 = time.perf_counter()
    for start in range(0, len(many), 100):
        store.upsert_many(many[start:start + 100])
    print(f"stored {len(many)} resampled personas in {time.perf_counter() - t0:.1f} s "
          "(texts hit the embedding cache: this is Chroma write time; unchanged personas are skipped)")

    rng = random.Random(1)
    queries = [f"{rng.choice(QUERIES)} #{i} {rng.choice(['at dawn', 'in winter', 'with friends', 'alone'])}"
               for i in range(args.queries)]
    pz = Personalizer(store, embedder=minilm)  # queries embedded directly: each query is new
    ids = [p.persona_id for p in many]
    picked = [ids[(i * 7919) % len(ids)] for i in range(len(queries))]
    cold = []
    for pid, q in zip(picked, queries):
        t0 = time.perf_counter()
        pz.personalize(pid, q)  # first use of this persona: reads its collection from Chroma
        cold.append(time.perf_counter() - t0)
    # warm: embed-only and personalize() interleaved in one loop, so both run under the same conditions
    embed_times, warm = [], []
    for pid, q in zip(picked, queries):
        t0 = time.perf_counter()
        minilm.embed_one(q + " (embed)")
        embed_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pz.personalize(pid, q + " (again)")
        warm.append(time.perf_counter() - t0)
    pz_cached = Personalizer(store, embedder=cached)
    warm_cached_query = []
    for i, q in enumerate(queries[:50]):
        pz_cached.personalize(ids[i], q)
    for i, q in enumerate(queries[:50]):
        t0 = time.perf_counter()
        pz_cached.personalize(ids[i], q)  # warm persona, query embedding from the cache
        warm_cached_query.append(time.perf_counter() - t0)
    retrieve = [pz.personalize(picked[k], "x" + str(k)).timings_ms["retrieve"] for k in range(50)]

    e, w = _median_ms(embed_times), _median_ms(warm)
    print(f"personas stored: {len(store)}")
    print(f"median single-query MiniLM embed:         {e:7.2f} ms")
    print(f"median warm personalize() (new query):    {w:7.2f} ms   ratio {w / e:.2f}x (target <= 1.5x)")
    print(f"median personalize(), persona first read: {_median_ms(cold):7.2f} ms")
    print(f"median warm personalize(), cached query:  {_median_ms(warm_cached_query):7.2f} ms")
    print(f"retrieval alone (median):                 {statistics.median(retrieve):7.2f} ms")


if __name__ == "__main__":
    main()
