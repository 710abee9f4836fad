"""``vptt evaluate``: personas x tasks x methods -> prompts, VPTT scores, tables and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from vptt.sdk.cli import _llm
from vptt.sdk.cli._common import cli_errors, personalizer, quiet

console = Console()
err = Console(stderr=True)


@cli_errors
def evaluate(out: Path = typer.Option(Path("vptt-eval"), help="Output directory (resumable)."),
             persona: Optional[list[str]] = typer.Option(None, help="Persona id (repeatable; default all)."),
             task: Optional[list[str]] = typer.Option(None, help="Preset name, name=query or name:editing=query "
                                                      "(repeatable; default: the paper's four tasks)."),
             methods: str = typer.Option("baseline,persona_only,brag,vprag,comb", help="Comma-separated methods."),
             three_phrase: bool = typer.Option(False, help="The paper's three-phrase budget (Q = 3)."),
             composer: str = _llm.COMPOSER, llm_base_url: Optional[str] = _llm.LLM_BASE_URL,
             llm_model: Optional[str] = _llm.LLM_MODEL, llm_preset: Optional[str] = _llm.LLM_PRESET,
             temperature: Optional[float] = _llm.TEMPERATURE, top_p: Optional[float] = _llm.TOP_P,
             max_tokens: Optional[int] = _llm.MAX_TOKENS,
             seed: Optional[int] = typer.Option(None, "--seed", "--llm-seed",
                                                help="LLM sampling seed (overrides the preset; default 42)."),
             llm_concurrency: Optional[int] = _llm.CONCURRENCY, llm_rpm: Optional[float] = _llm.RPM,
             llm_tpm: Optional[float] = _llm.TPM, llm_timeout: Optional[float] = _llm.TIMEOUT,
             llm_cache: Optional[bool] = _llm.CACHE,
             progress: bool = typer.Option(True, help="Progress bar with ETA on stderr."),
             as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON.")) -> None:
    """Personalize and score personas x tasks x methods; write rows.jsonl, report.md and plots."""
    from vptt.agents.tasks import PAPER_TABLE3
    from vptt.agents.vprag import VPRAGConfig
    from vptt.sdk.evaluate import evaluate as run_evaluation

    pz = personalizer()
    cfg = _llm.llm_config(pz.settings, composer=composer, base_url=llm_base_url, model=llm_model,
                          preset=llm_preset, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                          seed=seed, concurrency=llm_concurrency, rpm=llm_rpm, tpm=llm_tpm, timeout=llm_timeout,
                          cache=llm_cache)
    comp = None
    if cfg is not None:
        from vptt.agents.llm_composer import LLMComposer

        comp = LLMComposer(cfg)
    config = VPRAGConfig(tau=pz.config.tau, per_category_budget=pz.config.per_category_budget,
                         three_phrase=three_phrase)
    run = run_evaluation(pz, out, personas=persona or None, tasks=task or PAPER_TABLE3,
                         methods=[m.strip() for m in methods.split(",") if m.strip()], config=config,
                         composer=comp, progress=progress and not quiet())
    if as_json:
        print(run.model_dump_json(indent=2))
        return
    print_summary(run)


def print_summary(run: Any) -> None:
    """A few lines: what was written, LLM figures, mean scores per method, and where the report is."""
    from vptt.core.resultlog import ResultLog
    from vptt.evaluators.report import method_means
    from vptt.sdk.evaluate import row_key

    console.print(f"{run.rows_written} rows written ({run.rows_resumed} resumed, {run.rows_total} in all) in "
                  f"{run.seconds:.1f} s ({run.prompts_per_s} rows/s)")
    if run.llm:
        x = run.llm
        console.print(f"LLM: {x['calls']} completions bought, {x['cache_hits']} from the cache; tokens in "
                      f"{x['tokens_in']}, out {x['tokens_out']}")
    means = method_means(ResultLog(Path(run.rows_path), row_key).rows())
    if means:
        table = Table(title="mean over personas and tasks", title_justify="left")
        table.add_column("")
        for m in means:
            table.add_column(m, justify="right")
        for key, label in (("score_c", "VPTT_score-c"), ("score", "VPTT_score"), ("n", "n")):
            table.add_row(label, *(f"{v[key]:.3f}" if key != "n" else str(v[key]) for v in means.values()))
        console.print(table)
    html = Path(run.report_path).with_suffix(".html")
    console.print(f"report: {run.report_path}" + (f" and {html}" if html.exists() else ""), soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the root app."""
    app.command()(evaluate)
