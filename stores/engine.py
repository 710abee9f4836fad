"""Embedding engines: how a store's writer turns chunks of texts into vectors.

The writer of :meth:`~vptt.stores.base.PersonaStore.upsert_many` hands an engine a *stream* of chunks and reads
back one array per chunk, in order. An engine may read ahead (send the next chunks to other workers while
earlier ones are still embedding); the stream is lazy, so reading ahead also plans the next write batch early.

* :class:`LocalEngine` embeds in this process with any :class:`~vptt.stores.embedders.Embedder`.
* ``vptt.sdk.ray_ingest.RayEmbedEngine`` spreads chunks over Ray actors (workers embed, the caller writes).

Any object with ``name``, ``dim`` and ``embed_stream`` plugs in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from vptt.stores.embedders import Embedder

__all__ = ["EmbedEngine", "LocalEngine"]


@runtime_checkable
class EmbedEngine(Protocol):
    """Embeds a stream of text chunks; yields one ``(len(chunk), dim)`` float32 array per chunk, in order.

    An engine may set ``chunk_texts``, the chunk size it wants from the writer (default 256 texts).
    """

    name: str
    dim: int

    def embed_stream(self, chunks: Iterable[list[str]]) -> Iterator[np.ndarray]:
        """Vectors of each chunk, in the order the chunks were given."""
        ...


class LocalEngine:
    """Embeds in this process with ``embedder``, one chunk at a time.

    Args:
        embedder: the embedder (its ``name`` must be the store's).
        threads: torch intra-op threads while embedding (restored afterwards; default: torch's setting).
    """

    def __init__(self, embedder: Embedder, *, threads: int | None = None) -> None:
        self.embedder = embedder
        self.name = embedder.name
        self.dim = embedder.dim
        self.threads = threads

    def embed_stream(self, chunks: Iterable[list[str]]) -> Iterator[np.ndarray]:
        previous = None
        if self.threads:
            import torch

            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        try:
            for chunk in chunks:
                yield self.embedder.embed(chunk)
        finally:
            if previous is not None:
                import torch

                torch.set_num_threads(previous)

    def __repr__(self) -> str:
        return f"LocalEngine({self.embedder!r})"
