"""Threads are conversations: every run of a thread is a turn, and a follow-up refines the previous prompt.

A turn is plain data kept in the thread state (``turns``): the user's request, the retrieval query it ran
with, the prompt it produced, its status and retrieval trace. A new run in the same thread, for the same
persona, refines the last turn's prompt:

* retrieval runs on ``"{request}. {previous retrieval query}"`` (newest first, so an embedder that truncates
  long input drops the oldest words), so "now make it autumn" still retrieves for the original subject;
* the template composer writes ``"{previous prompt}, {request}, {new elements}"``, leaving out elements the
  previous prompt already has (marked ``duplicate`` in the trace);
* the LLM composer gets the previous turn as conversation context (its request, retrieval and prompt) and is
  asked to refine that prompt (see :func:`vptt.agents.llm_composer.build_messages`).

Example:
    >>> from vptt.agents.trace import ElementChoice, RetrievalTrace
    >>> t = RetrievalTrace(method="vprag", elements=[
    ...     ElementChoice(text="Paper lanterns", category="lighting", post_id="1", score=0.5),
    ...     ElementChoice(text="maple leaves", category="objects", post_id="2", score=0.4)])
    >>> mark_repeated(t, "a quiet street, paper lanterns").kept_elements()
    ['maple leaves']
    >>> refined_query("a quiet street, paper lanterns", "now make it autumn")
    'a quiet street, paper lanterns, now make it autumn'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from vptt.agents.trace import RetrievalTrace


class Turn(BaseModel):
    """One finished run of a thread (kept in the thread state as a plain dict)."""

    run_id: str
    persona_id: str
    query: str = Field(description="what the user asked in this turn")
    retrieval_query: str = Field(description="the text retrieval embedded (the query, or a follow-up's chain)")
    prompt: str
    method: str
    status: str
    refines: str | None = Field(default=None, description="run id of the turn this one refined")
    trace: dict[str, Any] = Field(default_factory=dict)


def previous_turn(turns: Sequence[dict[str, Any]] | None, persona_id: str) -> dict[str, Any] | None:
    """The last turn of this persona that produced a prompt, or None (a different persona starts afresh)."""
    for turn in reversed(list(turns or [])):
        if turn.get("persona_id") == persona_id and turn.get("prompt"):
            return turn
    return None


def retrieval_query(request: str, previous: dict[str, Any] | None) -> str:
    """The text to embed for retrieval: the request, then (for a follow-up) the previous retrieval query."""
    request = request.strip()
    if previous is None:
        return request
    before = str(previous.get("retrieval_query") or previous.get("query") or "").strip()
    if not before:
        return request
    return f"{request.rstrip('.')}. {before}"


def refined_query(previous_prompt: str, request: str, summary: str = "") -> str:
    """The template composer's "query" for a follow-up: the previous prompt, then the new request.

    A previous prompt led by the persona summary loses that lead (the composer adds it again).
    """
    prev = previous_prompt.strip()
    lead = summary.strip()
    if lead and prev.startswith(lead):
        prev = prev[len(lead):].lstrip(" .")
    return f"{prev.rstrip(' ,')}, {request.strip()}"


def mark_repeated(trace: RetrievalTrace, previous_prompt: str) -> RetrievalTrace:
    """A copy of ``trace`` whose kept elements already in ``previous_prompt`` are marked ``duplicate``."""
    out = trace.model_copy(deep=True)
    seen = previous_prompt.lower()
    repeated = 0
    for e in out.elements:
        text = e.text.strip().lower()
        if e.status == "kept" and text and re.search(rf"(?<!\w){re.escape(text)}(?!\w)", seen):
            e.status = "duplicate"
            repeated += 1
    if repeated:
        out.notes.append(f"follow-up: {repeated} element(s) already in the previous prompt left out")
    return out
