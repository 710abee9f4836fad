"""Prompt composers. The template composer is ``"{query}, {e1}, {e2}, ..."`` under a token budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from vptt.agents.methods import composer_inputs
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


def demographic_phrases(demo: Mapping[str, Any]) -> list[str]:
    """Demographics as prompt phrases: who (age, ethnicity, gender, occupation, place), interests, personality,
    tone — every field given, in :data:`~vptt.agents.methods.DEMOGRAPHIC_FIELDS` order.

    Example:
        >>> demographic_phrases({"age": 68, "gender": "male", "city": "Kyoto", "country": "Japan",
        ...                      "interests": ["raku firing"], "social_media_tone": "quiet"})
        ['as photographed by a 68-year-old male person from Kyoto, Japan', 'raku firing', 'quiet']
    """
    age = f"{demo['age']}-year-old" if demo.get("age") is not None else ""
    who = " ".join(str(x) for x in (age, demo.get("ethnicity", ""), demo.get("gender", ""),
                                     demo.get("occupation") or "person") if x)
    place = ", ".join(str(demo[k]) for k in ("city", "country") if demo.get(k))
    out = [f"as photographed by a {who}" + (f" from {place}" if place else "")]
    out += [str(i) for i in demo.get("interests", [])] + [str(p) for p in demo.get("personality", [])]
    if demo.get("social_media_tone"):
        out.append(str(demo["social_media_tone"]))
    return out


class TemplateComposer:
    """The offline composer: ``"{query}, {e1}, {e2}, ..."`` from exactly what the method gives it.

    It is an offline approximation of the paper's LLM rewriting (it cannot rewrite, only concatenate), and it
    gets the same inputs per method as the LLM composer (:func:`~vptt.agents.methods.composer_inputs`):

    * Baseline: the query alone.
    * Persona Only: the query, then the demographics as phrases (:func:`demographic_phrases`).
    * BRAG: the query, then the best caption's text (the captions come ranked; a template cannot rewrite
      them, so it appends the best one: an offline stand-in for the copying the paper observes).
    * VPRAG: the persona summary S_p leads, then the query and the kept elements in retrieval order
      (category priority, then relevance).
    * Comb.: VPRAG's prompt with the best caption appended.

    Under ``token_budget`` (tiktoken ``cl100k_base``) the least relevant elements are dropped first, then
    demographics phrases from the end, then the summary, then caption words from the end; the query is never
    cut (if it alone exceeds the budget, ``composition.over_budget`` is set). ``include_summary=False`` drops
    S_p (an ablation; the paper's VPRAG has it).

    Example:
        >>> from vptt.agents.trace import RetrievalTrace, ElementChoice
        >>> t = RetrievalTrace(method="vprag", elements=[ElementChoice(text="lantern glow", category="lighting",
        ...                    post_id="1", score=0.5)])
        >>> TemplateComposer().compose("a quiet street", t, Persona(persona_id="x", summary="A potter."))
        'A potter. a quiet street, lantern glow'
    """

    name = "template"

    def __init__(self, token_budget: int | None = None, include_summary: bool = True) -> None:
        if token_budget is not None and (isinstance(token_budget, bool) or not isinstance(token_budget, int)
                                         or token_budget <= 0):
            raise ConfigError(f"token_budget must be a positive whole number of tokens, got {token_budget!r}; "
                              "omit it for no budget")
        self.token_budget = token_budget
        self.include_summary = include_summary

    @staticmethod
    def _render(query: str, elements: list[str], extra: list[str], captions: list[str], summary: str) -> str:
        body = ", ".join([query.strip(), *elements, *extra, *(c.strip() for c in captions if c.strip())])
        return f"{_sentence(summary)} {body}" if summary.strip() else body

    def compose(self, query: str, trace: RetrievalTrace, persona: Persona) -> str:
        given = composer_inputs(query, trace, persona, include_summary=self.include_summary)
        kept = [e for e in trace.elements if e.status == "kept"] if "elements" in given.inputs else []
        captions = given.captions[:1]  # the best caption (a template cannot rewrite captions)
        extra = demographic_phrases(given.demographics) if given.demographics else []
        summary = given.summary or ""
        render = (lambda: self._render(query, [e.text for e in kept if e.status == "kept"], extra, captions,
                                       summary))
        prompt = render()
        limit = self.token_budget
        if limit is not None:
            by_relevance = sorted(range(len(kept)), key=lambda j: (kept[j].score, -j))
            while count_tokens(prompt) > limit and by_relevance:
                kept[by_relevance.pop(0)].status = "over_budget"
                prompt = render()
            while count_tokens(prompt) > limit and extra:
                extra = extra[:-1]
                prompt = render()
            if count_tokens(prompt) > limit and summary:
                summary = ""
                prompt = render()
            if count_tokens(prompt) > limit and captions:
                room = limit - count_tokens(self._render(query, [], [], [], "")) - 1
                captions = [truncate_to_tokens(" ".join(captions), max(room, 0))]
                prompt = self._render(query, [], [], captions, "")
                trace.notes.append("caption text truncated to the token budget")
        tokens = count_tokens(prompt)
        trace.composition = CompositionTrace(
            composer=self.name, tokens=tokens, tokenizer=tokenizer_name(), token_budget=limit,
            over_budget=limit is not None and tokens > limit, summary_included=bool(summary.strip()),
            inputs=list(given.inputs))
        return prompt
