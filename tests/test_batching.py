"""BatchingEmbedder: concurrent callers share inner calls and each gets exactly its own rows."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.conftest import HashEmbedderBase
from vptt.stores.batching import BatchingEmbedder


class Slow(HashEmbedderBase):
    """The hashing embedder, 20 ms per call, recording each batch."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        time.sleep(0.02)
        if self.fail_on in texts:
            raise RuntimeError("inner failed")
        return super()._embed(texts)


def test_concurrent_calls_share_batches_and_get_their_rows() -> None:
    inner = Slow()
    emb = BatchingEmbedder(inner, max_texts=8)
    texts = [f"query number {i} about lakes" for i in range(24)]
    out: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(texts))

    def call(i: int) -> None:
        barrier.wait()
        out[i] = emb.embed_one(texts[i])
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ref = HashEmbedderBase().embed(texts)
    assert all(np.allclose(out[i], ref[i]) for i in range(len(texts)))  # nobody got another caller's row
    assert emb.requests == 24 and emb.calls == len(inner.batches) < 24  # shared forwards
    assert max(len(b) for b in inner.batches) <= 8 and sorted(t for b in inner.batches for t in b) == sorted(texts)
    assert emb.embed([]).shape == (0, emb.dim) and emb.name == inner.name


def test_an_inner_error_reaches_every_caller_of_the_batch() -> None:
    emb = BatchingEmbedder(Slow(fail_on="bad"), max_wait_ms=50)
    errors = []

    def call(text: str) -> None:
        try:
            emb.embed_one(text)
        except RuntimeError as exc:
            errors.append((text, str(exc)))
    threads = [threading.Thread(target=call, args=(t,)) for t in ("bad", "good")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(errors) == [("bad", "inner failed"), ("good", "inner failed")]  # one batch, one failure
    assert emb.embed_one("good").shape == (emb.dim,)  # and the embedder still works
    with pytest.raises(RuntimeError):
        emb.embed(["bad"])
