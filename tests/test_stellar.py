"""Stellar metrics: IPS/SIS vs loops, APS AUC vs scikit-learn, GOA/RFS with a fake detector and with a tiny
OWL-ViT / OWLv2 through the real class, the prompt gate, face back-ends and `vptt score stellar`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from tests.test_clip_dino import manual_clip
from tests.tiny_vision import random_images, save_tiny
from vptt.core.errors import ConfigError
from vptt.evaluators.stellar import (
    AlignedFaceCrops,
    Detection,
    DetectThenEncode,
    IdentityImages,
    InsightFaceEmbedder,
    OwlDetector,
    Relation,
    StellarEvaluator,
    StellarSample,
    attribute_preservation,
    canonical_relation,
    fit_attribute_probes,
    grounding_score,
    identity_preservation,
    identity_stability,
    prompt_following_gate,
    roc_auc,
    spatial_relation_holds,
)
from vptt.sdk.cli.score_stellar import register

# ------------------------------------------------------------------------------------------ fake back-ends

RNG = np.random.default_rng(0)
FACE_TABLE: dict[int, np.ndarray] = {}  # red channel of pixel (0, 0) -> (n_faces, D) embeddings


def face_image(code: int, faces: np.ndarray) -> Image.Image:
    """A solid image whose red value keys its (fake) face embeddings."""
    FACE_TABLE[code] = np.asarray(faces, dtype=float).reshape(-1, 4)
    return Image.new("RGB", (64, 48), (code, 0, 0))


def colour_faces() -> object:
    """Factory used by the CLI test (``--faces tests.test_stellar:colour_faces``)."""
    return lambda image: FACE_TABLE[image.getpixel((0, 0))[0]]


def naive_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_ips_and_sis_equal_loops() -> None:
    gen, r1, r2 = RNG.normal(size=(2, 4)), RNG.normal(size=(3, 4)), RNG.normal(size=(1, 4))
    ips = max(naive_cos(g, r) for g in gen for r in r1)
    assert identity_preservation(gen, r1) == pytest.approx(ips)
    sis = min(max(naive_cos(g, r) for g in gen for r in ref) for ref in (r1, r2))
    assert identity_stability(gen, [r1, r2]) == pytest.approx(sis)
    assert identity_preservation(np.zeros((0, 4)), r1) == 0.0
    assert identity_preservation(gen, np.zeros((0, 4))) == 0.0
    assert identity_stability(gen, [r1, np.zeros((0, 4))]) == 0.0


def test_roc_auc_equals_sklearn_with_ties() -> None:
    for seed in range(50):
        rng = np.random.default_rng(seed)
        y = rng.random(30) < 0.4
        s = rng.integers(0, 5, 30).astype(float)  # heavy ties
        if y.all() or not y.any():
            continue
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(roc_auc(np.ones(4), np.arange(4)))


def _attribute_data(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    labels = {"Male": rng.random(n) < 0.5, "Young": rng.random(n) < 0.5}
    x = rng.normal(size=(n, 4)) * 0.7
    x[:, 0] += np.where(labels["Male"], 1.0, -1.0)
    x[:, 1] += np.where(labels["Young"], 1.0, -1.0)
    return x, {k: v.astype(int) for k, v in labels.items()}


def test_aps_auc_equals_sklearn_on_probe_probabilities() -> None:
    x_train, y_train = _attribute_data(80, 1)
    x_test, y_test = _attribute_data(40, 2)
    probes = fit_attribute_probes(x_train, y_train)
    got = attribute_preservation(probes, x_test, y_test)
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    for name in ("Male", "Young"):
        lr = LogisticRegression(C=1.0, max_iter=1000).fit(norm(x_train), y_train[name])
        assert got[name] == pytest.approx(roc_auc_score(y_test[name], lr.predict_proba(norm(x_test))[:, 1]))
        assert got[name] > 0.8
    gated = attribute_preservation(probes, x_test, y_test, follows_prompt=np.arange(40) >= 20)
    proba = probes["Male"].predict_proba(norm(x_test))[:, 1]
    worst = np.where(np.arange(40) >= 20, proba, 1 - y_test["Male"])
    assert gated["Male"] == pytest.approx(roc_auc_score(y_test["Male"], worst))
    assert gated["Male"] < got["Male"]
    assert fit_attribute_probes(x_train, {"Bald": np.zeros(80)}) == {}  # one class: no probe


def test_evaluator_identity_metrics_with_fake_faces() -> None:
    a0, a1 = RNG.normal(size=(1, 4)), RNG.normal(size=(2, 4))
    g_two, g_none = RNG.normal(size=(2, 4)), np.zeros((0, 4))
    ident = {"A": IdentityImages((face_image(10, a0), face_image(11, a1)))}
    samples = [StellarSample(face_image(20, g_two), "A", reference=0),
               StellarSample(face_image(21, g_none), "A"),
               StellarSample(face_image(22, g_two), "A")]
    ev = StellarEvaluator(faces=colour_faces())
    res = ev.score(samples, ident)
    ips0 = max(naive_cos(g, r) for g in g_two for r in a0)
    ips_all = max(naive_cos(g, r) for g in g_two for r in np.vstack([a0, a1]))
    sis = min(ips0, max(naive_cos(g, r) for g in g_two for r in a1))
    np.testing.assert_allclose(res.per_sample["ips"], [ips0, 0.0, ips_all])
    np.testing.assert_allclose(res.per_sample["sis"], [sis, 0.0, sis])
    assert res.ips == pytest.approx((ips0 + ips_all) / 3)
    assert res.diagnostics["generated_without_face"] == [1]
    gated = ev.score(samples, ident, follows_prompt=[True, True, False])
    np.testing.assert_allclose(gated.per_sample["ips"], [ips0, 0.0, 0.0])
    assert gated.follows_prompt == (True, True, False) and res.goa is None and res.aps is None


def test_evaluator_aps_fits_probes_on_identity_images() -> None:
    x, y = _attribute_data(24, 3)
    identities, samples = {}, []
    for i in range(12):  # 12 identities x 2 real images; one generated image per identity
        attrs = {"Male": int(y["Male"][2 * i]), "Young": int(y["Young"][2 * i])}
        x[2 * i + 1, :2] = x[2 * i, :2]  # both images of an identity share the attribute signal
        pair = (face_image(40 + 2 * i, x[2 * i]), face_image(41 + 2 * i, x[2 * i + 1]))
        identities[f"p{i}"] = IdentityImages(pair, attrs)
        samples.append(StellarSample(face_image(100 + i, x[2 * i] + RNG.normal(size=4) * 0.3), f"p{i}"))
    res = StellarEvaluator(faces=colour_faces()).score(samples, identities)
    real = np.stack([FACE_TABLE[c][0] for i in range(12) for c in (40 + 2 * i, 41 + 2 * i)])
    labels = {a: [identities[f"p{i}"].attributes[a] for i in range(12) for _ in (0, 1)]
              for a in ("Male", "Young")}
    gen = np.stack([FACE_TABLE[100 + i][0] for i in range(12)])
    targets = {a: [identities[f"p{i}"].attributes[a] for i in range(12)] for a in ("Male", "Young")}
    norm = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    for a in ("Male", "Young"):
        lr = LogisticRegression(max_iter=1000).fit(norm(real), labels[a])
        expected = roc_auc_score(targets[a], lr.predict_proba(norm(gen))[:, 1])
        assert res.aps_per_attribute[a] == pytest.approx(expected)
    assert res.aps == pytest.approx(np.mean(list(res.aps_per_attribute.values())))


def test_evaluator_validates_inputs() -> None:
    img = face_image(30, np.ones((1, 4)))
    ev = StellarEvaluator(faces=colour_faces())
    with pytest.raises(ConfigError, match="same attributes"):
        ev.score([StellarSample(img, "A"), StellarSample(img, "B")],
                 {"A": IdentityImages((img,), {"Male": 1}), "B": IdentityImages((img,))})
    with pytest.raises(ConfigError, match="one flag per sample"):
        ev.score([StellarSample(img, "A")], {"A": IdentityImages((img,))}, follows_prompt=[True, False])
    with pytest.raises(ConfigError, match="no real images"):
        ev.score([StellarSample(img, "C")], {"A": IdentityImages((img,))})
    with pytest.raises(ConfigError, match="expected \\(n_faces, D\\)"):
        StellarEvaluator(faces=lambda im: np.ones(4)).score([StellarSample(img, "A")],
                                                            {"A": IdentityImages((img,))})


# ---------------------------------------------------------------------------------------- GOA and RFS


class FakeDetector:
    """Fixed detections per query; records what it was asked."""

    def __init__(self, table: dict[str, list[tuple[float, tuple[float, float, float, float]]]]) -> None:
        self.table, self.asked = table, []

    def __call__(self, image, queries):
        self.asked.append(list(queries))
        return [Detection(q, s, b) for q in queries for s, b in self.table.get(q, [])]


def test_goa_max_score_per_object_role_nouns_skipped() -> None:
    dets = [Detection("hat", 0.2, (0, 0, 1, 1)), Detection("hat", 0.7, (0, 0, 1, 1)),
            Detection("guitar", 0.4, (0, 0, 1, 1)), Detection("man", 0.99, (0, 0, 1, 1))]
    wanted = ["man", "hat", "guitar", "Astronaut", "bicycle"]
    assert grounding_score(dets, wanted) == pytest.approx((0.7 + 0.4 + 0) / 3)
    assert np.isnan(grounding_score(dets, ["woman", "person"]))


@pytest.mark.parametrize(("rel", "s", "o", "holds"), [
    ("left_of", (0, 0, 10, 10), (20, 0, 30, 10), True), ("left_of", (20, 0, 30, 10), (0, 0, 10, 10), False),
    ("right_of", (20, 0, 30, 10), (0, 0, 10, 10), True), ("above", (0, 0, 10, 10), (0, 20, 10, 30), True),
    ("below", (0, 0, 10, 10), (0, 20, 10, 30), False),
    ("on", (2, 0, 8, 12), (0, 10, 10, 30), True), ("on", (2, 0, 8, 8), (0, 10, 10, 30), False),
    ("on", (20, 0, 28, 12), (0, 10, 10, 30), False), ("under", (0, 20, 10, 30), (2, 0, 8, 12), True),
    ("next_to", (0, 0, 10, 10), (14, 2, 24, 12), True), ("next_to", (0, 0, 10, 10), (40, 2, 50, 12), False),
    ("next_to", (0, 0, 10, 10), (14, 20, 24, 30), False),
    ("in_front_of", (0, 5, 10, 20), (5, 0, 15, 15), True), ("behind", (0, 5, 10, 20), (5, 0, 15, 15), False),
    ("behind", (5, 0, 15, 15), (0, 5, 10, 20), True), ("in_front_of", (0, 0, 5, 5), (10, 10, 20, 20), False),
    ("in", (2, 2, 6, 6), (0, 0, 10, 10), True), ("in", (8, 8, 16, 16), (0, 0, 10, 10), False),
])
def test_spatial_geometry(rel, s, o, holds) -> None:
    assert spatial_relation_holds(rel, s, o) is holds


def test_relation_aliases() -> None:
    assert canonical_relation("is to the LEFT of") == "left_of"
    assert canonical_relation("beneath") == "under" and canonical_relation("on top of") == "on"
    assert canonical_relation("riding") is None and canonical_relation("holding") is None


def test_rfs_geometry_judge_and_unscored() -> None:
    det = FakeDetector({"man": [(0.9, (0, 0, 10, 20))], "dog": [(0.8, (30, 5, 40, 20))],
                        "cat": [(0.05, (50, 0, 60, 10))], "hat": [(0.6, (1, 0, 9, 5))]})
    rels = (Relation("man", "left of", "dog"), Relation("man", "right of", "dog"),
            Relation("man", "next to", "cat"), Relation("man", "holding", "dog"))
    img = Image.new("RGB", (64, 32))
    sample = StellarSample(img, "A", objects=("man", "hat", "dog"), relations=rels)
    no_judge = StellarEvaluator(detector=det).score([sample], {"A": IdentityImages((img,))})
    assert [r.score for r in no_judge.relations] == [1.0, 0.0, 0.0, None]
    assert no_judge.relations[2].reason == "not detected: cat"  # 0.05 < detection_threshold 0.1
    assert no_judge.rfs == pytest.approx(1 / 3) and no_judge.diagnostics["unscored_relations"] == 1
    assert no_judge.goa == pytest.approx((0.6 + 0.8) / 2)
    assert no_judge.diagnostics["goa_skipped_role_nouns"] == ["man"]
    assert det.asked[0] == ["hat", "dog", "man", "cat"]
    seen = []
    judged = StellarEvaluator(detector=det, judge=lambda im, r: seen.append(r) or 0.5).score(
        [sample], {"A": IdentityImages((img,))})
    assert seen == [rels[3]] and judged.relations[3].method == "judge"
    assert judged.rfs == pytest.approx(1.5 / 4)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        StellarEvaluator(detector=det, judge=lambda im, r: 3.0).score([sample], {"A": IdentityImages((img,))})


# ------------------------------------------------------------------------------------- real (tiny) models


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {kind: save_tiny(root, kind) for kind in ("owlvit", "owlv2", "clip")}


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
def test_owl_detector_scores_and_boxes_match_manual_forward(dirs, kind) -> None:
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    image = random_images(1, seed=3, size=(48, 32))[0]
    queries = ["cat", "hat", "guitar"]
    det = OwlDetector(dirs[kind], query_template="{}", top_k=2)
    got = det(image, queries)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(dirs[kind]).eval()
    proc = AutoProcessor.from_pretrained(dirs[kind])
    with torch.no_grad():
        out = model(**proc(text=[queries], images=[image], return_tensors="pt"))
    probs, boxes = torch.sigmoid(out.logits[0]), out.pred_boxes[0]
    scale = torch.tensor([48, 48, 48, 48] if kind == "owlv2" else [48, 32, 48, 32], dtype=torch.float32)
    for q, query in enumerate(queries):
        mine = [d for d in got if d.label == query]
        top = torch.from_numpy(np.argsort(-probs[:, q].numpy(), kind="stable")[:2].copy())  # ties: low index
        assert [d.score for d in mine] == pytest.approx(probs[top, q].tolist(), abs=1e-6)
        cx, cy, w, h = boxes[top[0]]
        expected = (torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * scale).clamp(min=0)
        expected = torch.minimum(expected, torch.tensor([48.0, 32.0, 48.0, 32.0]))
        assert mine[0].box == pytest.approx(expected.tolist(), abs=1e-4)
    sample = StellarSample(image, "A", objects=("woman", "cat", "hat"))
    res = StellarEvaluator(detector=det).score([sample], {"A": IdentityImages((image,))})
    assert res.goa == pytest.approx(float((probs[:, 0].max() + probs[:, 1].max()) / 2), abs=1e-6)
    assert res.models["detector"] == str(dirs[kind])


def test_prompt_gate_with_tiny_clip(dirs) -> None:
    gen, refs = random_images(4, seed=20), random_images(4, seed=21)
    prompts = ["a dog", "a cat in a hat", "two birds", "a man on a horse"]
    samples = [StellarSample(g, f"p{i}", prompt=p) for i, (g, p) in enumerate(zip(gen, prompts))]
    identities = {f"p{i}": IdentityImages((r,)) for i, r in enumerate(refs)}
    ev = StellarEvaluator(detector=FakeDetector({}), gate_clip=dirs["clip"], gate_std=0.5)
    res = ev.score(samples, identities)
    img, txt = manual_clip(dirs["clip"], gen, prompts)
    ref_img, _ = manual_clip(dirs["clip"], refs, prompts)
    clip_t = torch.nn.functional.cosine_similarity(img, txt).numpy()
    clip_n = torch.nn.functional.cosine_similarity(ref_img, txt).numpy()
    expected = clip_t > clip_n + 0.5 * np.std(clip_n, ddof=1)
    assert res.follows_prompt == tuple(bool(e) for e in expected)
    assert list(prompt_following_gate([0.3, 0.31], [0.3, 0.29], n_std=0.0)) == [False, True]


def test_face_backends() -> None:
    image = Image.new("RGB", (40, 30), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 20, 30))

    def crops_to_features(faces):
        rows = [[f.size[0], f.size[1], np.asarray(f)[..., 0].mean() + 1] for f in faces]
        return np.array(rows, dtype=float)

    faces = [Detection("face", 0.5, (20, 0, 40, 30)), Detection("face", 0.9, (0, 0, 20, 30)),
             Detection("face", 0.1, (0, 0, 5, 5))]
    emb = DetectThenEncode(lambda im: faces, crops_to_features, min_score=0.3)(image)
    expected = np.array([[20, 30, 256], [20, 30, 1]], dtype=float)
    np.testing.assert_allclose(emb, expected / np.linalg.norm(expected, axis=1, keepdims=True))  # best first
    assert DetectThenEncode(lambda im: [], crops_to_features)(image).shape[0] == 0
    whole = AlignedFaceCrops(crops_to_features)(image)
    assert whole.shape == (1, 3)

    class FakeApp:  # InsightFace FaceAnalysis: app.get(BGR array) -> faces
        def get(self, bgr):
            assert bgr[0, 0, 2] == 255 and bgr[0, 0, 0] == 0  # red arrives in the last (R of BGR) channel
            from types import SimpleNamespace

            return [SimpleNamespace(det_score=s, normed_embedding=[s, 1 - s]) for s in (0.2, 0.8, 0.6)]

    emb = InsightFaceEmbedder(FakeApp(), min_score=0.5)(image)
    np.testing.assert_allclose(emb, [[0.8, 0.2], [0.6, 0.4]])
    with pytest.raises(ConfigError, match="faces="):
        StellarEvaluator()


def test_cli_stellar(dirs, tmp_path) -> None:
    x = RNG.normal(size=(3, 4))
    for ident, code, vec in (("anna", 60, x[0]), ("ben", 61, x[1])):
        (tmp_path / "ids" / ident).mkdir(parents=True)
        face_image(code, vec).save(tmp_path / "ids" / ident / "0.png")
    face_image(62, x[0] + 0.01).save(tmp_path / "g0.png")
    face_image(63, np.zeros((0, 4))).save(tmp_path / "g1.png")
    lines = [{"image": "g0.png", "identity": "anna", "prompt": "anna left of a dog",
              "objects": ["dog", "woman"], "relations": [["woman", "left of", "dog"]]},
             {"image": "g1.png", "identity": "ben", "objects": ["hat"]}]
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    app, score = typer.Typer(), typer.Typer()
    register(score)
    app.add_typer(score, name="score")
    args = ["score", "stellar", "--samples", str(tmp_path / "s.jsonl"), "--identities", str(tmp_path / "ids"),
            "--faces", "tests.test_stellar:colour_faces", "--detector", str(dirs["owlvit"])]
    res = CliRunner().invoke(app, [*args, "--json", "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data == json.loads((tmp_path / "r.json").read_text())
    assert data["per_sample"]["ips"] == pytest.approx([1.0, 0.0], abs=1e-3)
    assert len(data["relations"]) == 1 and data["relations"][0]["method"] == "geometry"
    assert 0.0 <= data["goa"] <= 1.0
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "IPS" in table.output
    bad = CliRunner().invoke(app, [*args[:6], "--faces", "nowhere:thing"])
    assert bad.exit_code == 2 and "cannot import" in bad.output
