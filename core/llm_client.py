"""An async OpenAI-compatible chat client for bulk runs: many requests in flight, a persistent cache, limits.

:class:`ChatClient` runs its own event loop on a background thread, so synchronous code (the evaluation loop,
a Ray actor) submits requests and keeps computing while up to ``concurrency`` of them are in flight::

    client = ChatClient("http://localhost:8000/v1", "EMPTY", concurrency=32, cache=ResponseCache(path))
    futures = [client.submit(r) for r in requests]     # returns at once (a cache hit is already done)
    replies = [f.result() for f in futures]

* **Cache.** With a :class:`~vptt.core.llm_cache.ResponseCache`, a request answered before (by this or any
  earlier run) is served from it without a call, and each completion is committed the moment it arrives. Two
  identical requests in flight at once share one call.
* **Retries.** HTTP 408/409/429/5xx, timeouts, dropped connections and unusable replies (not JSON, no choices)
  are retried with capped exponential backoff (:class:`~vptt.core.providers.RetryConfig`); a ``Retry-After``
  is honoured and, on a 429, pauses every request of the client until it has passed. Anything else fails at
  once. Failures become the typed errors of :mod:`vptt.core.providers`, secrets redacted.
* **Hard timeout** of each attempt (``timeout_s``), whatever the server does (a reply that trickles in too).
* **Limits.** Optional requests/min and tokens/min token buckets (burst: one second's worth). Tokens are
  estimated as prompt characters / 4 plus ``max_tokens``, as providers' own limiters estimate.

The transport is ``aiohttp`` on uvloop's event loop when uvloop is installed (at 64 requests in flight the
client costs about 0.6 ms of CPU per completion on this project's 2-core reference machine, as
``benchmarks/bench_llm.py`` prints).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from vptt.core.errors import ConfigError
from vptt.core.llm_cache import ChatReply, ChatRequest, ResponseCache
from vptt.core.providers import (
    ProviderError,
    RetryConfig,
    TransientReplyError,
    after_failure,
    backoff_delays,
)

__all__ = ["ChatClient", "ChatReply", "ChatRequest", "ClientStats", "HTTPStatusFailure", "ResponseCache",
           "TokenBucket"]

log = logging.getLogger("vptt.llm")
OPENAI_BASE_URL = "https://api.openai.com/v1"


class HTTPStatusFailure(Exception):
    """A non-200 answer (carries ``status_code`` and ``response.headers`` for the retry rules)."""

    def __init__(self, status: int, headers: Any, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status_code = status
        self.response = _Answer(status, headers)


@dataclass(frozen=True)
class _Answer:
    status_code: int
    headers: Any


@dataclass
class ClientStats:
    """Counters of one client (cumulative since it was built)."""

    submitted: int = 0
    cache_hits: int = 0
    shared: int = 0
    completions: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


class TokenBucket:
    """A token bucket refilled at ``per_minute / 60`` per second, holding at most one second's worth.

    A cost above the capacity waits for a full bucket and leaves it in debt, so the average rate holds.
    """

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ConfigError(f"a rate limit must be positive, got {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self._stamp: float | None = None
        self._lock: asyncio.Lock | None = None

    def _refill(self, now: float) -> None:
        if self._stamp is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, cost: float) -> None:
        """Wait until ``cost`` may be spent (first come, first served), then spend it."""
        loop = asyncio.get_running_loop()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            need = min(float(cost), self.capacity)
            self._refill(loop.time())
            while self.tokens < need:
                await asyncio.sleep((need - self.tokens) / self.rate)
                self._refill(loop.time())
            self.tokens -= float(cost)


class ChatClient:
    """Bulk chat completions against one OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, ...).

    Args:
        base_url: the endpoint (``http://host:8000/v1``); None means OpenAI's (or ``OPENAI_BASE_URL``).
        api_key: sent as ``Authorization: Bearer``; required for OpenAI's endpoint, optional for local
            servers. Never logged, and redacted from every error.
        concurrency: requests in flight at most.
        requests_per_min / tokens_per_min: optional rate limits (None: unlimited).
        timeout_s: hard limit of one HTTP attempt.
        retry: the retry schedule.
        cache: where completions are kept across runs (None: no cache).
        what: how errors name the endpoint, e.g. ``"chat model 'qwen'"``.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, concurrency: int = 16,
                 requests_per_min: float | None = None, tokens_per_min: float | None = None,
                 timeout_s: float = 60.0, retry: RetryConfig | None = None,
                 cache: ResponseCache | None = None, what: str = "chat model") -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
        url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")
        if not api_key and url == OPENAI_BASE_URL:
            raise ConfigError("no API key for the LLM: set VPTT_LLM_API_KEY or OPENAI_API_KEY (local servers "
                              "such as vLLM or Ollama take --llm-base-url and any key, e.g. 'EMPTY')")
        self.base_url, self.url = url, f"{url}/chat/completions"
        self._key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry = retry or RetryConfig()
        self.cache = cache
        self.what = what
        self.stats = ClientStats()
        self._rpm = TokenBucket(requests_per_min) if requests_per_min else None
        self._tpm = TokenBucket(tokens_per_min) if tokens_per_min else None
        self._lock = threading.Lock()
        self._inflight: dict[str, concurrent.futures.Future[ChatReply]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._sem: asyncio.Semaphore | None = None
        self._resume_at = 0.0
        self._closed = False

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.base_url!r}, concurrency={self.concurrency}, cache={self.cache!r})"

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public --------------------------------------------------------------------------------------------
    def submit(self, request: ChatRequest) -> concurrent.futures.Future[ChatReply]:
        """Start ``request`` (or find it in the cache); returns a future of its :class:`ChatReply`."""
        if self._closed:
            raise ConfigError("this ChatClient is closed")
        key = request.key
        with self._lock:
            self.stats.submitted += 1
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                with self._lock:
                    self.stats.cache_hits += 1
                return _done(hit)
        with self._lock:
            running = self._inflight.get(key)
            if running is not None:  # the same request is in flight: share its answer, buy nothing twice
                self.stats.shared += 1
                return _chain_cached(running)
            fut = asyncio.run_coroutine_threadsafe(self._complete(request, key), self._ensure_loop())
            self._inflight[key] = fut
        fut.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return fut

    def complete(self, request: ChatRequest) -> ChatReply:
        """Blocking :meth:`submit` of one request."""
        return self.submit(request).result()

    @property
    def in_flight(self) -> int:
        """Requests submitted and not finished."""
        return len(self._inflight)

    def close(self) -> None:
        """Cancel what is still running, close the connections and stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        except Exception as exc:  # noqa: BLE001 - shutting down: nothing left to report it to
            log.debug("ChatClient shutdown: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    # -- loop thread ---------------------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = _new_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="vptt-llm-client", daemon=True)
            self._thread.start()
            self._loop = loop
        return self._loop

    async def _shutdown(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _ensure_session(self) -> Any:
        if self._session is None:
            import aiohttp

            headers = {"Content-Type": "application/json"}
            if self._key:
                headers["Authorization"] = f"Bearer {self._key}"
            self._session = aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._session

    async def _complete(self, request: ChatRequest, key: str) -> ChatReply:
        self._ensure_session()
        assert self._sem is not None
        async with self._sem:
            if self._rpm is not None:
                await self._rpm.acquire(1)
            if self._tpm is not None:
                await self._tpm.acquire(request.approx_tokens() + (request.max_tokens or 0))
            t0 = time.perf_counter()
            reply, attempts = await self._with_retry(request)
        reply = replace(reply, latency_s=round(time.perf_counter() - t0, 6), attempts=attempts,
                        created=time.time())
        if self.cache is not None:
            self.cache.put(key, reply)  # committed before anyone uses it: a kill -9 now loses nothing
        with self._lock:
            self.stats.completions += 1
            self.stats.prompt_tokens += reply.prompt_tokens or 0
            self.stats.completion_tokens += reply.completion_tokens or 0
        return reply

    async def _with_retry(self, request: ChatRequest) -> tuple[ChatReply, int]:
        loop = asyncio.get_running_loop()
        delays = backoff_delays(self.retry, self.retry.max_attempts - 1)
        body = request.payload
        what = f"{self.what} {request.model!r}" + (f" ({request.tag})" if request.tag else "")
        for attempt in range(1, self.retry.max_attempts + 1):
            pause = self._resume_at - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            with self._lock:
                self.stats.attempts += 1
            error: ProviderError | None = None
            try:
                return await asyncio.wait_for(self._post(body, request.model), self.timeout_s), attempt
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised typed
                error, wait = after_failure(exc, attempt, what, self.retry, [self._key], delays)
                if error is None and getattr(exc, "status_code", None) == 429:  # everyone must slow down
                    self._resume_at = max(self._resume_at, loop.time() + wait)
            with self._lock:
                if error is None:
                    self.stats.retries += 1
                else:
                    self.stats.failures += 1
            if error is not None:
                raise error  # outside the except block: no provider exception (or key) in its chain
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, body: bytes, model: str) -> ChatReply:
        import aiohttp

        try:
            async with self._ensure_session().post(self.url, data=body) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise HTTPStatusFailure(resp.status, resp.headers, raw[:300].decode("utf-8", "replace"))
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        return parse_reply(raw, model)


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (about a fifth less CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def parse_reply(raw: bytes, model: str) -> ChatReply:
    """A :class:`ChatReply` from a ``chat.completion`` JSON body; :class:`TransientReplyError` if unusable."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise TransientReplyError(f"the reply is not JSON: {raw[:80]!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TransientReplyError(f"the reply has no choices: {raw[:120]!r}")
    message = choices[0].get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        raise TransientReplyError(f"the reply's content is not text: {raw[:120]!r}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ChatReply(text=content or "", model=str(data.get("model") or model),
                     finish_reason=choices[0].get("finish_reason"),
                     prompt_tokens=_int(usage.get("prompt_tokens")),
                     completion_tokens=_int(usage.get("completion_tokens")))


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _done(reply: ChatReply) -> concurrent.futures.Future[ChatReply]:
    fut: concurrent.futures.Future[ChatReply] = concurrent.futures.Future()
    fut.set_result(reply)
    return fut


def _chain_cached(source: concurrent.futures.Future[ChatReply]) -> concurrent.futures.Future[ChatReply]:
    """A future with ``source``'s reply marked ``cached`` (the caller shares a completion, it buys none)."""
    out: concurrent.futures.Future[ChatReply] = concurrent.futures.Future()

    def copy(f: concurrent.futures.Future[ChatReply]) -> None:
        if f.cancelled():
            out.cancel()
        elif f.exception() is not None:
            out.set_exception(f.exception())  # type: ignore[arg-type]
        else:
            out.set_result(replace(f.result(), cached=True))

    source.add_done_callback(copy)
    return out
