"""Time `vptt validate` on a study the size of the paper's (about 6,000 ratings from 20 annotators).

Synthesises 3 bench runs (one per LLM) of N personas x 2 tasks x 5 methods with judge scores, and ratings of 4
methods by 5 of 20 annotators per item, then times: reading the ratings file, joining and computing every
statistic with B bootstrap resamples, and the same with a judge calibration fitted on 20% of the personas.
Prints each figure with the 1-minute load average beside it.

    python benchmarks/bench_validate.py [--personas 50] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from vptt.evaluators.ratings import load_ratings
from vptt.evaluators.validation import load_run, validate

METHODS = ["baseline", "persona_only", "brag", "vprag", "comb"]
TASKS = {"outdoor_spot": "generation", "convention_center": "editing"}
LLMS = ["qwen2.5-7b", "gpt-4o-mini", "gemini-2.5-pro"]


def synthesise(root: Path, n_personas: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for llm in LLMS:
        rows = []
        for p in range(n_personas):
            for task, kind in TASKS.items():
                truth = rng.uniform(0.5, 4.5, len(METHODS)) + np.arange(len(METHODS)) * 0.2
                annotators = rng.choice(20, 5, replace=False)
                for j, m in enumerate(METHODS):
                    judge = float(np.clip(np.round(2 * (truth[j] + 0.8 + rng.normal(0, 0.5))) / 2, 0, 5))
                    rows.append({"persona_id": f"p{p:04d}", "task": task, "task_kind": kind, "method": m,
                                 "query": task, "prompt": m, "score_c": 0.3 + 0.03 * truth[j] + rng.normal(0, .02),
                                 "judge": judge})
                    if m == "comb":  # the human study rated four methods
                        continue
                    for a in annotators:
                        s = float(np.clip(truth[j] + rng.normal(0, 0.7), 0, 5))
                        lines.append(json.dumps({"annotator": f"a{a:02d}", "persona_id": f"p{p:04d}", "task": task,
                                                 "method": m, "llm": llm, "score": round(s, 2)}))
        run = root / f"run-{llm}"
        run.mkdir()
        (run / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "ratings.jsonl").write_text("\n".join(lines) + "\n")
    return root / "ratings.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--personas", type=int, default=50)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = synthesise(root, args.personas)
        t0 = time.perf_counter()
        ratings = load_ratings(path)
        t_load = time.perf_counter() - t0
        runs = [load_run(f"{llm}={root / f'run-{llm}'}") for llm in LLMS]
        t0 = time.perf_counter()
        report, _ = validate(ratings, runs, n_boot=args.bootstrap)
        t_val = time.perf_counter() - t0
        t0 = time.perf_counter()
        cal_report, _ = validate(ratings, runs, n_boot=args.bootstrap, calibration_fraction=0.2)
        t_cal = time.perf_counter() - t0
    load = os.getloadavg()[0]
    print(f"study: {len(ratings)} ratings, {report.n_annotators} annotators, {report.n_images} images, "
          f"{report.n_items} items; bootstrap {args.bootstrap}")
    print(f"read + validate ratings file : {t_load:7.3f} s  ({len(ratings) / t_load:,.0f} ratings/s)  load {load:.2f}")
    print(f"validate (all statistics)    : {t_val:7.3f} s  load {os.getloadavg()[0]:.2f}")
    print(f"validate + fit calibration   : {t_cal:7.3f} s  load {os.getloadavg()[0]:.2f}")
    c = cal_report.calibration
    assert c is not None
    print(f"judge vs human on held-out images: MAE {c.before.mae:.3f} -> {c.after.mae:.3f}, "
          f"bias {c.before.bias:+.3f} -> {c.after.bias:+.3f}, rho {c.before.rho:.3f} -> {c.after.rho:.3f}")


if __name__ == "__main__":
    main()
