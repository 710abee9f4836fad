"""`vptt score masc`: masked similarity (CP and PF) of generated images against a reference."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from vptt.core.errors import ConfigError
from vptt.sdk.cli._score import input_errors

if TYPE_CHECKING:
    from vptt.evaluators.masked_similarity import MaskedPair, MaskedSimilarity, MaskedSimilarityResult

_PAIR_FIELDS = ("reference", "reference_mask", "output", "output_mask", "prompt")
_MODEL_HELP = ("SigLIP2 checkpoint directory or Hugging Face id (the paper's: "
               "google/siglip2-so400m-patch16-naflex; a Hub id downloads unless HF_HUB_OFFLINE=1).")
_PAIRS_HELP = "JSONL of pairs (reference, reference_mask, output, output_mask, prompt, subject)."


def _build_scorer(model: str, **kwargs: Any) -> MaskedSimilarity:
    """Make the scorer (a seam for tests)."""
    from vptt.evaluators.masked_similarity import MaskedSimilarity

    return MaskedSimilarity(model, **kwargs)


def read_pairs_jsonl(path: Path) -> list[MaskedPair]:
    """Read pairs from JSONL: one ``{"reference", "reference_mask", "output", "output_mask", "prompt",
    "subject"?}`` object per line; relative paths are taken from the file's folder."""
    from vptt.evaluators.masked_similarity import MaskedPair

    pairs: list[MaskedPair] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError(f"cannot read pairs file {str(path)!r}: {err}") from err
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{n}: not valid JSON ({err.msg})") from err
        missing = [f for f in _PAIR_FIELDS if not isinstance(rec, dict) or not isinstance(rec.get(f), str)]
        if missing:
            raise ConfigError(f"{path}:{n}: missing or non-string field(s) {missing}; each line needs "
                              f"{list(_PAIR_FIELDS)} and optionally 'subject'")
        files = {f: str(path.parent / rec[f]) for f in _PAIR_FIELDS[:4]}
        pairs.append(MaskedPair(**files, prompt=rec["prompt"], subject=rec.get("subject")))
    if not pairs:
        raise ConfigError(f"{path}: no pairs found")
    return pairs


def _flag_pairs(reference: Optional[Path], reference_mask: Optional[Path], outputs: list[Path],
                output_masks: list[Path], prompts: list[str], subject: Optional[str]) -> list[MaskedPair]:
    from vptt.evaluators.masked_similarity import MaskedPair

    if reference is None or reference_mask is None or not outputs:
        raise ConfigError("give --pairs FILE.jsonl, or --reference, --reference-mask and at least one "
                          "--output")
    if len(output_masks) != len(outputs):
        raise ConfigError(f"got {len(outputs)} --output but {len(output_masks)} --output-mask; give one each")
    if len(prompts) not in (1, len(outputs)):
        raise ConfigError(f"give one --prompt for all outputs or one per --output (got {len(prompts)})")
    prompt_list = prompts * len(outputs) if len(prompts) == 1 else prompts
    return [MaskedPair(str(reference), str(reference_mask), str(o), str(m), p, subject)
            for o, m, p in zip(outputs, output_masks, prompt_list)]


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _print_table(pairs: list[MaskedPair], results: list[MaskedSimilarityResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    typer.echo(f"MaSC, model {results[0].model_id}\npreprocessing: {results[0].preprocessing}")
    table = Table()
    for col in ("#", "output", "CP", "PF", "PF text"):
        table.add_column(col)
    for n, (pair, res) in enumerate(zip(pairs, results)):
        table.add_row(str(n), Path(str(pair.output)).name, f"{res.cp:.4f}", f"{res.pf:.4f}", res.prompt_text)
    Console().print(table)


def register(score_app: typer.Typer) -> None:
    """Add the ``masc`` command to the ``vptt score`` sub-app."""

    @score_app.command("masc")
    def masc_cmd(
        model: str = typer.Option(..., "--model", help=_MODEL_HELP),
        pairs_file: Optional[Path] = typer.Option(None, "--pairs", help=_PAIRS_HELP),
        reference: Optional[Path] = typer.Option(None, "--reference", help="Reference (concept) image."),
        reference_mask: Optional[Path] = typer.Option(
            None, "--reference-mask", help="Foreground mask of the reference."),
        output: list[Path] = typer.Option([], "--output", help="Generated image (repeatable)."),
        output_mask: list[Path] = typer.Option(
            [], "--output-mask", help="Its foreground mask (repeatable, same order)."),
        prompt: list[str] = typer.Option(
            [], "--prompt", help="Generation prompt: one for all outputs or one per output."),
        subject: Optional[str] = typer.Option(
            None, "--subject", help="Subject name stripped from the prompt for PF."),
        device: Optional[str] = typer.Option(
            None, "--device", help="cpu, cuda, mps (default: best available)."),
        dtype: Optional[str] = typer.Option(
            None, "--dtype", help="float32, float16 or bfloat16 (default: the checkpoint's)."),
        max_patches: int = typer.Option(1024, "--max-patches", help="NaFlex patch budget."),
        threshold: float = typer.Option(
            0.5, "--threshold", help="Foreground threshold on the downsampled masks."),
        stripper: str = typer.Option("regex", "--stripper", help="regex or none."),
        batch_size: int = typer.Option(16, "--batch-size", help="Images per vision forward."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object per pair (NaN as null)."),
    ) -> None:
        """Concept preservation (CP) and prompt following (PF) from one SigLIP2 forward per image (MaSC)."""
        with input_errors():
            if pairs_file is not None and (reference or output):
                raise ConfigError("use either --pairs or --reference/--output, not both")
            pairs = (read_pairs_jsonl(pairs_file) if pairs_file is not None
                     else _flag_pairs(reference, reference_mask, output, output_mask, prompt, subject))
            scorer = _build_scorer(model, device=device, dtype=dtype, naflex_max_patches=max_patches,
                                   fg_threshold=threshold, stripper=stripper, batch_size=batch_size)
            results = scorer.score_batch(pairs)
        if not as_json:
            _print_table(pairs, results)
            return
        for n, (pair, res) in enumerate(zip(pairs, results)):
            row = {"index": n, "output": str(pair.output), **res.to_dict()}
            row["cp"], row["pf"] = _nan_to_none(res.cp), _nan_to_none(res.pf)
            typer.echo(json.dumps(row))
