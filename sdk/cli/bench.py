"""``vptt bench run`` and ``vptt bench report``.

``register_bench(bench_app)`` adds both commands to the ``bench`` sub-app. Store and embedder settings come
from the root options (``vptt --chroma-host H --chroma-port P bench run ...``) or ``VPTT_*`` variables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console

from vptt.sdk.cli import _llm
from vptt.sdk.cli._common import cli_errors, parse_pairs, quiet
from vptt.sdk.cli._common import settings as cli_settings

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err = Console(stderr=True)
DEFAULT_METHODS = "baseline,persona_only,brag,vprag,comb"


def run(input: Optional[Path] = typer.Argument(None, exists=True, dir_okay=False,  # noqa: A002
                                               help="Persona JSONL to ingest first (idempotent); default: "
                                                    "the personas already in the store."),
        out: Path = typer.Option(Path("vptt-bench"), "--out", "-o", help="Output directory (resumable)."),
        persona: Optional[list[str]] = typer.Option(None, help="Persona id (repeatable; default all)."),
        task: Optional[list[str]] = typer.Option(None, help="Preset, name=query or name:editing=query "
                                                 "(repeatable; default: the paper's four tasks)."),
        methods: str = typer.Option(DEFAULT_METHODS, help="Comma-separated methods."),
        three_phrase: bool = typer.Option(False, help="The paper's three-phrase budget (Q = 3)."),
        seed: int = typer.Option(0, help="Run seed; per-row seeds derive from it (sha256)."),
        backend: str = typer.Option("local", help="local (this process) or ray."),
        workers: int = typer.Option(2, help="Ray workers (actors, one CPU each)."),
        address: Optional[str] = typer.Option(None, help="Ray cluster address (ray://HOST:10001 or auto); "
                                              "default starts a local Ray."),
        working_dir: Optional[Path] = typer.Option(None, help="Ray runtime_env working_dir (for a cluster)."),
        shard_size: Optional[int] = typer.Option(None, help="Personas per Ray task."),
        gpus_per_worker: float = typer.Option(0.0, help="GPUs each Ray worker reserves (image generators)."),
        generator: Optional[str] = typer.Option(None, help="Image generator: diffusers, openai or "
                                                "module:factory (default: text only)."),
        generator_option: list[str] = typer.Option([], help="KEY=VALUE for the generator (repeatable)."),
        image_metric: list[str] = typer.Option([], help="NAME=module:factory (repeatable)."),
        judge: Optional[str] = typer.Option(None, help="vlm (the paper's VLM judge; model and endpoint from "
                                            "--judge-option or VPTT_JUDGE_*) or module:factory."),
        judge_option: list[str] = typer.Option([], help="KEY=VALUE for the judge (repeatable), e.g. "
                                               "model=gpt-4o, base_url=URL."),
        judge_posts: str = typer.Option("matched", help="Profile canvas posts: matched (the 10 captions "
                                        "closest to the judged prompts) or first (the first 10)."),
        task_image: list[str] = typer.Option([], help="NAME=PATH: the shared input image of editing task "
                                             "NAME (repeatable; needed with --generator)."),
        judge_calibration: Optional[Path] = typer.Option(
            None, exists=True, dir_okay=False, help="Saved judge calibration (JSON) for the report."),
        composer: str = _llm.COMPOSER, llm_base_url: Optional[str] = _llm.LLM_BASE_URL,
        llm_model: Optional[str] = _llm.LLM_MODEL, llm_preset: Optional[str] = _llm.LLM_PRESET,
        temperature: Optional[float] = _llm.TEMPERATURE, top_p: Optional[float] = _llm.TOP_P,
        max_tokens: Optional[int] = _llm.MAX_TOKENS,
        llm_seed: Optional[int] = typer.Option(None, "--llm-seed", help="LLM sampling seed (overrides the preset; "
                                               "default 42; --seed is the run's seed)."),
        llm_concurrency: Optional[int] = _llm.CONCURRENCY, llm_rpm: Optional[float] = _llm.RPM,
        llm_tpm: Optional[float] = _llm.TPM, llm_timeout: Optional[float] = _llm.TIMEOUT,
        llm_cache: Optional[bool] = _llm.CACHE,
        report: bool = typer.Option(True, help="Write the report (HTML, Markdown, plots) at the end."),
        progress: bool = typer.Option(True, help="Progress bar with ETA on stderr."),
        as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON.")) -> None:
    """Personas x tasks x methods -> rows.jsonl (+ images); continues an interrupted run in --out."""
    from vptt.agents.tasks import PAPER_TABLE3
    from vptt.agents.vprag import VPRAGConfig
    from vptt.sdk.bench import BenchRecipe, run_bench

    settings = cli_settings()
    llm = _llm.llm_config(settings, composer=composer, base_url=llm_base_url, model=llm_model, preset=llm_preset,
                          temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=llm_seed,
                          concurrency=llm_concurrency, rpm=llm_rpm, tpm=llm_tpm, timeout=llm_timeout,
                          cache=llm_cache)
    recipe = BenchRecipe(settings=settings, generator=generator,
                         generator_options=parse_pairs(generator_option, "--generator-option"),
                         image_metrics=parse_pairs(image_metric, "--image-metric"), judge=judge,
                         judge_options=parse_pairs(judge_option, "--judge-option"), llm=llm)
    images = {k: str(v) for k, v in parse_pairs(task_image, "--task-image").items()}
    config = VPRAGConfig(tau=settings.tau, per_category_budget=settings.per_category_budget,
                         three_phrase=three_phrase)
    result = run_bench(recipe, out, personas=persona or None, tasks=task or PAPER_TABLE3,
                       methods=[m.strip() for m in methods.split(",") if m.strip()], config=config, seed=seed,
                       backend=backend, workers=workers, address=address,  # type: ignore[arg-type]
                       runtime_env={"working_dir": str(working_dir), "excludes": [".venv", ".git", ".vptt"]}
                       if working_dir else None,
                       shard_size=shard_size, gpus_per_worker=gpus_per_worker, ingest=input,
                       task_images=images, judge_posts=judge_posts,  # type: ignore[arg-type]
                       progress=progress and not quiet())
    html = None
    if report:
        from vptt.evaluators.bench_report import bench_report

        html = str(bench_report(out, judge_calibration=judge_calibration).html)
    if as_json:
        print(json.dumps({**result.model_dump(), "report": html}, indent=2))
        return
    console.print(f"{result.rows_written} rows written ({result.rows_resumed} resumed, "
                  f"{result.rows_total} in all) for {result.personas_computed} personas in "
                  f"{result.seconds:.1f} s ({result.rows_per_s} rows/s, backend {result.backend}, "
                  f"{result.workers} worker(s))")
    if result.llm:
        x = result.llm
        console.print(f"LLM: {x['calls']} completions bought, {x['cache_hits']} from the cache; tokens in "
                      f"{x['tokens_in']}, out {x['tokens_out']}")
    if html:
        console.print(f"report: {html}")


def report(run_dir: list[Path] = typer.Argument(..., exists=True, file_okay=False,
                                              help="One or more `bench run` (or `evaluate`) directories; "
                                                   "runs made with different LLMs merge into Table 3's layout."),
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report dir (default RUN/report; "
                                              "vptt-report for several runs)."),
           label: Optional[list[str]] = typer.Option(None, help="Table label per run, in order (default: each "
                                                     "run's LLM label or model)."),
           map_method: str = typer.Option("pca", "--map", help="Persona map projection: pca or tsne."),
           prompts_personas: int = typer.Option(200, help="How many personas' prompts the HTML lists."),
           title: str = typer.Option("VPTT-Bench report", help="Report title."),
           judge_calibration: Optional[Path] = typer.Option(
               None, exists=True, dir_okay=False,
               help="Saved judge calibration (JSON): calibrated VLM columns."),
           as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON.")) -> None:
    """Paper-style tables (Table 3, Tables 7-10), plots and a self-contained HTML page for bench runs."""
    from vptt.evaluators.bench_report import bench_report

    rep = bench_report(run_dir, out, map_method=map_method, title=title, labels=label or None,  # type: ignore[arg-type]
                       prompts_personas=prompts_personas, judge_calibration=judge_calibration)
    if as_json:
        print(json.dumps({"html": str(rep.html), "markdown": str(rep.markdown),
                          "plots": [str(p) for p in rep.plots], "rows": rep.rows, "personas": rep.personas,
                          "map_method": rep.map_method, "runs": rep.runs}, indent=2))
        return
    console.print(f"{rep.rows} rows of {rep.personas} personas from {len(rep.runs)} run(s) "
                  f"({', '.join(rep.runs)})")
    console.print(f"HTML: {rep.html}\nMarkdown: {rep.markdown}\nplots: {', '.join(map(str, rep.plots))}")


def register_bench(bench_app: typer.Typer) -> None:
    """Add ``run`` and ``report`` to the ``bench`` sub-app."""
    bench_app.command("run")(cli_errors(run))
    bench_app.command("report")(cli_errors(report))
