"""Graph overhead: warm personalize() through the LangGraph agent (generator "none") vs the bare spine path.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_graph.py [--repeats 200] [--threads 1]``.

Both paths embed each query with the real MiniLM (no embedding cache, so every call does the same work),
retrieve with VPRAG and compose with the template composer; calls alternate between the paths in one run
so machine load hits all of them alike. Reported: medians, the ratio (goal <= 1.2x) and the absolute
overhead in ms, for the graph with the text gate off (pure graph overhead), with the VPTT text gate on (one
more MiniLM forward, for the prompt) and with SQLite checkpoints. A last section measures the overhead with
query embeddings cached (the bare path then costs ~1-2 ms, so LangGraph's fixed cost is most visible).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "personas.jsonl"
QUERIES = ["A preferred outdoor spot", "A photo showing my next social media post with my style and content",
           "A cultural site I would visit", "Here is a convention center. Add a preferred event",
           "Here is a garden. Add my favourite things", "Here is an empty living room. Furnish it my way"]


def _interleaved(fns: dict[str, Callable[[str, str], object]], pids: list[str],
                 repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        pid, q = pids[i % len(pids)], QUERIES[i % len(QUERIES)]
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(pid, q)
            times[name].append(time.perf_counter() - t0)
    return times


def _report(times: dict[str, list[float]], base: str) -> None:
    ref = statistics.median(times[base]) * 1000
    print(f"  {base:<32} median {ref:8.3f} ms   (mean {statistics.fmean(times[base]) * 1000:.3f})")
    for name, ts in times.items():
        if name == base:
            continue
        med = statistics.median(ts) * 1000
        print(f"  {name:<32} median {med:8.3f} ms   ratio {med / ref:5.3f}x   overhead {med - ref:+7.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--personas", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 avoids OpenMP workers spinning on a busy CPU)")
    args = ap.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="vptt-bench-graph-") as tmp:
        _run(args, tmp)


def _run(args: argparse.Namespace, tmp: str) -> None:
    from vptt import InMemoryPersonaStore, MiniLMEmbedder, Personalizer, load_personas
    from vptt.sdk.agent import PersonalizationAgent
    from vptt.stores.embedding_cache import CachedEmbedder

    personas = list(load_personas(SAMPLE))[: args.personas]
    pids = [p.persona_id for p in personas]
    p = Personalizer(InMemoryPersonaStore(MiniLMEmbedder()))
    p.ingest(personas)
    plain = PersonalizationAgent(p, text_scorer=None)
    gated = PersonalizationAgent(p)  # VPTT-score text gate
    ckpt = PersonalizationAgent(p, text_scorer=None, checkpoint=str(Path(tmp) / "runs.sqlite"))
    ckpt_exit = PersonalizationAgent(p, text_scorer=None, checkpoint=str(Path(tmp) / "exit.sqlite"),
                                     durability="exit")
    fns: dict[str, Callable[[str, str], object]] = {
        "bare personalize()": lambda pid, q: p.personalize(pid, q),
        "graph, no text gate": lambda pid, q: plain.run(pid, q),
        "graph + VPTT text gate": lambda pid, q: gated.run(pid, q),
        "graph + SQLite checkpoints": lambda pid, q: ckpt.run(pid, q),
        "graph + SQLite, durability=exit": lambda pid, q: ckpt_exit.run(pid, q),
    }
    _interleaved(fns, pids, 2 * len(QUERIES) * len(pids))  # warm: model, caches, tiktoken, k-means
    same = all(p.personalize(pid, q).prompt == plain.run(pid, q).prompt for pid in pids for q in QUERIES)
    print(f"MiniLM (uncached query embedding), {len(pids)} personas, {args.repeats} calls per path, "
          f"torch threads={args.threads}; graph prompt == bare prompt for every query: {same}")
    _report(_interleaved(fns, pids, args.repeats), "bare personalize()")

    cached = Personalizer(p.store, embedder=CachedEmbedder(p.embedder, Path(tmp) / "emb.sqlite"))
    cached_agent = PersonalizationAgent(cached, text_scorer=None)
    fns2 = {"bare, cached query emb": lambda pid, q: cached.personalize(pid, q),
            "graph, cached query emb": lambda pid, q: cached_agent.run(pid, q)}
    _interleaved(fns2, pids, len(QUERIES) * len(pids))
    print("Query embeddings cached (fixed graph cost at its most visible):")
    _report(_interleaved(fns2, pids, args.repeats), "bare, cached query emb")
    for agent in (ckpt, ckpt_exit):
        agent.close()


if __name__ == "__main__":
    main()
