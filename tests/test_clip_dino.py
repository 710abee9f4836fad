"""CLIP-I / CLIP-T / DINO against cosines computed by hand from the tiny models' own forward passes, the
shared encoder loader (local dirs, errors, dtype) and the `vptt score clip` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from tests.tiny_vision import random_images, save_tiny
from vptt.core.errors import ConfigError, ModelLoadError
from vptt.evaluators._image_encoders import load_image_encoder, model_source
from vptt.evaluators.clip_dino import ClipDinoEvaluator, clip_t_per_image, mean_pairwise_cosine
from vptt.sdk.cli.score_clip import register


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {kind: save_tiny(root, kind) for kind in ("clip", "dino", "dinov2", "siglip")}


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All-pairs cosine with torch's own function."""
    return torch.nn.functional.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1)


def manual_clip(path, images, texts, siglip: bool = False):
    """Image and text features straight from the transformers classes (no vptt code)."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(path).eval()
    pixels = AutoImageProcessor.from_pretrained(path, backend="pil")(images=images, return_tensors="pt")
    tok = AutoTokenizer.from_pretrained(path)
    tokens = (tok(texts, padding="max_length", max_length=model.config.text_config.max_position_embeddings,
                  truncation=True, return_tensors="pt") if siglip
              else tok(texts, padding=True, return_tensors="pt"))
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels["pixel_values"]).pooler_output
        kw = {} if siglip else {"attention_mask": tokens["attention_mask"]}
        txt = model.get_text_features(input_ids=tokens["input_ids"], **kw).pooler_output
    return img, txt


def manual_cls(path, images):
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(path).eval()
    pixels = AutoImageProcessor.from_pretrained(path, backend="pil")(images=images, return_tensors="pt")
    with torch.no_grad():
        return model(pixel_values=pixels["pixel_values"]).last_hidden_state[:, 0]


def test_pure_functions_match_loops() -> None:
    rng = np.random.default_rng(0)
    g, r = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    loop = np.mean([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in r] for a in g])
    assert mean_pairwise_cosine(g, r) == pytest.approx(loop)
    t = rng.normal(size=(4, 6))
    expected = [100 * a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(g, t)]
    np.testing.assert_allclose(clip_t_per_image(g, t), expected)
    with pytest.raises(ConfigError, match="one prompt per image"):
        clip_t_per_image(g, t[:2])


@pytest.mark.parametrize("dino_kind", ["dino", "dinov2"])
def test_clip_i_clip_t_dino_equal_manual_cosines(dirs, dino_kind) -> None:
    gen, refs = random_images(3, seed=1), random_images(2, seed=2, size=(56, 40))
    prompts = ["a dog on a beach", "a dog in snow", "a red dog"]
    result = ClipDinoEvaluator(dirs["clip"], dirs[dino_kind], batch_size=2).score(gen, refs, prompts)
    img, txt = manual_clip(dirs["clip"], gen, prompts)
    ref_img, _ = manual_clip(dirs["clip"], refs, prompts[:1])
    assert result.clip_i == pytest.approx(float(_cos(img, ref_img).mean()), abs=1e-5)
    expected_t = 100 * torch.nn.functional.cosine_similarity(img, txt)
    np.testing.assert_allclose(result.per_image["clip_t"], expected_t.numpy(), atol=1e-4)
    assert result.clip_t == pytest.approx(float(expected_t.mean()), abs=1e-4)
    dino = _cos(manual_cls(dirs[dino_kind], gen), manual_cls(dirs[dino_kind], refs))
    assert result.dino == pytest.approx(float(dino.mean()), abs=1e-5)
    np.testing.assert_allclose(result.per_image["dino"], dino.mean(1).numpy(), atol=1e-5)
    assert result.n_generated == 3 and result.n_references == 2 and not result.notes


def test_model_and_preprocessing_recorded(dirs) -> None:
    ev = ClipDinoEvaluator(dirs["clip"], dirs["dino"])
    result = ev.score(random_images(1), random_images(1, seed=3), "x")
    data = result.to_dict()
    assert data["clip_model"]["model"] == str(dirs["clip"])
    assert data["clip_model"]["preprocessing"]["crop_size"] == {"height": 32, "width": 32}
    assert data["clip_model"]["preprocessing"]["resample"] == "bicubic"
    assert data["dino_model"]["kind"] == "vit" and data["dino_model"]["feature"].startswith("CLS")
    assert json.loads(json.dumps(data)) == data


def test_siglip_text_uses_max_length_padding(dirs) -> None:
    gen = random_images(2, seed=4)
    prompts = ["a cat", "a much longer prompt about a cat"]
    result = ClipDinoEvaluator(clip_model=dirs["siglip"]).score(gen, prompts=prompts)
    img, txt = manual_clip(dirs["siglip"], gen, prompts, siglip=True)
    np.testing.assert_allclose(result.per_image["clip_t"],
                               (100 * torch.nn.functional.cosine_similarity(img, txt)).numpy(), atol=1e-4)
    assert result.clip_i is None and result.dino is None and len(result.notes) == 2


def test_text_batches_restore_input_order(dirs) -> None:
    enc = load_image_encoder(dirs["clip"], batch_size=2)
    texts = ["b", "a very long prompt", "cc", "a mid prompt"]
    together = enc.encode_texts(texts)
    one_by_one = np.concatenate([enc.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_score_subjects_means_over_all_images(dirs) -> None:
    ev = ClipDinoEvaluator(dino_model=dirs["dino"])
    subjects = {"s1": (random_images(1, seed=5), random_images(1, seed=6), None),
                "s2": (random_images(3, seed=7), random_images(2, seed=8), None)}
    report = ev.score_subjects(subjects)
    values = report.subjects["s1"].per_image["dino"] + report.subjects["s2"].per_image["dino"]
    assert report.dino == pytest.approx(np.mean(values)) and report.n_generated == 4
    assert report.clip_t is None


def test_bfloat16_runs_and_stays_close(dirs) -> None:
    gen, refs = random_images(2, seed=9), random_images(2, seed=10)
    full = ClipDinoEvaluator(dino_model=dirs["dino"]).score(gen, refs)
    half = ClipDinoEvaluator(dino_model=dirs["dino"], dtype="bf16").score(gen, refs)
    assert half.dino_model.dtype == "bfloat16"
    assert half.dino == pytest.approx(full.dino, abs=0.05)


def test_argument_errors(dirs, tmp_path) -> None:
    with pytest.raises(ConfigError, match="clip_model and/or dino_model"):
        ClipDinoEvaluator()
    with pytest.raises(ConfigError, match="CLIP/SigLIP"):
        ClipDinoEvaluator(clip_model=dirs["dino"])
    with pytest.raises(ModelLoadError, match="not found"):
        ClipDinoEvaluator(clip_model=str(tmp_path / "missing" / "clip"))
    with pytest.raises(ConfigError, match="dtype"):
        load_image_encoder(dirs["clip"], dtype="float8")
    with pytest.raises(ConfigError, match="2 prompts for 3"):
        ClipDinoEvaluator(clip_model=dirs["clip"]).score(random_images(3), prompts=["a", "b"])
    assert model_source("openai/clip-vit-base-patch32") == ("openai/clip-vit-base-patch32", False)
    assert model_source(dirs["clip"]) == (str(dirs["clip"]), True)


def test_cli_clip_per_subject_folders(dirs, tmp_path) -> None:
    for subject, seed in (("dog", 11), ("cat", 12)):
        for split, n in (("gen", 2), ("ref", 2)):
            (tmp_path / split / subject).mkdir(parents=True)
            for i, im in enumerate(random_images(n, seed=seed + 10 * (split == "ref"))):
                im.save(tmp_path / split / subject / f"{i}.png")
    (tmp_path / "gen" / "cat" / "0.txt").write_text("a cat from a sidecar")
    (tmp_path / "prompts.json").write_text(json.dumps({"dog/0.png": "a dog", "1.png": "a dog again"}))
    app, score = typer.Typer(), typer.Typer()
    register(score)
    app.add_typer(score, name="score")
    args = ["score", "clip", "--generated", str(tmp_path / "gen"), "--references", str(tmp_path / "ref"),
            "--prompts", str(tmp_path / "prompts.json"), "--prompt", "a pet",
            "--clip-model", str(dirs["clip"]), "--dino-model", str(dirs["dino"])]
    res = CliRunner().invoke(app, [*args, "--json", "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data == json.loads((tmp_path / "r.json").read_text())
    assert sorted(data["subjects"]) == ["cat", "dog"] and data["n_generated"] == 4
    ev = ClipDinoEvaluator(dirs["clip"], dirs["dino"])
    from PIL import Image

    cat = [Image.open(tmp_path / "gen" / "cat" / f"{i}.png") for i in range(2)]
    cat_refs = [Image.open(tmp_path / "ref" / "cat" / f"{i}.png") for i in range(2)]
    expected = ev.score(cat, cat_refs, ["a cat from a sidecar", "a dog again"])  # sidecar; then file-name key
    assert data["subjects"]["cat"]["clip_t"] == pytest.approx(expected.clip_t, abs=1e-4)
    assert data["subjects"]["cat"]["dino"] == pytest.approx(expected.dino, abs=1e-5)
    dog_images = [Image.open(tmp_path / "gen" / "dog" / f"{i}.png") for i in range(2)]
    dog = ev.score(dog_images, prompts=["a dog", "a dog again"])
    assert data["subjects"]["dog"]["clip_t"] == pytest.approx(dog.clip_t, abs=1e-4)
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "CLIP-T" in table.output
    bad = CliRunner().invoke(app, ["score", "clip", "--generated", str(tmp_path / "gen")])
    assert bad.exit_code == 2 and "clip_model and/or dino_model" in bad.output
