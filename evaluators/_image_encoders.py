"""Shared loading and batched encoding for transformers image/text encoders.

One place that turns a Hugging Face id or a local ``save_pretrained`` directory into an encoder that maps a
list of PIL images (or strings) to an ``(N, D)`` float32 array of L2-normalised features. Used by
Finer-Personalization Rank, CLIP-I/CLIP-T/DINO and the Stellar prompt gate.

Supported ``config.model_type`` values and the feature each one yields:

* ``clip``, ``siglip``, ``siglip2`` (dual encoders): ``get_image_features`` / ``get_text_features``, i.e.
  the pooled, projected embedding (CLIP: projection of the CLS token; SigLIP: attention-pooling head).
* ``dinov2``, ``dinov2_with_registers``, ``vit`` (DINO v1 checkpoints such as ``facebook/dino-vits16`` are
  ``vit``): the CLS token of the final (layer-normed) hidden state, ``last_hidden_state[:, 0]``.

Image preprocessing is the checkpoint's own image processor with the PIL backend (no torchvision needed);
:attr:`EncoderInfo.preprocessing` records its settings so every report can state them.

Offline by default: a path that exists is loaded with ``local_files_only=True``; anything else is treated as
a Hub id the user named (the Hub client then honours ``HF_HUB_OFFLINE`` and its cache).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

import numpy as np

from vptt.core.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    import torch
    from PIL import Image

DUAL_ENCODERS = frozenset({"clip", "siglip", "siglip2"})
CLS_ENCODERS = frozenset({"dinov2", "dinov2_with_registers", "vit"})
_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_PREPROCESS_KEYS = ("size", "crop_size", "do_resize", "resample", "do_center_crop", "do_rescale",
                    "rescale_factor", "do_normalize", "image_mean", "image_std", "do_pad", "max_num_patches",
                    "patch_size")


class ImageEncoder(Protocol):
    """Anything that maps a list of PIL images to an ``(N, D)`` feature array."""

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray: ...


ModelSource = Union[str, "os.PathLike[str]"]
EncoderSpec = Union[ModelSource, ImageEncoder]


@dataclass(frozen=True)
class EncoderInfo:
    """What produced a set of features: stated in every report.

    Attributes:
        model: The Hub id or directory as given (``"callable:<name>"`` for a user callable).
        kind: ``config.model_type`` (``clip``, ``siglip``, ``dinov2``, ``vit``, ...) or ``"callable"``.
        feature: Which tensor is used as the feature.
        preprocessing: The image processor's class and settings (resize, crop, resample, mean/std, ...).
        device: Torch device the model runs on.
        dtype: Weight dtype.
    """

    model: str
    kind: str
    feature: str
    preprocessing: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (zero rows stay zero), as float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"features must be a 2-D (N, D) array, got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` cosine similarities of the L2-normalised rows of ``a`` and ``b``."""
    a, b = l2_normalize(a), l2_normalize(b)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}; "
                          "use one encoder for both")
    return a @ b.T


def to_jsonable(obj: Any) -> Any:
    """Dataclass/dict/list tree with tuples as lists and NaN as ``None`` (for ``json.dumps``)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    return obj


def dump_json(obj: Any, path: str | os.PathLike[str] | None = None) -> str:
    """``obj`` as indented JSON (via :func:`to_jsonable`); also written to ``path`` when given."""
    import json

    text = json.dumps(to_jsonable(obj), indent=2)
    if path is not None:
        Path(path).write_text(text + "\n", encoding="utf-8")
    return text


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"fp16"``/``"bf16"``/... or a ``torch.dtype`` -> ``torch.dtype``."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}")
    return getattr(torch, name)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; other strings go to ``torch.device``."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {device!r}; use 'cpu', 'cuda', 'cuda:0', 'mps' or 'auto'") from exc


def model_source(model: ModelSource) -> tuple[str, bool]:
    """``(name, is_local)`` for a Hub id or a directory; a path-like name that does not exist raises.

    A string counts as a path when it exists, starts with ``.``, ``/`` or ``~``, or has more than one
    ``/`` (Hub ids are ``owner/name``).
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path), True
    if path.exists() or text.startswith((".", "/", "~", "\\")) or text.count("/") > 1 or "\\" in text:
        raise ModelLoadError(f"model directory not found: {text}; pass a directory written by "
                             "save_pretrained or a Hub id such as 'openai/clip-vit-base-patch32'")
    return text, False


def describe_processor(image_processor: Any) -> dict[str, Any]:
    """The image processor's class and the settings that change the pixels the model sees."""
    from PIL import Image

    settings = image_processor.to_dict() if hasattr(image_processor, "to_dict") else {}
    out: dict[str, Any] = {"processor": type(image_processor).__name__}
    for key in _PREPROCESS_KEYS:
        if key not in settings or settings[key] is None:
            continue
        value = settings[key]
        if key == "resample":
            value = Image.Resampling(int(value)).name.lower()
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _features_from(output: Any) -> torch.Tensor:
    """Tensor of features from ``get_*_features`` (a tensor in transformers 4, an output object in 5)."""
    return output if hasattr(output, "shape") else output.pooler_output


class HFImageEncoder:
    """A transformers CLIP / SigLIP / DINOv2 / DINO-ViT model with batched, no-grad, L2-normalised encoding.

    Build it with :func:`load_image_encoder`; call it like a function on a list of PIL images.

    Example:
        >>> enc = load_image_encoder("openai/clip-vit-base-patch32")  # doctest: +SKIP
        >>> enc([img_a, img_b]).shape  # doctest: +SKIP
        (2, 512)
    """

    def __init__(self, model: Any, image_processor: Any, tokenizer: Any | None, *, name: str,
                 batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.kind: str = model.config.model_type
        self.batch_size = batch_size
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        feature = ("pooled projected embedding (get_image_features)" if self.kind in DUAL_ENCODERS
                   else "CLS token of last_hidden_state")
        self.info = EncoderInfo(model=name, kind=self.kind, feature=feature,
                                preprocessing=describe_processor(image_processor), device=str(self.device),
                                dtype=str(self.dtype).removeprefix("torch."))

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_images(images)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, D)`` float32 L2-normalised image features, in input order."""
        chunks = [self._image_batch([im.convert("RGB") for im in images[i:i + self.batch_size]])
                  for i in range(0, len(images), self.batch_size)]
        return _stack(chunks)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, D)`` float32 L2-normalised text features (dual encoders only), in input order.

        Texts are batched by length (longest first) and put back in input order.
        """
        if self.kind not in DUAL_ENCODERS or self.tokenizer is None:
            raise ConfigError(f"{self.info.model} ({self.kind}) has no text tower/tokenizer; "
                              "use a CLIP or SigLIP checkpoint for text features")
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        chunks = [self._text_batch([texts[j] for j in order[i:i + self.batch_size]])
                  for i in range(0, len(order), self.batch_size)]
        feats = _stack(chunks)
        out = np.empty_like(feats)
        out[order] = feats
        return out

    def _image_batch(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        inputs = self.image_processor(images=images, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            if self.kind in DUAL_ENCODERS:
                feats = _features_from(self.model.get_image_features(**inputs))
            else:
                feats = self.model(pixel_values=inputs["pixel_values"]).last_hidden_state[:, 0]
        return l2_normalize(feats.float().cpu().numpy()).astype(np.float32)

    def _text_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        max_len = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))
        padding = "max_length" if self.kind.startswith("siglip") else True  # SigLIP is trained on padded text
        tokens = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=max_len,
                                return_tensors="pt")
        kwargs = {"input_ids": tokens["input_ids"].to(self.device)}
        if self.kind == "clip" and "attention_mask" in tokens:
            kwargs["attention_mask"] = tokens["attention_mask"].to(self.device)
        with torch.inference_mode():
            feats = _features_from(self.model.get_text_features(**kwargs))
        return l2_normalize(feats.float().cpu().numpy()).astype(np.float32)


def _stack(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 0), dtype=np.float32)


def load_image_encoder(model: ModelSource, *, device: str | torch.device = "cpu",
                       dtype: str | torch.dtype = "float32", batch_size: int = 32) -> HFImageEncoder:
    """Load a CLIP / SigLIP / DINOv2 / DINO-ViT encoder from a Hub id or a local directory.

    Args:
        model: Hub id (downloaded only because the caller named it) or a ``save_pretrained`` directory.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` (or short forms, or a ``torch.dtype``).
        batch_size: Images or texts per forward pass.

    Returns:
        The encoder; ``.info`` states model, feature and preprocessing.

    Raises:
        ModelLoadError: The directory is missing or the checkpoint cannot be read.
        ConfigError: The checkpoint's ``model_type`` is not supported, or device/dtype is invalid.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

    name, local = model_source(model)
    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    try:
        with quiet_loading():
            kind = AutoConfig.from_pretrained(name, local_files_only=local).model_type
            _check_kind(kind, name)
            extra = {"add_pooling_layer": False} if kind == "vit" else {}
            net = AutoModel.from_pretrained(name, local_files_only=local, dtype=torch_dtype, **extra)
            processor = AutoImageProcessor.from_pretrained(name, local_files_only=local, backend="pil")
            tokenizer = (AutoTokenizer.from_pretrained(name, local_files_only=local)
                         if kind in DUAL_ENCODERS else None)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load encoder {name!r}: {exc}. Pass a directory saved with "
                             "save_pretrained (model + image processor) or a reachable Hub id") from exc
    return HFImageEncoder(net.to(torch_device), processor, tokenizer, name=name, batch_size=batch_size)


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar while loading (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _check_kind(kind: str, name: str) -> None:
    if kind not in DUAL_ENCODERS | CLS_ENCODERS:
        raise ConfigError(f"{name!r} is a {kind!r} checkpoint; supported model types: "
                          f"{sorted(DUAL_ENCODERS | CLS_ENCODERS)}. Wrap other models in a callable "
                          "mapping a list of PIL images to an (N, D) array")


def as_image_encoder(spec: EncoderSpec, *, device: str | torch.device = "cpu",
                     dtype: str | torch.dtype = "float32", batch_size: int = 32) -> tuple[ImageEncoder,
                                                                                          EncoderInfo]:
    """An encoder and its description from a model id/directory, an :class:`HFImageEncoder` or a callable."""
    if isinstance(spec, HFImageEncoder):
        return spec, spec.info
    if isinstance(spec, (str, os.PathLike)):
        enc = load_image_encoder(spec, device=device, dtype=dtype, batch_size=batch_size)
        return enc, enc.info
    if callable(spec):
        label = getattr(spec, "__name__", type(spec).__name__)
        info = getattr(spec, "info", None)
        return spec, info if isinstance(info, EncoderInfo) else EncoderInfo(
            model=f"callable:{label}", kind="callable", feature="user callable (L2-normalised here)")
    raise ConfigError(f"encoder must be a model id, a directory or a callable, got {type(spec).__name__}")


def encode(encoder: ImageEncoder, images: Sequence[Image.Image]) -> np.ndarray:
    """Run any encoder and return validated, L2-normalised ``(N, D)`` float64 features."""
    feats = np.asarray(encoder(list(images)), dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] != len(images):
        raise ConfigError(f"encoder returned shape {feats.shape} for {len(images)} images; expected (N, D)")
    if not np.all(np.isfinite(feats)):
        raise ConfigError("encoder returned non-finite features (NaN/inf); check the model and its dtype")
    return l2_normalize(feats)
