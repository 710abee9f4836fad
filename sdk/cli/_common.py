"""Small helpers shared by the CLI modules."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError

from vptt.core.checks import explain_validation
from vptt.core.errors import (
    ConfigError,
    InvalidQueryError,
    PersonaTypeError,
    PersonaValidationError,
    RatingsValidationError,
    VPTTError,
)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_REJECTED, EXIT_IMAGE_REJECTED = 0, 1, 2, 3, 4
EXIT_CODES_HELP = ("Exit codes: 0 success; 1 an error (store, provider, model, run); 2 invalid input (bad option, "
                   "setting or input file); 3 nothing accepted (a run rejected by the text gate, or a command that "
                   "produced nothing); 4 no image passed the image gate (the best one is still saved).")
INVALID_INPUT: tuple[type[BaseException], ...] = (ConfigError, PersonaValidationError, RatingsValidationError,
                                                 InvalidQueryError, PersonaTypeError, ValidationError)
"""Errors in what the user gave (exit code 2); every other error exits 1."""
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
    if isinstance(exc, ValidationError):  # a config object built from options (JudgeConfig, ...)
        return plain(explain_validation(exc, exc.title))
    msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return plain(msg or type(exc).__name__)


def fail(exc: BaseException) -> NoReturn:
    """Print one readable error line (no traceback) and exit: 2 for invalid input, 1 otherwise."""
    import typer
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {error_line(exc)}", highlight=False)
    raise typer.Exit(EXIT_INVALID if isinstance(exc, INVALID_INPUT) else EXIT_ERROR) from None


def cli_errors(fn: F) -> F:
    """Turn SDK errors into one red line and an exit code (see :data:`EXIT_CODES_HELP`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (VPTTError, FileNotFoundError, NotADirectoryError, IsADirectoryError, ValidationError) as exc:
            fail(exc)
    return wrapper  # type: ignore[return-value]


def configure_output(*, quiet: bool = False, log_level: str = "warning") -> Callable[[], None]:
    """Logging to stderr at ``log_level``; no model-loading bars ever; no progress bars at all when quiet.

    Returns a function that restores the environment and logging as they were (the CLI calls it when the
    command ends, so in-process callers such as tests are left unchanged).
    """
    import logging
    import os

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise ConfigError(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    wanted = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
              "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}  # model loads never draw bars on the command line
    if quiet:
        wanted["TQDM_DISABLE"] = "1"
        level = max(level, logging.ERROR)
    saved = {k: os.environ.get(k) for k in wanted}
    for k, v in wanted.items():
        if k == "TQDM_DISABLE" or k not in os.environ:
            os.environ[k] = v
    _state["quiet"] = quiet
    logger = logging.getLogger("vptt")
    old_level = logger.level
    logger.setLevel(level)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)

    def restore() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        _state["quiet"] = False

    return restore


def quiet() -> bool:
    """True under ``vptt --quiet``: print results and errors only."""
    return bool(_state.get("quiet"))


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
