"""Local diffusers pipelines: text-to-image from a model id or directory, image-to-image for the edit tasks.

The text-to-image pipeline loads on first use (``local_files_only`` by default: nothing downloads unless you
say so); the editing pipeline is derived from it with ``AutoPipelineForImage2Image.from_pipe`` and shares its
weights. Seeds drive a CPU ``torch.Generator`` so a seed gives the same image on any device. A deadline is
checked after every denoising step (hard timeout), which is also where progress is reported.

Example:
    >>> gen = DiffusersGenerator("stable-diffusion-v1-5/stable-diffusion-v1-5", device="cuda",
    ...                          dtype="float16", local_files_only=False)       # doctest: +SKIP
    >>> gen.generate(GenerationRequest("a raku tea bowl on tatami", seed=7)).image  # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from vptt.agents.generators.base import GenerationRequest, ImageGenerator
from vptt.core.errors import ConfigError, ModelLoadError
from vptt.core.providers import GenerationError, RunTimeoutError

DType = Literal["float32", "float16", "bfloat16"]


class DiffusersConfig(BaseModel):
    """Settings of :class:`DiffusersGenerator` (unknown fields are rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, description="hub id or local directory with model_index.json")
    device: str = "cpu"
    dtype: DType | None = None
    num_inference_steps: int = Field(default=30, ge=1)
    guidance_scale: float = Field(default=7.5, ge=0)
    height: int | None = Field(default=None, ge=8)
    width: int | None = Field(default=None, ge=8)
    strength: float = Field(default=0.6, gt=0, le=1)
    negative_prompt: str | None = None
    local_files_only: bool = True
    timeout_s: float | None = Field(default=None, gt=0, description="hard limit for one image")


def _torch_dtype(name: str | None) -> Any:
    import torch

    return {None: None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class DiffusersGenerator(ImageGenerator):
    """A diffusers pipeline as an :class:`ImageGenerator`.

    Args:
        model: a hub id or local directory, or a ready pipeline object (tests build tiny ones in code).
        config: settings; keyword arguments override its fields.
    """

    supports_edit = True

    def __init__(self, model: str | os.PathLike[str] | Any = None, *, config: DiffusersConfig | None = None,
                 **overrides: Any) -> None:
        fields = dict(config or DiffusersConfig())
        pipe = None
        if isinstance(model, (str, os.PathLike)):
            fields["model"] = os.fspath(model)
        elif model is not None:
            pipe = model
        self.config = DiffusersConfig(**{**fields, **overrides})
        if pipe is None and not self.config.model:
            raise ConfigError("DiffusersGenerator needs a model id, a local directory or a pipeline object")
        self._pipe: Any = pipe
        self._edit: Any = None
        self._lock = threading.Lock()
        label = self.config.model or type(pipe).__name__
        self.name = f"diffusers:{label}"
        if pipe is not None:
            self._prepare(pipe)

    def _prepare(self, pipe: Any) -> Any:
        pipe = pipe.to(self.config.device, _torch_dtype(self.config.dtype)) if self.config.dtype else \
            pipe.to(self.config.device)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        return pipe

    def _text2img(self) -> Any:
        with self._lock:
            if self._pipe is None:
                from diffusers import DiffusionPipeline

                cfg = self.config
                kwargs: dict[str, Any] = {"local_files_only": cfg.local_files_only}
                if cfg.dtype is not None:
                    kwargs["torch_dtype"] = _torch_dtype(cfg.dtype)
                try:
                    pipe = DiffusionPipeline.from_pretrained(cfg.model, **kwargs)
                except (OSError, ValueError) as exc:
                    hint = " (set local_files_only=False to allow a download)" if cfg.local_files_only else ""
                    raise ModelLoadError(f"cannot load a diffusers pipeline from {cfg.model!r}: {exc}; pass "
                                         f"a directory holding model_index.json or a hub id{hint}") from exc
                self._prepare(pipe)
            return self._pipe

    def _img2img(self) -> Any:
        base = self._text2img()
        with self._lock:
            if self._edit is None:
                from diffusers import AutoPipelineForImage2Image

                try:
                    self._edit = AutoPipelineForImage2Image.from_pipe(base)
                except ValueError as exc:
                    raise ConfigError(f"{self.name} has no image-to-image variant for editing: {exc}") \
                        from exc
                if hasattr(self._edit, "set_progress_bar_config"):
                    self._edit.set_progress_bar_config(disable=True)
            return self._edit

    def _callback(self, request: GenerationRequest, steps: int) -> Any:
        deadline = request.deadline
        if self.config.timeout_s is not None:
            own = time.monotonic() + self.config.timeout_s
            deadline = own if deadline is None else min(deadline, own)

        def on_step_end(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if request.on_progress is not None:
                request.on_progress(i + 1, steps)
            if deadline is not None and time.monotonic() > deadline:
                raise RunTimeoutError(f"{self.name}: generation passed its time limit at step "
                                      f"{i + 1}/{steps}; raise timeout_s or lower num_inference_steps")
            return kwargs
        return on_step_end

    def _generate(self, request: GenerationRequest) -> tuple[Image.Image, int | None, dict[str, Any]]:
        import torch

        cfg = self.config
        seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2 ** 31)
        steps = cfg.num_inference_steps
        params: dict[str, Any] = {
            "prompt": request.prompt, "negative_prompt": request.negative_prompt or cfg.negative_prompt,
            "num_inference_steps": steps, "guidance_scale": cfg.guidance_scale, "model": cfg.model,
            "device": cfg.device, "dtype": cfg.dtype}
        kwargs = {**params}
        del kwargs["model"], kwargs["device"], kwargs["dtype"]
        if request.init_image is not None:
            pipe = self._img2img()
            params["strength"] = kwargs["strength"] = request.strength or cfg.strength
            kwargs["image"] = request.init_image.convert("RGB")
        else:
            pipe = self._text2img()
            params["height"] = kwargs["height"] = request.height or cfg.height
            params["width"] = kwargs["width"] = request.width or cfg.width
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        try:
            out = pipe(**kwargs, generator=generator, output_type="pil",
                       callback_on_step_end=self._callback(request, steps))
        except RunTimeoutError:
            raise
        except torch.OutOfMemoryError as exc:
            raise GenerationError(f"{self.name}: out of memory; lower height/width, use dtype='float16' or a "
                                  "smaller model") from exc
        except (ValueError, RuntimeError, TypeError) as exc:
            raise GenerationError(f"{self.name}: the pipeline failed: {exc}") from exc
        return out.images[0], int(seed), params
