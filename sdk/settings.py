"""Settings from arguments or ``VPTT_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class VPTTSettings(BaseSettings):
    """Where personas live, how texts are embedded, and VPRAG defaults.

    Every field can be set by an environment variable ``VPTT_<FIELD>`` (e.g. ``VPTT_DATA_DIR``,
    ``VPTT_STORE=memory``, ``VPTT_CHROMA_HOST=127.0.0.1``, ``VPTT_EMBEDDER=openai``).
    """

    model_config = SettingsConfigDict(env_prefix="VPTT_", extra="forbid", validate_default=True)

    data_dir: Path = Field(default=Path(".vptt"), description="embedded Chroma database and embedding cache")
    store: Literal["chroma", "memory"] = "chroma"
    chroma_host: str | None = Field(default=None, description="a Chroma server instead of the embedded DB")
    chroma_port: int = 8000
    chroma_ssl: bool = False
    collection_prefix: str = "vptt"
    embedder: Literal["minilm", "openai"] = "minilm"
    embedder_model: str | None = Field(default=None, description="MiniLM directory, or OpenAI model name")
    embedding_dim: int | None = Field(default=None, description="vector size of an OpenAI-compatible model")
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    embedding_cache: bool = True
    device: str = "cpu"
    tau: float = Field(default=0.1, gt=0)
    per_category_budget: int = Field(default=3, ge=0)
    token_budget: int | None = Field(default=None, gt=0)
    include_summary: bool = False
    text_gate_threshold: float | None = Field(
        default=None, description="VPTT_score threshold of the text gate in personalize(); None scores nothing")

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "embeddings.sqlite"
