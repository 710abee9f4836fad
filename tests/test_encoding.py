"""The encoding engine: worker processes (and Ray actors) embed exactly like one process, threads are sized
to the cores, a dead worker is a clear error, and devices are checked before any work starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from vptt import ConfigError, EmbedderError, VPTTSettings
from vptt.core.devices import check_device, threads_per_worker
from vptt.stores.embedders import MiniLMEmbedder
from vptt.stores.encoding import PooledEmbedder, chunk_texts

TEXTS = [f"caption {i}: " + "a harbour at dawn with fishing boats " * (i % 9) for i in range(60)] + [""]


def test_chunks_cover_every_text_once_longest_first() -> None:
    texts = ["x" * n for n in (5, 50, 1, 20, 20, 7)]
    chunks = chunk_texts(texts, parts=3, min_chunk=1)
    assert sorted(i for c in chunks for i in c) == list(range(6)) and len(chunks) == 3
    assert chunks[0][0] == 1 and [len(texts[i]) for c in chunks for i in c] == sorted(map(len, texts))[::-1]
    assert chunk_texts(texts, parts=8, min_chunk=4) == [[1, 3, 4, 5, 0, 2]]  # too few texts to split
    assert chunk_texts([], parts=2) == []


def test_threads_fill_the_cores_without_oversubscribing() -> None:
    assert [threads_per_worker(w, cores=16) for w in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    assert PooledEmbedder(MiniLMEmbedder(), workers=2).threads * 2 <= max(2, os.cpu_count() or 1)
    with pytest.raises(ConfigError):
        PooledEmbedder(MiniLMEmbedder(), workers=2, pool="threads")  # type: ignore[arg-type]


def test_process_pool_equals_one_process_and_survives_a_dead_worker(minilm: MiniLMEmbedder) -> None:
    ref = minilm.embed(TEXTS)
    pool = PooledEmbedder(minilm, workers=2, threads=1, min_chunk=4)
    try:
        got = pool.embed(TEXTS)
        assert pool.name == minilm.name and got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-5  # same engine, other thread count
        pids = pool.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
        os.kill(pids[0], signal.SIGKILL)
        with pytest.raises(EmbedderError, match="worker process died"):
            pool.embed(TEXTS)
        assert np.abs(pool.embed(TEXTS[:3]) - ref[:3]).max() < 1e-5  # restarted on the next call
    finally:
        pool.close()


def test_settings_build_a_pooled_cached_embedder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vptt.stores.embedding_cache import CachedEmbedder
    from vptt.stores.factory import build_embedder

    emb = build_embedder(VPTTSettings(data_dir=tmp_path, embed_workers=2, embedder_backend="torch"))
    assert isinstance(emb, CachedEmbedder) and isinstance(emb.inner, PooledEmbedder)
    assert emb.inner.workers == 2 and emb.inner.inner.backend == "torch"
    monkeypatch.delenv("VPTT_MODELS_DIR")
    single = build_embedder(VPTTSettings(data_dir=tmp_path, embedding_cache=False, embed_threads=1))
    assert isinstance(single, MiniLMEmbedder) and single.threads == 1 and single.onnx_dir == tmp_path / "models"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_cuda_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        check_device("cuda")
    monkeypatch.setenv("VPTT_DEVICE", "cuda:1")
    with pytest.raises(ConfigError, match="VPTT_DEVICE='cuda:1'.*CUDA is not available.*--device cpu"):
        VPTTSettings()
    with pytest.raises(ConfigError, match="CUDA is not available"):
        MiniLMEmbedder(device="cuda")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message shown without CUDA")
def test_cli_device_without_cuda_is_one_readable_line(tmp_path: Path) -> None:
    env = {**os.environ, "VPTT_DATA_DIR": str(tmp_path), "VPTT_DEVICE": "cuda"}
    proc = subprocess.run([str(Path(sys.executable).parent / "vptt"), "personas", "list"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "CUDA is not available" in proc.stderr


@pytest.mark.slow  # a Ray start and two model loads: about a minute here
def test_ray_actors_embed_like_one_process(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    from vptt.sdk._ray_backend import isolated_argv, isolation_available

    ok, why = isolation_available()
    if not ok:
        pytest.skip(f"cannot isolate Ray from the network here: {why}")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    child = isolated_argv([sys.executable, "-m", "tests.test_encoding", str(tmp_path)])
    proc = subprocess.run(child, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    out = json.loads((tmp_path / "ray.json").read_text())
    got = np.asarray(out["vectors"], dtype=np.float32)
    assert len(set(out["pids"])) == 2 and os.getpid() not in out["pids"]
    assert np.abs(got - minilm.embed(TEXTS)).max() < 1e-5


def _ray_child(work: Path) -> None:
    """Inside the network namespace: 2 Ray actors embed TEXTS."""
    with PooledEmbedder(MiniLMEmbedder(backend="torch"), workers=2, pool="ray", threads=1, min_chunk=4) as pool:
        vectors = pool.embed(TEXTS)
        (work / "ray.json").write_text(json.dumps({"pids": pool.worker_pids(), "vectors": vectors.tolist()}))


if __name__ == "__main__":
    _ray_child(Path(sys.argv[1]))
