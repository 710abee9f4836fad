"""SDK errors mapped once to HTTP answers (the same messages as the SDK's typed errors), and request size
limits enforced before a route runs."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vptt.core.errors import (
    ConfigError,
    InvalidQueryError,
    NoPostsError,
    PersonaNotFoundError,
    PersonaTypeError,
    PersonaValidationError,
    ProviderAuthError,
    ProviderError,
    RateLimitedError,
    RunTimeoutError,
    StoreError,
    VPTTError,
)

STATUS: tuple[tuple[type[BaseException], int], ...] = (  # first match wins
    (PersonaNotFoundError, 404),
    (PersonaValidationError, 422),
    (InvalidQueryError, 400),  # empty, not text, or invalid Unicode
    (PersonaTypeError, 400),
    (NoPostsError, 409),
    (ConfigError, 400),
    (RunTimeoutError, 504),
    (RateLimitedError, 503),
    (ProviderAuthError, 502),
    (ProviderError, 502),
    (StoreError, 503),
    (KeyError, 404),  # e.g. removing a post the persona does not have
    (VPTTError, 500),
)


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, JSON body)`` of an SDK error: ``{"error": type, "detail": message}``."""
    status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
    detail = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    body: dict[str, Any] = {"error": type(exc).__name__, "detail": detail}
    if isinstance(exc, PersonaValidationError):
        body["problems"] = [{"file": p.file, "line": p.line, "field": p.field, "message": p.message}
                            for p in exc.problems]
    return status, body


def install_error_handlers(app: FastAPI) -> None:
    """Answer SDK errors with their status and message; never a traceback."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        status, body = error_body(exc)
        return JSONResponse(body, status_code=status)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 500)
        name = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed"}.get(status, "HTTPError")
        return JSONResponse({"error": name, "detail": getattr(exc, "detail", str(exc))}, status_code=status,
                            headers=getattr(exc, "headers", None))

    app.add_exception_handler(VPTTError, handle)
    app.add_exception_handler(KeyError, handle)
    app.add_exception_handler(StarletteHTTPException, http_error)


class BodyLimit:
    """ASGI middleware: bodies above the limit get HTTP 413 before the app reads them.

    ``upload_paths`` (prefix, method) pairs get ``upload_bytes``; every other request ``body_bytes``. The body
    is read up to the limit and replayed to the app, so no route ever sees a partial upload.
    """

    def __init__(self, app: Any, *, body_bytes: int, upload_bytes: int,
                 upload_paths: tuple[tuple[str, str, str], ...]) -> None:
        self.app, self.body_bytes, self.upload_bytes = app, body_bytes, upload_bytes
        self.upload_paths = upload_paths

    def _limit(self, scope: dict[str, Any]) -> int:
        path, method = scope.get("path", ""), scope.get("method", "")
        for prefix, suffix, verb in self.upload_paths:
            if method == verb and path.startswith(prefix) and path.endswith(suffix):
                return self.upload_bytes
        return self.body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await _too_large(send, limit)
                return
            if not message.get("more_body"):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Any, limit: int) -> None:
    import json

    data = json.dumps({"error": "RequestTooLarge",
                       "detail": f"request body larger than {limit} bytes; send less (or raise the server's "
                                 "--max-upload-mb / --max-body-kb)"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
