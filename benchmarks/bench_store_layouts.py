"""The store layouts and write strategies compared, on one bank, in one run (the measurements behind the design).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_store_layouts.py [--personas 300] [--server]``.

Alternatives (embedded Chroma unless ``--server``; vectors are precomputed stand-ins, so only storage is timed):

1. one collection per persona, every element occurrence stored (the old layout);
2. shared collections, one vector per unique text, Chroma's default HNSW graph (M=16, ef_construction=100);
3. the same with a write-cheap HNSW graph (M=4, ef_construction=16; the store only reads by id) — adopted;
4. write batches of 1,024 / 4,096 / 16,384 new texts;
5. pipelined ingest (embed batch i+1 while batch i is written) or not, with an encoder that costs
   ``--encoder-ms`` per text and leaves the CPU free (as a GPU does);
6. cold reads: two ``get`` calls by id (adopted) against a compact per-persona matrix snapshot file beside
   Chroma (``.npz``, checked against the persona record's content hash before use).

Prints one table; each figure with the 1-minute load average when it was taken.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_scale import StandInEmbedder, make_bank  # noqa: E402

from vptt.stores.embedders import Embedder  # noqa: E402


class Precomputed(Embedder):
    """Serves vectors computed once up front (storage is what is timed); optionally sleeps per text."""

    def __init__(self, vectors: dict[str, np.ndarray], ms_per_text: float = 0.0) -> None:
        self.vectors, self.ms = vectors, ms_per_text
        self.name, self.dim = StandInEmbedder.name, StandInEmbedder.dim

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self.ms:
            time.sleep(self.ms * len(texts) / 1000)  # releases the CPU, like an accelerator
        return np.stack([self.vectors[t] for t in texts])


def du(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def load() -> float:
    return os.getloadavg()[0]


def open_store(emb: Embedder, folder: Path, server, **kwargs):  # type: ignore[no-untyped-def]
    from vptt.stores.chroma import ChromaPersonaStore

    if server is not None:
        return ChromaPersonaStore(emb, host=server.host, port=server.port, prefix=f"b{time.time_ns() % 10**9}",
                                  timeout_s=600, **kwargs)
    return ChromaPersonaStore(emb, path=folder, **kwargs)


def cold_reads(read, ids: list[str], n: int) -> float:  # type: ignore[no-untyped-def]
    picked = random.Random(1).sample(ids, min(n, len(ids)))
    times = []
    for pid in picked:
        t0 = time.perf_counter()
        read(pid)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def legacy(personas, emb, folder: Path, reads: int) -> dict:  # type: ignore[no-untyped-def]
    import chromadb
    from chromadb.config import Settings

    from vptt.stores.chroma_legacy import persona_collection_name, write_legacy
    from vptt.stores.records import EmbeddedPersona, assemble

    client = chromadb.PersistentClient(path=str(folder), settings=Settings(anonymized_telemetry=False))
    t0 = time.perf_counter()
    write_legacy(client, "vptt", personas, emb)
    write_s = time.perf_counter() - t0
    n_vec = sum(len(p.posts) + sum(len(v) for post in p.posts for v in post.elements.values()) for p in personas)
    index = client.get_collection("vptt-personas", embedding_function=None)

    def read(pid: str) -> EmbeddedPersona:  # the old read path: index record, then the persona's collection
        from vptt.core.models import Persona

        got = index.get(ids=[pid], include=["documents", "embeddings"])
        persona = Persona.model_validate_json(got["documents"][0])
        col = client.get_or_create_collection(persona_collection_name("vptt", pid), embedding_function=None)
        items = col.get(include=["embeddings", "documents"])
        by_text = dict(zip(items["documents"], np.asarray(items["embeddings"], np.float32)))
        return assemble(persona, np.asarray(got["embeddings"][0], np.float32), by_text)

    return {"write_s": write_s, "vectors": n_vec + len(personas), "cold_ms": cold_reads(read, index.get()["ids"],
                                                                                          reads)}


def shared(personas, emb, folder: Path, server, reads: int, *, hnsw: tuple[int, int] | None = None,  # type: ignore[no-untyped-def]
           batch: int = 4096, pipeline: bool = True) -> dict:
    import vptt.stores.chroma as chroma

    original = chroma._schema
    if hnsw is not None:
        def schema(unindexed=()):  # type: ignore[no-untyped-def]
            from chromadb import HnswIndexConfig, VectorIndexConfig

            s = original(unindexed)
            s.create_index(config=VectorIndexConfig(space="ip", embedding_function=None,
                                                    hnsw=HnswIndexConfig(max_neighbors=hnsw[0],
                                                                         ef_construction=hnsw[1])))
            return s

        chroma._schema = schema
    try:
        store = open_store(emb, folder, server)
        t0 = time.perf_counter()
        store.upsert_many(personas, batch_texts=batch, pipeline=pipeline)
        ingest_s = time.perf_counter() - t0
    finally:
        chroma._schema = original
    n_vec = sum(len(p) for p in store._scan_vector_keys()) + len(personas)
    return {"write_s": ingest_s, "vectors": n_vec, "cold_ms": cold_reads(store.embedded, store.list_ids(), reads),
            "store": store}


def snapshot_reads(store, folder: Path, reads: int) -> float:  # type: ignore[no-untyped-def]
    """Cold reads from a per-persona .npz of its texts' vectors, valid only for the record's content hash."""
    from vptt.stores.records import EmbeddedPersona, assemble, persona_texts, text_key

    folder.mkdir(parents=True, exist_ok=True)
    ids = store.list_ids()
    for pid in ids:
        entry = store._get_entries([pid])[pid]
        texts = persona_texts(entry.persona())
        vecs = store._get_vectors([text_key(entry.embedder, t) for t in texts])
        np.savez(folder / f"{entry.content_hash}.npz", card=entry.card_emb,
                 texts=np.stack([vecs[text_key(entry.embedder, t)] for t in texts]))

    def read(pid: str) -> EmbeddedPersona:
        entry = store._get_entries([pid])[pid]  # the commit record decides which snapshot is valid
        z = np.load(folder / f"{entry.content_hash}.npz")
        persona = entry.persona()
        return assemble(persona, z["card"], dict(zip(persona_texts(persona), z["texts"])), entry.embedder)

    return cold_reads(read, ids, reads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--personas", type=int, default=300)
    ap.add_argument("--reads", type=int, default=100)
    ap.add_argument("--encoder-ms", type=float, default=0.2, help="per-text cost of the pipelining encoder")
    ap.add_argument("--server", action="store_true", help="measure against a `chroma run` server")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()

    from vptt.core.personas import load_personas
    from vptt.sdk._ray_backend import ChromaServer

    work = args.work or Path(tempfile.mkdtemp(prefix="vptt-layouts-"))
    work.mkdir(parents=True, exist_ok=True)
    path, texts = make_bank(args.personas, work)
    personas = list(load_personas(path))
    vectors = dict(zip(texts, StandInEmbedder().embed(texts)))
    emb = Precomputed(vectors)
    server = ChromaServer(work / f"server-{time.time_ns()}").start() if args.server else None
    rows = []

    def add(name: str, got: dict) -> None:
        rows.append((name, got["write_s"], got["vectors"], got["vectors"] / got["write_s"], got.get("cold_ms"),
                     load()))
        print(f"{name}: {rows[-1][1:]}", flush=True)

    try:
        print(f"{args.personas} personas, {len(texts)} unique texts; cores {os.cpu_count()}, load {load():.1f}")
        if server is None:
            add("1. collection per persona (old)", legacy(personas, emb, work / "legacy", args.reads))
        add("2. shared, HNSW M=16 ef=100", shared(personas, emb, work / "s-default", server, args.reads,
                                                   hnsw=(16, 100)))
        tuned = shared(personas, emb, work / "s-tuned", server, args.reads)
        add("3. shared, HNSW M=4 ef=16 (adopted)", tuned)
        for b in (1024, 16384):
            add(f"4. shared, batches of {b} texts", shared(personas, emb, work / f"s-b{b}", server, args.reads,
                                                          batch=b))
        slow = Precomputed(vectors, args.encoder_ms)
        for pipe in (False, True):
            got = shared(personas, slow, work / f"s-pipe{pipe}", server, args.reads, pipeline=pipe)
            add(f"5. {'pipelined' if pipe else 'serial'}, encoder {args.encoder_ms} ms/text", got)
        if server is None:
            snap_ms = snapshot_reads(tuned["store"], work / "snapshots", args.reads)
            rows.append(("6. cold read from an .npz snapshot", float("nan"), 0, float("nan"), snap_ms, load()))
    finally:
        if server is not None:
            server.stop()
    print(f"\n{'alternative':<44}{'ingest s':>10}{'vectors':>9}{'vectors/s':>11}{'cold ms':>9}{'load':>6}")
    for name, s, v, rate, cold, ld in rows:
        print(f"{name:<44}{s:>10.2f}{v:>9}{rate:>11.0f}{(cold if cold is not None else float('nan')):>9.2f}"
              f"{ld:>6.1f}")
    if server is None:
        print(f"\non disk: old layout {du(work / 'legacy'):.0f} MiB, shared layout {du(work / 's-tuned'):.0f} MiB")


if __name__ == "__main__":
    main()
