"""Reading persona files for ingestion: validate everything first, then stream (constant memory).

"Bad input writes nothing": a file is validated whole before the first write. A small file is kept in memory
from that pass; a large one (above ``memory_limit`` bytes) is read a second time while it is written, so memory
stays flat whatever the number of personas.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from vptt.core.errors import FieldProblem
from vptt.core.models import Persona
from vptt.core.personas import OnError, iter_personas

DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024


class _Reread:
    """The valid personas of a file, read again on iteration (bad lines were reported by the first pass)."""

    def __init__(self, path: str | os.PathLike[str], count: int) -> None:
        self.path, self.count = path, count

    def __iter__(self) -> Iterator[Persona]:
        return iter_personas(self.path, on_error="skip")

    def __len__(self) -> int:
        return self.count


def validated_personas(path: str | os.PathLike[str], *, on_error: OnError = "raise",
                       skipped: list[FieldProblem] | None = None,
                       memory_limit: int = DEFAULT_MEMORY_LIMIT) -> Iterable[Persona]:
    """The personas of a JSONL file, every line validated before this returns.

    Args:
        path: the JSONL file.
        on_error: ``"raise"``: the first bad line raises (nothing is returned, nothing gets written);
            ``"skip"``: bad lines are left out and their problems appended to ``skipped``.
        skipped: collects the problems of skipped lines.
        memory_limit: files up to this many bytes are returned as a list; larger ones as a re-reading stream.
    """
    if os.path.getsize(path) <= memory_limit:
        return list(iter_personas(path, on_error=on_error, skipped=skipped))
    count = sum(1 for _ in iter_personas(path, on_error=on_error, skipped=skipped))
    return _Reread(path, count)
