"""Masked similarity (MaSC): concept preservation and prompt following from one SigLIP2 forward per image.

The math lives in :mod:`vptt.evaluators._masc_core`; :class:`MaskedSimilarity` holds the model, batches images
through the vision tower, encodes each distinct image once (a reference scored against N outputs costs N+1
image encodings) and caches text embeddings of repeated prompts. Numbers equal the published
``masc-metric`` package on the same checkpoint and inputs.

Example:
    >>> from vptt.evaluators.masked_similarity import MaskedSimilarity, PAPER_MODEL_ID
    >>> scorer = MaskedSimilarity("path/to/siglip2-checkpoint", device="cpu")  # doctest: +SKIP
    >>> res = scorer.score(ref, ref_mask, out, out_mask, "a cat on a beach", "cat")  # doctest: +SKIP
    >>> res.cp, res.pf  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from vptt.core.errors import ConfigError, ModelLoadError
from vptt.evaluators import _masc_core as core

PAPER_MODEL_ID = "google/siglip2-so400m-patch16-naflex"
"""The paper's backbone (never loaded unless you pass it)."""

ImageInput = Union[Image.Image, str, os.PathLike]
MaskInput = Union[np.ndarray, Image.Image, str, os.PathLike]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class MaskedPair:
    """One item to score: a reference and an output image, their foreground masks, and the prompt."""

    reference: ImageInput
    reference_mask: MaskInput
    output: ImageInput
    output_mask: MaskInput
    prompt: str
    subject: str | None = None
    """Subject name removed from the prompt before PF (``None`` keeps the prompt as is)."""


@dataclass(frozen=True)
class ImageEncoding:
    """One image through the vision tower: its patch tokens ``[Hp * Wp, D]`` (row-major, no padding)."""

    hidden: torch.Tensor
    grid: tuple[int, int]


@dataclass(frozen=True)
class MaskedSimilarityDiagnostics:
    """Patch counts behind one score (the ``extras`` of the reference package)."""

    ref_grid: tuple[int, int]
    out_grid: tuple[int, int]
    n_ref_fg: int
    n_ref_patches: int
    ref_fg_fraction: float
    n_out_fg: int
    n_out_patches: int
    n_bg_pooled: int
    stripper: str | None


@dataclass(frozen=True)
class MaskedSimilarityResult:
    """CP and PF of one (reference, output, prompt) item, with the model and preprocessing used."""

    cp: float
    """Concept preservation in [-1, 1]; NaN when the reference mask has no foreground patch."""
    pf: float
    """Prompt following in [-1, 1]; NaN when the output has no background patch."""
    prompt_text: str
    prompt_stripped: bool
    model_id: str
    preprocessing: str
    diagnostics: MaskedSimilarityDiagnostics

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (for JSON)."""
        return asdict(self)


@dataclass
class EncodingStats:
    """Running counts of model work, for checking reuse (images_encoded is N+1 for one ref and N outputs)."""

    images_encoded: int = 0
    vision_calls: int = 0
    texts_encoded: int = 0
    text_cache_hits: int = 0


def _auto_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype, got {dtype!r}")
    return _DTYPES[dtype]


def load_siglip(model_id: str | os.PathLike) -> tuple[Any, Any, bool]:
    """Load a SigLIP/SigLIP2 model and processor from a local directory or a Hugging Face id.

    A local directory never touches the network; a Hub id is fetched only because the caller named it
    (``HF_HUB_OFFLINE=1`` keeps it to the local cache).

    Returns:
        ``(model, processor, is_naflex)``; NaFlex is read from the config (``Siglip2Model``).
    """
    from transformers import AutoModel, AutoProcessor

    name = os.fspath(model_id)
    local = Path(name).expanduser().is_dir()
    if not local and (os.path.isabs(name) or name.startswith((".", "~"))):
        raise ModelLoadError(f"model directory {name!r} does not exist; pass an existing checkpoint "
                             "directory")
    try:
        processor = AutoProcessor.from_pretrained(name, local_files_only=local)
        model = AutoModel.from_pretrained(name, local_files_only=local)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not load SigLIP2 model/processor from {name!r}: {err}. Pass a directory holding "
            "config.json, the weights and the processor files, or a Hub id such as "
            f"{PAPER_MODEL_ID!r} (downloaded unless HF_HUB_OFFLINE=1)"
        ) from err
    vision = getattr(model, "vision_model", None)
    if vision is None or getattr(model, "text_model", None) is None or getattr(vision, "head", None) is None:
        raise ModelLoadError(f"{name!r} is not a SigLIP/SigLIP2 dual encoder with an attention-pooling head")
    return model, processor, vision.config.model_type == "siglip2_vision_model"


class MaskedSimilarity:
    """MaSC scorer over a frozen SigLIP2 (NaFlex or fixed-size) checkpoint.

    Args:
        model_id: Local checkpoint directory or Hugging Face id (e.g. :data:`PAPER_MODEL_ID`).
        device: ``"cpu"``, ``"cuda"``, ``"mps"``, ...; ``None`` picks cuda > mps > cpu.
        dtype: Cast the model (``"bfloat16"``, ``torch.float16``, ...); ``None`` keeps the checkpoint's.
        naflex_max_patches: Patch budget of NaFlex checkpoints (paper: 1024); ignored for fixed-size ones.
        fg_threshold: Foreground threshold on the downsampled masks (0.5).
        stripper: ``"regex"`` (the paper's) or ``"none"``.
        batch_size: Images per vision forward.
        text_cache_size: Prompt embeddings kept between calls.
    """

    def __init__(self, model_id: str | os.PathLike, *, device: str | None = None,
                 dtype: str | torch.dtype | None = None, naflex_max_patches: int = 1024,
                 fg_threshold: float = 0.5, stripper: str = "regex", batch_size: int = 16,
                 text_cache_size: int = 4096) -> None:
        if stripper not in core.STRIPPERS:
            raise ConfigError(f"stripper must be one of {core.STRIPPERS}, got {stripper!r}")
        if batch_size < 1 or naflex_max_patches < 1 or text_cache_size < 0:
            raise ConfigError("batch_size and naflex_max_patches must be >= 1, text_cache_size >= 0")
        if not 0.0 <= fg_threshold <= 1.0:
            raise ConfigError(f"fg_threshold must lie in [0, 1], got {fg_threshold}")
        torch_dtype = _resolve_dtype(dtype)
        self.model_id = os.fspath(model_id)
        self.device = device or _auto_device()
        self.fg_threshold = float(fg_threshold)
        self.stripper = stripper
        self.batch_size = batch_size
        self.naflex_max_patches = naflex_max_patches
        self.text_cache_size = text_cache_size
        model, self.processor, self.is_naflex = load_siglip(model_id)
        if torch_dtype is not None:
            model = model.to(dtype=torch_dtype)
        self.model = model.eval().to(self.device)
        self.stats = EncodingStats()
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        vcfg = self.model.vision_model.config
        self.patch_size = int(vcfg.patch_size)
        self.input_size = int(getattr(vcfg, "image_size", 0) or 0)
        if not self.is_naflex and (self.input_size <= 0 or self.input_size % self.patch_size):
            raise ModelLoadError(f"fixed-size model has image_size={self.input_size} not a multiple of "
                                 f"patch_size={self.patch_size}")
        self.preprocessing = self._describe_preprocessing()

    def _describe_preprocessing(self) -> str:
        ip = self.processor.image_processor
        if self.is_naflex:
            resize = (f"NaFlex resize to <= {self.naflex_max_patches} patches of {self.patch_size}px, "
                      "aspect kept")
        else:
            resize = f"resize to {self.input_size}x{self.input_size}, {self.patch_size}px patches"
        return (f"{type(ip).__name__}: {resize}, resample={getattr(ip, 'resample', None)}, "
                f"rescale={getattr(ip, 'rescale_factor', None)}, mean={getattr(ip, 'image_mean', None)}, "
                f"std={getattr(ip, 'image_std', None)}; masks bilinear to the patch grid, "
                f"fg threshold {self.fg_threshold}; text padding=max_length, stripper={self.stripper}")

    # ----------------------------------------------------------------- encoding

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image]) -> list[ImageEncoding]:
        """Vision-tower encodings of ``images``, ``batch_size`` images per forward."""
        encodings: list[ImageEncoding] = []
        for start in range(0, len(images), self.batch_size):
            encodings.extend(self._encode_chunk(images[start:start + self.batch_size]))
        return encodings

    def _encode_chunk(self, images: Sequence[Image.Image]) -> list[ImageEncoding]:
        kwargs: dict[str, Any] = {"images": [im.convert("RGB") for im in images], "return_tensors": "pt"}
        if self.is_naflex:
            kwargs["max_num_patches"] = self.naflex_max_patches
        inputs = self.processor.image_processor(**kwargs)
        pixels = inputs["pixel_values"]
        if not self.is_naflex:
            hidden = self._vision(pixel_values=pixels.to(self.device))
            side = self.input_size // self.patch_size
            if hidden.shape[1] != side * side:
                raise RuntimeError(f"vision tower returned {hidden.shape[1]} tokens for a {side}x{side} grid")
            return [ImageEncoding(h, (side, side)) for h in hidden]
        # NaFlex: drop each image's padding and encode images with equal patch counts together, so attention
        # needs no padding mask (real patches attend to the same keys as in the padded layout).
        shapes, pad_mask = inputs["spatial_shapes"], inputs["pixel_attention_mask"]
        grids = [(int(h), int(w)) for h, w in shapes.tolist()]
        groups: dict[int, list[int]] = {}
        for i, (h, w) in enumerate(grids):
            if int(pad_mask[i].sum()) != h * w or not bool(pad_mask[i, :h * w].all()):
                raise RuntimeError(f"processor returned an unexpected patch layout for a {(h, w)} grid")
            groups.setdefault(h * w, []).append(i)
        encodings: list[ImageEncoding | None] = [None] * len(images)
        for n, idx in groups.items():
            sel = torch.tensor(idx)
            ones = torch.ones(len(idx), n, dtype=torch.long, device=self.device)
            hidden = self._vision(pixel_values=pixels[sel, :n].to(self.device), pixel_attention_mask=ones,
                                  spatial_shapes=shapes[sel].to(self.device))
            for i, h in zip(idx, hidden):
                encodings[i] = ImageEncoding(h, grids[i])
        return [e for e in encodings if e is not None]

    def _vision(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Last hidden states of one vision forward; the unused pooled output is not computed."""
        vision = self.model.vision_model
        use_head = getattr(vision, "use_head", None)
        try:
            if use_head is not None:
                vision.use_head = False
            hidden = vision(**inputs).last_hidden_state
        finally:
            if use_head is not None:
                vision.use_head = use_head
        self.stats.vision_calls += 1
        self.stats.images_encoded += int(hidden.shape[0])
        return hidden

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled text embeddings ``[len(texts), D]``; repeated and previously seen texts are encoded once."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        self.stats.text_cache_hits += len(texts) - len(todo)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            ids = [self.processor(text=[t], padding="max_length", return_tensors="pt")["input_ids"]
                   for t in chunk]
            text_model = self.model.text_model
            if len({i.shape for i in ids}) == 1:
                pooled = text_model(input_ids=torch.cat(ids).to(self.device)).pooler_output
            else:  # ragged tokenizer output: encode one by one, exactly as the reference does
                pooled = torch.cat([text_model(input_ids=i.to(self.device)).pooler_output for i in ids])
            self.stats.texts_encoded += len(chunk)
            for text, emb in zip(chunk, pooled):
                self._text_cache[text] = emb
        embs = torch.stack([self._text_cache[t] for t in texts]) if texts else torch.empty(0)
        for t in texts:
            self._text_cache.move_to_end(t)
        while len(self._text_cache) > self.text_cache_size:
            self._text_cache.popitem(last=False)
        return embs

    # ------------------------------------------------------------------ scoring

    def score(self, reference: ImageInput, reference_mask: MaskInput, output: ImageInput,
              output_mask: MaskInput, prompt: str, subject: str | None = None) -> MaskedSimilarityResult:
        """CP and PF of one output against one reference (two image encodings, one text encoding)."""
        pair = MaskedPair(reference, reference_mask, output, output_mask, prompt, subject)
        return self.score_batch([pair])[0]

    def score_outputs(self, reference: ImageInput, reference_mask: MaskInput, outputs: Sequence[ImageInput],
                      output_masks: Sequence[MaskInput], prompts: str | Sequence[str],
                      subject: str | None = None) -> list[MaskedSimilarityResult]:
        """Score N outputs against one reference: N+1 image encodings in all."""
        prompt_list = [prompts] * len(outputs) if isinstance(prompts, str) else list(prompts)
        if not len(outputs) == len(output_masks) == len(prompt_list):
            raise ConfigError(f"got {len(outputs)} outputs, {len(output_masks)} masks and {len(prompt_list)} "
                              "prompts; pass one mask and one prompt per output (or a single prompt string)")
        return self.score_batch([MaskedPair(reference, reference_mask, o, m, p, subject)
                                 for o, m, p in zip(outputs, output_masks, prompt_list)])

    @torch.inference_mode()
    def score_batch(self, pairs: Sequence[MaskedPair]) -> list[MaskedSimilarityResult]:
        """Score many pairs; every distinct image (by content) is encoded once, ``batch_size`` per forward.

        Pairs are taken reference by reference and an encoding is dropped as soon as no pending pair needs
        it, so memory is bounded by a reference's group, not by the whole batch. Results keep input order.
        """
        if isinstance(pairs, MaskedPair) or not all(isinstance(p, MaskedPair) for p in pairs):
            raise ConfigError("score_batch takes a sequence of MaskedPair items")
        prep = core.prepare_inputs(pairs, self.stripper)
        text_emb = self.encode_texts(prep.texts) if prep.texts else None
        order, queue, uses = core.encoding_schedule(prep.ref_keys, prep.out_keys)
        encoded: dict[str, ImageEncoding] = {}
        results: dict[int, MaskedSimilarityResult] = {}
        pending = order
        for start in range(0, len(queue), self.batch_size):
            keys = queue[start:start + self.batch_size]
            encoded.update(zip(keys, self._encode_chunk([prep.images[k] for k in keys])))
            ready = [i for i in pending if prep.ref_keys[i] in encoded and prep.out_keys[i] in encoded]
            done = set(ready)
            pending = [i for i in pending if i not in done]
            if ready:
                results.update(self._score_ready(prep, ready, encoded, text_emb))
            for key in (k for i in ready for k in (prep.ref_keys[i], prep.out_keys[i])):
                uses[key] -= 1
                if uses[key] == 0:
                    del encoded[key]
        return [results[i] for i in range(len(prep.pairs))]

    def _score_ready(self, prep: core.PreparedInputs, ready: list[int], encoded: dict[str, ImageEncoding],
                     text_emb: torch.Tensor | None) -> dict[int, MaskedSimilarityResult]:
        cps, ref_info = self._concept_preservation(prep, ready, encoded)
        grids = {i: encoded[prep.out_keys[i]].grid for i in ready}
        excl = {i: core.downsample_mask(prep.out_masks[i], grids[i]) >= self.fg_threshold
                for i in ready}  # PF hides foreground patches
        pfs = self._prompt_following(prep, ready, encoded, excl, text_emb)
        results = {}
        for i in ready:
            out, pair = encoded[prep.out_keys[i]], prep.pairs[i]
            n_out, n_bg = out.grid[0] * out.grid[1], int((~excl[i]).sum())
            stripped = pair.subject is not None and bool(pair.subject.strip())
            results[i] = MaskedSimilarityResult(
                cp=cps[i], pf=pfs.get(i, float("nan")), prompt_text=prep.texts[i],
                prompt_stripped=stripped and prep.texts[i].split() != pair.prompt.split(),
                model_id=self.model_id, preprocessing=self.preprocessing,
                diagnostics=MaskedSimilarityDiagnostics(
                    ref_grid=encoded[prep.ref_keys[i]].grid, out_grid=out.grid, n_ref_fg=ref_info[i][0],
                    n_ref_patches=ref_info[i][1], ref_fg_fraction=ref_info[i][2], n_out_fg=n_out - n_bg,
                    n_out_patches=n_out, n_bg_pooled=n_bg, stripper=self.stripper if stripped else None))
        return results

    def _concept_preservation(
        self, prep: core.PreparedInputs, ready: list[int], encoded: dict[str, ImageEncoding]
    ) -> tuple[dict[int, float], dict[int, tuple[int, int, float]]]:
        """CP per pair, one batched call per (reference, reference mask); plus (n_fg, n_patches, fg mean)."""
        groups: dict[tuple[str, int], list[int]] = {}
        for i in ready:
            groups.setdefault((prep.ref_keys[i], id(prep.ref_masks[i])), []).append(i)
        cps: dict[int, float] = {}
        info: dict[int, tuple[int, int, float]] = {}
        for (ref_key, _), members in groups.items():
            ref = encoded[ref_key]
            weights = core.downsample_mask(prep.ref_masks[members[0]], ref.grid)
            cast = weights.to(ref.hidden.dtype)
            outs = [encoded[prep.out_keys[i]] for i in members]
            valid = core.pad_stack([torch.ones(len(o.hidden), dtype=torch.bool) for o in outs], False)
            cp = core.concept_preservation(ref.hidden, weights, core.pad_stack([o.hidden for o in outs]),
                                           valid.to(ref.hidden.device), self.fg_threshold)
            cps.update(zip(members, cp.tolist()))
            info.update(dict.fromkeys(members, (int((cast > self.fg_threshold).sum()), cast.numel(),
                                                float(cast.mean()))))
        return cps, info

    def _prompt_following(self, prep: core.PreparedInputs, ready: list[int],
                          encoded: dict[str, ImageEncoding], excl: dict[int, torch.Tensor],
                          text_emb: torch.Tensor | None) -> dict[int, float]:
        """PF per pair with at least one background patch, one batched pooling call."""
        rows = [i for i in ready if not bool(excl[i].all())]
        if not rows or text_emb is None:
            return {}
        hidden = core.pad_stack([encoded[prep.out_keys[i]].hidden for i in rows])
        pooled = core.attention_pool(self.model.vision_model.head, hidden,
                                     core.pad_stack([excl[i] for i in rows], True).to(hidden.device))
        pf = core.cosine_rows(pooled, text_emb[rows].to(pooled.device))
        return dict(zip(rows, pf.tolist()))
