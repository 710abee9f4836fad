"""The bundled sample persona set, installed as ``vptt.data``: 24 hand-written personas x 30 posts.

Example:
    >>> from vptt.data import SAMPLE_PERSONAS
    >>> SAMPLE_PERSONAS.name
    'personas.jsonl'
"""

from pathlib import Path

SAMPLE_PERSONAS = Path(__file__).resolve().parent / "personas.jsonl"
"""The sample personas (JSONL, the interchange format): what ``vptt demo`` and the quickstart ingest."""

__all__ = ["SAMPLE_PERSONAS"]
