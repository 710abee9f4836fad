"""Image generators: ``"none"``, local ``"diffusers"`` pipelines and ``"openai"`` images (lazy registry).

Example:
    >>> build_generator("none") is None
    True
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from vptt.agents.generators.base import GeneratedImage, GenerationRequest, ImageGenerator, save_png
from vptt.core.errors import ConfigError

GENERATORS: dict[str, str] = {
    "diffusers": "vptt.agents.generators.diffusers_gen:DiffusersGenerator",
    "openai": "vptt.agents.generators.openai_images:OpenAIImageGenerator",
}
"""Generator names -> dotted paths (imported only when chosen)."""


def build_generator(spec: str | ImageGenerator | None, **kwargs: Any) -> ImageGenerator | None:
    """The generator called ``spec`` built with ``kwargs``; ``None``/``"none"`` gives None (text only).

    Raises:
        ConfigError: unknown name (close names are suggested).
    """
    if spec is None or isinstance(spec, ImageGenerator):
        if kwargs:
            raise ConfigError("generator options were given with a ready generator object; pass one or "
                              "the other")
        return spec
    if spec == "none":
        return None
    path = GENERATORS.get(spec)
    if path is None:
        close = difflib.get_close_matches(spec, [*GENERATORS, "none"], n=2)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown generator {spec!r} (choose from {['none', *GENERATORS]}){hint}")
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)  # type: ignore[no-any-return]


__all__ = ["GENERATORS", "GeneratedImage", "GenerationRequest", "ImageGenerator", "build_generator",
           "save_png"]
