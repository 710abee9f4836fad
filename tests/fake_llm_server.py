"""A real OpenAI-compatible chat server for tests and benchmarks (aiohttp, its own process, 127.0.0.1 only).

``python -m tests.fake_llm_server --latency-ms 100 --log requests.jsonl`` prints ``PORT <n>`` once it listens.

* ``POST /v1/chat/completions`` answers after ``--latency-ms`` with a reply computed from the request alone:
  the query, then pieces of the persona data block (the first words of the summary, a few demographics
  fields, the first elements, the first words of the best caption) — so each method's prompt differs the way
  its data does, and the same request always gets the same reply.
* Faults on demand, in order, one request each: ``POST /control`` with ``{"faults": ["429", "500",
  "malformed", "empty", "slow"], "retry_after": 1, "slow_s": 5}`` (or ``--faults 429,500`` at start).
  ``429`` carries ``Retry-After``; ``500`` and ``401`` are plain errors; ``malformed`` is a 200 whose body is
  not JSON; ``empty`` has no choices; ``slow`` answers after ``slow_s`` seconds.
* Every request is logged as one JSON line (time, cache key, status, fault, and with ``--log-bodies`` the
  body); ``GET /stats`` returns counts by status and the most requests it held at once (``max_in_flight``).

:class:`FakeLLMServer` starts and stops it from a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

OPEN, CLOSE = "<persona_memory>", "</persona_memory>"


def data_block(body: dict[str, Any]) -> dict[str, Any]:
    """The JSON object between the persona-memory markers of the last message ({} if none)."""
    user = str(body["messages"][-1]["content"])
    if OPEN not in user or CLOSE not in user:
        return {}
    return json.loads(user[user.index(OPEN) + len(OPEN):user.index(CLOSE)])


def _words(text: str, n: int) -> str:
    return " ".join(str(text).split()[:n])


def reply_for(body: dict[str, Any]) -> str:
    """The deterministic reply to a chat request (a function of its messages only)."""
    data = data_block(body)
    if not data:
        return "a plain photo, " + _words(body["messages"][-1]["content"], 12)
    parts = [data.get("query", "")]
    if data.get("summary"):
        parts.append(_words(data["summary"], 12))
    demo = data.get("demographics") or {}
    who = " ".join(str(demo[k]) for k in ("age", "gender", "occupation", "city", "country") if k in demo)
    if who:
        parts.append(f"seen by a {who}")
    parts += [str(i) for i in (demo.get("interests") or [])[:3]]
    parts += [str(e["text"]) for e in (data.get("elements") or [])[:6]]
    if data.get("captions"):
        parts.append(_words(data["captions"][0], 25))  # copies the best caption, as naive rewriters do
    return ", ".join(p for p in parts if p)


def _key(body: dict[str, Any]) -> str:
    from vptt.core.llm_cache import request_key

    return request_key(body)


class _State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.latency = args.latency_ms / 1000.0
        self.faults: list[str] = [f for f in (args.faults or "").split(",") if f]
        self.retry_after = args.retry_after
        self.slow_s = args.slow_s
        self.log_path = Path(args.log) if args.log else None
        self.log_bodies = args.log_bodies
        self.counts: dict[str, int] = {"requests": 0, "in_flight": 0, "max_in_flight": 0}
        self.log = open(self.log_path, "a", buffering=1) if self.log_path else None  # noqa: SIM115

    def record(self, entry: dict[str, Any]) -> None:
        self.counts["requests"] += 1
        self.counts[str(entry["status"])] = self.counts.get(str(entry["status"]), 0) + 1
        if self.log is not None:
            self.log.write(json.dumps(entry) + "\n")


async def _chat(request: Any) -> Any:
    from aiohttp import web

    st: _State = request.app["state"]
    body = json.loads(await request.read())
    fault = st.faults.pop(0) if st.faults else None
    entry: dict[str, Any] = {"t": time.time(), "key": _key(body) if st.log is not None else None, "fault": fault,
                             "model": body.get("model")}
    if st.log_bodies:
        entry["body"] = body
    if fault in ("429", "500", "401"):
        entry["status"] = int(fault)
        st.record(entry)
        headers = {"Retry-After": str(st.retry_after)} if fault == "429" else {}
        return web.json_response({"error": {"message": f"injected {fault}"}}, status=int(fault), headers=headers)
    st.counts["in_flight"] += 1
    st.counts["max_in_flight"] = max(st.counts["max_in_flight"], st.counts["in_flight"])
    try:
        await asyncio.sleep(st.slow_s if fault == "slow" else st.latency)
    finally:
        st.counts["in_flight"] -= 1
    entry["status"] = 200
    st.record(entry)
    if fault == "malformed":
        return web.Response(text="{this is not json", content_type="application/json")
    text = reply_for(body)
    choices = [] if fault == "empty" else [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": text}}]
    words = sum(len(str(m["content"]).split()) for m in body["messages"])
    return web.json_response({"id": f"chatcmpl-{st.counts['requests']}", "object": "chat.completion",
                              "created": int(time.time()), "model": body.get("model", "fake"), "choices": choices,
                              "usage": {"prompt_tokens": words, "completion_tokens": len(text.split()),
                                        "total_tokens": words + len(text.split())}})


async def _control(request: Any) -> Any:
    from aiohttp import web

    st: _State = request.app["state"]
    cfg = json.loads(await request.read())
    st.faults.extend(str(f) for f in cfg.get("faults", []))
    st.retry_after = cfg.get("retry_after", st.retry_after)
    st.slow_s = float(cfg.get("slow_s", st.slow_s))
    if "latency_ms" in cfg:
        st.latency = float(cfg["latency_ms"]) / 1000.0
    return web.json_response({"faults": st.faults})


async def _stats(request: Any) -> Any:
    from aiohttp import web

    return web.json_response(request.app["state"].counts)


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; prints ``PORT <n>`` when listening."""
    from aiohttp import web

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--faults", default="")
    ap.add_argument("--retry-after", default="1")
    ap.add_argument("--slow-s", type=float, default=5.0)
    ap.add_argument("--log", default=None)
    ap.add_argument("--log-bodies", action="store_true")
    args = ap.parse_args(argv)
    app = web.Application(client_max_size=64 * 2**20)
    app["state"] = _State(args)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/control", _control)
    app.router.add_get("/stats", _stats)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    try:  # the fastest loop available: the server must not be what a benchmark measures
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


class FakeLLMServer:
    """The server as a subprocess: ``with FakeLLMServer(tmp_path, latency_ms=50) as srv: srv.base_url``."""

    def __init__(self, workdir: str | os.PathLike[str], *, latency_ms: float = 0.0, faults: str = "",
                 log_bodies: bool = True, retry_after: str = "1", log: bool = True) -> None:
        self.workdir = Path(workdir)
        self.log = self.workdir / f"llm-requests-{os.getpid()}-{id(self)}.jsonl"
        self.args = ["--latency-ms", str(latency_ms), "--retry-after", retry_after]
        self.args += ["--log", str(self.log)] if log else []
        self.args += ["--faults", faults] if faults else []
        self.args += ["--log-bodies"] if log_bodies else []
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 30.0) -> FakeLLMServer:
        root = Path(__file__).resolve().parent.parent
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fake_llm_server", *self.args], cwd=root,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = re.match(r"PORT (\d+)", line or "")
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake LLM server exited: {line}{self.proc.stdout.read()}")
        self.stop()
        raise RuntimeError("fake LLM server did not start")

    def stop(self) -> None:
        from tests.procs import stop

        if self.proc is not None:
            stop(self.proc, 10)
        self.proc = None

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def control(self, **cfg: Any) -> Any:
        """Queue faults / change latency (see the module docstring)."""
        return self._post("/control", cfg)

    def stats(self) -> dict[str, int]:
        """Request counts by status (``requests``: all)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.port}/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def requests(self) -> list[dict[str, Any]]:
        """Every logged request so far."""
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.strip()]

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    main()
