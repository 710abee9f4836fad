"""The ``vptt`` command line (typer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console

from vptt.core.errors import ConfigError
from vptt.core.settings import VPTTSettings
from vptt.data import SAMPLE_PERSONAS
from vptt.sdk.cli._common import (
    EXIT_CODES_HELP,
    cli_errors,
    configure_output,
    fail,
    personalizer,
    quiet,
    set_settings,
)

app = typer.Typer(help="vptt: persona-aware visual personalization (VPRAG, VPTT score, evaluators).",
                  epilog=EXIT_CODES_HELP, no_args_is_help=True, pretty_exceptions_enable=False)
score_app = typer.Typer(help="Image-level evaluators (MaSC, FPR, Stellar, CLIP/DINO, VLM judge).",
                        no_args_is_help=True)
bench_app = typer.Typer(help="VPTT-Bench: generate persona banks, run benchmarks, report.", no_args_is_help=True)
app.add_typer(score_app, name="score")
app.add_typer(bench_app, name="bench")

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _version(value: bool) -> None:
    if value:
        from vptt.core.version import __version__

        print(f"vptt {__version__}")
        raise typer.Exit()


@app.callback()
def main(ctx: typer.Context,
         data_dir: Optional[Path] = typer.Option(
             None, help="Data directory (default: $VPTT_DATA_DIR, else the per-user data directory)."),
         store: Optional[str] = typer.Option(None, help="chroma (default) or memory."),
         chroma_host: Optional[str] = typer.Option(None, help="Use a Chroma server at this host."),
         chroma_port: Optional[int] = typer.Option(None, help="Port of the Chroma server."),
         device: Optional[str] = typer.Option(None, help="Encoder device: cpu, cuda, cuda:N or mps."),
         embedder_backend: Optional[str] = typer.Option(
             None, help="MiniLM engine: auto (ONNX on CPU, torch on GPU), torch, onnx or onnx-int8."),
         embed_workers: Optional[int] = typer.Option(
             None, help="Encoder processes (0: one per core); threads are split among them."),
         quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes; results and errors only."),
         log_level: str = typer.Option("warning", "--log-level", help="debug, info, warning or error."),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Options shared by every command (each also readable from VPTT_* environment variables)."""
    overrides = {k: v for k, v in {"data_dir": data_dir, "store": store, "chroma_host": chroma_host,
                                   "chroma_port": chroma_port, "device": device,
                                   "embedder_backend": embedder_backend,
                                   "embed_workers": embed_workers}.items() if v is not None}
    try:
        ctx.call_on_close(configure_output(quiet=quiet, log_level=log_level))
        set_settings(VPTTSettings(**overrides))
    except ConfigError as exc:
        fail(exc)


@app.command()
@cli_errors
def ingest(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Persona JSONL file."),
           on_error: str = typer.Option("raise", help="raise: stop at the first bad line; skip: load the rest."),
           backend: str = typer.Option("local", help="local: embed in this process on all cores; ray: Ray "
                                                     "workers embed, this process writes."),
           workers: int = typer.Option(2, help="Ray workers (--backend ray)."),
           ray_address: Optional[str] = typer.Option(None, help="A running Ray cluster (default: start Ray here)."),
           device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N or mps for the local model "
                                                          "(default: VPTT_DEVICE)."),
           gpus_per_worker: float = typer.Option(0.0, help="GPUs per Ray worker (with --device cuda)."),
           threads: Optional[int] = typer.Option(None, help="Torch threads per worker (default: cores / workers)."),
           batch_texts: Optional[int] = typer.Option(None, help="New texts per write batch (default 4096).")
           ) -> None:
    """Validate FILE and upsert its personas (idempotent: re-ingesting changes nothing).

    Each unique text is embedded once and stored once; the next batch embeds while the previous one is written.
    """
    from vptt.sdk.cli._ingest import run_ingest

    run_ingest(file, on_error=on_error, backend=backend, workers=workers, ray_address=ray_address, device=device,
               gpus_per_worker=gpus_per_worker, threads=threads, batch_texts=batch_texts, console=console, err=err)


DEMO_QUERIES = [
    ("p01_kyoto_ceramicist", "A preferred outdoor spot"),
    ("p07_oaxaca_chef", "A photo showing my next social media post with my style and content"),
    ("p05_tromso_fisherman", "A cultural site I would visit on a weekend"),
    ("p21_accra_kente_photographer", "Here is a convention center. Add a preferred event"),
]


@app.command()
@cli_errors
def demo(file: Path = typer.Option(SAMPLE_PERSONAS, help="Persona JSONL to ingest."),
         methods: str = typer.Option("baseline,brag,vprag", help="Comma-separated methods to compare.")) -> None:
    """Ingest the bundled sample personas and personalize a few queries, with traces. Offline."""
    if not file.exists():
        raise FileNotFoundError(f"sample personas not found at {file}; pass --file")
    pz = personalizer()
    console.rule("ingest")
    report = pz.ingest(file, progress=not quiet())
    console.print(f"{file}: created {len(report.created)}, updated {len(report.updated)}, unchanged "
                  f"{len(report.unchanged)}; embedded {report.texts_embedded} texts; store: {pz.store!r}")
    from vptt.sdk.cli._render import render_result

    stored = set(pz.store.list_ids())
    for pid, query in DEMO_QUERIES:
        if pid not in stored:
            continue
        console.rule(f"{pid}: {query}")
        for m in methods.split(","):
            result = pz.personalize(pid, query, method=m.strip())
            render_result(result, console, trace=m.strip() == "vprag")


def _register_groups() -> None:
    """Command groups that live in their own modules of this package."""
    from vptt.sdk.cli import (
        bench,
        evaluate,
        feedback,
        generate,
        personalize,
        personas,
        score_clip,
        score_fpr,
        score_judge,
        score_masc,
        score_stellar,
        serve,
        store,
        validate,
    )

    personalize.register(app)
    serve.register(app)
    evaluate.register(app)
    app.add_typer(personas.personas_app, name="personas")
    app.add_typer(store.store_app, name="store")
    for module in (score_masc, score_fpr, score_clip, score_stellar, score_judge):
        module.register(score_app)
    feedback.register(app)
    generate.register_bench(bench_app)
    generate.register_root(app)
    bench.register_bench(bench_app)
    validate.register(app)


_register_groups()
