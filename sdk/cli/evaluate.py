"""``vptt evaluate``: personas x tasks x methods -> prompts, VPTT scores, tables and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from vptt.sdk.cli._common import cli_errors, personalizer

console = Console()
err = Console(stderr=True)


@cli_errors
def evaluate(out: Path = typer.Option(Path("vptt-eval"), help="Output directory (resumable)."),
             persona: Optional[list[str]] = typer.Option(None, help="Persona id (repeatable; default all)."),
             task: Optional[list[str]] = typer.Option(None, help="Preset name, name=query or name:editing=query "
                                                      "(repeatable; default: the paper's four tasks)."),
             methods: str = typer.Option("baseline,persona_only,brag,vprag,comb", help="Comma-separated methods."),
             three_phrase: bool = typer.Option(False, help="The paper's three-phrase budget (Q = 3)."),
             as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON.")) -> None:
    """Personalize and score personas x tasks x methods; write rows.jsonl, report.md and plots."""
    from vptt.agents.tasks import PAPER_TABLE3
    from vptt.agents.vprag import VPRAGConfig
    from vptt.sdk.evaluate import evaluate as run_evaluation

    pz = personalizer()
    config = VPRAGConfig(tau=pz.config.tau, per_category_budget=pz.config.per_category_budget,
                         three_phrase=three_phrase)
    run = run_evaluation(pz, out, personas=persona or None, tasks=task or PAPER_TABLE3,
                         methods=[m.strip() for m in methods.split(",") if m.strip()], config=config)
    if as_json:
        print(run.model_dump_json(indent=2))
        return
    console.print((out / "report.md").read_text())
    console.print(f"{run.rows_written} rows written ({run.rows_resumed} resumed) in {run.seconds:.1f} s "
                  f"({run.prompts_per_s} prompts/s); plots: {', '.join(run.plots)}")


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the root app."""
    app.command()(evaluate)
