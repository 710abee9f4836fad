"""Pure functions behind the masked-similarity (MaSC) evaluator.

Conventions follow the published ``masc-metric`` reference code (``docs/evaluators/masc.md``):

* A mask is read as ``uint8 / 255`` when its maximum exceeds 1 (else as ``[0, 1]`` floats), bilinearly
  resized to the patch grid (``align_corners=False``, no antialias) and clamped to ``[0, 1]``.
* CP keeps reference patches whose weight is ``> threshold`` and averages, over them, the best cosine to any
  real (non-padding) output patch; NaN when no reference patch is foreground.
* PF pools the output's patches with the model's attention-pooling head while hiding the patches whose
  weight is ``>= threshold`` (and any padding); NaN when nothing is left. The prompt loses its subject
  first: every ``(a|an|the) <subject>`` if there is one, otherwise every bare ``<subject>``
  (case-insensitive, whole words), then whitespace is collapsed.

Everything here is a function of its arguments (tensors, strings, input images); the model-holding class
lives in ``vptt.evaluators.masked_similarity``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vptt.core.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from numpy.typing import ArrayLike
    from PIL import Image

STRIPPERS = ("regex", "none")
"""Subject strippers: ``"regex"`` (the paper's) and ``"none"`` (keep the prompt)."""

_ARTICLES = r"(?:a|an|the)"


def _collapse(text: str) -> str:
    return " ".join(text.split())


def strip_subject(prompt: str, subject: str | None, stripper: str = "regex") -> str:
    """Remove the subject's name from a generation prompt, as MaSC's PF does.

    Args:
        prompt: The prompt the output image was generated from.
        subject: Canonical subject name (``"cat"``, ``"piggy bank"``); ``None`` or blank keeps the prompt.
        stripper: ``"regex"`` or ``"none"``.

    Returns:
        The prompt without the subject; unchanged when ``subject`` is blank or ``stripper == "none"``.

    Example:
        >>> strip_subject("A photo of a kitten chasing a butterfly", "kitten")
        'A photo of chasing a butterfly'
        >>> strip_subject("the Cat and the cat", "cat")
        'and'
    """
    if stripper not in STRIPPERS:
        raise ValueError(f"stripper must be one of {STRIPPERS}, got {stripper!r}")
    if stripper == "none" or subject is None or not subject.strip():
        return prompt
    name = re.escape(subject.strip())
    with_article = re.compile(rf"\b{_ARTICLES}\s+{name}\b", re.IGNORECASE)
    pattern = with_article if with_article.search(prompt) else re.compile(rf"\b{name}\b", re.IGNORECASE)
    return _collapse(pattern.sub("", prompt))


def mask_to_array(mask: ArrayLike) -> np.ndarray:
    """A 2-D foreground mask as float32 in ``[0, 1]`` (``uint8`` masks are divided by 255).

    Args:
        mask: 2-D array (or PIL ``L`` image) with values in ``[0, 255]`` or ``[0, 1]``; bool is fine.

    Returns:
        ``float32`` array of the same shape.

    Raises:
        ValueError: The mask is not 2-D or is empty.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(
            f"a mask must be a non-empty 2-D array (H, W), got shape {arr.shape}; "
            "convert RGB masks with Image.convert('L')"
        )
    arr = arr.astype(np.float32)
    if arr.max() > 1.0 + 1e-6:
        arr = arr / 255.0
    return arr


def downsample_mask(mask: ArrayLike, grid: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a mask to the patch grid and flatten it row-major.

    Args:
        mask: 2-D mask, see :func:`mask_to_array`.
        grid: Patch grid ``(Hp, Wp)``.

    Returns:
        ``float32`` tensor ``[Hp * Wp]`` with values in ``[0, 1]`` (on CPU).
    """
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(mask_to_array(mask))[None, None]
    m = F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
    return m[0, 0].clamp(0.0, 1.0).flatten()


def concept_preservation(
    ref_patches: torch.Tensor,
    ref_weights: torch.Tensor,
    out_hidden: torch.Tensor,
    out_valid: torch.Tensor,
    threshold: float = 0.5,
) -> torch.Tensor:
    """CP of one reference against a batch of outputs: mean over fg reference patches of the max cosine.

    Args:
        ref_patches: ``[N_ref, D]`` reference patch tokens.
        ref_weights: ``[N_ref]`` downsampled reference mask; patches with weight ``> threshold`` count
            (compared in the tokens' dtype, as the reference code does).
        out_hidden: ``[B, N, D]`` output tokens, padding included.
        out_valid: ``[B, N]`` bool, True where a token is a real patch.
        threshold: Foreground threshold.

    Returns:
        ``[B]`` float tensor; NaN everywhere when the reference has no foreground patch.
    """
    import torch
    import torch.nn.functional as F

    fg = ref_weights.to(device=ref_patches.device, dtype=ref_patches.dtype) > threshold
    if not bool(fg.any()):
        return torch.full((out_hidden.shape[0],), float("nan"))
    ref_unit = F.normalize(ref_patches[fg], dim=-1)
    out_unit = F.normalize(out_hidden, dim=-1)
    sims = torch.einsum("fd,bnd->bfn", ref_unit, out_unit)
    if not bool(out_valid.all()):
        sims = sims.masked_fill(~out_valid[:, None, :], float("-inf"))
    return sims.max(dim=-1).values.mean(dim=-1).float().cpu()


def attention_pool(head: torch.nn.Module, hidden: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """SigLIP's ``MultiheadAttentionPoolingHead`` with a key-padding mask threaded through.

    Args:
        head: ``vision_model.head`` (``probe``, ``attention``, ``layernorm``, ``mlp``).
        hidden: ``[B, N, D]`` last hidden states.
        exclude: ``[B, N]`` bool, True where a token must be invisible to the probe.

    Returns:
        ``[B, D]`` pooled embeddings.
    """
    probe = head.probe.repeat(hidden.shape[0], 1, 1)
    attended = head.attention(probe, hidden, hidden, key_padding_mask=exclude)[0]
    pooled = attended + head.mlp(head.layernorm(attended))
    return pooled[:, 0]


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of two ``[B, D]`` tensors, as float32 on CPU."""
    import torch.nn.functional as F

    return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1).float().cpu()


def pad_stack(rows: Sequence[torch.Tensor], value: float | bool = 0.0) -> torch.Tensor:
    """Stack ``[N_i, ...]`` tensors into ``[B, max N_i, ...]``, filling each tail with ``value``."""
    import torch

    if len({len(r) for r in rows}) == 1:
        return torch.stack(list(rows))
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=value)


def image_key(image: Any) -> str:
    """Content key of a PIL image (mode, size and a hash of its pixels): equal images share one encoding."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()
    return f"{image.mode}:{image.size[0]}x{image.size[1]}:{digest}"


def encoding_schedule(
    ref_keys: Sequence[str], out_keys: Sequence[str]
) -> tuple[list[int], list[str], dict[str, int]]:
    """Order in which to encode images so each reference's pairs complete together.

    Args:
        ref_keys: Image key of each pair's reference.
        out_keys: Image key of each pair's output.

    Returns:
        ``(order, queue, uses)``: pair indices grouped by reference (first-appearance order, stable within
        a group), distinct image keys in the order they are first needed, and how many pairs use each key.

    Example:
        >>> encoding_schedule(["r1", "r2", "r1"], ["a", "b", "a"])
        ([0, 2, 1], ['r1', 'a', 'r2', 'b'], {'r1': 2, 'a': 2, 'r2': 1, 'b': 1})
    """
    first: dict[str, int] = {}
    for n, key in enumerate(ref_keys):
        first.setdefault(key, n)
    order = sorted(range(len(ref_keys)), key=lambda i: first[ref_keys[i]])
    uses: dict[str, int] = {}
    for i in order:
        for key in (ref_keys[i], out_keys[i]):
            uses[key] = uses.get(key, 0) + 1
    return order, list(uses), uses


@dataclass
class PreparedInputs:
    """Pairs with images loaded and keyed by content, masks as float arrays and PF texts stripped."""

    pairs: list[Any]
    ref_keys: list[str]
    out_keys: list[str]
    images: dict[str, Image.Image]
    ref_masks: list[np.ndarray]
    out_masks: list[np.ndarray]
    texts: list[str] = field(default_factory=list)


def open_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file fully into memory."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read image {os.fspath(path)!r}: {err}") from err


def load_mask(mask: Any) -> np.ndarray:
    """A mask given as array, PIL image or file path, as float32 in ``[0, 1]`` (see :func:`mask_to_array`)."""
    if isinstance(mask, (str, os.PathLike)):
        mask = open_image(mask).convert("L")
    try:
        return mask_to_array(mask)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def prepare_inputs(pairs: Sequence[Any], stripper: str) -> PreparedInputs:
    """Load and key the inputs of ``MaskedPair``-like items; each file and each object is read once.

    Raises:
        ConfigError: An unreadable image or mask, a mask that is not 2-D, or a prompt that is not a string.
    """
    from PIL import Image

    images: dict[str, Image.Image] = {}
    keys: dict[int | str, str] = {}
    masks: dict[int | str, np.ndarray] = {}

    def key_of(img: Any) -> str:
        ident: int | str = id(img) if isinstance(img, Image.Image) else os.fspath(img)
        if ident not in keys:
            loaded = img if isinstance(img, Image.Image) else open_image(img)
            keys[ident] = image_key(loaded)
            images.setdefault(keys[ident], loaded)
        return keys[ident]

    def mask_of(m: Any) -> np.ndarray:
        ident: int | str = os.fspath(m) if isinstance(m, (str, os.PathLike)) else id(m)
        if ident not in masks:
            masks[ident] = load_mask(m)
        return masks[ident]

    for n, p in enumerate(pairs):
        if not isinstance(p.prompt, str):
            raise ConfigError(f"pair {n}: prompt must be a string, got {type(p.prompt).__name__}")
    return PreparedInputs(pairs=list(pairs), ref_keys=[key_of(p.reference) for p in pairs],
                          out_keys=[key_of(p.output) for p in pairs], images=images,
                          ref_masks=[mask_of(p.reference_mask) for p in pairs],
                          out_masks=[mask_of(p.output_mask) for p in pairs],
                          texts=[strip_subject(p.prompt, p.subject, stripper) for p in pairs])
