"""Vectors as text: float32 arrays as base64 (for JSON rows and records)."""

from __future__ import annotations

import base64

import numpy as np


def encode_vector(v: np.ndarray) -> str:
    """A float32 vector as base64 (little-endian)."""
    return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(s: str) -> np.ndarray:
    """Inverse of :func:`encode_vector`."""
    return np.frombuffer(base64.b64decode(s), dtype="<f4").astype(np.float32)
