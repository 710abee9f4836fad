"""`vptt score fpr`: Finer-Personalization Rank of generated images against a real, labelled gallery."""

from __future__ import annotations

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
    from vptt.evaluators.fpr import FinerPersonalizationRank, FPRResult


def _build_ranker(encoder: str, **kwargs: Any) -> FinerPersonalizationRank:
    """Make the ranker (a seam for tests)."""
    from vptt.evaluators.fpr import FinerPersonalizationRank

    return FinerPersonalizationRank(encoder, **kwargs)


def reference_files(sources: list[Path]) -> list[Path]:
    """Image files given directly or found (recursively) under the given folders."""
    from vptt.evaluators._canvas import IMAGE_SUFFIXES

    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            files += sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif src.is_file():
            files.append(src)
        else:
            raise ConfigError(f"reference path not found: {src}")
    return files


def _print_table(result: FPRResult) -> None:
    from rich.console import Console
    from rich.table import Table

    ks = list(result.recall_at_k)
    table = Table(title=f"Finer-Personalization Rank ({result.encoder.model})",
                  caption=f"feature: {result.encoder.feature}; preprocessing: {result.encoder.preprocessing}")
    for col in ("group", "queries", "gallery", "identities", "mAP", *[f"R@{k}" for k in ks], "same-id cos"):
        table.add_column(col)
    rows = [(g.group, g.n_queries, g.n_gallery, g.n_identities, g.map, g.recall_at_k, g.same_identity_cosine)
            for g in result.groups.values()]
    rows.append(("all", len(result.per_query_ap), result.diagnostics["n_gallery"], "", result.map,
                 result.recall_at_k, result.same_identity_cosine))
    for name, nq, ng, ni, m, rec, cos in rows:
        table.add_row(str(name), str(nq), str(ng), str(ni), f"{m:.4f}", *[f"{rec[k]:.4f}" for k in ks],
                      f"{cos:.4f}")
    Console().print(table)
    excluded = result.diagnostics["excluded_references"]
    if excluded:
        typer.echo(f"excluded {len(excluded)} reference image(s) from the gallery")


def register(score_app: typer.Typer) -> None:
    """Add the ``fpr`` command to the ``vptt score`` sub-app."""

    @score_app.command("fpr")
    def fpr_cmd(
        gallery: Path = typer.Option(..., "--gallery", help="Real images: DIR/<identity>/* or DIR/<group>/<identity>/*."),
        generated: Path = typer.Option(..., "--generated", help="Generated images, same layout as --gallery."),
        references: list[Path] = typer.Option(..., "--references", help="Reference images used for generation (folder or file, repeatable); never in the gallery."),
        encoder: str = typer.Option(..., "--encoder", help="CLIP / DINOv2 / SigLIP / DINO checkpoint directory or Hub id (a Hub id downloads unless HF_HUB_OFFLINE=1)."),
        on_reference: str = typer.Option("exclude", "--on-reference", help="exclude: drop references found in the gallery; raise: stop."),
        k: list[int] = typer.Option([1, 5, 10], "--k", help="Recall@k ranks (repeatable)."),
        device: str = device_option(),
        dtype: str = dtype_option(),
        batch_size: int = batch_option(),
        as_json: bool = json_option(),
        out: Optional[Path] = out_option(),
    ) -> None:
        """Rank each generated image against the gallery of its group: mAP, Recall@k, same-identity cosine."""
        from vptt.evaluators._image_encoders import dump_json
        from vptt.evaluators.fpr import build_gallery, scan_labelled_dir

        with input_errors():
            built = build_gallery(scan_labelled_dir(gallery), reference_files(references),
                                  on_reference=on_reference)  # type: ignore[arg-type]  # checked there
            ranker = _build_ranker(encoder, device=device, dtype=dtype, batch_size=batch_size, ks=k)
            result = ranker.score(scan_labelled_dir(generated), built)
            text = dump_json(result, out)
        emit(text, as_json, lambda: _print_table(result))
