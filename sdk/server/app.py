"""The FastAPI app of ``vptt serve``: routers, error handlers, size limits, the static web page."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from vptt.sdk.server.config import ServeConfig
from vptt.sdk.server.errors import BodyLimit, install_error_handlers
from vptt.sdk.server.routers import pages, personas, runs
from vptt.sdk.server.service import Service

DESCRIPTION = """Persona-aware visual personalization over HTTP: persona memory, personalization (JSON or a
server-sent event stream), method comparison and VPTT scores. Send `Authorization: Bearer <token>` when the
server has tokens (always when it binds to anything but loopback)."""


def create_app(config: ServeConfig | None = None, *, service: Service | None = None) -> FastAPI:
    """The app. ``service`` defaults to one built from ``config`` and the ``VPTT_*`` settings.

    Raises:
        ConfigError: a non-loopback host without tokens.
    """
    config = config or ServeConfig()
    config.check_binding()
    app = FastAPI(title="vptt", version=pages.package_version(), description=DESCRIPTION)
    app.state.config = config
    app.state.service = service or Service(config)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, body_bytes=config.max_body_bytes, upload_bytes=config.max_upload_bytes,
                       upload_paths=(("/api/personas", "/api/personas", "POST"),
                                     ("/api/personas/", "/photos", "POST")))
    for router in (personas.router, runs.router, pages.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    return app
