"""``vptt validate``: human ratings against bench runs (the paper's Q1: Table 1, Kendall's W, rho, Top-2).

``register(app)`` adds the command to the root app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from vptt.core.errors import RatingsValidationError
from vptt.sdk.cli._common import cli_errors

console = Console()
err = Console(stderr=True, soft_wrap=True)


def validate(
    ratings: list[Path] = typer.Argument(..., exists=True, dir_okay=False,
                                         help="Ratings files (.jsonl or .csv; see docs/validation.md)."),
    run: list[str] = typer.Option(..., "--run", help="A `vptt bench run` directory, as LLM=DIR or DIR "
                                  "(repeatable: one per rewriting LLM)."),
    out: Path = typer.Option(Path("vptt-validation"), "--out", "-o",
                             help="Output directory: validation.md, validation.json (and the calibration)."),
    calibration_fraction: Optional[float] = typer.Option(
        None, help="Fit a judge calibration on this share of personas (chosen by sha256 of --seed and id) "
                   "and hold them out."),
    calibration_personas: Optional[str] = typer.Option(
        None, help="Fit a judge calibration on these personas (comma-separated ids, or @FILE with one per "
                   "line) and hold them out."),
    save_calibration: Optional[Path] = typer.Option(
        None, help="Where to write a fitted calibration (default OUT/judge_calibration.json)."),
    judge_calibration: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False,
        help="Apply a saved judge calibration (its personas are held out)."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the confidence intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and of the calibration subset."),
    level: float = typer.Option(0.95, help="Confidence level of the intervals."),
    allow_unmatched: bool = typer.Option(False, help="Drop ratings without a bench row instead of failing."),
    ignore_extra_fields: bool = typer.Option(False, help="Ignore unknown fields/columns in ratings files."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of Markdown."),
) -> None:
    """Join human RATINGS with bench runs; write Table 1, Kendall's W, Spearman rho and Top-2 agreement."""
    from vptt.evaluators.calibration import JudgeCalibration
    from vptt.evaluators.ratings import load_ratings
    from vptt.evaluators.validation import load_run, validate, validation_markdown

    try:
        rated = load_ratings(ratings, extra="ignore" if ignore_extra_fields else "forbid")
    except RatingsValidationError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    named = _persona_list(calibration_personas) if calibration_personas else None
    cal_in = JudgeCalibration.load(judge_calibration) if judge_calibration is not None else None
    try:
        report, cal = validate(rated, [load_run(spec) for spec in run], calibration=cal_in,
                               calibration_fraction=calibration_fraction, calibration_personas=named,
                               n_boot=bootstrap, seed=seed, level=level, allow_unmatched=allow_unmatched)
    except RatingsValidationError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    out.mkdir(parents=True, exist_ok=True)
    md = validation_markdown(report)
    (out / "validation.md").write_text(md)
    (out / "validation.json").write_text(report.model_dump_json(indent=2))
    saved = None
    if cal is not None and cal_in is None:
        saved = cal.save(save_calibration or out / "judge_calibration.json")
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    console.print(md, markup=False, highlight=False)
    console.print(f"written: {out / 'validation.md'}, {out / 'validation.json'}"
                  + (f", judge calibration {saved}" if saved else ""))


def _persona_list(spec: str) -> list[str]:
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise FileNotFoundError(f"persona list not found: {path}")
        return [x.strip() for x in path.read_text().splitlines() if x.strip()]
    return [x.strip() for x in spec.split(",") if x.strip()]


def register(app: typer.Typer) -> None:
    """Add ``validate`` to the root app."""
    app.command("validate")(cli_errors(validate))
