"""Read and write the persona JSONL interchange format (one persona per line).

Bad lines (invalid UTF-8, invalid JSON, lone surrogates, nesting deeper than
:data:`~vptt.core.models.MAX_NESTING`, invalid fields) raise :class:`~vptt.core.errors.PersonaValidationError`
naming the file, line and field, or, with ``on_error="skip"``, are left out and listed in
:attr:`PersonaList.skipped`. A UTF-8 byte-order mark at the start of the file is accepted.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from vptt.core.errors import ConfigError, FieldProblem, PersonaValidationError
from vptt.core.models import MAX_NESTING, Persona, Post, find_data_problem

OnError = Literal["raise", "skip"]


class PersonaList(list[Persona]):
    """A list of personas that also reports the lines that were skipped (``on_error="skip"``)."""

    def __init__(self, items: Iterable[Persona] = (), *, path: str = "",
                 skipped: list[FieldProblem] | None = None) -> None:
        super().__init__(items)
        self.path = path
        self.skipped: list[FieldProblem] = list(skipped or [])

    @property
    def skipped_lines(self) -> list[int]:
        """Line numbers left out, each once, in file order."""
        return sorted({p.line for p in self.skipped})


def _loc_to_field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<record>"


def parse_persona(obj: Any, *, file: str = "<memory>", line: int = 0) -> Persona:
    """Validate one decoded JSON value as a persona, raising problems that name file, line and field."""
    problem = find_data_problem(obj)
    if problem is not None:
        raise PersonaValidationError([FieldProblem(file, line, *problem)])
    try:
        return Persona.model_validate(obj, context={"scanned": True})
    except ValidationError as exc:
        problems = [
            FieldProblem(file, line, _loc_to_field(tuple(e["loc"])), e["msg"].removeprefix("Value error, "))
            for e in exc.errors()
        ]
        raise PersonaValidationError(problems) from None


def parse_post(obj: Any, *, file: str = "<memory>", line: int = 0) -> Post:
    """Validate one decoded JSON value as a post, raising problems that name file, line and field."""
    try:
        return Post.model_validate(obj)
    except ValidationError as exc:
        problems = [
            FieldProblem(file, line, _loc_to_field(tuple(e["loc"])), e["msg"].removeprefix("Value error, "))
            for e in exc.errors()
        ]
        raise PersonaValidationError(problems) from None


def parse_posts(text: str, *, file: str = "<memory>") -> list[Post]:
    """Posts from a JSON object, a JSON array of objects, or JSONL (one post per line); all or nothing."""
    stripped = text.strip()
    if not stripped:
        raise PersonaValidationError([FieldProblem(file, 0, "<json>", "no post given")])
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        return [parse_post(whole, file=file, line=1)]
    if isinstance(whole, list):
        return [parse_post(obj, file=file, line=1) for obj in whole]
    posts, problems = [], []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            posts.append(parse_post(json.loads(raw), file=file, line=n))
        except json.JSONDecodeError as exc:
            problems.append(FieldProblem(file, n, "<json>", f"invalid JSON at column {exc.colno}: {exc.msg}"))
        except PersonaValidationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise PersonaValidationError(problems)
    return posts


def _decode_line(raw: bytes, file: str, line: int) -> str:
    try:
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise PersonaValidationError([FieldProblem(
            file, line, "<encoding>", f"invalid UTF-8 at byte {exc.start} of the line "
            f"({raw[exc.start:exc.start + 4]!r}); save the file as UTF-8")]) from None


def _parse_line(raw: str, file: str, line: int) -> Persona:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PersonaValidationError(
            [FieldProblem(file, line, "<json>", f"invalid JSON at column {exc.colno}: {exc.msg}")]
        ) from None
    except RecursionError:
        raise PersonaValidationError(
            [FieldProblem(file, line, "<json>", f"nested deeper than {MAX_NESTING} levels")]) from None
    return parse_persona(obj, file=file, line=line)


def load_personas(path: str | os.PathLike[str], *, on_error: OnError = "raise") -> PersonaList:
    """Load personas from a JSONL file.

    Args:
        path: the JSONL file, one persona object per line (blank lines are ignored).
        on_error: ``"raise"`` stops at the first bad line; ``"skip"`` loads every good line and records each
            bad one in ``result.skipped``.

    Returns:
        A :class:`PersonaList` (a ``list`` of :class:`Persona` with a ``skipped`` report).

    Raises:
        PersonaValidationError: a bad line (``on_error="raise"``), or a persona id repeated in the file.
        FileNotFoundError: the file does not exist.

    Example:
        >>> import json, tempfile, os
        >>> f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
        >>> _ = f.write(json.dumps({"persona_id": "a", "posts": [{"post_id": "1", "caption": "x"}]}) + "\\n")
        >>> f.close()
        >>> [p.persona_id for p in load_personas(f.name)]
        ['a']
        >>> os.unlink(f.name)
    """
    skipped: list[FieldProblem] = []
    good = list(iter_personas(path, on_error=on_error, skipped=skipped))
    return PersonaList(good, path=str(path), skipped=skipped)


def iter_personas(path: str | os.PathLike[str], *, on_error: OnError = "raise",
                  skipped: list[FieldProblem] | None = None) -> Iterator[Persona]:
    """Personas of a JSONL file one at a time (constant memory); :func:`load_personas` without the list.

    Args:
        path: the JSONL file.
        on_error: ``"raise"`` stops at the first bad line; ``"skip"`` leaves bad lines out.
        skipped: with ``"skip"``, the problems of bad lines are appended here.
    """
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    file = str(path)
    first_line: dict[str, int] = {}
    with open(path, "rb") as fh:
        for lineno, raw_bytes in enumerate(fh, 1):
            if not raw_bytes.strip():
                continue
            try:
                persona = _parse_line(_decode_line(raw_bytes, file, lineno), file, lineno)
                if persona.persona_id in first_line:
                    raise PersonaValidationError([FieldProblem(
                        file, lineno, "persona_id",
                        f"duplicate persona_id {persona.persona_id!r} (first on line "
                        f"{first_line[persona.persona_id]})")])
            except PersonaValidationError as exc:
                if on_error == "raise":
                    raise
                if skipped is not None:
                    skipped.extend(exc.problems)
                continue
            first_line[persona.persona_id] = lineno
            yield persona


def dump_personas(personas: Iterable[Persona], path: str | os.PathLike[str]) -> int:
    """Write personas as JSONL atomically (a temp file renamed into place). Returns the count written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for p in personas:
                fh.write(json.dumps(p.model_dump(mode="json"), ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
