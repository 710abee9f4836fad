"""Bearer tokens and persona scopes: a token limited to some persona ids can read or change nothing else."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vptt.sdk.server.config import TokenGrant

bearer = HTTPBearer(auto_error=False, description="A token from the server's token file or $VPTT_SERVE_TOKEN.")


@dataclass(frozen=True)
class Grant:
    """What the caller may reach. ``key`` namespaces its conversation threads."""

    key: str
    personas: frozenset[str] | None = None

    def allows(self, persona_id: str) -> bool:
        return self.personas is None or persona_id in self.personas

    def check(self, persona_id: str) -> None:
        """Raise 403 unless this grant reaches ``persona_id``."""
        if not self.allows(persona_id):
            raise HTTPException(403, f"this token may not access persona {persona_id!r}")

    def check_all(self, persona_ids: Iterable[str]) -> None:
        denied = sorted({p for p in persona_ids if not self.allows(p)})
        if denied:
            raise HTTPException(403, f"this token may not access persona(s) {denied}; nothing was written")

    def visible(self, persona_ids: Iterable[str]) -> list[str]:
        return [p for p in persona_ids if self.allows(p)]

    def thread(self, thread_id: str) -> str:
        """The checkpoint thread of a caller's conversation (callers never share threads)."""
        return f"{self.key}:{thread_id}"


OPEN = Grant(key="open")


def _key(grant: TokenGrant) -> str:
    return "t" + hashlib.sha256(grant.token.get_secret_value().encode()).hexdigest()[:16]


def grant(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Grant:
    """The caller's :class:`Grant` (401 without a valid token when the server has tokens)."""
    tokens: tuple[TokenGrant, ...] = request.app.state.config.tokens
    if not tokens:
        return OPEN
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    sent = credentials.credentials.encode()
    match = None
    for g in tokens:  # compare against every token, in constant time each
        if hmac.compare_digest(sent, g.token.get_secret_value().encode()):
            match = g
    if match is None:
        raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    return Grant(key=_key(match), personas=match.personas)
