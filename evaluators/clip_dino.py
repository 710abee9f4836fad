"""CLIP-I, CLIP-T and DINO with DreamBench (DreamBooth) conventions.

* **CLIP-I**: mean cosine between the CLIP image embeddings of generated and reference images, over all
  (generated, reference) pairs of a subject.
* **CLIP-T**: ``100 * cos`` between each generated image's CLIP image embedding and its prompt's CLIP text
  embedding, averaged over images.
* **DINO**: as CLIP-I, with the CLS token of a self-supervised DINO ViT (DreamBench: ViT-S/16,
  :data:`DREAMBENCH_DINO`).

All features are L2-normalised before the dot product. Every result carries the :class:`EncoderInfo` of the
model(s) used: id/directory, feature and image preprocessing (resize, crop, resample, mean/std). Over many
subjects (:meth:`ClipDinoEvaluator.score_subjects`) the headline numbers are means over all generated
images; each subject's own result is kept.

Nothing is downloaded unless a Hub id is passed; :data:`DREAMBENCH_CLIP` / :data:`DREAMBENCH_DINO` name the
DreamBench models for callers who want them.

Example:
    >>> import numpy as np
    >>> g = np.array([[1.0, 0.0], [0.0, 1.0]]); r = np.array([[1.0, 0.0]])
    >>> float(mean_pairwise_cosine(g, r))
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from vptt.core.errors import ConfigError
from vptt.evaluators._image_encoders import (
    DUAL_ENCODERS,
    EncoderInfo,
    EncoderSpec,
    HFImageEncoder,
    ModelSource,
    as_image_encoder,
    cosine_matrix,
    encode,
    l2_normalize,
    load_image_encoder,
    to_jsonable,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

DREAMBENCH_CLIP = "openai/clip-vit-base-patch32"
DREAMBENCH_DINO = "facebook/dino-vits16"
Prompts = Union[str, Sequence[str], None]


def mean_pairwise_cosine(generated: np.ndarray, references: np.ndarray) -> float:
    """Mean cosine over all (generated, reference) pairs of feature rows (CLIP-I / DINO)."""
    return float(cosine_matrix(generated, references).mean())


def reference_cosine_per_image(generated: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Per generated image, its mean cosine to the references; their mean is the pairwise mean."""
    return cosine_matrix(generated, references).mean(axis=1)


def clip_t_per_image(image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray:
    """``100 * cos(image_i, text_i)`` row by row (CLIP-T)."""
    img, txt = l2_normalize(image_features), l2_normalize(text_features)
    if img.shape != txt.shape:
        raise ConfigError(f"need one prompt per image: image features {img.shape}, text features {txt.shape}")
    return 100.0 * np.sum(img * txt, axis=1)


@dataclass(frozen=True)
class ClipDinoResult:
    """CLIP-I / CLIP-T / DINO of one subject (or one flat set). A metric not computed is ``None``.

    Attributes:
        clip_i: Mean pairwise cosine, generated x reference, CLIP image features.
        clip_t: Mean ``100 * cos`` of image and prompt.
        dino: Mean pairwise cosine with DINO CLS features.
        per_image: Per generated image: ``clip_i`` / ``dino`` (mean over references), ``clip_t``.
        n_generated: Generated images. ``n_references``: reference images.
        clip_model / dino_model: What produced the features (model, feature, preprocessing).
        notes: Why a metric was skipped.
    """

    clip_i: float | None
    clip_t: float | None
    dino: float | None
    per_image: dict[str, tuple[float, ...]]
    n_generated: int
    n_references: int
    clip_model: EncoderInfo | None = None
    dino_model: EncoderInfo | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return to_jsonable(self)


@dataclass(frozen=True)
class ClipDinoReport:
    """Several subjects: per-subject results and means over all their generated images."""

    subjects: dict[str, ClipDinoResult]
    clip_i: float | None
    clip_t: float | None
    dino: float | None
    n_generated: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return to_jsonable(self)


def _prompt_list(prompts: Prompts, n: int) -> list[str] | None:
    if prompts is None:
        return None
    out = [prompts] * n if isinstance(prompts, str) else list(prompts)
    if len(out) != n:
        raise ConfigError(f"got {len(out)} prompts for {n} generated images; "
                          "pass one prompt or one per image")
    return out


class ClipDinoEvaluator:
    """Holds a CLIP (or SigLIP) model and/or a DINO model and scores generated images.

    Args:
        clip_model: Hub id / directory of a CLIP or SigLIP checkpoint, or a loaded ``HFImageEncoder``.
            Needed for CLIP-I and CLIP-T. DreamBench: :data:`DREAMBENCH_CLIP`.
        dino_model: Hub id / directory of a DINO ViT or DINOv2 checkpoint, a loaded encoder, or any callable
            mapping PIL images to ``(N, D)``. Needed for DINO. DreamBench: :data:`DREAMBENCH_DINO`.
        device: Torch device (``"auto"`` picks CUDA when present).
        dtype: Weight dtype.
        batch_size: Images/texts per forward pass.
    """

    def __init__(self, clip_model: ModelSource | HFImageEncoder | None = None,
                 dino_model: EncoderSpec | None = None, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "float32", batch_size: int = 32) -> None:
        if clip_model is None and dino_model is None:
            raise ConfigError("pass clip_model and/or dino_model (e.g. "
                              f"{DREAMBENCH_CLIP!r}, {DREAMBENCH_DINO!r} or local directories)")
        self.clip: HFImageEncoder | None = None
        if clip_model is not None:
            self.clip = clip_model if isinstance(clip_model, HFImageEncoder) else load_image_encoder(
                clip_model, device=device, dtype=dtype, batch_size=batch_size)
            if self.clip.kind not in DUAL_ENCODERS:
                raise ConfigError(f"clip_model must be a CLIP/SigLIP checkpoint, got {self.clip.kind!r}")
        self.dino, self.dino_info = (None, None) if dino_model is None else as_image_encoder(
            dino_model, device=device, dtype=dtype, batch_size=batch_size)

    def score(self, generated: Sequence[Image.Image], references: Sequence[Image.Image] = (),
              prompts: Prompts = None) -> ClipDinoResult:
        """Score one subject's generated images.

        Args:
            generated: Generated images.
            references: The subject's real reference images (CLIP-I and DINO need them).
            prompts: One prompt for all images or one per image (CLIP-T needs them).

        Returns:
            The :class:`ClipDinoResult`; metrics whose inputs or model are missing are ``None``.
        """
        if not generated:
            raise ConfigError("no generated images to score")
        texts = _prompt_list(prompts, len(generated))
        per: dict[str, tuple[float, ...]] = {}
        notes: list[str] = []
        if self.clip is not None:
            gen = encode(self.clip, generated)
            if references:
                per["clip_i"] = tuple(reference_cosine_per_image(gen, encode(self.clip, references)).tolist())
            if texts is not None:
                per["clip_t"] = tuple(clip_t_per_image(gen, self.clip.encode_texts(texts)).tolist())
        if self.dino is not None and references:
            per["dino"] = tuple(reference_cosine_per_image(encode(self.dino, generated),
                                                           encode(self.dino, references)).tolist())
        needs = {"clip_i": "a CLIP model and references", "clip_t": "a CLIP model and prompts",
                 "dino": "a DINO model and references"}
        for name, missing in needs.items():
            if name not in per:
                notes.append(f"{name} not computed: needs {missing}")
        means = (float(np.mean(per[m])) if m in per else None for m in ("clip_i", "clip_t", "dino"))
        return ClipDinoResult(*means,
                              per_image=per, n_generated=len(generated), n_references=len(references),
                              clip_model=None if self.clip is None else self.clip.info,
                              dino_model=self.dino_info, notes=tuple(notes))

    def score_subjects(self, subjects: Mapping[str, tuple[Sequence[Image.Image], Sequence[Image.Image],
                                                          Prompts]]) -> ClipDinoReport:
        """Score several subjects: ``{name: (generated, references, prompts)}``; means over all images."""
        if not subjects:
            raise ConfigError("no subjects to score")
        results = {name: self.score(*parts) for name, parts in subjects.items()}
        means = {}
        for metric in ("clip_i", "clip_t", "dino"):
            values = [v for r in results.values() for v in r.per_image.get(metric, ())]
            means[metric] = float(np.mean(values)) if values else None
        notes = tuple(dict.fromkeys(n for r in results.values() for n in r.notes))
        return ClipDinoReport(results, means["clip_i"], means["clip_t"], means["dino"],
                              sum(r.n_generated for r in results.values()), notes)
