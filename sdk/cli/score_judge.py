"""`vptt score judge`: score method images against a persona's posts with a VLM judge."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vptt.core.errors import VPTTError
from vptt.evaluators._canvas import list_images
from vptt.evaluators.vlm_judge import JudgeConfig, JudgeResult, VLMJudge


def _build_judge(config: JudgeConfig) -> VLMJudge:
    """Make the judge (a seam for tests, which pass their own HTTP client)."""
    return VLMJudge(config)


def _persona_files(sources: list[Path]) -> list[Path]:
    files: list[Path] = []
    for src in sources:
        files.extend(list_images(src) if src.is_dir() else [src])
    return files


def _method_pairs(pairs: list[str]) -> dict[str, Path]:
    methods: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise typer.BadParameter(f"expected NAME=IMAGE, got {pair!r}", param_hint="--method")
        if name.strip() in methods:
            raise typer.BadParameter(f"method {name.strip()!r} given twice", param_hint="--method")
        methods[name.strip()] = Path(path.strip())
    return methods


def _print_table(result: JudgeResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"VLM judge ({result.model}) - persona {result.persona_id}")
    for col in ("label", "method", "score", "reason"):
        table.add_column(col)
    for label, method in result.labels.items():
        score = result.scores.get(method)
        table.add_row(label, method, "-" if score is None else f"{score:.1f}", result.reasons.get(method, ""))
    Console().print(table)


def register(score_app: typer.Typer) -> None:
    """Add the ``judge`` command to the ``vptt score`` sub-app."""

    @score_app.command("judge")
    def judge_cmd(
        persona_images: list[Path] = typer.Option(
            ..., "--persona-images", help="Folder of post images or image files (repeatable)."),
        method: list[str] = typer.Option(..., "--method", help="NAME=IMAGE, one per method (2-5)."),
        prompt: str = typer.Option(..., "--prompt", help="The base generation/editing prompt."),
        task: str = typer.Option("generation", "--task", help="generation or editing."),
        input_image: Optional[Path] = typer.Option(
            None, "--input-image", help="The original image (editing only)."),
        persona_id: Optional[str] = typer.Option(
            None, "--persona-id", help="Seeds the label shuffle; default: first --persona-images name."),
        model: str = typer.Option("gpt-4o", "--model", help="Vision chat model name."),
        base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint URL."),
        api_key: Optional[str] = typer.Option(
            None, "--api-key", envvar=["VPTT_JUDGE_API_KEY", "OPENAI_API_KEY"], show_default=False,
            help="API key (else env VPTT_JUDGE_API_KEY, then OPENAI_API_KEY)."),
        temperature: float = typer.Option(0.0, "--temperature"),
        seed: int = typer.Option(42, "--seed"),
        max_tokens: int = typer.Option(5000, "--max-tokens"),
        retries: int = typer.Option(1, "--retries", help="Re-asks on a malformed reply."),
        save_canvases: Optional[Path] = typer.Option(
            None, "--save-canvases", help="Folder to save both canvases in."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Score each method's image 0-5 for visual similarity to the persona's posts (paper Sec. 15.1)."""
        try:
            config = JudgeConfig(model=model, base_url=base_url, api_key=api_key, temperature=temperature,
                                 seed=seed, max_tokens=max_tokens, malformed_retries=retries)
            judge = _build_judge(config)
            request = judge.prepare(
                persona_id=persona_id or persona_images[0].stem,
                persona_images=_persona_files(persona_images),
                method_images=_method_pairs(method), prompt=prompt, input_image=input_image,
                task=task,  # type: ignore[arg-type]  # checked by prepare()
            )
            if save_canvases is not None:
                save_canvases.mkdir(parents=True, exist_ok=True)
                request.profile_canvas.save(save_canvases / "profile_canvas.png")
                request.methods_canvas.save(save_canvases / "methods_canvas.png")
            result = judge.run(request)
        except (VPTTError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        if as_json:
            typer.echo(result.model_dump_json(indent=2))
        else:
            _print_table(result)
        for problem in result.problems:
            typer.echo(f"parse problem: {problem.message}", err=True)
        if not result.ok:
            raise typer.Exit(code=1)
