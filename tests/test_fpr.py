"""Finer-Personalization Rank: AP vs scikit-learn (ties included), mAP/Recall@k vs naive loops, gallery
hygiene (references never in the gallery), pluggable encoders (callable, tiny CLIP/DINOv2/SigLIP) and CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import typer
from PIL import Image
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from tests.tiny_vision import random_images, save_tiny
from vptt.core.errors import ConfigError
from vptt.evaluators._image_encoders import load_image_encoder
from vptt.evaluators.fpr import (
    FinerPersonalizationRank,
    Gallery,
    LabelledImage,
    ReferenceInGalleryError,
    average_precision,
    build_gallery,
    cmc_curve,
    first_relevant_rank,
    rank_features,
    same_identity_cosine,
    scan_labelled_dir,
)
from vptt.sdk.cli.score_fpr import register

# ------------------------------------------------------------------------------------------ naive references


def naive_ap(dist: np.ndarray, rel: np.ndarray) -> float:
    """sum_k P@k rel_k / n_rel with a plain loop (valid without ties)."""
    order = np.argsort(dist, kind="stable")
    hits, total = 0, 0.0
    for k, j in enumerate(order, start=1):
        if rel[j]:
            hits += 1
            total += hits / k
    return total / rel.sum() if rel.sum() else 0.0


def naive_first_rank(dist: np.ndarray, rel: np.ndarray) -> int:
    for k, j in enumerate(np.argsort(dist, kind="stable"), start=1):
        if rel[j]:
            return k
    return 0


def test_ap_equals_sklearn_per_query_with_ties() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        n_gallery = int(rng.integers(1, 15))
        dist = rng.integers(0, 4, size=(4, n_gallery)) / 4.0  # 4 levels: many ties
        rel = rng.random((4, n_gallery)) < 0.4
        ours = average_precision(dist, rel)
        for q in range(4):
            if rel[q].any():
                assert ours[q] == pytest.approx(average_precision_score(rel[q], -dist[q]), abs=1e-12)
                checked += 1
            else:
                assert ours[q] == 0.0
    assert checked > 800


def test_ap_tie_block_gets_last_rank_precision() -> None:
    # one block of 3 tied items holding 2 relevant ones: both get P@3 = 2/3
    dist, rel = np.array([0.2, 0.2, 0.2]), np.array([True, True, False])
    assert average_precision(dist, rel)[0] == pytest.approx(2 / 3)
    assert average_precision_score(rel, -dist) == pytest.approx(2 / 3)
    assert naive_ap(dist, rel) == pytest.approx(1.0)  # relevant-first ordering: 1 and 1
    # a block after a miss: ranks 2-4 tied, relevant at two of them -> both P@4 = 2/4
    dist, rel = np.array([0.1, 0.2, 0.2, 0.2]), np.array([False, True, True, False])
    assert average_precision(dist, rel)[0] == pytest.approx(0.5)
    assert average_precision_score(rel, -dist) == pytest.approx(0.5)
    assert naive_ap(dist, rel) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_ap_and_ranks_equal_naive_loops_without_ties() -> None:
    rng = np.random.default_rng(1)
    dist = rng.random((30, 25))
    rel = rng.random((30, 25)) < 0.2
    rel[0] = False
    np.testing.assert_allclose(average_precision(dist, rel), [naive_ap(d, r) for d, r in zip(dist, rel)])
    ranks = first_relevant_rank(dist, rel)
    assert list(ranks) == [naive_first_rank(d, r) for d, r in zip(dist, rel)]
    curve = cmc_curve(ranks, 10)
    for k in range(1, 11):
        hits = [any(r[j] for j in np.argsort(d)[:k]) for d, r in zip(dist, rel)]
        assert curve[k - 1] == pytest.approx(np.mean(hits))


def test_first_relevant_rank_is_last_rank_of_its_tie_block() -> None:
    dist = np.array([[0.5, 0.1, 0.1, 0.9], [0.3, 0.3, 0.3, 0.3], [0.2, 0.4, 0.4, 0.1]])
    rel = np.array([[False, True, False, False], [False] * 4, [True, False, False, False]])
    assert list(first_relevant_rank(dist, rel)) == [2, 0, 2]


def test_same_identity_cosine_matches_loop() -> None:
    rng = np.random.default_rng(2)
    cos, rel = rng.uniform(-1, 1, (6, 9)), rng.random((6, 9)) < 0.3
    rel[3] = False
    got = same_identity_cosine(cos, rel)
    for q in range(6):
        if rel[q].any():
            assert got[q] == pytest.approx(np.mean([cos[q, j] for j in range(9) if rel[q, j]]))
        else:
            assert np.isnan(got[q])


def test_rank_features_groups_match_naive_loop() -> None:
    rng = np.random.default_rng(3)
    gal = rng.normal(size=(40, 8))
    gal_ids = [f"id{i % 5}" for i in range(40)]
    gal_groups = ["birds" if i < 20 else "cars" for i in range(40)]
    qry = rng.normal(size=(12, 8))
    q_ids = [f"id{i % 6}" for i in range(12)]  # id5 has no gallery images
    q_groups = ["birds" if i % 2 else "cars" for i in range(12)]
    per, groups = rank_features(qry, q_ids, q_groups, gal, gal_ids, gal_groups, ks=(1, 3))
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected_ap = []
    for q in range(12):
        cols = [j for j in range(40) if gal_groups[j] == q_groups[q]]
        d = 1 - norm(gal[cols]) @ norm(qry[q:q + 1])[0]
        r = np.array([gal_ids[j] == q_ids[q] for j in cols])
        expected_ap.append(naive_ap(d, r))
        assert per["rank"][q] == naive_first_rank(d, r)
    np.testing.assert_allclose(per["ap"], expected_ap)
    for g in ("birds", "cars"):
        idx = [q for q in range(12) if q_groups[q] == g]
        assert groups[g].map == pytest.approx(np.mean([expected_ap[q] for q in idx]))
        assert groups[g].recall_at_k[3] == pytest.approx(np.mean([0 < per["rank"][q] <= 3 for q in idx]))
        assert groups[g].n_gallery == 20


# ------------------------------------------------------------------------------------------------ gallery


def _solid(rgb: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> Image.Image:
    return Image.new("RGB", size, rgb)


@pytest.fixture()
def image_tree(tmp_path):
    """gallery/<id>/*.png, generated/<id>/*.png, refs/a/ref_copy.png (a renamed copy of gallery a/0.png)."""
    rng = np.random.default_rng(4)
    colours = {"a": (200, 30, 30), "b": (30, 200, 30), "c": (30, 30, 200)}
    for ident, base in colours.items():
        for split, n in (("gallery", 4), ("generated", 2)):
            (tmp_path / split / ident).mkdir(parents=True)
            for i in range(n):
                px = np.clip(np.array(base) + rng.integers(-25, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(tmp_path / split / ident / f"{i}.png")
    (tmp_path / "refs" / "a").mkdir(parents=True)
    shutil.copy(tmp_path / "gallery" / "a" / "0.png", tmp_path / "refs" / "a" / "ref_copy.png")
    return tmp_path


def test_build_gallery_excludes_references_by_path_and_by_pixels(image_tree) -> None:
    cands = scan_labelled_dir(image_tree / "gallery")
    by_path = build_gallery(cands, [image_tree / "gallery" / "b" / "1.png"])
    by_pixels = build_gallery(cands, [image_tree / "refs" / "a" / "ref_copy.png"])  # renamed copy
    pil_ref = build_gallery(cands, [Image.open(image_tree / "gallery" / "c" / "2.png")])
    assert len(cands) == 12
    for gallery, gone in ((by_path, "b/1.png"), (by_pixels, "a/0.png"), (pil_ref, "c/2.png")):
        assert len(gallery.items) == 11 and len(gallery.excluded) == 1
        assert gallery.excluded[0].endswith(gone)
        assert all(not it.key.endswith(gone) for it in gallery.items)


def test_build_gallery_raise_mode_and_direct_construction_refuse_references(image_tree) -> None:
    cands = scan_labelled_dir(image_tree / "gallery")
    with pytest.raises(ReferenceInGalleryError, match="reference image"):
        build_gallery(cands, [image_tree / "refs" / "a" / "ref_copy.png"], on_reference="raise")
    clean = build_gallery(cands, [_solid((1, 2, 3))], on_reference="raise")
    assert len(clean.items) == 12 and not clean.excluded
    with pytest.raises(ReferenceInGalleryError):
        Gallery(clean.items, clean.digests, reference_keys=frozenset({clean.items[0].key}))
    with pytest.raises(ConfigError, match="empty"):
        build_gallery(cands[:1], [cands[0].image])
    with pytest.raises(ConfigError, match="on_reference"):
        build_gallery(cands, [], on_reference="keep")  # type: ignore[arg-type]


def test_scan_labelled_dir_reads_groups(tmp_path) -> None:
    for group, ident in (("birds", "x"), ("birds", "y"), ("cars", "z")):
        (tmp_path / group / ident).mkdir(parents=True)
        _solid((len(ident), 0, 0)).save(tmp_path / group / ident / "0.png")
    items = scan_labelled_dir(tmp_path)
    assert [(it.group, it.identity) for it in items] == [("birds", "x"), ("birds", "y"), ("cars", "z")]
    with pytest.raises(ConfigError, match="no images"):
        scan_labelled_dir(tmp_path / "birds" / "x")


def mean_colour(images: list[Image.Image]) -> np.ndarray:
    """A toy 'Re-ID model': mean RGB minus grey."""
    return np.stack([np.asarray(im, dtype=float).reshape(-1, 3).mean(0) - 128 for im in images])


def test_ranker_with_callable_encoder_matches_feature_core(image_tree) -> None:
    ref = image_tree / "refs" / "a" / "ref_copy.png"
    gallery = build_gallery(scan_labelled_dir(image_tree / "gallery"), [ref])
    queries = scan_labelled_dir(image_tree / "generated")
    result = FinerPersonalizationRank(mean_colour, ks=(1, 2)).score(queries, gallery)
    items = gallery.items
    per, _ = rank_features(mean_colour([q.load() for q in queries]), [q.identity for q in queries],
                           [q.group for q in queries], mean_colour([g.load() for g in items]),
                           [g.identity for g in items], [g.group for g in items], ks=(1, 2))
    assert result.map == pytest.approx(per["ap"].mean())
    assert result.map == pytest.approx(1.0)  # colours separate identities perfectly
    assert result.recall_at_k == {1: 1.0, 2: 1.0}
    assert result.encoder.kind == "callable" and result.encoder.model == "callable:mean_colour"
    assert len(result.diagnostics["excluded_references"]) == 1
    assert result.to_dict()["groups"]["all"]["n_gallery"] == 11


def test_query_without_positives_scores_zero_and_is_reported(image_tree) -> None:
    gallery = build_gallery(scan_labelled_dir(image_tree / "gallery"), [])
    stranger = LabelledImage(_solid((90, 90, 90)), identity="nobody", key="gen/nobody.png")
    result = FinerPersonalizationRank(mean_colour).score([stranger], gallery)
    assert result.per_query_ap == (0.0,) and result.per_query_rank == (0,)
    assert result.diagnostics["queries_without_positives"] == ["gen/nobody.png"]
    assert np.isnan(result.same_identity_cosine) and result.to_dict()["same_identity_cosine"] is None
    with pytest.raises(ConfigError, match="no gallery images"):
        FinerPersonalizationRank(mean_colour).score([LabelledImage(_solid((1, 1, 1)), "a", group="cars")],
                                                    gallery)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {kind: save_tiny(root, kind) for kind in ("clip", "dinov2", "siglip")}


@pytest.mark.parametrize("kind", ["clip", "dinov2", "siglip"])
def test_ranker_with_tiny_transformers_encoders(tiny_dirs, kind) -> None:
    gal_imgs, q_imgs = random_images(6, seed=5), random_images(3, seed=6)
    gallery = build_gallery([LabelledImage(im, f"id{i % 3}") for i, im in enumerate(gal_imgs)], [])
    queries = [LabelledImage(im, f"id{i}", key=f"q{i}") for i, im in enumerate(q_imgs)]
    ranker = FinerPersonalizationRank(tiny_dirs[kind], batch_size=4)
    result = ranker.score(queries, gallery)
    enc = load_image_encoder(tiny_dirs[kind])
    per, _ = rank_features(enc(q_imgs), [q.identity for q in queries], ["all"] * 3, enc(gal_imgs),
                           [g.identity for g in gallery.items], ["all"] * 6)
    np.testing.assert_allclose(result.per_query_ap, per["ap"], atol=1e-6)
    assert result.encoder.kind == kind and result.encoder.preprocessing["processor"].endswith("Pil")


def test_cli_fpr_excludes_reference_and_writes_json(image_tree, tiny_dirs) -> None:
    app, score = typer.Typer(), typer.Typer()
    register(score)
    app.add_typer(score, name="score")
    out = image_tree / "fpr.json"
    args = ["score", "fpr", "--gallery", str(image_tree / "gallery"),
            "--generated", str(image_tree / "generated"), "--references", str(image_tree / "refs"),
            "--encoder", str(tiny_dirs["clip"]), "--k", "1", "--k", "3"]
    res = CliRunner().invoke(app, [*args, "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data == json.loads(out.read_text())
    assert data["diagnostics"]["n_gallery"] == 11 and len(data["per_query_ap"]) == 6
    assert set(data["recall_at_k"]) == {"1", "3"}
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "mAP" in table.output and "excluded 1 reference" in table.output
    refused = CliRunner().invoke(app, [*args, "--on-reference", "raise"])
    assert refused.exit_code == 2 and "reference image" in refused.output
