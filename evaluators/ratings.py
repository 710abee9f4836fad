"""Human ratings in: the JSONL and CSV formats of a user study like the paper's (Sec. 4.2.1, supplement 15).

One rating per JSONL line (or CSV row with a header)::

    {"annotator": "a07", "persona_id": "p0042", "task": "outdoor_spot", "method": "vprag",
     "llm": "gpt-4o-mini", "score": 3.5, "image": "images/p0042/outdoor_spot/vprag.png"}

* ``annotator``, ``persona_id``, ``task``, ``method``: non-empty strings (required). ``task`` is a bench
  task name (or its query text); ``method`` a method name (``baseline``, ``persona_only``, ``brag``,
  ``vprag``, ``comb``; the paper's labels such as "Persona Only" or "Comb." are accepted and normalised).
* ``llm``: the LLM that rewrote the prompt (optional when every rated run used one LLM).
* ``score``: a number in [0, 5] (the study's slider; any value in the range, not only 0.5 steps).
* ``image``: the rated image's path (optional, kept for reference).

Validation is strict and complete: every problem of every line is collected and raised together as
:class:`~vptt.core.errors.RatingsValidationError`, each naming the file, line and field. Unknown fields are
errors (a typo such as ``scroe`` would otherwise lose data) unless ``extra="ignore"``. The same rating
(annotator, persona, task, method, llm) given twice is an error naming both lines.

Example:
    >>> normalize_method("Comb. (Ours)"), normalize_method("Persona Only")
    ('comb', 'persona_only')
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vptt.core.errors import FieldProblem, RatingsValidationError

__all__ = ["FIELDS", "REQUIRED", "Rating", "load_ratings", "normalize_method", "parse_rating"]

REQUIRED = ("annotator", "persona_id", "task", "method", "score")
FIELDS = (*REQUIRED, "llm", "image")
SCORE_RANGE = (0.0, 5.0)
_ALIASES = {"personaonly": "persona_only", "comb": "comb", "combined": "comb",
            "brag+vprag": "comb", "vprag+brag": "comb", "comb(brag+vprag)": "comb",
            "combvprag+brag": "comb"}
Extra = Literal["forbid", "ignore"]


@dataclass(frozen=True)
class Rating:
    """One annotator's score of one image, and where it was read from."""

    annotator: str
    persona_id: str
    task: str
    method: str
    score: float
    llm: str | None = None
    image: str | None = None
    file: str = "<memory>"
    line: int = 0

    @property
    def key(self) -> tuple[str, str, str, str, str | None]:
        """``(annotator, persona_id, task, method, llm)``: one rating per key."""
        return (self.annotator, self.persona_id, self.task, self.method, self.llm)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def normalize_method(name: str) -> str:
    """A method name in the package's spelling: lower case, "(ours)" dropped, the paper's labels mapped."""
    s = re.sub(r"\(ours\)", "", name.strip().lower()).strip()
    s = re.sub(r"[\s\-]+", "_", s).strip("_.")
    squashed = s.replace("_", "").replace(".", "")
    return _ALIASES.get(squashed, _ALIASES.get(s, s))


def _text(value: Any, name: str, required: bool, problems: list[tuple[str, str]]) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.append((name, "missing or empty"))
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.append((name, f"must be a string, got {type(value).__name__} {value!r}"))
        return None
    return str(value).strip()


def _score(value: Any, problems: list[tuple[str, str]]) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(("score", "missing or empty"))
        return None
    if isinstance(value, bool):
        problems.append(("score", f"must be a number in [0, 5], got {value!r}"))
        return None
    try:
        score = float(value)
    except (TypeError, ValueError):
        problems.append(("score", f"must be a number in [0, 5], got {value!r}"))
        return None
    lo, hi = SCORE_RANGE
    if not math.isfinite(score) or not lo <= score <= hi:
        problems.append(("score", f"must be a number in [0, 5], got {value!r}"))
        return None
    return score


def _unknown(keys: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for k in keys:
        if k not in FIELDS:
            close = difflib.get_close_matches(k, FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; fields are {', '.join(FIELDS)}"
            out.append((k, f"unknown field{hint}"))
    return out


def parse_rating(record: Mapping[str, Any], *, file: str = "<memory>", line: int = 0,
                 extra: Extra = "forbid") -> tuple[Rating | None, list[FieldProblem]]:
    """Validate one record; returns the rating (None if invalid) and every problem found in it."""
    problems: list[tuple[str, str]] = [] if extra == "ignore" else _unknown(record)
    values = {k: _text(record.get(k), k, k in REQUIRED, problems) for k in ("annotator", "persona_id", "task",
                                                                             "method", "llm", "image")}
    score = _score(record.get("score"), problems)
    found = [FieldProblem(file, line, f, m) for f, m in problems]
    if found:
        return None, found
    return Rating(annotator=values["annotator"], persona_id=values["persona_id"],  # type: ignore[arg-type]
                  task=values["task"], method=normalize_method(values["method"]),  # type: ignore[arg-type]
                  score=float(score), llm=values["llm"], image=values["image"],  # type: ignore[arg-type]
                  file=file, line=line), []


def _records_jsonl(path: Path) -> Iterable[tuple[int, Any, FieldProblem | None]]:
    with open(path, encoding="utf-8") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                msg = f"not valid JSON: {exc.msg} (column {exc.colno})"
                yield n, None, FieldProblem(str(path), n, "line", msg)
                continue
            if not isinstance(obj, dict):
                msg = f"must be a JSON object, got {type(obj).__name__}"
                yield n, None, FieldProblem(str(path), n, "line", msg)
                continue
            yield n, obj, None


def _records_csv(path: Path, extra: Extra) -> Iterable[tuple[int, Any, FieldProblem | None]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        names = [h.strip() for h in header]
        bad = [FieldProblem(str(path), 1, f, m) for f, m in _unknown(names)] if extra == "forbid" else []
        bad += [FieldProblem(str(path), 1, f, "required column missing from the header")
                for f in REQUIRED if f not in names]
        if len(set(names)) != len(names):
            bad.append(FieldProblem(str(path), 1, "header", f"repeated column name in {names}"))
        if bad:
            for p in bad:
                yield 1, None, p
            return
        for cells in reader:
            n = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(names):
                yield n, None, FieldProblem(str(path), n, "line", f"has {len(cells)} cells, the header has "
                                                                  f"{len(names)}")
                continue
            yield n, dict(zip(names, cells)), None


def load_ratings(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                 extra: Extra = "forbid") -> list[Rating]:
    """Read and validate ratings from ``.jsonl`` and ``.csv`` files (in file order).

    Raises:
        RatingsValidationError: any problem in any file (all of them, each with file, line and field).
        FileNotFoundError: a file does not exist.
    """
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    ratings: list[Rating] = []
    problems: list[FieldProblem] = []
    first: dict[tuple[str, str, str, str, str | None], Rating] = {}
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(f"ratings file not found: {path}")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            records = _records_jsonl(path)
        elif suffix == ".csv":
            records = _records_csv(path, extra)
        else:
            problems.append(FieldProblem(str(path), 0, "file", "unknown format: use .jsonl or .csv"))
            continue
        for line, obj, problem in records:
            if problem is not None:
                problems.append(problem)
                continue
            rating, found = parse_rating(obj, file=str(path), line=line, extra=extra)
            problems.extend(found)
            if rating is None:
                continue
            if rating.key in first:
                problems.append(FieldProblem(str(path), line, "annotator",
                                             f"duplicate rating: {rating.annotator} already rated this "
                                             f"image at {first[rating.key].where}"))
                continue
            first[rating.key] = rating
            ratings.append(rating)
    if problems:
        raise RatingsValidationError(problems)
    if not ratings:
        raise RatingsValidationError([FieldProblem(str(files[0]) if files else "<none>", 0, "file",
                                                   "no ratings found")])
    return ratings
