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
    ModelLoadError,
    NoPostsError,
    PersonaNotFoundError,
    PersonaValidationError,
    ProviderError,
    StoreError,
    VPTTError,
)
from .models import CANONICAL_CATEGORIES, Demographics, Persona, Post
from .personalizer import Personalizer, default_personalizer, personalize
from .personas import PersonaList, dump_personas, load_personas, parse_persona
from .results import IngestReport, PersonalizationResult
from .settings import VPTTSettings

__version__ = "0.1.0"


def ChromaPersonaStore(*args, **kwargs):  # noqa: N802 - lazy re-export of the class (chromadb loads on use)
    """Create a :class:`stores.chroma.ChromaPersonaStore` (imported lazily; see its docs)."""
    from stores.chroma import ChromaPersonaStore as _Chroma

    return _Chroma(*args, **kwargs)


__all__ = [
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
