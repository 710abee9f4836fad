"""The records a persona store keeps and returns: index entries, writers' journals, upsert results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from vptt.core.models import Persona
from vptt.stores.records import persona_texts, text_key


@dataclass(frozen=True)
class IndexEntry:
    """The commit record of one persona."""

    persona_id: str
    persona_json: str
    content_hash: str
    card_emb: np.ndarray
    post_hashes: dict[str, str]
    embedder: str
    keys: tuple[str, ...]  # vocabulary keys of its caption and element texts (the card vector is inline)

    @classmethod
    def build(cls, persona: Persona, card_emb: np.ndarray, embedder: str) -> IndexEntry:
        """The entry of ``persona`` embedded by ``embedder``."""
        return cls(persona.persona_id, json.dumps(persona.model_dump(mode="json"), ensure_ascii=False),
                   persona.content_hash(), np.asarray(card_emb, np.float32),
                   {p.post_id: p.content_hash() for p in persona.posts}, embedder,
                   tuple(text_key(embedder, t) for t in persona_texts(persona)))

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
