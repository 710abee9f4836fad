"""The self-contained HTML page of a report: tables, plots, a hoverable persona map, prompts per persona.

Everything is inline (no script, no link, no file reference): plots as base64 PNG, the persona map as SVG whose
points carry ``<title>`` tooltips (hover a point to read the persona's id, age, gender and country), and one
collapsible ``<details>`` section per persona listing each task × method prompt with its scores.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown_to_html", "persona_map_svg", "prompts_html", "render_html"]


def _inline(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"&lt;u&gt;(.+?)&lt;/u&gt;", r"<u>\1</u>", t)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"(?<![\w])_(.+?)_(?![\w])", r"<em>\1</em>", t)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(md: str) -> str:
    """The subset of Markdown the reports use: headings, pipe tables, paragraphs, bold, ``<u>``, code,
    emphasis."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1]):
            head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(line))
            body, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                body.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(lines[i])) + "</tr>")
                i += 1
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
            continue
        heading = re.match(r"(#{1,6}) (.*)", line)
        if heading:
            n = len(heading.group(1))
            out.append(f"<h{n}>{_inline(heading.group(2))}</h{n}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:3px 8px;"
       "text-align:right}th:first-child,td:first-child{text-align:left}thead{background:#f3f3f3}"
       "img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}code{background:#f5f5f5}"
       "pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:12px}"
       "details{margin:.2em 0}summary{cursor:pointer}td.prompt{text-align:left;max-width:700px;font-size:12px}"
       "svg circle:hover{stroke:#000;stroke-width:2}")


def manifest_html(manifest: Mapping[str, Any], heading: str = "Run") -> str:
    """A run's tasks, configuration, versions, LLM token totals and sessions as tables."""
    cfg = dict(manifest.get("config", {}))
    tasks = cfg.pop("tasks", [])
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in cfg.items())
    vers = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in manifest.get("versions", {}).items())
    task_rows = "".join(f"<tr><td>{html.escape(t['name'])}</td><td>{html.escape(t['kind'])}</td>"
                        f"<td>{html.escape(t['query'])}</td></tr>" for t in tasks)
    totals = manifest.get("llm_totals")
    tot = ("<h3>LLM totals</h3><table><tbody>" + "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in totals.items()) + "</tbody></table>"
           if totals else "")
    sessions = manifest.get("sessions", [])
    keys = list(dict.fromkeys(k for s in sessions for k in s))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    sess = "".join("<tr>" + "".join(f"<td>{html.escape(_plain(s.get(k)))}</td>" for k in keys) + "</tr>"
                   for s in sessions)
    return (f"<h2>{html.escape(heading)}</h2><h3>Tasks</h3><table><thead><tr><th>Task</th><th>Kind</th>"
            f"<th>Query</th></tr></thead><tbody>{task_rows}</tbody></table><h3>Configuration</h3>"
            f"<table><tbody>{rows}</tbody></table>"
            f"<h3>Versions</h3><table><tbody>{vers}</tbody></table>{tot}"
            + (f"<h3>Sessions</h3><table><thead><tr>{head}</tr></thead><tbody>{sess}</tbody></table>"
               if sessions else ""))


def _plain(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def persona_map_svg(xy: np.ndarray, labels: Sequence[str], ages: np.ndarray, used: str,
                    width: int = 640, height: int = 480) -> str:
    """An inline SVG scatter of the persona map; each point's ``<title>`` names the persona (hover it).

    Colour is age on the viridis scale (grey: unknown), with a legend of the age range.
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    pad = 36
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    px = pad + (xy[:, 0] - lo[0]) / span[0] * (width - 2 * pad)
    py = height - pad - (xy[:, 1] - lo[1]) / span[1] * (height - 2 * pad)
    known = np.isfinite(ages)
    a_lo, a_hi = (float(ages[known].min()), float(ages[known].max())) if known.any() else (0.0, 1.0)
    cmap = colormaps["viridis"]
    dots = []
    for x, y, label, age in zip(px, py, labels, ages):
        colour = to_hex(cmap((age - a_lo) / (a_hi - a_lo) if a_hi > a_lo else 0.5)) if math.isfinite(age) \
            else "#c8c8c8"
        dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}" fill-opacity="0.85">'
                    f"<title>{html.escape(label)}</title></circle>")
    legend = "".join(f'<rect x="{width - 150 + 12 * i}" y="8" width="12" height="10" '
                     f'fill="{to_hex(cmap(i / 9))}"/>' for i in range(10))
    legend += (f'<text x="{width - 150}" y="30" font-size="10">age {a_lo:.0f}</text>'
               f'<text x="{width - 30}" y="30" font-size="10" text-anchor="end">{a_hi:.0f}</text>'
               f'<circle cx="{width - 145}" cy="42" r="4" fill="#c8c8c8"/>'
               f'<text x="{width - 136}" y="45" font-size="10">age unknown</text>')
    return (f'<svg width="{width}" height="{height}" role="img" '
            f'aria-label="persona map" style="border:1px solid #eee">'
            f'<text x="{pad}" y="18" font-size="12">Personas by mean caption embedding ({html.escape(used)}), '
            f"coloured by age; hover a point for its persona</text>"
            f'<text x="{width / 2:.0f}" y="{height - 8}" font-size="10" text-anchor="middle">{used} 1</text>'
            f'<text x="10" y="{height / 2:.0f}" font-size="10" transform="rotate(-90 10 {height / 2:.0f})" '
            f'text-anchor="middle">{used} 2</text>{"".join(dots)}{legend}</svg>')


def prompts_html(rows: Sequence[Mapping[str, Any]], max_personas: int = 200) -> str:
    """One collapsible section per persona: each task × method (× LLM) prompt with its scores."""
    from vptt.evaluators.report import _label, _order

    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by.setdefault(str(r["persona_id"]), []).append(r)
    ids = sorted(by)
    shown = ids[:max_personas]
    multi = len({r.get("_run") for r in rows}) > 1
    parts = [f"<h2>Prompts per persona</h2><p>{len(shown)} of {len(ids)} personas"
             + (f" (pass <code>--prompts-personas {len(ids)}</code> for all)" if len(shown) < len(ids) else "")
             + "; open a persona to read each task × method prompt and its scores.</p>"]
    for pid in shown:
        prs = by[pid]
        order = {m: i for i, m in enumerate(_order({r["method"] for r in prs}))}
        prs = sorted(prs, key=lambda r: (str(r.get("_run", "")), str(r["task"]), order[r["method"]]))
        head = ("<th>LLM</th>" if multi else "") + ("<th>Task</th><th>Method</th><th>Prompt</th><th>PA</th>"
                                                    "<th>GS</th><th>CP</th><th>NV</th><th>score-c</th>"
                                                    "<th>score</th>")
        body = "".join(
            "<tr>" + (f"<td>{html.escape(str(r.get('_run', '')))}</td>" if multi else "")
            + f"<td>{html.escape(str(r['task']))}</td><td>{html.escape(_label(r['method']))}</td>"
            f"<td class=\"prompt\">{html.escape(str(r.get('prompt', '')))}</td>"
            + "".join(f"<td>{float(r[k]):.3f}</td>" for k in ("pa", "gs", "cp", "nv", "score_c", "score"))
            + "</tr>" for r in prs)
        parts.append(f"<details><summary><code>{html.escape(pid)}</code> ({len(prs)} prompts)</summary>"
                     f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></details>")
    return "".join(parts)


def render_html(title: str, md: str, plots: Sequence[tuple[str, Path]], manifests: Mapping[str, Mapping[str, Any]]
                | Mapping[str, Any], *, extra: str = "") -> str:
    """One self-contained page: tables from ``md``, each plot inline as a base64 PNG, ``extra`` HTML (persona
    map, prompts), then each run's manifest (``manifests``: label -> manifest, or one manifest)."""
    if "config" in manifests or not manifests:
        manifests = {"Run": manifests}
    figs = "".join(f"<figure><img alt=\"{html.escape(cap)}\" src=\"data:image/png;base64,"
                   f"{base64.b64encode(p.read_bytes()).decode('ascii')}\"><figcaption>{html.escape(cap)}"
                   "</figcaption></figure>" for cap, p in plots)
    body = markdown_to_html(md.split("\n", 1)[1] if md.startswith("# ") else md)
    runs = "".join(manifest_html(m, "Run" if len(manifests) == 1 else f"Run: {label}")
                   for label, m in manifests.items())
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}<h2>Plots</h2>{figs}{extra}{runs}</body></html>")
