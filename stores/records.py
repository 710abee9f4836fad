"""Embedded persona memory: the matrices retrieval runs on, and the items a store writes.

A store keeps one vector per unique (embedder, text) — a caption or an element — under :func:`text_key`, plus
each persona's card vector. :class:`EmbeddedPersona` is the read-side view: caption matrix, element table and
card vector, ready for VPRAG and the VPTT score; :func:`assemble` builds it from a persona and its texts'
vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from vptt.core.models import Persona, Post
from vptt.stores.embedders import Embedder


@dataclass(frozen=True)
class ElementTable:
    """Every element of every post, flattened: row ``m`` is ``texts[m]`` of post ``post_idx[m]``."""

    texts: list[str]
    embs: np.ndarray  # (M, D)
    post_idx: np.ndarray  # (M,) int, index into the persona's posts
    category: list[str]  # (M,)
    position: np.ndarray  # (M,) int, order within the post's category list

    @classmethod
    def empty(cls, dim: int) -> ElementTable:
        return cls([], np.zeros((0, dim), np.float32), np.zeros(0, np.int64), [], np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.texts)

    @cached_property
    def groups(self) -> dict[tuple[int, str], np.ndarray]:
        """Row indices of each (post index, category), computed once per table."""
        rows: dict[tuple[int, str], list[int]] = {}
        for m, (pi, cat) in enumerate(zip(self.post_idx.tolist(), self.category)):
            rows.setdefault((pi, cat), []).append(m)
        return {k: np.array(v, dtype=np.int64) for k, v in rows.items()}


@dataclass(frozen=True)
class EmbeddedPersona:
    """A persona with its card, caption and element embeddings (all L2-normalised)."""

    persona: Persona
    card_emb: np.ndarray  # (D,)
    caption_embs: np.ndarray  # (N, D), row i = persona.posts[i]
    elements: ElementTable
    embedder: str = ""

    @property
    def persona_id(self) -> str:
        return self.persona.persona_id

    @property
    def captions(self) -> list[str]:
        return [p.caption for p in self.persona.posts]

    @cached_property
    def categories(self) -> list[str]:
        """The persona's categories (canonical first), computed once."""
        return self.persona.categories()

    @cached_property
    def post_ids(self) -> list[str]:
        return [p.post_id for p in self.persona.posts]


def text_key(embedder: str, text: str) -> str:
    """The store key of ``text`` embedded by ``embedder``: one vector per (embedder, text), shared by personas.

    Example:
        >>> text_key("minilm", "golden hour light") == text_key("minilm", "golden hour light")
        True
        >>> text_key("minilm", "a") != text_key("other-model", "a")
        True
    """
    return hashlib.sha256(f"{embedder}\x00{text}".encode()).hexdigest()[:32]


def post_texts(post: Post) -> list[str]:
    """The caption and every element of a post, each text once, in stable order."""
    out = {post.caption: None}
    for items in post.elements.values():
        out.update(dict.fromkeys(items))
    return list(out)


def persona_texts(persona: Persona, posts: Sequence[Post] | None = None) -> list[str]:
    """Unique caption and element texts of ``posts`` (default: all posts); the card is not included."""
    out: dict[str, None] = {}
    for post in persona.posts if posts is None else posts:
        out.update(dict.fromkeys(post_texts(post)))
    return list(out)


def texts_to_embed(persona: Persona, posts: list[Post] | None = None, card: bool = True) -> list[str]:
    """Unique texts needed to embed ``posts`` (default: all) and, if ``card``, the persona card."""
    texts = dict.fromkeys([persona.card_text()] if card else [])
    texts.update(dict.fromkeys(persona_texts(persona, posts)))
    return list(texts)


def assemble(persona: Persona, card_emb: np.ndarray, vectors: Mapping[str, np.ndarray],
             embedder: str = "") -> EmbeddedPersona:
    """The read-side matrices of a persona from its texts' vectors (``vectors[text]``).

    Element rows are ordered by post, then category name, then position in the post's list.

    Raises:
        LookupError: a caption or element text has no vector.
    """
    dim = int(np.asarray(card_emb).shape[-1])
    missing = [t for t in persona_texts(persona) if t not in vectors]
    if missing:
        raise LookupError(f"persona {persona.persona_id!r}: {len(missing)} text(s) have no stored vector, "
                          f"e.g. {missing[0][:60]!r}")
    captions = np.zeros((len(persona.posts), dim), dtype=np.float32)
    texts: list[str] = []
    post_idx: list[int] = []
    category: list[str] = []
    position: list[int] = []
    for i, post in enumerate(persona.posts):
        captions[i] = vectors[post.caption]
        for cat in sorted(post.elements):
            for j, text in enumerate(post.elements[cat]):
                texts.append(text)
                post_idx.append(i)
                category.append(cat)
                position.append(j)
    if texts:
        table = ElementTable(texts=texts, embs=np.stack([vectors[t] for t in texts]).astype(np.float32),
                             post_idx=np.array(post_idx, dtype=np.int64), category=category,
                             position=np.array(position, dtype=np.int64))
    else:
        table = ElementTable.empty(dim)
    return EmbeddedPersona(persona, np.asarray(card_emb, np.float32), captions, table, embedder)


def embed_persona(persona: Persona, embedder: Embedder) -> EmbeddedPersona:
    """Embed a persona in memory (no store): card, captions and elements, each unique text once."""
    texts = texts_to_embed(persona)
    vectors = dict(zip(texts, embedder.embed(texts)))
    return assemble(persona, vectors[persona.card_text()], vectors, embedder.name)
