"""Tiny, seeded SigLIP2 checkpoints built from configs in code (never downloaded).

Two flavours, as on the Hub:

* NaFlex: ``Siglip2Model`` + ``Siglip2Processor`` (aspect-preserving resize to at most ``max_num_patches``
  patches, padded in the patch dimension), like ``google/siglip2-*-naflex``.
* Fixed size: ``SiglipModel`` + ``SiglipProcessor`` (square resize), the architecture the fixed-resolution
  SigLIP2 checkpoints (``google/siglip2-base-patch16-224``) use.

Both share a character-level ``Siglip2Tokenizer`` built in memory (lower-casing, byte fallback). Saved
directories carry ``naflex`` / ``fixed`` in their names because the published ``masc-metric`` package tells
the two flavours apart by the substring ``naflex`` in the model id.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin

TEXT_LENGTH = 64
HIDDEN = 32
LAYERS = 2
HEADS = 4
PATCH = 4

_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")


def build_tokenizer(model_max_length: int = TEXT_LENGTH):  # noqa: ANN201 - transformers type
    """A character-level SigLIP2 (Gemma-style BPE) tokenizer over a ~310-entry vocabulary.

    Args:
        model_max_length: Length the processor pads text to (SigLIP2 trains with 64).

    Returns:
        A ``transformers.Siglip2Tokenizer``.
    """
    from transformers import Siglip2Tokenizer

    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    chars = list(string.ascii_lowercase + string.digits + string.punctuation) + ["▁"]
    chars += [f"<0x{b:02X}>" for b in range(256)]
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    return Siglip2Tokenizer(
        vocab=vocab, merges=[], model_max_length=model_max_length, padding_side="right"
    )


def _tower_kwargs(vocab_size: int) -> tuple[dict, dict]:
    common = {
        "hidden_size": HIDDEN,
        "intermediate_size": 37,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
    }
    text = {
        **common,
        "vocab_size": vocab_size,
        "max_position_embeddings": TEXT_LENGTH,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
    }
    return text, {**common, "patch_size": PATCH}


def build_naflex(seed: int = 0, max_num_patches: int = 64) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A tiny NaFlex SigLIP2 model and its processor.

    Args:
        seed: ``torch.manual_seed`` applied before the weights are created.
        max_num_patches: Default patch budget stored in the image processor.

    Returns:
        ``(Siglip2Model, Siglip2Processor)``; the model is in eval mode.
    """
    import torch
    from transformers import Siglip2Model, Siglip2Processor
    from transformers.models.siglip2.configuration_siglip2 import (
        Siglip2Config,
        Siglip2TextConfig,
        Siglip2VisionConfig,
    )
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    tokenizer = build_tokenizer()
    text, vision = _tower_kwargs(len(tokenizer))
    config = Siglip2Config(
        text_config=Siglip2TextConfig(**text),
        vision_config=Siglip2VisionConfig(**vision, num_patches=64),
    )
    torch.manual_seed(seed)
    model = Siglip2Model(config).eval()
    image_processor = Siglip2ImageProcessorPil(patch_size=PATCH, max_num_patches=max_num_patches)
    return model, Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)


def build_fixed(seed: int = 0, image_size: int = 32) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A tiny fixed-size SigLIP model (the layout of fixed-resolution SigLIP2 checkpoints).

    Args:
        seed: ``torch.manual_seed`` applied before the weights are created.
        image_size: Square input side; the patch grid is ``image_size // 4``.

    Returns:
        ``(SiglipModel, SiglipProcessor)``; the model is in eval mode.
    """
    import torch
    from transformers import SiglipModel, SiglipProcessor
    from transformers.models.siglip.configuration_siglip import (
        SiglipConfig,
        SiglipTextConfig,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = build_tokenizer()
    text, vision = _tower_kwargs(len(tokenizer))
    config = SiglipConfig(
        text_config=SiglipTextConfig(**text),
        vision_config=SiglipVisionConfig(**vision, image_size=image_size),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    return model, SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny(root: str | Path, kind: str = "naflex", seed: int = 0) -> Path:
    """Build a tiny checkpoint and save model + processor to ``root/tiny-siglip2-<kind>``.

    Args:
        root: Parent directory (e.g. pytest's ``tmp_path``).
        kind: ``"naflex"`` or ``"fixed"``.
        seed: Weight seed.

    Returns:
        The checkpoint directory, loadable with ``AutoModel`` / ``AutoProcessor.from_pretrained``.
    """
    builders = {"naflex": build_naflex, "fixed": build_fixed}
    if kind not in builders:
        raise ValueError(f"kind must be one of {sorted(builders)}, got {kind!r}")
    model, processor = builders[kind](seed=seed)
    path = Path(root) / f"tiny-siglip2-{kind}"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
