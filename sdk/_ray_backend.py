"""Ray backend of ``vptt bench run``: persona shards on actors that keep their models loaded.

Each actor (one CPU, ``torch.set_num_threads(1)``) builds its :class:`~sdk.bench.BenchComponents` once from
the picklable :class:`~sdk.bench.BenchRecipe` and computes shards of personas; the persona store is a Chroma
server all actors share. The driver keeps ``inflight`` shards queued per actor, takes results as they finish
(``ray.wait``) and hands each persona to the single writer, so progress and resume work as locally.

Ray probes cloud-metadata addresses when it starts. :func:`isolated_argv` runs a command in a private network
namespace with only loopback up (``unshare -n``, needs root or user namespaces), which tests and benchmarks
use for everything Ray; :class:`ChromaServer` starts ``chroma run`` on loopback inside it.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from vptt.core.devices import init_ray
from vptt.core.errors import StoreError
from vptt.sdk.bench_worker import BenchPlan, BenchRecipe, BenchWorker, PersonaResult

__all__ = ["ChromaServer", "default_shard_size", "init_ray", "isolated_argv", "isolation_available",
           "run_on_ray", "shards"]

Job = tuple[str, frozenset[tuple[str, str]]]


def isolated_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped to run in a new network namespace where only loopback exists (``unshare -n``).

    Example:
        >>> isolated_argv(["python", "x.py"])[:3]
        ['unshare', '-n', 'sh']
    """
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def isolation_available() -> tuple[bool, str]:
    """Whether :func:`isolated_argv` works here, and why not if it does not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False, "`unshare` or `ip` (util-linux, iproute2) is not installed"
    try:
        proc = subprocess.run(isolated_argv(["true"]), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`unshare -n` failed to run: {exc}"
    if proc.returncode != 0:
        return False, f"`unshare -n` is not permitted here: {proc.stderr.strip() or proc.returncode}"
    return True, ""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ChromaServer:
    """A ``chroma run`` subprocess serving ``path`` on ``host:port`` (a free port by default).

    Example:
        >>> with ChromaServer("/tmp/db") as srv:  # doctest: +SKIP
        ...     settings = VPTTSettings(chroma_host=srv.host, chroma_port=srv.port)
    """

    def __init__(self, path: str | os.PathLike[str], host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.path = Path(path)
        self.host = host
        self.port = port or _free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ChromaServer:
        """Start the server and wait until it accepts connections."""
        exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
        self.path.mkdir(parents=True, exist_ok=True)
        log = open(self.path / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen([exe, "run", "--host", self.host, "--port", str(self.port), "--path",
                                      str(self.path / "db")], stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    log_text = (self.path / "server.log").read_text()
                    raise StoreError(f"chroma server exited: {log_text}") from None
                time.sleep(0.2)
        self.stop()
        raise StoreError(f"chroma server did not start within {timeout} s")

    def stop(self) -> None:
        """Terminate the server (kill it after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _BenchActor:
    """One Ray worker: components built once, then shard after shard."""

    def __init__(self, recipe: BenchRecipe, plan: BenchPlan, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self.worker = BenchWorker(recipe.build(), plan)

    def warm(self) -> int:
        """Load the embedder (and embed the task queries); returns the worker's process id."""
        self.worker.query_embs()
        return os.getpid()

    def run(self, jobs: list[Job]) -> list[PersonaResult]:
        """One shard; with an LLM composer its requests are in flight together (the actor's own client)."""
        return list(self.worker.run_many(jobs))


def default_shard_size(n_jobs: int, workers: int) -> int:
    """About 16 shards per worker (a short tail when workers finish), between 1 and 8 personas each."""
    return max(1, min(8, math.ceil(n_jobs / (16 * workers))))


def shards(jobs: Sequence[Job], size: int) -> list[list[Job]]:
    """Consecutive shards of ``size`` jobs."""
    return [list(jobs[i:i + size]) for i in range(0, len(jobs), size)]


def run_on_ray(recipe: BenchRecipe, plan: BenchPlan, jobs: Sequence[Job],
               commit: Callable[[PersonaResult, str], None], *, workers: int, address: str | None = None,
               runtime_env: dict[str, Any] | None = None, shard_size: int | None = None,
               gpus_per_worker: float = 0.0, inflight: int = 2) -> None:
    """Compute ``jobs`` on ``workers`` actors; ``commit(result, worker_index)`` each persona as it arrives."""
    started = init_ray(workers, address, runtime_env)
    import ray

    actor_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(_BenchActor)
    actors = [actor_cls.remote(recipe, plan) for _ in range(workers)]
    queue = deque(shards(jobs, shard_size or default_shard_size(len(jobs), workers)))
    pending: dict[Any, int] = {}
    try:
        for _ in range(inflight):
            for i, actor in enumerate(actors):
                if queue:
                    pending[actor.run.remote(queue.popleft())] = i
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            for result in ray.get(ready[0]):
                commit(result, str(i))
            if queue:
                pending[actors[i].run.remote(queue.popleft())] = i
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
