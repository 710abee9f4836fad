"""Helpers shared by the store test modules."""

from __future__ import annotations

import numpy as np

from tests.conftest import HashEmbedderBase
from vptt.stores.embedders import Embedder
from vptt.stores.records import persona_texts


class Hash384(HashEmbedderBase):
    """A fast stand-in for tests about bookkeeping, not about MiniLM's vectors."""

    name, dim = "hash-384", 384


class Counting(Embedder):
    """Wraps an embedder and records every text it embeds."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dim, self.texts = inner, inner.name, inner.dim, []

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed(texts)


def n_vectors(store) -> int:
    """Vectors the store holds."""
    return sum(len(page) for page in store._scan_vector_keys())


def expected_vectors(store) -> int:
    """Independent reference: one vector per unique caption/element text of the stored personas."""
    return len({t for pid in store.list_ids() for t in persona_texts(store.get(pid))})
