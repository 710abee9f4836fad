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
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from vptt.core.errors import (  # noqa: F401 - re-exported for callers of this module
    ConfigError,
    GenerationError,
    ProviderAuthError,
    ProviderError,
    ProviderResponseError,
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
    protect_secret(key)
    try:
        client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=max_retries,
                               http_client=http_client)
        protect_secret(client.api_key)
        return client
    except openai.OpenAIError:
        raise ConfigError(f"no API key for {purpose}: pass api_key (CLI --api-key) or set OPENAI_API_KEY; "
                          "local servers (vLLM, Ollama) accept any string such as 'EMPTY'") from None


def backoff_delays(cfg: RetryConfig, n: int, rng: random.Random | None = None) -> Iterator[float]:
    """The first ``n`` waits of the schedule ``min(initial * factor**i, max_interval)`` (jittered if set)."""
    for i in range(n):
        delay = min(cfg.initial_interval * cfg.backoff_factor ** i, cfg.max_interval)
        yield delay * (0.5 + 0.5 * (rng or random).random()) if cfg.jitter else float(delay)


_SECRET_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+|%20)([A-Za-z0-9._~+/=-]{6,})"), r"\1\2***"),
    (re.compile(r"(?i)\b(api[-_]?key|authorization|x-api-key|access[-_]?token|token|secret|password)([\"']?\s*[:=]\s*[\"']?)(?!(?:bearer|basic|token)\b)([^\s\"',;}]{6,})"),
     r"\1\2***"),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}"), r"\1-***"),
)


_KNOWN_SECRETS: set[str] = set()
_LOGGERS_REDACTED = ("httpx", "httpx2", "httpcore.http11", "httpcore.http2", "httpcore.connection",
                     "httpcore.proxy", "httpcore2.http11", "httpcore2.http2", "httpcore2.connection",
                     "httpcore2.proxy", "openai", "openai._base_client")
"""Loggers of the HTTP stack that log response headers at DEBUG (an endpoint may echo the key in one)."""


class _RedactSecrets(logging.Filter):
    """Rewrites a log record whose message holds a known API key (only records that are emitted: DEBUG
    records of a disabled level are never built, so this costs nothing in normal use)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = [*_KNOWN_SECRETS, *env_secrets()]
        if secrets:
            try:
                msg = record.getMessage()
            except Exception:  # noqa: BLE001 - a broken record is the logging module's business
                return True
            clean = redact(msg, secrets, patterns=False)
            if clean != msg:
                record.msg, record.args = clean, None
        return True


_REDACTOR = _RedactSecrets()


def protect_secret(key: Any) -> None:
    """Remember ``key`` (str or ``SecretStr``) as a secret and make sure the HTTP stack's loggers redact it."""
    value = key.get_secret_value() if hasattr(key, "get_secret_value") else key
    if isinstance(value, str) and len(value) >= 4:
        _KNOWN_SECRETS.add(value)
    for name in _LOGGERS_REDACTED:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


def env_secrets() -> list[str]:
    """Values of the API-key variables set in the environment (``*_API_KEY``, ``*_TOKEN``)."""
    return [v for k, v in os.environ.items() if k.endswith(("_API_KEY", "_TOKEN")) and len(v) >= 4]


def redact(text: str, secrets: Sequence[str | None], *, patterns: bool = True) -> str:
    """``text`` with every secret replaced by ``***``: the given ones, API keys found in the environment,
    and (``patterns``) anything shaped like a credential (``Bearer ...``, ``api_key=...``, ``sk-...``).
    Model output is redacted without ``patterns`` (a "flag bearer" in a prompt is not a credential).

    Example:
        >>> redact("401: bad header Authorization: Bearer abc123def for key sk-abcdefgh12345", [])
        '401: bad header Authorization: Bearer *** for key sk-***'
    """
    for s in sorted({s for s in [*secrets, *env_secrets()] if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, "***")
    for pattern, repl in _SECRET_PATTERNS if patterns else ():
        text = pattern.sub(repl, text)
    return text


def client_secrets(client: Any, *given: Any) -> list[str]:
    """The secrets to redact for a client: the given keys (``SecretStr`` or str) and the key the client
    actually sends (``openai.OpenAI.api_key``, which may come from ``OPENAI_API_KEY``)."""
    out = []
    for key in (*given, getattr(client, "api_key", None)):
        key = key.get_secret_value() if hasattr(key, "get_secret_value") else key
        if isinstance(key, str) and key:
            out.append(key)
    return out


def chat_text(resp: Any, what: str, secrets: Sequence[str | None] = ()) -> str:
    """The text of the first choice of a chat completion ("" when there is none), secrets redacted.

    Raises:
        ProviderResponseError: the answer is not a chat completion (no ``choices`` list, non-text content),
            e.g. an HTML page or a proxy's JSON.
    """
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list):
        raise ProviderResponseError(f"{what}: malformed response (not a chat completion: no choices); check "
                                    "that base_url points at an OpenAI-compatible chat API")
    if not choices:
        return ""
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if content is not None and not isinstance(content, str):
        raise ProviderResponseError(f"{what}: malformed response (message content is "
                                    f"{type(content).__name__}, not text)")
    return redact(content or "", secrets, patterns=False)


def strip_credentials(url: str | None) -> str | None:
    """``url`` without ``user:password@``, query and fragment; unchanged when it has none of them.

    Example:
        >>> strip_credentials("http://u:sk-x@host:8000/v1/?key=1"), strip_credentials("http://host/v1/")
        ('http://host:8000/v1/', 'http://host/v1/')
    """
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def endpoint_label(base_url: Any, default: str = "https://api.openai.com/v1") -> str:
    """The endpoint for messages: scheme, host, port and path of ``base_url``; credentials, query and
    fragment dropped (a base URL may carry a key as ``user:pass@`` or ``?key=``).

    Example:
        >>> endpoint_label("http://user:sk-secret@localhost:8000/v1?api_key=x")
        'http://localhost:8000/v1'
        >>> endpoint_label(None)
        'https://api.openai.com/v1'
    """
    if not base_url:
        return default
    parts = urlsplit(str(base_url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", "")) or "the endpoint"


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
        return ProviderTimeoutError(f"{what}: timed out{tries}; raise timeout_s (VPTT_REQUEST_TIMEOUT_S) or "
                                    "check the server load")
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
    if isinstance(exc, (ValueError, TypeError, AttributeError, KeyError, IndexError)):
        return ProviderResponseError(f"{what}: malformed response ({type(exc).__name__}: {detail}); check that "
                                     "base_url points at an OpenAI-compatible API")
    return ProviderError(f"{what}: {type(exc).__name__}: {detail}")


def retry_wait(exc: BaseException, delay: float, cfg: RetryConfig) -> float:
    """Seconds to wait before retrying ``exc``: its ``Retry-After`` (capped by ``max_interval``), else ``delay``."""
    after = _retry_after(exc) if cfg.respect_retry_after else None
    return min(after, cfg.max_interval) if after is not None else delay


def after_failure(exc: Exception, attempt: int, what: str, retry: RetryConfig, secrets: Sequence[str | None],
                   delays: Iterator[float]) -> tuple[ProviderError | None, float]:
    """After a failed attempt: the typed error to raise (last attempt, or not retryable), else the wait."""
    if attempt == retry.max_attempts or not is_retryable(exc, retry):
        return to_provider_error(exc, what, attempt, secrets), 0.0
    wait = retry_wait(exc, next(delays), retry)
    log.warning("%s: %s (attempt %d/%d), retrying in %.2fs", what, type(exc).__name__, attempt,
                retry.max_attempts, wait)
    return None, wait


def call_with_retry(fn: Callable[[], T], *, what: str, retry: RetryConfig, secrets: Sequence[str | None] = (),
                    sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` until it succeeds or a non-transient error / the last attempt; errors become typed.

    The typed error is raised outside the ``except`` block, so neither ``__cause__`` nor ``__context__``
    holds the provider's exception (whose request and response may carry the API key).
    """
    delays = backoff_delays(retry, retry.max_attempts - 1)
    for attempt in range(1, retry.max_attempts + 1):
        error: ProviderError | None = None
        try:
            return fn()
        except VPTTError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised typed
            error, wait = after_failure(exc, attempt, what, retry, secrets, delays)
        if error is not None:
            raise error  # outside the except block: no provider exception (or key) in its chain
        sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


async def acall_with_retry(fn: Callable[[], Awaitable[T]], *, what: str, retry: RetryConfig,
                           secrets: Sequence[str | None] = (),
                           sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> T:
    """Async :func:`call_with_retry`."""
    delays = backoff_delays(retry, retry.max_attempts - 1)
    for attempt in range(1, retry.max_attempts + 1):
        error: ProviderError | None = None
        try:
            return await fn()
        except VPTTError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised typed
            error, wait = after_failure(exc, attempt, what, retry, secrets, delays)
        if error is not None:
            raise error
        await sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
