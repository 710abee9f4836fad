"""Exceptions raised by vptt.

Every error derives from :class:`VPTTError` and from the builtin it specialises, so callers can catch
either ``VPTTError`` or the familiar builtin (``ValueError``, ``KeyError``, ...). Messages say what to do.
"""

from __future__ import annotations

from dataclasses import dataclass


class VPTTError(Exception):
    """Base class of every error raised by vptt."""


class ConfigError(VPTTError, ValueError):
    """A setting or argument is invalid (unknown backend name, bad combination of options)."""


class PersonaNotFoundError(VPTTError, KeyError):
    """No persona with this id in the store."""

    def __init__(self, persona_id: str, store: str = "") -> None:
        self.persona_id = persona_id
        where = f" in {store}" if store else ""
        super().__init__(
            f"persona {persona_id!r} not found{where}; list ids with `vptt personas list` "
            "or ingest it with `vptt ingest FILE`"
        )

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class InvalidQueryError(VPTTError, ValueError):
    """The query is not usable text: not a string, or holding invalid Unicode (e.g. undecodable bytes)."""


class EmptyQueryError(InvalidQueryError):
    """The query to personalize is empty or only whitespace."""


class PersonaTypeError(VPTTError, TypeError):
    """Something other than a :class:`~vptt.core.models.Persona` or a persona id was passed as the persona."""


class NoPostsError(VPTTError, ValueError):
    """The persona has no posts, so caption-based retrieval cannot run."""


@dataclass(frozen=True)
class FieldProblem:
    """One problem in one input record: where it is and what is wrong."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class PersonaValidationError(VPTTError, ValueError):
    """A persona record is invalid. ``problems`` names the file, line and field of each problem."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = list(problems)
        lines = "\n  ".join(str(p) for p in self.problems)
        super().__init__(f"invalid persona data ({len(self.problems)} problem(s)):\n  {lines}")


class RunFileError(VPTTError, ValueError):
    """A file of a run (``rows.jsonl``, ``manifest.json``) is damaged; the message names the file and line."""


class StoreError(VPTTError, RuntimeError):
    """The persona store failed or holds inconsistent data."""


class EmbedderError(VPTTError, RuntimeError):
    """An embedding backend failed (model missing, remote endpoint error, wrong dimension)."""


class ProviderError(VPTTError, RuntimeError):
    """A remote provider (OpenAI-compatible endpoint) failed; the message says what to do."""


class ProviderTimeoutError(ProviderError, TimeoutError):
    """A provider request timed out on every attempt."""


class RateLimitedError(ProviderError):
    """The provider kept answering HTTP 429 (rate limit or quota)."""


class ProviderAuthError(ProviderError, PermissionError):
    """The provider refused the API key (HTTP 401/403)."""


class ProviderResponseError(ProviderError, ValueError):
    """The provider answered, but not with what an OpenAI-compatible API returns (malformed JSON, missing
    fields, wrong shapes): usually ``base_url`` points at something else, or a proxy rewrote the answer."""


class GenerationError(VPTTError, RuntimeError):
    """A local image generator failed (bad input, out of memory, interrupted)."""


class RunTimeoutError(VPTTError, TimeoutError):
    """A run (or one generation) went past its hard time limit."""


class ModelLoadError(VPTTError, OSError):
    """A model could not be loaded from the given id or directory."""


class RatingsValidationError(VPTTError, ValueError):
    """A human-ratings file is invalid. ``problems`` names the file, line and field of each problem."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = list(problems)
        shown = "\n  ".join(str(p) for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"invalid ratings ({len(self.problems)} problem(s)):\n  {shown}{more}")
