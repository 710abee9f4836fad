"""``vptt serve``: the SDK over HTTP with the creator web page (FastAPI + uvicorn; extra ``vptt[serve]``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from vptt.sdk.cli._common import cli_errors, settings

err = Console(stderr=True)


@cli_errors
def serve(host: str = typer.Option("127.0.0.1", help="Interface to bind; anything but loopback needs a token."),
          port: int = typer.Option(8765, help="Port to bind."),
          token_file: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help=(
              'JSON list of {"token": ..., "personas": [ids] or null, "name": ...}; also $VPTT_SERVE_TOKEN.')),
          composer: str = typer.Option("template", help="template or llm (chat at $VPTT_LLM_BASE_URL)."),
          llm_model: Optional[str] = typer.Option(None, help="Chat model of the LLM composer."),
          llm_base_url: Optional[str] = typer.Option(None, help="Chat endpoint (default $VPTT_LLM_BASE_URL)."),
          gate_threshold: Optional[float] = typer.Option(None, help="Text gate: minimum VPTT_score."),
          max_candidates: int = typer.Option(4, help="Text gate: most candidate prompts composed."),
          generator: str = typer.Option("none", help="none, diffusers or openai."),
          model: Optional[str] = typer.Option(None, help="Image model id or local directory."),
          images_base_url: Optional[str] = typer.Option(None, help="Image endpoint (openai generator)."),
          steps: Optional[int] = typer.Option(None, help="Denoising steps (diffusers)."),
          threads: str = typer.Option(":memory:", help="Conversations: SQLite file, or :memory:."),
          save_dir: Optional[Path] = typer.Option(None, help="Generated images (default: DATA_DIR/serve-images)."),
          vision_model: Optional[str] = typer.Option(None, help="Vision chat model of photo uploads (inverse "
                                                     "mode; default $VPTT_LLM_MODEL)."),
          max_upload_mb: float = typer.Option(20.0, help="Largest persona or photo upload."),
          max_body_kb: float = typer.Option(256.0, help="Largest JSON request."),
          log_level: str = typer.Option("warning", help="uvicorn log level.")) -> None:
    """Serve personas, personalization (JSON and server-sent events), comparisons, VPTT scores and the
    creator web page at http://HOST:PORT/ (API docs at /docs)."""
    try:
        import uvicorn

        from vptt.sdk.server import ServeConfig, Service, create_app, load_tokens
    except ImportError as exc:
        from vptt.core.errors import ConfigError

        raise ConfigError(f"vptt serve needs the serve extra ({exc.name} is missing): "
                          "pip install 'vptt[serve]'") from None
    from vptt.agents.context import AgentContext

    config = ServeConfig(host=host, port=port, tokens=load_tokens(token_file), composer=composer,  # type: ignore[arg-type]
                         llm_model=llm_model, llm_base_url=llm_base_url, text_gate_threshold=gate_threshold,
                         max_candidates=max_candidates, generator=generator, generator_model=model,  # type: ignore[arg-type]
                         images_base_url=images_base_url, steps=steps, threads=threads, save_dir=save_dir,
                         vision_model=vision_model, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                         max_body_bytes=int(max_body_kb * 1024))
    config.check_binding()
    s = settings()
    from pydantic import SecretStr

    # the served graph builds its settings from VPTT_* (AgentContext: None means "from the environment"): the
    # root options given on this command line (--device, --embedder-backend, ...) reach it that way
    for name in s.model_fields_set:
        value = getattr(s, name)
        if value is not None and not isinstance(value, SecretStr):
            os.environ[f"VPTT_{name.upper()}"] = str(value)
    ctx = AgentContext(data_dir=str(s.data_dir), store=s.store, chroma_host=s.chroma_host,
                       chroma_port=s.chroma_port if s.chroma_host else None)
    app = create_app(config, service=Service(config, context=ctx))
    err.print(f"vptt serve: http://{host}:{port}/  (API docs /docs; store {s.data_dir}; "
              f"{'bearer tokens required' if config.tokens else 'no tokens: loopback only'})", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command()(serve)
