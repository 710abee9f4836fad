"""Issue 12: an embedder's identity follows its weights (no cache or store mixes two models), and a damaged
embedding cache is set aside and rebuilt with a warning."""

from __future__ import annotations

import os
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_persona
from vptt.core.errors import StoreError
from vptt.stores.embedders import Embedder, MiniLMEmbedder
from vptt.stores.embedding_cache import CacheCorruptWarning, CachedEmbedder


def _variant(src: Path, dst: Path, *, scale: float | None = None, pooling: str | None = None) -> Path:
    """A copy of the model folder (big files linked) with scaled weights or another pooling config."""
    for path in src.rglob("*"):
        if path.is_dir():
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "model.safetensors" and scale is not None:
            from safetensors.numpy import load_file, save_file

            tensors = load_file(str(path))
            tensors["encoder.layer.5.output.dense.weight"] = tensors["encoder.layer.5.output.dense.weight"] * scale
            save_file(tensors, str(target), metadata={"format": "pt"})
        elif path.parent.name == "1_Pooling" and pooling is not None:
            target.write_text(pooling)
        else:
            os.symlink(path, target)
    return dst


@pytest.fixture(scope="module")
def altered(minilm_torch: MiniLMEmbedder, tmp_path_factory: pytest.TempPathFactory) -> MiniLMEmbedder:
    """all-MiniLM-L6-v2 with one weight matrix halved: a second model of the same shape and dimension."""
    folder = _variant(Path(minilm_torch.model_path), tmp_path_factory.mktemp("altered"), scale=0.5)
    return MiniLMEmbedder(folder, backend="torch")


def test_identity_changes_with_weights_config_and_int8(minilm_torch: MiniLMEmbedder, altered: MiniLMEmbedder,
                                                       tmp_path: Path) -> None:
    assert altered.dim == minilm_torch.dim == 384
    assert altered.name != minilm_torch.name  # was "minilm:all-MiniLM-L6-v2" for both
    cls = _variant(Path(minilm_torch.model_path), tmp_path / "cls", pooling=(
        '{"word_embedding_dimension": 384, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}'))
    assert MiniLMEmbedder(cls, backend="torch").name not in (minilm_torch.name, altered.name)
    assert MiniLMEmbedder(backend="onnx-int8").name == minilm_torch.name + "+int8"
    assert MiniLMEmbedder(backend="onnx").name == minilm_torch.name


def test_a_second_model_never_reads_the_first_models_cached_vectors(minilm_torch: MiniLMEmbedder,
                                                                     altered: MiniLMEmbedder,
                                                                     tmp_path: Path) -> None:
    text = ["A bowl of ramen steaming under paper lanterns."]
    first = CachedEmbedder(minilm_torch, tmp_path / "c.sqlite").embed(text)
    second = CachedEmbedder(altered, tmp_path / "c.sqlite")
    got = second.embed(text)
    truth = altered.embed(text)
    assert second.misses == 1 and np.allclose(got, truth, atol=1e-6)
    assert float(first[0] @ truth[0]) < 0.999  # the two models really disagree
    again = CachedEmbedder(minilm_torch, tmp_path / "c.sqlite").embed(text)  # no poisoning either way
    assert np.allclose(again, first, atol=1e-6)


def test_a_store_built_with_one_model_refuses_another(minilm_torch: MiniLMEmbedder, altered: MiniLMEmbedder,
                                                      tmp_path: Path) -> None:
    from vptt.stores.chroma import ChromaPersonaStore

    persona = make_persona("alice", ["A wooden boat on a misty lake at dawn."])
    ChromaPersonaStore(minilm_torch, path=tmp_path / "db").upsert(persona)
    other = ChromaPersonaStore(altered, path=tmp_path / "db")
    with pytest.raises(StoreError, match="embedded with"):
        other.embedded("alice")


class Ones(Embedder):
    name, dim = "ones", 3

    def __init__(self) -> None:
        self.calls = 0

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        return np.ones((len(texts), 3))


def test_a_file_that_is_not_a_database_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.warns(CacheCorruptWarning, match="moved it to embeddings.sqlite.corrupt-"):
        cache = CachedEmbedder(Ones(), path)
    (aside,) = cache.set_aside
    assert aside.read_bytes().startswith(b"this is not sqlite")  # kept, not deleted
    assert cache.embed(["a", "b"]).shape == (2, 3) and cache.inner.calls == 2
    cache.close()
    reopened = CachedEmbedder(Ones(), path)  # the rebuilt cache is whole and serves the vectors
    assert reopened.embed(["a"]).shape == (1, 3) and reopened.inner.calls == 0 and reopened.hits == 1


def test_damaged_pages_found_while_in_use_are_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite"
    cache = CachedEmbedder(Ones(), path)
    cache.embed([f"text {i} " * 40 for i in range(300)])  # several pages of rows
    cache.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    half = len(data) // 2
    data[half:-4096] = os.urandom(len(data) - 4096 - half)  # header and first rows intact, the rest wrecked
    path.write_bytes(bytes(data))
    cache = CachedEmbedder(Ones(), path)
    assert cache.set_aside == []  # opening does not read every page
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = cache.embed([f"text {i} " * 40 for i in range(300)] + ["new text"])
    assert out.shape == (301, 3) and np.allclose(out, 1 / np.sqrt(3))
    assert any(issubclass(w.category, CacheCorruptWarning) for w in seen) and len(cache.set_aside) == 1
    assert cache.set_aside[0].exists() and path.exists()
    assert cache.embed(["new text"]).shape == (1, 3) and cache.hits >= 1  # the fresh cache works
