"""Throughput of masked similarity (MaSC): vptt's evaluator vs the published ``masc-metric``, same run, CPU.

Both score the same pairs with the same tiny seeded SigLIP2 checkpoint (``tests/tiny_siglip.py``, saved to a
temp dir); the figures are output images scored per second (best of ``--repeats`` alternating runs; the
CPU-time ratio is printed too, as it suffers less from other processes on a shared machine) and the
largest |CP| and |PF| difference between the two. Two workloads:

* ``per-reference``: R references x N outputs each, every output with its own prompt (a personalization
  benchmark's layout; vptt encodes each reference once and batches the outputs).
* ``all-distinct``: every pair has its own reference and prompt (no reuse possible; batching only).

Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_masc.py [--refs 4 --outputs 16 --max-patches 1024]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tests.tiny_siglip import save_tiny  # noqa: E402
from vptt.evaluators.masked_similarity import MaskedPair, MaskedSimilarity  # noqa: E402


def _image(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    y, x = rng.integers(0, h // 3), rng.integers(0, w // 3)
    m[y:y + h // 2, x:x + w // 2] = 255
    return m


def make_pairs(refs: int, outputs: int, side: int, distinct: bool, seed: int = 0) -> list[MaskedPair]:
    """``refs * outputs`` pairs; with ``distinct`` every pair gets a reference of its own."""
    rng = np.random.default_rng(seed)
    n_ref = refs * outputs if distinct else refs
    ref_imgs = [(_image(rng, side * 3 // 4, side), _mask(rng, side * 3 // 4, side)) for _ in range(n_ref)]
    pairs = []
    for k in range(refs * outputs):
        ref, ref_mask = ref_imgs[k if distinct else k // outputs]
        out, out_mask = _image(rng, side, side), _mask(rng, side, side)
        prompt = f"a photo of a cat, scene {k}, on a beach"
        pairs.append(MaskedPair(ref, ref_mask, out, out_mask, prompt, "cat"))
    return pairs


def _time(fn) -> tuple[float, float, list]:  # noqa: ANN001
    """Wall-clock and process CPU seconds of one call, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _max_diff(a: list[float], b: list[float]) -> float:
    diffs = [abs(x - y) for x, y in zip(a, b) if not (math.isnan(x) and math.isnan(y))]
    return max(diffs) if len(diffs) == len(a) else math.inf


def run(kind: str, workload: str, args: argparse.Namespace, ckpt: str) -> None:
    from masc import MaSC

    pairs = make_pairs(args.refs, args.outputs, args.side, workload == "all-distinct")
    theirs = MaSC(ckpt, device="cpu", naflex_max_patches=args.max_patches)
    ours = MaskedSimilarity(ckpt, device="cpu", naflex_max_patches=args.max_patches,
                            batch_size=args.batch_size, text_cache_size=0)  # no cross-run text cache

    def reference() -> list:
        return [theirs.score(p.reference, p.reference_mask, p.output, p.output_mask, p.prompt, p.subject)
                for p in pairs]

    theirs.score(*(getattr(pairs[0], f) for f in ("reference", "reference_mask", "output", "output_mask",
                                                   "prompt", "subject")))  # warm-up
    ours.score_batch(pairs[:2])
    walls: dict[str, list[float]] = {"masc": [], "vptt": []}
    cpus: dict[str, list[float]] = {"masc": [], "vptt": []}
    for _ in range(args.repeats):  # alternate so both see the same machine load
        wall, cpu, ref_res = _time(reference)
        walls["masc"].append(wall)
        cpus["masc"].append(cpu)
        before = ours.stats.images_encoded
        wall, cpu, our_res = _time(lambda: ours.score_batch(pairs))
        walls["vptt"].append(wall)
        cpus["vptt"].append(cpu)
        encoded = ours.stats.images_encoded - before
    d_cp = _max_diff([r.cp for r in ref_res], [r.cp for r in our_res])
    d_pf = _max_diff([r.pf for r in ref_res], [r.pf for r in our_res])
    n, w, c = len(pairs), {k: min(v) for k, v in walls.items()}, {k: min(v) for k, v in cpus.items()}
    print(f"{kind:7s} {workload:14s} pairs={n:4d} | masc {n / w['masc']:7.1f} img/s  "
          f"vptt {n / w['vptt']:7.1f} img/s  speed-up {w['masc'] / w['vptt']:5.2f}x "
          f"(CPU-time {c['masc'] / c['vptt']:5.2f}x) | image forwards {2 * n}->{encoded} | "
          f"max|dCP|={d_cp:.1e} max|dPF|={d_pf:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=4)
    parser.add_argument("--outputs", type=int, default=16, help="outputs per reference")
    parser.add_argument("--side", type=int, default=128, help="output image side in pixels")
    parser.add_argument("--max-patches", type=int, default=1024, help="NaFlex patch budget (paper: 1024)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, tiny SigLIP2 (hidden 32, "
          f"2 layers, patch 4), NaFlex max_patches={args.max_patches}, fixed 32x32; "
          "images/s = output images scored/s")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("naflex", "fixed"):
            ckpt = str(save_tiny(tmp, kind))
            for workload in ("per-reference", "all-distinct"):
                run(kind, workload, args, ckpt)


if __name__ == "__main__":
    main()
