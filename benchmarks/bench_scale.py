"""VPTT-Bench at scale: ingest, write, cold-read, warm-personalize and memory costs against the number of personas.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_scale.py --personas 100,1000,10000 [--store both]``.

For each N it generates N procedural personas (``vptt bench generate --procedural N --seed 11``: 30 posts of
~225-word captions, ~480 element occurrences each, a shared element vocabulary), ingests the file into a fresh
store (embedded Chroma and/or a ``chroma run`` server on 127.0.0.1) and measures, in one run:

* ingest wall time against the encoder's time for the file's unique texts (the goal: at most 1.2x);
* the store's write rate (vectors per second spent in the writer's Chroma calls);
* a persona's cold read (first ``embedded()`` of a persona, store already open) and the store's open time;
* warm ``personalize()`` against one query embedding (MiniLM, the real encoder);
* peak RSS of this process (and of the Chroma server) through ingest and the reads.

Embedders: ``--embedder minilm`` encodes with the real MiniLM (hours at 10,000 personas on a CPU);
``stand-in`` uses deterministic pseudo-random unit vectors (a text's hash seeds them), so 10,000 personas fit in
minutes; ``auto`` (default) uses MiniLM where the file has at most ``--minilm-max-texts`` unique texts. With
the stand-in, the encoder time is *projected* from MiniLM's rate measured on a sample of the file's own texts,
and the ratio is (ingest - stand-in encoding + projected encoding) / projected encoding: an upper bound, as it
assumes no overlap of writing with encoding. The output says which embedder each row used.

Prints a table and saves ``scale.png`` (log-log, each cost against N) and ``scale.json`` in ``--out``.
Every figure has the 1-minute load average beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vptt.stores.embedders import Embedder  # noqa: E402

QUERIES = ["A preferred outdoor spot", "A cultural site I would visit on a weekend",
           "A photo showing my next social media post with my style and content",
           "Here is a garden. Add my favourite things"]


class StandInEmbedder(Embedder):
    """Deterministic pseudo-random unit vectors (the text's hash seeds them): a stand-in for a fast encoder."""

    name, dim = "stand-in:sha256-seeded", 384

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dim, dtype=np.float32)
        return out


class PeakRSS:
    """Samples the RSS of this process (and of ``extra_pid``) every 50 ms; keeps the peaks."""

    def __init__(self, extra_pid: int | None = None) -> None:
        import psutil

        self.procs = [psutil.Process()] + ([psutil.Process(extra_pid)] if extra_pid else [])
        self.peaks = [p.memory_info().rss for p in self.procs]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for i, p in enumerate(self.procs):
                try:
                    self.peaks[i] = max(self.peaks[i], p.memory_info().rss)
                except Exception:  # noqa: BLE001 - the server went away
                    pass

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return [b / 2**30 for b in self.peaks]


class WriteMeter:
    """Wraps a store's write primitives to time them and count what they write."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self.seconds, self.vectors, self.entries = 0.0, 0, 0
        for name, counter in (("_put_vectors", "vectors"), ("_put_entries", "entries")):
            original = getattr(store, name)

            def timed(arg, _orig=original, _counter=counter):  # type: ignore[no-untyped-def]
                t0 = time.perf_counter()
                _orig(arg)
                self.seconds += time.perf_counter() - t0
                setattr(self, _counter, getattr(self, _counter) + len(arg))

            setattr(store, name, timed)


def load() -> float:
    return os.getloadavg()[0]


def make_bank(n: int, folder: Path) -> tuple[Path, list[str]]:
    """The procedural bank of N personas (seed 11) and its unique texts (captions, elements, persona cards)."""
    from vptt.agents.persona_gen.runner import write_procedural
    from vptt.core.personas import iter_personas
    from vptt.stores.records import texts_to_embed

    path = folder / f"bank-{n}.jsonl"
    if not path.exists():
        write_procedural(path, n, seed=11, report_path=folder / f"bank-{n}.report.json")
    texts: dict[str, None] = {}
    for p in iter_personas(path):
        texts.update(dict.fromkeys(texts_to_embed(p)))
    return path, list(texts)


def minilm_rate(minilm, texts: list[str], sample: int) -> float:  # type: ignore[no-untyped-def]
    """MiniLM seconds per text over a random sample of the file's texts (captions and elements alike)."""
    rng = random.Random(0)
    picked = rng.sample(texts, min(sample, len(texts)))
    t0 = time.perf_counter()
    minilm.embed(picked)
    return (time.perf_counter() - t0) / len(picked)


def measure(n: int, kind: str, use_minilm: bool, args: argparse.Namespace, work: Path, minilm) -> dict:  # type: ignore[no-untyped-def]
    from vptt import Personalizer
    from vptt.core.devices import threads_per_worker
    from vptt.sdk._ray_backend import ChromaServer
    from vptt.stores.chroma import ChromaPersonaStore
    from vptt.stores.engine import LocalEngine

    path, texts = make_bank(n, work)
    row: dict = {"personas": n, "store": kind, "embedder": "minilm" if use_minilm else "stand-in",
                 "unique_texts": len(texts)}
    embedder: Embedder = minilm if use_minilm else StandInEmbedder()
    with ExitStack() as stack:
        srv = None
        if kind == "server":
            srv = stack.enter_context(ChromaServer(work / f"server-{n}-{time.time_ns()}"))
        rss = PeakRSS(srv.proc.pid if srv and srv.proc else None)
        t0 = time.perf_counter()  # the encoder's time for the file's unique texts
        embedder.embed(texts)
        enc_s = time.perf_counter() - t0
        if not use_minilm:
            row["minilm_s_projected"] = minilm_rate(minilm, texts, args.sample) * len(texts)
        row["encoder_s"], row["load_encoder"] = enc_s, load()
        t0 = time.perf_counter()
        store = (ChromaPersonaStore(embedder, host=srv.host, port=srv.port, timeout_s=600) if srv else
                 ChromaPersonaStore(embedder, path=work / f"db-{n}-{time.time_ns()}"))
        row["open_s"] = time.perf_counter() - t0
        meter = WriteMeter(store)
        pz = Personalizer(store, embedder=minilm)  # queries: the real encoder
        t0 = time.perf_counter()
        report = pz.ingest(path, engine=LocalEngine(embedder, threads=threads_per_worker(1)))
        row["ingest_s"], row["load_ingest"] = time.perf_counter() - t0, load()
        row["texts_embedded"] = report.texts_embedded
        row["write_s"], row["vectors_written"] = meter.seconds, meter.vectors + meter.entries
        row["writes_per_s"] = row["vectors_written"] / max(meter.seconds, 1e-9)
        if use_minilm:
            row["ratio"] = row["ingest_s"] / enc_s
        else:
            proj = row["minilm_s_projected"]
            row["ratio"] = (row["ingest_s"] - enc_s + proj) / proj
        # cold reads: first read of personas never read in this store object
        ids = store.list_ids()
        rng = random.Random(1)
        picked = rng.sample(ids, min(args.reads, len(ids)))
        cold = []
        for pid in picked:
            t0 = time.perf_counter()
            store.embedded(pid)
            cold.append(time.perf_counter() - t0)
        row["cold_read_ms"], row["load_reads"] = statistics.median(cold) * 1000, load()
        # warm personalize (persona cached, new query) against one MiniLM query embedding, interleaved
        embed_t, warm_t = [], []
        for k, pid in enumerate(picked):
            q = f"{QUERIES[k % len(QUERIES)]} #{k}"
            t0 = time.perf_counter()
            minilm.embed_one(q + " (embed only)")
            embed_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pz.personalize(pid, q)
            warm_t.append(time.perf_counter() - t0)
        row["query_embed_ms"] = statistics.median(embed_t) * 1000
        row["warm_personalize_ms"] = statistics.median(warm_t) * 1000
        row["warm_ratio"], row["load_warm"] = row["warm_personalize_ms"] / row["query_embed_ms"], load()
        peaks = rss.stop()
        row["peak_rss_gib"] = peaks[0]
        row["server_peak_rss_gib"] = peaks[1] if len(peaks) > 1 else None
    return row


COLUMNS = [("personas", "N", "{:>7}"), ("store", "store", "{:>8}"), ("embedder", "embedder", "{:>9}"),
           ("unique_texts", "texts", "{:>8}"), ("ingest_s", "ingest s", "{:>9.1f}"),
           ("encoder_s", "enc s", "{:>8.1f}"), ("ratio", "ingest/enc", "{:>10.2f}"),
           ("writes_per_s", "writes/s", "{:>9.0f}"), ("cold_read_ms", "cold ms", "{:>8.2f}"),
           ("warm_personalize_ms", "warm ms", "{:>8.2f}"), ("query_embed_ms", "query ms", "{:>9.2f}"),
           ("warm_ratio", "warm/q", "{:>7.2f}"), ("peak_rss_gib", "RSS GiB", "{:>8.2f}"),
           ("load_ingest", "load", "{:>5.1f}")]


def print_table(rows: list[dict]) -> None:
    print("".join(f"{h:>11}" for _, h, _ in COLUMNS))
    for r in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            cells.append(f"{'n/a':>11}" if v is None else f"{fmt.format(v):>11}")
        print("".join(cells))


def plot(rows: list[dict], out: Path) -> Path:
    """Each cost against N (log-log); the first panel is ingest time over the encoder's time (goal 1.2).
    Filled markers: the real encoder; hollow: stand-in vectors (the encoder's time projected)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("ratio", "ingest / encoder time"), ("write_s", "time in writes (s)"),
               ("cold_read_ms", "cold read (ms)"), ("warm_personalize_ms", "warm personalize (ms)"),
               ("peak_rss_gib", "peak RSS (GiB)")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6))
    for ax, (key, label) in zip(axes, metrics):
        for n, kind in enumerate(sorted({r["store"] for r in rows})):
            pts = sorted((r["personas"], r[key], r["embedder"]) for r in rows if r["store"] == kind and r.get(key))
            if not pts:
                continue
            colour = f"C{n}"
            xs, ys, emb = zip(*pts)
            ax.plot(xs, ys, color=colour, label=kind)
            for x, y, e in pts:
                ax.plot([x], [y], "o", color=colour, markerfacecolor=colour if e == "minilm" else "white")
        ax.set_xscale("log")
        if key == "ratio":
            ax.axhline(1.2, color="grey", linestyle="--", linewidth=1, label="goal 1.2")
            ax.set_ylim(0, max(1.5, max((r["ratio"] for r in rows), default=1) * 1.1))
        else:
            ax.set_yscale("log")
        ax.set_xlabel("personas")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("vptt store costs against the number of personas (filled: real MiniLM; hollow: stand-in "
                 "vectors, encoder time projected)", fontsize=9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    png = out / "scale.png"
    fig.savefig(png, dpi=120)
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--personas", default="100,1000,10000", help="comma-separated N")
    ap.add_argument("--store", choices=["embedded", "server", "both"], default="embedded")
    ap.add_argument("--embedder", choices=["auto", "minilm", "stand-in"], default="auto")
    ap.add_argument("--minilm-max-texts", type=int, default=4000, help="auto: MiniLM up to this many unique texts")
    ap.add_argument("--sample", type=int, default=512, help="texts to time MiniLM on (stand-in rows)")
    ap.add_argument("--reads", type=int, default=200, help="personas read cold, then personalized warm")
    ap.add_argument("--work", type=Path, default=None, help="folder for banks and stores (banks are reused)")
    ap.add_argument("--out", type=Path, default=Path("bench-scale"))
    ap.add_argument("--replot", type=Path, nargs="+", default=None,
                    help="draw scale.png in --out from saved scale.json files (e.g. an embedded and a server run)")
    args = ap.parse_args()
    if args.replot:
        rows = [r for f in args.replot for r in json.loads(f.read_text())]
        print(f"plot: {plot(rows, args.out)}")
        return

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from vptt.stores.embedders import MiniLMEmbedder

    work = args.work or Path(tempfile.mkdtemp(prefix="vptt-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    minilm = MiniLMEmbedder()
    minilm.embed(["warm-up"])
    kinds = ["embedded", "server"] if args.store == "both" else [args.store]
    print(f"cores: {os.cpu_count()}, load average: {load():.1f}, work dir: {work}", flush=True)
    rows = []
    for n in [int(x) for x in args.personas.split(",")]:
        for kind in kinds:
            _, texts = make_bank(n, work)
            use = args.embedder == "minilm" or args.embedder == "auto" and len(texts) <= args.minilm_max_texts
            row = measure(n, kind, use, args, work, minilm)
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    print()
    print_table(rows)
    print("\nembedder per row: 'minilm' = ratio measured against the real encoder; 'stand-in' = pseudo-random "
          "vectors, ratio projected from MiniLM's rate on a sample of the file's texts (no overlap assumed: an "
          "upper bound). Goals: ingest/enc <= 1.2; at 10,000 personas cold <= 20 ms, warm/q <= 1.5, "
          "writes >= 5,000/s; RSS <= 4 GiB.")
    (args.out / "scale.json").write_text(json.dumps(rows, indent=2))
    print(f"plot: {plot(rows, args.out)}")


if __name__ == "__main__":
    main()
