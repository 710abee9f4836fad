"""`vptt bench report`: tables, plots and the self-contained HTML page over a fixture run."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from typer.testing import CliRunner

from vptt import ConfigError
from vptt.evaluators.bench_report import (
    bench_report,
    cohens_d_matrix,
    embed_2d,
    load_persona_table,
    markdown_to_html,
    pca_2d,
)
from vptt.sdk.bench import encode_vector, write_personas_npz
from vptt.sdk.cli.bench import register_bench

METHODS = ["baseline", "persona_only", "brag", "vprag", "comb"]
TASKS = [("social_post", "generation", "A photo showing my next social media post"),
         ("garden", "editing", "Here is a garden. Add preferred elements to it")]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A fixture run: 8 personas x 2 tasks x 5 methods with seeded scores, image metrics, judge, personas."""
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for i in range(8):
        for name, kind, query in TASKS:
            for j, m in enumerate(METHODS):
                pa, gs, cp = rng.uniform(0.1 + 0.1 * j, 0.4 + 0.1 * j, 3)
                cond = m in ("brag", "vprag", "comb")
                nv = float(rng.uniform(0.3, 0.9)) if cond else 0.0
                rows.append({"persona_id": f"p{i}", "task": name, "task_kind": kind, "method": m,
                             "query": query, "prompt": f"{query} <{m}>", "pa": pa, "gs": gs, "cp": cp,
                             "nv": nv,
                             "score": 0.2 * pa + 0.3 * gs + 0.3 * cp + 0.2 * nv,
                             "score_c": (pa + gs + cp) / 3, "caption_conditioned": cond, "seed": i * 100 + j,
                             "image": f"images/p{i}/{name}/{m}.png",
                             "image_metrics": {"clip_t": rng.uniform(20, 30)},
                             "judge": float(rng.integers(0, 11)) / 2})
    (run / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs = [{"persona_id": f"p{i}", "age": None if i == 7 else 20 + 6 * i, "gender": "female",
             "country": "Japan", "occupation": "potter", "n_posts": 0 if i == 6 else 3,
             "caption_mean": None if i == 6 else encode_vector(rng.normal(size=16) + (i % 2) * 2)}
            for i in range(8)]
    (run / "personas.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    tasks = [{"name": n, "query": q, "kind": k, "input_image": None} for n, k, q in TASKS]
    manifest = {"config": {"tasks": tasks, "methods": METHODS, "seed": 0,
                           "embedder": "minilm:all-MiniLM-L6-v2"},
                "versions": {"python": "3.11", "numpy": np.__version__}, "seed": 0,
                "sessions": [{"backend": "ray", "workers": 2, "rows_written": 80, "seconds": 1.5}]}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_report_files_tables_and_self_contained_html(run_dir: Path) -> None:
    write_personas_npz(run_dir)
    rep = bench_report(run_dir)
    assert (rep.rows, rep.personas, rep.map_method) == (80, 8, "PCA")
    assert [p.name for p in rep.plots] == ["score_distributions.png", "components.png", "cohens_d.png",
                                           "persona_map.png"]
    assert all(p.read_bytes()[:8] == PNG for p in rep.plots)
    md = rep.markdown.read_text()
    assert ("| LLM | Method | n | PA | GS | CP | NV | score-c | 95% CI | Win% | d (vs Baseline) | score | 95% CI | "
            "Win% | d (vs Baseline) |") in md
    assert "## Summary (Table 3 layout" in md and "### Task `garden`" in md and "### (b) Editing" in md
    rows = [json.loads(x) for x in open(run_dir / "rows.jsonl")]
    rho = spearmanr([r["score_c"] for r in rows], [r["judge"] for r in rows]).statistic  # the paper's score-c
    assert f"VPTT_score-c and the judge over 80 rows: {rho:.3f}" in md
    clip = np.mean([r["image_metrics"]["clip_t"] for r in rows
                    if r["task"] == "garden" and r["method"] == "vprag"])
    assert re.search(rf"\| VPRAG \| {clip:.3f} \| ", md)
    page = rep.html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:|[\w./-]+\.png)""", page)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4 and all(base64.b64decode(b)[:8] == PNG for b in images)
    # as many HTML tables as Markdown tables (+ 8 personas' prompt tables + the run's tasks, config, versions
    # and sessions tables)
    assert page.count("<table>") == md.count("\n|---|") + 8 + 4
    assert "<td>Comb. (BRAG+VPRAG)</td>" in page and "<td>ray</td>" in page
    # the persona map is hoverable: one SVG point per persona with a caption embedding, titled with its id
    titles = re.findall(r"<circle [^>]*><title>([^<]+)</title></circle>", page)
    assert len(titles) == 7 and "p0 (age 20, female, Japan)" in titles and "p7 (age unknown, female, Japan)" in titles
    # prompts per persona: one collapsible section each, every task x method prompt in it
    assert page.count("<details>") == 8
    section = page[page.index("<code>p3</code>"):].split("</details>")[0]
    assert section.count('<td class="prompt">') == 10 and "Here is a garden. Add preferred elements to it &lt;vprag&gt;" in section
    assert "median" in page and "1.5 × IQR" in page and "row minus column" in page


def test_cohens_d_matrix_against_naive_pooled_formula() -> None:
    rng = np.random.default_rng(1)
    scores = {m: rng.normal(j * 0.3, 1 + j * 0.1, size=12) for j, m in enumerate(METHODS)}
    names, d = cohens_d_matrix(scores)
    assert names == METHODS and np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    for i, a in enumerate(METHODS):
        for j, b in enumerate(METHODS):
            x, y = scores[a], scores[b]
            ss = (len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)
            pooled = math.sqrt(ss / (len(x) + len(y) - 2))
            assert d[i, j] == pytest.approx(abs(x.mean() - y.mean()) / pooled)
    _, tiny = cohens_d_matrix({"a": [1.0], "b": [2.0]})
    assert math.isnan(tiny[0, 1])


def test_pca_2d_matches_sklearn() -> None:
    x = np.random.default_rng(2).normal(size=(20, 10)) * np.linspace(3, 0.5, 10)
    ours, ref = pca_2d(x), PCA(n_components=2, svd_solver="full").fit_transform(x)
    for k in range(2):  # the same components; signs per scikit-learn's largest-loading-positive rule
        assert np.allclose(np.abs(ours[:, k]), np.abs(ref[:, k]), atol=1e-8)
    comps = PCA(n_components=2, svd_solver="full").fit(x).components_
    flips = np.sign(comps[np.arange(2), np.argmax(np.abs(comps), axis=1)])
    assert np.allclose(ours, ref * flips, atol=1e-8)
    assert embed_2d(x[:3], "tsne")[1] == "PCA"  # too few points for t-SNE
    assert np.allclose(pca_2d(np.ones((4, 3))), 0)


def test_tsne_map_from_jsonl_and_unknown_ages(run_dir: Path) -> None:
    table = load_persona_table(run_dir)  # no personas.npz: read from personas.jsonl
    assert table is not None and len(table) == 8 and math.isnan(table.age[7])
    assert np.all(np.isnan(table.caption_mean[6])) and table.caption_mean.shape == (8, 16)
    rep = bench_report(run_dir, run_dir / "tsne", map_method="tsne")
    assert rep.map_method == "t-SNE" and (run_dir / "tsne" / "plots" / "persona_map.png").exists()
    assert "Persona map (t-SNE" in rep.html.read_text()


def test_torn_run_is_read_without_writing(run_dir: Path) -> None:
    with open(run_dir / "rows.jsonl", "a") as fh:
        fh.write('{"persona_id": "p9", "task": "gar')
    before = (run_dir / "rows.jsonl").read_bytes()
    assert bench_report(run_dir).rows == 80
    assert (run_dir / "rows.jsonl").read_bytes() == before


def test_markdown_to_html() -> None:
    md = "## Task `a<b>`\n\n| M | x |\n|---|---|\n| **B** | 1.0 |\n| C | — |\n\n_note_ here"
    page = markdown_to_html(md)
    assert page.startswith("<h2>Task <code>a&lt;b&gt;</code></h2>")
    assert page.count("<tr>") == 3 and "<td><strong>B</strong></td><td>1.0</td>" in page
    assert "<p><em>note</em> here</p>" in page


def test_errors_and_cli(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "rows.jsonl").write_text("")
    with pytest.raises(ConfigError, match="no rows"):
        bench_report(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not found"):
        bench_report(tmp_path)
    with pytest.raises(ConfigError, match="pca"):
        bench_report(run_dir, map_method="umap")  # type: ignore[arg-type]
    app = typer.Typer()
    register_bench(app)
    r = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "rep"), "--map", "pca",
                                 "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["rows"] == 80 and got["map_method"] == "PCA" and Path(got["html"]).exists()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "no rows" in r.output


def _run(path: Path, label: str, shift: float, methods: list[str], rng: np.random.Generator,
         personas: int = 6) -> Path:
    """A run made with one 'LLM': seeded scores per method, its label in the manifest."""
    path.mkdir(parents=True)
    rows = []
    for i in range(personas):
        for name, kind, query in TASKS:
            for j, m in enumerate(methods):
                pa, gs, cp = rng.uniform(0.1 + 0.1 * j + shift, 0.4 + 0.1 * j + shift, 3)
                nv = float(rng.uniform(0.3, 0.9))
                rows.append({"persona_id": f"p{i}", "task": name, "task_kind": kind, "method": m, "query": query,
                             "prompt": f"{label} {m} {i}", "pa": pa, "gs": gs, "cp": cp, "nv": nv,
                             "score": 0.2 * pa + 0.3 * gs + 0.3 * cp + 0.2 * nv, "score_c": (pa + gs + cp) / 3,
                             "caption_conditioned": True})
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "manifest.json").write_text(json.dumps({"config": {"methods": methods, "llm": {
        "model": f"org/{label}-model", "label": label}}, "llm_totals": {"calls": 3}}))
    return path


def _pooled_d(x: np.ndarray, y: np.ndarray) -> float:
    ss = (len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)
    return abs(x.mean() - y.mean()) / math.sqrt(ss / (len(x) + len(y) - 2))


def test_runs_of_several_llms_merge_into_table_3(tmp_path: Path) -> None:
    from scipy import stats as st

    rng = np.random.default_rng(3)
    a = _run(tmp_path / "qwen", "Qwen", 0.0, METHODS, rng)
    b = _run(tmp_path / "mini", "4o-mini", 0.05, METHODS, rng)
    rep = bench_report([a, b], tmp_path / "merged")
    assert rep.runs == ["Qwen", "4o-mini"] and rep.rows == 2 * 6 * 2 * 5
    md = rep.markdown.read_text()
    gen = md[md.index("### (a) Generation"):md.index("### (b) Editing")]
    lines = [line for line in gen.splitlines() if line.startswith("| Qwen") or line.startswith("| 4o-mini")]
    assert [line.split("|")[1].strip() for line in lines] == ["Qwen", "4o-mini"]  # rows: LLM
    rows = [json.loads(x) for x in open(b / "rows.jsonl")]
    gen_rows = [r for r in rows if r["task_kind"] == "generation"]
    v = {m: np.array([r["score"] for r in gen_rows if r["method"] == m]) for m in METHODS}
    best = max(METHODS, key=lambda m: v[m].mean())
    second = sorted(METHODS, key=lambda m: -v[m].mean())[1]
    cells = [c.strip() for c in lines[1].split("|")[3:-1]]  # after LLM and n: (V [CI], d) per method
    assert lines[1].split("|")[2].strip() == "6"  # n per cell: 6 personas x 1 generation task
    for k, m in enumerate(METHODS):
        value, d = cells[2 * k], cells[2 * k + 1]
        lo, hi = st.t.interval(0.95, len(v[m]) - 1, loc=v[m].mean(), scale=st.sem(v[m]))
        text = f"{v[m].mean():.3f}"
        expect = f"**{text}**" if m == best else f"<u>{text}</u>" if m == second else text
        assert value == f"{expect} [{lo:.3f}, {hi:.3f}]"
        assert d == ("NA" if m == best else f"{_pooled_d(v[m], v[best]):.2f}")
    # Tables 7-10: per task, one block per LLM, d against Baseline
    garden = md[md.index("## Task `garden`"):]
    assert "| Qwen | Baseline | 6 |" in garden and "| 4o-mini | Baseline | 6 |" in garden
    assert "d (vs Baseline) |" in garden and "†" not in garden
    page = rep.html.read_text()
    assert "<u>" in page and "Run: Qwen" in page and "Run: 4o-mini" in page and "<th>LLM</th>" in page
    assert (tmp_path / "merged" / "plots" / "cohens_d.png").read_bytes()[:8] == PNG


def test_d_says_what_it_is_measured_against_without_baseline(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    a = _run(tmp_path / "a", "Qwen", 0.0, ["brag", "vprag", "comb"], rng)
    md = bench_report(a).markdown.read_text()
    garden = md[md.index("## Task `garden`"):]
    assert "d (vs Baseline†)" in garden
    rows = [json.loads(x) for x in open(a / "rows.jsonl") if json.loads(x)["task"] == "garden"]
    means = {m: np.mean([r["score_c"] for r in rows if r["method"] == m]) for m in ("brag", "vprag", "comb")}
    ref = max(means, key=means.get)
    label = {"brag": "BRAG", "vprag": "VPRAG", "comb": "Comb. (BRAG+VPRAG)"}[ref]
    assert f"Qwen: Baseline is not in this run, so d is measured against the best method of its rows: {label} " \
           "for score-c" in garden


def test_statistics_that_need_more_data_say_n_a(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    one = _run(tmp_path / "one", "Qwen", 0.0, METHODS, rng, personas=1)
    md = bench_report(one).markdown.read_text()
    garden = md[md.index("## Task `garden`"):]
    line = next(x for x in garden.splitlines() if "| VPRAG |" in x)
    cells = [c.strip() for c in line.split("|")]
    assert cells[3] == "1" and cells[9] == "n/a" and cells[11] == "n/a"  # n, 95% CI, d
    from vptt.evaluators.bench_report import signed_cohens_d_matrix

    names, d = signed_cohens_d_matrix({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0, 4.0], "c": [5.0]})
    assert d[0, 1] == pytest.approx(-1.0) and d[1, 0] == pytest.approx(1.0) and np.allclose(d, -d.T, equal_nan=True)
