"""Prompt composers. The template composer is ``"{query}, {e1}, {e2}, ..."`` under a token budget."""

from __future__ import annotations

from typing import Protocol

from vptt.agents.tokens import count_tokens, tokenizer_name, truncate_to_tokens
from vptt.agents.trace import CompositionTrace, RetrievalTrace
from vptt.core.errors import ConfigError
from vptt.core.models import Persona


class Composer(Protocol):
    """Turns a query, a retrieval trace and the persona into the personalized prompt p'."""

    name: str

    def compose(self, query: str, trace: RetrievalTrace, persona: Persona) -> str:
        """Return p'; record what was dropped in ``trace`` (element statuses, ``trace.composition``)."""
        ...


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


class TemplateComposer:
    """``"{query}, {e1}, {e2}, ..."`` in the trace's order (category priority, then relevance).

    Captions handed over by BRAG-style methods (``trace.captions_used``) are appended after the elements; the
    persona summary optionally leads. Under ``token_budget`` (tiktoken ``cl100k_base``) the least relevant
    elements are dropped first, then the summary, then caption words from the end; the query is never cut
    (if it alone exceeds the budget, ``composition.over_budget`` is set).

    Example:
        >>> from agents.trace import RetrievalTrace, ElementChoice
        >>> t = RetrievalTrace(method="vprag", elements=[ElementChoice(text="lantern glow", category="lighting",
        ...                    post_id="1", score=0.5)])
        >>> TemplateComposer().compose("a quiet street", t, Persona(persona_id="x"))
        'a quiet street, lantern glow'
    """

    name = "template"

    def __init__(self, token_budget: int | None = None, include_summary: bool = False) -> None:
        if token_budget is not None and (isinstance(token_budget, bool) or not isinstance(token_budget, int)
                                         or token_budget <= 0):
            raise ConfigError(f"token_budget must be a positive whole number of tokens, got {token_budget!r}; "
                              "omit it for no budget")
        self.token_budget = token_budget
        self.include_summary = include_summary

    @staticmethod
    def _render(query: str, elements: list[str], captions: list[str], summary: str) -> str:
        body = ", ".join([query.strip(), *elements, *(c.strip() for c in captions if c.strip())])
        return f"{_sentence(summary)} {body}" if summary.strip() else body

    def compose(self, query: str, trace: RetrievalTrace, persona: Persona) -> str:
        kept = [e for e in trace.elements if e.status == "kept"]
        captions = list(trace.captions_used)
        summary = persona.summary if self.include_summary else ""
        prompt = self._render(query, [e.text for e in kept], captions, summary)
        limit = self.token_budget
        if limit is not None:
            by_relevance = sorted(range(len(kept)), key=lambda j: (kept[j].score, -j))
            while count_tokens(prompt) > limit and by_relevance:
                kept[by_relevance.pop(0)].status = "over_budget"
                prompt = self._render(query, [e.text for e in kept if e.status == "kept"], captions, summary)
            if count_tokens(prompt) > limit and summary:
                summary = ""
                prompt = self._render(query, [e.text for e in kept if e.status == "kept"], captions, summary)
            if count_tokens(prompt) > limit and captions:
                room = limit - count_tokens(self._render(query, [], [], "")) - 1
                captions = [truncate_to_tokens(" ".join(captions), max(room, 0))]
                prompt = self._render(query, [], captions, "")
                trace.notes.append("caption text truncated to the token budget")
        tokens = count_tokens(prompt)
        trace.composition = CompositionTrace(
            composer=self.name, tokens=tokens, tokenizer=tokenizer_name(), token_budget=limit,
            over_budget=limit is not None and tokens > limit, summary_included=bool(summary.strip()))
        return prompt
