"""The records a persona store keeps and returns: index entries, writers' journals, upsert results."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from vptt.core.models import Persona


def fingerprint(text: str) -> str:
    """A short content hash (of a persona's or a post's JSON) that tells versions apart."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def post_fingerprints(persona: Persona) -> dict[str, str]:
    """``{post_id: fingerprint}``: which posts changed between two versions of a persona."""
    return {p.post_id: fingerprint(p.model_dump_json()) for p in persona.posts}


@dataclass(frozen=True)
class IndexEntry:
    """The commit record of one persona."""

    persona_id: str
    persona_json: str
    content_hash: str  # fingerprint(persona_json)
    card_emb: np.ndarray
    post_hashes: dict[str, str]  # post_fingerprints
    embedder: str
    keys: tuple[str, ...]  # vocabulary keys of its caption and element texts (the card vector is inline)

    def persona(self) -> Persona:
        return Persona.model_validate_json(self.persona_json)


@dataclass(frozen=True)
class Journal:
    """A writer's note of the vector keys it is adding, deleted once its entries are committed."""

    journal_id: str
    keys: tuple[str, ...]
    host: str
    pid: int
    expires: float  # unix time after which a writer on another host is presumed dead


@dataclass
class UpsertResult:
    """What one upsert changed."""

    persona_id: str
    status: Literal["created", "updated", "unchanged"]
    posts_added: list[str] = field(default_factory=list)
    posts_updated: list[str] = field(default_factory=list)
    posts_removed: list[str] = field(default_factory=list)
    texts_embedded: int = 0  # texts embedded for this persona (a text shared with an earlier one counts once)
