"""`vptt score clip`: CLIP-I, CLIP-T and DINO (DreamBench conventions) of generated images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from vptt.core.errors import ConfigError
from vptt.sdk.cli._score import (
    batch_option,
    device_option,
    dtype_option,
    emit,
    input_errors,
    json_option,
    out_option,
)

if TYPE_CHECKING:
    from vptt.evaluators.clip_dino import ClipDinoEvaluator, ClipDinoReport


def _build_evaluator(**kwargs: Any) -> ClipDinoEvaluator:
    """Make the evaluator (a seam for tests)."""
    from vptt.evaluators.clip_dino import ClipDinoEvaluator

    return ClipDinoEvaluator(**kwargs)


def _read_prompts(path: Optional[Path]) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read prompts file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path}: expected a JSON object mapping image names to prompt strings")
    return data


def _prompt_for(image: Path, root: Path, table: dict[str, str], default: Optional[str]) -> Optional[str]:
    """Prompt of one image: the --prompts entry (relative path, then file name), a sidecar .txt, --prompt."""
    for key in (image.relative_to(root).as_posix(), image.name):
        if key in table:
            return table[key]
    sidecar = image.with_suffix(".txt")
    return sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else default


def collect_subjects(generated: Path, references: Optional[Path], prompts: dict[str, str],
                     prompt: Optional[str]) -> dict[str, tuple[list[Any], list[Any], Optional[list[str]]]]:
    """``{subject: (generated, references, prompts)}`` from flat folders or per-subject sub-folders."""
    from vptt.evaluators._canvas import list_images, load_image

    subdirs = sorted(p for p in generated.iterdir() if p.is_dir()) if generated.is_dir() else []
    pairs = [(d.name, d, None if references is None else references / d.name) for d in subdirs] or [
        (generated.name, generated, references)]
    out = {}
    for name, gen_dir, ref_dir in pairs:
        files = list_images(gen_dir)
        if not files:
            raise ConfigError(f"no images in {gen_dir}")
        texts = [_prompt_for(f, generated, prompts, prompt) for f in files]
        refs = [load_image(p) for p in list_images(ref_dir)] if ref_dir is not None else []
        out[name] = ([load_image(f) for f in files], refs,
                     None if any(t is None for t in texts) else [str(t) for t in texts])
    return out


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_table(report: ClipDinoReport) -> None:
    from rich.console import Console
    from rich.table import Table

    first = next(iter(report.subjects.values()))
    models = [f"{n}: {m.model} ({m.feature}; {m.preprocessing})" for n, m in
              (("CLIP", first.clip_model), ("DINO", first.dino_model)) if m is not None]
    table = Table(title="CLIP-I / CLIP-T / DINO (DreamBench)", caption="\n".join(models))
    for col in ("subject", "images", "refs", "CLIP-I", "CLIP-T (x100)", "DINO"):
        table.add_column(col)
    for name, r in report.subjects.items():
        table.add_row(name, str(r.n_generated), str(r.n_references), *map(_fmt, (r.clip_i, r.clip_t, r.dino)))
    table.add_row("all", str(report.n_generated), "", *map(_fmt, (report.clip_i, report.clip_t, report.dino)))
    Console().print(table)
    for note in report.notes:
        typer.echo(note)


def register(score_app: typer.Typer) -> None:
    """Add the ``clip`` command to the ``vptt score`` sub-app."""

    @score_app.command("clip")
    def clip_cmd(
        generated: Path = typer.Option(..., "--generated", help="Folder of generated images, or of per-subject sub-folders."),
        references: Optional[Path] = typer.Option(None, "--references", help="Reference images (same per-subject sub-folders when --generated has them)."),
        prompt: Optional[str] = typer.Option(None, "--prompt", help="Prompt for every image (CLIP-T)."),
        prompts: Optional[Path] = typer.Option(None, "--prompts", help="JSON {image name or relative path: prompt}; a sidecar IMAGE.txt also works."),
        clip_model: Optional[str] = typer.Option(None, "--clip-model", help="CLIP/SigLIP directory or Hub id (DreamBench: openai/clip-vit-base-patch32)."),
        dino_model: Optional[str] = typer.Option(None, "--dino-model", help="DINO/DINOv2 directory or Hub id (DreamBench: facebook/dino-vits16)."),
        device: str = device_option(),
        dtype: str = dtype_option(),
        batch_size: int = batch_option(),
        as_json: bool = json_option(),
        out: Optional[Path] = out_option(),
    ) -> None:
        """CLIP-I and DINO (mean cosine to the references) and CLIP-T (100 x cosine to the prompt)."""
        from vptt.evaluators._image_encoders import dump_json

        with input_errors():
            if not generated.exists():
                raise ConfigError(f"not found: {generated}")
            subjects = collect_subjects(generated, references, _read_prompts(prompts), prompt)
            evaluator = _build_evaluator(clip_model=clip_model, dino_model=dino_model, device=device,
                                         dtype=dtype, batch_size=batch_size)
            report = evaluator.score_subjects(subjects)
            text = dump_json(report, out)
        emit(text, as_json, lambda: _print_table(report))
