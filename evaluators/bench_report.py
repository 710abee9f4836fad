"""``vptt bench report``: the paper's tables and plots over a ``vptt bench run`` directory, as PNG and HTML.

Reads (never writes) ``rows.jsonl``, ``manifest.json`` and ``personas.npz`` (or ``personas.jsonl``) of a run
and writes, under ``<run>/report`` by default:

* ``report.md`` — the Table 3 summary and the Tables 7-10 per-task tables (:mod:`evaluators.report`), plus
  image-metric and judge tables when the run has them;
* ``plots/score_distributions.png``, ``plots/components.png`` (:func:`evaluators.report.write_plots`),
  ``plots/cohens_d.png`` (per task, Cohen's d of VPTT_score between every pair of methods) and
  ``plots/persona_map.png`` (mean caption embedding per persona, PCA or t-SNE to 2-D, coloured by age, like
  the paper's Figure 11);
* ``report.html`` — one self-contained page: the same tables as HTML, the plots inline as base64 PNG, the
  run's configuration, versions and sessions.

A run still being written can be reported: a torn last line is ignored, nothing is truncated.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import zipfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vptt.core.errors import ConfigError, RunFileError
from vptt.core.files import read_json_object
from vptt.core.resultlog import read_rows
from vptt.evaluators.report import _label, _order, markdown_report, paired_scores, write_plots
from vptt.evaluators.stats import cohens_d, spearman_rho

__all__ = ["BenchReport", "PersonaTable", "bench_report", "cohens_d_matrix", "embed_2d", "load_persona_table",
           "load_rows", "markdown_to_html", "pca_2d"]

MapMethod = Literal["pca", "tsne"]


# --------------------------------------------------------------------------- loading (read-only)
def load_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``rows.jsonl`` (a torn last line is skipped; a repeated key keeps the first row)."""
    path = Path(run_dir) / "rows.jsonl"
    if not path.exists():
        raise ConfigError(f"{path} not found; point at the output directory of `vptt bench run`")
    rows, seen = [], set()
    for row in read_rows(path, required=("persona_id", "task", "method", "score"), numeric=("score",)):
        key = (row["persona_id"], row["task"], row["method"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


@dataclass
class PersonaTable:
    """Per persona: id, age (NaN if unknown), gender, country and mean caption embedding (NaN row if none)."""

    persona_id: list[str]
    age: np.ndarray
    gender: list[str]
    country: list[str]
    caption_mean: np.ndarray

    def __len__(self) -> int:
        return len(self.persona_id)


def load_persona_table(run_dir: str | Path) -> PersonaTable | None:
    """The run's persona records from ``personas.npz``, else ``personas.jsonl``; None if neither exists."""
    run = Path(run_dir)
    if (run / "personas.npz").exists():
        try:
            z = np.load(run / "personas.npz")
            return PersonaTable(z["persona_id"].tolist(), z["age"], z["gender"].tolist(), z["country"].tolist(),
                                z["caption_mean"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise RunFileError(f"{run / 'personas.npz'} is damaged ({type(exc).__name__}); delete it, the "
                               "report rebuilds the persona map from personas.jsonl") from None
    if not (run / "personas.jsonl").exists():
        return None
    from vptt.core.vectors import decode_vector

    recs = read_rows(run / "personas.jsonl", required=("persona_id",))
    vecs = [decode_vector(r["caption_mean"]) if r.get("caption_mean") else None for r in recs]
    dim = next((v.size for v in vecs if v is not None), 0)
    emb = np.stack([v if v is not None else np.full(dim, np.nan) for v in vecs]) if recs else np.zeros((0, 0))
    return PersonaTable([r["persona_id"] for r in recs],
                        np.array([np.nan if r.get("age") is None else r["age"] for r in recs], dtype=float),
                        [r.get("gender") or "" for r in recs], [r.get("country") or "" for r in recs], emb)


# --------------------------------------------------------------------------- pure computations
def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows of ``x`` (n, D) on their top two principal components (centred SVD).

    Signs follow scikit-learn's convention: in each component the loading of largest magnitude is positive.
    Fewer than two components available (n < 3 or rank < 2) leaves the missing coordinates at 0.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or not np.all(np.isfinite(a)):
        raise ConfigError("pca_2d needs a finite (n, D) matrix")
    c = a - a.mean(axis=0)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    out = np.zeros((a.shape[0], 2))
    k = min(2, vt.shape[0])
    for i in range(k):
        v = vt[i] * np.sign(vt[i][np.argmax(np.abs(vt[i]))] or 1.0)
        out[:, i] = c @ v if s[i] > 1e-12 else 0.0
    return out


def embed_2d(x: np.ndarray, method: MapMethod = "pca", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D map of the rows: PCA, or t-SNE (scikit-learn; PCA init) when there are enough points.

    Returns the coordinates and the method actually used (t-SNE needs at least 5 points).
    """
    if method not in ("pca", "tsne"):
        raise ConfigError(f"map method must be 'pca' or 'tsne', got {method!r}")
    if method == "tsne" and len(x) >= 5:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(x) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            np.asarray(x, dtype=np.float64)), "t-SNE"
    return pca_2d(x), "PCA"


def cohens_d_matrix(scores: Mapping[str, Sequence[float] | np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Symmetric matrix of Cohen's d (pooled s) between every pair of methods; 0 on the diagonal.

    A pair with too few values for a pooled s (n1 + n2 < 3) gets NaN.
    """
    names = list(scores)
    d = np.zeros((len(names), len(names)))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            try:
                d[i, j] = d[j, i] = cohens_d(scores[names[i]], scores[names[j]])
            except ConfigError:
                d[i, j] = d[j, i] = math.nan
    return names, d


def _by_task(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        out[r["task"]].append(r)
    return dict(out)


def image_tables(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per task, each method's mean image metrics and judge score; Spearman rho judge vs score."""
    metrics = sorted({k for r in rows for k in (r.get("image_metrics") or {})})
    judged = [r for r in rows if r.get("judge") is not None]
    if not metrics and not judged:
        return ""
    cols = metrics + (["judge"] if judged else [])
    parts = ["## Image metrics and judge", ""]
    for task, trows in _by_task(rows).items():
        lines = [f"### Task `{task}`", "", "| Method | " + " | ".join(cols) + " |",
                 "|---|" + "---|" * len(cols)]
        for m in _order({r["method"] for r in trows}):
            mrows = [r for r in trows if r["method"] == m]
            cells = []
            for c in cols:
                vals = [r.get("judge") if c == "judge" else (r.get("image_metrics") or {}).get(c)
                        for r in mrows]
                vals = [float(v) for v in vals if v is not None and not math.isnan(float(v))]
                cells.append(f"{np.mean(vals):.3f}" if vals else "—")
            lines.append(f"| {_label(m)} | " + " | ".join(cells) + " |")
        parts += lines + [""]
    if len(judged) >= 2:
        rho = spearman_rho([r["score"] for r in judged], [r["judge"] for r in judged])
        parts.append(f"_Spearman rho between VPTT_score and the judge over {len(judged)} rows: "
                     f"{'—' if math.isnan(rho) else f'{rho:.3f}'}._")
    return "\n".join(parts)


# --------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cohens_d(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """One heatmap per task: Cohen's d of VPTT_score between methods (items = personas)."""
    plt = _pyplot()
    tasks = _by_task(rows)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks), 4.2), squeeze=False)
    for ax, (task, trows) in zip(axes[0], tasks.items()):
        scores, items = paired_scores(trows, "score")
        names, d = cohens_d_matrix(scores)
        im = ax.imshow(np.nan_to_num(d, nan=0.0), cmap="magma", vmin=0)
        labels = [_label(m).split(" ")[0] for m in names]
        ax.set_xticks(range(len(names)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), labels)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, "—" if math.isnan(d[i, j]) else f"{d[i, j]:.2f}", ha="center", va="center",
                        fontsize=7, color="white" if d[i, j] < np.nanmax(d) * 0.6 else "black")
        ax.set_title(f"{task} ({len(items)} personas)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Cohen's d of VPTT_score between methods")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_persona_map(table: PersonaTable, path: Path, method: MapMethod = "pca",
                     seed: int = 0) -> tuple[Path, str] | None:
    """Scatter of personas' mean caption embeddings in 2-D, coloured by age, and the map method used.

    None when fewer than two personas have a caption embedding.
    """
    keep = np.all(np.isfinite(table.caption_mean), axis=1) if table.caption_mean.size else np.zeros(0, bool)
    if keep.sum() < 2:
        return None
    emb = table.caption_mean[keep]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    xy, used = embed_2d(emb, method, seed)
    age = table.age[keep]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    known = np.isfinite(age)
    if (~known).any():
        ax.scatter(xy[~known, 0], xy[~known, 1], c="lightgrey", s=18, label="age unknown")
    if known.any():
        sc = ax.scatter(xy[known, 0], xy[known, 1], c=age[known], cmap="viridis", s=18)
        fig.colorbar(sc, ax=ax, label="age")
    if (~known).any():
        ax.legend(fontsize=8)
    ax.set_title(f"Personas by mean caption embedding ({used}), coloured by age")
    ax.set_xlabel(f"{used} 1")
    ax.set_ylabel(f"{used} 2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, used


# --------------------------------------------------------------------------- HTML
def _inline(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"(?<![\w])_(.+?)_(?![\w])", r"<em>\1</em>", t)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(md: str) -> str:
    """The subset of Markdown the reports use: headings, pipe tables, paragraphs, bold, code, emphasis."""
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


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}th:first-child,td:first-child{text-align:left}thead{background:#f3f3f3}"
        "img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}code{background:#f5f5f5}"
        "pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:12px}")


def _manifest_html(manifest: Mapping[str, Any]) -> str:
    cfg = dict(manifest.get("config", {}))
    tasks = cfg.pop("tasks", [])
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in cfg.items())
    vers = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in manifest.get("versions", {}).items())
    task_rows = "".join(f"<tr><td>{html.escape(t['name'])}</td><td>{html.escape(t['kind'])}</td>"
                        f"<td>{html.escape(t['query'])}</td></tr>" for t in tasks)
    sessions = manifest.get("sessions", [])
    keys = list(sessions[0]) if sessions else []
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    sess = "".join("<tr>" + "".join(f"<td>{html.escape(str(s.get(k)))}</td>" for k in keys) + "</tr>"
                   for s in sessions)
    return ("<h2>Run</h2><h3>Tasks</h3><table><thead><tr><th>Task</th><th>Kind</th><th>Query</th></tr>"
            f"</thead><tbody>{task_rows}</tbody></table><h3>Configuration</h3>"
            f"<table><tbody>{rows}</tbody></table>"
            f"<h3>Versions</h3><table><tbody>{vers}</tbody></table>"
            + (f"<h3>Sessions</h3><table><thead><tr>{head}</tr></thead><tbody>{sess}</tbody></table>"
               if sessions else ""))


def render_html(title: str, md: str, plots: Sequence[tuple[str, Path]], manifest: Mapping[str, Any]) -> str:
    """One self-contained page: tables from ``md``, each plot inline as a base64 PNG, the manifest."""
    figs = "".join(f"<figure><img alt=\"{html.escape(cap)}\" src=\"data:image/png;base64,"
                   f"{base64.b64encode(p.read_bytes()).decode('ascii')}\"><figcaption>{html.escape(cap)}"
                   "</figcaption></figure>" for cap, p in plots)
    body = markdown_to_html(md.split("\n", 1)[1] if md.startswith("# ") else md)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}<h2>Plots</h2>{figs}"
            f"{_manifest_html(manifest)}</body></html>")


# --------------------------------------------------------------------------- entry point
@dataclass
class BenchReport:
    """What :func:`bench_report` wrote."""

    html: Path
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    rows: int = 0
    personas: int = 0
    map_method: str = ""


def bench_report(run_dir: str | Path, out_dir: str | Path | None = None, *, map_method: MapMethod = "pca",
                 title: str = "VPTT-Bench report", seed: int = 0) -> BenchReport:
    """Write ``report.md``, ``report.html`` and plots for the run in ``run_dir`` (default ``<run>/report``).

    Raises:
        ConfigError: no rows in the run, or an unknown ``map_method``.
    """
    if map_method not in ("pca", "tsne"):
        raise ConfigError(f"map_method must be 'pca' or 'tsne', got {map_method!r}")
    run = Path(run_dir)
    rows = load_rows(run)
    if not rows:
        raise ConfigError(f"{run / 'rows.jsonl'} has no rows to report")
    out = Path(out_dir) if out_dir is not None else run / "report"
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_json_object(run / "manifest.json", what="manifest") if (run / "manifest.json").exists() else {}
    md = markdown_report(rows, title)
    extra = image_tables(rows)
    md = md + ("\n" + extra + "\n" if extra else "")
    (out / "report.md").write_text(md)
    dist, comps = write_plots(rows, plots_dir)
    plots = [("VPTT_score distribution per method and task", dist), ("VPTT components per method", comps),
             ("Cohen's d between methods, per task", plot_cohens_d(rows, plots_dir / "cohens_d.png"))]
    table = load_persona_table(run)
    used = ""
    if table is not None:
        got = plot_persona_map(table, plots_dir / "persona_map.png", map_method, seed)
        if got is not None:
            used = got[1]
            plots.append((f"Persona map ({used} of mean caption embeddings), coloured by age", got[0]))
    (out / "report.html").write_text(render_html(title, md, plots, manifest), encoding="utf-8")
    return BenchReport(html=out / "report.html", markdown=out / "report.md", plots=[p for _, p in plots],
                       rows=len(rows), personas=len({r["persona_id"] for r in rows}), map_method=used)
