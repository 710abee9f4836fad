"""One settings object for the whole SDK (pydantic-settings).

Precedence, highest first: **arguments** (``VPTTSettings(tau=0.2)``, CLI options) > **environment**
(``VPTT_<FIELD>``, e.g. ``VPTT_TAU=0.2``) > **defaults**. Remote providers have one role each (embedder,
LLM composer, image generator, VLM judge) with its own ``*_api_key`` and ``*_base_url``; a role without a
key falls back to ``OPENAI_API_KEY``.

Example:
    >>> s = VPTTSettings(tau=0.2, store="memory")
    >>> s.tau, s.store
    (0.2, 'memory')
"""

from __future__ import annotations

import difflib
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vptt.core.devices import check_device
from vptt.core.errors import ConfigError

Role = Literal["embedder", "llm", "images", "judge"]
ROLES: tuple[str, ...] = ("embedder", "llm", "images", "judge")
_RENAMED = {"VPTT_OPENAI_API_KEY": "VPTT_EMBEDDER_API_KEY", "VPTT_OPENAI_BASE_URL": "VPTT_EMBEDDER_BASE_URL",
            "VPTT_FEEDBACK_API_KEY": "VPTT_LLM_API_KEY"}


def default_data_dir() -> Path:
    """The per-user data directory: ``$XDG_DATA_HOME/vptt`` (``~/.local/share/vptt``) on Linux,
    ``~/Library/Application Support/vptt`` on macOS, ``%LOCALAPPDATA%\\vptt`` on Windows."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "vptt"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "vptt"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "vptt"


class VPTTSettings(BaseSettings):
    """Where personas live, how texts are embedded, VPRAG defaults and the remote providers.

    Every field can be given as an argument or an environment variable ``VPTT_<FIELD>`` (arguments win).
    Invalid values raise :class:`~vptt.core.errors.ConfigError` naming the setting and where it came from.
    """

    model_config = SettingsConfigDict(env_prefix="VPTT_", extra="forbid", validate_default=True)

    # -- where persona memory lives
    data_dir: Path = Field(default_factory=default_data_dir,
                           description="embedded Chroma database and embedding cache (per-user by default)")
    store: Literal["chroma", "memory"] = Field(default="chroma", description="persona store backend")
    chroma_host: str | None = Field(default=None, description="a Chroma server instead of the embedded DB")
    chroma_port: int = Field(default=8000, ge=1, le=65535, description="port of the Chroma server")
    chroma_ssl: bool = Field(default=False, description="talk to the Chroma server over HTTPS")
    collection_prefix: str = Field(default="vptt", description="prefix of this project's Chroma collections")
    chroma_timeout_s: float = Field(default=60.0, gt=0, description="seconds a Chroma server may take per request")
    # -- embeddings
    embedder: Literal["minilm", "openai"] = Field(default="minilm", description="text embedder: local MiniLM or an OpenAI-compatible endpoint")
    embedder_model: str | None = Field(default=None, description="MiniLM directory, or OpenAI model name")
    embedding_dim: int | None = Field(default=None, gt=0, description="vector size of an OpenAI-compatible model")
    embedder_base_url: str | None = Field(default=None, description="endpoint of the embedder role")
    embedder_api_key: SecretStr | None = Field(default=None, description="key of the embedder role (else OPENAI_API_KEY)")
    embedding_cache: bool = Field(default=True, description="cache every embedding on disk (SQLite, keyed by model identity and text)")
    device: str = Field(default="cpu", description="cpu, cuda, cuda:N or mps (local models); checked to exist")
    embedder_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        default="auto", description="MiniLM engine: auto (ONNX Runtime on CPU, torch on a GPU), torch, onnx "
                                    "(fp32, equal to torch) or onnx-int8 (faster, approximate: its own identity)")
    embed_workers: int = Field(default=1, ge=0, description="encoder processes (0: one per core); each gets "
                                                            "cores/workers threads")
    embed_threads: int | None = Field(default=None, ge=1, description="threads per encoder (default: cores / "
                                                                      "embed_workers)")
    embed_pool: Literal["process", "ray"] = Field(default="process", description="where embed_workers run: "
                                                  "local processes or Ray actors")
    ray_address: str | None = Field(default=None, description="Ray cluster for embed_pool=ray (default: a "
                                                              "local Ray)")
    models_dir: Path | None = Field(default=None, description="exported encoder models (ONNX), built once; "
                                                              "default <data_dir>/models")
    # -- retrieval and composition
    tau: float = Field(default=0.1, gt=0, description="softmax temperature of the post weights")
    per_category_budget: int = Field(default=3, ge=0, description="VPRAG budget Q^(k) per category")
    token_budget: int | None = Field(default=None, gt=0, description="token budget L of the template composer (cl100k_base)")
    include_summary: bool = Field(default=True, description="VPRAG and Comb. give the composer the persona "
                                                            "summary S_p (the paper's f_compose); False is "
                                                            "an ablation")
    text_gate_threshold: float | None = Field(
        default=None, ge=0, le=1, description="VPTT_score threshold of the text gate in personalize(); None scores "
                                              "nothing")
    # -- remote providers, one role each (key falls back to OPENAI_API_KEY)
    llm_model: str = Field(default="gpt-4o-mini", description="chat model of the llm role (LLM composer, LLM-backed runs)")
    llm_base_url: str | None = Field(default=None, description="endpoint of the llm role (vLLM, Ollama, ...)")
    llm_api_key: SecretStr | None = Field(default=None, description="key of the llm role (else OPENAI_API_KEY)")
    llm_concurrency: int = Field(default=16, ge=1, description="LLM requests in flight in bulk runs")
    llm_requests_per_min: float | None = Field(default=None, gt=0, description="optional LLM request rate limit")
    llm_tokens_per_min: float | None = Field(default=None, gt=0, description="optional LLM token rate limit")
    llm_cache: bool = Field(default=True, description="keep LLM completions in <data_dir>/llm_cache.sqlite")
    images_model: str = Field(default="gpt-image-1", description="model of the images role (OpenAI image generator)")
    images_base_url: str | None = Field(default=None, description="endpoint of the images role")
    images_api_key: SecretStr | None = Field(default=None, description="key of the images role (else OPENAI_API_KEY)")
    judge_model: str = Field(default="gpt-4o", description="vision model of the judge role (VLM judge)")
    judge_base_url: str | None = Field(default=None, description="endpoint of the judge role")
    judge_api_key: SecretStr | None = Field(default=None, description="key of the judge role (else OPENAI_API_KEY)")
    request_timeout_s: float = Field(default=60.0, gt=0, description="hard timeout of one provider request")

    def __init__(self, **values: Any) -> None:
        _check_environment()
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, values)) from None

    @field_validator("tau", "request_timeout_s", "text_gate_threshold", "chroma_timeout_s")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        try:
            return check_device(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "embeddings.sqlite"

    @property
    def llm_cache_path(self) -> Path:
        """The persistent LLM response cache every run shares."""
        return self.data_dir / "llm_cache.sqlite"

    @property
    def onnx_dir(self) -> Path:
        """Where exported ONNX encoders are cached (``models_dir``, else ``<data_dir>/models``)."""
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    def api_key(self, role: Role) -> str | None:
        """The API key of a provider role: ``VPTT_<ROLE>_API_KEY``, else ``OPENAI_API_KEY``, else None."""
        if role not in ROLES:
            raise ConfigError(f"unknown provider role {role!r}; roles: {', '.join(ROLES)}")
        key: SecretStr | None = getattr(self, f"{role}_api_key")
        if key is not None and key.get_secret_value():
            return key.get_secret_value()
        return os.environ.get("OPENAI_API_KEY") or None

    def base_url(self, role: Role) -> str | None:
        """The endpoint of a provider role (None: the OpenAI SDK's default, or ``OPENAI_BASE_URL``)."""
        if role not in ROLES:
            raise ConfigError(f"unknown provider role {role!r}; roles: {', '.join(ROLES)}")
        return getattr(self, f"{role}_base_url")  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        """The settings as plain data, keys replaced by whether one is set (safe to log or print)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) or name.endswith("_api_key"):
                out[name] = "set" if value is not None else None
            else:
                out[name] = str(value) if isinstance(value, Path) else value
        return out


def default_request_timeout(fallback: float = 60.0) -> float:
    """``VPTT_REQUEST_TIMEOUT_S`` when set (validated), else ``fallback``: the default ``timeout_s`` of every
    provider client (chat, embeddings, images, judge, persona generation, feedback data)."""
    raw = os.environ.get("VPTT_REQUEST_TIMEOUT_S")
    if raw is None or not raw.strip():
        return fallback
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"environment VPTT_REQUEST_TIMEOUT_S={raw!r}: must be a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"environment VPTT_REQUEST_TIMEOUT_S={raw!r}: must be a positive finite number of "
                          "seconds")
    return value


def _check_environment() -> None:
    """Renamed variables are an error (silently ignoring them would surprise); unknown ones a warning."""
    renamed = [f"{old} is now {new}" for old, new in _RENAMED.items() if old in os.environ]
    if renamed:
        raise ConfigError("renamed settings: " + "; ".join(renamed))
    fields = {f"VPTT_{name.upper()}" for name in VPTTSettings.model_fields}
    for var in os.environ:
        if var.startswith("VPTT_") and var not in fields:
            close = difflib.get_close_matches(var, sorted(fields), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.warn(f"unknown setting {var} is ignored{hint}", stacklevel=3)


def _explain(exc: ValidationError, values: dict[str, Any]) -> str:
    lines = []
    for e in exc.errors():
        name = str(e["loc"][0]) if e["loc"] else "?"
        var = f"VPTT_{name.upper()}"
        if name in values:
            where = f"argument {name}={values[name]!r}"
        elif var in os.environ:
            where = f"environment {var}={os.environ[var]!r}"
        else:
            where = name
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(name, list(VPTTSettings.model_fields), n=1)
            msg = "no such setting" + (f"; did you mean {close[0]}?" if close else "")
        lines.append(f"{where}: {msg}")
    return "invalid settings: " + "; ".join(lines)


def settings_table() -> str:
    """Every setting as a Markdown table (variable, type, default, meaning): the docs' reference."""
    rows = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in VPTTSettings.model_fields.items():
        kind = str(field.annotation).replace("typing.", "").replace("pathlib.", "").replace(
            "pydantic.types.", "").replace("<class '", "").replace("'>", "").replace(" | ", " or ")
        if name == "data_dir":
            default = "per-user data directory"
        elif field.default is None or name.endswith("_api_key"):
            default = "—"
        else:
            default = f"`{field.default}`"
        meaning = (field.description or "").replace("|", "/")
        rows.append(f"| `VPTT_{name.upper()}` | {kind} | {default} | {meaning} |")
    return "\n".join(rows)



_TABLE_START = "<!-- settings-table"
_TABLE_END = "<!-- /settings-table -->"


def fill_settings_table(markdown: str) -> str:
    """``markdown`` with the text between the settings-table markers replaced by :func:`settings_table`."""
    start = markdown.index(_TABLE_START)
    head_end = markdown.index("-->", start) + len("-->")
    end = markdown.index(_TABLE_END, head_end)
    return markdown[:head_end] + "\n" + settings_table() + "\n" + markdown[end:]

