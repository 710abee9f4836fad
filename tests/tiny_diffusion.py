"""A tiny Stable Diffusion pipeline built from configs in code (random weights; never downloads).

Like diffusers' ``get_dummy_components()``: UNet with ``block_out_channels=(32, 64)``, a two-block VAE, a
two-layer CLIP text encoder and a character-level CLIP tokenizer built in memory. 32 px images, 2 steps, CPU.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHARS = string.ascii_lowercase + string.digits + ".,'!?-"


def tiny_vocab() -> dict[str, int]:
    """Character-level BPE vocabulary (no merges): every character, alone and word-final."""
    tokens = ["<|startoftext|>", "<|endoftext|>", *CHARS, *(c + "</w>" for c in CHARS)]
    return {t: i for i, t in enumerate(tokens)}


def tiny_components(seed: int = 0) -> dict[str, Any]:
    """The pipeline's components, each built after ``torch.manual_seed(seed)``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16,
                                in_channels=4, out_channels=4, cross_attention_dim=32,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        sample_size=32)
    torch.manual_seed(seed)
    vocab = tiny_vocab()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2, vocab_size=len(vocab) + 2,
        max_position_embeddings=77))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    return {"unet": unet, "scheduler": scheduler, "vae": vae, "text_encoder": text_encoder,
            "tokenizer": tokenizer, "safety_checker": None, "feature_extractor": None,
            "requires_safety_checker": False}


def tiny_pipeline(seed: int = 0) -> Any:
    """A ``StableDiffusionPipeline`` of :func:`tiny_components` (progress bars off)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**tiny_components(seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny pipeline with ``save_pretrained`` (for the "load from a local directory" path)."""
    path = Path(directory)
    tiny_pipeline(seed).save_pretrained(path)
    return path


_SHARED: dict[int, Any] = {}


def shared_pipeline(seed: int = 0) -> Any:
    """One tiny pipeline per seed for the whole test session (building and warming it costs seconds)."""
    if seed not in _SHARED:
        _SHARED[seed] = tiny_pipeline(seed)
    return _SHARED[seed]


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch on ``n`` threads inside the block (the tiny models are far faster on one thread when the
    machine's cores are shared: OpenMP workers spin against other processes), then restore the setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
