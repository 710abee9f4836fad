"""Remote providers: no key ever leaks, hangs end in a typed timeout, malformed answers are typed errors.

A respx endpoint echoes the ``Authorization`` header back (in the error body, a response header and, for
chat, the completion itself). Every client is checked: the exception, its whole ``__cause__``/``__context__``
chain, the formatted traceback, every log record (DEBUG, including the openai and httpx loggers), ``repr``,
results and files written.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from PIL import Image

from tests.conftest import make_persona
from vptt.agents.generators.base import GenerationRequest
from vptt.agents.generators.openai_images import OpenAIImageGenerator, OpenAIImagesConfig
from vptt.agents.llm_composer import LLMComposer, LLMComposerConfig
from vptt.agents.persona_gen.pipeline import JSONChat, LLMConfig
from vptt.agents.trace import RetrievalTrace
from vptt.core.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    RateLimitedError,
)
from vptt.core.providers import RetryConfig, endpoint_label, redact
from vptt.evaluators.feedback_llm import LLMDataConfig, LLMDataGenerator
from vptt.evaluators.vlm_judge import JudgeConfig, VLMJudge
from vptt.stores.embedders import OpenAIEmbedder

KEY = "sk-ECHOED-0123456789-secret"
BASE = "http://echo.test/v1"
ONCE = RetryConfig(max_attempts=2, initial_interval=0.0, jitter=False)
IMG = Image.new("RGB", (8, 8), (200, 10, 10))


def _echo(status: int) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        return httpx.Response(status, json={"error": {"message": f"rejected {auth}", "type": "x", "auth": auth}},
                              headers={"x-echo": auth, "retry-after": "0"})
    return answer


def _echo_chat(request: httpx.Request) -> httpx.Response:
    auth = request.headers.get("authorization", "")
    body = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"A: Score=3 - you sent {auth}\nB: Score=2 - ok"}}]}
    return httpx.Response(200, json=body, headers={"x-echo": auth})


# one factory per network client: (name, route, call)
def _embedder(**kw: Any) -> Callable[[], Any]:
    e = OpenAIEmbedder("emb", dim=4, base_url=BASE, api_key=KEY, http_client=httpx.Client(), **kw)
    return lambda: e.embed(["a text"])


def _judge(**kw: Any) -> Callable[[], Any]:
    j = VLMJudge(JudgeConfig(base_url=BASE, api_key=KEY, profile_tile=16, method_tile=16, malformed_retries=0,
                             **kw), http_client=httpx.Client())
    return lambda: j.judge(persona_id="p", persona_images=[IMG], method_images={"a": IMG, "b": IMG}, prompt="x")


def _composer(**kw: Any) -> Callable[[], Any]:
    c = LLMComposer(LLMComposerConfig(model="m", base_url=BASE, api_key=KEY, **kw), http_client=httpx.Client())
    return lambda: c.compose("a lake", RetrievalTrace(method="vprag"), make_persona("p", ["A boat."]))


def _images(**kw: Any) -> Callable[[], Any]:
    g = OpenAIImageGenerator(OpenAIImagesConfig(base_url=BASE, api_key=KEY, **kw), http_client=httpx.Client())
    return lambda: g.generate(GenerationRequest(prompt="a lake"))


def _feedback(**kw: Any) -> Callable[[], Any]:
    g = LLMDataGenerator(LLMDataConfig(model="m", base_url=BASE, api_key=KEY, malformed_retries=0, **kw),
                         http_client=httpx.Client())
    return lambda: g._ask([{"role": "user", "content": "x"}])


def _persona_gen(**kw: Any) -> Callable[[], Any]:
    c = JSONChat(LLMConfig(model="m", base_url=BASE, api_key=KEY, **kw), http_client=httpx.Client())
    return lambda: c.complete([{"role": "user", "content": "x"}], temperature=0.0)


CLIENTS = {"embeddings": ("/embeddings", _embedder, {"max_retries": 1}),
           "judge": ("/chat/completions", _judge, {"max_retries": 1}),
           "composer": ("/chat/completions", _composer, {"retry": ONCE}),
           "images": ("/images/generations", _images, {"retry": ONCE}),
           "feedback_data": ("/chat/completions", _feedback, {"retry": ONCE}),
           "persona_gen": ("/chat/completions", _persona_gen, {"retry": ONCE})}


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _assert_no_key(exc: BaseException, caplog: pytest.LogCaptureFixture, *extra: Any) -> None:
    chain = list(_chain(exc))
    assert chain == [exc], f"chained exceptions: {[type(e).__name__ for e in chain]}"
    assert exc.__cause__ is None and exc.__context__ is None
    blob = "".join(traceback.format_exception(exc)) + repr(exc) + str(vars(exc))
    logging.getLogger("test").exception("provider call failed", exc_info=exc)
    blob += "\n".join(r.getMessage() + (traceback.format_exception(*r.exc_info)[-1] if r.exc_info else "")
                      for r in caplog.records)
    blob += "".join(map(repr, extra))
    assert KEY not in blob and "ECHOED" not in blob


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("status,error", [(401, ProviderAuthError), (403, ProviderAuthError),
                                          (429, RateLimitedError), (500, ProviderError), (400, ProviderError)])
def test_echoed_key_never_leaks(client: str, status: int, error: type, caplog: pytest.LogCaptureFixture) -> None:
    route, factory, opts = CLIENTS[client]
    call = factory(**opts)
    with respx.mock(base_url=BASE) as mock:
        mock.post(route).mock(side_effect=_echo(status))
        with pytest.raises(error) as info:
            call()
    assert type(info.value) is error or status in (400, 500)
    assert "echo.test" in str(info.value)  # the endpoint is named
    _assert_no_key(info.value, caplog, call)


@pytest.mark.parametrize("client", ["judge", "composer", "feedback_data", "persona_gen"])
def test_key_echoed_in_a_successful_reply_is_redacted(client: str, caplog: pytest.LogCaptureFixture) -> None:
    route, factory, opts = CLIENTS[client]
    with respx.mock(base_url=BASE) as mock:
        mock.post(route).mock(side_effect=_echo_chat)
        result = factory(**opts)()
    text = result if isinstance(result, str) else result.model_dump_json()
    assert KEY not in text and "***" in text
    assert KEY not in "\n".join(r.getMessage() for r in caplog.records)


def test_reprs_configs_and_settings_hide_keys(tmp_path: Path) -> None:
    objs = [OpenAIEmbedder("emb", dim=4, base_url="http://u:" + KEY + "@h/v1", api_key=KEY),
            VLMJudge(JudgeConfig(api_key=KEY, base_url=f"http://h/v1?api_key={KEY}")),
            LLMComposer(LLMComposerConfig(api_key=KEY)), OpenAIImageGenerator(OpenAIImagesConfig(api_key=KEY)),
            LLMDataGenerator(LLMDataConfig(api_key=KEY)), JSONChat(LLMConfig(api_key=KEY))]
    for o in objs:
        assert KEY not in repr(o) and KEY not in str(o)
    assert KEY not in objs[0].name  # the embedder's identity ends up in caches, stores and manifests
    assert endpoint_label(f"https://user:{KEY}@host:8443/v1/?key={KEY}#x") == "https://host:8443/v1"


# ----------------------------------------------------------------------------------- malformed answers
MALFORMED = [(b'{"data": [{"embedding": [0.1', "application/json"), (b"<html>proxy login</html>", "text/html"),
             (b'{"foo": 1}', "application/json"), (b"[1, 2]", "application/json"),
             (b'{"object": "list", "data": [{"index": 0, "embedding": ["a", "b"]}]}', "application/json")]


@pytest.mark.parametrize("body,ctype", MALFORMED)
@pytest.mark.parametrize("client", ["embeddings", "judge", "composer", "feedback_data", "persona_gen"])
def test_malformed_json_is_a_typed_provider_error(client: str, body: bytes, ctype: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    route, factory, opts = CLIENTS[client]
    call = factory(**opts)
    with respx.mock(base_url=BASE) as mock:
        mock.post(route).mock(return_value=httpx.Response(200, content=body, headers={"content-type": ctype}))
        with pytest.raises(ProviderError) as info:
            call()
    assert isinstance(info.value, ProviderResponseError) and "malformed" in str(info.value)
    assert "echo.test" in str(info.value)
    _assert_no_key(info.value, caplog)


def test_images_endpoint_returning_junk(caplog: pytest.LogCaptureFixture) -> None:
    call = _images(retry=ONCE)
    for data in ({"b64_json": "not base64 !!"}, {"b64_json": "aGVsbG8="}):  # the second decodes, but no PNG
        with respx.mock(base_url=BASE) as mock:
            mock.post("/images/generations").mock(return_value=httpx.Response(200, json={"created": 0, "data": [data]}))
            with pytest.raises(ProviderResponseError):
                call()


# ----------------------------------------------------------------------------------- hangs
@pytest.fixture
def silent_server() -> Iterator[str]:
    """A real TCP server on 127.0.0.1 that accepts connections and never answers (a paused endpoint)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/v1"
    stop.set()
    t.join(2)
    for c in conns:
        c.close()
    srv.close()


HANG_CLIENTS = {
    "embeddings": lambda url: OpenAIEmbedder("emb", dim=4, base_url=url, api_key=KEY, max_retries=0).embed(["x"]),
    "judge": lambda url: VLMJudge(JudgeConfig(base_url=url, api_key=KEY, max_retries=0, profile_tile=16,
                                              method_tile=16)).judge(persona_id="p", persona_images=[IMG],
                                                                     method_images={"a": IMG, "b": IMG}, prompt="x"),
    "composer": lambda url: LLMComposer(LLMComposerConfig(base_url=url, api_key=KEY, retry=RetryConfig(
        max_attempts=1))).compose("x", RetrievalTrace(method="vprag"), make_persona("p", ["A boat."])),
    "images": lambda url: OpenAIImageGenerator(OpenAIImagesConfig(base_url=url, api_key=KEY, retry=RetryConfig(
        max_attempts=1))).generate(GenerationRequest(prompt="x")),
    "feedback_data": lambda url: LLMDataGenerator(LLMDataConfig(base_url=url, api_key=KEY, retry=RetryConfig(
        max_attempts=1)))._ask([{"role": "user", "content": "x"}]),
    "persona_gen": lambda url: JSONChat(LLMConfig(base_url=url, api_key=KEY, retry=RetryConfig(
        max_attempts=1))).complete([{"role": "user", "content": "x"}], temperature=0.0),
}


@pytest.mark.parametrize("client", sorted(HANG_CLIENTS))
def test_a_silent_endpoint_times_out_with_a_typed_error(client: str, silent_server: str,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("VPTT_REQUEST_TIMEOUT_S", "0.5")  # every client's default timeout follows the setting
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeoutError) as info:
        HANG_CLIENTS[client](silent_server)
    assert time.monotonic() - t0 < 10
    assert silent_server.removesuffix("/v1") in str(info.value) and "timed out" in str(info.value)
    assert isinstance(info.value, TimeoutError)
    _assert_no_key(info.value, caplog)


def test_redact_catches_credentials_by_shape_but_not_prose() -> None:
    assert redact("Authorization: Bearer abcdef123456", []) == "Authorization: Bearer ***"
    assert redact('{"api_key": "abcdefgh"}', []) == '{"api_key": "***"}'
    prose = "a flag bearer in a parade, max_tokens=300, token budget"
    assert redact(prose, [], patterns=False) == prose and redact(prose, []) == prose


@pytest.fixture
def echo_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that answers 401 and echoes the Authorization header in its body and
    in a response header (the HTTP stack logs response headers at DEBUG: respx would bypass that layer)."""
    import http.server

    class Echo(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            auth = self.headers.get("authorization", "")
            body = json.dumps({"error": {"message": f"bad key {auth}"}}).encode()
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.send_header("x-echo", auth)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("client", ["embeddings", "judge", "images", "persona_gen"])
def test_debug_logs_of_the_http_stack_never_hold_the_key(client: str, echo_server: str,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the key the client sends when none is passed
    calls = {"embeddings": lambda: OpenAIEmbedder("emb", dim=4, base_url=echo_server, max_retries=0).embed(["x"]),
             "judge": lambda: VLMJudge(JudgeConfig(base_url=echo_server, max_retries=0, profile_tile=16,
                                                   method_tile=16)).judge(persona_id="p", persona_images=[IMG],
                                                                          method_images={"a": IMG, "b": IMG},
                                                                          prompt="x"),
             "images": lambda: OpenAIImageGenerator(OpenAIImagesConfig(base_url=echo_server)).generate(
                 GenerationRequest(prompt="x")),
             "persona_gen": lambda: JSONChat(LLMConfig(base_url=echo_server)).complete(
                 [{"role": "user", "content": "x"}], temperature=0.0)}
    with pytest.raises(ProviderAuthError) as info:
        calls[client]()
    assert any("httpcore" in r.name or "httpx" in r.name for r in caplog.records)  # DEBUG logging was on
    _assert_no_key(info.value, caplog)
