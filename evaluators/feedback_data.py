"""Labelled data for the learnable feedback re-ranker (VPTT paper Sec. 3.3, 4.2.4): schema, splits, features.

An example is ``(persona_id, prompt, score)`` with ``score`` in [0, 1]. The paper's recipe labels 50 prompts
per profile with an LLM (20 aligned, 20 misaligned, 10 neutral; see :mod:`evaluators.feedback_llm`); labels
map to scores ``aligned = 1.0``, ``neutral = 0.5``, ``misaligned = 0.0``. VLM-judge scores (0-5) map to
``score / 5``.

Choices the paper leaves open, fixed here:

* **Score bins** (for accuracy): aligned ``score >= 2/3``, misaligned ``score < 1/3``, neutral in between.
* **Splits** are profile-level: personas are ranked by ``sha256(salt + persona_id)`` and cut at the paper's
  130/20/50 proportions (65/10/25 %, largest-remainder rounding), so 200 personas give exactly 130/20/50 and
  no persona is ever in two splits (:func:`check_no_leakage`).
* **Features**: the profile is a token sequence ``[Emb(card), Emb(caption_1), ...]`` (the first
  ``max_profile_tokens - 1`` posts, zero-padded, with a mask: True marks a real token); the prompt is
  ``Emb(prompt)`` optionally followed by its clause embeddings (:func:`prompt_segments`).
* :func:`synthetic_examples` is an OFFLINE STAND-IN for tests and demos (``source="synthetic"``), not the
  paper's data: aligned prompts use the persona's own elements, misaligned ones another persona's, neutral
  ones a fixed generic vocabulary.

Example:
    >>> score_bin(0.9), score_bin(0.5), score_bin(0.2)
    ('aligned', 'neutral', 'misaligned')
    >>> s = assign_splits([f"p{i}" for i in range(200)])
    >>> [sum(v == k for v in s.values()) for k in ("train", "val", "test")]
    [130, 20, 50]
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vptt.core.errors import ConfigError
from vptt.core.models import Persona
from vptt.stores.embedders import Embedder

Label = Literal["aligned", "neutral", "misaligned"]
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
LABEL_SCORES: dict[str, float] = {"aligned": 1.0, "neutral": 0.5, "misaligned": 0.0}
BIN_NAMES: tuple[Label, ...] = ("misaligned", "neutral", "aligned")
ALIGNED_MIN = 2.0 / 3.0
MISALIGNED_MAX = 1.0 / 3.0
PAPER_SPLIT = (0.65, 0.10, 0.25)
SPLIT_SALT = "vptt-feedback-v1"


class FeedbackExample(BaseModel):
    """One labelled (persona, prompt, score) example; one JSONL line."""

    model_config = ConfigDict(extra="forbid")

    persona_id: str = Field(min_length=1)
    prompt: str
    score: float = Field(ge=0.0, le=1.0)
    label: Label | None = None
    source: Literal["llm", "vlm", "synthetic", "manual"] = "llm"
    split: Split | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt must not be empty")
        return v.strip()


def score_bin(score: float) -> Label:
    """``aligned`` (>= 2/3), ``misaligned`` (< 1/3) or ``neutral``."""
    return BIN_NAMES[int(score_bins(np.array([score]))[0])]


def score_bins(scores: np.ndarray) -> np.ndarray:
    """Bin index per score: 0 misaligned (< 1/3), 1 neutral, 2 aligned (>= 2/3)."""
    s = np.asarray(scores, dtype=np.float64)
    return np.where(s >= ALIGNED_MIN, 2, np.where(s < MISALIGNED_MAX, 0, 1)).astype(np.int64)


def label_example(persona_id: str, prompt: str, label: Label, source: str = "llm") -> FeedbackExample:
    """An example whose score is the label's (aligned 1.0, neutral 0.5, misaligned 0.0)."""
    return FeedbackExample(persona_id=persona_id, prompt=prompt, score=LABEL_SCORES[label], label=label,
                           source=source)  # type: ignore[arg-type]


def judge_examples(persona_id: str, prompts: Mapping[str, str], scores: Mapping[str, float],
                   scale: float = 5.0) -> list[FeedbackExample]:
    """Examples from VLM-judge scores of generated images: method -> prompt, method -> score in [0, scale]."""
    missing = sorted(set(scores) - set(prompts))
    if missing:
        raise ConfigError(f"judge scores for methods without a prompt: {missing}; pass every method's prompt")
    return [FeedbackExample(persona_id=persona_id, prompt=prompts[m], score=min(max(s / scale, 0.0), 1.0),
                            source="vlm") for m, s in scores.items() if np.isfinite(s)]


# --------------------------------------------------------------------------- JSONL
def write_examples(path: str | os.PathLike[str], examples: Iterable[FeedbackExample]) -> int:
    """Write examples as JSONL (one per line). Returns the count written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(target, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(ex.model_dump_json(exclude_none=True) + "\n")
            n += 1
    return n


def read_examples(path: str | os.PathLike[str]) -> list[FeedbackExample]:
    """Read a JSONL file of examples; every bad line is reported (file:line: field: message)."""
    out: list[FeedbackExample] = []
    problems: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                out.append(FeedbackExample.model_validate(json.loads(raw)))
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{lineno}: invalid JSON: {exc.msg}")
            except ValidationError as exc:
                problems += [f"{path}:{lineno}: {'.'.join(map(str, e['loc'])) or '<line>'}: {e['msg']}"
                             for e in exc.errors()]
    if problems:
        raise ConfigError(f"invalid feedback data ({len(problems)} problem(s)):\n  " + "\n  ".join(problems))
    return out


# --------------------------------------------------------------------------- splits
def _split_rank(persona_id: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}\x00{persona_id}".encode()).hexdigest()


def split_counts(n: int, fractions: Sequence[float] = PAPER_SPLIT) -> tuple[int, int, int]:
    """Personas per split: largest-remainder rounding of ``n * fractions`` (ties: earlier split)."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ConfigError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    raw = f * n
    counts = np.floor(raw + 1e-9).astype(int)
    for i in sorted(range(3), key=lambda j: (-(raw[j] - counts[j]), j))[: n - int(counts.sum())]:
        counts[i] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def assign_splits(persona_ids: Iterable[str], fractions: Sequence[float] = PAPER_SPLIT,
                  salt: str = SPLIT_SALT) -> dict[str, Split]:
    """Profile-level split of each persona: rank by ``sha256(salt, id)``, cut at :func:`split_counts`."""
    ids = sorted(set(persona_ids), key=lambda p: (_split_rank(p, salt), p))
    n_train, n_val, _ = split_counts(len(ids), fractions)
    return {p: ("train" if i < n_train else "val" if i < n_train + n_val else "test")
            for i, p in enumerate(ids)}


def with_splits(examples: Sequence[FeedbackExample], fractions: Sequence[float] = PAPER_SPLIT,
                salt: str = SPLIT_SALT) -> list[FeedbackExample]:
    """Copies of the examples with ``split`` set by :func:`assign_splits` over their personas."""
    splits = assign_splits((e.persona_id for e in examples), fractions, salt)
    return [e.model_copy(update={"split": splits[e.persona_id]}) for e in examples]


def check_no_leakage(examples: Sequence[FeedbackExample]) -> dict[Split, list[str]]:
    """Personas per split; raises :class:`ConfigError` if a persona is in two splits or one has no split."""
    seen: dict[str, set[str]] = {}
    for e in examples:
        if e.split is None:
            raise ConfigError(f"example for persona {e.persona_id!r} has no split; assign splits with "
                              "`with_splits` (or re-make the file with `vptt feedback data`)")
        seen.setdefault(e.persona_id, set()).add(e.split)
    leaked = sorted(p for p, s in seen.items() if len(s) > 1)
    if leaked:
        raise ConfigError(f"split leakage: {len(leaked)} persona(s) in more than one split, e.g. "
                          f"{leaked[:5]}; splits must be profile-level (re-assign them with `with_splits`)")
    return {s: sorted(p for p, v in seen.items() if s in v) for s in SPLITS}


# --------------------------------------------------------------------------- synthetic (offline stand-in)
FRAMES = ("A photo of {}", "A scene with {}", "A close-up of {}", "An afternoon with {}",
          "A quiet moment: {}", "A snapshot showing {}", "A candid picture of {}", "A wide shot of {}")
NEUTRAL_TERMS = ("a glass of water", "a parked grey car", "an empty parking lot", "a white wall clock",
                 "a stack of printer paper", "a plastic office chair", "a traffic light",
                 "a plain cardboard box", "a metal filing cabinet", "a fluorescent-lit corridor",
                 "a ballpoint pen", "a generic laptop", "a bus stop sign", "a concrete staircase",
                 "a beige carpet", "a paper cup")


def persona_vocabulary(persona: Persona) -> list[str]:
    """Distinct phrases describing a persona: post and persona elements, interests, preferences."""
    terms = [t for post in persona.posts for items in post.elements.values() for t in items]
    terms += [t for items in persona.elements.values() for t in items]
    terms += list(persona.demographics.interests) + list(persona.preferences)
    if not terms:  # no vocabulary: fall back to caption clauses
        terms = [c for p in persona.posts for c in re.split(r"[,.;]", p.caption) if c.strip()]
    return list(dict.fromkeys(t.strip() for t in terms if t.strip()))


def _phrase(rng: random.Random, terms: Sequence[str], k: int = 3) -> str:
    picked = rng.sample(list(terms), min(k, len(terms)))
    body = picked[0] if len(picked) == 1 else ", ".join(picked[:-1]) + " and " + picked[-1]
    return rng.choice(FRAMES).format(body)


def synthetic_examples(personas: Sequence[Persona], *, n_aligned: int = 20, n_misaligned: int = 20,
                       n_neutral: int = 10, seed: int = 0) -> list[FeedbackExample]:
    """OFFLINE STAND-IN data (``source="synthetic"``): own elements = aligned, another persona's = misaligned.

    Deterministic for a seed. Needs at least two personas, each with some vocabulary.
    """
    if len(personas) < 2:
        raise ConfigError("synthetic data needs at least two personas (misaligned prompts come from others)")
    vocab = {p.persona_id: persona_vocabulary(p) for p in personas}
    empty = [pid for pid, v in vocab.items() if not v]
    if empty:
        raise ConfigError(f"personas without elements, interests, preferences or captions: {empty[:5]}")
    rng = random.Random(seed)
    out: list[FeedbackExample] = []
    for p in personas:
        own = vocab[p.persona_id]
        own_keys = {t.casefold() for t in own}
        foreign = {q.persona_id: [t for t in vocab[q.persona_id] if t.casefold() not in own_keys]
                   for q in personas if q.persona_id != p.persona_id}
        others = [q for q, terms in foreign.items() if terms]
        if n_misaligned and not others:
            raise ConfigError(f"persona {p.persona_id!r}: every other persona's vocabulary overlaps its own; "
                              "synthetic misaligned prompts need personas with distinct elements")
        for _ in range(n_aligned):
            out.append(label_example(p.persona_id, _phrase(rng, own), "aligned", "synthetic"))
        for _ in range(n_misaligned):
            out.append(label_example(p.persona_id, _phrase(rng, foreign[rng.choice(others)]), "misaligned",
                                     "synthetic"))
        for _ in range(n_neutral):
            out.append(label_example(p.persona_id, _phrase(rng, NEUTRAL_TERMS, 2), "neutral", "synthetic"))
    return out


# --------------------------------------------------------------------------- features
@dataclass(frozen=True)
class FeedbackArrays:
    """Model inputs. Profiles are stored once per persona; ``persona_index`` maps examples to them.

    Masks are boolean with True marking a real token (padding is False).
    """

    profile: np.ndarray  # (P, T, D) float32
    profile_mask: np.ndarray  # (P, T) bool
    prompt: np.ndarray  # (N, S, D) float32
    prompt_mask: np.ndarray  # (N, S) bool
    persona_index: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) float32
    persona_ids: tuple[str, ...]
    embedder: str = ""

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, rows: np.ndarray) -> FeedbackArrays:
        """The examples at ``rows`` (profiles shared, not copied)."""
        return FeedbackArrays(self.profile, self.profile_mask, self.prompt[rows], self.prompt_mask[rows],
                              self.persona_index[rows], self.scores[rows], self.persona_ids, self.embedder)


def profile_tokens(card_emb: np.ndarray, caption_embs: np.ndarray, max_tokens: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``[card, caption_1, ..., caption_{T-1}]`` zero-padded to ``max_tokens``, and its mask (True = real)."""
    if max_tokens < 1:
        raise ConfigError(f"max_profile_tokens must be >= 1, got {max_tokens}")
    card = np.asarray(card_emb, np.float32).reshape(1, -1)
    caps = np.asarray(caption_embs, np.float32).reshape(-1, card.shape[1])[: max_tokens - 1]
    real = np.concatenate([card, caps])
    out = np.zeros((max_tokens, card.shape[1]), np.float32)
    out[: len(real)] = real
    mask = np.zeros(max_tokens, bool)
    mask[: len(real)] = True
    return out, mask


def prompt_segments(prompt: str, max_segments: int = 1) -> list[str]:
    """``[prompt]`` then up to ``max_segments - 1`` of its clauses (split on , ; . and newlines)."""
    if max_segments < 1:
        raise ConfigError(f"max_prompt_tokens must be >= 1, got {max_segments}")
    clauses = [c.strip() for c in re.split(r"[,;.\n]", prompt) if c.strip()]
    return [prompt.strip(), *clauses[: max_segments - 1]] if len(clauses) > 1 else [prompt.strip()]


def _pad(rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((length, rows.shape[1]), np.float32)
    out[: len(rows)] = rows
    return out, np.arange(length) < len(rows)


def featurize(examples: Sequence[FeedbackExample], personas: Mapping[str, Persona], embedder: Embedder, *,
              max_profile_tokens: int = 33, max_prompt_tokens: int = 1) -> FeedbackArrays:
    """Embed every distinct text once (wrap ``embedder`` in a CachedEmbedder to reuse across runs)."""
    missing = sorted({e.persona_id for e in examples} - set(personas))
    if missing:
        raise ConfigError(f"{len(missing)} persona(s) in the data are not in the persona file, e.g. "
                          f"{missing[:5]}; pass the persona JSONL the data was made from")
    pids = tuple(dict.fromkeys(e.persona_id for e in examples))
    segs = [prompt_segments(e.prompt, max_prompt_tokens) for e in examples]
    n_caps = max_profile_tokens - 1
    texts = list(dict.fromkeys([*(personas[p].card_text() for p in pids),
                                *(post.caption for p in pids for post in personas[p].posts[:n_caps]),
                                *(s for ss in segs for s in ss)]))
    vec = dict(zip(texts, embedder.embed(texts))) if texts else {}
    dim = embedder.dim
    profile = np.zeros((len(pids), max_profile_tokens, dim), np.float32)
    pmask = np.zeros((len(pids), max_profile_tokens), bool)
    for i, p in enumerate(pids):
        caps = [vec[post.caption] for post in personas[p].posts[: max_profile_tokens - 1]]
        caps_arr = np.stack(caps) if caps else np.zeros((0, dim), np.float32)
        profile[i], pmask[i] = profile_tokens(vec[personas[p].card_text()], caps_arr, max_profile_tokens)
    prompt = np.zeros((len(examples), max_prompt_tokens, dim), np.float32)
    qmask = np.zeros((len(examples), max_prompt_tokens), bool)
    for j, ss in enumerate(segs):
        prompt[j], qmask[j] = _pad(np.stack([vec[s] for s in ss]), max_prompt_tokens)
    index = {p: i for i, p in enumerate(pids)}
    owner = np.array([index[e.persona_id] for e in examples], np.int64)
    scores = np.array([e.score for e in examples], np.float32)
    return FeedbackArrays(profile, pmask, prompt, qmask, owner, scores, pids, embedder.name)


def split_arrays(examples: Sequence[FeedbackExample], arrays: FeedbackArrays) -> dict[Split, FeedbackArrays]:
    """The featurized examples of each split (after :func:`check_no_leakage`)."""
    check_no_leakage(examples)
    splits = np.array([e.split for e in examples])
    return {s: arrays.select(np.flatnonzero(splits == s)) for s in SPLITS}


def synthetic_arrays(n_personas: int, n_examples: int = 50, dim: int = 32, max_tokens: int = 8, *,
                     seed: int = 0) -> FeedbackArrays:
    """OFFLINE STAND-IN embeddings (tests, benchmarks): a learnable task with the paper's 40/40/20 label mix.

    Persona ``i`` has 3..``max_tokens`` profile tokens around its own random centre (plus a direction every
    text shares, as real sentence embeddings do). Aligned prompts (score 1) lie near one of its own tokens,
    misaligned ones (0) near another persona's token, neutral ones (0.5) are random. Persona ids are
    ``"syn-<seed>-<i>"``.
    """
    if n_personas < 2 or n_examples < 1 or dim < 2 or max_tokens < 3:
        raise ConfigError("need n_personas >= 2, n_examples >= 1, dim >= 2 and max_tokens >= 3")
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    shared = unit(np.random.default_rng(12345).normal(size=dim))
    centres = unit(rng.normal(size=(n_personas, dim)))
    n_tok = rng.integers(3, max_tokens + 1, size=n_personas)
    profile = np.zeros((n_personas, max_tokens, dim), np.float32)
    mask = np.arange(max_tokens)[None, :] < n_tok[:, None]
    for i in range(n_personas):
        noise = unit(rng.normal(size=(n_tok[i], dim)))
        profile[i, : n_tok[i]] = unit(0.55 * shared + 0.5 * centres[i] + 0.65 * noise)
    u = rng.random((n_personas, n_examples))
    scores = np.where(u < 0.4, 1.0, np.where(u < 0.8, 0.0, 0.5)).astype(np.float32).ravel()
    owner = np.repeat(np.arange(n_personas), n_examples)
    other = (owner + rng.integers(1, n_personas, size=owner.size)) % n_personas
    source = np.where(scores == 1.0, owner, other)
    token = (rng.random(owner.size) * n_tok[source]).astype(np.int64)
    noise = unit(rng.normal(size=(owner.size, dim)))
    near = 0.8 * profile[source, token] + 0.6 * noise
    prompt = np.where((scores == 0.5)[:, None], 0.55 * shared + 0.8 * noise, near)
    ids = tuple(f"syn-{seed}-{i}" for i in range(n_personas))
    prompt_mask = np.ones((owner.size, 1), bool)
    prompts = unit(prompt)[:, None, :]
    return FeedbackArrays(profile, mask, prompts, prompt_mask, owner, scores, ids, "synthetic")
