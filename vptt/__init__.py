"""vptt: persona-aware visual personalization (VPRAG retrieval, VPTT score, image evaluators).

The public surface::

    from vptt import personalize, Personalizer, Persona, load_personas

    result = personalize("p01_kyoto_ceramicist", "A preferred outdoor spot")
    print(result.prompt, result.trace.n_eff)

Subpackages: ``vptt.core`` (errors, persona model, JSONL I/O, settings, provider clients), ``vptt.stores``
(persona memory and embedders), ``vptt.evaluators`` (VPTT score and image metrics), ``vptt.agents`` (VPRAG,
baselines, composers, the agent graph) and ``vptt.sdk`` (the front door's functions, bulk runs, the CLI).
Light names load eagerly; everything that pulls in stores, models or LangGraph loads on first use, so
``import vptt`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vptt.core.errors import (
    ConfigError,
    EmbedderError,
    EmptyQueryError,
    FieldProblem,
    GenerationError,
    InvalidQueryError,
    ModelLoadError,
    NoPostsError,
    PersonaNotFoundError,
    PersonaTypeError,
    PersonaValidationError,
    ProviderAuthError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    RateLimitedError,
    RunFileError,
    RunTimeoutError,
    StoreError,
    VPTTError,
)
from vptt.core.models import CANONICAL_CATEGORIES, Demographics, Persona, Post
from vptt.core.personas import PersonaList, dump_personas, load_personas, parse_persona
from vptt.core.settings import VPTTSettings
from vptt.core.version import __version__

_LAZY: dict[str, str] = {  # name -> module it is imported from on first use
    # personalization
    "Personalizer": "vptt.agents.personalizer",
    "personalize": "vptt.sdk.api",
    "apersonalize": "vptt.sdk.api",
    "default_personalizer": "vptt.sdk.api",
    "agent_for": "vptt.sdk.api",
    "PersonalizationResult": "vptt.agents.results",
    "IngestReport": "vptt.agents.results",
    # retrieval and composition
    "VPRAGConfig": "vptt.agents.vprag",
    "allocate_quotas": "vptt.agents.vprag",
    "effective_posts": "vptt.agents.vprag",
    "post_weights": "vptt.agents.vprag",
    "METHODS": "vptt.agents.methods",
    "Composer": "vptt.agents.composer",
    "TemplateComposer": "vptt.agents.composer",
    "RetrievalTrace": "vptt.agents.trace",
    "ChosenPost": "vptt.agents.trace",
    "CategoryStep": "vptt.agents.trace",
    "ElementChoice": "vptt.agents.trace",
    "CompositionTrace": "vptt.agents.trace",
    "Task": "vptt.agents.tasks",
    # memory
    "PersonaStore": "vptt.stores.base",
    "UpsertResult": "vptt.stores.base",
    "InMemoryPersonaStore": "vptt.stores.memory",
    "ChromaPersonaStore": "vptt.stores.chroma",
    "Embedder": "vptt.stores.embedders",
    "MiniLMEmbedder": "vptt.stores.embedders",
    "OpenAIEmbedder": "vptt.stores.embedders",
    "CachedEmbedder": "vptt.stores.embedding_cache",
    "PooledEmbedder": "vptt.stores.encoding",
    "EmbeddedPersona": "vptt.stores.records",
    # the agent graph
    "PersonalizationAgent": "vptt.sdk.agent",
    "AgentConfig": "vptt.sdk.agent",
    "NodeEvent": "vptt.sdk.agent",
    "AgentContext": "vptt.agents.context",
    "PersonaMemoryStore": "vptt.agents.memory_store",
    "compare_methods": "vptt.sdk.api",
    "score_prompt": "vptt.sdk.api",
    "LLMComposer": "vptt.agents.llm_composer",
    "LLMComposerConfig": "vptt.agents.llm_composer",
    "TextGateConfig": "vptt.agents.gates",
    "ImageGateConfig": "vptt.agents.gates",
    "VPTTTextScorer": "vptt.agents.gates",
    "MaskedSimilarityEvaluator": "vptt.agents.gates",
    "VLMJudgeEvaluator": "vptt.agents.gates",
    "FunctionImageEvaluator": "vptt.agents.gates",
    "build_generator": "vptt.agents.generators",
    "GenerationRequest": "vptt.agents.generators",
    "GeneratedImage": "vptt.agents.generators",
    "FeedbackReranker": "vptt.agents.rerank",
    # scoring
    "VPTTScorer": "vptt.evaluators.vptt_score",
    "vptt_score": "vptt.evaluators.vptt_score",
}

if TYPE_CHECKING:  # the lazy names, for IDEs and type checkers
    from vptt.agents.composer import Composer, TemplateComposer
    from vptt.agents.context import AgentContext
    from vptt.agents.gates import (
        FunctionImageEvaluator,
        ImageGateConfig,
        MaskedSimilarityEvaluator,
        TextGateConfig,
        VLMJudgeEvaluator,
        VPTTTextScorer,
    )
    from vptt.agents.generators import GeneratedImage, GenerationRequest, build_generator
    from vptt.agents.llm_composer import LLMComposer, LLMComposerConfig
    from vptt.agents.memory_store import PersonaMemoryStore
    from vptt.agents.methods import METHODS
    from vptt.agents.personalizer import Personalizer
    from vptt.agents.rerank import FeedbackReranker
    from vptt.agents.results import IngestReport, PersonalizationResult
    from vptt.agents.tasks import Task
    from vptt.agents.trace import CategoryStep, ChosenPost, CompositionTrace, ElementChoice, RetrievalTrace
    from vptt.agents.vprag import VPRAGConfig, allocate_quotas, effective_posts, post_weights
    from vptt.evaluators.vptt_score import VPTTScorer, vptt_score
    from vptt.sdk.agent import AgentConfig, NodeEvent, PersonalizationAgent
    from vptt.sdk.api import (
        agent_for,
        apersonalize,
        compare_methods,
        default_personalizer,
        personalize,
        score_prompt,
    )
    from vptt.stores.base import PersonaStore, UpsertResult
    from vptt.stores.chroma import ChromaPersonaStore
    from vptt.stores.embedders import Embedder, MiniLMEmbedder, OpenAIEmbedder
    from vptt.stores.embedding_cache import CachedEmbedder
    from vptt.stores.encoding import PooledEmbedder
    from vptt.stores.memory import InMemoryPersonaStore
    from vptt.stores.records import EmbeddedPersona


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vptt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AgentConfig",
    "AgentContext",
    "CANONICAL_CATEGORIES",
    "CachedEmbedder",
    "CategoryStep",
    "ChosenPost",
    "ChromaPersonaStore",
    "Composer",
    "CompositionTrace",
    "ConfigError",
    "Demographics",
    "ElementChoice",
    "EmbeddedPersona",
    "Embedder",
    "EmbedderError",
    "EmptyQueryError",
    "FeedbackReranker",
    "FieldProblem",
    "FunctionImageEvaluator",
    "GeneratedImage",
    "GenerationError",
    "GenerationRequest",
    "ImageGateConfig",
    "InMemoryPersonaStore",
    "IngestReport",
    "InvalidQueryError",
    "LLMComposer",
    "LLMComposerConfig",
    "METHODS",
    "MaskedSimilarityEvaluator",
    "MiniLMEmbedder",
    "ModelLoadError",
    "NoPostsError",
    "NodeEvent",
    "OpenAIEmbedder",
    "Persona",
    "PersonaList",
    "PersonaMemoryStore",
    "PersonaNotFoundError",
    "PersonaStore",
    "PersonaTypeError",
    "PersonaValidationError",
    "PersonalizationAgent",
    "PersonalizationResult",
    "Personalizer",
    "PooledEmbedder",
    "Post",
    "ProviderAuthError",
    "ProviderError",
    "ProviderResponseError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "RetrievalTrace",
    "RunFileError",
    "RunTimeoutError",
    "StoreError",
    "Task",
    "TemplateComposer",
    "TextGateConfig",
    "UpsertResult",
    "VLMJudgeEvaluator",
    "VPRAGConfig",
    "VPTTError",
    "VPTTScorer",
    "VPTTSettings",
    "VPTTTextScorer",
    "__version__",
    "agent_for",
    "allocate_quotas",
    "apersonalize",
    "build_generator",
    "compare_methods",
    "default_personalizer",
    "dump_personas",
    "effective_posts",
    "load_personas",
    "parse_persona",
    "personalize",
    "post_weights",
    "score_prompt",
    "vptt_score",
]
