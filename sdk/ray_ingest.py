"""Ingest on Ray: workers embed, this process (the only writer) plans and writes.

:class:`RayEmbedEngine` is an :class:`~vptt.stores.engine.EmbedEngine`: the store's writer hands it a lazy
stream of text chunks; it keeps ``inflight`` chunks per actor in flight, gives each new chunk to the actor with
the least outstanding work, and yields the vectors in order. Each actor builds its embedder once (from the
settings, without the on-disk cache: the store's shared vocabulary already means no text is embedded twice)
with ``torch`` limited to its share of the cores. The store can be embedded Chroma (only the driver touches
it) or a Chroma server.

Example:
    >>> from vptt import Personalizer, VPTTSettings                          # doctest: +SKIP
    >>> with RayEmbedEngine.from_settings(VPTTSettings(), workers=4) as eng:  # doctest: +SKIP
    ...     Personalizer().ingest("bank.jsonl", engine=eng, progress=True)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import numpy as np

from vptt.core.devices import threads_per_worker as share_cores
from vptt.core.errors import ConfigError, EmbedderError
from vptt.core.settings import VPTTSettings
from vptt.sdk._ray_backend import init_ray
from vptt.stores.embedders import Embedder

__all__ = ["RayEmbedEngine", "embedder_from_settings"]


def embedder_from_settings(settings: VPTTSettings) -> Embedder:
    """The settings' embedder without the on-disk cache and without a pool (what each Ray actor runs)."""
    from vptt.stores.factory import build_embedder

    # one plain encoder per actor: no second pool (processes or Ray actors) inside it
    return build_embedder(settings.model_copy(update={"embedding_cache": False, "embed_workers": 1,
                                                      "embed_pool": "process"}))


class _EmbedActor:
    """One Ray worker: an embedder loaded once, torch limited to ``threads``."""

    def __init__(self, factory: Callable[[], Embedder], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.embedder = factory()

    def identity(self) -> tuple[str, int, int]:
        """``(embedder name, dim, process id)``; also loads the model (one warm-up text)."""
        self.embedder.embed(["warm-up"])
        return self.embedder.name, self.embedder.dim, os.getpid()

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed(texts)


def _check_fits(resources: dict[str, float], workers: int, threads: int, gpus: float, *, started: bool) -> None:
    """Raise if ``workers`` actors of ``threads`` CPUs and ``gpus`` GPUs each cannot all run on ``resources``."""
    cpus, have_gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if workers * threads <= cpus and workers * gpus <= have_gpus + 1e-9:
        return
    why = ("" if started else "; this process already runs a Ray instance of that size (ray.init earlier, or "
           "another engine): start it with enough CPUs, or close the other engine first")
    raise ConfigError(f"{workers} Ray worker(s) x {threads} thread(s)"
                      + (f" x {gpus} GPU(s)" if gpus else "")
                      + f" need {workers * threads} CPU(s) and {workers * gpus:g} GPU(s); the local Ray instance "
                      f"has {cpus:g} CPU(s) and {have_gpus:g} GPU(s){why}")


class RayEmbedEngine:
    """Embeds chunks of texts on ``workers`` Ray actors.

    Args:
        factory: builds the embedder inside each actor (picklable; see :meth:`from_settings`).
        workers: number of actors.
        address: a running Ray cluster (``ray://...`` or ``auto``); default: start Ray on this machine.
        threads_per_worker: torch threads (and CPUs reserved) per actor; default: this machine's cores divided
            by ``workers`` when Ray runs here, 1 on a cluster.
        gpus_per_worker: GPUs per actor (e.g. 1 with ``device="cuda"`` settings, or 0.25 to share one).
        inflight: chunks queued per actor, so no worker waits for the next one.
        runtime_env: Ray runtime environment for a cluster.
        start_timeout_s: how long the actors may take to start and load their model.

    Raises:
        ConfigError: the Ray instance this process already runs has fewer CPUs (or GPUs) than the actors need
            (they would wait for them forever), or the actors did not start within ``start_timeout_s``.
    """

    chunk_texts = 64  # small chunks so that 2+ workers share even a small batch evenly

    def __init__(self, factory: Callable[[], Embedder], *, workers: int = 2, address: str | None = None,
                 threads_per_worker: int | None = None, gpus_per_worker: float = 0.0, inflight: int = 2,
                 runtime_env: dict[str, Any] | None = None, start_timeout_s: float = 600.0) -> None:
        if workers < 1 or inflight < 1:
            raise ConfigError(f"workers and inflight must be at least 1, got {workers} and {inflight}")
        threads = threads_per_worker or (share_cores(workers) if address is None else 1)
        self._started = init_ray(workers * threads, address, runtime_env)
        import ray

        self._ray = ray
        self.actors: list[Any] = []
        if address is None:  # a fixed local instance: actors that do not fit would stay pending forever
            _check_fits(ray.cluster_resources(), workers, threads, gpus_per_worker, started=self._started)
        actor_cls = ray.remote(num_cpus=threads, num_gpus=gpus_per_worker)(_EmbedActor)
        self.actors = [actor_cls.remote(factory, threads) for _ in range(workers)]
        try:
            ids = ray.get([a.identity.remote() for a in self.actors], timeout=start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ConfigError(f"{workers} Ray embedding worker(s) did not start within {start_timeout_s:.0f} s: "
                              f"the cluster may lack {threads} CPU(s) per worker"
                              + (f" and {gpus_per_worker} GPU(s)" if gpus_per_worker else "")) from None
        except Exception:
            self.close()
            raise
        if len({(name, dim) for name, dim, _ in ids}) != 1:
            self.close()
            raise EmbedderError(f"Ray workers built different embedders: {sorted({n for n, _, _ in ids})}")
        self.name, self.dim = ids[0][0], ids[0][1]
        self.worker_pids = [pid for _, _, pid in ids]
        self.threads_per_worker = threads
        self.inflight = inflight
        self.chunks_per_worker = [0] * workers

    @classmethod
    def from_settings(cls, settings: VPTTSettings, **kwargs: Any) -> RayEmbedEngine:
        """An engine whose actors build the settings' embedder (MiniLM on ``settings.device``, or OpenAI)."""
        return cls(functools.partial(embedder_from_settings, settings), **kwargs)

    def embed_stream(self, chunks: Iterable[list[str]]) -> Iterator[np.ndarray]:
        ray = self._ray
        source = iter(chunks)
        pending: dict[Any, tuple[int, int]] = {}
        outstanding = [0] * len(self.actors)
        done: dict[int, np.ndarray] = {}
        submitted = emitted = 0
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.inflight * len(self.actors):
                chunk = next(source, None)
                if chunk is None:
                    exhausted = True
                    break
                a = min(range(len(self.actors)), key=outstanding.__getitem__)
                pending[self.actors[a].embed.remote(chunk)] = (submitted, a)
                outstanding[a] += 1
                self.chunks_per_worker[a] += 1
                submitted += 1
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            seq, a = pending.pop(ready[0])
            outstanding[a] -= 1
            done[seq] = ray.get(ready[0])
            while emitted in done:
                yield done.pop(emitted)
                emitted += 1

    def close(self) -> None:
        """Stop the actors (and Ray, if this engine started it)."""
        for actor in getattr(self, "actors", []):
            self._ray.kill(actor)
        self.actors = []
        if self._started:
            self._ray.shutdown()
            self._started = False

    def __enter__(self) -> RayEmbedEngine:
        return self

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayEmbedEngine(name={self.name!r}, workers={len(self.actors)}, threads={self.threads_per_worker})"
