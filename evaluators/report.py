"""Method-comparison reports over evaluation rows: the paper's tables (Markdown) and plots (PNG).

A row is one (persona, task, method) evaluation with the VPTT terms (see :mod:`sdk.evaluate`). Per task the
table follows the expanded Tables 7-10: PA, GS, CP, NV, then VPTT_score-c with Win% and Cohen's d vs Baseline,
then VPTT_score with Win% and d. The summary follows Table 3: per task kind, each method's VPTT_score and d vs
the best method. Win% is computed per item (persona) over the methods present; ties split the win.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vptt.evaluators.stats import summarize_methods

METHOD_ORDER = ("baseline", "persona_only", "brag", "vprag", "comb")
METHOD_LABEL = {"baseline": "Baseline", "persona_only": "Persona Only", "brag": "BRAG", "vprag": "VPRAG",
                "comb": "Comb. (BRAG+VPRAG)"}
TERMS = ("pa", "gs", "cp", "nv")


def _order(methods: Iterable[str]) -> list[str]:
    ms = set(methods)
    return [m for m in METHOD_ORDER if m in ms] + sorted(ms - set(METHOD_ORDER))


def _label(m: str) -> str:
    return METHOD_LABEL.get(m, m)


def _fmt(x: float, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def paired_scores(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per method, the ``key`` scores over the items (personas) that every method has, in one order."""
    by: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        by[r["method"]][r["persona_id"]] = float(r[key])
    methods = _order(by)
    items = sorted(set.intersection(*(set(by[m]) for m in methods))) if methods else []
    return {m: np.array([by[m][i] for i in items]) for m in methods}, items


def task_table(rows: Sequence[Mapping[str, Any]], reference: str = "baseline") -> str:
    """One task's rows as the expanded-table layout (Markdown)."""
    score_c, items = paired_scores(rows, "score_c")
    score, _ = paired_scores(rows, "score")
    methods = list(score_c)
    ref = reference if reference in methods else None
    sum_c = {s.name: s for s in summarize_methods(score_c, reference=ref)} if items else {}
    sum_v = {s.name: s for s in summarize_methods(score, reference=ref)} if items else {}
    head = ("| Method | PA | GS | CP | NV | score-c | Win% | d (vs base) | score | Win% | d (vs base) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for m in methods:
        mrows = [r for r in rows if r["method"] == m and r["persona_id"] in set(items)]
        terms = {t: float(np.mean([r[t] for r in mrows])) for t in TERMS}
        conditioned = all(r.get("caption_conditioned", True) for r in mrows)
        nv = _fmt(terms["nv"]) if conditioned else "—"
        c, v = sum_c.get(m), sum_v.get(m)
        lines.append(f"| {_label(m)} | {_fmt(terms['pa'])} | {_fmt(terms['gs'])} | {_fmt(terms['cp'])} | {nv} | "
                     f"{_fmt(c.mean)} | {_fmt(c.win_rate, True)} | {_fmt(c.cohens_d)} | "
                     f"{_fmt(v.mean)} | {_fmt(v.win_rate, True)} | {_fmt(v.cohens_d)} |")
    lines.append(f"\n_{len(items)} personas. NV is reported as 0 (—) for methods not conditioned on captions, "
                 "as in the paper; d is Cohen's d with pooled s against Baseline._")
    return "\n".join(lines)


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 3 layout: per task kind, VPTT_score (V) and Cohen's d vs the best method."""
    methods = _order({r["method"] for r in rows})
    head = "| Tasks | " + " | ".join(f"{_label(m)} V | d" for m in methods) + " |"
    lines = [head, "|---|" + "---|---|" * len(methods)]
    for kind in ("generation", "editing"):
        krows = [dict(r, persona_id=f"{r['persona_id']}|{r['task']}") for r in rows if r.get("task_kind") == kind]
        if not krows:
            continue
        scores, items = paired_scores(krows, "score")
        if not items:
            continue
        summ = {s.name: s for s in summarize_methods(scores, reference=None)}
        best = max(summ.values(), key=lambda s: s.mean).name
        cells = [f"**{_fmt(summ[m].mean)}** | NA" if m == best else f"{_fmt(summ[m].mean)} | {_fmt(summ[m].cohens_d)}"
                 for m in methods if m in summ]
        lines.append(f"| {kind} ({len(items)} items) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(rows: Sequence[Mapping[str, Any]], title: str = "VPTT evaluation") -> str:
    """The whole report: summary (Table 3 layout) then one expanded table per task (Tables 7-10 layout)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    parts = [f"# {title}", "", "## Summary (VPTT_score, d vs best method)", "", summary_table(rows), ""]
    for t in tasks:
        trows = [r for r in rows if r["task"] == t]
        parts += [f"## Task `{t}` ({trows[0].get('task_kind', 'generation')}): \"{trows[0]['query']}\"", "",
                  task_table(trows), ""]
    return "\n".join(parts)


def write_plots(rows: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Score distributions per method and task, and per-component bars, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = _order({r["method"] for r in rows})
    paths = []
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], tasks):
        data = [[r["score"] for r in rows if r["task"] == t and r["method"] == m] for m in methods]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1), [_label(m).split(" ")[0] for m in methods], rotation=30)
        ax.set_title(t)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("VPTT_score")
    fig.suptitle("VPTT_score distribution per method")
    fig.tight_layout()
    paths.append(out / "score_distributions.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        mrows = [r for r in rows if r["method"] == m]
        means = [float(np.mean([r[t] for r in mrows])) for t in TERMS]
        ax.bar(np.arange(len(TERMS)) + j * width, means, width, label=_label(m))
    ax.set_xticks(np.arange(len(TERMS)) + width * (len(methods) - 1) / 2, [t.upper() for t in TERMS])
    ax.set_ylabel("mean over personas and tasks")
    ax.set_title("VPTT components per method (NV = 0 for methods without captions)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(out / "components.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
