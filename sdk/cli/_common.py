"""Small helpers shared by the CLI modules."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from vptt.core.errors import ConfigError, PersonaValidationError, VPTTError

F = TypeVar("F", bound=Callable[..., Any])
_state: dict[str, Any] = {}  # the root command's settings and the Personalizer built from them


def set_settings(settings: Any) -> None:
    """Record the root command's settings (``vptt --data-dir ... COMMAND``); drops a built Personalizer."""
    _state["settings"] = settings
    _state.pop("personalizer", None)


def settings() -> Any:
    """The root command's settings when run under ``vptt``, else from ``VPTT_*`` variables."""
    from vptt.core.settings import VPTTSettings

    return _state.get("settings") or VPTTSettings()


def personalizer() -> Any:
    """The Personalizer of this command (built once from :func:`settings`)."""
    if "personalizer" not in _state:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        from vptt.agents.personalizer import Personalizer

        _state["personalizer"] = Personalizer(settings=settings())
    return _state["personalizer"]


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
