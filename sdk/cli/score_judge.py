"""`vptt score judge`: score method images against a persona's posts with a VLM judge."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from vptt.core.errors import ConfigError, VPTTError
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


def _embed(texts: list[str]) -> Any:
    """Embed texts with the configured embedder (a seam for tests)."""
    from vptt.sdk.cli._common import settings
    from vptt.stores.factory import build_embedder

    return build_embedder(settings()).embed(texts)


def _from_persona_file(path: Path, persona_id: Optional[str]) -> tuple[str, list[Path], list[str], list[str]]:
    """(persona id, post image paths, post ids, captions) of the posts with an image in a persona JSONL."""
    from vptt.core.personas import load_personas

    personas = load_personas(path)
    if persona_id is None and len(personas) != 1:
        raise ConfigError(f"{path} holds {len(personas)} personas; choose one with --persona-id")
    match = [p for p in personas if persona_id is None or p.persona_id == persona_id]
    if not match:
        raise ConfigError(f"persona {persona_id!r} is not in {path}")
    persona = match[0]
    images, ids, captions = [], [], []
    for post in persona.posts:
        if post.image:
            img = Path(post.image)
            images.append(img if img.is_absolute() or img.exists() else path.parent / img)
            ids.append(post.post_id)
            captions.append(post.caption)
    if not images:
        raise ConfigError(f"persona {persona.persona_id!r} in {path} has no post with an image")
    return persona.persona_id, images, ids, captions


def _method_pairs_text(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise typer.BadParameter(f"expected NAME=TEXT, got {pair!r}", param_hint="--generated-prompt")
        out[name.strip()] = text.strip()
    return out


def _print_table(result: JudgeResult, calibrated: dict[str, float] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"VLM judge ({result.model}) - persona {result.persona_id}")
    cols = ("label", "method", "score") + (("calibrated",) if calibrated is not None else ()) + ("reason",)
    for col in cols:
        table.add_column(col)
    for label, method in result.labels.items():
        score = result.scores.get(method)
        cells = [label, method, "-" if score is None else f"{score:.1f}"]
        if calibrated is not None:
            cells.append(f"{calibrated[method]:.2f}" if method in calibrated else "-")
        table.add_row(*cells, result.reasons.get(method, ""))
    Console().print(table)
    if result.profile_posts:
        Console().print(f"profile canvas posts: {', '.join(result.profile_posts)}")


def register(score_app: typer.Typer) -> None:
    """Add the ``judge`` command to the ``vptt score`` sub-app."""

    @score_app.command("judge")
    def judge_cmd(
        persona_images: Optional[list[Path]] = typer.Option(
            None, "--persona-images", help="Folder of post images or image files (repeatable)."),
        persona_file: Optional[Path] = typer.Option(
            None, "--persona-file", exists=True, dir_okay=False,
            help="Persona JSONL: post images and captions of --persona-id (instead of --persona-images)."),
        generated_prompt: list[str] = typer.Option(
            [], "--generated-prompt", help="NAME=TEXT: the prompt method NAME generated its image from "
            "(repeatable); matches the profile posts to these prompts."),
        posts: str = typer.Option("matched", "--posts", help="Profile canvas posts when there are more than "
                                  "10: matched (captions closest to the generated prompts) or first."),
        judge_calibration: Optional[Path] = typer.Option(
            None, "--judge-calibration", exists=True, dir_okay=False,
            help="Saved judge calibration (JSON): also print calibrated scores."),
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
        from vptt.evaluators.calibration import JudgeCalibration

        try:
            if (persona_images is None) == (persona_file is None):
                raise ConfigError("give the persona's posts once: --persona-images or --persona-file")
            cal = JudgeCalibration.load(judge_calibration) if judge_calibration is not None else None
            config = JudgeConfig(model=model, base_url=base_url, api_key=api_key, temperature=temperature,
                                 seed=seed, max_tokens=max_tokens, malformed_retries=retries,
                                 profile_posts=posts)  # type: ignore[arg-type]
            judge = _build_judge(config)
            captions: list[str] | None = None
            if persona_file is not None:
                pid, files, post_ids, captions = _from_persona_file(persona_file, persona_id)
            else:
                files = _persona_files(persona_images or [])
                pid, post_ids = persona_id or (persona_images or [])[0].stem, [f.stem for f in files]
            prompts = list(_method_pairs_text(generated_prompt).values())
            caps = embs = None
            if posts == "matched" and len(files) > config.max_profile_images and captions and prompts:
                caps, embs = _embed(captions), _embed(prompts)
            request = judge.prepare(
                persona_id=pid, persona_images=files, post_ids=post_ids,
                method_images=_method_pairs(method), prompt=prompt, input_image=input_image,
                task=task,  # type: ignore[arg-type]  # checked by prepare()
                caption_embeddings=caps, prompt_embeddings=embs,
            )
            if save_canvases is not None:
                save_canvases.mkdir(parents=True, exist_ok=True)
                request.profile_canvas.save(save_canvases / "profile_canvas.png")
                request.methods_canvas.save(save_canvases / "methods_canvas.png")
            result = judge.run(request)
        except (VPTTError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        calibrated = None if cal is None else {m: float(cal.apply_one(v)) for m, v in result.scores.items()}
        if as_json:
            data = result.model_dump(mode="json")
            if calibrated is not None:
                data["calibrated_scores"] = calibrated
            import json

            typer.echo(json.dumps(data, indent=2))
        else:
            _print_table(result, calibrated)
        for problem in result.problems:
            typer.echo(f"parse problem: {problem.message}", err=True)
        if not result.ok:
            raise typer.Exit(code=1)
