"""`vptt score stellar`: Stellar metrics (IPS, SIS, APS, GOA) and this project's RFS."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from vptt.core.errors import ConfigError
from vptt.sdk.cli._score import device_option, dtype_option, emit, input_errors, json_option, out_option

if TYPE_CHECKING:
    from vptt.evaluators.stellar import IdentityImages, StellarEvaluator, StellarResult, StellarSample


def _build_evaluator(**kwargs: Any) -> StellarEvaluator:
    """Make the evaluator (a seam for tests)."""
    from vptt.evaluators.stellar import StellarEvaluator

    return StellarEvaluator(**kwargs)


def load_factory(spec: str) -> Any:
    """Import ``package.module:factory`` and call it with no arguments; returns what it builds."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"expected MODULE:FACTORY, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {spec!r}: {exc}") from exc
    return factory()


def build_faces(spec: Optional[str], device: str, dtype: str) -> Any:
    """``aligned:MODEL`` (whole image = face, for aligned crops only) or ``MODULE:FACTORY``."""
    if spec is None:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "aligned":
        from vptt.evaluators._image_encoders import load_image_encoder
        from vptt.evaluators.stellar import AlignedFaceCrops

        return AlignedFaceCrops(load_image_encoder(rest, device=device, dtype=dtype))
    return load_factory(spec)


def read_samples(path: Path) -> list[StellarSample]:
    """JSONL, one ``{"image", "identity", "prompt"?, "objects"?, "relations"? [[s, p, o]], "reference"?}``
    per line; image paths are relative to the file's folder."""
    from vptt.evaluators._canvas import load_image
    from vptt.evaluators.stellar import Relation, StellarSample

    samples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rels = tuple(Relation(*map(str, r)) for r in rec.get("relations", []))
            samples.append(StellarSample(load_image(path.parent / rec["image"]), str(rec["identity"]),
                                         rec.get("prompt", ""), tuple(rec.get("objects", [])), rels,
                                         rec.get("reference")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{n}: bad sample ({exc!r}); need 'image' and 'identity', relations as "
                              "[subject, predicate, object] lists") from exc
    if not samples:
        raise ConfigError(f"{path}: no samples")
    return samples


def read_identities(root: Path, attributes: Optional[Path], names: set[str]) -> dict[str, IdentityImages]:
    """``root/<identity>/*`` images and optional attribute labels ``{identity: {attr: 0|1}}``."""
    from vptt.evaluators._canvas import list_images, load_image
    from vptt.evaluators.stellar import IdentityImages

    labels = json.loads(attributes.read_text(encoding="utf-8")) if attributes is not None else {}
    return {name: IdentityImages(tuple(load_image(p) for p in list_images(root / name)),
                                 {k: int(v) for k, v in labels.get(name, {}).items()})
            for name in sorted(names)}


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_table(result: StellarResult) -> None:
    from rich.console import Console
    from rich.table import Table

    models = ", ".join(f"{k}: {v}" for k, v in result.models.items() if v)
    table = Table(title="Stellar metrics", caption=models)
    for col in ("metric", "value"):
        table.add_column(col)
    for name in ("ips", "sis", "aps", "goa", "rfs"):
        table.add_row(name.upper(), _fmt(getattr(result, name)))
    for attr, auc in result.aps_per_attribute.items():
        table.add_row(f"  AUC {attr}", _fmt(auc))
    Console().print(table)
    if result.diagnostics.get("unscored_relations"):
        typer.echo(f"{result.diagnostics['unscored_relations']} non-spatial relation(s) unscored (no judge)")


def register(score_app: typer.Typer) -> None:
    """Add the ``stellar`` command to the ``vptt score`` sub-app."""

    @score_app.command("stellar")
    def stellar_cmd(
        samples: Path = typer.Option(..., "--samples", help="JSONL of generated samples (image, identity, prompt, objects, relations, reference)."),
        identities: Path = typer.Option(..., "--identities", help="Real images per identity: DIR/<identity>/*."),
        attributes: Optional[Path] = typer.Option(None, "--attributes", help="JSON {identity: {attribute: 0|1}} for APS."),
        faces: Optional[str] = typer.Option(None, "--faces", help="Face embedder: MODULE:FACTORY, or aligned:MODEL for pre-aligned face crops only."),
        detector: Optional[str] = typer.Option(None, "--detector", help="OWL-ViT/OWLv2 directory or Hub id for GOA/RFS."),
        judge: Optional[str] = typer.Option(None, "--judge", help="MODULE:FACTORY returning judge(image, relation) -> [0,1] | None."),
        gate_clip: Optional[str] = typer.Option(None, "--gate-clip", help="CLIP model enabling the prompt-following gate."),
        gate_std: float = typer.Option(2.0, "--gate-std", help="Gate: clip_t > clip_n + N * std(clip_n)."),
        threshold: float = typer.Option(0.1, "--threshold", help="Minimum detection score for RFS boxes."),
        query_template: str = typer.Option("a photo of a {}", "--query-template", help="Detector text per object."),
        device: str = device_option(),
        dtype: str = dtype_option(),
        as_json: bool = json_option(),
        out: Optional[Path] = out_option(),
    ) -> None:
        """Identity (IPS, SIS), attributes (APS), objects (GOA) and relations (RFS) of generated images."""
        from vptt.evaluators._image_encoders import dump_json
        from vptt.evaluators.stellar import OwlDetector

        with input_errors():
            batch = read_samples(samples)
            people = read_identities(identities, attributes, {s.identity for s in batch})
            evaluator = _build_evaluator(
                faces=build_faces(faces, device, dtype), judge=None if judge is None else load_factory(judge),
                detector=None if detector is None else OwlDetector(detector, device=device, dtype=dtype,
                                                                   query_template=query_template),
                detection_threshold=threshold, gate_clip=gate_clip, gate_std=gate_std, device=device,
                dtype=dtype)
            result = evaluator.score(batch, people)
            text = dump_json(result, out)
        emit(text, as_json, lambda: _print_table(result))
