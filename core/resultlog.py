"""Append-only JSONL result log that survives a crash or ``kill -9`` without losing or duplicating rows.

Rows are appended in blocks (one persona at a time), flushed and fsync'ed. On open, a torn last line (a
write cut short by a crash) is truncated away; rows already present are reported by key so a re-run skips
them. Keys must be deterministic, so the rows a re-run recomputes are the rows that were lost.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

Key = tuple[str, ...]


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
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.path}:{lineno}: corrupt result row ({exc.msg}); "
                                 "move the file away to start over") from None
            self.done.add(self.key(row))

    def rows(self) -> list[dict[str, Any]]:
        """Every row in the file, in order."""
        with open(self.path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

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
