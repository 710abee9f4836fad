"""File names derived from ids: one collision-free, traversal-free, readable encoding.

Persona ids, post ids, task and method names are arbitrary strings (``"../../x"``, ``"/etc"``, ``"a b"``,
``"a/b"``, ``"CON"``, ``"Alice"`` beside ``"alice"``). Every file or folder name the SDK derives from an id goes
through :func:`id_to_filename`, so:

* **no traversal**: the name never contains a path separator, never is ``"."`` or ``".."``, never starts with
  a dot (no hidden files) or a hyphen (no option look-alikes), never ends with a dot or a space;
* **no collision**: a name is kept as it is only when it is made of lower-case letters, digits and ``_.-``
  (and is no Windows device name); anything else (upper case, spaces, slashes, non-ASCII, too long) becomes
  a readable stem plus ``~`` and 16 hex digits of the id's SHA-256. ``~`` never occurs in a kept name, so a
  kept name cannot equal an encoded one, and upper case is always encoded, so two ids never share a name
  even on a case-insensitive file system (macOS, Windows);
* **readable**: ``"p01_kyoto_ceramicist"`` stays ``"p01_kyoto_ceramicist"``; ``"Alice Smith"`` becomes
  ``"Alice_Smith~3f0c…"``.

Example:
    >>> id_to_filename("p01_kyoto_ceramicist")
    'p01_kyoto_ceramicist'
    >>> id_to_filename("../../x").split("~")[0]
    'x'
    >>> "/" in id_to_filename("a/b") or ".." in id_to_filename("../..")
    False
    >>> len({id_to_filename(s) for s in ("a b", "a_b", "a/b")})
    3
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

_KEEP = re.compile(r"[a-z0-9_][a-z0-9_.-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{d}{i}" for d in ("com", "lpt") for i in range(10)])
HASH_CHARS = 16
"""Hex digits of SHA-256 appended to an encoded name (64 bits)."""


def id_digest(value: str, n: int = HASH_CHARS) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``value`` (UTF-8; lone surrogates passed through)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def _keepable(value: str, max_len: int) -> bool:
    return (len(value) <= max_len and _KEEP.fullmatch(value) is not None and ".." not in value
            and not value.endswith(".") and value.split(".", 1)[0] not in _WINDOWS_DEVICES)


def id_to_filename(value: str, *, max_len: int = 80) -> str:
    """A file or folder name for ``value`` (an id): the id itself when safe, else ``stem~<hash>``.

    Args:
        value: any string (persona id, post id, task or method name, thread id).
        max_len: most characters of the name (at least 24); longer ids are encoded.

    Returns:
        A name of ``[A-Za-z0-9_.~-]`` characters only, at most ``max_len`` long, distinct for distinct ids
        (up to a 64-bit hash collision), that is neither ``"."`` nor ``".."`` and holds no separator.

    Raises:
        TypeError: ``value`` is not a string.
    """
    if not isinstance(value, str):
        raise TypeError(f"an id must be a string, got {type(value).__name__}")
    max_len = max(int(max_len), HASH_CHARS + 8)
    if _keepable(value, max_len):
        return value
    stem = _UNSAFE.sub("_", value)
    stem = re.sub(r"\.{2,}", ".", stem).strip("._-")[: max_len - HASH_CHARS - 2].rstrip("._-") or "id"
    if stem.split(".", 1)[0].lower() in _WINDOWS_DEVICES:
        stem = "_" + stem  # "nul.txt~..." would still name a device on Windows
    return f"{stem}~{id_digest(value)}"


def path_for_id(root: str | os.PathLike[str], *ids: str, suffix: str = "") -> Path:
    """``root/<enc(id1)>/<enc(id2)>...<suffix>``: a path under ``root`` built from ids.

    Example:
        >>> str(path_for_id("out", "../../x", "a/b", suffix=".png")).startswith("out/")
        True
    """
    if not ids:
        raise ValueError("path_for_id needs at least one id")
    if suffix and not re.fullmatch(r"(\.[A-Za-z0-9]+)+", suffix):
        raise ValueError(f"suffix must look like '.png', got {suffix!r}")
    parts = [id_to_filename(i) for i in ids]
    parts[-1] += suffix
    return Path(root).joinpath(*parts)
