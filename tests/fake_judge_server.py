"""A fake OpenAI-compatible vision judge: a real HTTP server process on 127.0.0.1 for end-to-end tests.

``python -m tests.fake_judge_server LOG`` binds a free port, prints it on stdout, and answers every
``POST /v1/chat/completions`` with one ``X: Score=S - reason`` line per blind label named in the user prompt
("labeled A through E"): label A scores 1.0, B 2.0, C 3.0, ... (so a test can undo the blind shuffle and
check every score). Each request is appended to LOG as one JSON line: the model, the user text, and the
size of every image sent (decoded from its data URL).
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

LABELS = "ABCDE"


def score_for(label: str) -> float:
    """The fake judge's score of a blind label: A -> 1.0, B -> 2.0, ..."""
    return float(LABELS.index(label) + 1)


def reply(user_text: str) -> str:
    last = re.search(r"labeled A through ([A-E])", user_text)
    labels = LABELS[: LABELS.index(last.group(1)) + 1] if last else "AB"
    return "\n".join(f"{lab}: Score={score_for(lab):.1f} - fake reason for {lab}" for lab in labels)


class Handler(BaseHTTPRequestHandler):
    log_path: Path

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = body["messages"][1]["content"]
        text = content[0]["text"]
        sizes = []
        for part in content[1:]:
            data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
            with Image.open(io.BytesIO(data)) as im:
                sizes.append(list(im.size))
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps({"model": body["model"], "text": text, "images": sizes,
                                 "auth": self.headers.get("Authorization", "")[:10]}) + "\n")
        out = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": reply(text)}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


def main() -> None:
    Handler.log_path = Path(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
