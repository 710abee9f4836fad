"""Typed results returned by the public API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from agents.trace import RetrievalTrace


class PersonalizationResult(BaseModel):
    """The personalized prompt and how it was made.

    Attributes:
        prompt: the personalized prompt p'.
        query: the user's query p.
        method: the retrieval method that ran (``vprag``, ``brag``, ...).
        persona_id: whose memory was used.
        trace: every retrieval intermediate (weights, entropy, n_eff, K, quotas, elements, ...).
        timings_ms: wall time per stage in milliseconds (``embed_query``, ``load_persona``, ``retrieve``,
            ``compose``, ``total``).
        fallback: set when the requested method could not run as asked (e.g. a persona with no posts falls
            back to ``persona_only``), saying why.
    """

    prompt: str
    query: str
    method: str
    persona_id: str
    trace: RetrievalTrace
    timings_ms: dict[str, float] = Field(default_factory=dict)
    fallback: str | None = None

    def __str__(self) -> str:
        return self.prompt


class IngestReport(BaseModel):
    """What ``ingest`` did: per-persona status counts and the lines skipped."""

    path: str = ""
    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    texts_embedded: int = 0
    skipped: list[str] = Field(default_factory=list)
