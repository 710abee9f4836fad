"""Stellar metrics (arXiv:2312.06116) for human-centric personalized generation, plus this project's RFS.

Definitions (conventions of the Stellar reference code, ``docs/evaluators/stellar.md``):

* **IPS** (identity preservation): ``max cos(g, r)`` over every face ``g`` found in the generated image and
  every face ``r`` in the reference image(s) used for generation; 0 when either side has no face.
* **SIS** (stability of identity): ``min`` over all real images of the identity of the IPS against that one
  image: the worst case over the subject's photos.
* **APS** (attribute preservation): per attribute one ``sklearn`` ``LogisticRegression`` probe on face
  embeddings, fitted on the identities' real images (their highest-scoring face) and their labels (or
  passed in pre-fitted); each generated image's face is scored by the probe against its identity's label,
  ROC-AUC per attribute, averaged over attributes with both classes present. Stellar thresholds the probe
  (``predict``); we rank by ``predict_proba``, the usual input of an AUC. Images without a face are left out.
* **GOA** (grounding objects): an open-vocabulary detector (OWL-ViT / OWLv2) scores each wanted object;
  per object the max score over its boxes, averaged over the image's objects. Role nouns that name the
  subject itself (:data:`ROLE_NOUNS`: person, man, woman, ..., doctor, astronaut, ...) are skipped.
* **Prompt-following gate** (Stellar's analysis): an image follows its prompt when
  ``clip_t > clip_n + n_std * std(clip_n)``, where ``clip_t = cos(image, prompt)``,
  ``clip_n = cos(reference image, prompt)`` and ``std`` is over the evaluated set (ddof=1). Images failing it
  get IPS = SIS = 0 and, in APS, the worst score (``1 - label``; Stellar negates the prediction).

**RFS (relation fidelity) - this project's definition.** The Stellar authors never released RFS. Here,
each ``(subject, relation, object)`` of a prompt is scored on the generated image:

1. The relation phrase is normalised (lower case, leading ``is``/``are`` dropped) and looked up in
   :data:`SPATIAL_ALIASES`. Spatial relations are judged by box geometry on the detector's best box for the
   subject and for the object (scores ``>= detection_threshold``); either missing scores 0.
2. Geometry, image coordinates (y grows downward), boxes ``(x0, y0, x1, y1)`` with centre ``(cx, cy)``:
   ``left_of``: S.cx < O.cx. ``right_of``: S.cx > O.cx. ``above``: S.cy < O.cy. ``below``: S.cy > O.cy.
   ``on``: the boxes overlap horizontally, S.cy < O.cy and S.y1 >= O.y0 (S rests on O's top edge or
   lower). ``under``: horizontal overlap and S.cy > O.cy. ``next_to``: vertical overlap and a horizontal
   gap ``<= 0.5 * max(S.w, O.w)``. ``in_front_of``: the boxes intersect and S.y1 > O.y1 (S's base is
   nearer the camera on a ground plane). ``behind``: they intersect and S.y1 < O.y1. ``in``: at least half
   of S's area lies inside O. "Overlap" means a positive-length intersection of the intervals.
3. Any other relation is passed to an optional judge callable ``judge(image, relation) -> float in [0, 1]``
   (e.g. a VLM); without a judge, or when it returns ``None``, the relation is reported as *unscored*.
4. RFS of an image = mean of its scored relations; overall RFS = mean over all scored relations.

Face detection and face encoding are pluggable (:class:`FaceDetector`, :class:`FaceEncoder`, combined by
:class:`DetectThenEncode`, or an InsightFace ``FaceAnalysis`` via :class:`InsightFaceEmbedder`); nothing
guesses a face. :class:`AlignedFaceCrops` treats the whole image as the face and is only for inputs that
are already aligned face crops - it must be chosen explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from vptt.core.errors import ConfigError, ModelLoadError
from vptt.evaluators._image_encoders import (
    HFImageEncoder,
    ImageEncoder,
    ModelSource,
    cosine_matrix,
    encode,
    l2_normalize,
    load_image_encoder,
    model_source,
    quiet_loading,
    resolve_device,
    resolve_dtype,
    to_jsonable,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

ROLE_NOUNS = frozenset({
    "person", "persons", "people", "man", "men", "woman", "women", "boy", "boys", "girl", "girls", "child",
    "children", "kid", "kids", "guy", "lady", "gentleman", "human", "individual", "someone", "subject",
    "clown", "businessman", "businesswoman", "doctor", "nurse", "cop", "policeman", "policewoman",
    "firefighter", "fireman", "soldier", "captain", "admiral", "scientist", "knight", "dj", "pharaoh",
    "egyptian pharaoh", "king", "queen", "emperor", "astronaut", "cowboy", "wizard", "pilot", "pope",
    "president", "sumo fighter", "chef", "teacher", "student",
})
SPATIAL_ALIASES: dict[str, tuple[str, ...]] = {
    "left_of": ("left of", "to the left of", "on the left of", "on the left side of"),
    "right_of": ("right of", "to the right of", "on the right of", "on the right side of"),
    "above": ("above", "over"),
    "below": ("below",),
    "on": ("on", "on top of", "atop", "upon", "sitting on", "standing on", "lying on"),
    "under": ("under", "underneath", "beneath"),
    "next_to": ("next to", "beside", "near", "by", "alongside", "close to"),
    "in_front_of": ("in front of",),
    "behind": ("behind", "in back of"),
    "in": ("in", "inside", "inside of", "within"),
}
_ALIAS_TO_CANONICAL = {alias: name for name, aliases in SPATIAL_ALIASES.items() for alias in aliases}
BoxT = tuple[float, float, float, float]


# ------------------------------------------------------------------------------------------ data, protocols


@dataclass(frozen=True)
class Detection:
    """One detected box: ``label`` (the query it answers), ``score`` in [0, 1], ``box`` (x0, y0, x1, y1)."""

    label: str
    score: float
    box: BoxT


@dataclass(frozen=True)
class Relation:
    """A ``(subject, predicate, object)`` triple from the prompt, e.g. ``("man", "left of", "dog")``."""

    subject: str
    predicate: str
    object: str


class FaceDetector(Protocol):
    """Finds faces: ``detector(image) -> [Detection(label="face", score, box), ...]``."""

    def __call__(self, image: Image.Image) -> Sequence[Detection]: ...


class FaceEncoder(Protocol):
    """Face-recognition embeddings of face crops: ``encoder([crop, ...]) -> (N, D)``."""

    def __call__(self, faces: Sequence[Image.Image]) -> np.ndarray: ...


class FaceEmbedder(Protocol):
    """All faces of an image as ``(n_faces, D)`` embeddings, best detection first (``(0, D)``: none)."""

    def __call__(self, image: Image.Image) -> np.ndarray: ...


class ObjectDetector(Protocol):
    """Open-vocabulary detection: ``detector(image, queries) -> [Detection(label=query, ...), ...]``."""

    def __call__(self, image: Image.Image, queries: Sequence[str]) -> Sequence[Detection]: ...


RelationJudge = Callable[["Image.Image", Relation], "float | None"]


class DetectThenEncode:
    """A :class:`FaceEmbedder` from a face detector and a face encoder.

    Args:
        detector: Returns face boxes with scores.
        encoder: Embeds face crops (e.g. ArcFace / FaceNet wrapped as a callable).
        min_score: Faces scoring below are ignored (Stellar: 0.9 for MTCNN).
        margin: Crop enlargement on each side, as a fraction of the box size.
    """

    def __init__(self, detector: FaceDetector, encoder: FaceEncoder, *, min_score: float = 0.0,
                 margin: float = 0.0) -> None:
        self.detector, self.encoder, self.min_score, self.margin = detector, encoder, min_score, margin

    def __call__(self, image: Image.Image) -> np.ndarray:
        faces = sorted((d for d in self.detector(image) if d.score >= self.min_score), key=lambda d: -d.score)
        if not faces:
            return np.zeros((0, 0))
        return encode(self.encoder, [image.crop(_expand(d.box, self.margin, image.size)) for d in faces])


class AlignedFaceCrops:
    """The whole image is one face. ONLY for inputs that are already aligned face crops (CelebA-HQ style).

    Generated scenes are not face crops: give those a real detector through :class:`DetectThenEncode`.
    """

    def __init__(self, encoder: FaceEncoder | ImageEncoder) -> None:
        self.encoder = encoder

    def __call__(self, image: Image.Image) -> np.ndarray:
        return encode(self.encoder, [image])


class InsightFaceEmbedder:
    """Adapter for an InsightFace ``FaceAnalysis`` app (``app.get(bgr) -> faces`` with ``det_score``,
    ``normed_embedding``); the caller builds and prepares the app, this module imports nothing of it."""

    def __init__(self, app: Any, *, min_score: float = 0.0) -> None:
        self.app, self.min_score = app, min_score

    def __call__(self, image: Image.Image) -> np.ndarray:
        bgr = np.asarray(image.convert("RGB"))[:, :, ::-1].copy()
        faces = [f for f in self.app.get(bgr) if f.det_score >= self.min_score]
        faces.sort(key=lambda f: -f.det_score)
        return np.stack([np.asarray(f.normed_embedding, float) for f in faces]) if faces else np.zeros((0, 0))


def _expand(box: BoxT, margin: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return (max(0, int(x0 - dx)), max(0, int(y0 - dy)), min(size[0], int(round(x1 + dx))),
            min(size[1], int(round(y1 + dy))))


# ----------------------------------------------------------------------------------------------- pure core


def identity_preservation(generated_faces: np.ndarray, reference_faces: np.ndarray) -> float:
    """IPS: max cosine over (generated face x reference face) pairs; 0 if either has no face."""
    if len(generated_faces) == 0 or len(reference_faces) == 0:
        return 0.0
    return float(cosine_matrix(generated_faces, reference_faces).max())


def identity_stability(generated_faces: np.ndarray, identity_faces: Sequence[np.ndarray]) -> float:
    """SIS: min over the identity's images of the IPS against each one (0 if there are none)."""
    return min((identity_preservation(generated_faces, f) for f in identity_faces), default=0.0)


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic with mid-ranks for ties; NaN when one class is absent."""
    from scipy.stats import rankdata

    y, s = np.asarray(y_true).astype(bool), np.asarray(y_score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((rankdata(s)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit_attribute_probes(features: np.ndarray, labels: Mapping[str, Sequence[int]], *, C: float = 1.0,
                         max_iter: int = 1000) -> dict[str, Any]:
    """One L2-regularised ``LogisticRegression`` per attribute on L2-normalised face embeddings.

    Attributes whose training labels hold a single class get no probe (left out of the result).
    """
    from sklearn.linear_model import LogisticRegression

    x = l2_normalize(features)
    probes = {}
    for name, y in labels.items():
        y = np.asarray(y).astype(int)
        if len(y) != len(x):
            raise ConfigError(f"attribute {name!r}: {len(y)} labels for {len(x)} face embeddings")
        if len(np.unique(y)) == 2:
            probes[name] = LogisticRegression(C=C, max_iter=max_iter).fit(x, y)
    return probes


def attribute_preservation(probes: Mapping[str, Any], features: np.ndarray,
                           targets: Mapping[str, Sequence[int]],
                           follows_prompt: np.ndarray | None = None) -> dict[str, float]:
    """Per-attribute ROC-AUC of the probes' probabilities on generated faces against the identities' labels.

    Rows failing the prompt gate (``follows_prompt`` False) get the worst score ``1 - label``. Attributes
    with no probe or a single target class are left out.
    """
    x = l2_normalize(features) if len(features) else features
    out = {}
    for name, probe in probes.items():
        y = np.asarray(targets[name]).astype(int) if name in targets else None
        if y is None or len(np.unique(y)) < 2:
            continue
        score = probe.predict_proba(x)[:, list(probe.classes_).index(1)]
        if follows_prompt is not None:
            score = np.where(follows_prompt, score, 1.0 - y)
        out[name] = roc_auc(y, score)
    return out


def best_per_label(detections: Sequence[Detection], labels: Sequence[str]) -> dict[str, Detection | None]:
    """Highest-scoring detection of each label (None if the detector found none)."""
    best: dict[str, Detection | None] = dict.fromkeys(labels)
    for det in detections:
        current = best.get(det.label)
        if det.label in best and (current is None or det.score > current.score):
            best[det.label] = det
    return best


def wanted_objects(objects: Sequence[str]) -> list[str]:
    """Objects to ground: duplicates and :data:`ROLE_NOUNS` removed (case-insensitive)."""
    return [o for o in dict.fromkeys(o.strip() for o in objects) if o and o.lower() not in ROLE_NOUNS]


def grounding_score(detections: Sequence[Detection], objects: Sequence[str]) -> float:
    """GOA of one image: mean over wanted objects of the max detection score (0 if undetected).

    NaN when the image has no wanted object.
    """
    wanted = wanted_objects(objects)
    best = best_per_label(detections, wanted)
    scores = [0.0 if (det := best[o]) is None else det.score for o in wanted]
    return float(np.mean(scores)) if scores else float("nan")


def canonical_relation(predicate: str) -> str | None:
    """The spatial relation a phrase names (``"to the left of"`` -> ``"left_of"``), None if not spatial."""
    text = re.sub(r"\s+", " ", predicate.lower()).strip(" .,;")
    text = re.sub(r"^(is|are) ", "", text)
    return _ALIAS_TO_CANONICAL.get(text)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return min(a1, b1) - max(a0, b0)


def spatial_relation_holds(relation: str, s: BoxT, o: BoxT) -> bool:
    """Whether canonical ``relation`` holds between subject box ``s`` and object box ``o`` (module doc)."""
    scx, scy, ocx, ocy = (s[0] + s[2]) / 2, (s[1] + s[3]) / 2, (o[0] + o[2]) / 2, (o[1] + o[3]) / 2
    h_ov, v_ov = _overlap(s[0], s[2], o[0], o[2]), _overlap(s[1], s[3], o[1], o[3])
    inter = max(h_ov, 0.0) * max(v_ov, 0.0)
    rules = {
        "left_of": lambda: scx < ocx, "right_of": lambda: scx > ocx,
        "above": lambda: scy < ocy, "below": lambda: scy > ocy,
        "on": lambda: h_ov > 0 and scy < ocy and s[3] >= o[1],
        "under": lambda: h_ov > 0 and scy > ocy,
        "next_to": lambda: v_ov > 0 and -h_ov <= 0.5 * max(s[2] - s[0], o[2] - o[0]),
        "in_front_of": lambda: inter > 0 and s[3] > o[3], "behind": lambda: inter > 0 and s[3] < o[3],
        "in": lambda: inter >= 0.5 * (s[2] - s[0]) * (s[3] - s[1]),
    }
    if relation not in rules:
        raise ConfigError(f"unknown spatial relation {relation!r}; use one of {sorted(rules)}")
    return bool(rules[relation]())


def prompt_following_gate(clip_t: np.ndarray, clip_n: np.ndarray, n_std: float = 2.0) -> np.ndarray:
    """Stellar's gate: ``clip_t > clip_n + n_std * std(clip_n)`` (ddof=1 over the set, 0 for one item)."""
    t, n = np.asarray(clip_t, dtype=np.float64), np.asarray(clip_n, dtype=np.float64)
    std = float(np.std(n, ddof=1)) if len(n) > 1 else 0.0
    return t > n + n_std * std


# -------------------------------------------------------------------------------------------- detector


class OwlDetector:
    """OWL-ViT / OWLv2 (transformers) as an :class:`ObjectDetector`.

    Each query is scored on its own: ``sigmoid(logit)`` of every predicted box for that query (no arg-max
    over queries, so a score does not depend on which other objects are asked for); the ``top_k`` boxes per
    query are returned in pixels of the input image (OWLv2 pads to a square first; boxes are mapped back).

    Args:
        model: Hub id (e.g. ``google/owlvit-base-patch32``, Stellar used ``google/owlvit-large-patch14``) or a
            local directory with model and processor.
        device: Torch device. ``dtype``: weight dtype.
        query_template: Text sent per object (``"{}"`` sends the bare noun).
        top_k: Boxes returned per query.
    """

    def __init__(self, model: ModelSource, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "float32", query_template: str = "a photo of a {}",
                 top_k: int = 3) -> None:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        if "{}" not in query_template or top_k < 1:
            raise ConfigError("query_template must contain '{}' and top_k must be >= 1")
        name, local = model_source(model)
        torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
        try:
            with quiet_loading():
                self.model = AutoModelForZeroShotObjectDetection.from_pretrained(
                    name, local_files_only=local, dtype=torch_dtype).to(torch_device).eval()
                self.processor = AutoProcessor.from_pretrained(name, local_files_only=local, backend="pil")
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load detector {name!r}: {exc}; pass an OWL-ViT/OWLv2 Hub id or a "
                                 "directory saved with save_pretrained (model + processor)") from exc
        self.name, self.template, self.top_k = name, query_template, top_k
        self.padded = bool(getattr(self.processor.image_processor, "do_pad", False))

    def __call__(self, image: Image.Image, queries: Sequence[str]) -> list[Detection]:
        import torch

        if not queries:
            return []
        image = image.convert("RGB")
        inputs = self.processor(text=[[self.template.format(q) for q in queries]], images=[image],
                                return_tensors="pt", truncation=True)
        param = next(self.model.parameters())
        inputs = {k: v.to(param.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(param.dtype)
        with torch.inference_mode():
            out = self.model(**inputs)
        probs, boxes = out.logits[0].float().sigmoid().cpu().numpy(), out.pred_boxes[0].float().cpu().numpy()
        w, h = image.size
        sx, sy = (max(w, h), max(w, h)) if self.padded else (w, h)
        xyxy = np.stack([(boxes[:, 0] - boxes[:, 2] / 2) * sx, (boxes[:, 1] - boxes[:, 3] / 2) * sy,
                         (boxes[:, 0] + boxes[:, 2] / 2) * sx, (boxes[:, 1] + boxes[:, 3] / 2) * sy], axis=1)
        xyxy = np.clip(xyxy, 0, [w, h, w, h])
        dets = []
        for q, query in enumerate(queries):
            for i in np.argsort(-probs[:, q], kind="stable")[: self.top_k]:
                x0, y0, x1, y1 = (float(v) for v in xyxy[i])
                dets.append(Detection(query, float(probs[i, q]), (x0, y0, x1, y1)))
        return dets


# --------------------------------------------------------------------------------------------- evaluator


@dataclass(frozen=True)
class StellarSample:
    """One generated image and what its prompt asks for.

    Attributes:
        image: The generated image.
        identity: Key into the ``identities`` mapping given to :meth:`StellarEvaluator.score`.
        prompt: The prompt (needed by the gate).
        objects: Objects the prompt names (GOA); role nouns are skipped.
        relations: Relation triples of the prompt (RFS).
        reference: Index of the identity image used for generation; ``None``: all of them are references
            for IPS (the gate's ``clip_n`` then uses the first one).
    """

    image: Image.Image
    identity: str
    prompt: str = ""
    objects: tuple[str, ...] = ()
    relations: tuple[Relation, ...] = ()
    reference: int | None = None


@dataclass(frozen=True)
class IdentityImages:
    """The real images of one identity and its binary attribute labels (``{"Male": 1, ...}``)."""

    images: tuple[Image.Image, ...]
    attributes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RelationScore:
    """How one relation of one sample was scored: ``method`` is ``geometry``, ``judge`` or ``unscored``."""

    sample: int
    relation: Relation
    method: str
    score: float | None
    reason: str = ""


@dataclass(frozen=True)
class StellarResult:
    """Stellar metrics of a batch; a metric that could not run is ``None`` (see ``diagnostics``).

    ``per_sample`` holds ``ips``, ``sis``, ``goa``, ``rfs`` per generated image (NaN: not applicable).
    """

    ips: float | None
    sis: float | None
    aps: float | None
    goa: float | None
    rfs: float | None
    per_sample: dict[str, tuple[float, ...]]
    aps_per_attribute: dict[str, float]
    relations: tuple[RelationScore, ...]
    follows_prompt: tuple[bool, ...] | None
    models: dict[str, str]
    diagnostics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return to_jsonable(self)


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else None


class StellarEvaluator:
    """Holds the face embedder, the object detector, an optional relation judge and gate model.

    Args:
        faces: Face embedder (:class:`DetectThenEncode`, :class:`InsightFaceEmbedder`,
            :class:`AlignedFaceCrops` for pre-aligned crops, or your own). Needed for IPS/SIS/APS.
        detector: Object detector (:class:`OwlDetector` or a callable). Needed for GOA/RFS.
        judge: Scores non-spatial relations in [0, 1] (or returns None); without it they are unscored.
        detection_threshold: Minimum box score for a subject/object to count as present in RFS.
        gate_clip: CLIP/SigLIP model (id, directory or loaded encoder) enabling the prompt-following gate.
        gate_std: ``n_std`` of the gate.
        probes: Pre-fitted attribute probes (name -> fitted classifier); otherwise fitted on the identities.
        device, dtype: For the gate model when loaded here.
    """

    def __init__(self, faces: FaceEmbedder | None = None, detector: ObjectDetector | None = None,
                 judge: RelationJudge | None = None, *, detection_threshold: float = 0.1,
                 gate_clip: ModelSource | HFImageEncoder | None = None, gate_std: float = 2.0,
                 probes: Mapping[str, Any] | None = None, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "float32") -> None:
        if faces is None and detector is None:
            raise ConfigError("pass faces= (IPS/SIS/APS) and/or detector= (GOA/RFS); see DetectThenEncode, "
                              "InsightFaceEmbedder, AlignedFaceCrops and OwlDetector")
        self.faces, self.detector, self.judge, self.probes = faces, detector, judge, probes
        self.detection_threshold, self.gate_std = detection_threshold, gate_std
        self.gate_clip = (gate_clip if gate_clip is None or isinstance(gate_clip, HFImageEncoder)
                          else load_image_encoder(gate_clip, device=device, dtype=dtype))

    def score(self, samples: Sequence[StellarSample], identities: Mapping[str, IdentityImages], *,
              follows_prompt: Sequence[bool] | None = None) -> StellarResult:
        """Compute IPS, SIS, APS, GOA and RFS for a batch of generated images.

        Args:
            samples: Generated images with identity, prompt, objects and relations.
            identities: Real images (and attribute labels) per identity.
            follows_prompt: A precomputed gate mask; else computed when ``gate_clip`` was given.

        Returns:
            The :class:`StellarResult`.
        """
        self._check(samples, identities)
        gate = self._gate(samples, identities) if follows_prompt is None else np.asarray(follows_prompt, bool)
        if gate is not None and gate.shape != (len(samples),):
            raise ConfigError(f"follows_prompt needs one flag per sample ({len(samples)}), got {gate.shape}")
        per: dict[str, list[float]] = {}
        diag: dict[str, Any] = {"n_samples": len(samples)}
        aps_attr: dict[str, float] = {}
        if self.faces is not None:
            per["ips"], per["sis"], aps_attr = self._identity_metrics(samples, identities, gate, diag)
        rel_scores: list[RelationScore] = []
        if self.detector is not None:
            per["goa"], per["rfs"], rel_scores = self._context_metrics(samples, diag)
        scored = [r.score for r in rel_scores if r.score is not None]
        diag["unscored_relations"] = sum(r.score is None for r in rel_scores)
        models = {"faces": type(self.faces).__name__ if self.faces else "", "detector": getattr(
            self.detector, "name", type(self.detector).__name__) if self.detector else "",
            "judge": getattr(self.judge, "__name__", type(self.judge).__name__) if self.judge else "",
            "gate_clip": self.gate_clip.info.model if self.gate_clip else ""}
        return StellarResult(
            _mean(per.get("ips", [])), _mean(per.get("sis", [])), _mean(list(aps_attr.values())),
            _mean(per.get("goa", [])), _mean(scored), {k: tuple(v) for k, v in per.items()}, aps_attr,
            tuple(rel_scores), None if gate is None else tuple(bool(g) for g in gate), models, diag)

    @staticmethod
    def _check(samples: Sequence[StellarSample], identities: Mapping[str, IdentityImages]) -> None:
        if not samples:
            raise ConfigError("no generated samples to score")
        for i, s in enumerate(samples):
            if s.identity not in identities or not identities[s.identity].images:
                raise ConfigError(f"sample {i}: identity {s.identity!r} has no real images in `identities`")
            if s.reference is not None and not 0 <= s.reference < len(identities[s.identity].images):
                raise ConfigError(f"sample {i}: reference index {s.reference} out of range")
        labelled = {frozenset(identities[s.identity].attributes) for s in samples}
        if len(labelled) > 1:
            raise ConfigError("identities carry different attribute names; label every identity with the "
                              "same attributes (or none) for APS")

    def _gate(self, samples: Sequence[StellarSample],
              identities: Mapping[str, IdentityImages]) -> np.ndarray | None:
        from vptt.evaluators.clip_dino import clip_t_per_image

        if self.gate_clip is None:
            return None
        if any(not s.prompt for s in samples):
            raise ConfigError("the prompt-following gate needs every sample's prompt")
        text = self.gate_clip.encode_texts([s.prompt for s in samples])
        gen = self.gate_clip.encode_images([s.image for s in samples])
        ref = self.gate_clip.encode_images([identities[s.identity].images[s.reference or 0] for s in samples])
        return prompt_following_gate(clip_t_per_image(gen, text), clip_t_per_image(ref, text), self.gate_std)

    def _identity_metrics(self, samples: Sequence[StellarSample], identities: Mapping[str, IdentityImages],
                          gate: np.ndarray | None, diag: dict[str, Any]) -> tuple[list[float], list[float],
                                                                                  dict[str, float]]:
        assert self.faces is not None
        real = {name: [self._embed_faces(im) for im in identities[name].images]
                for name in dict.fromkeys(s.identity for s in samples)}
        gen = [self._embed_faces(s.image) for s in samples]
        ips, sis = [], []
        for i, (s, g) in enumerate(zip(samples, gen)):
            faces = real[s.identity]
            refs = [faces[s.reference]] if s.reference is not None else [f for f in faces if len(f)]
            ok = gate is None or bool(gate[i])
            ips.append(identity_preservation(g, np.concatenate(refs)) if ok and any(map(len, refs)) else 0.0)
            sis.append(identity_stability(g, faces) if ok else 0.0)
        diag["generated_without_face"] = [i for i, g in enumerate(gen) if len(g) == 0]
        diag["real_without_face"] = {k: [j for j, f in enumerate(v) if len(f) == 0] for k, v in real.items()}
        return ips, sis, self._aps(samples, identities, real, gen, gate, diag)

    def _embed_faces(self, image: Image.Image) -> np.ndarray:
        assert self.faces is not None
        faces = np.asarray(self.faces(image), dtype=np.float64)
        if faces.ndim != 2:
            raise ConfigError(f"the face embedder returned shape {faces.shape}; expected (n_faces, D)")
        return faces

    def _aps(self, samples: Sequence[StellarSample], identities: Mapping[str, IdentityImages],
             real: Mapping[str, list[np.ndarray]], gen: list[np.ndarray], gate: np.ndarray | None,
             diag: dict[str, Any]) -> dict[str, float]:
        names = sorted({a for s in samples for a in identities[s.identity].attributes})
        if not names:
            return {}
        probes = self.probes
        if probes is None:
            rows = [(f[0], identities[k].attributes) for k, fs in real.items() for f in fs if len(f)]
            if not rows:
                return {}
            probes = fit_attribute_probes(np.stack([r[0] for r in rows]),
                                          {a: [r[1][a] for r in rows] for a in names})
        keep = [i for i, g in enumerate(gen) if len(g)]
        if not keep:
            return {}
        x = np.stack([gen[i][0] for i in keep])
        targets = {a: [identities[samples[i].identity].attributes[a] for i in keep] for a in names}
        out = attribute_preservation(probes, x, targets, None if gate is None else gate[keep])
        diag["aps_skipped_attributes"] = sorted(set(names) - set(out))
        return out

    def _context_metrics(self, samples: Sequence[StellarSample], diag: dict[str, Any]) -> tuple[
            list[float], list[float], list[RelationScore]]:
        assert self.detector is not None
        goa, rfs, rels = [], [], []
        skipped: set[str] = set()
        for i, s in enumerate(samples):
            queries = list(dict.fromkeys(wanted_objects(s.objects) +
                                         [t for r in s.relations for t in (r.subject, r.object)]))
            dets = list(self.detector(s.image, queries)) if queries else []
            skipped |= {o for o in s.objects if o.strip().lower() in ROLE_NOUNS}
            goa.append(grounding_score(dets, s.objects))
            mine = [self._relation(i, s.image, r, dets) for r in s.relations]
            rels += mine
            mean = _mean([r.score for r in mine if r.score is not None])
            rfs.append(float("nan") if mean is None else mean)
        diag["goa_skipped_role_nouns"] = sorted(skipped)
        return goa, rfs, rels

    def _relation(self, i: int, image: Image.Image, rel: Relation,
                  dets: Sequence[Detection]) -> RelationScore:
        kind = canonical_relation(rel.predicate)
        if kind is None:
            if self.judge is None:
                return RelationScore(i, rel, "unscored", None, "non-spatial relation and no judge")
            value = self.judge(image, rel)
            if value is None:
                return RelationScore(i, rel, "unscored", None, "judge returned None")
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"relation judge returned {value!r}; "
                                  "it must return a score in [0, 1] or None")
            return RelationScore(i, rel, "judge", float(value))
        confident = [d for d in dets if d.score >= self.detection_threshold]
        best = best_per_label(confident, [rel.subject, rel.object])
        subj, obj = best[rel.subject], best[rel.object]
        if subj is None or obj is None:
            missing = [t for t, d in ((rel.subject, subj), (rel.object, obj)) if d is None]
            return RelationScore(i, rel, "geometry", 0.0, f"not detected: {', '.join(missing)}")
        holds = spatial_relation_holds(kind, subj.box, obj.box)
        return RelationScore(i, rel, "geometry", float(holds), f"{kind} {'holds' if holds else 'fails'}")
