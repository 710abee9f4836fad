"""Configuration of ``vptt serve``: where it binds, who may call it, and what the agent behind it uses."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from vptt.core.errors import ConfigError

TOKEN_ENV = "VPTT_SERVE_TOKEN"


class TokenGrant(BaseModel):
    """One bearer token and what it may reach: every persona (``personas`` None) or only the listed ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr = Field(repr=False)
    personas: frozenset[str] | None = None
    name: str = ""


class ServeConfig(BaseModel):
    """Settings of the HTTP service (the persona store itself comes from ``VPTTSettings``).

    Attributes:
        host / port: where to bind. Anything but loopback needs at least one token.
        tokens: bearer tokens (none on loopback: open to local callers).
        max_body_bytes / max_upload_bytes: request size limits (JSON requests / persona and photo uploads).
        composer ... steps: the agent (see :class:`~vptt.agents.context.AgentContext`).
        threads: checkpoint store of conversations (SQLite file, or ``":memory:"``).
        save_dir: where generated images are kept (a folder per persona).
        vision_model: vision chat model of the inverse mode (photos -> posts), at the ``llm`` endpoint.
        batch_embeddings: embed the queries of concurrent requests in shared batches.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    tokens: tuple[TokenGrant, ...] = ()
    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    composer: Literal["template", "llm"] = "template"
    llm_model: str | None = None
    llm_base_url: str | None = None
    text_gate_threshold: float | None = Field(default=None, ge=0, le=1)
    max_candidates: int = Field(default=4, ge=1)
    generator: Literal["none", "diffusers", "openai"] = "none"
    generator_model: str | None = None
    images_base_url: str | None = None
    steps: int | None = None
    threads: str = ":memory:"
    save_dir: Path | None = None
    vision_model: str | None = None
    batch_embeddings: bool = True

    def check_binding(self) -> None:
        """A server reachable from other machines must require a token."""
        if not is_loopback(self.host) and not self.tokens:
            raise ConfigError(f"binding to {self.host!r} exposes persona memory to the network: give a bearer "
                              f"token (--token-file FILE, or ${TOKEN_ENV}) or bind to 127.0.0.1")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_tokens(path: str | os.PathLike[str] | None = None) -> tuple[TokenGrant, ...]:
    """Tokens from a JSON file (``[{"token": "...", "personas": ["a", "b"], "name": "app"}, ...]``) and from
    ``$VPTT_SERVE_TOKEN`` (one token that reaches every persona)."""
    grants: list[TokenGrant] = []
    if path is not None:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            grants += [TokenGrant.model_validate(g) for g in raw]
        except (OSError, ValueError, TypeError, ValidationError) as exc:
            raise ConfigError(f"token file {os.fspath(path)}: {exc}; expected a JSON list of "
                              '{"token": "...", "personas": [...] or null, "name": "..."}') from None
    env = os.environ.get(TOKEN_ENV)
    if env:
        grants.append(TokenGrant(token=SecretStr(env), name="env"))
    if any(len(g.token.get_secret_value()) < 16 for g in grants):
        raise ConfigError("bearer tokens must have at least 16 characters (e.g. `python -c \"import secrets; "
                          "print(secrets.token_urlsafe(32))\"`)")
    return tuple(grants)
