"""Small helpers shared by the CLI modules."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError


def parse_pairs(items: Iterable[str], what: str) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict; values are JSON when they parse (numbers, booleans), else strings.

    Example:
        >>> parse_pairs(["steps=2", "model=dir/x"], "--option")
        {'steps': 2, 'model': 'dir/x'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
