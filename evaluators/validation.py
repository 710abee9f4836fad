"""Metric validation against human ratings (VPTT paper Sec. 4.2.1, Q1 "Can we trust our metrics?", Table 1).

:func:`join_ratings` joins human ratings (:mod:`evaluators.ratings`) with the rows of one or more
``vptt bench run`` directories (one per rewriting LLM) on (persona, task, method, LLM); :func:`validate`
computes, over the rated images:

* **Table 1**: per method, the mean (Avg.) and the share of items won (Acc., ties split; like Win%) of
  VPTT_score-c, the VLM judge and the human score. An *image* is one (persona, task, method, LLM); its human
  score is the mean over its annotators. An *item* is one (persona, task, LLM): the methods compete within
  it. Only items where every rated method has every score are used.
* **Kendall's W** per item (annotators who rated every method of the item are the raters, methods the ranked
  objects), summarised per task as mean +- sd (ddof=1) over items, with a bootstrap interval of the mean.
* **Spearman rho** of judge vs human, score-c vs human and score-c vs judge, pooled over images, for all
  tasks together and per task, with cluster-bootstrap intervals (whole items resampled).
* **Top-2 agreement**: share of items whose best method by a metric is among the two best by the reference
  (:func:`evaluators.agreement.top_k_hits`), with bootstrap intervals over items.
* **Judge calibration** (optional): a monotone map fitted on a calibration subset of personas or loaded from
  a file (:mod:`evaluators.calibration`). When a map is in play, its calibration personas are held out of
  every statistic, the judge's numbers are the calibrated ones, and rho, MAE and bias against humans are
  reported before and after the map on the held-out evaluation images.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from vptt.core.errors import ConfigError, FieldProblem, RatingsValidationError
from vptt.evaluators.agreement import (
    bootstrap_ci,
    cluster_bootstrap_ci,
    item_kendalls_w,
    mean_sd,
    pooled_spearman,
    top_k_hits,
)
from vptt.evaluators.bench_report import load_rows
from vptt.evaluators.calibration import (
    CalibrationMetrics,
    JudgeCalibration,
    calibration_metrics,
    calibration_split,
)
from vptt.evaluators.ratings import Rating
from vptt.evaluators.report import _label, _order
from vptt.evaluators.stats import win_rates

__all__ = ["Agreement", "Correlation", "ImageScores", "KendallSummary", "MethodRow", "MethodTable", "RunData",
           "ValidationReport", "join_ratings", "load_run", "validate", "validation_markdown"]

PAIRS = (("judge", "human"), ("score_c", "human"), ("score_c", "judge"))
"""The correlations of the paper: judge vs human, score-c vs human, score-c vs judge."""
TOP2 = (("score_c", "human"), ("judge", "human"), ("score_c", "judge"))
"""Top-2 agreement pairs: (metric whose best method is checked, reference whose top 2 it must be in)."""


# --------------------------------------------------------------------------- runs and the join
@dataclass
class RunData:
    """One bench run: its LLM label, directory and rows."""

    label: str
    path: Path
    rows: list[dict[str, Any]]
    judge: str | None = None


def load_run(spec: str) -> RunData:
    """``LABEL=DIR`` or ``DIR``: a bench run directory and the LLM label its ratings use.

    Without ``LABEL=`` the label is the manifest's ``config.llm_model`` (or ``config.llm``) when present,
    else the directory name.
    """
    label, sep, path = spec.partition("=")
    if not sep:
        label, path = "", spec
    run = Path(path.strip())
    if not (run / "rows.jsonl").is_file():
        raise ConfigError(f"{run} is not a bench run (no rows.jsonl); pass the output directory of "
                          "`vptt bench run`, optionally as LLM=DIR")
    manifest: dict[str, Any] = {}
    if (run / "manifest.json").is_file():
        manifest = json.loads((run / "manifest.json").read_text())
    cfg = manifest.get("config", {})
    label = label.strip() or str(cfg.get("llm_model") or cfg.get("llm") or run.resolve().name)
    return RunData(label=label, path=run, rows=load_rows(run), judge=cfg.get("judge"))


@dataclass
class ImageScores:
    """One rated image: its key, VPTT_score-c, judge score (None if not judged) and the human ratings."""

    persona_id: str
    task: str
    task_kind: str
    method: str
    llm: str
    score_c: float
    judge: float | None
    human: dict[str, float] = field(default_factory=dict)
    image: str | None = None

    @property
    def item(self) -> tuple[str, str, str]:
        """``(persona_id, task, llm)``: the methods of one item compete with each other."""
        return (self.persona_id, self.task, self.llm)

    @property
    def human_mean(self) -> float:
        return float(np.mean(list(self.human.values())))

    def value(self, what: str) -> float:
        """``"score_c"``, ``"judge"`` (NaN when not judged) or ``"human"`` (mean over annotators)."""
        if what == "human":
            return self.human_mean
        v = getattr(self, what)
        return math.nan if v is None else float(v)


def join_ratings(ratings: Sequence[Rating], runs: Sequence[RunData], *,
                 allow_unmatched: bool = False) -> tuple[list[ImageScores], list[Rating]]:
    """Attach every rating to its bench row; returns the rated images and the ratings left unmatched.

    A rating matches a row of the run whose label equals its ``llm`` (any run when there is only one and
    the rating names no LLM) with the same persona, task (name or query text) and method.

    Raises:
        ConfigError: no runs, or runs sharing a label.
        RatingsValidationError: ratings without a row (unless ``allow_unmatched``), or without an ``llm``
            when several runs are given.
    """
    if not runs:
        raise ConfigError("no runs given: pass at least one `vptt bench run` directory (--run DIR)")
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"runs must have distinct LLM labels, got {labels}; pass them as LLM=DIR")
    index: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    tasks: dict[tuple[str, str], str] = {}
    for run in runs:
        for row in run.rows:
            index[(run.label, row["persona_id"], row["task"], row["method"])] = row
            tasks[(run.label, row["task"])] = row["task"]
            tasks.setdefault((run.label, row.get("query", "")), row["task"])
    images: dict[tuple[str, str, str, str], ImageScores] = {}
    problems: list[FieldProblem] = []
    unmatched: list[Rating] = []
    for r in ratings:
        if r.llm is None and len(runs) > 1:
            problems.append(FieldProblem(r.file, r.line, "llm", f"missing; with several runs "
                                         f"({', '.join(labels)}) each rating must name its LLM"))
            continue
        llm = r.llm if r.llm is not None else runs[0].label
        task = tasks.get((llm, r.task), r.task)
        row = index.get((llm, r.persona_id, task, r.method))
        if row is None:
            unmatched.append(r)
            if not allow_unmatched:
                known = "" if llm in labels else f" (runs are labelled {', '.join(labels)})"
                problems.append(FieldProblem(r.file, r.line, "persona_id/task/method/llm",
                                             f"no bench row for persona {r.persona_id!r}, task {r.task!r}, "
                                             f"method {r.method!r}, llm {llm!r}{known}"))
            continue
        key = (llm, r.persona_id, task, r.method)
        if key not in images:
            judge = row.get("judge")
            images[key] = ImageScores(r.persona_id, task, str(row.get("task_kind", "generation")), r.method,
                                      llm, float(row["score_c"]), None if judge is None else float(judge),
                                      image=row.get("image"))
        images[key].human[r.annotator] = r.score
    if problems:
        raise RatingsValidationError(problems)
    return list(images.values()), unmatched


# --------------------------------------------------------------------------- report models
class MethodRow(BaseModel):
    """One method's line of Table 1: Avg. and Acc. (share of items won) per evaluator."""

    method: str
    text_avg: float
    text_acc: float
    vlm_avg: float | None
    vlm_acc: float | None
    human_avg: float
    human_acc: float


class MethodTable(BaseModel):
    """Table 1 over one scope (all tasks or one task)."""

    scope: str
    n_items: int
    n_incomplete: int
    rows: list[MethodRow]


class KendallSummary(BaseModel):
    """Kendall's W per item, summarised: mean +- sd (ddof=1), bootstrap interval of the mean."""

    mean: float
    sd: float
    n_items: int
    n_skipped: int
    ci: tuple[float, float]


class Correlation(BaseModel):
    """Spearman rho pooled over images, with a cluster-bootstrap interval (items resampled)."""

    rho: float
    ci: tuple[float, float]
    n_images: int
    n_items: int


class Agreement(BaseModel):
    """Top-2 agreement over items, with a bootstrap interval."""

    value: float
    ci: tuple[float, float]
    n_items: int


class CalibrationSummary(BaseModel):
    """The judge calibration used: where from, who fitted it, and agreement before/after on evaluation."""

    source: str
    calibration_personas: list[str]
    n_fit_images: int
    before: CalibrationMetrics
    after: CalibrationMetrics
    fit: dict[str, CalibrationMetrics] = Field(default_factory=dict)


class ValidationReport(BaseModel):
    """Everything :func:`validate` computed (NaN serialises as null)."""

    n_ratings: int
    n_annotators: int
    n_images: int
    n_items: int
    methods: list[str]
    tasks: list[str]
    llms: list[str]
    n_unmatched: int = 0
    held_out_personas: list[str] = Field(default_factory=list)
    tables: list[MethodTable]
    kendall: dict[str, KendallSummary]
    spearman: dict[str, dict[str, Correlation]]
    top2: dict[str, dict[str, Agreement]]
    calibration: CalibrationSummary | None = None
    bootstrap: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------- statistics over images
def _group_items(images: Sequence[ImageScores]) -> dict[tuple[str, str, str], dict[str, ImageScores]]:
    items: dict[tuple[str, str, str], dict[str, ImageScores]] = defaultdict(dict)
    for im in images:
        items[im.item][im.method] = im
    return dict(items)


def _complete(items: Mapping[Any, Mapping[str, ImageScores]], methods: Sequence[str],
              what: Sequence[str]) -> list[Mapping[str, ImageScores]]:
    return [it for it in items.values()
            if all(m in it and all(math.isfinite(it[m].value(w)) for w in what) for m in methods)]


def method_table(images: Sequence[ImageScores], methods: Sequence[str], scope: str) -> MethodTable:
    """Table 1 over ``images``: Avg. and Acc. per method of VPTT_score-c, judge (if any) and human."""
    items = _group_items(images)
    judged = any(im.judge is not None for im in images)
    what = ("score_c", "human") + (("judge",) if judged else ())
    full = _complete(items, methods, what)
    cols: dict[str, tuple[list[float], list[float]]] = {}
    for w in what:
        if full:
            mat = np.array([[it[m].value(w) for m in methods] for it in full])
            cols[w] = (mat.mean(axis=0).tolist(), win_rates(mat).tolist())
        else:
            cols[w] = ([math.nan] * len(methods), [math.nan] * len(methods))
    rows = [MethodRow(method=m, text_avg=cols["score_c"][0][j], text_acc=cols["score_c"][1][j],
                      vlm_avg=cols["judge"][0][j] if judged else None,
                      vlm_acc=cols["judge"][1][j] if judged else None,
                      human_avg=cols["human"][0][j], human_acc=cols["human"][1][j])
            for j, m in enumerate(methods)]
    return MethodTable(scope=scope, n_items=len(full), n_incomplete=len(items) - len(full), rows=rows)


def kendall_summary(images: Sequence[ImageScores], methods: Sequence[str], *, n_boot: int, seed: int,
                    level: float) -> KendallSummary:
    """W per item (raters = annotators who rated every method of the item), then mean +- sd over items."""
    blocks = []
    for it in _group_items(images).values():
        if not all(m in it for m in methods):
            blocks.append(np.zeros((0, len(methods))))
            continue
        raters = sorted(set.intersection(*(set(it[m].human) for m in methods)))
        blocks.append(np.array([[it[m].human[a] for m in methods] for a in raters]).reshape(len(raters), -1))
    w = item_kendalls_w(blocks)
    valid = w[np.isfinite(w)]
    mean, sd, n = mean_sd(valid)
    ci = bootstrap_ci(lambda idx: float(valid[idx].mean()), n, n_boot=n_boot, seed=seed, level=level)
    return KendallSummary(mean=mean, sd=sd, n_items=n, n_skipped=len(blocks) - n, ci=ci)


def correlation(images: Sequence[ImageScores], a: str, b: str, *, n_boot: int, seed: int,
                level: float) -> Correlation:
    """Spearman rho of ``a`` vs ``b`` pooled over the images that have both, with a cluster bootstrap."""
    pairs = [(im.value(a), im.value(b), im.item) for im in images]
    pairs = [p for p in pairs if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not pairs:
        return Correlation(rho=math.nan, ci=(math.nan, math.nan), n_images=0, n_items=0)
    x, y, clusters = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]), [p[2] for p in pairs])
    return Correlation(rho=pooled_spearman(x, y),
                       ci=cluster_bootstrap_ci(x, y, clusters, n_boot=n_boot, seed=seed, level=level),
                       n_images=len(pairs), n_items=len(set(clusters)))


def top2_agreement(images: Sequence[ImageScores], methods: Sequence[str], metric: str, reference: str, *,
                   n_boot: int, seed: int, level: float) -> Agreement:
    """Share of complete items whose ``metric``-best method is in ``reference``'s top 2."""
    full = _complete(_group_items(images), methods, (metric, reference))
    if not full or len(methods) < 2:
        return Agreement(value=math.nan, ci=(math.nan, math.nan), n_items=0)
    pred = np.array([[it[m].value(metric) for m in methods] for it in full])
    ref = np.array([[it[m].value(reference) for m in methods] for it in full])
    hits = top_k_hits(pred, ref, k=2)
    ci = bootstrap_ci(lambda idx: float(hits[idx].mean()), len(hits), n_boot=n_boot, seed=seed, level=level)
    return Agreement(value=float(hits.mean()), ci=ci, n_items=len(hits))


# --------------------------------------------------------------------------- calibration in validation
def _calibrate(images: list[ImageScores], calibration: JudgeCalibration | None, fraction: float | None,
               personas: Sequence[str] | None, seed: int, judge_name: str | None,
               ) -> tuple[list[ImageScores], JudgeCalibration | None, CalibrationSummary | None]:
    """Fit or take the map; return the evaluation images (calibrated judge) and the summary."""
    if calibration is None and fraction is None and personas is None:
        return images, None, None
    if calibration is not None and (fraction is not None or personas is not None):
        raise ConfigError("either apply a saved judge calibration or fit a new one, not both")
    source = "loaded"
    if calibration is None:
        chosen, _ = calibration_split({im.persona_id for im in images}, fraction=fraction,
                                      personas=None if personas is None else list(personas), seed=seed)
        fit_set = [im for im in images if im.persona_id in set(chosen) and im.judge is not None]
        selection: dict[str, Any] = {"named": True} if personas is not None else {
            "fraction": fraction, "seed": seed, "rule": "sha256(f'{seed}|{persona_id}')"}
        calibration = JudgeCalibration.fit([im.judge for im in fit_set], [im.human_mean for im in fit_set],
                                           personas=chosen, selection=selection, judge_name=judge_name)
        source = "fitted"
    held = set(calibration.calibration_personas)
    rest = [im for im in images if im.persona_id not in held]
    judged = [im for im in rest if im.judge is not None]
    raw = [float(im.judge) for im in judged]  # type: ignore[arg-type]
    human = [im.human_mean for im in judged]
    after = calibration.apply(raw)
    summary = CalibrationSummary(source=source, calibration_personas=sorted(held),
                                 n_fit_images=calibration.n_images, before=calibration_metrics(raw, human),
                                 after=calibration_metrics(after, human), fit=dict(calibration.fit_metrics))
    out = [ImageScores(im.persona_id, im.task, im.task_kind, im.method, im.llm, im.score_c,
                       calibration.apply_one(im.judge), dict(im.human), im.image) for im in rest]
    return out, calibration, summary


# --------------------------------------------------------------------------- entry point
def validate(ratings: Sequence[Rating], runs: Sequence[RunData], *,
             calibration: JudgeCalibration | None = None, calibration_fraction: float | None = None,
             calibration_personas: Sequence[str] | None = None,
             n_boot: int = 1000, seed: int = 0, level: float = 0.95,
             allow_unmatched: bool = False) -> tuple[ValidationReport, JudgeCalibration | None]:
    """Join ``ratings`` with ``runs`` and compute Table 1, Kendall's W, Spearman rho and Top-2 agreement.

    Args:
        ratings: validated ratings (:func:`evaluators.ratings.load_ratings`).
        runs: bench runs (:func:`load_run`), one per rewriting LLM.
        calibration: a saved judge calibration to apply (its personas are held out).
        calibration_fraction, calibration_personas: fit a new calibration on this subset of personas
            (:func:`evaluators.calibration.calibration_split`; ``seed`` orders the personas) and hold it out.
        n_boot, seed, level: bootstrap resamples, seed and interval level.
        allow_unmatched: drop ratings without a bench row instead of raising.

    Returns:
        The report and the calibration in play (fitted or given; None without one).
    """
    images, unmatched = join_ratings(ratings, runs, allow_unmatched=allow_unmatched)
    if not images:
        raise ConfigError("no rating matched a bench row; check persona ids, task names, methods and LLM "
                          "labels")
    judge_names = sorted({r.judge for r in runs if r.judge})
    images, cal, cal_summary = _calibrate(images, calibration, calibration_fraction, calibration_personas,
                                          seed, ", ".join(judge_names) or None)
    if not images:
        raise ConfigError("every rated image belongs to a calibration persona; nothing is left to evaluate")
    methods = _order({im.method for im in images})
    tasks = list(dict.fromkeys(im.task for im in images))
    scopes: dict[str, list[ImageScores]] = {"all": images}
    scopes.update({t: [im for im in images if im.task == t] for t in tasks})
    boot = {"n_boot": n_boot, "seed": seed, "level": level}
    kendall = {s: kendall_summary(ims, methods, **boot) for s, ims in scopes.items()}
    spearman = {s: {f"{a}~{b}": correlation(ims, a, b, **boot) for a, b in PAIRS}
                for s, ims in scopes.items()}
    top2 = {s: {f"{a}~{b}": top2_agreement(ims, methods, a, b, **boot) for a, b in TOP2}
            for s, ims in scopes.items()}
    kept = {(im.persona_id, im.task, im.method, im.llm) for im in images}
    report = ValidationReport(
        n_ratings=sum(len(im.human) for im in images),
        n_annotators=len({a for im in images for a in im.human}),
        n_images=len(kept), n_items=len({im.item for im in images}), methods=methods, tasks=tasks,
        llms=sorted({im.llm for im in images}), n_unmatched=len(unmatched),
        held_out_personas=[] if cal is None else sorted(cal.calibration_personas),
        tables=[method_table(ims, methods, s) for s, ims in scopes.items()], kendall=kendall,
        spearman=spearman, top2=top2, calibration=cal_summary, bootstrap=boot)
    return report, cal


# --------------------------------------------------------------------------- Markdown
def _f(x: float | None, pct: bool = False, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{100 * x:.1f}%" if pct else f"{x:.{digits}f}"


def _ci(ci: tuple[float, float], pct: bool = False) -> str:
    return f"[{_f(ci[0], pct)}, {_f(ci[1], pct)}]"


def _table_md(t: MethodTable) -> list[str]:
    lines = ["| Method | VPTT_score-c Avg. | Acc. | VLM Avg. | Acc. | Human Avg. | Acc. |",
             "|---|---|---|---|---|---|---|"]
    for r in t.rows:
        cells = [_f(r.text_avg), _f(r.text_acc, True), _f(r.vlm_avg, digits=2), _f(r.vlm_acc, True),
                 _f(r.human_avg, digits=2), _f(r.human_acc, True)]
        lines.append(f"| {_label(r.method)} | " + " | ".join(cells) + " |")
    lines.append(f"\n_{t.n_items} items (persona x task x LLM) with every score for every method"
                 + (f"; {t.n_incomplete} incomplete item(s) left out" if t.n_incomplete else "") + "._")
    return lines


def validation_markdown(report: ValidationReport,
                        title: str = "Metric validation against human ratings") -> str:
    """The report as Markdown: Table 1 (all tasks, then per task), W, rho, Top-2 and the calibration."""
    r = report
    lv = int(round(100 * r.bootstrap.get("level", 0.95)))
    parts = [f"# {title}", "",
             f"{r.n_ratings} ratings from {r.n_annotators} annotators on {r.n_images} images "
             f"({r.n_items} items: persona x task x LLM); methods: {', '.join(map(_label, r.methods))}; "
             f"tasks: {', '.join(r.tasks)}; LLMs: {', '.join(r.llms)}."]
    if r.held_out_personas:
        parts.append(f"{len(r.held_out_personas)} calibration persona(s) are held out of every number below.")
    if r.n_unmatched:
        parts.append(f"{r.n_unmatched} rating(s) had no bench row and were left out.")
    parts += ["", "## Table 1: Avg. and Acc. per method (all tasks)", "", *_table_md(r.tables[0]), ""]
    for t in r.tables[1:]:
        parts += [f"### Task `{t.scope}`", "", *_table_md(t), ""]
    parts += ["## Inter-annotator agreement: Kendall's W per item (mean ± sd over items)", "",
              f"| Scope | W | {lv}% CI of the mean | items | skipped |", "|---|---|---|---|---|"]
    for s, k in r.kendall.items():
        parts.append(f"| {s} | {_f(k.mean)} ± {_f(k.sd)} | {_ci(k.ci)} | {k.n_items} | {k.n_skipped} |")
    parts += ["", "_Raters of an item are the annotators who rated every method of it; items with fewer "
              "than two such raters (or no ranking information) are skipped. sd uses ddof=1._", "",
              f"## Spearman ρ, pooled over images ({lv}% cluster-bootstrap CI)", "",
              "| Scope | judge ↔ human | score-c ↔ human | score-c ↔ judge |", "|---|---|---|---|"]
    for s, cs in r.spearman.items():
        cells = [f"{_f(c.rho)} {_ci(c.ci)} (n={c.n_images})" for c in cs.values()]
        parts.append(f"| {s} | " + " | ".join(cells) + " |")
    parts += ["", f"## Top-2 agreement ({lv}% bootstrap CI over items)", "",
              "| Scope | score-c best in human top 2 | judge best in human top 2 "
              "| score-c best in judge top 2 |", "|---|---|---|---|"]
    for s, ags in r.top2.items():
        parts.append(f"| {s} | " + " | ".join(f"{_f(a.value, True)} {_ci(a.ci, True)} (n={a.n_items})"
                                            for a in ags.values()) + " |")
    parts += ["", "_Per item, the method a metric scores highest must be among the reference's two highest "
              "(methods tied with second place count as top 2; a tie for the best splits the item)._"]
    if r.calibration is not None:
        c = r.calibration
        parts += ["", f"## Judge calibration ({c.source}; isotonic map fitted on {c.n_fit_images} images of "
                  f"{len(c.calibration_personas)} persona(s))", "",
                  "| Evaluation images | n | ρ vs human | MAE | bias (judge − human) |",
                  "|---|---|---|---|---|"]
        for name, m in (("before", c.before), ("after", c.after)):
            parts.append(f"| {name} | {m.n} | {_f(m.rho)} | {_f(m.mae)} | {_f(m.bias)} |")
    return "\n".join(parts) + "\n"
