"""`vptt evaluate`: rows, resumability, the paper's table layout and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vptt import ConfigError, Personalizer
from vptt.agents.tasks import PRESETS, Task, resolve_tasks
from vptt.evaluators.vptt_score import vptt_score
from vptt.sdk.evaluate import evaluate
from vptt.stores.memory import InMemoryPersonaStore

TASKS = ["outdoor_spot", "garden"]


@pytest.fixture
def pz(embedder, two_personas) -> Personalizer:
    p = Personalizer(InMemoryPersonaStore(embedder))
    p.ingest(two_personas)
    return p


def test_rows_report_and_plots(pz, tmp_path) -> None:
    run = evaluate(pz, tmp_path / "ev", tasks=TASKS, progress=False)
    rows = [json.loads(line) for line in open(run.rows_path)]
    assert run.rows_written == len(rows) == 2 * 2 * 5 and run.rows_total == 20
    keys = {(r["persona_id"], r["task"], r["method"]) for r in rows}
    assert len(keys) == 20
    for r in rows:
        if r["method"] in ("baseline", "persona_only"):
            assert r["nv"] == 0 and not r["caption_conditioned"]
            assert r["score"] == pytest.approx(0.2 * r["pa"] + 0.3 * r["gs"] + 0.3 * r["cp"])
        assert r["score_c"] == pytest.approx((r["pa"] + r["gs"] + r["cp"]) / 3)
    # an independent recomputation of one row from the store's embeddings
    r = next(r for r in rows if r["method"] == "vprag" and r["persona_id"] == "alice")
    mem = pz.store.embedded("alice")
    ref = vptt_score(r["prompt"], pz.embedder.embed([r["prompt"]])[0], mem.card_emb, mem.caption_embs,
                     mem.captions)
    assert (r["pa"], r["gs"], r["cp"], r["nv"]) == pytest.approx((ref.pa, ref.gs, ref.cp, ref.nv), abs=1e-6)
    report = (tmp_path / "ev" / "report.md").read_text()
    assert ("| LLM | Method | n | PA | GS | CP | NV | score-c | 95% CI | Win% | d (vs Baseline) | score | 95% CI | "
            "Win% | d (vs Baseline) |") in report
    assert "## Summary" in report and "| Baseline | " in report and "NV is — for methods not" in report
    assert "| LLM | n | Baseline V [95% CI] | d (vs best) | Persona Only V [95% CI] |" in report
    assert len(run.plots) == 3 and (tmp_path / "ev" / "report.html").exists()
    for p in run.plots:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((tmp_path / "ev" / "manifest.json").read_text())
    assert manifest["config"]["methods"] == ["baseline", "persona_only", "brag", "vprag", "comb"]


def test_resume_after_crash_loses_and_duplicates_nothing(pz, tmp_path) -> None:
    out = tmp_path / "ev"
    full = evaluate(pz, out, tasks=TASKS, progress=False, report=False)
    lines = open(full.rows_path).read().splitlines(keepends=True)
    with open(full.rows_path, "w") as fh:  # a kill -9 mid-write: 7 whole rows, then half a line
        fh.writelines(lines[:7])
        fh.write(lines[7][: len(lines[7]) // 2])
    again = evaluate(pz, out, tasks=TASKS, progress=False, report=False)
    assert again.rows_resumed == 7 and again.rows_written == 13 and again.rows_total == 20
    rows = [json.loads(line) for line in open(full.rows_path)]
    assert len(rows) == 20 and len({(r["persona_id"], r["task"], r["method"]) for r in rows}) == 20
    by_key = {(json.loads(x)["persona_id"], json.loads(x)["task"], json.loads(x)["method"]): json.loads(x)
              for x in lines}
    for r in rows:
        assert r == pytest.approx(by_key[(r["persona_id"], r["task"], r["method"])])
    assert evaluate(pz, out, tasks=TASKS, progress=False, report=False).rows_written == 0


def test_different_config_in_same_dir_is_refused(pz, tmp_path) -> None:
    evaluate(pz, tmp_path / "ev", tasks=TASKS, methods=["vprag"], progress=False, report=False)
    with pytest.raises(ConfigError, match="different configuration"):
        evaluate(pz, tmp_path / "ev", tasks=TASKS, methods=["brag"], progress=False, report=False)


def test_tasks() -> None:
    assert PRESETS["outdoor_spot"].query == "A preferred outdoor spot"
    assert PRESETS["convention_center"].kind == "editing"
    got = resolve_tasks(["social_post", "beach:editing=Here is a beach. Add my things", Task(name="x", query="y")])
    assert [(t.name, t.kind) for t in got] == [("social_post", "generation"), ("beach", "editing"),
                                               ("x", "generation")]
    with pytest.raises(ConfigError, match="unknown task"):
        resolve_tasks(["nope"])
    with pytest.raises(ConfigError, match="unique"):
        resolve_tasks(["garden", "garden"])


def test_win_rates_in_report_match_a_naive_count(pz, tmp_path) -> None:
    run = evaluate(pz, tmp_path / "ev", tasks=["outdoor_spot"], progress=False)
    rows = [json.loads(line) for line in open(run.rows_path)]
    methods = ["baseline", "persona_only", "brag", "vprag", "comb"]
    wins = dict.fromkeys(methods, 0.0)
    for pid in ("alice", "bob"):
        s = {r["method"]: r["score"] for r in rows if r["persona_id"] == pid}
        best = max(s.values())
        tied = [m for m in methods if np.isclose(s[m], best, rtol=0, atol=0)]
        for m in tied:
            wins[m] += 1 / len(tied) / 2
    report = (tmp_path / "ev" / "report.md").read_text()
    vprag_line = next(line for line in report.splitlines() if "| VPRAG |" in line)
    assert vprag_line.split("|")[14].strip() == f"{100 * wins['vprag']:.1f}%"


def test_one_persona_writes_rows_and_a_report_with_n_a(pz, tmp_path) -> None:
    from vptt.evaluators.bench_report import bench_report
    from vptt.sdk.bench import run_bench

    run = evaluate(pz, tmp_path / "ev", personas=["alice"], tasks=["outdoor_spot"], progress=False)
    assert run.rows_written == 5 and len(run.plots) == 3
    report = (tmp_path / "ev" / "report.md").read_text()
    vprag = next(line for line in report.splitlines() if "| VPRAG |" in line).split("|")
    assert vprag[3].strip() == "1" and vprag[9].strip() == "n/a" and vprag[11].strip() == "n/a"  # n, CI, d
    bench = run_bench(pz, tmp_path / "b", personas=["alice"], tasks=["outdoor_spot"], progress=False)
    rep = bench_report(bench.out_dir)
    assert bench.rows_written == 5 and "n/a" in rep.markdown.read_text() and rep.html.exists()
