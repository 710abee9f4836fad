"""Small file helpers: atomic writes (a temp file fsync'ed and renamed into place) and JSON reads that fail
with a :class:`~vptt.core.errors.RunFileError` naming the file instead of a raw ``JSONDecodeError``.

A reader never sees a half-written file: a crash during :func:`atomic_write_text` leaves the old file (or
none) in place, never an empty or truncated one.

Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = atomic_write_json(os.path.join(d, "m.json"), {"a": 1})
    >>> read_json_file(p)
    {'a': 1}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from vptt.core.errors import RunFileError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename). Returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def read_json_file(path: str | os.PathLike[str], *, what: str = "file",
                   fix: str = "delete it to start over, or choose another output directory") -> Any:
    """The JSON document in ``path``; an empty, truncated or non-JSON file raises :class:`RunFileError`.

    Args:
        path: the file (must exist).
        what: how the message names the file (``"manifest"``).
        fix: what the message tells the user to do.
    """
    raw = Path(path).read_bytes()
    if not raw.strip():
        raise RunFileError(f"{what} {path} is empty (a write cut short?); {fix}")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{what} {path} is damaged (bytes that are not UTF-8 at {exc.start}); {fix}") from None
    except json.JSONDecodeError as exc:
        state = "truncated" if exc.pos >= len(raw.rstrip()) else "damaged"
        raise RunFileError(f"{what} {path} is {state} (invalid JSON at line {exc.lineno} column {exc.colno}: "
                           f"{exc.msg}); {fix}") from None
    except RecursionError:
        raise RunFileError(f"{what} {path} is damaged (absurdly nested JSON); {fix}") from None


def read_json_object(path: str | os.PathLike[str], *, what: str = "file",
                     fix: str = "delete it to start over, or choose another output directory") -> dict[str, Any]:
    """:func:`read_json_file` that also requires a JSON object."""
    data = read_json_file(path, what=what, fix=fix)
    if not isinstance(data, dict):
        raise RunFileError(f"{what} {path} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data
