"""The encoding engine: one embedder spread over worker processes or Ray actors, behind the same protocol.

:class:`PooledEmbedder` is an :class:`~vptt.stores.embedders.Embedder`, so stores, the embedding cache and
bulk runs use it unchanged. Each worker holds its own copy of the inner embedder (``inner.for_worker``) with
``threads`` intra-op threads, where ``workers x threads`` never exceeds the cores (no oversubscription: two
torch processes that each take every core slow each other several-fold). On a GPU give ``devices`` (one worker
per device) or use a single in-process embedder, whose batches are already large.

A call sorts its texts by length, cuts them into chunks of similar length (about ``chunks_per_worker`` per
worker, none smaller than ``min_chunk``), hands the longest first to whichever worker is free, and puts the
rows back in input order. Inside a worker the inner embedder batches by token budget as usual.

Example:
    >>> from vptt.stores.embedders import MiniLMEmbedder
    >>> with PooledEmbedder(MiniLMEmbedder(), workers=2) as enc:  # doctest: +SKIP
    ...     vectors = enc.embed(["golden hour light", "a bowl of ramen"])
"""

from __future__ import annotations

import os
import pickle
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from vptt.core.devices import available_cores, init_ray, threads_per_worker
from vptt.core.errors import ConfigError, EmbedderError
from vptt.stores.embedders import Embedder

Pool = Literal["process", "ray"]
_worker: Embedder | None = None  # the embedder of a pool worker process


def _init_worker(blob: bytes, threads: int) -> None:
    """Process-pool initializer: size torch's threads, then unpickle and load the embedder."""
    global _worker
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    _worker = pickle.loads(blob)
    _worker.embed(["warm up"])  # load the model now, not inside the first timed chunk


def _embed_in_worker(texts: list[str]) -> np.ndarray:
    assert _worker is not None, "worker not initialised"
    return _worker.embed(texts)


def _worker_pid(_: object = None) -> int:
    return os.getpid()


def chunk_texts(texts: Sequence[str], parts: int, min_chunk: int = 16) -> list[list[int]]:
    """Indices of ``texts`` in chunks of similar length, longest chunk first.

    Texts are sorted by length (longest first) and cut into about ``parts`` runs of equal total characters,
    none shorter than ``min_chunk`` texts, so a worker pads little and the longest work starts first.

    Example:
        >>> chunk_texts(["a", "bbbb", "cc", "ddd"], parts=2, min_chunk=1)
        [[1, 3], [2, 0]]
    """
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    if not order:
        return []
    total = sum(len(texts[i]) + 1 for i in order)
    parts = max(1, min(parts, len(order) // max(1, min_chunk)))
    target = total / parts
    chunks: list[list[int]] = [[]]
    acc = 0.0
    for i in order:
        if chunks[-1] and acc >= target and len(chunks) < parts:
            chunks.append([])
            acc = 0.0
        chunks[-1].append(i)
        acc += len(texts[i]) + 1
    return chunks


class _EmbedActor:
    """A Ray actor holding one embedder."""

    def __init__(self, blob: bytes, threads: int) -> None:
        _init_worker(blob, threads)

    def embed(self, texts: list[str]) -> np.ndarray:
        return _embed_in_worker(texts)

    def pid(self) -> int:
        return os.getpid()


class PooledEmbedder(Embedder):
    """An embedder spread over ``workers`` processes (or Ray actors), each with ``threads`` threads.

    Args:
        inner: the embedder to copy into each worker (picklable; ``inner.for_worker`` prepares each copy).
        workers: worker processes or actors (0: one per available core).
        pool: ``"process"`` (local processes, started with ``spawn``) or ``"ray"`` (actors on a local Ray or
            the cluster at ``address``).
        threads: threads per worker (default: available cores / workers, at least 1; on Ray, 1).
        devices: one device per worker (e.g. ``["cuda:0", "cuda:1"]``); default: the inner embedder's.
        address: Ray cluster address (``ray://host:10001`` or ``auto``); default starts a local Ray.
        gpus_per_worker: GPUs each Ray actor reserves.
        chunks_per_worker: chunks per worker per call (more: better balance, more messages).
        min_chunk: fewest texts in a chunk.
    """

    def __init__(self, inner: Embedder, workers: int = 0, *, pool: Pool = "process", threads: int | None = None,
                 devices: Sequence[str] | None = None, address: str | None = None, gpus_per_worker: float = 0.0,
                 chunks_per_worker: int = 4, min_chunk: int = 16) -> None:
        if pool not in ("process", "ray"):
            raise ConfigError(f"pool must be 'process' or 'ray', got {pool!r}")
        if workers < 0 or (threads is not None and threads < 1) or chunks_per_worker < 1 or min_chunk < 1:
            raise ConfigError("workers must be >= 0; threads, chunks_per_worker and min_chunk >= 1")
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.pool = pool
        self.workers = workers or (len(devices) if devices else available_cores())
        if devices is not None and len(devices) != self.workers:
            raise ConfigError(f"{len(devices)} devices for {self.workers} workers; give one device per worker")
        self.threads = threads or (1 if pool == "ray" and address else threads_per_worker(self.workers))
        self.devices = list(devices) if devices else None
        self.address = address
        self.gpus_per_worker = gpus_per_worker
        self.chunks_per_worker = chunks_per_worker
        self.min_chunk = min_chunk
        self._executor: Any = None
        self._actors: list[Any] = []
        self._ray_started = False
        self._lock = threading.Lock()
        self._finalizer: Any = None

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _blob(self, index: int) -> bytes:
        device = self.devices[index] if self.devices else None
        try:
            return pickle.dumps(self.inner.for_worker(self.threads, device))
        except Exception as exc:  # noqa: BLE001 - pickling errors come in many types
            raise ConfigError(f"{self.inner!r} cannot be sent to worker processes: {exc}") from exc

    def start(self) -> PooledEmbedder:
        """Start the workers and load their models (otherwise done by the first call)."""
        with self._lock:
            if self._executor is None and not self._actors:
                self._start_ray() if self.pool == "ray" else self._start_processes()
        return self

    def _start_processes(self) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if self.devices and len(set(self.devices)) > 1:
            raise ConfigError("a process pool shares one device setting; use pool='ray' with gpus_per_worker "
                              "for several GPUs, or one worker per device with CUDA_VISIBLE_DEVICES")
        self._executor = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self._blob(0), self.threads))
        try:  # one task per worker so all of them start (and load) now
            list(self._executor.map(_worker_pid, range(self.workers)))
        except Exception as exc:
            self._shutdown()
            raise EmbedderError(f"encoder workers failed to start: {exc}. Workers are spawned: a script that "
                                "starts them must run its code under `if __name__ == \"__main__\":`") from exc
        self._finalizer = weakref.finalize(self, self._executor.shutdown, wait=False, cancel_futures=True)

    def _start_ray(self) -> None:
        if init_ray(self.workers * self.threads, self.address):
            self._ray_started = True
        import ray

        actor = ray.remote(num_cpus=self.threads, num_gpus=self.gpus_per_worker)(_EmbedActor)
        self._actors = [actor.remote(self._blob(i), self.threads) for i in range(self.workers)]
        try:
            ray.get([a.pid.remote() for a in self._actors])
        except Exception as exc:
            self._shutdown()
            raise EmbedderError(f"encoder actors failed to start: {exc}") from exc

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._actors:
            import ray

            for a in self._actors:
                ray.kill(a)
            self._actors = []
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False

    def close(self) -> None:
        """Stop the workers (and a Ray this pool started). A later call starts them again."""
        with self._lock:
            self._shutdown()

    def __enter__(self) -> PooledEmbedder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """Process ids of the workers (starts them)."""
        self.start()
        if self._actors:
            import ray

            return [int(p) for p in ray.get([a.pid.remote() for a in self._actors])]
        return sorted(int(p) for p in self._executor._processes)

    # -- embedding -----------------------------------------------------------------------------------------
    def _embed(self, texts: list[str]) -> np.ndarray:
        self.start()
        chunks = chunk_texts(texts, self.workers * self.chunks_per_worker, self.min_chunk)
        parts = self._run_ray(texts, chunks) if self._actors else self._run_processes(texts, chunks)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for idx, vecs in zip(chunks, parts):
            out[idx] = vecs
        return out

    def _run_processes(self, texts: list[str], chunks: list[list[int]]) -> list[np.ndarray]:
        from concurrent.futures.process import BrokenProcessPool

        futures = [self._executor.submit(_embed_in_worker, [texts[i] for i in c]) for c in chunks]
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool as exc:
            self.close()
            raise EmbedderError("an encoder worker process died (out of memory, or killed); the pool was "
                                "stopped and restarts on the next call") from exc

    def _run_ray(self, texts: list[str], chunks: list[list[int]]) -> list[np.ndarray]:
        import ray

        queue = deque(enumerate(chunks))
        results: dict[int, np.ndarray] = {}
        pending: dict[Any, tuple[int, int]] = {}
        for _ in range(2):  # two chunks in flight per actor: it never waits for the driver
            for a, actor in enumerate(self._actors):
                if queue:
                    k, c = queue.popleft()
                    pending[actor.embed.remote([texts[i] for i in c])] = (k, a)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                k, a = pending.pop(ready[0])
                results[k] = ray.get(ready[0])
                if queue:
                    k2, c = queue.popleft()
                    pending[self._actors[a].embed.remote([texts[i] for i in c])] = (k2, a)
        except ray.exceptions.RayError as exc:
            raise EmbedderError(f"an encoder actor failed: {exc}") from exc
        return [results[k] for k in range(len(chunks))]

    def for_worker(self, threads: int, device: str | None = None) -> Embedder:
        """A pool is not nested: a worker of another pool runs the inner embedder itself."""
        return self.inner.for_worker(threads, device)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a PooledEmbedder owns processes and cannot be pickled; send its inner embedder")

    def __repr__(self) -> str:
        return (f"PooledEmbedder({self.inner!r}, workers={self.workers}, threads={self.threads}, "
                f"pool={self.pool!r})")
