"""Typed results returned by the public API."""

from __future__ import annotations

from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, Field

from vptt.agents.gates import Candidate, GateDecision, ImageRecord
from vptt.agents.trace import RetrievalTrace

Status = Literal["deferred", "rejected", "completed", "image_rejected"]


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
        status: ``deferred`` (no generator: the accepted prompt is the output), ``rejected`` (early rejection
            by the text gate: no image), ``completed`` (image generated and accepted) or ``image_rejected`` (no
            image passed the image gate; the best is kept).
        run_id / thread_id / seed: identify the agent run (``thread_id`` when it was checkpointed).
        candidates / text_gate: every prompt the text gate saw and what it decided (empty without a gate).
        images / image_gate: every generated image and the image gate's decision (empty without a generator).
        rerank: feedback re-ranking: candidates, predicted scores and the chosen index.
        refines / previous_prompt: for a follow-up in a conversation thread, the run id and the prompt of the
            turn this run refined (None for a first turn).

    The same type comes back from :func:`vptt.personalize`, :meth:`Personalizer.personalize` and
    :class:`PersonalizationAgent` runs; its ``repr`` is one line, the full trace stays in ``.trace``.
    """

    prompt: str
    query: str
    method: str
    persona_id: str
    trace: RetrievalTrace
    timings_ms: dict[str, float] = Field(default_factory=dict)
    fallback: str | None = None
    status: Status = "deferred"
    run_id: str | None = None
    thread_id: str | None = None
    seed: int | None = None
    candidates: list[Candidate] = Field(default_factory=list)
    text_gate: GateDecision | None = None
    images: list[ImageRecord] = Field(default_factory=list)
    image_gate: GateDecision | None = None
    rerank: dict[str, Any] | None = None
    refines: str | None = None
    previous_prompt: str | None = None

    def __str__(self) -> str:
        return self.prompt

    def __repr__(self) -> str:
        prompt = self.prompt if len(self.prompt) <= 72 else self.prompt[:69] + "..."
        extra = f", fallback={self.fallback!r}" if self.fallback else ""
        return (f"PersonalizationResult(persona_id={self.persona_id!r}, method={self.method!r}, "
                f"status={self.status!r}, prompt={prompt!r}, k={self.trace.k}, images={len(self.images)}{extra})")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython / Jupyter plain-text display
        p.text(repr(self))

    @property
    def accepted(self) -> bool:
        """True when the gates accepted the output (``deferred`` or ``completed``)."""
        return self.status in ("deferred", "completed")

    @property
    def image(self) -> Image.Image | None:
        """The chosen image (PIL), or None."""
        if not self.images or self.image_gate is None or self.image_gate.chosen is None:
            return None
        return self.images[self.image_gate.chosen].image

    def token_usage(self) -> dict[str, int]:
        """Chat tokens summed over the LLM candidates (cl100k_base estimates)."""
        used = [c.usage for c in self.candidates if c.usage]
        return {"prompt_tokens": sum(u["prompt_tokens"] for u in used),
                "completion_tokens": sum(u["completion_tokens"] for u in used)}


class IngestReport(BaseModel):
    """What ``ingest`` did: per-persona status counts and the lines skipped."""

    path: str = ""
    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    texts_embedded: int = 0
    skipped: list[str] = Field(default_factory=list)
    seconds: float = 0.0
