"""Up-front checks of the arguments users pass most often (query, persona, thresholds, config objects).

Each check raises a typed :class:`~vptt.core.errors.VPTTError` whose message says what to pass instead, before
any model loads or any request leaves the process.

Example:
    >>> check_query("  A preferred outdoor spot ")
    '  A preferred outdoor spot '
    >>> check_threshold(0.4, "threshold", -1.0, 1.0)
    0.4
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import ValidationError

from vptt.core.errors import ConfigError, EmptyQueryError, InvalidQueryError, PersonaTypeError
from vptt.core.models import _SURROGATE, Persona


def check_query(query: Any, what: str = "query") -> str:
    """``query`` if it is a non-empty string of valid Unicode text.

    Raises:
        EmptyQueryError: empty or only whitespace.
        InvalidQueryError: not a string (bytes must be decoded first), or a lone surrogate, which is what
            undecodable bytes become in a command-line argument.
    """
    if isinstance(query, (bytes, bytearray)):
        raise InvalidQueryError(f"{what} must be text (str), got bytes; decode it first, e.g. "
                                "query.decode('utf-8')")
    if not isinstance(query, str):
        raise InvalidQueryError(f"{what} must be a string, e.g. 'A preferred outdoor spot'; got "
                                f"{type(query).__name__}")
    if not query.strip():
        raise EmptyQueryError(f"{what} must be a non-empty string, e.g. 'A preferred outdoor spot'")
    bad = _SURROGATE.search(query)
    if bad:
        raise InvalidQueryError(f"{what} holds invalid text at character {bad.start()} (a lone surrogate, e.g. "
                                "from bytes that are not UTF-8); pass valid UTF-8 text")
    return query


def check_persona_arg(persona: Any) -> Persona | str:
    """``persona`` if it is a :class:`Persona` or a stored persona id (a non-empty string).

    Raises:
        PersonaTypeError: anything else; a dict gets told how to turn it into a Persona.
    """
    if isinstance(persona, Persona):
        return persona
    if isinstance(persona, str):
        if not persona.strip():
            raise PersonaTypeError("persona id is empty; pass a stored persona id (`vptt personas list`) or a "
                                   "Persona")
        return persona
    if isinstance(persona, dict):
        raise PersonaTypeError("persona is a dict; pass Persona.model_validate(d) (from vptt import Persona), "
                               "or the id of a stored persona")
    raise PersonaTypeError(f"persona must be a Persona or a stored persona id (str), got {type(persona).__name__}")


def check_threshold(value: Any, name: str, low: float, high: float, scale: str = "") -> float:
    """``value`` as a float if it is finite and within ``[low, high]``, else a :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        hint = f" ({scale})" if scale else ""
        raise ConfigError(f"{name}={value!r} is outside [{low:g}, {high:g}]{hint}; a threshold outside the "
                          "score's range accepts or rejects everything")
    return float(value)


def explain_validation(exc: ValidationError, what: str) -> str:
    """One line naming each bad field of a pydantic error: ``invalid what: field: message (got ...)``.

    The offending value is shown shortened, never for a field whose name says it holds a secret.
    """
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<value>"
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parts.append(f"{loc}: no such option")
            continue
        shown = "" if re.search(r"key|secret|password", loc, re.I) else f" (got {_short(e.get('input'))})"
        parts.append(f"{loc}: {msg}{shown}")
    return f"invalid {what}: " + "; ".join(parts)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
