"""``vptt bench report``: the paper's tables and plots over ``vptt bench run`` directories, as PNG and HTML.

Reads (never writes) ``rows.jsonl``, ``manifest.json`` and ``personas.npz`` (or ``personas.jsonl``) of one run,
or of several runs made with different LLM rewriters (merged like the paper's Table 3: one row per LLM), and
writes, under ``<run>/report`` by default (``vptt-report`` for several runs):

* ``report.md`` — the Table 3 summary and the Tables 7-10 per-task tables (:mod:`evaluators.report`), plus
  image-metric and judge tables when the runs have them;
* ``plots/score_distributions.png``, ``plots/components.png`` (:func:`evaluators.report.write_plots`),
  ``plots/cohens_d.png`` (per LLM and task, signed Cohen's d of VPTT_score between every pair of methods, row
  minus column, on one symmetric diverging colour scale) and ``plots/persona_map.png`` (mean caption embedding
  per persona, PCA or t-SNE to 2-D, coloured by age, like the paper's Figure 11);
* ``report.html`` — one self-contained page: the same tables, the plots inline, the persona map as SVG with a
  tooltip per persona, the prompts per persona (collapsible), and each run's configuration and sessions.

A run still being written can be reported: a torn last line is ignored, nothing is truncated.
"""

from __future__ import annotations

import math
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
from vptt.evaluators.report import (
    BOX_CAPTION,
    _label,
    _order,
    merged_markdown_report,
    paired_scores,
    run_label,
    write_plots,
)
from vptt.evaluators.report_html import markdown_to_html, persona_map_svg, prompts_html, render_html
from vptt.evaluators.stats import cohens_d, signed_cohens_d, spearman_rho

__all__ = ["BenchReport", "PersonaTable", "bench_report", "cohens_d_matrix", "embed_2d", "load_persona_table",
           "load_rows", "markdown_to_html", "pca_2d", "run_labels", "signed_cohens_d_matrix"]

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


def signed_cohens_d_matrix(scores: Mapping[str, Sequence[float] | np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Antisymmetric matrix of signed Cohen's d: entry (i, j) is ``(mean_i - mean_j) / s_pooled``.

    Positive where the row's method scores higher than the column's; NaN where it cannot be estimated.
    """
    names, d = cohens_d_matrix(scores)
    for i in range(len(names)):
        for j in range(len(names)):
            if i != j and not math.isnan(d[i, j]):
                try:
                    d[i, j] = signed_cohens_d(scores[names[i]], scores[names[j]])
                except ConfigError:
                    d[i, j] = math.nan
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
    if len(judged) >= 2:  # the paper correlates the judge with VPTT_score-c
        rho = spearman_rho([r["score_c"] for r in judged], [r["judge"] for r in judged])
        parts.append(f"_Spearman rho between VPTT_score-c and the judge over {len(judged)} rows: "
                     f"{'n/a' if math.isnan(rho) else f'{rho:.3f}'}._")
    elif judged:
        parts.append("_Spearman rho between VPTT_score-c and the judge: n/a (needs at least 2 judged rows)._")
    return "\n".join(parts)


# --------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cohens_d(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Per LLM (rows of panels) and task: signed Cohen's d of VPTT_score between methods (row − column).

    One symmetric diverging colour scale for every panel (red: the row's method higher, blue: lower).
    """
    plt = _pyplot()
    tasks = list(dict.fromkeys(r["task"] for rows in runs.values() for r in rows))
    mats = {(label, t): signed_cohens_d_matrix(paired_scores([r for r in rows if r["task"] == t], "score")[0])
            for label, rows in runs.items() for t in tasks}
    finite = [abs(x) for _, d in mats.values() for x in d.ravel() if math.isfinite(x)]
    vmax = max(finite) if finite and max(finite) > 0 else 1.0
    fig, axes = plt.subplots(len(runs), len(tasks), figsize=(4.4 * len(tasks), 4.2 * len(runs)), squeeze=False)
    im = None
    for row_axes, label in zip(axes, runs):
        for ax, t in zip(row_axes, tasks):
            names, d = mats[(label, t)]
            n = len(paired_scores([r for r in runs[label] if r["task"] == t], "score")[1])
            shown = np.where(np.isfinite(d), d, 0.0)
            im = ax.imshow(shown, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            labels = [_label(m).split(" ")[0] for m in names]
            ax.set_xticks(range(len(names)), labels, rotation=45, ha="right")
            ax.set_yticks(range(len(names)), labels)
            for i in range(len(names)):
                for j in range(len(names)):
                    txt = "n/a" if math.isnan(d[i, j]) else "∞" if math.isinf(d[i, j]) else f"{d[i, j]:+.2f}"
                    ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                            color="white" if abs(shown[i, j]) > 0.6 * vmax else "black")
            ax.set_title(f"{t} ({n} personas)" if len(runs) == 1 else f"{label}: {t} ({n} personas)", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, label="d = (row − column) / pooled s")
    fig.suptitle("Signed Cohen's d of VPTT_score between methods (row minus column)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


@dataclass
class PersonaPoints:
    """The persona map's 2-D points: coordinates, persona ids, ages (NaN: unknown), the projection used."""

    xy: np.ndarray
    ids: list[str]
    age: np.ndarray
    gender: list[str]
    country: list[str]
    used: str

    def titles(self) -> list[str]:
        """One hover label per point: ``id (age 68, male, Japan)``."""
        out = []
        for pid, a, g, c in zip(self.ids, self.age, self.gender, self.country):
            bits = [f"age {a:.0f}" if math.isfinite(a) else "age unknown", g, c]
            out.append(f"{pid} ({', '.join(b for b in bits if b)})")
        return out


def persona_map_points(table: PersonaTable, method: MapMethod = "pca", seed: int = 0) -> PersonaPoints | None:
    """2-D map of the personas' mean caption embeddings (L2-normalised); None with fewer than two."""
    keep = np.all(np.isfinite(table.caption_mean), axis=1) if table.caption_mean.size else np.zeros(0, bool)
    if keep.sum() < 2:
        return None
    emb = table.caption_mean[keep]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    xy, used = embed_2d(emb, method, seed)
    idx = np.flatnonzero(keep)
    return PersonaPoints(xy, [table.persona_id[i] for i in idx], table.age[keep],
                         [table.gender[i] for i in idx], [table.country[i] for i in idx], used)


def plot_persona_map(table: PersonaTable, path: Path, method: MapMethod = "pca", seed: int = 0, *,
                     points: PersonaPoints | None = None) -> tuple[Path, str] | None:
    """Scatter of personas' mean caption embeddings in 2-D, coloured by age, and the map method used.

    Up to 40 personas are named on the plot. None when fewer than two personas have a caption embedding.
    """
    pts = points or persona_map_points(table, method, seed)
    if pts is None:
        return None
    xy, age, used = pts.xy, pts.age, pts.used
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
    if len(xy) <= 40:  # few enough to name every point
        for (x, y), pid in zip(xy, pts.ids):
            ax.annotate(pid, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_title(f"Personas by mean caption embedding ({used}), coloured by age")
    ax.set_xlabel(f"{used} 1")
    ax.set_ylabel(f"{used} 2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, used


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
    runs: list[str] = field(default_factory=list)


def run_labels(run_dirs: Sequence[Path], manifests: Sequence[Mapping[str, Any]],
               rows: Sequence[Sequence[Mapping[str, Any]]], labels: Sequence[str] | None = None) -> list[str]:
    """How each run is named in the tables: ``labels`` if given, else its LLM's label (a preset's, e.g.
    ``Qwen``) or model, else its composer; repeated names get the run directory's name appended."""
    if labels:
        if len(labels) != len(run_dirs):
            raise ConfigError(f"{len(labels)} label(s) for {len(run_dirs)} run(s); give one per run")
        return list(labels)
    out = []
    for m, rr in zip(manifests, rows):
        llm = (m.get("config") or {}).get("llm")
        out.append(str(llm.get("label") or llm.get("model")) if llm else run_label(rr))
    if len(set(out)) < len(out):
        out = [f"{label} ({d.name})" if out.count(label) > 1 else label for label, d in zip(out, run_dirs)]
    return out


def _merged_personas(run_dirs: Sequence[Path]) -> PersonaTable | None:
    tables = [t for t in (load_persona_table(d) for d in run_dirs) if t is not None]
    if not tables:
        return None
    seen: dict[str, int] = {}
    parts: list[tuple[PersonaTable, int]] = []
    for t in tables:
        for i, pid in enumerate(t.persona_id):
            if pid not in seen and (t.caption_mean.size == 0 or np.all(np.isfinite(t.caption_mean[i]))):
                seen[pid] = len(parts)
                parts.append((t, i))
    if not parts:
        return tables[0]
    dim = max(t.caption_mean.shape[1] for t, _ in parts if t.caption_mean.ndim == 2)
    return PersonaTable([t.persona_id[i] for t, i in parts], np.array([t.age[i] for t, i in parts], float),
                        [t.gender[i] for t, i in parts], [t.country[i] for t, i in parts],
                        np.stack([t.caption_mean[i] if t.caption_mean.shape[1] == dim else np.full(dim, np.nan)
                                  for t, i in parts]))


def _protocol_hook(rows: Sequence[Mapping[str, Any]], judge_calibration: str | Path | None) -> str:
    """Table 2 and score-c vs judge (:mod:`vptt.evaluators.protocol_report`), when the run has judge scores."""
    from vptt.evaluators.calibration import JudgeCalibration
    from vptt.evaluators.protocol_report import protocol_section

    cal = JudgeCalibration.load(judge_calibration) if judge_calibration is not None else None
    section = protocol_section(rows, cal)
    return "\n" + section if section else ""


def bench_report(run_dir: str | Path | Sequence[str | Path], out_dir: str | Path | None = None, *,
                 map_method: MapMethod = "pca", title: str = "VPTT-Bench report", seed: int = 0,
                 labels: Sequence[str] | None = None, prompts_personas: int = 200,
                 judge_calibration: str | Path | None = None) -> BenchReport:
    """Write ``report.md``, ``report.html`` and plots for one run, or several runs merged (one per LLM).

    Args:
        run_dir: a ``vptt bench run`` (or ``vptt evaluate``) directory, or several.
        out_dir: where to write (default ``<run>/report``; ``vptt-report`` for several runs).
        map_method: persona map projection, ``pca`` or ``tsne``.
        title: the report's title.
        seed: t-SNE seed.
        labels: one table label per run (default: each run's LLM label or model, see :func:`run_labels`).
        prompts_personas: how many personas' prompts the HTML lists (sorted by id).
        judge_calibration: a saved judge calibration (JSON) applied to the image-level experiment's VLM
            columns (:mod:`vptt.evaluators.protocol_report`).

    Raises:
        ConfigError: no rows in a run, an unknown ``map_method``, or labels that do not match the runs.
    """
    if map_method not in ("pca", "tsne"):
        raise ConfigError(f"map_method must be 'pca' or 'tsne', got {map_method!r}")
    dirs = [Path(run_dir)] if isinstance(run_dir, (str, Path)) else [Path(d) for d in run_dir]
    if not dirs:
        raise ConfigError("no run directory given")
    all_rows = [load_rows(d) for d in dirs]
    for d, rr in zip(dirs, all_rows):
        if not rr:
            raise ConfigError(f"{d / 'rows.jsonl'} has no rows to report")
    manifests = [read_json_object(d / "manifest.json", what="manifest") if (d / "manifest.json").exists() else {}
                 for d in dirs]
    names = run_labels(dirs, manifests, all_rows, labels)
    runs = {name: [dict(r, _run=name) for r in rr] for name, rr in zip(names, all_rows)}
    rows = [r for rr in runs.values() for r in rr]
    out = Path(out_dir) if out_dir is not None else (dirs[0] / "report" if len(dirs) == 1 else
                                                     Path("vptt-report"))
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    md = merged_markdown_report(runs, title)
    extra = image_tables(rows)
    md = md + ("\n" + extra + "\n" if extra else "")
    md = md + _protocol_hook(rows, judge_calibration)
    (out / "report.md").write_text(md)
    dist, comps = write_plots(rows, plots_dir, runs)
    plots = [(f"VPTT_score distribution per method and task. {BOX_CAPTION}", dist),
             ("VPTT components per method", comps),
             ("Signed Cohen's d of VPTT_score between methods, per task: row minus column over the pooled "
              "standard deviation (red: the row's method scores higher), one colour scale for all panels",
              plot_cohens_d(runs, plots_dir / "cohens_d.png"))]
    table = _merged_personas(dirs)
    used, svg = "", ""
    points = persona_map_points(table, map_method, seed) if table is not None else None
    if table is not None and points is not None:
        got = plot_persona_map(table, plots_dir / "persona_map.png", map_method, seed, points=points)
        if got is not None:
            used = got[1]
            plots.append((f"Persona map ({used} of mean caption embeddings), coloured by age", got[0]))
            svg = ("<h2>Persona map</h2>" + persona_map_svg(points.xy, points.titles(), points.age, used))
    page = render_html(title, md, plots, dict(zip(names, manifests)),
                       extra=svg + prompts_html(rows, prompts_personas))
    (out / "report.html").write_text(page, encoding="utf-8")
    return BenchReport(html=out / "report.html", markdown=out / "report.md", plots=[p for _, p in plots],
                       rows=len(rows), personas=len({r["persona_id"] for r in rows}), map_method=used, runs=names)
