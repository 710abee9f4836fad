"""Build embedders and stores from :class:`~vptt.core.settings.VPTTSettings` (backends import lazily)."""

from __future__ import annotations

import logging
import os

from vptt.core.settings import VPTTSettings
from vptt.stores.base import PersonaStore
from vptt.stores.embedders import Embedder

log = logging.getLogger("vptt.stores")


def build_embedder(settings: VPTTSettings) -> Embedder:
    """The configured embedder: spread over ``embed_workers`` workers when more than one (or on Ray), then
    wrapped in the on-disk cache unless ``embedding_cache`` is off.

    A cache that cannot be written (a read-only data directory) is skipped with a warning: reading a store
    and personalizing still work, every text is embedded afresh.
    """
    if settings.embedder == "openai":
        from vptt.stores.embedders import OpenAIEmbedder

        key = settings.api_key("embedder")
        inner: Embedder = OpenAIEmbedder(settings.embedder_model or "text-embedding-3-small",
                                         dim=settings.embedding_dim or 1536, base_url=settings.base_url("embedder"),
                                         api_key=key, send_dimensions=settings.embedding_dim is not None,
                                         timeout=settings.request_timeout_s)
    else:
        from vptt.stores.embedders import MiniLMEmbedder

        workers = settings.embed_workers
        pooled = workers != 1 or settings.embed_pool == "ray"
        # threads: embed_threads, else torch's count (all cores; 1 in a Ray actor of `bench run`)
        inner = MiniLMEmbedder(settings.embedder_model, backend=settings.embedder_backend, device=settings.device,
                               threads=settings.embed_threads, onnx_dir=settings.onnx_dir)
        if pooled:
            from vptt.stores.encoding import PooledEmbedder

            inner = PooledEmbedder(inner, workers, pool=settings.embed_pool, threads=settings.embed_threads,
                                   address=settings.ray_address)
    if not settings.embedding_cache:
        return inner
    from vptt.stores.embedding_cache import CachedEmbedder

    path = settings.cache_path
    folder = path.parent if path.parent.exists() else next((p for p in path.parents if p.exists()), path.parent)
    if folder.is_dir() and (os.access(folder, os.W_OK) if not path.exists() else os.access(path, os.W_OK)):
        try:
            return CachedEmbedder(inner, path)
        except Exception as exc:  # noqa: BLE001 - sqlite3.OperationalError on a read-only mount
            log.warning("embedding cache %s cannot be used (%s); embedding without it", path, exc)
            return inner
    log.warning("embedding cache %s is not writable; embedding without it", path)
    return inner


def build_store(settings: VPTTSettings, embedder: Embedder, *, allow_legacy: bool = False) -> PersonaStore:
    """The configured persona store: embedded Chroma, a Chroma server, or in-memory.

    Args:
        settings: where the store lives.
        embedder: the store's embedder.
        allow_legacy: open a Chroma store that still holds the old per-persona layout (to migrate it).
    """
    if settings.store == "memory":
        from vptt.stores.memory import InMemoryPersonaStore

        return InMemoryPersonaStore(embedder)
    from vptt.stores.chroma import ChromaPersonaStore

    if settings.chroma_host:
        return ChromaPersonaStore(embedder, host=settings.chroma_host, port=settings.chroma_port,
                                  ssl=settings.chroma_ssl, prefix=settings.collection_prefix,
                                  timeout_s=settings.chroma_timeout_s, allow_legacy=allow_legacy)
    return ChromaPersonaStore(embedder, path=settings.chroma_path, prefix=settings.collection_prefix,
                              allow_legacy=allow_legacy)
