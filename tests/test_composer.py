"""Template composer and its token budget."""

from __future__ import annotations

import pytest

import vptt.agents.tokens as tokens
from vptt import Persona
from vptt.agents.composer import TemplateComposer
from vptt.agents.trace import ElementChoice, RetrievalTrace

PERSONA = Persona(persona_id="x", summary="A potter in Kyoto who loves moss gardens")


def _trace(scores: list[float]) -> RetrievalTrace:
    return RetrievalTrace(method="vprag", elements=[
        ElementChoice(text=f"element number {i}", category="c", post_id="p", score=s) for i, s in enumerate(scores)])


def test_template_order_and_summary() -> None:
    t = _trace([0.9, 0.1, 0.5])  # VPRAG gives S_p and the elements in retrieval order (not by score)
    out = TemplateComposer().compose("q", t, PERSONA)
    assert out == "A potter in Kyoto who loves moss gardens. q, element number 0, element number 1, element number 2"
    assert t.composition.inputs == ["summary", "elements"] and t.composition.summary_included
    out = TemplateComposer(include_summary=False).compose("q", _trace([0.2]), PERSONA)  # the ablation
    assert out == "q, element number 0"


def test_template_gets_exactly_what_each_method_gives() -> None:
    persona = Persona.model_validate({
        "persona_id": "x", "summary": "A potter in Kyoto.",
        "demographics": {"age": 68, "gender": "male", "country": "Japan", "city": "Kyoto", "ethnicity": "Japanese",
                         "occupation": "potter", "interests": ["raku", "tea"], "personality": ["patient"],
                         "social_media_tone": "quiet haiku"}})
    els = [ElementChoice(text="moss", category="environment", post_id="p", score=0.5)]
    caps = ["Best caption here.", "Second caption."]

    def comp(method: str) -> str:
        return TemplateComposer().compose("q", RetrievalTrace(method=method, elements=els, captions_used=caps),
                                          persona)

    assert comp("baseline") == "q"  # nothing: even a trace holding elements and captions is ignored
    assert comp("persona_only") == ("q, as photographed by a 68-year-old Japanese male potter from Kyoto, Japan, "
                                    "raku, tea, patient, quiet haiku")
    assert comp("brag") == "q, Best caption here."  # the best caption only: the template cannot rewrite
    assert comp("vprag") == "A potter in Kyoto. q, moss"
    assert comp("comb") == "A potter in Kyoto. q, moss, Best caption here."


def test_budget_drops_least_relevant_first() -> None:
    t = _trace([0.9, 0.1, 0.5, 0.7])
    full = TemplateComposer(include_summary=False).compose("a quiet street", _trace([0.9, 0.1, 0.5, 0.7]), PERSONA)
    limit = tokens.count_tokens(full) - 1
    out = TemplateComposer(token_budget=limit, include_summary=False).compose("a quiet street", t, PERSONA)
    assert [e.status for e in t.elements] == ["kept", "over_budget", "kept", "kept"]
    assert out == "a quiet street, element number 0, element number 2, element number 3"
    assert t.composition.tokens <= limit and t.composition.tokenizer == "cl100k_base"


def test_query_is_never_cut() -> None:
    t = _trace([0.5])
    query = "a very long query " * 10
    out = TemplateComposer(token_budget=3, include_summary=True).compose(query, t, PERSONA)
    assert out == query.strip() and t.composition.over_budget and not t.composition.summary_included


def test_caption_truncated_to_budget() -> None:
    t = RetrievalTrace(method="brag", captions_used=["word " * 200])
    out = TemplateComposer(token_budget=50).compose("q", t, PERSONA)
    assert tokens.count_tokens(out) <= 50 and out.startswith("q, word word")


def test_cl100k_counts_offline_and_fallback_is_named(monkeypatch) -> None:
    assert tokens.tokenizer_name() == "cl100k_base"
    assert tokens.count_tokens("hello world") == 2
    monkeypatch.setattr(tokens, "_encoding", lambda: None)
    assert "regex" in tokens.tokenizer_name() and tokens.count_tokens("hello, world") == 3


def test_bad_budget() -> None:
    with pytest.raises(ValueError):
        TemplateComposer(token_budget=0)
