"""The image-generator protocol: one small abstract base, typed requests and results.

A generator turns a :class:`GenerationRequest` (prompt, seed, optional input image for editing) into a
:class:`GeneratedImage` (PIL image, the seed actually used, every parameter). Subclasses implement
:meth:`ImageGenerator._generate` only; validation, timing and the async wrapper are written once here.
"""

from __future__ import annotations

import asyncio
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from vptt.core.errors import ConfigError
from vptt.core.paths import id_to_filename

Task = Literal["generate", "edit"]


@dataclass(frozen=True)
class GenerationRequest:
    """What to draw.

    Attributes:
        prompt: the (personalized) prompt.
        seed: RNG seed; ``None`` lets the generator draw one (the result says which).
        init_image: the image to edit (image-to-image); ``None`` for text-to-image.
        mask_image: optional edit mask for providers that take one (white = area to change).
        negative_prompt, width, height, strength: per-request overrides of the generator's settings.
        deadline: ``time.monotonic()`` value after which generation must stop (hard timeout).
        on_progress: called with ``(step, total_steps)`` where the backend reports steps.
    """

    prompt: str
    seed: int | None = None
    init_image: Image.Image | None = field(default=None, repr=False)
    mask_image: Image.Image | None = field(default=None, repr=False)
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    strength: float | None = None
    deadline: float | None = None
    on_progress: Callable[[int, int], None] | None = field(default=None, repr=False, compare=False)

    @property
    def task(self) -> Task:
        return "edit" if self.init_image is not None else "generate"


@dataclass
class GeneratedImage:
    """One generated image with the seed used and every parameter that produced it."""

    image: Image.Image = field(repr=False)
    seed: int | None
    params: dict[str, Any]
    generator: str
    elapsed_ms: float = 0.0

    def save(self, directory: str | os.PathLike[str], stem: str) -> Path:
        """Write the image as ``<directory>/<stem>.png`` and return the path."""
        return save_png(self.image, directory, stem)


def safe_stem(text: str) -> str:
    """A file-name stem for ``text`` (:func:`vptt.core.paths.id_to_filename`: collision- and traversal-free)."""
    return id_to_filename(text) if text else "image"


def save_png(image: Image.Image, directory: str | os.PathLike[str], stem: str) -> Path:
    """Save ``image`` as PNG under ``directory`` (created if needed)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{safe_stem(stem)}.png"
    image.save(path, format="PNG")
    return path


class ImageGenerator(ABC):
    """Text-to-image (and, where ``supports_edit``, image editing) behind one method.

    Subclasses set ``name`` and implement :meth:`_generate`.
    """

    name: str = "generator"
    supports_edit: bool = False

    @abstractmethod
    def _generate(self, request: GenerationRequest) -> tuple[Image.Image, int | None, dict[str, Any]]:
        """Return ``(image, seed used, parameters)`` for a validated request."""

    def generate(self, request: GenerationRequest) -> GeneratedImage:
        """Validate the request, generate, and time it.

        Raises:
            ConfigError: empty prompt, or an edit asked of a generator that cannot edit.
        """
        if not request.prompt.strip():
            raise ConfigError("the prompt to generate from is empty")
        if request.task == "edit" and not self.supports_edit:
            raise ConfigError(f"{self.name} cannot edit images; use a generator with supports_edit "
                              "(diffusers, openai) or drop init_image")
        t0 = time.perf_counter()
        image, seed, params = self._generate(request)
        return GeneratedImage(image=image, seed=seed, params={"task": request.task, **params},
                              generator=self.name, elapsed_ms=round((time.perf_counter() - t0) * 1000, 3))

    async def agenerate(self, request: GenerationRequest) -> GeneratedImage:
        """Async :meth:`generate` (runs in a worker thread unless a subclass does better)."""
        return await asyncio.to_thread(self.generate, request)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
