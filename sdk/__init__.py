"""vptt: persona-aware visual personalization (VPRAG retrieval, VPTT score, image evaluators).

The public surface::

    from sdk import personalize, Personalizer, Persona, load_personas

    result = personalize("p01_kyoto_ceramicist", "A preferred outdoor spot")
    print(result.prompt, result.trace.n_eff)

Light modules (errors, the persona model, JSONL I/O, settings) load eagerly; everything that pulls in the
stores, models or LangGraph loads on first use, so ``import sdk`` is cheap and ``stores`` or ``agents`` can be
imported first without an import cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ConfigError,
    EmbedderError,
    EmptyQueryError,
    FieldProblem,
    GenerationError,
    ModelLoadError,
    NoPostsError,
    PersonaNotFoundError,
    PersonaValidationError,
    ProviderAuthError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    RunTimeoutError,
    StoreError,
    VPTTError,
)
from .models import CANONICAL_CATEGORIES, Demographics, Persona, Post
from .personas import PersonaList, dump_personas, load_personas, parse_persona
from .settings import VPTTSettings

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # personalization
    "Personalizer": "sdk.personalizer", "personalize": "sdk.personalizer", "apersonalize": "sdk.personalizer",
    "default_personalizer": "sdk.personalizer", "agent_for": "sdk.personalizer",
    "PersonalizationResult": "sdk.results", "IngestReport": "sdk.results",
    # retrieval and composition
    "VPRAGConfig": "agents.vprag", "allocate_quotas": "agents.vprag", "effective_posts": "agents.vprag",
    "post_weights": "agents.vprag", "METHODS": "agents.methods", "Composer": "agents.composer",
    "TemplateComposer": "agents.composer", "RetrievalTrace": "agents.trace", "ChosenPost": "agents.trace",
    "CategoryStep": "agents.trace", "ElementChoice": "agents.trace", "CompositionTrace": "agents.trace",
    "Task": "agents.tasks",
    # memory
    "PersonaStore": "stores.base", "UpsertResult": "stores.base", "InMemoryPersonaStore": "stores.memory",
    "ChromaPersonaStore": "stores.chroma", "Embedder": "stores.embedders", "MiniLMEmbedder": "stores.embedders",
    "OpenAIEmbedder": "stores.embedders", "CachedEmbedder": "stores.embedding_cache",
    "EmbeddedPersona": "stores.records",
    # the agent graph
    "PersonalizationAgent": "sdk.agent", "AgentConfig": "sdk.agent", "AgentResult": "sdk.agent",
    "NodeEvent": "sdk.agent", "LLMComposer": "agents.llm_composer", "LLMComposerConfig": "agents.llm_composer",
    "TextGateConfig": "agents.gates", "ImageGateConfig": "agents.gates", "VPTTTextScorer": "agents.gates",
    "MaskedSimilarityEvaluator": "agents.gates", "VLMJudgeEvaluator": "agents.gates",
    "FunctionImageEvaluator": "agents.gates", "build_generator": "agents.generators",
    "GenerationRequest": "agents.generators", "GeneratedImage": "agents.generators",
    "FeedbackReranker": "agents.rerank",
    # scoring
    "VPTTScorer": "evaluators.vptt_score", "vptt_score": "evaluators.vptt_score",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CANONICAL_CATEGORIES",
    "ConfigError",
    "Demographics",
    "EmbedderError",
    "EmptyQueryError",
    "FieldProblem",
    "GenerationError",
    "ModelLoadError",
    "NoPostsError",
    "Persona",
    "PersonaList",
    "PersonaNotFoundError",
    "PersonaValidationError",
    "Post",
    "ProviderAuthError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "RunTimeoutError",
    "StoreError",
    "VPTTError",
    "VPTTSettings",
    "__version__",
    "dump_personas",
    "load_personas",
    "parse_persona",
    *_LAZY,
]
