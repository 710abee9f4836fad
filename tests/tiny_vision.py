"""Tiny, seeded vision checkpoints built from configs in code (never downloaded).

CLIP, DINOv2, DINO (v1, a plain ``ViTModel``), SigLIP and OWL-ViT / OWLv2, each with a PIL image processor
and, where the model has a text tower, a character-level ``CLIPTokenizer`` built in memory. The SigLIP
checkpoint is the fixed-size one of :mod:`tests.tiny_siglip` (shared with the MaSC tests).

``save_tiny(root, kind)`` writes model + processor with ``save_pretrained`` so the "load from a local
directory" path of the evaluators is exercised exactly as with a real checkpoint.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

IMAGE_SIZE = 32
PATCH = 8
HIDDEN = 32
TEXT_LENGTH = 16
KINDS = ("clip", "dinov2", "dino", "siglip", "owlvit", "owlv2")


def _common() -> dict[str, int]:
    return {"hidden_size": HIDDEN, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}


def build_clip_tokenizer() -> Any:
    """A character-level ``CLIPTokenizer`` (no merges): each letter is a token, ``</w>`` ends a word."""
    from transformers import CLIPTokenizer

    # id 0 stays unused: OWL-ViT treats a query whose first token id is 0 as padding
    vocab = {"<|unused|>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for ch in string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TEXT_LENGTH)


def _text_config(vocab_size: int) -> dict[str, int]:
    return {**_common(), "vocab_size": vocab_size, "max_position_embeddings": TEXT_LENGTH,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


def _vision_config() -> dict[str, int]:
    return {**_common(), "image_size": IMAGE_SIZE, "patch_size": PATCH}


def build_clip(seed: int = 0) -> tuple[Any, Any, Any]:
    """``(CLIPModel, CLIPImageProcessorPil, CLIPTokenizer)``; projection dim 16."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(text_config=_text_config(len(tokenizer)), vision_config=_vision_config(),
                        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                      crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return model, processor, tokenizer


def build_dinov2(seed: int = 0) -> tuple[Any, Any]:
    """``(Dinov2Model, BitImageProcessorPil)`` (resize shortest edge, centre crop, ImageNet mean/std)."""
    import torch
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(**_vision_config())).eval()
    processor = BitImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                     crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                     image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return model, processor


def build_dino(seed: int = 0) -> tuple[Any, Any]:
    """``(ViTModel, ViTImageProcessorPil)``: the layout of ``facebook/dino-vits16`` (no pooler)."""
    import torch
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    torch.manual_seed(seed)
    model = ViTModel(ViTConfig(**_vision_config()), add_pooling_layer=False).eval()
    processor = ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                     image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return model, processor


def build_owl(seed: int = 0, version: int = 1) -> tuple[Any, Any]:
    """``(OwlViTForObjectDetection, OwlViTProcessor)`` or, with ``version=2``, the OWLv2 pair.

    The logit shift/scale and last box layers are zeroed after the seeded init, so a box's score is
    ``sigmoid(cos(patch, query))`` (query-dependent, in (0.27, 0.73)) and each box is its patch's grid cell.
    """
    import torch
    import transformers as tf

    tokenizer = build_clip_tokenizer()
    prefix = "OwlViT" if version == 1 else "Owlv2"
    config_cls = getattr(tf, f"{prefix}Config")
    config = config_cls(text_config=_text_config(len(tokenizer)), vision_config=_vision_config(),
                        projection_dim=HIDDEN)
    torch.manual_seed(seed)
    model = getattr(tf, f"{prefix}ForObjectDetection")(config).eval()
    with torch.no_grad():  # random heads saturate (scores 0, boxes 0/1): make them informative instead
        for layer in (model.class_head.logit_shift, model.class_head.logit_scale, model.box_head.dense2):
            layer.weight.zero_()
            layer.bias.zero_()
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    extra = {"crop_size": size} if version == 1 else {}
    image_processor = getattr(tf, f"{prefix}ImageProcessorPil")(size=size, **extra)
    return model, getattr(tf, f"{prefix}Processor")(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny(root: str | Path, kind: str, seed: int = 0) -> Path:
    """Build a tiny checkpoint and ``save_pretrained`` everything to ``root/tiny-<kind>``.

    Args:
        root: Parent directory (e.g. pytest's ``tmp_path``).
        kind: One of :data:`KINDS`.
        seed: Weight seed.

    Returns:
        The checkpoint directory.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(root) / f"tiny-{kind}"
    if kind == "siglip":
        from tests.tiny_siglip import build_fixed

        parts: tuple[Any, ...] = build_fixed(seed=seed, image_size=IMAGE_SIZE)
    elif kind in ("owlvit", "owlv2"):
        parts = build_owl(seed=seed, version=1 if kind == "owlvit" else 2)
    else:
        parts = {"clip": build_clip, "dinov2": build_dinov2, "dino": build_dino}[kind](seed=seed)
    for part in parts:
        part.save_pretrained(path)
    return path


def random_images(n: int, seed: int = 0, size: tuple[int, int] = (40, 48)) -> list[Any]:
    """``n`` random RGB PIL images (width, height = ``size``) from a seeded generator."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]
