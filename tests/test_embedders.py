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


@pytest.fixture(scope="module")
def st_reference(minilm_torch: MiniLMEmbedder) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_torch.model_path, device="cpu").encode(TEXTS, normalize_embeddings=True)


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_minilm_matches_sentence_transformers(engine: str, minilm: MiniLMEmbedder, minilm_torch: MiniLMEmbedder,
                                              st_reference: np.ndarray) -> None:
    emb = minilm_torch if engine == "torch" else minilm
    ours = emb.embed(TEXTS)
    assert emb.engine == engine  # the default (auto) runs the ONNX export on CPU
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    assert np.abs(ours - st_reference).max() < 1e-4  # the bound; about 2e-7 is seen here
    assert minilm.name == minilm_torch.name  # fp32 engines agree, so they share cached vectors


def test_onnx_export_is_built_once_under_the_models_dir(minilm: MiniLMEmbedder) -> None:
    from vptt.stores.model_files import model_digest
    from vptt.stores.onnx_export import FP32_TOLERANCE, build_info, export_dir

    minilm.embed(["warm"])
    folder = export_dir(minilm.model_path, minilm.onnx_dir)
    assert folder.parent == minilm.onnx_dir and model_digest(minilm.model_path)[:16] in folder.name
    onnx_file = folder / "model.onnx"
    stamp = onnx_file.stat().st_mtime_ns
    info = build_info(minilm.model_path, minilm.onnx_dir)
    assert info["fp32"]["fused"] and info["fp32"]["max_abs_diff_vs_torch"] <= FP32_TOLERANCE
    again = MiniLMEmbedder(onnx_dir=minilm.onnx_dir)
    assert np.allclose(again.embed(TEXTS[:2]), minilm.embed(TEXTS[:2]), atol=1e-6)
    assert onnx_file.stat().st_mtime_ns == stamp and again.engine == "onnx"


def test_int8_is_close_but_has_its_own_identity(minilm: MiniLMEmbedder, st_reference: np.ndarray) -> None:
    from vptt.stores.onnx_export import build_info

    q8 = MiniLMEmbedder(backend="onnx-int8", onnx_dir=minilm.onnx_dir)
    got = q8.embed(TEXTS)
    assert q8.engine == "onnx-int8" and q8.name == minilm.name + "+int8"
    cos = (got * st_reference).sum(axis=1)
    assert cos.min() > 0.95 and 1e-4 < np.abs(got - st_reference).max() < 0.1  # approximate, not broken
    assert 0 < build_info(minilm.model_path, minilm.onnx_dir)["int8"]["max_abs_diff_vs_fp32"] < 0.1


def test_backend_and_device_are_checked_up_front() -> None:
    from vptt import ConfigError

    with pytest.raises(ConfigError, match="unknown MiniLM backend"):
        MiniLMEmbedder(backend="tensorrt")
    with pytest.raises(ConfigError, match="unknown device"):
        MiniLMEmbedder(device="tpu")


def test_minilm_pickles_without_its_model(minilm: MiniLMEmbedder) -> None:
    import pickle

    minilm.embed(["warm"])
    clone = pickle.loads(pickle.dumps(minilm.for_worker(1)))
    assert clone._st is None and clone.threads == 1 and clone.name == minilm.name
    assert np.allclose(clone.embed(TEXTS[:2]), minilm.embed(TEXTS[:2]), atol=1e-5)


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
