"""On-disk embedding cache keyed by (model, text), so no text is ever embedded twice by the same model.

The model part of the key is the embedder's :attr:`~vptt.stores.embedders.Embedder.name`, which for local
models carries a digest of the weights, so two models never read each other's vectors. The cache is only a
cache: a database that SQLite reports as damaged (not a database, malformed pages) is moved aside to
``<name>.corrupt-<time>`` (kept for inspection, never deleted), a fresh one is started and a warning says so.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vptt.stores.embedders import Embedder

_CHUNK = 500
_CORRUPT = ("not a database", "malformed", "file is encrypted", "database corrupt")


class CacheCorruptWarning(UserWarning):
    """The embedding cache was damaged; it was set aside and rebuilt."""


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file itself is damaged (not merely locked or busy)."""
    code = getattr(exc, "sqlite_errorname", "")
    return code in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or any(m in str(exc).lower() for m in _CORRUPT)


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
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        #: where a damaged database was moved, if one was
        self.set_aside: list[Path] = []
        self._db = self._open()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a cache: a lost last write is re-embedded, never torn
            db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, model TEXT, dim INTEGER, vec BLOB)")
            db.execute("SELECT key, dim, vec FROM emb LIMIT 1").fetchall()
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self._set_aside(exc)
            return self._connect()

    def _set_aside(self, exc: BaseException) -> None:
        """Move the damaged database (and its WAL files) to ``*.corrupt-<time>`` and warn."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            src = self.path.with_name(self.path.name + suffix)
            if src.exists():
                os.replace(src, aside.with_name(aside.name + suffix))
        self.set_aside.append(aside)
        warnings.warn(f"the embedding cache {self.path} is damaged ({exc}); moved it to {aside.name} and "
                      "started a new one (texts are embedded again as they are needed)", CacheCorruptWarning,
                      stacklevel=4)

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """A damaged page found while in use: set the file aside and continue with a fresh database."""
        if not is_corruption(exc):
            raise exc
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._set_aside(exc)
        self._db = self._connect()

    def _lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, dim, vec FROM emb WHERE key IN ({marks})", chunk).fetchall()
            for key, dim, vec in rows:
                if dim == self.dim and isinstance(vec, bytes) and len(vec) == 4 * dim:
                    found[key] = np.frombuffer(vec, dtype=np.float32)
        return found

    def _store(self, new: dict[str, np.ndarray]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO emb (key, model, dim, vec) VALUES (?, ?, ?, ?)",
                             [(k, self.name, self.dim, v.astype(np.float32).tobytes()) for k, v in new.items()])
        self._db.commit()

    def _guarded(self, op: Any, *args: Any) -> Any:
        try:
            return op(*args)
        except sqlite3.DatabaseError as exc:
            self._recover(exc)
            return op(*args)

    def _embed(self, texts: list[str]) -> np.ndarray:
        keys = [cache_key(self.name, t) for t in texts]
        with self._lock:
            found = self._guarded(self._lookup, list(dict.fromkeys(keys)))
            missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
            self.hits += len(texts) - len(missing)  # served without calling the inner embedder
            self.misses += len(missing)
            if missing:
                vecs = self.inner.embed(missing)
                new = {cache_key(self.name, t): v for t, v in zip(missing, vecs)}
                self._guarded(self._store, new)
                found.update(new)
        return np.stack([found[k] for k in keys])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed(texts)  # rows were normalised by the inner embedder before caching

    def for_worker(self, threads: int, device: str | None = None) -> Embedder:
        """Workers use the inner embedder: the cache stays with the process that owns it."""
        return self.inner.for_worker(threads, device)

    def close(self) -> None:
        """Close the database connection (and the inner embedder's resources)."""
        self._db.close()
        self.inner.close()

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, path={str(self.path)!r})"
