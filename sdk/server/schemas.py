"""Request and response bodies of ``vptt serve`` (pydantic; they make the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_QUERY = 2000


class PersonaSummary(BaseModel):
    """One line of the persona list."""

    persona_id: str
    posts: int
    summary: str = ""
    occupation: str = ""
    city: str = ""
    country: str = ""


class PersonalizeRequest(BaseModel):
    """One personalization request (a turn of a conversation when ``thread_id`` is given)."""

    model_config = ConfigDict(extra="forbid")

    persona_id: str = Field(min_length=1, max_length=256)
    query: str = Field(min_length=1, max_length=MAX_QUERY)
    method: str = "vprag"
    thread_id: str | None = Field(default=None, min_length=1, max_length=128,
                                  description="a conversation: a follow-up refines the previous prompt")
    seed: int | None = None
    refine: bool = True


class CompareRequest(BaseModel):
    """Compare methods for one query."""

    model_config = ConfigDict(extra="forbid")

    persona_id: str = Field(min_length=1, max_length=256)
    query: str = Field(min_length=1, max_length=MAX_QUERY)
    methods: list[str] | None = None


class ScoreRequest(BaseModel):
    """Score a given prompt for a persona."""

    model_config = ConfigDict(extra="forbid")

    persona_id: str = Field(min_length=1, max_length=256)
    prompt: str = Field(min_length=1, max_length=8 * MAX_QUERY)


class UpsertReply(BaseModel):
    """What one write changed."""

    persona_id: str
    status: str
    posts_added: list[str] = Field(default_factory=list)
    posts_updated: list[str] = Field(default_factory=list)
    posts_removed: list[str] = Field(default_factory=list)
    texts_embedded: int = 0


class ErrorReply(BaseModel):
    """Every error: the SDK error's type and message (``problems`` for invalid persona data)."""

    error: str
    detail: str
    problems: list[dict[str, Any]] | None = None
