"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests that run other processes (``vptt serve``,
``langgraph dev``, the CLI): chat completions (streamed or not) and image generations.

Chat: the reply is composed from the request's persona memory block, like a faithful f_compose would do it
offline: ``"{query}, {e1}, {e2}, ..."`` (first 8 elements); a follow-up (an assistant turn in the history)
answers ``"{previous prompt}, {request}, {new elements}"``. Streams word by word with ``--delay`` seconds
between words. Images: a solid 64x64 PNG whose colour comes from the prompt; the first ``--fail-images``
requests fail with HTTP 400 (a non-retryable provider error). ``GET /stats`` counts requests.

Run: ``python -m tests.fake_openai [--port 0] [--delay 0.02] [--fail-images N]``; it prints ``PORT <n>``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_BLOCK = re.compile(r"<persona_memory>\s*(\{.*?\})\s*</persona_memory>", re.DOTALL)
_REQUEST = re.compile(r'following this request: ("(?:[^"\\]|\\.)*")')


def compose_reply(messages: list[dict[str, Any]]) -> str:
    """The prompt a faithful composer would write from the memory block(s) of ``messages``."""
    user = [m for m in messages if m.get("role") == "user"]
    data = json.loads(_BLOCK.search(user[-1]["content"]).group(1)) if user else {}
    elements = [e["text"] for e in data.get("elements", [])][:8]
    prev = [m["content"] for m in messages if m.get("role") == "assistant"]
    if prev:
        req = _REQUEST.search(user[-1]["content"])
        request = json.loads(req.group(1)) if req else data.get("query", "")
        new = [e for e in elements if e.lower() not in prev[-1].lower()]
        return ", ".join([prev[-1], request, *new])
    return ", ".join([data.get("query", "a picture"), *elements])


def _png(prompt: str) -> str:
    from PIL import Image

    h = hashlib.sha256(prompt.encode()).digest()
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (h[0], h[1], h[2])).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._json(200, dict(self.server.stats))

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        with self.server.lock:
            self.server.stats[self.path] = self.server.stats.get(self.path, 0) + 1
            self.server.auth[self.path] = self.headers.get("authorization", "")
        if self.path.endswith("/chat/completions"):
            self._chat(body)
        elif self.path.endswith("/images/generations"):
            self._image(body)
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def _chat(self, body: dict[str, Any]) -> None:
        text = compose_reply(body.get("messages", []))
        if not body.get("stream"):
            self._json(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body.get("model"),
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for i, word in enumerate(text.split(" ")):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": body.get("model"),
                     "choices": [{"index": 0, "delta": {"content": word if i == 0 else " " + word},
                                  "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(self.server.delay)
        end = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": body.get("model"),
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()

    def _image(self, body: dict[str, Any]) -> None:
        with self.server.lock:
            fail = self.server.fail_images > 0
            self.server.fail_images -= int(fail)
        if fail:
            self._json(400, {"error": {"message": "injected failure", "type": "invalid_request_error"}})
            return
        self._json(200, {"created": 0, "data": [{"b64_json": _png(body.get("prompt", ""))}]})


def serve(port: int = 0, delay: float = 0.02, fail_images: int = 0) -> ThreadingHTTPServer:
    """Start the server in a daemon thread and return it (``server.server_address[1]`` is the port)."""
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    srv.delay, srv.fail_images, srv.stats, srv.lock = delay, fail_images, {}, threading.Lock()
    srv.auth = {}
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.02)
    ap.add_argument("--fail-images", type=int, default=0)
    args = ap.parse_args()
    srv = serve(args.port, args.delay, args.fail_images)
    print(f"PORT {srv.server_address[1]}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
