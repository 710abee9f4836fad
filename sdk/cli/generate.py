"""``vptt bench generate`` and ``vptt ingest-photos``.

``register_bench(bench_app)`` adds ``generate`` to an existing ``bench`` sub-app; ``register_root(app)`` adds
``ingest-photos`` to the root app; ``register(app)`` does both, creating the ``bench`` sub-app.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console

from vptt.core.errors import ConfigError
from vptt.sdk.cli._common import cli_errors, parse_pairs, personalizer, plain, quiet

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err = Console(stderr=True)
_KEY_ENV = ["VPTT_LLM_API_KEY", "OPENAI_API_KEY"]


def _chat(model: str, base_url: Optional[str], api_key: Optional[str], json_mode: bool = True) -> Any:
    from vptt.agents.persona_gen.pipeline import JSONChat, LLMConfig

    return JSONChat(LLMConfig(model=model, base_url=base_url, api_key=api_key, json_mode=json_mode))


def generate(
    seeds: Optional[Path] = typer.Argument(None, help="Seed texts: .jsonl ({'persona': ...}) or one a line."),
    out: Path = typer.Option(..., "--out", "-o", help="Output persona JSONL (appended; resumable)."),
    report: Optional[Path] = typer.Option(None, help="Report JSON (default: OUT.report.json)."),
    procedural: int = typer.Option(0, help="Write N offline procedural personas instead (smoke-test data, "
                                           "not LLM-generated; no endpoint needed)."),
    model: str = typer.Option("Qwen/Qwen2.5-72B-Instruct", help="Chat model name."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint, e.g. "
                                                      "http://localhost:8000/v1."),
    api_key: Optional[str] = typer.Option(None, envvar=_KEY_ENV,
                                          help="API key (vLLM accepts any string, e.g. 'EMPTY')."),
    count: Optional[int] = typer.Option(None, help="Number of seeds to use (default: all)."),
    offset: int = typer.Option(0, help="First seed to use."),
    sample: str = typer.Option("sequential", help="sequential, or hash (the paper's hash(i) mod N)."),
    workers: int = typer.Option(1, help="Personas generated at once (threads)."),
    posts: int = typer.Option(30, help="Posts per persona."),
    min_valid_posts: int = typer.Option(10, help="Exclude profiles with fewer valid posts."),
    json_attempts: int = typer.Option(3, help="Attempts per stage when a reply is not usable JSON."),
    json_mode: bool = typer.Option(True, help="Send response_format=json_object."),
    id_prefix: Optional[str] = typer.Option(None, help="Persona id prefix (default vptt_ / proc_)."),
    seed: int = typer.Option(0, help="Seed of the procedural generator."),
    render: str = typer.Option("none", help="Render images with this generator: none, diffusers, openai."),
    render_option: Optional[list[str]] = typer.Option(None, help="Generator option KEY=VALUE (repeatable), "
                                                               "e.g. model=DIR."),
    render_dir: Optional[Path] = typer.Option(None, help="Where rendered images go (default: "
                                                         "OUT's folder/images)."),
    render_mode: str = typer.Option("standard", help="standard or lightning (supplement 10.2 settings)."),
    render_posts: Optional[int] = typer.Option(None, help="Render only the first N posts of each persona."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Generate VPTT-Bench personas (supplement 9) from seed texts through an OpenAI-compatible chat model."""
    from vptt.agents.persona_gen.procedural import PROCEDURAL_LABEL
    from vptt.agents.persona_gen.runner import generate_personas, load_seeds, select_seeds, write_procedural

    if procedural:
        rep = write_procedural(out, procedural, seed=seed, n_posts=posts, id_prefix=id_prefix or "proc_",
                               report_path=report)
        console.print(f"[yellow]{PROCEDURAL_LABEL}[/yellow]: {rep.summary()}")
        return
    if seeds is None:
        raise ConfigError("give a SEEDS file (or --procedural N for offline smoke-test data)")
    if sample not in ("sequential", "hash"):
        raise ConfigError(f"--sample must be sequential or hash, got {sample!r}")
    from vptt.agents.persona_gen.pipeline import GenerationConfig

    texts = load_seeds(seeds)
    indices = select_seeds(len(texts), count, offset=offset, mode=sample)  # type: ignore[arg-type]
    cfg = GenerationConfig(n_posts=posts, min_valid_posts=min_valid_posts, json_attempts=json_attempts,
                           **({"id_prefix": id_prefix} if id_prefix else {}))
    generator = None
    if render != "none":
        from vptt.agents.generators import build_generator

        generator = build_generator(render, **parse_pairs(render_option or [], "--render-option"))
    rep = generate_personas(texts, out, chat=_chat(model, base_url, api_key, json_mode), config=cfg,
                            indices=indices, workers=workers, report_path=report, progress=progress and not quiet(),
                            generator=generator, render_dir=str(render_dir or out.parent / "images"),
                            render_mode=render_mode, render_max_posts=render_posts)
    console.print(rep.summary())
    for ex in rep.excluded:
        err.print(f"[yellow]excluded[/yellow] {plain(ex.persona_id)}: {plain(ex.reason)}")
    if rep.requested and not rep.generated and not rep.skipped_existing:
        raise typer.Exit(1)


def _default_personalizer() -> Any:
    return personalizer()


def register_bench(bench_app: typer.Typer) -> None:
    """Add ``generate`` to the ``bench`` sub-app."""
    bench_app.command("generate")(cli_errors(generate))


def register_root(app: typer.Typer, get_personalizer: Callable[[], Any] | None = None) -> None:
    """Add ``ingest-photos`` to the root app; ``get_personalizer`` gives the Personalizer whose store is used
    (default: the CLI's own, built from the global options)."""
    factory = get_personalizer or _default_personalizer

    @app.command("ingest-photos")
    @cli_errors
    def ingest_photos_cmd(
        directory: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder of your photos."),
        persona: str = typer.Option(..., "--persona", help="Persona id to build or extend."),
        model: str = typer.Option("gpt-4o-mini", help="Vision chat model."),
        text_model: Optional[str] = typer.Option(None, help="Chat model for the profile (default: --model)."),
        base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint."),
        api_key: Optional[str] = typer.Option(None, envvar=_KEY_ENV, help="API key."),
        age: Optional[int] = typer.Option(None, help="The user's age (never inferred from photos)."),
        gender: Optional[str] = typer.Option(None, help="The user's gender, if they want it used."),
        city: Optional[str] = typer.Option(None, help="The user's city."),
        country: Optional[str] = typer.Option(None, help="The user's country."),
        occupation: Optional[str] = typer.Option(None, help="The user's occupation."),
        replace: bool = typer.Option(False, help="Drop the persona's other posts."),
        recaption: bool = typer.Option(False, help="Caption again photos already captioned."),
        recursive: bool = typer.Option(False, help="Include sub-folders."),
        workers: int = typer.Option(1, help="Photos captioned at once."),
        dry_run: bool = typer.Option(False, help="Build and print the persona without storing it."),
        as_json: bool = typer.Option(False, "--json", help="Print the persona as JSON."),
    ) -> None:
        """Caption your own photos into a persona (inverse mode) and upsert it; images are never stored."""
        from vptt.agents.persona_gen.inverse import InverseConfig, build_persona_from_photos, ingest_photos

        demo = {k: v for k, v in {"age": age, "gender": gender, "city": city, "country": country,
                                  "occupation": occupation}.items() if v is not None}
        chat = _chat(model, base_url, api_key)
        kwargs: dict[str, Any] = {"demographics": demo, "config": InverseConfig(workers=workers),
                                  "text_chat": _chat(text_model, base_url, api_key) if text_model else None,
                                  "replace": replace, "recaption": recaption, "recursive": recursive,
                                  "progress": not as_json}
        if dry_run:
            result = build_persona_from_photos(directory, persona, chat, **kwargs)
        else:
            result = ingest_photos(directory, persona, chat, factory().store, **kwargs)
        if as_json:
            print(result.persona.model_dump_json(indent=1))
        else:
            status = "not stored (dry run)" if dry_run else result.upsert.status
            console.print(f"{persona}: {len(result.captioned)} captioned, {len(result.reused)} reused, "
                          f"{len(result.failed)} failed; {len(result.persona.posts)} posts; {status}")
        for path, why in result.failed.items():
            err.print(f"[yellow]failed[/yellow] {path}: {why}")


def register(app: typer.Typer, bench_app: typer.Typer | None = None) -> typer.Typer:
    """Register both commands; creates and adds a ``bench`` sub-app when none is given. Returns it."""
    if bench_app is None:
        bench_app = typer.Typer(help="VPTT-Bench: generate personas.", no_args_is_help=True)
        app.add_typer(bench_app, name="bench")
    register_bench(bench_app)
    register_root(app)
    return bench_app
