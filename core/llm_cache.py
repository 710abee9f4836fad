"""A persistent cache of chat completions (SQLite), shared by every run and every process on a machine.

A completion is keyed by what determines it: the model name, the messages and the sampling parameters
(temperature, top-p, max tokens, seed) — not by the endpoint's address, so a vLLM server that moved to another
port still serves from the cache. A completion is written (and committed) the moment it arrives, before anyone
uses it: after a crash or ``kill -9`` a re-run finds every completion it had received and pays for none twice.

The database runs in WAL mode, so Ray workers, the driver and concurrent runs read and write it together.

Example:
    >>> import tempfile, pathlib
    >>> cache = ResponseCache(pathlib.Path(tempfile.mkdtemp()) / "llm.sqlite")
    >>> req = ChatRequest(model="m", messages=(("user", "hi"),), temperature=0.1)
    >>> cache.get(req.key) is None
    True
    >>> cache.put(req.key, ChatReply(text="hello", model="m"))
    >>> cache.get(req.key).text, cache.get(req.key).cached
    ('hello', True)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["ChatReply", "ChatRequest", "ResponseCache"]


@dataclass(frozen=True)
class ChatRequest:
    """One OpenAI-compatible chat completion request: what the model sees and how it samples.

    ``messages`` are ``(role, content)`` pairs. ``top_p``, ``max_tokens`` and ``seed`` are not sent when None
    (the server's defaults apply). ``tag`` is free text for logs and errors (e.g. the row it is for); it is
    not sent and not part of the key.
    """

    model: str
    messages: tuple[tuple[str, str], ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    tag: str = field(default="", compare=False)

    def body(self) -> dict[str, Any]:
        """The JSON body of ``POST /chat/completions``."""
        out: dict[str, Any] = {"model": self.model,
                               "messages": [{"role": r, "content": c} for r, c in self.messages]}
        for name in ("temperature", "top_p", "max_tokens", "seed"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @functools.cached_property
    def payload(self) -> bytes:
        """The body as canonical JSON bytes (sorted keys): what is sent, and what the key hashes."""
        return _canonical(self.body()).encode("utf-8")

    @functools.cached_property
    def key(self) -> str:
        """sha256 of the canonical JSON of model, messages and sampling parameters (the cache key)."""
        return hashlib.sha256(self.payload).hexdigest()

    def approx_tokens(self) -> int:
        """A cheap prompt-size estimate (characters / 4, as providers' rate limiters estimate)."""
        return sum(len(c) for _, c in self.messages) // 4 + 4 * len(self.messages)


def request_key(body: dict[str, Any]) -> str:
    """The cache key of a request body: sha256 over model, messages, temperature, top_p, max_tokens, seed.

    Absent parameters and parameters set to None give the same key.
    """
    fields = {k: body[k] for k in ("model", "messages", "temperature", "top_p", "max_tokens", "seed")
              if body.get(k) is not None}
    return hashlib.sha256(_canonical(fields).encode("utf-8")).hexdigest()


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ChatReply:
    """A completion and how it was obtained.

    Attributes:
        text: the assistant message's content.
        model: the model name the server reported (else the requested one).
        finish_reason: ``stop``, ``length``, ... as reported.
        prompt_tokens / completion_tokens: the usage the server reported (None when it reported none).
        latency_s: wall time of the request that bought the completion (retries included).
        attempts: HTTP attempts it took.
        cached: True when this reply was served from the :class:`ResponseCache`.
        created: Unix time the completion was received.
    """

    text: str
    model: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    attempts: int = 1
    cached: bool = False
    created: float = 0.0

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("cached")
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, cached: bool = True) -> ChatReply:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "cached"}
        return cls(**known, cached=cached)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    reply TEXT NOT NULL,
    created REAL NOT NULL
)"""


class ResponseCache:
    """SQLite store of completions by :attr:`ChatRequest.key` (thread-safe; many processes may share it).

    Args:
        path: the database file (created with its directory). ``settings.llm_cache_path`` is the default
            one, ``<data_dir>/llm_cache.sqlite``.
        timeout_s: how long a writer waits for another process's lock.
    """

    def __init__(self, path: str | os.PathLike[str], timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False,
                                    isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
        self._con.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    def get(self, key: str) -> ChatReply | None:
        """The cached reply (``cached=True``), or None."""
        with self._lock:
            row = self._con.execute("SELECT reply FROM completions WHERE key = ?", (key,)).fetchone()
        return ChatReply.from_json(row[0]) if row else None

    def put(self, key: str, reply: ChatReply) -> None:
        """Store a reply (committed at once). A key already present keeps its first reply."""
        stamped = reply if reply.created else replace(reply, created=time.time())
        with self._lock:
            self._con.execute("INSERT OR IGNORE INTO completions (key, model, reply, created) VALUES (?,?,?,?)",
                              (key, stamped.model, stamped.to_json(), stamped.created))

    def keys(self) -> set[str]:
        """Every key in the cache."""
        with self._lock:
            return {k for (k,) in self._con.execute("SELECT key FROM completions")}

    def __len__(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._con.close()
