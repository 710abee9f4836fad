"""Coalesce concurrent embedding calls into batches (servers: many requests, one model).

Threads that call :meth:`BatchingEmbedder.embed` while another call is running queue up; when the running
call ends, one waiting thread embeds everything queued so far in a single call of the inner embedder (up to
``max_texts`` texts) and hands each caller its rows. A lone caller never waits for company (``max_wait_ms``
0): batches form only while the model is busy, so one client sees no added latency and 32 clients share
forwards instead of running 32 at once.

Example:
    >>> import numpy as np
    >>> class Ones(Embedder):
    ...     name, dim = "ones", 2
    ...     def _embed(self, texts): return np.ones((len(texts), 2))
    >>> BatchingEmbedder(Ones()).embed(["a", "b"]).shape
    (2, 2)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from vptt.stores.embedders import Embedder


class _Slot:
    __slots__ = ("texts", "rows", "error", "done")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.rows: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class BatchingEmbedder(Embedder):
    """An embedder that batches the calls of concurrent threads (see the module docs).

    Args:
        inner: the embedder that does the work (e.g. a cached MiniLM).
        max_texts: most texts in one inner call (a single larger call still runs alone).
        max_wait_ms: how long a leader waits for more callers before it embeds (0: never waits).
    """

    def __init__(self, inner: Embedder, *, max_texts: int = 64, max_wait_ms: float = 0.0) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.max_texts, self.max_wait = max_texts, max_wait_ms / 1000
        self._queue: deque[_Slot] = deque()
        self._cv = threading.Condition()
        self._busy = False
        self.calls = 0  # inner calls made (batches)
        self.requests = 0  # embed() calls served

    def __repr__(self) -> str:
        return f"BatchingEmbedder({self.inner!r}, max_texts={self.max_texts})"

    def _embed(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - embed() is overridden
        return self.inner.embed(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``, possibly in one batch with other threads' texts."""
        slot = _Slot(list(texts))
        if not slot.texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._cv:
            self.requests += 1
            self._queue.append(slot)
            while not slot.done and self._busy:
                self._cv.wait()
            if slot.done:
                return self._result(slot)
            self._busy = True  # this thread leads until its own slot is done
        try:
            while not slot.done:
                self._run_batch()
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()
        return self._result(slot)

    def _run_batch(self) -> None:
        if self.max_wait:
            deadline = time.monotonic() + self.max_wait
            with self._cv:
                while sum(len(s.texts) for s in self._queue) < self.max_texts and time.monotonic() < deadline:
                    self._cv.wait(deadline - time.monotonic())
        with self._cv:
            batch: list[_Slot] = []
            n = 0
            while self._queue and (not batch or n + len(self._queue[0].texts) <= self.max_texts):
                batch.append(self._queue.popleft())
                n += len(batch[-1].texts)
        try:
            rows: np.ndarray | None = self.inner.embed([t for s in batch for t in s.texts])
            error: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            rows, error = None, exc
        with self._cv:
            self.calls += 1
            start = 0
            for s in batch:
                if error is None:
                    s.rows = rows[start:start + len(s.texts)]  # type: ignore[index]
                s.error, s.done = error, True
                start += len(s.texts)
            self._cv.notify_all()

    @staticmethod
    def _result(slot: _Slot) -> np.ndarray:
        if slot.error is not None:
            raise slot.error
        return slot.rows  # type: ignore[return-value]
