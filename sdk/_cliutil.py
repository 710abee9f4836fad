"""Small helpers shared by the CLI modules."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .errors import ConfigError, PersonaValidationError, VPTTError

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(fn: F) -> F:
    """Turn SDK errors into a red message and an exit code: 2 for invalid input files, 1 otherwise."""
    import typer
    from rich.console import Console

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (VPTTError, FileNotFoundError) as exc:
            Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2 if isinstance(exc, PersonaValidationError) else 1) from None
    return wrapper  # type: ignore[return-value]


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
