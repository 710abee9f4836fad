"""Retrieval methods selectable by ``method=``: the paper's baselines (Sec. 4.1) beside VPRAG.

* ``baseline`` — p' = p, no access to the persona.
* ``persona_only`` — demographics only: a short who-is-this phrase and the first interests.
* ``brag`` — the top captions by cosine (the template composer appends the best caption's text).
* ``vprag`` — :func:`agents.vprag.retrieve`.
* ``comb`` — BRAG + VPRAG: VPRAG's elements and the best caption.

Every method returns a :class:`~agents.trace.RetrievalTrace` that the composer turns into the prompt.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping

import numpy as np

from vptt.agents.trace import ChosenPost, ElementChoice, RetrievalTrace
from vptt.agents.vprag import VPRAGConfig, cosine_scores, retrieve, top_k_posts
from vptt.core.errors import ConfigError
from vptt.core.models import Persona
from vptt.stores.records import EmbeddedPersona

MethodFn = Callable[[np.ndarray, EmbeddedPersona, Mapping[str, np.ndarray], VPRAGConfig], RetrievalTrace]

BRAG_TOP_CAPTIONS = 5
"""How many captions BRAG ranks (the template composer uses the best one; the LLM composer gets all)."""

CAPTION_METHODS = frozenset({"brag", "vprag", "comb"})
"""Methods conditioned on the persona's captions (the others get NV = 0 in reports, as in the paper)."""


def persona_phrase(persona: Persona) -> str:
    """``"68-year-old male retired ceramicist from Kyoto, Japan"`` from whatever demographics exist."""
    d = persona.demographics
    age = f"{d.age}-year-old" if d.age is not None else ""
    place = ", ".join(x for x in (d.city.strip(), d.country.strip()) if x)
    who = " ".join(x for x in (age, d.gender.strip(), d.occupation.strip() or "person") if x)
    return f"{who} from {place}" if place else who


def baseline(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
             config: VPRAGConfig) -> RetrievalTrace:
    """No personalization: the composer gets nothing but the query."""
    return RetrievalTrace(method="baseline")


def persona_only(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
                 config: VPRAGConfig) -> RetrievalTrace:
    """Demographics only (no captions): who the persona is, then up to three interests."""
    p = persona.persona
    items = [ElementChoice(text=f"as photographed by a {persona_phrase(p)}", category="demographics",
                           post_id="", score=1.0)]
    items += [ElementChoice(text=i, category="interests", post_id="", score=0.0)
              for i in p.demographics.interests[:3]]
    return RetrievalTrace(method="persona_only", elements=items)


def _ranked_captions(query_emb: np.ndarray, persona: EmbeddedPersona, method: str) -> RetrievalTrace:
    sims = cosine_scores(query_emb, persona.caption_embs)
    top = top_k_posts(sims, min(BRAG_TOP_CAPTIONS, sims.size))
    posts = persona.persona.posts
    return RetrievalTrace(
        method=method, post_ids=[p.post_id for p in posts], similarities=sims.tolist(), k=int(top.size),
        chosen_posts=[ChosenPost(index=int(i), post_id=posts[i].post_id, similarity=float(sims[i]), weight=0.0)
                      for i in top],
        captions_used=[posts[int(top[0])].caption] if top.size else [])


def brag(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
         config: VPRAGConfig) -> RetrievalTrace:
    """Top captions by cosine; the best caption's text is handed to the composer."""
    return _ranked_captions(query_emb, persona, "brag")


def vprag(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
          config: VPRAGConfig) -> RetrievalTrace:
    """VPRAG (Algorithm 1)."""
    return retrieve(query_emb, persona, category_embs, config)


def comb(query_emb: np.ndarray, persona: EmbeddedPersona, category_embs: Mapping[str, np.ndarray],
         config: VPRAGConfig) -> RetrievalTrace:
    """BRAG + VPRAG: VPRAG's elements and trace, plus the best caption."""
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
