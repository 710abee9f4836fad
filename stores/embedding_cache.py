"""On-disk embedding cache keyed by (model, text), so no text is ever embedded twice by the same model."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vptt.stores.embedders import Embedder

_CHUNK = 500


def cache_key(model: str, text: str) -> str:
    """The cache key of ``text`` under ``model``."""
    return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()


class CachedEmbedder(Embedder):
    """Wraps an embedder with a SQLite cache (``path``) and counts hits and misses.

    Example:
        >>> import numpy as np, tempfile, os
        >>> class Ones(Embedder):
        ...     name, dim = "ones", 2
        ...     def _embed(self, texts): return np.ones((len(texts), 2))
        >>> d = tempfile.mkdtemp()
        >>> e = CachedEmbedder(Ones(), os.path.join(d, "c.sqlite"))
        >>> _ = e.embed(["a", "b"]); _ = e.embed(["a"])
        >>> (e.misses, e.hits)
        (2, 1)
    """

    def __init__(self, inner: Embedder, path: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, model TEXT, dim INTEGER, "
                         "vec BLOB)")
        self._db.commit()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, dim, vec FROM emb WHERE key IN ({marks})", chunk)
            for key, dim, vec in rows:
                if dim == self.dim:
                    found[key] = np.frombuffer(vec, dtype=np.float32)
        return found

    def _embed(self, texts: list[str]) -> np.ndarray:
        keys = [cache_key(self.name, t) for t in texts]
        with self._lock:
            found = self._lookup(list(dict.fromkeys(keys)))
            missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
            self.hits += len(texts) - len(missing)  # served without calling the inner embedder
            self.misses += len(missing)
            if missing:
                vecs = self.inner.embed(missing)
                new = {cache_key(self.name, t): v for t, v in zip(missing, vecs)}
                self._db.executemany(
                    "INSERT OR REPLACE INTO emb (key, model, dim, vec) VALUES (?, ?, ?, ?)",
                    [(k, self.name, self.dim, v.astype(np.float32).tobytes()) for k, v in new.items()])
                self._db.commit()
                found.update(new)
        return np.stack([found[k] for k in keys])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed(texts)  # rows were normalised by the inner embedder before caching

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, path={str(self.path)!r})"
