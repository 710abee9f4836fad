"""The ingest pipeline: streamed files, batches, the pipelined writer, engines, `vptt ingest` and `vptt store`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT, make_persona
from tests.store_helpers import Hash384, expected_vectors, n_vectors
from vptt import PersonaValidationError, dump_personas
from vptt.sdk.cli.main import app
from vptt.stores.engine import LocalEngine
from vptt.stores.ingest import validated_personas
from vptt.stores.memory import InMemoryPersonaStore

runner = CliRunner()


def bank(n: int, posts: int = 3) -> list:
    """``n`` personas sharing element vocabulary (and one caption), as a real bank does."""
    return [make_persona(f"p{k:03d}", ["A shared caption about golden hour light."]
                         + [f"Persona {k} post {i} at a night market." for i in range(posts - 1)]) for k in range(n)]


def same_store(a, b) -> None:
    assert a.list_ids() == b.list_ids()
    for pid in a.list_ids():
        ea, eb = a.embedded(pid), b.embedded(pid)
        assert ea.persona == eb.persona and np.array_equal(ea.caption_embs, eb.caption_embs)
        assert ea.elements.texts == eb.elements.texts and np.array_equal(ea.elements.embs, eb.elements.embs)
        assert np.array_equal(ea.card_emb, eb.card_emb)


def test_large_files_are_validated_first_then_streamed(tmp_path) -> None:
    personas = bank(5)
    f = tmp_path / "bank.jsonl"
    dump_personas(personas, f)
    small = validated_personas(f)
    streamed = validated_personas(f, memory_limit=10)
    assert isinstance(small, list) and not isinstance(streamed, list) and len(streamed) == 5
    assert list(streamed) == personas == list(streamed)  # re-readable
    with open(f, "a") as fh:
        fh.write('{"persona_id": "bad", "posts": [{"post_id": "1", "caption": ""}]}\n')
    with pytest.raises(PersonaValidationError, match="bank.jsonl:6"):
        validated_personas(f, memory_limit=10)  # raises before returning anything to write
    skipped: list = []
    assert len(validated_personas(f, memory_limit=10, on_error="skip", skipped=skipped)) == 5
    assert [p.line for p in skipped] == [6]


@pytest.mark.parametrize("batch_texts", [1, 7, 10_000])
def test_batching_and_pipelining_change_nothing_stored(batch_texts) -> None:
    personas = bank(12)
    reference = InMemoryPersonaStore(Hash384())
    reference.upsert_many(personas, pipeline=False, batch_texts=10_000)
    store = InMemoryPersonaStore(Hash384())
    results = store.upsert_many(iter(personas), batch_texts=batch_texts)  # any iterable, consumed once
    assert [r.persona_id for r in results] == [p.persona_id for p in personas]
    same_store(store, reference)
    unique = len({t for p in personas for post in p.posts for t in [post.caption, *sum(post.elements.values(), [])]})
    assert sum(r.texts_embedded for r in results) == unique + len(personas)  # + one card each
    assert n_vectors(store) == expected_vectors(store) == unique


class _SlowEngine:
    """Records when each chunk is embedded; each takes a while."""

    def __init__(self, inner, log) -> None:
        self.inner, self.name, self.dim, self.log = inner, inner.name, inner.dim, log

    def embed_stream(self, chunks):
        for chunk in chunks:
            self.log.append(("embed", time.monotonic()))
            time.sleep(0.05)
            yield self.inner.embed(chunk)


def test_next_batch_embeds_while_the_previous_one_is_written() -> None:
    log: list = []
    store = InMemoryPersonaStore(Hash384())
    write = store._put_vectors

    def slow_write(vectors):
        start = time.monotonic()
        time.sleep(0.3)
        write(vectors)
        log.append(("write", start, time.monotonic(), threading.current_thread().name))

    store._put_vectors = slow_write
    store.upsert_many(bank(8), batch_texts=4, engine=_SlowEngine(Hash384(), log))
    writes = [e for e in log if e[0] == "write"]
    embeds = [e[1] for e in log if e[0] == "embed"]
    assert writes and all(w[3] == "vptt-store-writer" for w in writes)
    assert any(w[1] < t < w[2] for w in writes for t in embeds)  # embedding went on during a write


def test_engine_must_embed_with_the_store_embedder() -> None:
    from vptt.core.errors import StoreError

    class Other(Hash384):
        name = "other"

    with pytest.raises(StoreError, match="embeds with 'other'"):
        InMemoryPersonaStore(Hash384()).upsert_many(bank(1), engine=LocalEngine(Other()))


def flat(result) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def cli_env(tmp_path):
    return {"VPTT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}


def test_store_check_repair_and_migrate_cli(cli_env, tmp_path, embedder, two_personas) -> None:
    import chromadb
    from chromadb.config import Settings

    from vptt.stores.chroma_legacy import write_legacy

    chroma_dir = tmp_path / "data" / "chroma"
    client = chromadb.PersistentClient(path=str(chroma_dir), settings=Settings(anonymized_telemetry=False))
    write_legacy(client, "vptt", two_personas, embedder)
    r = runner.invoke(app, ["personas", "list"], env=cli_env)
    assert r.exit_code == 1 and "vptt store migrate" in flat(r)
    r = runner.invoke(app, ["store", "check"], env=cli_env)
    assert r.exit_code == 1 and "old per-persona layout" in flat(r)
    r = runner.invoke(app, ["store", "migrate"], env=cli_env)
    assert r.exit_code == 0 and "migrated 2 persona(s)" in flat(r) and "re-embedded 0 text(s)" in flat(r)
    r = runner.invoke(app, ["personas", "list", "--json"], env=cli_env)
    assert json.loads(r.output) == ["alice", "bob"]
    f = tmp_path / "p.jsonl"
    dump_personas(two_personas, f)
    r = runner.invoke(app, ["ingest", str(f), "--device", "cpu", "--threads", "1", "--batch-texts", "8"], env=cli_env)
    assert r.exit_code == 0 and "unchanged 2" in flat(r) and "embedded 0 texts" in flat(r)
    r = runner.invoke(app, ["store", "check"], env=cli_env)
    assert r.exit_code == 0 and flat(r).endswith("ok")
    from vptt import VPTTSettings
    from vptt.stores.factory import build_store

    store = build_store(VPTTSettings(data_dir=tmp_path / "data"), embedder)
    store._put_vectors({"f" * 32: np.ones(384, np.float32)})
    del store
    r = runner.invoke(app, ["store", "check"], env=cli_env)
    assert r.exit_code == 1 and "1 orphan vector(s)" in flat(r)
    r = runner.invoke(app, ["store", "check", "--repair"], env=cli_env)
    assert r.exit_code == 0 and "removed 1 orphan vector(s)" in flat(r)
    r = runner.invoke(app, ["ingest", str(ROOT / "examples" / "data" / "personas.jsonl"), "--backend", "nope"],
                      env=cli_env)
    assert r.exit_code != 0 and "--backend must be local or ray" in flat(r)


_RAY_CHILD = """
import json, os, subprocess, sys
vptt = os.path.join(os.path.dirname(sys.executable), "vptt")
proc = subprocess.run([vptt, "--data-dir", {data!r}, "ingest", {file!r}, "--backend", "ray", "--workers", "2"],
                      capture_output=True, text=True)
print(json.dumps({{"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr[-3000:]}}))
"""


@pytest.mark.slow
def test_ray_ingest_equals_local(tmp_path, two_personas, embedder) -> None:
    """`vptt ingest --backend ray --workers 2` (in a private network namespace) stores what a local ingest does."""
    from vptt import VPTTSettings
    from vptt.sdk._ray_backend import isolated_argv, isolation_available
    from vptt.stores.factory import build_store

    ok, why = isolation_available()
    if not ok:
        pytest.skip(f"cannot isolate Ray from the network here: {why}")
    f = tmp_path / "p.jsonl"
    dump_personas(two_personas, f)
    child = _RAY_CHILD.format(data=str(tmp_path / "ray"), file=str(f))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.run(isolated_argv([sys.executable, "-c", child]), env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0, out["err"]
    assert "created 2" in out["out"].replace("\n", " ")
    ray_store = build_store(VPTTSettings(data_dir=Path(tmp_path / "ray")), embedder)
    local = InMemoryPersonaStore(embedder)
    local.upsert_many(two_personas)
    assert ray_store.list_ids() == local.list_ids()
    for pid in local.list_ids():
        a, b = ray_store.embedded(pid), local.embedded(pid)
        assert a.persona == b.persona and a.elements.texts == b.elements.texts
        assert np.allclose(a.caption_embs, b.caption_embs, atol=1e-5)
        assert np.allclose(a.elements.embs, b.elements.embs, atol=1e-5)
    assert ray_store.check().ok


def test_ray_engine_refuses_workers_that_cannot_fit() -> None:
    """Actors that do not fit a fixed local Ray instance would wait forever: a clear error instead."""
    pytest.importorskip("ray")
    from vptt.core.errors import ConfigError
    from vptt.sdk.ray_ingest import _check_fits

    _check_fits({"CPU": 3.0}, 2, 1, 0.0, started=False)           # fits
    _check_fits({"CPU": 4.0, "GPU": 1.0}, 4, 1, 0.25, started=True)  # GPUs shared
    with pytest.raises(ConfigError, match=r"need 2 CPU\(s\).*has 1 CPU\(s\).*already runs a Ray instance"):
        _check_fits({"CPU": 1.0}, 2, 1, 0.0, started=False)
    with pytest.raises(ConfigError, match=r"need 2 CPU\(s\) and 2 GPU\(s\).*has 4 CPU\(s\) and 1 GPU"):
        _check_fits({"CPU": 4.0, "GPU": 1.0}, 2, 1, 1.0, started=True)
