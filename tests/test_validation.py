"""`vptt validate`: ratings built by construction, joined with bench runs, every number checked independently.

Two runs (two LLMs) x 2 tasks x 12 personas x 5 methods; 4 rated methods, 4 annotators. In the generation task
the annotators agree exactly on 2/3 of the items (W = 1) and split into two opposite pairs on the rest (W = 0),
so W = 2/3 +- sd of that 0/1 mix; editing ratings are random and checked against a naive W. Spearman rho
against scipy over per-image means, Table 1 and Top-2 against plain loops, calibration against scikit-learn.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.isotonic import IsotonicRegression
from typer.testing import CliRunner

from tests.test_agreement import naive_top2, naive_w
from vptt import ConfigError
from vptt.core.errors import RatingsValidationError
from vptt.evaluators.calibration import JudgeCalibration
from vptt.evaluators.ratings import load_ratings
from vptt.evaluators.validation import join_ratings, load_run, validate, validation_markdown
from vptt.sdk.cli.main import app

ALL = ["baseline", "persona_only", "brag", "vprag", "comb"]
RATED = ["baseline", "persona_only", "brag", "vprag"]
TASKS = {"outdoor_spot": ("generation", "A preferred outdoor spot"),
         "convention_center": ("editing", "Here is a convention center. Add a preferred event")}
LLMS = ["qwen", "gpt-4o-mini"]
ANNOTATORS = ["a1", "a2", "a3", "a4"]
PERSONAS = [f"p{i:02d}" for i in range(12)]


def make_run(path: Path, llm: str, rng: np.random.Generator, human: dict, judge_bias: float) -> list[dict]:  # type: ignore[type-arg]
    """A run whose judge follows the human mean (plus a bias and noise) and score-c loosely too."""
    rows = []
    for pid in PERSONAS:
        for task, (kind, query) in TASKS.items():
            for m in ALL:
                h = human.get((pid, task, m, llm), float(rng.uniform(0, 5)))
                sc = float(0.3 + 0.03 * h + rng.normal(0, 0.03))
                judge = float(np.clip(np.round(2 * (h + judge_bias + rng.normal(0, 0.5))) / 2, 0, 5))
                rows.append({"persona_id": pid, "task": task, "task_kind": kind, "method": m, "query": query,
                             "prompt": f"{query} <{m}>", "score_c": sc, "score": sc, "judge": judge,
                             "image": f"images/{pid}/{task}/{m}.png"})
    path.mkdir(parents=True)
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "manifest.json").write_text(json.dumps({"config": {"judge": "vlm:fake", "llm_model": llm}}))
    return rows


def make_ratings(rng: np.random.Generator) -> tuple[list[dict], dict]:  # type: ignore[type-arg]
    """Ratings and the W of each item they were built to have (None: random, check against naive)."""
    out, w_of = [], {}
    for llm in LLMS:
        for i, pid in enumerate(PERSONAS):
            for task in TASKS:
                base = rng.uniform(0, 5, len(RATED))
                if task == "outdoor_spot":
                    agree = i % 3 != 0
                    w_of[(pid, task, llm)] = 1.0 if agree else 0.0
                    order = np.argsort(np.argsort(base)).astype(float)  # ranks 0..3 of base
                    per = [order, order, order, order] if agree else [order, order, 3 - order, 3 - order]
                    scores = [1.0 + p for p in per]
                else:
                    w_of[(pid, task, llm)] = None
                    scores = [np.round(2 * np.clip(base + rng.normal(0, 1.0, 4), 0, 5)) / 2 for _ in ANNOTATORS]
                for a, s in zip(ANNOTATORS, scores):
                    for m, v in zip(RATED, s):
                        out.append({"annotator": a, "persona_id": pid, "task": task if rng.random() < 0.5 else
                                    TASKS[task][1], "method": m, "llm": llm, "score": float(v)})
    return out, w_of


@pytest.fixture
def study(tmp_path: Path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    ratings, w_of = make_ratings(rng)
    human = defaultdict(list)
    for r in ratings:
        task = next(t for t, (_, q) in TASKS.items() if r["task"] in (t, q))
        human[(r["persona_id"], task, r["method"], r["llm"])].append(r["score"])
    means = {k: float(np.mean(v)) for k, v in human.items()}
    runs = {llm: make_run(tmp_path / f"run-{llm}", llm, rng, means, judge_bias=1.0 if llm == "qwen" else 0.5)
            for llm in LLMS}
    path = tmp_path / "ratings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ratings))
    return tmp_path, runs, ratings, w_of, path


def image_table(runs, ratings):  # type: ignore[no-untyped-def]
    """Independent join: (pid, task, method, llm) -> (score_c, judge, mean human)."""
    human = defaultdict(list)
    query_to_task = {q: t for t, (_, q) in TASKS.items()}
    for r in ratings:
        human[(r["persona_id"], query_to_task.get(r["task"], r["task"]), r["method"], r["llm"])].append(r["score"])
    rows = {(r["persona_id"], r["task"], r["method"], llm): r for llm, rs in runs.items() for r in rs}
    return {k: (rows[k]["score_c"], rows[k]["judge"], float(np.mean(v))) for k, v in human.items()}


def test_validate_against_independent_computations(study) -> None:
    tmp, runs, ratings, w_of, path = study
    report, cal = validate(load_ratings(path), [load_run(str(tmp / f"run-{llm}")) for llm in LLMS], n_boot=200)
    assert cal is None and report.methods == RATED and report.llms == sorted(LLMS)
    assert (report.n_ratings, report.n_annotators, report.n_images, report.n_items) == (768, 4, 192, 48)
    images = image_table(runs, ratings)
    # Spearman rho, pooled over images: scipy on the independent join
    for scope in ["all", *TASKS]:
        keys = [k for k in images if scope in ("all", k[1])]
        sc, jd, hu = (np.array([images[k][i] for k in keys]) for i in range(3))
        for pair, (x, y) in {"judge~human": (jd, hu), "score_c~human": (sc, hu), "score_c~judge": (sc, jd)}.items():
            got = report.spearman[scope][pair]
            assert got.rho == pytest.approx(spearmanr(x, y).statistic) and got.n_images == len(keys)
            assert got.ci[0] <= got.rho <= got.ci[1]
    # Kendall's W per item, mean +- sd over the items of each task
    gen = [w for k, w in w_of.items() if k[1] == "outdoor_spot"]
    k = report.kendall["outdoor_spot"]
    assert (k.mean, k.n_items, k.n_skipped) == (pytest.approx(2 / 3), 24, 0)
    assert k.sd == pytest.approx(np.std(gen, ddof=1))
    edit = []
    for llm in LLMS:
        for pid in PERSONAS:
            mat = np.array([[next(r["score"] for r in ratings if (r["annotator"], r["persona_id"], r["method"],
                             r["llm"]) == (a, pid, m, llm) and r["task"] != "outdoor_spot" and
                             r["task"] != TASKS["outdoor_spot"][1]) for m in RATED] for a in ANNOTATORS])
            edit.append(naive_w(mat))
    assert report.kendall["convention_center"].mean == pytest.approx(np.mean(edit))
    assert report.kendall["convention_center"].sd == pytest.approx(np.std(edit, ddof=1))
    # Table 1 (all tasks) and Top-2 from plain loops over items
    items = defaultdict(dict)
    for (pid, task, m, llm), v in images.items():
        items[(pid, task, llm)][m] = v
    mats = [np.array([[items[i][m][c] for m in RATED] for i in items]) for c in range(3)]
    table = {r.method: r for r in report.tables[0].rows}
    for j, m in enumerate(RATED):
        assert table[m].text_avg == pytest.approx(mats[0][:, j].mean())
        assert table[m].vlm_avg == pytest.approx(mats[1][:, j].mean())
        assert table[m].human_avg == pytest.approx(mats[2][:, j].mean())
        wins = [sum(1 / sum(row == row.max()) for row in mat if row[j] == row.max()) / len(mat) for mat in mats]
        assert (table[m].text_acc, table[m].vlm_acc, table[m].human_acc) == pytest.approx(tuple(wins))
    assert report.top2["all"]["score_c~human"].value == pytest.approx(naive_top2(mats[0], mats[2]))
    assert report.top2["all"]["judge~human"].value == pytest.approx(naive_top2(mats[1], mats[2]))
    assert report.top2["all"]["score_c~judge"].value == pytest.approx(naive_top2(mats[0], mats[1]))
    md = validation_markdown(report)
    assert "| VPRAG |" in md and "Kendall's W" in md and f"{report.kendall['outdoor_spot'].mean:.3f} ±" in md


def test_calibration_fitted_on_named_subset_then_reused(study) -> None:
    tmp, runs, ratings, _, path = study
    rated, run_list = load_ratings(path), [load_run(str(tmp / f"run-{llm}")) for llm in LLMS]
    report, cal = validate(rated, run_list, calibration_fraction=0.25, n_boot=50, seed=2)
    assert cal is not None and len(cal.calibration_personas) == 3 and cal.selection["fraction"] == 0.25
    assert report.held_out_personas == cal.calibration_personas
    assert cal.judge == "vlm:fake"
    images = image_table(runs, ratings)
    fit = [v for k, v in images.items() if k[0] in cal.calibration_personas]
    rest = [v for k, v in images.items() if k[0] not in cal.calibration_personas]
    iso = IsotonicRegression(out_of_bounds="clip").fit([v[1] for v in fit], [v[2] for v in fit])
    raw, hu = np.array([v[1] for v in rest]), np.array([v[2] for v in rest])
    after = iso.predict(raw)
    c = report.calibration
    assert c.before.mae == pytest.approx(np.abs(raw - hu).mean()) and c.after.mae == pytest.approx(
        np.abs(after - hu).mean())
    assert c.before.bias == pytest.approx((raw - hu).mean()) and c.before.bias > 0.5
    assert abs(c.after.bias) < 0.25 and c.after.mae < c.before.mae
    assert c.after.rho == pytest.approx(spearmanr(after, hu).statistic)
    assert report.n_images == len(rest)  # every statistic is on the held-out personas only
    assert report.spearman["all"]["judge~human"].rho == pytest.approx(c.after.rho)
    # saved and applied again: the same numbers, the same held-out personas
    again, same = validate(rated, run_list, calibration=JudgeCalibration.load(cal.save(tmp / "cal.json")),
                           n_boot=50, seed=2)
    assert same is not None and again.calibration.source == "loaded"
    assert again.calibration.after == c.after and again.spearman == report.spearman
    with pytest.raises(ConfigError, match="not both"):
        validate(rated, run_list, calibration=cal, calibration_fraction=0.5)
    named, _ = validate(rated, run_list, calibration_personas=["p01", "p02"], n_boot=10)
    assert named.held_out_personas == ["p01", "p02"]


def test_join_errors_name_the_rating(study) -> None:
    tmp, _, ratings, _, path = study
    runs = [load_run(f"{llm}={tmp / f'run-{llm}'}") for llm in LLMS]
    bad = tmp / "bad.jsonl"
    bad.write_text(json.dumps({**ratings[0], "method": "vprg"}) + "\n" + json.dumps(
        {k: v for k, v in ratings[1].items() if k != "llm"}) + "\n")
    with pytest.raises(RatingsValidationError) as info:
        join_ratings(load_ratings(bad), runs)
    msgs = [str(p) for p in info.value.problems]
    assert msgs[0].startswith(f"{bad}:1: persona_id/task/method/llm: no bench row") and "'vprg'" in msgs[0]
    assert msgs[1].startswith(f"{bad}:2: llm: missing; with several runs")
    with pytest.raises(ConfigError, match="distinct LLM labels"):
        join_ratings(load_ratings(path), [runs[0], runs[0]])
    with pytest.raises(ConfigError, match="not a bench run"):
        load_run(str(tmp))
    images, unmatched = join_ratings(load_ratings(bad)[:1], runs, allow_unmatched=True)
    assert images == [] and len(unmatched) == 1


def test_cli_writes_report_json_and_calibration(study) -> None:
    tmp, _, _, _, path = study
    args = ["validate", str(path), "--run", f"qwen={tmp / 'run-qwen'}", "--run", str(tmp / "run-gpt-4o-mini"),
            "-o", str(tmp / "out"), "--bootstrap", "50", "--calibration-personas", "p00,p03"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Table 1" in res.output and "Judge calibration (fitted" in res.output
    data = json.loads((tmp / "out" / "validation.json").read_text())
    assert data["held_out_personas"] == ["p00", "p03"] and data["bootstrap"]["n_boot"] == 50
    cal = JudgeCalibration.load(tmp / "out" / "judge_calibration.json")
    assert cal.calibration_personas == ["p00", "p03"] and cal.selection == {"named": True}
    res = CliRunner().invoke(app, ["validate", str(path), "--run", f"qwen={tmp / 'run-qwen'}", "--run",
                                   str(tmp / "run-gpt-4o-mini"), "-o", str(tmp / "out2"), "--bootstrap", "50",
                                   "--judge-calibration", str(tmp / "out" / "judge_calibration.json"), "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert again["calibration"]["after"] == data["calibration"]["after"]
    assert again["spearman"] == data["spearman"] and not (tmp / "out2" / "judge_calibration.json").exists()
    assert all(math.isfinite(v["rho"]) for v in again["spearman"]["all"].values())
