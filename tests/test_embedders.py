"""Embedders: real MiniLM against sentence-transformers, OpenAI-compatible through respx, the disk cache."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import respx

from vptt import EmbedderError, ProviderError
from vptt.stores.embedders import Embedder, MiniLMEmbedder, OpenAIEmbedder
from vptt.stores.embedding_cache import CachedEmbedder

TEXTS = ["A bowl of ramen under paper lanterns.", "Surfers at sunset.", "",
         "A very long caption " * 40]


def test_minilm_matches_sentence_transformers(minilm: MiniLMEmbedder) -> None:
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(minilm.model_path, device="cpu").encode(TEXTS, normalize_embeddings=True)
    ours = minilm.embed(TEXTS)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    assert np.allclose(ours, ref, atol=2e-5)


def test_minilm_batch_order_is_restored(minilm: MiniLMEmbedder) -> None:
    one_by_one = np.stack([minilm.embed_one(t) for t in TEXTS])
    assert np.allclose(minilm.embed(TEXTS), one_by_one, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)


def _embedding_reply(request: httpx.Request, dim: int = 4) -> httpx.Response:
    body = json.loads(request.content)
    data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0] + [0.0] * (dim - 2)}
            for i, t in enumerate(body["input"])]
    data.reverse()  # out of order on purpose: the client must sort by index
    return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"],
                                     "usage": {"prompt_tokens": 1, "total_tokens": 1}})


@respx.mock
def test_openai_embedder_through_respx() -> None:
    route = respx.post("http://testserver/v1/embeddings").mock(side_effect=_embedding_reply)
    emb = OpenAIEmbedder("text-embedding-3-small", dim=4, base_url="http://testserver/v1", api_key="sk-secret",
                         send_dimensions=True, http_client=httpx.Client(), batch_size=2)
    out = emb.embed(["a", "bbb", "cc"])
    assert route.call_count == 2
    sent = json.loads(route.calls[0].request.content)
    assert sent["dimensions"] == 4 and sent["model"] == "text-embedding-3-small"
    expected = np.array([[1, 1, 0, 0], [3, 1, 0, 0], [2, 1, 0, 0]], dtype=float)
    assert np.allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True))
    assert "sk-secret" not in repr(emb)


@respx.mock
def test_openai_embedder_errors_are_typed() -> None:
    respx.post("http://testserver/v1/embeddings").mock(return_value=httpx.Response(500, json={"error": "x"}))
    emb = OpenAIEmbedder(dim=4, base_url="http://testserver/v1", api_key="k", http_client=httpx.Client(),
                         max_retries=0)
    with pytest.raises(ProviderError, match="HTTP 500"):
        emb.embed(["a"])
    respx.post("http://testserver/v1/embeddings").mock(side_effect=lambda r: _embedding_reply(r, dim=6))
    with pytest.raises(EmbedderError, match="6-d vectors"):
        emb.embed(["a"])


class Counter(Embedder):
    name, dim = "counter", 3

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([[len(t), 1.0, 2.0] for t in texts])


def test_cache_never_reembeds_and_survives_reopen(tmp_path) -> None:
    inner = Counter()
    cache = CachedEmbedder(inner, tmp_path / "c.sqlite")
    first = cache.embed(["a", "bb", "a"])
    assert inner.calls == [["a", "bb"]] and cache.misses == 2 and cache.hits == 1
    again = cache.embed(["bb", "ccc"])
    assert inner.calls[-1] == ["ccc"] and np.allclose(again[0], first[1])
    cache.close()
    inner2 = Counter()
    reopened = CachedEmbedder(inner2, tmp_path / "c.sqlite")
    assert np.allclose(reopened.embed(["a", "bb", "ccc"])[2], again[1]) and inner2.calls == []


def test_cache_is_keyed_by_model(tmp_path) -> None:
    a, b = Counter(), Counter()
    b.name = "other"
    CachedEmbedder(a, tmp_path / "c.sqlite").embed(["x"])
    CachedEmbedder(b, tmp_path / "c.sqlite").embed(["x"])
    assert a.calls == [["x"]] and b.calls == [["x"]]
