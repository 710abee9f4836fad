"""Retrieval methods selectable by ``method=``: the paper's baselines (Sec. 4.1) beside VPRAG.

What each method gives the composer (:data:`METHOD_INPUTS`, the paper's Sec. 4.1 and ``f_compose(p, S_p, E_p,
L)`` of Sec. 3.2) is fixed here, once, for every composer:

* ``baseline`` — nothing: p' = p (an LLM composer makes no call).
* ``persona_only`` — the demographics fields only (age, gender, country, city, ethnicity, occupation,
  interests, personality, social-media tone); not the summary (it is written from the posts), no caption, no
  element.
* ``brag`` — all the persona's captions, in decreasing cosine to the query.
* ``vprag`` — the persona summary S_p and the VPRAG elements E_p (:func:`vptt.agents.vprag.retrieve`) in retrieval
  order.
* ``comb`` — BRAG's captions plus VPRAG's summary and elements.

Every method returns a :class:`~vptt.agents.trace.RetrievalTrace`; :func:`composer_inputs` turns it into the
:class:`ComposerInputs` a composer may use.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vptt.agents.trace import ChosenPost, RetrievalTrace
from vptt.agents.vprag import VPRAGConfig, cosine_scores, retrieve, top_k_posts
from vptt.core.errors import ConfigError
from vptt.core.models import Persona
from vptt.stores.records import EmbeddedPersona

MethodFn = Callable[[np.ndarray, EmbeddedPersona, Mapping[str, np.ndarray], VPRAGConfig], RetrievalTrace]

CAPTION_METHODS = frozenset({"brag", "vprag", "comb"})
"""Methods conditioned on the persona's captions (the others get NV = 0 in reports, as in the paper)."""

Input = Literal["demographics", "summary", "elements", "captions"]
METHOD_INPUTS: dict[str, tuple[Input, ...]] = {
    "baseline": (),
    "persona_only": ("demographics",),
    "brag": ("captions",),
    "vprag": ("summary", "elements"),
    "comb": ("summary", "elements", "captions"),
}
"""What each method gives the composer. A method not listed here gives its trace's elements and captions."""

DEMOGRAPHIC_FIELDS = ("age", "gender", "country", "city", "ethnicity", "occupation", "interests", "personality",
                      "social_media_tone")
"""The demographics fields Persona Only sees (DESIGN.md), in this order."""


class ComposerInputs(BaseModel):
    """Everything a composer may use for one prompt; a field is None/empty when the method does not give it.

    Attributes:
        method: the method that produced them.
        query: the user's prompt p.
        inputs: which of demographics/summary/elements/captions the method gives (:data:`METHOD_INPUTS`).
        demographics: the persona's demographics fields (Persona Only), empty fields left out.
        summary: the persona summary S_p (VPRAG, Comb.).
        elements: ``(category, text)`` of the kept VPRAG elements, in retrieval (prompt) order.
        captions: captions in decreasing cosine to the query (BRAG, Comb.).
    """

    model_config = ConfigDict(frozen=True)

    method: str
    query: str
    inputs: tuple[str, ...] = ()
    demographics: dict[str, Any] | None = None
    summary: str | None = None
    elements: list[tuple[str, str]] = Field(default_factory=list)
    captions: list[str] = Field(default_factory=list)

    def payload(self, max_elements: int | None = None, max_captions: int | None = None) -> dict[str, Any]:
        """The JSON data an LLM composer gets: ``query`` plus only the keys the method gives."""
        out: dict[str, Any] = {"query": self.query}
        if "demographics" in self.inputs:
            out["demographics"] = dict(self.demographics or {})
        if "summary" in self.inputs:
            out["summary"] = self.summary or ""
        if "elements" in self.inputs:
            out["elements"] = [{"category": c, "text": t} for c, t in self.elements[:max_elements]]
        if "captions" in self.inputs:
            out["captions"] = list(self.captions[:max_captions])
        return out


def demographics_of(persona: Persona) -> dict[str, Any]:
    """The persona's :data:`DEMOGRAPHIC_FIELDS` that are set (no empty strings, lists or None)."""
    d = persona.demographics
    out: dict[str, Any] = {}
    for name in DEMOGRAPHIC_FIELDS:
        value = getattr(d, name, None)
        if isinstance(value, str):
            value = value.strip()
        elif isinstance(value, list):
            value = [v.strip() for v in value if isinstance(v, str) and v.strip()]
        if value not in (None, "", []):
            out[name] = value
    return out


def method_inputs(method: str, include_summary: bool = True) -> tuple[str, ...]:
    """:data:`METHOD_INPUTS` of ``method`` (elements and captions for a method not listed there), without
    ``summary`` when ``include_summary`` is False."""
    given = METHOD_INPUTS.get(method, ("elements", "captions"))
    return given if include_summary else tuple(g for g in given if g != "summary")


def composer_inputs(query: str, trace: RetrievalTrace, persona: Persona, *,
                    include_summary: bool = True) -> ComposerInputs:
    """What a composer may use for ``trace.method`` (:data:`METHOD_INPUTS`).

    Args:
        query: the user's prompt.
        trace: the method's retrieval trace (kept elements and ranked captions).
        persona: the persona (demographics and summary are read from it, when the method gives them).
        include_summary: False drops S_p from VPRAG and Comb. (an ablation; the paper gives it).
    """
    given = method_inputs(trace.method, include_summary)
    return ComposerInputs(
        method=trace.method, query=query.strip(), inputs=given,
        demographics=demographics_of(persona) if "demographics" in given else None,
        summary=persona.summary.strip() if "summary" in given else None,
        elements=[(e.category, e.text) for e in trace.elements if e.status == "kept"] if "elements" in given
        else [],
        captions=list(trace.captions_used) if "captions" in given else [])


def baseline(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
             config: VPRAGConfig) -> RetrievalTrace:
    """No personalization: the composer gets nothing but the query."""
    return RetrievalTrace(method="baseline")


def persona_only(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
                 config: VPRAGConfig) -> RetrievalTrace:
    """Demographics only: nothing is retrieved; the composer reads the demographics fields."""
    return RetrievalTrace(method="persona_only")


def _ranked_captions(query_emb: np.ndarray, persona: EmbeddedPersona, method: str) -> RetrievalTrace:
    sims = cosine_scores(query_emb, persona.caption_embs)
    order = top_k_posts(sims, sims.size)  # every post, decreasing cosine (ties: earlier post first)
    posts = persona.persona.posts
    return RetrievalTrace(
        method=method, post_ids=[p.post_id for p in posts], similarities=sims.tolist(), k=int(order.size),
        chosen_posts=[ChosenPost(index=int(i), post_id=posts[i].post_id, similarity=float(sims[i]), weight=0.0)
                      for i in order],
        captions_used=[posts[int(i)].caption for i in order])


def brag(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
         config: VPRAGConfig) -> RetrievalTrace:
    """All captions, in decreasing cosine to the query (the template composer appends the best one)."""
    return _ranked_captions(query_emb, persona, "brag")


def vprag(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
          config: VPRAGConfig) -> RetrievalTrace:
    """VPRAG (Algorithm 1)."""
    return retrieve(query_emb, persona, category_embs, config)


def comb(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
         config: VPRAGConfig) -> RetrievalTrace:
    """BRAG + VPRAG: VPRAG's trace and elements, plus BRAG's ranked captions."""
    trace = retrieve(query_emb, persona, category_embs, config)
    ranked = _ranked_captions(query_emb, persona, "comb")
    return trace.model_copy(update={"method": "comb", "captions_used": ranked.captions_used})


METHODS: dict[str, MethodFn] = {
    "baseline": baseline,
    "persona_only": persona_only,
    "brag": brag,
    "vprag": vprag,
    "comb": comb,
}


def get_method(name: str) -> MethodFn:
    """The method called ``name``; a typo (or a name in capitals) gets the closest names suggested."""
    if not isinstance(name, str):
        raise ConfigError(f"method must be a method name such as 'vprag', got {name!r} (choose from "
                          f"{sorted(METHODS)})")
    try:
        return METHODS[name]
    except KeyError:
        folded = name.strip().lower().replace("-", "_").replace(" ", "_")
        close = [folded] if folded in METHODS else difflib.get_close_matches(folded, METHODS, n=2)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        case = " (method names are lower case)" if folded in METHODS and name != folded else ""
        raise ConfigError(f"unknown method {name!r} (choose from {sorted(METHODS)}){hint}{case}") from None
