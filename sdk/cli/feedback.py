"""`vptt feedback data|train|eval`: the learnable feedback re-ranker's data, training and evaluation."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import typer

from vptt.core.errors import ConfigError, VPTTError
from vptt.sdk.cli._common import EXIT_REJECTED, cli_errors

if TYPE_CHECKING:
    from vptt.evaluators.feedback import EpochStats, FeedbackMetrics
    from vptt.evaluators.feedback_llm import LLMDataConfig, LLMDataGenerator
    from vptt.stores.embedders import Embedder

F = TypeVar("F", bound=Callable[..., Any])


def _build_embedder() -> Embedder:
    """The embedder from ``VPTT_*`` settings (MiniLM by default, with the on-disk cache); a seam for tests."""
    from vptt.core.settings import VPTTSettings
    from vptt.stores.factory import build_embedder

    return build_embedder(VPTTSettings())


def _build_generator(config: LLMDataConfig) -> LLMDataGenerator:
    """The LLM data generator (a seam for tests, which pass their own HTTP client)."""
    from vptt.evaluators.feedback_llm import LLMDataGenerator

    return LLMDataGenerator(config)


def plot_loss_curve(history: Sequence[EpochStats], path: str | os.PathLike[str], best_epoch: int | None = None
                    ) -> Path:
    """Save train/validation MSE per epoch as a PNG (matplotlib's Agg canvas; no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = [h.epoch for h in history]
    ax.plot(epochs, [h.train_loss for h in history], label="train MSE")
    ax.plot(epochs, [h.val_loss for h in history], label="validation MSE")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title("Feedback re-ranker training")
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ConfigError(f"--splits must be three comma-separated fractions like 0.65,0.10,0.25, "
                          f"got {text!r}")
    return parts  # type: ignore[return-value]


def _personas(path: Path) -> dict[str, Any]:
    from vptt.core.personas import load_personas

    return {p.persona_id: p for p in load_personas(path)}


def _metrics_table(rows: Sequence[tuple[str, FeedbackMetrics]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("split", "n", "accuracy", "MAE", "MSE", "aligned acc.", "const. acc.", "const. MAE"):
        table.add_column(col, justify="right")
    for name, m in rows:
        table.add_row(name, str(m.n), f"{m.accuracy:.1%}", f"{m.mae:.4f}", f"{m.mse:.4f}",
                      f"{m.aligned_accuracy:.1%}", f"{m.constant_accuracy:.1%}", f"{m.constant_mae:.4f}")
    Console().print(table)


def _metrics_doc(rows: Sequence[tuple[str, FeedbackMetrics]]) -> dict[str, Any]:
    from dataclasses import asdict

    from vptt.evaluators.feedback import val_test_gap

    doc: dict[str, Any] = {name: asdict(m) for name, m in rows}
    found = dict(rows)
    if "val" in found and "test" in found:
        doc["val_test_gap"] = val_test_gap(found["val"], found["test"])
    return doc


def _load_split_examples(data: Path) -> list[Any]:
    from vptt.evaluators.feedback_data import read_examples, with_splits

    examples = read_examples(data)
    if not examples:
        raise ConfigError(f"{data} holds no examples; make some with `vptt feedback data`")
    missing = sum(e.split is None for e in examples)
    if missing == len(examples):
        typer.echo("note: the data has no splits; assigning the paper's 65/10/25 profile-level splits")
        return with_splits(examples)
    if missing:
        raise ConfigError(f"{missing} example(s) have no split while others do; re-make the file with "
                          "`vptt feedback data` or give every example a split")
    return examples


def _data(personas: Path, out: Path, source: str, config: LLMDataConfig, splits: str, strict: bool) -> None:
    from vptt.evaluators.feedback_data import synthetic_examples, with_splits, write_examples

    fractions = _fractions(splits)
    people = list(_personas(personas).values())
    failures: list[Any] = []
    if source == "synthetic":
        typer.echo("note: synthetic data is an OFFLINE STAND-IN for tests and demos, not the paper's recipe")
        examples = synthetic_examples(people, n_aligned=config.n_aligned, n_misaligned=config.n_misaligned,
                                      n_neutral=config.n_neutral, seed=config.seed or 0)
    elif source == "llm":
        def progress(persona: Any, failure: Any) -> None:
            typer.echo(f"{persona.persona_id}: " + ("ok" if failure is None else
                                                    f"FAILED after {failure.attempts} attempt(s)"), err=True)

        report = _build_generator(config).generate(people, on_persona=progress)
        examples, failures = report.examples, report.failures
    else:
        raise ConfigError(f"--source must be 'llm' or 'synthetic', got {source!r}")
    if not examples:
        typer.echo(f"error: no labelled example was produced ({len(failures)} of {len(people)} persona(s) "
                   "failed); nothing written", err=True)
        raise typer.Exit(EXIT_REJECTED)
    n = write_examples(out, with_splits(examples, fractions))
    typer.echo(f"wrote {n} examples for {len(people) - len(failures)} persona(s) to {out}")
    if failures:
        bad = out.with_name(out.stem + ".failures.jsonl")
        bad.write_text("".join(f.model_dump_json() + "\n" for f in failures), encoding="utf-8")
        typer.echo(f"warning: {len(failures)} persona(s) got malformed replies; reported in {bad}", err=True)
        if strict:
            raise typer.Exit(1)


def _train(data: Path, personas: Path, out: Path, settings: dict[str, Any], threads: Optional[int],
           plot: Optional[Path], as_json: bool) -> None:
    from vptt.evaluators.feedback import FeedbackConfig, evaluate, train_feedback
    from vptt.evaluators.feedback_data import featurize, split_arrays

    examples = _load_split_examples(data)
    embedder = _build_embedder()
    cfg = FeedbackConfig(profile_dim=embedder.dim, prompt_dim=embedder.dim, embedder=embedder.name,
                         **settings)
    arrays = featurize(examples, _personas(personas), embedder, max_profile_tokens=cfg.max_profile_tokens,
                       max_prompt_tokens=cfg.max_prompt_tokens)
    parts = split_arrays(examples, arrays)
    typer.echo(f"train/val/test examples: {len(parts['train'])}/{len(parts['val'])}/{len(parts['test'])} "
               f"(embedder {embedder.name}, {embedder.dim}-d)", err=True)

    def progress(s: Any) -> None:
        typer.echo(f"epoch {s.epoch:3d}/{cfg.max_epochs}  train MSE {s.train_loss:.4f}  "
                   f"val MSE {s.val_loss:.4f}  val MAE {s.val_mae:.4f}  ({s.seconds:.2f} s)", err=True)

    result = train_feedback(parts["train"], parts["val"], cfg, on_epoch=progress, threads=threads)
    rows = [(name, evaluate(result.model, parts[name])) for name in ("val", "test") if len(parts[name])]
    metrics = _metrics_doc(rows)
    weak = _warn_if_no_better_than_constant(rows)
    metrics["no_better_than_constant"] = weak
    result.model.meta = {"data": str(data), "best_epoch": result.best_epoch,
                         "stopped_early": result.stopped_early,
                         "seconds_per_epoch": result.seconds_per_epoch, "metrics": metrics,
                         "history": [vars(h) for h in result.history],
                         "examples": {k: len(v) for k, v in parts.items()}}
    result.model.save(out)
    curve = plot_loss_curve(result.history, plot or out / "loss_curve.png", result.best_epoch)
    if as_json:
        typer.echo(json.dumps({"model": str(out), "loss_curve": str(curve), **result.model.meta}, indent=2))
        return
    _metrics_table(rows, f"Feedback re-ranker (best epoch {result.best_epoch} of {len(result.history)})")
    if "val_test_gap" in metrics:
        typer.echo(f"validation-test accuracy gap: {metrics['val_test_gap']:+.1%}")
    typer.echo(f"saved the model to {out}; loss curve {curve}")


def _warn_if_no_better_than_constant(rows: Sequence[tuple[str, FeedbackMetrics]]) -> list[str]:
    """Splits where the model does not beat the constant predictor, each announced on stderr."""
    weak = [name for name, m in rows if not m.beats_constant]
    for name, m in rows:
        if name in weak:
            typer.secho(f"WARNING: on the {name} split the model is NO BETTER than a constant predictor "
                        f"(MSE {m.mse:.4f} vs {m.constant_mse:.4f}, accuracy {m.accuracy:.1%} vs "
                        f"{m.constant_accuracy:.1%}); it has not learned a persona-aware signal - more or "
                        "more varied training personas are needed before using it to re-rank.",
                        err=True, fg="yellow", bold=True)
    return weak


def _eval(model_dir: Path, data: Path, personas: Path, split: str, allow_mismatch: bool,
          as_json: bool) -> None:
    from vptt.evaluators.feedback import FeedbackModel, evaluate
    from vptt.evaluators.feedback_data import SPLITS, featurize, split_arrays

    if split not in (*SPLITS, "all"):
        raise ConfigError(f"--split must be one of train, val, test, all; got {split!r}")
    model = FeedbackModel.load(model_dir)
    embedder = _build_embedder()
    cfg = model.config
    if cfg.embedder and embedder.name != cfg.embedder and not allow_mismatch:
        raise ConfigError(f"the model was trained with embedder {cfg.embedder!r} but {embedder.name!r} is "
                          "configured; set VPTT_EMBEDDER/VPTT_EMBEDDER_MODEL to match")
    examples = _load_split_examples(data)
    arrays = featurize(examples, _personas(personas), embedder, max_profile_tokens=cfg.max_profile_tokens,
                       max_prompt_tokens=cfg.max_prompt_tokens)
    parts = split_arrays(examples, arrays)
    names = [s for s in SPLITS if len(parts[s])] if split == "all" else [split]
    rows = [(name, evaluate(model, parts[name])) for name in names]
    doc = _metrics_doc(rows)
    doc["no_better_than_constant"] = _warn_if_no_better_than_constant(rows)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    _metrics_table(rows, f"Feedback re-ranker {model_dir}")
    if "val_test_gap" in doc:
        typer.echo(f"validation-test accuracy gap: {doc['val_test_gap']:+.1%}")


def register(app: typer.Typer) -> None:
    """Add the ``feedback`` sub-app (``data``, ``train``, ``eval``) to ``app``."""
    fb = typer.Typer(help="Learnable feedback re-ranker (paper Sec. 3.3): make data, train, evaluate.",
                     no_args_is_help=True)
    app.add_typer(fb, name="feedback")

    @fb.command("data")
    @cli_errors
    def data_cmd(
        personas: Path = typer.Option(..., "--personas", help="Persona JSONL."),
        out: Path = typer.Option(..., "--out", help="Labelled examples JSONL to write."),
        source: str = typer.Option("llm", "--source",
                                   help="llm (the paper's recipe) or synthetic (offline stand-in)."),
        model: str = typer.Option("gpt-4o", "--model", help="Chat model name."),
        base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint URL."),
        api_key: Optional[str] = typer.Option(None, "--api-key", envvar=["VPTT_LLM_API_KEY", "OPENAI_API_KEY"],
                                              show_default=False, help="Else OPENAI_API_KEY."),
        temperature: float = typer.Option(0.7, "--temperature"),
        seed: int = typer.Option(42, "--seed"),
        n_aligned: int = typer.Option(20, "--n-aligned"),
        n_misaligned: int = typer.Option(20, "--n-misaligned"),
        n_neutral: int = typer.Option(10, "--n-neutral"),
        retries: int = typer.Option(2, "--retries", help="Re-asks on a malformed reply."),
        splits: str = typer.Option("0.65,0.10,0.25", "--splits", help="train,val,test persona fractions."),
        strict: bool = typer.Option(False, "--strict", help="Exit 1 if any persona failed."),
    ) -> None:
        """Label prompts per persona (20 aligned, 20 misaligned, 10 neutral) with profile-level splits."""
        from vptt.evaluators.feedback_llm import LLMDataConfig

        config = LLMDataConfig(model=model, base_url=base_url, api_key=api_key, temperature=temperature,
                               seed=seed, n_aligned=n_aligned, n_misaligned=n_misaligned, n_neutral=n_neutral,
                               malformed_retries=retries)
        _data(personas, out, source, config, splits, strict)

    @fb.command("train")
    @cli_errors
    def train_cmd(
        data: Path = typer.Option(..., "--data", help="Labelled examples JSONL."),
        personas: Path = typer.Option(..., "--personas", help="Persona JSONL the data was made from."),
        out: Path = typer.Option(..., "--out", help="Model directory to write."),
        max_epochs: int = typer.Option(200, "--max-epochs"),
        patience: int = typer.Option(10, "--patience"),
        batch_size: int = typer.Option(64, "--batch-size"),
        lr: float = typer.Option(1e-3, "--lr"),
        weight_decay: float = typer.Option(0.05, "--weight-decay"),
        dropout: float = typer.Option(0.2, "--dropout"),
        hidden: int = typer.Option(128, "--hidden"),
        heads: int = typer.Option(4, "--heads"),
        query_side: str = typer.Option("profile", "--query-side", help="profile (paper) or prompt."),
        max_profile_tokens: int = typer.Option(33, "--max-profile-tokens", help="Card + up to N-1 captions."),
        max_prompt_tokens: int = typer.Option(1, "--max-prompt-tokens", help="Prompt + up to N-1 clauses."),
        seed: int = typer.Option(0, "--seed"),
        threads: Optional[int] = typer.Option(1, "--threads", help="torch CPU threads (1 is fastest here)."),
        plot: Optional[Path] = typer.Option(None, "--plot",
                                            help="Loss-curve PNG (default OUT/loss_curve.png)."),
        as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
    ) -> None:
        """Train the cross-attention feedback model; report accuracy, MAE, aligned accuracy, val-test gap."""
        settings = {"max_epochs": max_epochs, "patience": patience, "batch_size": batch_size, "lr": lr,
                    "weight_decay": weight_decay, "dropout": dropout, "hidden": hidden, "heads": heads,
                    "query_side": query_side, "max_profile_tokens": max_profile_tokens,
                    "max_prompt_tokens": max_prompt_tokens, "seed": seed}
        try:
            _train(data, personas, out, settings, threads, plot, as_json)
        except ValueError as exc:
            if isinstance(exc, VPTTError):
                raise
            raise ConfigError(str(exc)) from None

    @fb.command("eval")
    @cli_errors
    def eval_cmd(
        model_dir: Path = typer.Option(..., "--model", help="Model directory from `vptt feedback train`."),
        data: Path = typer.Option(..., "--data", help="Labelled examples JSONL."),
        personas: Path = typer.Option(..., "--personas", help="Persona JSONL."),
        split: str = typer.Option("test", "--split", help="train, val, test or all."),
        allow_mismatch: bool = typer.Option(False, "--allow-embedder-mismatch"),
        as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
    ) -> None:
        """Evaluate a trained model: binned accuracy, MAE, accuracy on aligned, validation-test gap."""
        _eval(model_dir, data, personas, split, allow_mismatch, as_json)
