"""Method-comparison reports over evaluation rows: the paper's tables (Markdown) and plots (PNG).

A row is one (persona, task, method) evaluation with the VPTT terms (see :mod:`sdk.pipeline`). A report covers
one run, or several runs made with different LLM rewriters (``runs``: label -> rows), like the paper's:

* **Table 3** (the summary): per task kind, one row per LLM, the five methods as columns; each cell holds the
  method's VPTT_score V with its 95% confidence interval and Cohen's d against the best method of the row
  (``NA`` for the best itself); the best V is bold and the second underlined; ``n`` is the number of items
  (persona × task, paired: every method of the row has them).
* **Tables 7-10** (one per task): per LLM and method, PA, GS, CP, NV, then VPTT_score-c and VPTT_score each
  with its 95% CI, Win% and Cohen's d against Baseline — or, where a run has no Baseline, against the best
  method of that run's rows, and the header and a note say so.

Win% is computed per item (persona) over the methods present; ties split the win. Statistics that need more
data than there is (a CI from one value, d from fewer than three) read ``n/a``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vptt.evaluators.stats import mean_ci, summarize_methods

METHOD_ORDER = ("baseline", "persona_only", "brag", "vprag", "comb")
METHOD_LABEL = {"baseline": "Baseline", "persona_only": "Persona Only", "brag": "BRAG", "vprag": "VPRAG",
                "comb": "Comb. (BRAG+VPRAG)"}
SHORT_LABEL = {"comb": "Comb."}
TERMS = ("pa", "gs", "cp", "nv")
Rows = Sequence[Mapping[str, Any]]

BOX_CAPTION = ("Boxes span the interquartile range (IQR), the line inside is the median, the triangle the mean; "
               "whiskers reach the furthest value within 1.5 × IQR of the box, circles are values beyond them.")


def _order(methods: Iterable[str]) -> list[str]:
    ms = set(methods)
    return [m for m in METHOD_ORDER if m in ms] + sorted(ms - set(METHOD_ORDER))


def _label(m: str) -> str:
    return METHOD_LABEL.get(m, m)


def _fmt(x: float | None, pct: bool = False, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{100 * x:.1f}%" if pct else f"{x:.{digits}f}"


def _ci(lo: float, hi: float) -> str:
    return "n/a" if math.isnan(lo) or math.isnan(hi) else f"[{lo:.3f}, {hi:.3f}]"


def _mark(text: str, rank: int | None) -> str:
    """Bold for the best, underline for the second (the paper's convention)."""
    return f"**{text}**" if rank == 0 else f"<u>{text}</u>" if rank == 1 else text


def run_label(rows: Rows) -> str:
    """How a run is named in tables: its LLM's label or model, else its composer (``template``)."""
    for r in rows:
        llm = r.get("llm")
        if llm and llm.get("model"):
            return str(llm.get("label") or llm["model"])
    for r in rows:
        if r.get("composer"):
            return str(r["composer"])
    return "template"


# --------------------------------------------------------------------------- statistics per cell
def paired_scores(rows: Rows, key: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per method, the ``key`` scores over the items (personas) that every method has, in one order."""
    by: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        by[r["method"]][r["persona_id"]] = float(r[key])
    methods = _order(by)
    items = sorted(set.intersection(*(set(by[m]) for m in methods))) if methods else []
    return {m: np.array([by[m][i] for i in items]) for m in methods}, items


@dataclass(frozen=True)
class Cell:
    """One method's statistics over the paired items of a table row."""

    n: int
    mean: float
    lo: float
    hi: float
    win: float
    d: float
    reference: str


def cells(scores: Mapping[str, np.ndarray], reference: str | None) -> dict[str, Cell]:
    """Mean, 95% CI, Win% and Cohen's d (pooled s; NaN where it cannot be estimated) of each method.

    ``reference`` None (or absent from ``scores``) compares with the method of highest mean.
    """
    names = [m for m in scores if len(scores[m])]
    if not names:
        return {}
    ref = reference if reference in names else None
    return {s.name: Cell(s.n, *mean_ci(scores[s.name]), s.win_rate, s.cohens_d, s.reference)
            for s in summarize_methods({m: scores[m] for m in names}, reference=ref)}


def _ranks(values: Mapping[str, float]) -> dict[str, int]:
    order = sorted(values, key=lambda m: -values[m])
    return {m: i for i, m in enumerate(order)}


def method_means(rows: Rows) -> dict[str, dict[str, float]]:
    """Per method (display label): mean VPTT_score-c, VPTT_score and the number of rows."""
    out = {}
    for m in _order({r["method"] for r in rows}):
        mrows = [r for r in rows if r["method"] == m]
        out[_label(m)] = {"score_c": float(np.mean([r["score_c"] for r in mrows])),
                          "score": float(np.mean([r["score"] for r in mrows])), "n": len(mrows)}
    return out


# --------------------------------------------------------------------------- Table 3
def summary_table(runs: Mapping[str, Rows], kind: str) -> str:
    """Table 3 for one task kind: rows LLM, columns the methods (V [95% CI], d vs the best of the row)."""
    methods = _order({r["method"] for rows in runs.values() for r in rows})
    head = ("| LLM | n | " + " | ".join(f"{SHORT_LABEL.get(m, _label(m))} V [95% CI] | d (vs best)"
                                         for m in methods) + " |")
    lines = [head, "|---|---|" + "---|---|" * len(methods)]
    for label, rows in runs.items():
        krows = [dict(r, persona_id=f"{r['persona_id']}|{r['task']}") for r in rows if r.get("task_kind") == kind]
        scores, items = paired_scores(krows, "score")
        summ = cells(scores, None) if items else {}
        if not summ:
            continue
        rank = _ranks({m: c.mean for m, c in summ.items()})
        out = []
        for m in methods:
            c = summ.get(m)
            if c is None:
                out.append("— | —")
                continue
            d = "NA" if m == c.reference else _fmt(c.d, digits=2)
            out.append(f"{_mark(_fmt(c.mean), rank[m])} {_ci(c.lo, c.hi)} | {d}")
        lines.append(f"| {label} | {len(items)} | " + " | ".join(out) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


# --------------------------------------------------------------------------- Tables 7-10
def task_table(runs: Mapping[str, Rows] | Rows, reference: str = "baseline") -> str:
    """One task's rows in the expanded Tables 7-10 layout (Markdown); ``runs``: label -> rows, or rows."""
    if not isinstance(runs, Mapping):
        runs = {run_label(runs): runs}
    missing_ref = [label for label, rows in runs.items() if reference not in {r["method"] for r in rows}]
    dref = f"d (vs {_label(reference)})" if not missing_ref else f"d (vs {_label(reference)}†)"
    lines = [f"| LLM | Method | n | PA | GS | CP | NV | score-c | 95% CI | Win% | {dref} | score | 95% CI | "
             f"Win% | {dref} |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for label, rows in runs.items():
        score_c, items = paired_scores(rows, "score_c")
        score, _ = paired_scores(rows, "score")
        if not items:
            continue
        cc, cv = cells(score_c, reference), cells(score, reference)
        rank_c, rank_v = _ranks({m: c.mean for m, c in cc.items()}), _ranks({m: c.mean for m, c in cv.items()})
        keep = set(items)
        for j, m in enumerate(score_c):
            mrows = [r for r in rows if r["method"] == m and r["persona_id"] in keep]
            terms = {t: float(np.mean([r[t] for r in mrows])) for t in TERMS}
            conditioned = all(r.get("caption_conditioned", True) for r in mrows)
            nv = _fmt(terms["nv"]) if conditioned else "—"
            c, v = cc[m], cv[m]
            dc = "—" if m == c.reference else _fmt(c.d, digits=2)
            dv = "—" if m == v.reference else _fmt(v.d, digits=2)
            lines.append(f"| {label if j == 0 else ''} | {_label(m)} | {c.n} | {_fmt(terms['pa'])} | "
                         f"{_fmt(terms['gs'])} | {_fmt(terms['cp'])} | {nv} | {_mark(_fmt(c.mean), rank_c[m])} | "
                         f"{_ci(c.lo, c.hi)} | {_fmt(c.win, True)} | {dc} | {_mark(_fmt(v.mean), rank_v[m])} | "
                         f"{_ci(v.lo, v.hi)} | {_fmt(v.win, True)} | {dv} |")
        if label in missing_ref:
            c_ref, v_ref = next(iter(cc.values())).reference, next(iter(cv.values())).reference
            notes.append(f"† {label}: {_label(reference)} is not in this run, so d is measured against the best "
                         f"method of its rows: {_label(c_ref)} for score-c, {_label(v_ref)} for score.")
    lines.append("")
    lines.append(f"_n: personas per cell (the items every method of that LLM has). NV is — for methods not "
                 f"conditioned on captions (0 in VPTT_score, as in the paper). d: Cohen's d with pooled s "
                 f"against {_label(reference)}; — for the reference itself, n/a where it cannot be estimated "
                 f"(fewer than three values). 95% CI: Student-t interval of the mean. Best mean of each LLM in "
                 f"bold, second underlined._")
    lines += [f"_{n}_" for n in notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- whole report
def merged_markdown_report(runs: Mapping[str, Rows], title: str = "VPTT evaluation") -> str:
    """The report of several runs (label -> rows): Table 3 summary, then one expanded table per task."""
    parts = [f"# {title}", "", "## Summary (Table 3 layout: VPTT_score V, Cohen's d vs the best method of the "
             "row)", ""]
    for kind, heading in (("generation", "(a) Generation"), ("editing", "(b) Editing")):
        table = summary_table(runs, kind)
        if table:
            parts += [f"### {heading}", "", table, ""]
    parts += ["_n: items per cell (persona × task of that kind; every method of a row has the same items). "
              "V: mean VPTT_score with its 95% CI; best of the row in bold, second underlined. d: Cohen's d "
              "with pooled s against the best method of the row (NA for the best); n/a where it cannot be "
              "estimated._", ""]
    tasks: dict[str, Mapping[str, Any]] = {}
    for rows in runs.values():
        for r in rows:
            tasks.setdefault(r["task"], r)
    for t, first in tasks.items():
        trows = {label: [r for r in rows if r["task"] == t] for label, rows in runs.items()}
        trows = {k: v for k, v in trows.items() if v}
        parts += [f"## Task `{t}` ({first.get('task_kind', 'generation')}): \"{first['query']}\"", "",
                  task_table(trows), ""]
    return "\n".join(parts)


def markdown_report(rows: Rows, title: str = "VPTT evaluation") -> str:
    """The report of one run: summary (Table 3 layout) then one expanded table per task (Tables 7-10)."""
    return merged_markdown_report({run_label(rows): rows}, title)


# --------------------------------------------------------------------------- plots
def _box_legend(ax: Any) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="white", edgecolor="black", label="interquartile range"),
               Line2D([], [], color="C1", label="median"),
               Line2D([], [], color="green", marker="^", linestyle="", label="mean"),
               Line2D([], [], color="black", marker="_", markersize=10, linestyle="",
                      label="whisker: within 1.5 IQR"),
               Line2D([], [], color="black", marker="o", markerfacecolor="none", linestyle="",
                      label="beyond 1.5 IQR")]
    ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.85)


def write_plots(rows: Rows, out_dir: str | Path, runs: Mapping[str, Rows] | None = None) -> list[Path]:
    """Score distributions per method and task (one row of panels per LLM) and per-component bars, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = runs or {run_label(rows): rows}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = list(dict.fromkeys(r["task"] for rr in runs.values() for r in rr))
    methods = _order({r["method"] for rr in runs.values() for r in rr})
    names = [SHORT_LABEL.get(m, _label(m)).split(" ")[0] for m in methods]
    paths = []
    fig, axes = plt.subplots(len(runs), len(tasks), figsize=(4.2 * len(tasks), 3.9 * len(runs)), squeeze=False,
                             sharey=True)
    for row_axes, (label, rr) in zip(axes, runs.items()):
        for ax, t in zip(row_axes, tasks):
            data = [[r["score"] for r in rr if r["task"] == t and r["method"] == m] for m in methods]
            ax.boxplot([d if d else [math.nan] for d in data], showmeans=True)
            ax.set_xticks(range(1, len(methods) + 1), names, rotation=30)
            ax.set_title(t if len(runs) == 1 else f"{label}: {t}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        row_axes[0].set_ylabel("VPTT_score")
    _box_legend(axes[-1][-1])
    fig.suptitle("VPTT_score distribution per method")
    fig.tight_layout()
    paths.append(out / "score_distributions.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(runs), figsize=(8 * len(runs), 4), squeeze=False)
    width = 0.8 / len(methods)
    for ax, (label, rr) in zip(axes[0], runs.items()):
        for j, m in enumerate(methods):
            mrows = [r for r in rr if r["method"] == m]
            means = [float(np.mean([r[t] for r in mrows])) if mrows else 0.0 for t in TERMS]
            ax.bar(np.arange(len(TERMS)) + j * width, means, width, label=_label(m))
        ax.set_xticks(np.arange(len(TERMS)) + width * (len(methods) - 1) / 2, [t.upper() for t in TERMS])
        ax.set_ylabel("mean over personas and tasks")
        ax.set_title("VPTT components per method (NV = 0 for methods without captions)"
                     + ("" if len(runs) == 1 else f": {label}"), fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(out / "components.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
