"""Small helpers shared by the CLI modules."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import ValidationError

from vptt.core.checks import explain_validation
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


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")


def printable(text: object) -> str:
    """``str(text)`` with control characters shown as escapes (``ESC`` as ``\\x1b``), so data printed to a
    terminal can neither colour it, move its cursor nor reorder it (bidi overrides)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), str(text))


def plain(text: object) -> str:
    """:func:`printable` and with rich markup escaped: safe to put in ``console.print`` strings and table cells."""
    from rich.markup import escape

    return escape(printable(text))


def error_line(exc: BaseException) -> str:
    """The message of ``exc`` for ``error: ...`` on stderr (a KeyError's message is not quoted)."""
    msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return plain(msg or type(exc).__name__)


def cli_errors(fn: F) -> F:
    """Turn SDK errors into a red message and an exit code: 2 for invalid input files, 1 otherwise."""
    import typer
    from rich.console import Console

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (VPTTError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {error_line(exc)}", highlight=False)
            raise typer.Exit(2 if isinstance(exc, PersonaValidationError) else 1) from None
        except ValidationError as exc:  # a config object built from options (JudgeConfig, ...)
            msg = explain_validation(exc, exc.title)
            Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {plain(msg)}", highlight=False)
            raise typer.Exit(1) from None
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
