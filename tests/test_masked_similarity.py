"""Masked similarity (MaSC) against the published ``masc-metric`` package and naive references."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from tests.tiny_siglip import save_tiny
from vptt.core.errors import ConfigError, ModelLoadError
from vptt.evaluators import _masc_core as core
from vptt.evaluators.masked_similarity import MaskedPair, MaskedSimilarity
from vptt.sdk.cli.score_masc import register

masc = pytest.importorskip("masc")
from masc.text import strip_subject_from_prompt  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TOL = 1e-5
MAX_PATCHES = 64
KINDS = ("naflex", "fixed")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("masc")
    return {kind: str(save_tiny(root, kind)) for kind in KINDS}


@pytest.fixture(scope="module")
def scorers(ckpts: dict[str, str]) -> dict[str, MaskedSimilarity]:
    return {k: MaskedSimilarity(d, device="cpu", naflex_max_patches=MAX_PATCHES, batch_size=3)
            for k, d in ckpts.items()}


@pytest.fixture(scope="module")
def references(ckpts: dict[str, str]) -> dict[str, masc.MaSC]:
    return {k: masc.MaSC(d, device="cpu", naflex_max_patches=MAX_PATCHES) for k, d in ckpts.items()}


def _image(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _box_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
    m[y:y + h // 2, x:x + w // 2] = 255
    return m


def _pairs(seed: int = 0) -> list[MaskedPair]:
    """Two references x five outputs of varied aspect, with an all-foreground output and an empty ref mask."""
    rng = np.random.default_rng(seed)
    refs = [(_image(rng, 40, 56), _box_mask(rng, 40, 56)), (_image(rng, 64, 64), np.zeros((64, 64), bool))]
    outs = [(_image(rng, 48, 36), _box_mask(rng, 48, 36)),
            (_image(rng, 30, 70), _box_mask(rng, 30, 70) / 255.0),  # float mask
            (_image(rng, 64, 64), np.full((64, 64), 255, np.uint8)),  # no background: PF is NaN
            (_image(rng, 33, 33), _box_mask(rng, 33, 33)),
            (_image(rng, 20, 90), _box_mask(rng, 20, 90))]
    prompts = ["A photo of a cat on the beach", "a cat in the snow", "The CAT under a tree", "cat, cat cat",
               "a dog in a park"]
    return [MaskedPair(r, rm, o, om, p, "cat") for r, rm in refs for (o, om), p in zip(outs, prompts)]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOL


# ------------------------------------------------------------------------------------------- pure core

@pytest.mark.parametrize("prompt,subject", [
    ("A photo of a kitten chasing a butterfly", "kitten"), ("the Cat and the cat", "cat"),
    ("cat on a cat-tree, catalogue", "cat"), ("An  apple   by an apple", "apple"),
    ("a piggy bank", "piggy bank"),
    ("a dog in a park", "cat"), ("photo of c++ code", "c++"), ("  a  red   car ", " car "), ("x", "x"),
])
def test_strip_subject_matches_reference(prompt: str, subject: str) -> None:
    assert core.strip_subject(prompt, subject) == strip_subject_from_prompt(prompt, subject)
    assert core.strip_subject(prompt, subject, "none") == prompt


def test_strip_subject_blank_subject_keeps_prompt_and_rejects_unknown_stripper() -> None:
    assert core.strip_subject(" a  cat ", "  ") == " a  cat "
    assert core.strip_subject(" a  cat ", None) == " a  cat "
    with pytest.raises(ValueError, match="stripper"):
        core.strip_subject("a cat", "cat", "spacy")


def test_downsample_mask_is_block_mean_for_exact_halving() -> None:
    rng = np.random.default_rng(1)
    mask = (rng.random((8, 12)) > 0.5).astype(np.uint8) * 255
    expected = mask.reshape(4, 2, 6, 2).mean(axis=(1, 3)) / 255.0
    np.testing.assert_allclose(core.downsample_mask(mask, (4, 6)).numpy(), expected.ravel(), atol=1e-6)
    as_float = core.downsample_mask(mask / 255.0, (4, 6)).numpy()
    np.testing.assert_allclose(as_float, expected.ravel(), atol=1e-6)
    with pytest.raises(ValueError, match="2-D"):
        core.mask_to_array(np.zeros((4, 4, 3)))


def test_concept_preservation_equals_naive_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    ref, out = torch.randn(6, 5, generator=gen), torch.randn(3, 7, 5, generator=gen)
    weights = torch.tensor([0.9, 0.2, 0.51, 0.5, 1.0, 0.0])
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 4:] = False
    got = core.concept_preservation(ref, weights, out, valid, 0.5)
    for b in range(3):
        best = [max(float(ref[i] @ out[b, j] / (ref[i].norm() * out[b, j].norm()))
                    for j in range(7) if valid[b, j]) for i in range(6) if weights[i] > 0.5]
        assert got[b].item() == pytest.approx(sum(best) / len(best), abs=1e-6)
    assert torch.isnan(core.concept_preservation(ref, torch.zeros(6), out, valid)).all()


def test_encoding_schedule_groups_by_reference_and_counts_uses() -> None:
    order, queue, uses = core.encoding_schedule(["r1", "r2", "r1", "r2", "r1"], ["a", "b", "c", "a", "r2"])
    assert order == [0, 2, 4, 1, 3]
    assert queue == ["r1", "a", "c", "r2", "b"]  # each image once, in the order its first pair needs it
    assert uses == {"r1": 3, "a": 2, "c": 1, "r2": 3, "b": 1}


def test_attention_pool_with_padding_only_equals_model_head(scorers: dict[str, MaskedSimilarity]) -> None:
    head = scorers["naflex"].model.vision_model.head
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 9, 32, generator=gen)
    valid = torch.ones(2, 9, dtype=torch.long)
    valid[0, 6:] = 0
    with torch.inference_mode():
        np.testing.assert_allclose(core.attention_pool(head, hidden, valid == 0).numpy(),
                                   head(hidden, valid).numpy(), atol=1e-5)


# ------------------------------------------------------------------------------- against masc-metric

@pytest.mark.parametrize("kind", KINDS)
def test_scores_equal_masc_metric(kind: str, scorers: dict[str, MaskedSimilarity],
                                  references: dict[str, masc.MaSC]) -> None:
    pairs = _pairs()
    results = scorers[kind].score_batch(pairs)
    assert len(results) == len(pairs)
    for pair, res in zip(pairs, results):
        ref = references[kind].score(pair.reference, pair.reference_mask, pair.output, pair.output_mask,
                                     pair.prompt, pair.subject)
        assert _same(res.cp, ref.cp) and _same(res.pf, ref.pf), (res, ref)
        ex, d = ref.extras, res.diagnostics
        assert (res.prompt_text, res.prompt_stripped) == (ex["prompt_text"], ex["prompt_stripped"])
        assert (d.n_ref_fg, d.n_ref_patches, d.n_out_fg, d.n_out_patches, d.n_bg_pooled) == (
            ex["cp_n_ref_fg"], ex["cp_n_ref_total"], ex["pf_n_fg"], ex["pf_n_total"], ex["pf_n_bg_pooled"])
        assert d.ref_fg_fraction == pytest.approx(ex["cp_fg_frac_ref"], abs=1e-6)
        assert res.model_id == scorers[kind].model_id and str(MAX_PATCHES if kind == "naflex" else 32) in (
            res.preprocessing)
    assert any(math.isnan(r.cp) for r in results) and any(math.isnan(r.pf) for r in results)
    assert sum(not math.isnan(r.cp) and not math.isnan(r.pf) for r in results) >= 4


def _half_mask(grid: tuple[int, int]) -> np.ndarray:
    """A mask at twice the grid's resolution whose patch weights are 0 (top), 0.5 (middle) or 1 (bottom)."""
    h, w = grid
    m = np.zeros((2 * h, 2 * w), np.uint8)
    m[2 * (h // 3):, :] = 255
    m[2 * (h // 3):2 * (2 * h // 3):2, :] = 0  # every other row: 2x2 blocks half full
    return m


@pytest.mark.parametrize("kind", KINDS)
def test_weights_exactly_at_threshold_follow_masc(kind: str, scorers: dict[str, MaskedSimilarity],
                                                  references: dict[str, masc.MaSC]) -> None:
    """CP keeps weights > 0.5, PF hides weights >= 0.5: a patch at exactly 0.5 is in neither."""
    rng = np.random.default_rng(2)
    ref, out = _image(rng, 44, 60), _image(rng, 52, 40)
    ref_mask, out_mask = (_half_mask(e.grid) for e in scorers[kind].encode_images([ref, out]))
    assert (core.downsample_mask(ref_mask, scorers[kind].encode_images([ref])[0].grid) == 0.5).sum() >= 3
    res = scorers[kind].score(ref, ref_mask, out, out_mask, "a cat on grass", "cat")
    exp = references[kind].score(ref, ref_mask, out, out_mask, "a cat on grass", "cat")
    assert _same(res.cp, exp.cp) and _same(res.pf, exp.pf) and not math.isnan(res.cp + res.pf)
    assert res.diagnostics.n_out_fg == exp.extras["pf_n_fg"]
    assert res.diagnostics.n_ref_fg == exp.extras["cp_n_ref_fg"]


def test_single_score_equals_batch_and_paths_equal_images(scorers: dict[str, MaskedSimilarity],
                                                          tmp_path: Path) -> None:
    scorer = scorers["naflex"]
    pair = _pairs(seed=3)[0]
    single = scorer.score(pair.reference, pair.reference_mask, pair.output, pair.output_mask, pair.prompt,
                          "cat")
    files = {}
    for name in ("reference", "output"):
        getattr(pair, name).save(tmp_path / f"{name}.png")
        Image.fromarray(np.asarray(getattr(pair, f"{name}_mask"), np.uint8)).save(tmp_path / f"{name}_m.png")
        files[name], files[f"{name}_mask"] = str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}_m.png")
    from_paths = scorer.score_batch([MaskedPair(**files, prompt=pair.prompt, subject="cat")])[0]
    assert (from_paths.cp, from_paths.pf) == pytest.approx((single.cp, single.pf), abs=1e-6)
    assert single.to_dict()["diagnostics"]["stripper"] == "regex"


# ---------------------------------------------------------------------------------------- reuse

def _count_images(module: torch.nn.Module) -> list[int]:
    seen: list[int] = []
    original = module.forward

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        seen.append(int(pixels.shape[0]))
        return original(*args, **kwargs)

    module.forward = counting  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("kind", KINDS)
def test_n_outputs_against_one_reference_cost_n_plus_one_images(kind: str, ckpts: dict[str, str],
                                                                 references: dict[str, masc.MaSC]) -> None:
    scorer = MaskedSimilarity(ckpts[kind], device="cpu", naflex_max_patches=MAX_PATCHES, batch_size=4)
    ours = _count_images(scorer.model.vision_model)
    theirs = _count_images(references[kind].model.vision_model)
    texts = _count_texts(scorer.model.text_model)
    rng = np.random.default_rng(5)
    ref, ref_mask = _image(rng, 40, 40), _box_mask(rng, 40, 40)
    outs = [_image(rng, 36, 48) for _ in range(7)]
    masks = [_box_mask(rng, 36, 48) for _ in range(7)]
    prompts = ["a cat on a beach", "a cat in snow"] * 3 + ["a cat on a beach"]
    results = scorer.score_outputs(ref, ref_mask, outs, masks, prompts, subject="cat")
    # 8 images in 2 chunks of 4; NaFlex splits the first chunk by patch count (the ref's grid differs)
    assert sum(ours) == 8 and len(ours) == (3 if kind == "naflex" else 2) == scorer.stats.vision_calls
    assert scorer.stats.images_encoded == 8
    assert texts == [2] and scorer.stats.texts_encoded == 2
    for out, mask, prompt, res in zip(outs, masks, prompts, results):
        expected = references[kind].score(ref, ref_mask, out, mask, prompt, "cat")
        assert _same(res.cp, expected.cp) and _same(res.pf, expected.pf)
    assert sum(theirs) == 2 * 7  # the reference package encodes the reference again for every output
    scorer.score_outputs(ref, ref_mask, outs[:1], masks[:1], "a cat in snow", subject="cat")
    assert texts == [2] and scorer.stats.text_cache_hits >= 6  # cached across calls


def _count_texts(module: torch.nn.Module) -> list[int]:
    seen: list[int] = []
    original = module.forward

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(int(kwargs["input_ids"].shape[0]))
        return original(*args, **kwargs)

    module.forward = counting  # type: ignore[method-assign]
    return seen


def test_interleaved_references_keep_input_order(scorers: dict[str, MaskedSimilarity]) -> None:
    pairs = _pairs(seed=7)
    shuffled = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]
    batch = scorers["fixed"].score_batch(shuffled)
    for pair, res in zip(shuffled, batch):
        alone = scorers["fixed"].score(pair.reference, pair.reference_mask, pair.output, pair.output_mask,
                                       pair.prompt, pair.subject)
        assert _same(res.cp, alone.cp) and _same(res.pf, alone.pf)


def test_bfloat16_runs_and_stays_close(ckpts: dict[str, str], scorers: dict[str, MaskedSimilarity]) -> None:
    half = MaskedSimilarity(ckpts["naflex"], device="cpu", dtype="bfloat16", naflex_max_patches=MAX_PATCHES)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    pair = _pairs()[0]
    a = half.score(pair.reference, pair.reference_mask, pair.output, pair.output_mask, pair.prompt, "cat")
    b = scorers["naflex"].score(pair.reference, pair.reference_mask, pair.output, pair.output_mask,
                                pair.prompt, "cat")
    assert abs(a.cp - b.cp) < 0.05 and abs(a.pf - b.pf) < 0.1


# ---------------------------------------------------------------------------------------- errors

def test_invalid_arguments_raise_config_and_load_errors(ckpts: dict[str, str],
                                                        scorers: dict[str, MaskedSimilarity],
                                                        tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        MaskedSimilarity(str(tmp_path / "missing"), device="cpu")
    with pytest.raises(ModelLoadError, match="could not load"):
        MaskedSimilarity(str(tmp_path), device="cpu")
    if os.environ.get("HF_HUB_OFFLINE") == "1":  # an uncached Hub id fails fast instead of downloading
        with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
            MaskedSimilarity("vptt-test/no-such-siglip2", device="cpu")
    with pytest.raises(ConfigError, match="stripper"):
        MaskedSimilarity(ckpts["fixed"], stripper="spacy")
    with pytest.raises(ConfigError, match="dtype"):
        MaskedSimilarity(ckpts["fixed"], dtype="int8")
    pair = _pairs()[0]
    with pytest.raises(ConfigError, match="2-D"):
        scorers["fixed"].score(pair.reference, np.zeros((4, 4, 3)), pair.output, pair.output_mask, "a", None)
    with pytest.raises(ConfigError, match="one mask and one prompt"):
        scorers["fixed"].score_outputs(pair.reference, pair.reference_mask, [pair.output], [], "a cat")


# ------------------------------------------------------------------------------------------- CLI

def _cli() -> typer.Typer:
    app, score_app = typer.Typer(), typer.Typer()
    app.add_typer(score_app, name="score")
    register(score_app)
    return app


def test_cli_pairs_file_and_flags(ckpts: dict[str, str], scorers: dict[str, MaskedSimilarity],
                                  tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    names = {"reference": (40, 56), "output": (48, 36)}
    for name, (h, w) in names.items():
        _image(rng, h, w).save(tmp_path / f"{name}.png")
        Image.fromarray(_box_mask(rng, h, w)).save(tmp_path / f"{name}_mask.png")
    row = {"reference": "reference.png", "reference_mask": "reference_mask.png", "output": "output.png",
           "output_mask": "output_mask.png", "prompt": "a cat on a beach", "subject": "cat"}
    (tmp_path / "pairs.jsonl").write_text(json.dumps(row) + "\n\n" + json.dumps(row) + "\n")
    common = ["score", "masc", "--model", ckpts["naflex"], "--device", "cpu",
              "--max-patches", str(MAX_PATCHES)]
    runner = CliRunner()
    res = runner.invoke(_cli(), [*common, "--pairs", str(tmp_path / "pairs.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    direct = scorers["naflex"].score(*(str(tmp_path / row[k]) for k in list(row)[:4]), row["prompt"], "cat")
    assert len(rows) == 2 and rows[0]["cp"] == pytest.approx(direct.cp, abs=1e-6)
    assert rows[1]["pf"] == pytest.approx(direct.pf, abs=1e-6) and rows[0]["prompt_text"] == "on a beach"
    flags = ["--reference", str(tmp_path / "reference.png"),
             "--reference-mask", str(tmp_path / "reference_mask.png"),
             "--output", str(tmp_path / "output.png"), "--output-mask", str(tmp_path / "output_mask.png"),
             "--prompt", "a cat on a beach", "--subject", "cat"]
    table = runner.invoke(_cli(), [*common, *flags])
    assert table.exit_code == 0 and f"{direct.cp:.4f}" in table.stdout
    bad = runner.invoke(_cli(), [*common, *flags[:6]])
    assert bad.exit_code == 2 and "--output-mask" in bad.output
    (tmp_path / "bad.jsonl").write_text('{"reference": "r.png"}\n')
    bad = runner.invoke(_cli(), [*common, "--pairs", str(tmp_path / "bad.jsonl")])
    assert bad.exit_code == 2 and "bad.jsonl:1" in bad.output
