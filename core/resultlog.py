"""Append-only JSONL result log that survives a crash or ``kill -9`` without losing or duplicating rows.

Rows are appended in blocks (one persona at a time), flushed and fsync'ed. On open, a torn last line (a
write cut short by a crash) is truncated away; rows already present are reported by key so a re-run skips
them. Keys must be deterministic, so the rows a re-run recomputes are the rows that were lost.

Any other damage (a corrupt line in the middle, ``{}``, binary garbage, a row without its key fields) is
never skipped silently, which would turn into a wrong number in a report: it raises
:class:`~vptt.core.errors.RunFileError` naming the file and line and saying what to do.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from vptt.core.errors import RunFileError

Key = tuple[str, ...]
_FIX = "delete that line (a resumed run recomputes its row) or move the file away to start over"


def parse_row(raw: bytes, path: str | os.PathLike[str], lineno: int) -> dict[str, Any]:
    """One line of a JSONL run file as a dict, or :class:`RunFileError` naming ``path:lineno``."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path}:{lineno}: damaged row (bytes that are not UTF-8 at {exc.start}); {_FIX}"
                           ) from None
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}:{lineno}: damaged row (invalid JSON: {exc.msg}); {_FIX}") from None
    except RecursionError:
        raise RunFileError(f"{path}:{lineno}: damaged row (absurdly nested JSON); {_FIX}") from None
    if not isinstance(row, dict):
        raise RunFileError(f"{path}:{lineno}: damaged row (a JSON {type(row).__name__}, not an object); {_FIX}")
    return row


def read_rows(path: str | os.PathLike[str], *, required: tuple[str, ...] = (), numeric: tuple[str, ...] = (),
              data: bytes | None = None) -> list[dict[str, Any]]:
    """Every complete row of a JSONL run file (a torn last line, cut short by a crash, is left out).

    Args:
        path: the file.
        required: fields every row must have (e.g. the row key).
        numeric: fields that must be numbers or null when present.
        data: the file's bytes, if already read.

    Raises:
        RunFileError: a damaged line, or a row missing a required field, naming the file and line.
    """
    data = Path(path).read_bytes() if data is None else data
    rows = []
    for lineno, raw in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), 1):
        if not raw.strip():
            continue
        row = parse_row(raw, path, lineno)
        missing = [k for k in required if k not in row or row[k] is None]
        if missing:
            raise RunFileError(f"{path}:{lineno}: row without {', '.join(missing)}; {_FIX}")
        wrong = [k for k in numeric if row.get(k) is not None and (isinstance(row[k], bool)
                                                                    or not isinstance(row[k], (int, float)))]
        if wrong:
            raise RunFileError(f"{path}:{lineno}: {', '.join(wrong)} must be a number; {_FIX}")
        rows.append(row)
    return rows


class ResultLog:
    """A JSONL file of result rows with a key per row.

    Args:
        path: the JSONL file (created if absent).
        key: maps a row to its key, e.g. ``(persona_id, task, method)``.
    """

    def __init__(self, path: str | os.PathLike[str], key: Callable[[Mapping[str, Any]], Key]) -> None:
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[Key] = set()
        self.repaired_bytes = 0
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self.path.touch()
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # torn last line from a crash: cut it off
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
            self.repaired_bytes = len(data) - end
        for lineno, raw in enumerate(data[:end].splitlines(), 1):
            if not raw.strip():
                continue
            row = parse_row(raw, self.path, lineno)
            try:
                self.done.add(self.key(row))
            except (KeyError, TypeError, ValueError) as exc:
                raise RunFileError(f"{self.path}:{lineno}: row without its key ({type(exc).__name__}: {exc}); "
                                   f"{_FIX}") from None

    def rows(self, *, required: tuple[str, ...] = (), numeric: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every row in the file, in order (see :func:`read_rows`)."""
        return read_rows(self.path, required=required, numeric=numeric)

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append rows whose key is new (one write, flushed and fsync'ed; thread-safe). Returns the count."""
        with self._lock:
            fresh = []
            for row in rows:
                k = self.key(row)
                if k not in self.done:
                    fresh.append(row)
                    self.done.add(k)
            if fresh:
                blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh).encode("utf-8")
                with open(self.path, "ab") as fh:
                    fh.write(blob)
                    fh.flush()
                    os.fsync(fh.fileno())
            return len(fresh)
