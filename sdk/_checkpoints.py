"""Checkpointers of :class:`~vptt.sdk.agent.PersonalizationAgent`: a path (SQLite, the default), ``":memory:"``,
or any injected LangGraph ``BaseCheckpointSaver`` (Postgres, Redis, ...), and one lock per thread."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from langgraph.graph import StateGraph

from vptt.core.errors import ConfigError


class Checkpoints:
    """Compiles the agent's graph with its checkpointer (once) and serialises runs of one thread.

    Args:
        builder: the uncompiled graph.
        path: SQLite file, ``":memory:"``, or None.
        saver: an injected ``BaseCheckpointSaver`` (wins over ``path``). The sync methods of the agent use
            its sync API and the async ones its async API (``InMemorySaver`` has both; ``PostgresSaver`` is
            sync only, ``AsyncPostgresSaver`` async only).
    """

    def __init__(self, builder: StateGraph, path: str | Path | None, saver: Any = None) -> None:
        self.builder, self.path, self.saver = builder, path, saver
        self._compiled: Any = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._threads: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()

    @property
    def enabled(self) -> bool:
        return self.saver is not None or self.path is not None

    def describe(self) -> str:
        return type(self.saver).__name__ if self.saver is not None else repr(self.path)

    def graph(self) -> Any:
        """The graph compiled with the checkpointer (sync API)."""
        if not self.enabled:
            raise ConfigError("this agent keeps no checkpoints; create it with checkpoint='runs.sqlite' (or "
                              "':memory:', or checkpointer=<a BaseCheckpointSaver>) to use thread ids and resume")
        with self._lock:
            if self._compiled is None:
                self._compiled = self.builder.compile(checkpointer=self._sync_saver())
            return self._compiled

    def _sync_saver(self) -> Any:
        if self.saver is not None:
            return self.saver
        if str(self.path) == ":memory:":
            from langgraph.checkpoint.memory import InMemorySaver

            return InMemorySaver()
        from langgraph.checkpoint.sqlite import SqliteSaver

        self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe if the process dies
        return SqliteSaver(self._conn)

    @contextlib.asynccontextmanager
    async def agraph(self) -> AsyncIterator[Any]:
        """The graph compiled with a checkpointer usable from async code."""
        if self.saver is not None or str(self.path) == ":memory:":
            yield self.graph()
            return
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(self.path)) as saver:
            yield self.builder.compile(checkpointer=saver)

    def _thread_lock(self, thread_id: str) -> threading.Lock:
        """The thread's lock; kept only while someone holds a reference (no growth with many threads)."""
        with self._lock:
            lock = self._threads.get(thread_id)
            if lock is None:
                lock = self._threads[thread_id] = threading.Lock()
            return lock

    @contextlib.contextmanager
    def thread(self, thread_id: str | None) -> Iterator[None]:
        """Hold the thread: runs of one conversation take turns (other threads run in parallel)."""
        if thread_id is None:
            yield
            return
        with self._thread_lock(thread_id):
            yield

    @contextlib.asynccontextmanager
    async def athread(self, thread_id: str | None) -> AsyncIterator[None]:
        """Async :meth:`thread` (waits for the lock in a worker thread, never blocking the event loop)."""
        if thread_id is None:
            yield
            return
        lock = self._thread_lock(thread_id)
        await asyncio.to_thread(lock.acquire)
        try:
            yield
        finally:
            lock.release()

    def close(self) -> None:
        """Close the SQLite connection this object opened (an injected saver is the caller's to close)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._compiled = None
