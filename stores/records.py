"""Embedded persona memory: the matrices retrieval runs on, and the items a store writes.

A persona becomes one :class:`Item` per caption and per post element (each with its embedding) plus the
persona card embedding. :class:`EmbeddedPersona` is the read-side view: caption matrix, element table and card
vector, ready for VPRAG and the VPTT score.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from vptt.core.models import Persona, Post
from vptt.stores.embedders import Embedder


@dataclass(frozen=True)
class Item:
    """One stored, embedded text of a persona: a caption or a post element."""

    id: str
    kind: str  # "caption" | "element"
    post_id: str
    post_hash: str
    text: str
    embedding: np.ndarray
    category: str = ""
    position: int = 0  # index of the element within its post's category list

    def metadata(self) -> dict[str, str | int]:
        """Flat metadata (for vector stores that keep str/int values only)."""
        return {"kind": self.kind, "post_id": self.post_id, "post_hash": self.post_hash,
                "category": self.category, "position": self.position}


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


def caption_item_id(post: Post, post_hash: str) -> str:
    return f"c|{post.post_id}|{post_hash}"


def post_items_texts(post: Post) -> list[tuple[str, str, str, int]]:
    """``(kind, text, category, position)`` for the caption and every element of a post, in stable order."""
    out = [("caption", post.caption, "", 0)]
    for cat, items in post.elements.items():
        out.extend(("element", text, cat, j) for j, text in enumerate(items))
    return out


def build_post_items(post: Post, vectors: dict[str, np.ndarray]) -> list[Item]:
    """The items of one post, with embeddings looked up by text in ``vectors``."""
    h = post.content_hash()
    items = []
    for kind, text, cat, pos in post_items_texts(post):
        item_id = caption_item_id(post, h) if kind == "caption" else f"e|{post.post_id}|{h}|{cat}|{pos}"
        items.append(Item(item_id, kind, post.post_id, h, text, vectors[text], cat, pos))
    return items


def assemble(persona: Persona, card_emb: np.ndarray, items: list[Item], embedder: str = "") -> EmbeddedPersona:
    """Build the read-side matrices from a persona and its items (items of other post versions ignored)."""
    dim = int(card_emb.shape[-1])
    index = {p.post_id: i for i, p in enumerate(persona.posts)}
    wanted = {p.post_id: p.content_hash() for p in persona.posts}
    captions = np.zeros((len(persona.posts), dim), dtype=np.float32)
    have = np.zeros(len(persona.posts), dtype=bool)
    rows: list[Item] = []
    for it in items:
        if wanted.get(it.post_id) != it.post_hash:
            continue
        if it.kind == "caption":
            captions[index[it.post_id]] = it.embedding
            have[index[it.post_id]] = True
        else:
            rows.append(it)
    if not have.all():
        missing = [persona.posts[i].post_id for i in np.flatnonzero(~have)]
        raise LookupError(f"persona {persona.persona_id!r}: no stored caption embedding for posts {missing}")
    rows.sort(key=lambda it: (index[it.post_id], it.category, it.position))
    if rows:
        table = ElementTable(
            texts=[it.text for it in rows],
            embs=np.stack([it.embedding for it in rows]).astype(np.float32),
            post_idx=np.array([index[it.post_id] for it in rows], dtype=np.int64),
            category=[it.category for it in rows],
            position=np.array([it.position for it in rows], dtype=np.int64),
        )
    else:
        table = ElementTable.empty(dim)
    return EmbeddedPersona(persona, np.asarray(card_emb, np.float32), captions, table, embedder)


def texts_to_embed(persona: Persona, posts: list[Post] | None = None, card: bool = True) -> list[str]:
    """Unique texts needed to embed ``posts`` (default: all) and, if ``card``, the persona card."""
    posts = persona.posts if posts is None else posts
    texts: dict[str, None] = {}
    if card:
        texts[persona.card_text()] = None
    for post in posts:
        for _, text, _, _ in post_items_texts(post):
            texts[text] = None
    return list(texts)


def embed_persona(persona: Persona, embedder: Embedder) -> EmbeddedPersona:
    """Embed a persona in memory (no store): card, captions and elements, each unique text once."""
    texts = texts_to_embed(persona)
    vectors = dict(zip(texts, embedder.embed(texts)))
    items = [it for post in persona.posts for it in build_post_items(post, vectors)]
    return assemble(persona, vectors[persona.card_text()], items, embedder.name)
