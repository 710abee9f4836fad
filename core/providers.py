"""Retries with exponential backoff for provider calls, the typed errors they end in, and secret redaction.

Provider clients are built with ``max_retries=0`` so that this module alone decides: HTTP 408/409/429/5xx,
timeouts and connection failures are retried with capped exponential backoff (``Retry-After`` honoured);
anything else fails at once. When the attempts run out, the provider exception becomes a typed
:class:`~sdk.errors.ProviderError` subclass whose message says what to do, with every secret redacted.

Example:
    >>> cfg = RetryConfig(initial_interval=1, backoff_factor=2, max_interval=3, jitter=False)
    >>> list(backoff_delays(cfg, 4))
    [1.0, 2.0, 3.0, 3.0]
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from vptt.core.errors import (  # noqa: F401 - re-exported for callers of this module
    ConfigError,
    GenerationError,
    ProviderAuthError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    RunTimeoutError,
    VPTTError,
)

T = TypeVar("T")
log = logging.getLogger("vptt.agents")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class TransientReplyError(Exception):
    """A reply that arrived but cannot be used (not JSON, no choices): retried like a 5xx answer."""


class RetryConfig(BaseModel):
    """How provider calls are retried.

    Args:
        max_attempts: attempts in all, the first included (1 = never retry).
        initial_interval: seconds before the first retry.
        backoff_factor: each wait is this many times the previous one.
        max_interval: cap on one wait.
        jitter: scale each wait by a random factor in [0.5, 1.0] (spreads retries of many clients).
        retry_statuses: HTTP statuses that are retried (timeouts and connection errors always are).
        respect_retry_after: wait what a ``Retry-After`` header asks (capped by ``max_interval``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=4, ge=1, le=20)
    initial_interval: float = Field(default=0.5, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    max_interval: float = Field(default=20.0, ge=0)
    jitter: bool = True
    retry_statuses: frozenset[int] = RETRY_STATUSES
    respect_retry_after: bool = True


def openai_client(*, api_key: Any, base_url: str | None, timeout_s: float, http_client: Any = None,
                  max_retries: int = 0, purpose: str = "the endpoint") -> Any:
    """An ``openai.OpenAI`` client; a missing key becomes a :class:`ConfigError` that says how to set one.

    ``api_key`` may be a pydantic ``SecretStr``, a string or None (then ``OPENAI_API_KEY`` is used). Retries
    default to 0: callers retry through :func:`call_with_retry`.
    """
    import openai

    key = api_key.get_secret_value() if hasattr(api_key, "get_secret_value") else api_key
    try:
        return openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=max_retries,
                             http_client=http_client)
    except openai.OpenAIError:
        raise ConfigError(f"no API key for {purpose}: pass api_key (CLI --api-key) or set OPENAI_API_KEY; "
                          "local servers (vLLM, Ollama) accept any string such as 'EMPTY'") from None


def backoff_delays(cfg: RetryConfig, n: int, rng: random.Random | None = None) -> Iterator[float]:
    """The first ``n`` waits of the schedule ``min(initial * factor**i, max_interval)`` (jittered if set)."""
    for i in range(n):
        delay = min(cfg.initial_interval * cfg.backoff_factor ** i, cfg.max_interval)
        yield delay * (0.5 + 0.5 * (rng or random).random()) if cfg.jitter else float(delay)


def redact(text: str, secrets: Sequence[str | None]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if code is None:
        code = getattr(getattr(exc, "response", None), "status_code", None)
    return int(code) if isinstance(code, int) else None


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _is_timeout(exc: BaseException) -> bool:
    name = type(exc).__name__
    return isinstance(exc, TimeoutError) or name in ("APITimeoutError", "TimeoutException", "ReadTimeout",
                                                     "ConnectTimeout", "WriteTimeout", "PoolTimeout")


def _is_connection(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError) or type(exc).__name__ in ("APIConnectionError", "ConnectError",
                                                                      "RemoteProtocolError", "NetworkError")


def is_retryable(exc: BaseException, cfg: RetryConfig) -> bool:
    """Whether ``exc`` is transient: a retried HTTP status, a timeout or a connection failure."""
    if isinstance(exc, VPTTError):
        return False
    if isinstance(exc, TransientReplyError):
        return True
    status = _status(exc)
    if status is not None:
        return status in cfg.retry_statuses
    return _is_timeout(exc) or _is_connection(exc)


def to_provider_error(exc: BaseException, what: str, attempts: int, secrets: Sequence[str | None] = ()
                      ) -> ProviderError:
    """A typed, redacted :class:`ProviderError` for a failed provider call, saying what to do.

    The error carries ``status_code`` (None without an HTTP answer) and ``attempts``.
    """
    err = _provider_error(exc, what, attempts, secrets)
    err.status_code = _status(exc)  # type: ignore[attr-defined]
    err.attempts = attempts  # type: ignore[attr-defined]
    return err


def _provider_error(exc: BaseException, what: str, attempts: int, secrets: Sequence[str | None]
                    ) -> ProviderError:
    status = _status(exc)
    detail = redact(str(exc), secrets)[:300]
    tries = f" after {attempts} attempt(s)" if attempts > 1 else ""
    if isinstance(exc, TransientReplyError):
        return ProviderError(f"{what}: unusable reply{tries}: {detail}; check the model name and the server "
                             "(or a proxy in between)")
    if _is_timeout(exc):
        return ProviderTimeoutError(f"{what}: timed out{tries}; raise timeout_s or check the server load")
    if status == 429:
        return RateLimitedError(f"{what}: rate limited (HTTP 429){tries}: {detail}; lower the request rate, "
                                "raise retry.max_attempts or check the account's quota")
    if status in (401, 403):
        return ProviderAuthError(f"{what}: the endpoint refused the API key (HTTP {status}); set a valid key "
                                 "(api_key=... or OPENAI_API_KEY)")
    if status == 404:
        return ProviderError(f"{what}: not found (HTTP 404): {detail}; check the model name and base_url")
    if status is not None and status >= 500:
        return ProviderError(f"{what}: server error HTTP {status}{tries}: {detail}; retry later or check "
                             "the server's logs")
    if status is not None:
        return ProviderError(f"{what}: request rejected (HTTP {status}): {detail}; check the model name and "
                             "the request parameters")
    if _is_connection(exc):
        return ProviderError(f"{what}: cannot reach the endpoint{tries}; check base_url and the network")
    return ProviderError(f"{what}: {type(exc).__name__}: {detail}")


def retry_wait(exc: BaseException, delay: float, cfg: RetryConfig) -> float:
    """Seconds to wait before retrying ``exc``: its ``Retry-After`` (capped by ``max_interval``), else ``delay``."""
    after = _retry_after(exc) if cfg.respect_retry_after else None
    return min(after, cfg.max_interval) if after is not None else delay


def call_with_retry(fn: Callable[[], T], *, what: str, retry: RetryConfig, secrets: Sequence[str | None] = (),
                    sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` until it succeeds or a non-transient error / the last attempt; errors become typed."""
    delays = backoff_delays(retry, retry.max_attempts - 1)
    for attempt in range(1, retry.max_attempts + 1):
        try:
            return fn()
        except VPTTError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised typed
            if attempt == retry.max_attempts or not is_retryable(exc, retry):
                raise to_provider_error(exc, what, attempt, secrets) from None
            wait = retry_wait(exc, next(delays), retry)
            log.warning("%s: %s (attempt %d/%d), retrying in %.2fs", what, type(exc).__name__, attempt,
                        retry.max_attempts, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


async def acall_with_retry(fn: Callable[[], Awaitable[T]], *, what: str, retry: RetryConfig,
                           secrets: Sequence[str | None] = (),
                           sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> T:
    """Async :func:`call_with_retry`."""
    delays = backoff_delays(retry, retry.max_attempts - 1)
    for attempt in range(1, retry.max_attempts + 1):
        try:
            return await fn()
        except VPTTError:
            raise
        except Exception as exc:  # noqa: BLE001
            if attempt == retry.max_attempts or not is_retryable(exc, retry):
                raise to_provider_error(exc, what, attempt, secrets) from None
            wait = retry_wait(exc, next(delays), retry)
            log.warning("%s: %s (attempt %d/%d), retrying in %.2fs", what, type(exc).__name__, attempt,
                        retry.max_attempts, wait)
            await sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
