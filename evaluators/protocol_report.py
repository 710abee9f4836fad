"""The image-level experiment's report (VPTT paper Sec. 4.2.2, Q2, Table 2) over ``vptt bench run`` rows.

Table 2's layout: per method, for generation and for editing, the mean VPTT_score-c (V-c) and its Acc.
(share of items won, ties split), the mean VLM-judge score and its Acc. An item is one (persona, task, LLM)
within the task kind; only items where every method has both scores count. Below it, the Spearman rho of
score-c with the judge, pooled over the judged images, per task, per task kind and over everything.

With a judge calibration (:class:`evaluators.calibration.JudgeCalibration`) the VLM numbers are calibrated
and the calibration personas are left out of the table (held apart from evaluation); the rows on disk keep
the raw judge scores.

Example:
    >>> protocol_section([]) == ""
    True
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vptt.evaluators.agreement import pooled_spearman
from vptt.evaluators.calibration import JudgeCalibration
from vptt.evaluators.report import _label, _order
from vptt.evaluators.stats import win_rates

__all__ = ["KINDS", "judged_rows", "protocol_section", "score_c_judge_rho", "table2"]

KINDS = ("generation", "editing")


def judged_rows(rows: Sequence[Mapping[str, Any]],
                calibration: JudgeCalibration | None = None) -> tuple[list[dict[str, Any]], int]:
    """Rows with a judge score (calibrated when a map is given, calibration personas dropped).

    Returns the rows and how many rows of calibration personas were dropped.
    """
    out, dropped = [], 0
    for r in rows:
        if r.get("judge") is None:
            continue
        if calibration is not None:
            if calibration.holds_out(str(r["persona_id"])):
                dropped += 1
                continue
            r = {**r, "judge": calibration.apply_one(float(r["judge"]))}
        out.append(dict(r))
    return out, dropped


def _item(r: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(r["persona_id"]), str(r["task"]), str(r.get("llm") or ""))


def table2(rows: Sequence[Mapping[str, Any]], kind: str) -> tuple[dict[str, dict[str, float]], int]:
    """Per method: ``{"vc", "vc_acc", "vlm", "vlm_acc"}`` over complete items of task kind ``kind``."""
    krows = [r for r in rows if r.get("task_kind", "generation") == kind and r.get("judge") is not None]
    methods = _order({r["method"] for r in krows})
    items: dict[tuple[str, str, str], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for r in krows:
        items[_item(r)][r["method"]] = r
    full = [it for it in items.values() if all(m in it for m in methods)]
    if not full or not methods:
        return {}, 0
    vc = np.array([[float(it[m]["score_c"]) for m in methods] for it in full])
    vlm = np.array([[float(it[m]["judge"]) for m in methods] for it in full])
    vc_win, vlm_win = win_rates(vc), win_rates(vlm)
    return {m: {"vc": float(vc[:, j].mean()), "vc_acc": float(vc_win[j]), "vlm": float(vlm[:, j].mean()),
                "vlm_acc": float(vlm_win[j])} for j, m in enumerate(methods)}, len(full)


def score_c_judge_rho(rows: Sequence[Mapping[str, Any]]) -> tuple[float, int]:
    """Spearman rho of score-c with the judge, pooled over the given judged rows, and their number."""
    pairs = [(float(r["score_c"]), float(r["judge"])) for r in rows if r.get("judge") is not None]
    if len(pairs) < 3:
        return math.nan, len(pairs)
    x, y = np.array(pairs).T
    return pooled_spearman(x, y), len(pairs)


def _f(x: float | None, pct: bool = False, digits: int = 3) -> str:
    if x is None or math.isnan(x):
        return "—"
    return f"{100 * x:.1f}%" if pct else f"{x:.{digits}f}"


def protocol_section(rows: Sequence[Mapping[str, Any]], calibration: JudgeCalibration | None = None) -> str:
    """Markdown: Table 2 (V-c, VLM, Acc. per method, generation and editing) and score-c vs judge rho.

    Empty when no row has a judge score.
    """
    judged, dropped = judged_rows(rows, calibration)
    if not judged:
        return ""
    tables = {k: table2(judged, k) for k in KINDS}
    methods = _order({r["method"] for r in judged})
    vlm = "VLM (calibrated)" if calibration is not None else "VLM"
    parts = ["## Image-level experiment (Table 2 layout)", "",
             f"| Method | Gen. V-c | Acc. | Gen. {vlm} | Acc. | Edit V-c | Acc. | Edit {vlm} | Acc. |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        cells = []
        for k in KINDS:
            s = tables[k][0].get(m)
            cells += ([_f(s["vc"]), _f(s["vc_acc"], True), _f(s["vlm"], digits=2), _f(s["vlm_acc"], True)]
                      if s else ["—"] * 4)
        parts.append(f"| {_label(m)} | " + " | ".join(cells) + " |")
    n_gen, n_edit = tables["generation"][1], tables["editing"][1]
    note = (f"_{n_gen} generation and {n_edit} editing items (persona x task x LLM) where every method has "
            "VPTT_score-c and a judge score; Acc. is the share of items a method wins (ties split)")
    if calibration is not None:
        note += (f"; judge scores mapped by the calibration, its {len(calibration.calibration_personas)} "
                 f"calibration persona(s) left out ({dropped} rows)")
    parts += ["", note + "._", "", "### VPTT_score-c vs the VLM judge (Spearman ρ, pooled over images)", "",
              "| Scope | ρ | images |", "|---|---|---|"]
    scopes: list[tuple[str, list[dict[str, Any]]]] = [(f"task `{t}`", [r for r in judged if r["task"] == t])
                                                      for t in dict.fromkeys(r["task"] for r in judged)]
    scopes += [(k, [r for r in judged if r.get("task_kind", "generation") == k]) for k in KINDS]
    scopes.append(("all", judged))
    for name, srows in scopes:
        if srows:
            rho, n = score_c_judge_rho(srows)
            parts.append(f"| {name} | {_f(rho)} | {n} |")
    return "\n".join(parts) + "\n"
