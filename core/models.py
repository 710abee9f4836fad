"""Persona data model (the interchange format of ``docs/data-format.md``) and the persona card text.

A persona is ``{persona_id, demographics, summary, preferences, elements, posts}``. Unknown top-level keys are
kept in :attr:`Persona.extra` and written back on dump; unknown keys inside ``demographics`` and posts are kept
as pydantic extras, so a load/dump round trip loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

CANONICAL_CATEGORIES: tuple[str, ...] = (
    "foreground",
    "background",
    "objects",
    "materials",
    "lighting",
    "actions",
    "environment",
    "appearance",
)
"""The paper's own element categories, in its order. Other category names are accepted and kept."""

PostType = Literal["activity", "appreciation", "shared", "selfie"]


_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSAFE_ID_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")
"""Characters an id may not hold: C0/C1 controls (``ESC`` colours a terminal), bidi overrides and isolates,
zero-width marks, line/paragraph separators, BOM and lone surrogates."""


def check_id(value: str, what: str = "id") -> str:
    """``value`` if it is usable as an id: non-empty, no surrounding spaces, no control character.

    Raises:
        ValueError: naming the first bad character by its code point.
    """
    if not value.strip() or value != value.strip():
        raise ValueError(f"{what} must be non-empty and have no leading/trailing spaces")
    bad = _UNSAFE_ID_CHARS.search(value)
    if bad:
        raise ValueError(f"{what} holds the control character U+{ord(bad.group()):04X} at position {bad.start()}; "
                         "ids must be printable text")
    return value


def category_key(name: str) -> str:
    """The normalised category name: surrounding whitespace stripped, inner runs of whitespace one space.

    ``"objects"``, ``" objects"`` and ``"objects\t"`` are one category (their elements are merged).
    """
    return " ".join(name.split())


def _clean_elements(value: Any) -> dict[str, list[str]]:
    """Validate ``{category: [str]}``: every value a list of strings (stripped, empty ones dropped).

    Category names are normalised with :func:`category_key`; names that differ only by whitespace are merged
    (their elements concatenated in input order), never silently overwritten.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("must be an object mapping category -> list of strings")
    out: dict[str, list[str]] = {}
    for cat, items in value.items():
        if not isinstance(cat, str) or not cat.strip():
            raise ValueError(f"category name {cat!r} must be a non-empty string")
        if not isinstance(items, list):
            raise ValueError(f"category {cat!r}: must be a list of strings, got {type(items).__name__}")
        cleaned: list[str] = []
        for j, item in enumerate(items):
            if not isinstance(item, str):
                raise ValueError(f"category {cat!r} item {j}: must be a string, got {type(item).__name__}")
            if item.strip():
                cleaned.append(item.strip())
        out.setdefault(category_key(cat), []).extend(cleaned)
    return out


MAX_NESTING = 32
"""Deepest nesting of lists/objects accepted in persona data (the format itself needs 4)."""


def find_data_problem(obj: Any, max_depth: int = MAX_NESTING) -> tuple[str, str] | None:
    """The first ``(field, message)`` that makes decoded JSON unusable, or None.

    Finds nesting deeper than ``max_depth`` and strings (values or keys) holding a lone surrogate such as
    ``"\\ud800"`` (valid JSON escape, but not text: it cannot be encoded, embedded or stored).
    Iterative, so absurd nesting cannot exhaust the stack; the common case (nothing wrong) is one pass over
    the containers and one C-level encode, and the path is only worked out when something is wrong.
    """
    if not isinstance(obj, (dict, list)):
        obj = [obj]
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if any(isinstance(k, str) and not k.isascii() and _SURROGATE.search(k) for k in value):
                return _locate_problem(obj, max_depth)
            children = value.values()
        else:
            children = value
        for child in children:
            if isinstance(child, str):
                if not child.isascii() and _SURROGATE.search(child):
                    return _locate_problem(obj, max_depth)
            elif isinstance(child, (dict, list)):
                if depth + 1 >= max_depth:
                    return _locate_problem(obj, max_depth)
                stack.append((child, depth + 1))
    return None


def _locate_problem(obj: Any, max_depth: int) -> tuple[str, str] | None:
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path or "<record>", "holds a lone surrogate (invalid Unicode text); fix the encoder that wrote it"
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth >= max_depth:
            where = path if len(path) <= 60 else path[:60] + "..."
            return where or "<record>", f"nested deeper than {max_depth} levels"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in reversed(list(items)):
            if isinstance(k, str) and _SURROGATE.search(k):
                return path or "<record>", f"key {k.encode('utf-8', 'backslashreplace').decode()!r} holds a lone surrogate"
            sub = f"{path}[{k}]" if isinstance(k, int) else (f"{path}.{k}" if path else str(k))
            stack.append((v, sub, depth + 1))
    return None


class Demographics(BaseModel):
    """Who the persona is. Every field is optional; unknown keys are kept."""

    model_config = ConfigDict(extra="allow")

    age: int | None = Field(default=None, ge=0, le=130)
    gender: str = ""
    country: str = ""
    city: str = ""
    ethnicity: str = ""
    occupation: str = ""
    interests: list[str] = Field(default_factory=list)
    personality: list[str] = Field(default_factory=list)
    social_media_tone: str = ""

    @field_validator("age", mode="before")
    @classmethod
    def _age_not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool) or isinstance(v, float) and not v.is_integer():
            raise ValueError("must be a whole number of years")
        return v


class Post(BaseModel):
    """One post of the persona: a caption written as a VLM would describe the photo, and its elements."""

    model_config = ConfigDict(extra="allow")

    post_id: str = Field(min_length=1)
    type: PostType = "activity"
    caption: str
    elements: dict[str, list[str]] = Field(default_factory=dict)
    image: str | None = None

    @field_validator("post_id")
    @classmethod
    def _post_id_clean(cls, v: str) -> str:
        return check_id(v, "post_id")

    @field_validator("caption")
    @classmethod
    def _caption_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("caption must not be empty")
        return v

    @field_validator("elements", mode="before")
    @classmethod
    def _elements(cls, v: Any) -> dict[str, list[str]]:
        return _clean_elements(v)

    def content_hash(self) -> str:
        """Stable hash of everything that is embedded or stored for this post."""
        return _hash(self.model_dump(mode="json"))


class Persona(BaseModel):
    """A persona's visual memory: demographics, summary, preferences, vocabulary and posts."""

    model_config = ConfigDict(extra="forbid")

    persona_id: str = Field(min_length=1)
    demographics: Demographics = Field(default_factory=Demographics)
    summary: str = ""
    preferences: list[str] = Field(default_factory=list)
    elements: dict[str, list[str]] = Field(default_factory=dict)
    posts: list[Post] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_extra(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            raise ValueError(f"a persona must be a JSON object, got {type(data).__name__}")
        scanned = isinstance(info.context, dict) and info.context.get("scanned")  # parse_persona did it
        problem = None if scanned else find_data_problem(data)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        known = set(cls.model_fields) - {"extra"}
        given = data.get("extra")
        # an "extra" that is not an object is itself an unknown key: kept under its own name, never dropped
        extra = dict(given) if isinstance(given, dict) else ({} if given is None else {"extra": given})
        out = {k: v for k, v in data.items() if k in known}
        extra.update({k: v for k, v in data.items() if k not in known and k != "extra"})
        out["extra"] = extra
        return out

    @field_validator("persona_id")
    @classmethod
    def _id_clean(cls, v: str) -> str:
        return check_id(v, "persona_id")

    @field_validator("elements", mode="before")
    @classmethod
    def _elements(cls, v: Any) -> dict[str, list[str]]:
        return _clean_elements(v)

    @field_validator("posts")
    @classmethod
    def _unique_post_ids(cls, posts: list[Post]) -> list[Post]:
        seen: set[str] = set()
        for i, p in enumerate(posts):
            if p.post_id in seen:
                raise ValueError(f"post {i}: duplicate post_id {p.post_id!r}")
            seen.add(p.post_id)
        return posts

    @model_serializer(mode="wrap")
    def _flatten_extra(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        extra = data.pop("extra", {}) or {}
        for k, v in extra.items():
            data.setdefault(k, v)
        return data

    # -- derived text -----------------------------------------------------------------------------------
    def card_text(self) -> str:
        """The persona card text that ``Emb(P)`` embeds (``docs/data-format.md`` field order; absent fields skipped)."""
        d = self.demographics
        parts: list[str] = []
        if self.summary.strip():
            parts.append(self.summary.strip())
        who: list[str] = []
        if d.age is not None:
            who.append(f"Age {d.age}")
        if d.gender.strip():
            who.append(d.gender.strip())
        place = ", ".join(x.strip() for x in (d.city, d.country) if x.strip())
        occupation = d.occupation.strip()
        if occupation and place:
            who.append(f"{occupation} from {place}")
        elif occupation or place:
            who.append(occupation or f"from {place}")
        if who:
            parts.append(", ".join(who) + ".")
        if d.interests:
            parts.append("Interests: " + ", ".join(d.interests) + ".")
        if self.preferences:
            parts.append("Preferences: " + ", ".join(self.preferences) + ".")
        return " ".join(parts)

    def categories(self) -> list[str]:
        """Canonical categories first, then any other category used by this persona's posts."""
        extra: list[str] = []
        for post in self.posts:
            for cat in post.elements:
                if cat not in CANONICAL_CATEGORIES and cat not in extra:
                    extra.append(cat)
        return [*CANONICAL_CATEGORIES, *extra]

    def content_hash(self) -> str:
        """Stable hash of the whole persona (changes whenever anything stored would change)."""
        return _hash(self.model_dump(mode="json"))

    def post(self, post_id: str) -> Post:
        """The post with this id (``KeyError`` if absent)."""
        for p in self.posts:
            if p.post_id == post_id:
                return p
        raise KeyError(f"persona {self.persona_id!r} has no post {post_id!r}")


def _hash(obj: Any) -> str:
    raw = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]
