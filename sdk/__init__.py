"""vptt: persona-aware visual personalization (VPRAG retrieval, VPTT score, image evaluators).

The public surface::

    from sdk import personalize, Personalizer, Persona, load_personas

    result = personalize("p01_kyoto_ceramicist", "A preferred outdoor spot")
    print(result.prompt, result.trace.n_eff)
"""

from agents.composer import Composer, TemplateComposer
from agents.methods import METHODS
from agents.trace import CategoryStep, ChosenPost, CompositionTrace, ElementChoice, RetrievalTrace
from agents.vprag import VPRAGConfig, allocate_quotas, effective_posts, post_weights
from stores.base import PersonaStore, UpsertResult
from stores.embedders import Embedder, MiniLMEmbedder, OpenAIEmbedder
from stores.embedding_cache import CachedEmbedder
from stores.memory import InMemoryPersonaStore
from stores.records import EmbeddedPersona

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
from .personalizer import Personalizer, agent_for, apersonalize, default_personalizer, personalize
from .personas import PersonaList, dump_personas, load_personas, parse_persona
from .results import IngestReport, PersonalizationResult
from .settings import VPTTSettings

__version__ = "0.1.0"


_LAZY = {  # heavy imports (LangGraph, openai, diffusers) load on first use
    "PersonalizationAgent": "sdk.agent", "AgentConfig": "sdk.agent", "AgentResult": "sdk.agent",
    "NodeEvent": "sdk.agent", "LLMComposer": "agents.llm_composer", "LLMComposerConfig": "agents.llm_composer",
    "TextGateConfig": "agents.gates", "ImageGateConfig": "agents.gates", "VPTTTextScorer": "agents.gates",
    "MaskedSimilarityEvaluator": "agents.gates", "VLMJudgeEvaluator": "agents.gates",
    "FunctionImageEvaluator": "agents.gates", "build_generator": "agents.generators",
    "GenerationRequest": "agents.generators", "GeneratedImage": "agents.generators",
    "VPTTScorer": "evaluators.vptt_score", "vptt_score": "evaluators.vptt_score",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdk' has no attribute {name!r}")


def ChromaPersonaStore(*args, **kwargs):  # noqa: N802 - lazy re-export of the class (chromadb loads on use)
    """Create a :class:`stores.chroma.ChromaPersonaStore` (imported lazily; see its docs)."""
    from stores.chroma import ChromaPersonaStore as _Chroma

    return _Chroma(*args, **kwargs)


__all__ = [
    *_LAZY,
    "GenerationError",
    "ProviderAuthError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "RunTimeoutError",
    "agent_for",
    "apersonalize",
    "CANONICAL_CATEGORIES",
    "METHODS",
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
    "FieldProblem",
    "InMemoryPersonaStore",
    "IngestReport",
    "MiniLMEmbedder",
    "ModelLoadError",
    "NoPostsError",
    "OpenAIEmbedder",
    "Persona",
    "PersonaList",
    "PersonaNotFoundError",
    "PersonaStore",
    "PersonaValidationError",
    "PersonalizationResult",
    "Personalizer",
    "Post",
    "ProviderError",
    "RetrievalTrace",
    "StoreError",
    "TemplateComposer",
    "UpsertResult",
    "VPRAGConfig",
    "VPTTError",
    "VPTTSettings",
    "__version__",
    "allocate_quotas",
    "default_personalizer",
    "dump_personas",
    "effective_posts",
    "load_personas",
    "parse_persona",
    "personalize",
    "post_weights",
]
