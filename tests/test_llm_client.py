"""The async chat client against a real local HTTP server process: concurrency, cache, retries, limits, errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_llm_server import FakeLLMServer, reply_for
from vptt.core.errors import ConfigError, ProviderError
from vptt.core.llm_cache import ChatReply, ChatRequest, ResponseCache, request_key
from vptt.core.llm_client import ChatClient, TokenBucket, parse_reply
from vptt.core.providers import ProviderAuthError, ProviderTimeoutError, RateLimitedError, RetryConfig

KEY = "sk-test-SECRET-5555"
FAST = RetryConfig(max_attempts=4, initial_interval=0.0, jitter=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeLLMServer]:
    with FakeLLMServer(tmp_path_factory.mktemp("llm"), latency_ms=0) as srv:
        yield srv


def req(text: str, **kw: object) -> ChatRequest:
    return ChatRequest(model="m", messages=(("system", "s"), ("user", text)), **kw)  # type: ignore[arg-type]


def test_request_body_and_key() -> None:
    r = req("hello", temperature=0.1, top_p=0.9, max_tokens=256, seed=42)
    assert r.body() == {"model": "m", "messages": [{"role": "system", "content": "s"},
                                                   {"role": "user", "content": "hello"}],
                        "temperature": 0.1, "top_p": 0.9, "max_tokens": 256, "seed": 42}
    assert "top_p" not in req("hello").body()  # None: not sent, the server's default applies
    # the key is what determines a completion: model, messages, sampling; not the tag
    assert r.key == request_key(r.body()) == req("hello", temperature=0.1, top_p=0.9, max_tokens=256, seed=42,
                                                 tag="row 1").key
    others = [req("hello!", temperature=0.1, top_p=0.9, max_tokens=256, seed=42),
              req("hello", temperature=0.2, top_p=0.9, max_tokens=256, seed=42),
              req("hello", temperature=0.1, top_p=0.9, max_tokens=256, seed=43),
              ChatRequest(model="m2", messages=r.messages, temperature=0.1, top_p=0.9, max_tokens=256, seed=42)]
    assert len({r.key, *(o.key for o in others)}) == 5


def test_concurrency_is_held_and_replies_are_the_servers(server: FakeLLMServer) -> None:
    server.control(latency_ms=150)
    try:
        before = server.stats()
        requests = [req(f"prompt {i}") for i in range(24)]
        with ChatClient(server.base_url, KEY, concurrency=8) as client:
            t0 = time.perf_counter()
            futures = [client.submit(r) for r in requests]
            replies = [f.result() for f in futures]
            elapsed = time.perf_counter() - t0
        stats = server.stats()
    finally:
        server.control(latency_ms=0)
    assert [r.text for r in replies] == [reply_for(r.body()) for r in requests]
    assert stats["requests"] - before["requests"] == 24
    assert stats["max_in_flight"] == 8  # all 8 slots used, never more
    assert elapsed >= 3 * 0.15 * 0.95  # 24 requests, 8 at a time, 150 ms each
    assert all(r.latency_s >= 0.14 and r.attempts == 1 and not r.cached for r in replies)
    assert replies[0].prompt_tokens == 1 + 2 and replies[0].completion_tokens == len(replies[0].text.split())
    assert client.stats.completions == 24 and client.stats.cache_hits == 0


def test_cache_serves_a_new_client_and_nothing_is_bought_twice(server: FakeLLMServer, tmp_path: Path) -> None:
    path = tmp_path / "llm.sqlite"
    requests = [req(f"cached {i}", temperature=0.1, seed=42) for i in range(5)]
    n0 = len(server.requests())
    with ChatClient(server.base_url, KEY, cache=ResponseCache(path)) as client:
        first = [f.result() for f in [client.submit(r) for r in requests]]
    assert len(server.requests()) - n0 == 5 and not any(r.cached for r in first)
    with ChatClient(server.base_url, KEY, cache=ResponseCache(path)) as client:  # another run, same file
        again = [client.complete(r) for r in requests]
        changed = client.complete(req("cached 0", temperature=0.2, seed=42))  # other sampling: a new key
    assert len(server.requests()) - n0 == 6
    assert [a.text for a in again] == [f.text for f in first] and all(a.cached for a in again)
    assert [a.latency_s for a in again] == [f.latency_s for f in first]  # the latency of the purchase
    assert not changed.cached and client.stats.cache_hits == 5 and client.stats.completions == 1
    assert ResponseCache(path).keys() == {r.key for r in requests} | {req("cached 0", temperature=0.2, seed=42).key}


def test_identical_requests_in_flight_share_one_call(server: FakeLLMServer) -> None:
    server.control(latency_ms=200)
    try:
        n0 = len(server.requests())
        with ChatClient(server.base_url, KEY, concurrency=4) as client:
            a, b = client.submit(req("same")), client.submit(req("same"))
            ra, rb = a.result(), b.result()
    finally:
        server.control(latency_ms=0)
    assert len(server.requests()) - n0 == 1 and ra.text == rb.text
    assert (ra.cached, rb.cached) == (False, True) and client.stats.shared == 1


def test_faults_are_retried_and_retry_after_is_honoured(server: FakeLLMServer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server.control(faults=["429", "500", "malformed", "empty"], retry_after=1)
    with ChatClient(server.base_url, KEY, retry=RetryConfig(max_attempts=5, initial_interval=0.0, jitter=False,
                                                            max_interval=5)) as client:
        t0 = time.perf_counter()
        reply = client.complete(req("flaky"))
        elapsed = time.perf_counter() - t0
    assert reply.text == reply_for(req("flaky").body()) and reply.attempts == 5
    assert elapsed >= 0.95  # the 429's Retry-After: 1 s, although the backoff asked for 0
    assert client.stats.retries == 4 and "retrying" in caplog.text and KEY not in caplog.text
    logged = server.requests()[-5:]
    assert [(e["status"], e["fault"]) for e in logged] == [(429, "429"), (500, "500"), (200, "malformed"),
                                                           (200, "empty"), (200, None)]


@pytest.mark.parametrize("faults,err,attempts,text", [
    (["500"] * 3, ProviderError, 3, "HTTP 500 after 3 attempt(s)"),
    (["429"] * 3, RateLimitedError, 3, "rate limited"),
    (["malformed"] * 3, ProviderError, 3, "unusable reply after 3 attempt(s)"),
    (["401"], ProviderAuthError, 1, "refused the API key")])
def test_persistent_faults_become_typed_errors(server: FakeLLMServer, faults: list[str], err: type,
                                               attempts: int, text: str) -> None:
    server.control(faults=faults, retry_after=0)
    n0 = len(server.requests())
    with ChatClient(server.base_url, KEY, retry=RetryConfig(max_attempts=3, initial_interval=0.0,
                                                            jitter=False)) as client:
        with pytest.raises(err) as info:
            client.complete(req("doomed", tag="persona 'p1', task 'garden'"))
    assert len(server.requests()) - n0 == attempts and info.value.attempts == attempts
    assert text in str(info.value) and "persona 'p1', task 'garden'" in str(info.value)
    assert KEY not in str(info.value) and client.stats.failures == 1


def test_hard_timeout(server: FakeLLMServer) -> None:
    server.control(faults=["slow", "slow"], slow_s=5)
    with ChatClient(server.base_url, KEY, timeout_s=0.4, retry=RetryConfig(max_attempts=2, initial_interval=0.0,
                                                                           jitter=False)) as client:
        t0 = time.perf_counter()
        with pytest.raises(ProviderTimeoutError, match="timed out after 2 attempt"):
            client.complete(req("slow one"))
    assert time.perf_counter() - t0 < 2.5  # two attempts of 0.4 s, not two of 5 s


def test_unreachable_server_and_bad_arguments(tmp_path: Path) -> None:
    with ChatClient("http://127.0.0.1:9/v1", KEY, retry=RetryConfig(max_attempts=2, initial_interval=0.0,
                                                                     jitter=False)) as client:
        with pytest.raises(ProviderError, match="cannot reach the endpoint"):
            client.complete(req("x"))
    with pytest.raises(ConfigError, match="VPTT_LLM_API_KEY or OPENAI_API_KEY"):
        ChatClient(None, None)  # OpenAI's endpoint needs a key
    with pytest.raises(ConfigError, match="concurrency"):
        ChatClient("http://127.0.0.1:9/v1", concurrency=0)
    client = ChatClient("http://127.0.0.1:9/v1")
    client.close()
    with pytest.raises(ConfigError, match="closed"):
        client.submit(req("x"))


def test_parse_reply() -> None:
    ok = b'{"model": "srv", "choices": [{"message": {"content": "a b"}, "finish_reason": "length"}]}'
    assert parse_reply(ok, "m") == ChatReply(text="a b", model="srv", finish_reason="length")
    from vptt.core.providers import TransientReplyError

    for bad in (b"<html>", b"{}", b'{"choices": []}', b'{"choices": [{"message": {"content": 3}}]}'):
        with pytest.raises(TransientReplyError):
            parse_reply(bad, "m")


def test_token_bucket_rates() -> None:
    async def spend(per_minute: float, costs: list[float]) -> float:
        bucket = TokenBucket(per_minute)
        t0 = time.perf_counter()
        for c in costs:
            await bucket.acquire(c)
        return time.perf_counter() - t0

    # 600/min = 10/s with a burst of 10: 20 requests take ~1 s; 5 take no time
    assert 0.9 <= asyncio.run(spend(600, [1] * 20)) < 1.6
    assert asyncio.run(spend(600, [1] * 5)) < 0.1
    # tokens: a cost above the burst waits for a full bucket, then the debt is paid before the next
    assert 1.9 <= asyncio.run(spend(60 * 100, [300, 1])) < 2.8  # 100 tokens/s: 300 then 1 -> 2 s of debt
    with pytest.raises(ConfigError):
        TokenBucket(0)


def test_requests_per_minute_limit_through_the_client(server: FakeLLMServer) -> None:
    with ChatClient(server.base_url, KEY, concurrency=8, requests_per_min=600) as client:
        t0 = time.perf_counter()
        for f in [client.submit(req(f"limited {i}")) for i in range(20)]:
            f.result()
        assert time.perf_counter() - t0 >= 0.9  # 10 at once, then 10 per second


def test_without_uvloop_the_standard_loop_serves(server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    with ChatClient(server.base_url, KEY) as client:
        assert client.complete(req("std loop")).text == reply_for(req("std loop").body())
        assert type(client._loop).__module__.startswith("asyncio")
