"""The creator web page (static HTML/JS/CSS served from the package; no build step, nothing from a CDN)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from vptt.sdk.server.service import Service, service

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/api/health", summary="Liveness, version and what the server runs with")
def health(svc: Service = Depends(service)) -> dict[str, Any]:
    c = svc.agent.components
    return {"status": "ok", "version": package_version(), "store": svc.store.kind,
            "composer": getattr(c.composer, "name", "composer"), "generator": getattr(c.generator, "name", None),
            "text_gate": c.text_scorer is not None, "auth": bool(svc.config.tokens)}


def package_version() -> str:
    try:
        return version("vptt")
    except PackageNotFoundError:
        return "unknown"
