"""Word-trigram novelty (NV) of the VPTT score, vectorised over many prompts.

``NV = 1 - max_i |Tri(p') & Tri(c_i)| / |Tri(p')|`` over distinct lower-cased word trigrams (tokens are regex
``[\w']+``). A persona's caption trigrams are indexed once (:class:`TrigramTable`); prompts are matched in
chunks by packing (prompt, id1, id2, id3) into int64 keys and one sparse product with the caption membership.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
from scipy import sparse

from vptt.core.errors import ConfigError

_TOKEN = re.compile(r"[\w']+")
# ASCII fast path of _TOKEN: bytes other than [A-Za-z0-9_'] become spaces (\w on ASCII is [A-Za-z0-9_])
_ASCII_SEPARATORS = bytes(b if b < 128 and (chr(b).isalnum() or chr(b) in "_'") else 32 for b in range(256))
Trigram = tuple[str, str, str]
_CHUNK = 4096  # prompts per vectorised trigram chunk


def tokens(text: str) -> list[str]:
    """Tokens of the lower-cased text, regex ``[\\w']+`` (an equivalent bytes fast path for ASCII text)."""
    low = text.lower()
    if low.isascii():
        return low.encode("ascii").translate(_ASCII_SEPARATORS).decode("ascii").split()
    return _TOKEN.findall(low)


def trigrams(text: str) -> frozenset[Trigram]:
    """Distinct word trigrams of the lower-cased text, tokens = regex ``[\\w']+``."""
    toks = tokens(text)
    return frozenset(zip(toks, toks[1:], toks[2:]))


def novelty(prompt_text: str, captions: Sequence[str]) -> float:
    """NV = 1 - max_i |Tri(p') & Tri(c_i)| / |Tri(p')|; 1 when p' has no trigram or there is no caption."""
    tp = trigrams(prompt_text)
    if not tp:
        return 1.0
    best = max((len(tp & trigrams(c)) for c in captions), default=0)
    return 1.0 - best / len(tp)


@dataclass(frozen=True, eq=False)
class TrigramTable:
    """A persona's caption trigrams, ready for vectorised matching.

    Attributes:
        vocab: caption token -> integer id.
        tri: distinct caption trigrams as id triples (U, 3), sorted lexicographically.
        membership: sparse (U, n_captions) matrix, 1 where caption i contains trigram u.
    """

    vocab: dict[str, int]
    tri: np.ndarray
    membership: sparse.csr_matrix

    @property
    def n_captions(self) -> int:
        """Number of captions."""
        return int(self.membership.shape[1])


def build_trigram_table(captions: Sequence[str]) -> TrigramTable:
    """Tokenise the captions once into a :class:`TrigramTable`."""
    vocab: dict[str, int] = {}
    rows: dict[tuple[int, int, int], list[int]] = {}
    for i, cap in enumerate(captions):
        ids = [vocab.setdefault(w, len(vocab)) for w in tokens(cap)]
        for t in set(zip(ids, ids[1:], ids[2:])):
            rows.setdefault(t, []).append(i)
    keys = sorted(rows)
    tri = np.asarray(keys, dtype=np.int64).reshape(-1, 3)
    r = np.repeat(np.arange(len(keys)), [len(rows[k]) for k in keys])
    c = np.asarray([i for k in keys for i in rows[k]], dtype=np.int64)
    member = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(keys), len(captions)))
    return TrigramTable(vocab=vocab, tri=tri, membership=member)


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _fits(n_ids: int, n_prompts: int) -> bool:
    """Whether (prompt, id1, id2, id3) packs into one int64 key."""
    return 3 * _bits(n_ids) + _bits(n_prompts) <= 63


def _token_ids(toks: list[list[str]], vocab: dict[str, int]) -> tuple[np.ndarray, int]:
    """Flat token ids of a chunk of prompts: caption tokens keep their ids, new tokens get fresh ones."""
    flat = list(chain.from_iterable(toks))
    new = dict.fromkeys(flat).keys() - vocab.keys()  # any distinct ids do: only equality matters
    ids = {**vocab, **dict(zip(new, range(len(vocab), len(vocab) + len(new))))}
    return np.fromiter(map(ids.__getitem__, flat), dtype=np.int64, count=len(flat)), len(ids)


def _chunk_overlap(lens: np.ndarray, ids: np.ndarray, n_ids: int, table: TrigramTable
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Distinct trigram count (m,) and shared-trigram counts (m, n_captions) for one chunk of prompts."""
    tb, m = _bits(n_ids), len(lens)
    ntri = np.maximum(lens - 2, 0)
    pid = np.repeat(np.arange(m), ntri)
    pos = np.arange(int(ntri.sum())) - (np.cumsum(ntri) - ntri)[pid] + (np.cumsum(lens) - lens)[pid]
    codes = (ids[pos] << (2 * tb)) | (ids[pos + 1] << tb) | ids[pos + 2]
    keys = np.sort((pid << (3 * tb)) | codes)
    first = np.ones(keys.size, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    keys = keys[first]  # distinct (prompt, trigram) pairs
    pid, codes = keys >> (3 * tb), keys & ((1 << (3 * tb)) - 1)
    n_distinct = np.bincount(pid, minlength=m)
    caps = (table.tri[:, 0] << (2 * tb)) | (table.tri[:, 1] << tb) | table.tri[:, 2]  # sorted: fixed-width
    if caps.size == 0 or table.n_captions == 0:
        return n_distinct, np.zeros((m, table.n_captions))
    at = np.minimum(np.searchsorted(caps, codes), caps.size - 1)
    hit = caps[at] == codes
    found = sparse.csr_matrix((np.ones(int(hit.sum())), (pid[hit], at[hit])), shape=(m, caps.size))
    return n_distinct, (found @ table.membership).toarray()


def _novelty_chunk(toks: list[list[str]], table: TrigramTable) -> tuple[np.ndarray, np.ndarray]:
    ids, n_ids = _token_ids(toks, table.vocab)
    if not _fits(n_ids, len(toks)):  # split until (prompt, id1, id2, id3) keys fit an int64
        if len(toks) == 1:
            raise ConfigError("prompt and caption vocabulary too large for trigram matching (> 2**20 tokens)")
        parts = [_novelty_chunk(toks[: len(toks) // 2], table),
                 _novelty_chunk(toks[len(toks) // 2:], table)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    lens = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
    n_distinct, shared = _chunk_overlap(lens, ids, n_ids, table)
    top = shared.max(axis=1) if shared.shape[1] else np.zeros(len(toks))
    ok = (n_distinct > 0) & (top > 0)
    nv, best = np.ones(len(toks)), np.full(len(toks), -1, dtype=np.int64)
    if ok.any():
        nv[ok] = 1.0 - top[ok] / n_distinct[ok]
        best[ok] = np.argmax(shared[ok], axis=1)
    return nv, best


def _novelty_table(texts: Sequence[str], table: TrigramTable) -> tuple[np.ndarray, np.ndarray]:
    """NV and best-overlap caption (-1 if none) per prompt, vectorised over chunks of prompts."""
    toks = [tokens(t) for t in texts]
    parts = [_novelty_chunk(toks[i:i + _CHUNK], table) for i in range(0, len(toks), _CHUNK)]
    if not parts:
        return np.ones(0), np.full(0, -1, dtype=np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
