"""Typed retrieval trace: every intermediate of VPRAG (and of the baselines) returned with the result."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ChosenPost(BaseModel):
    """A post in the top-K set I."""

    index: int
    post_id: str
    similarity: float
    weight: float


class CategoryStep(BaseModel):
    """One category, in visit (priority) order: its budget, supply in I and per-post quotas."""

    category: str
    priority: float
    budget: int
    supply: int
    quotas: dict[str, int] = Field(default_factory=dict)


class ElementChoice(BaseModel):
    """An element selected by its post's quota, and what happened to it afterwards."""

    text: str
    category: str
    post_id: str
    score: float
    status: Literal["kept", "duplicate", "over_budget"] = "kept"


class CompositionTrace(BaseModel):
    """How the prompt was put together."""

    composer: str
    tokens: int
    tokenizer: str
    token_budget: int | None = None
    over_budget: bool = False
    summary_included: bool = False
    inputs: list[str] = Field(default_factory=list)
    """What the method gave the composer (demographics, summary, elements, captions)."""


class RetrievalTrace(BaseModel):
    """Every intermediate of one retrieval (``docs/vprag.md``: s, w, H, n_eff, K, I, priorities, quotas, elements)."""

    method: str
    tau: float | None = None
    total_budget: int | None = None
    post_ids: list[str] = Field(default_factory=list)
    similarities: list[float] = Field(default_factory=list)
    weights: list[float] = Field(default_factory=list)
    entropy: float | None = None
    n_eff: float | None = None
    k: int | None = None
    chosen_posts: list[ChosenPost] = Field(default_factory=list)
    categories: list[CategoryStep] = Field(default_factory=list)
    elements: list[ElementChoice] = Field(default_factory=list)
    captions_used: list[str] = Field(default_factory=list)
    composition: CompositionTrace | None = None
    notes: list[str] = Field(default_factory=list)

    def kept_elements(self) -> list[str]:
        """Texts of the elements that made it into the prompt, in prompt order."""
        return [e.text for e in self.elements if e.status == "kept"]
