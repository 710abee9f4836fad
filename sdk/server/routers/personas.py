"""``/api/personas``: upload JSONL, list, show, delete; add or remove a post; add photos (inverse mode);
the persona's generated images."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import ValidationError

from vptt.agents.results import IngestReport
from vptt.core.errors import FieldProblem, PersonaNotFoundError, PersonaValidationError
from vptt.core.models import Persona, Post
from vptt.core.personas import load_personas
from vptt.sdk.api import PhotosReport, add_photos
from vptt.sdk.server.auth import Grant, grant
from vptt.sdk.server.schemas import ErrorReply, PersonaSummary, UpsertReply
from vptt.sdk.server.service import Service, service

router = APIRouter(prefix="/api/personas", tags=["personas"],
                   responses={401: {"model": ErrorReply}, 403: {"model": ErrorReply}})
JSONL_BODY = {"requestBody": {"required": True, "content": {
    "application/x-ndjson": {"schema": {"type": "string", "description": "persona JSONL, one per line"}}}}}


@router.get("", response_model=list[PersonaSummary], summary="List the personas this token may see")
def list_personas(g: Grant = Depends(grant), svc: Service = Depends(service)) -> list[PersonaSummary]:
    out = []
    for pid in g.visible(svc.store.list_ids()):
        try:
            p = svc.store.get(pid)
        except PersonaNotFoundError:  # deleted meanwhile
            continue
        d = p.demographics
        out.append(PersonaSummary(persona_id=pid, posts=len(p.posts), summary=p.summary, occupation=d.occupation,
                                  city=d.city, country=d.country))
    return out


@router.post("", response_model=IngestReport, openapi_extra=JSONL_BODY,
             responses={413: {"model": ErrorReply}, 422: {"model": ErrorReply}},
             summary="Upload personas as JSONL (all or nothing: a bad line writes nothing)")
async def upload(request: Request, name: str = "upload.jsonl", g: Grant = Depends(grant),
                 svc: Service = Depends(service)) -> IngestReport:
    body = await request.body()
    label = Path(name).name or "upload.jsonl"
    personas = await run_in_threadpool(_parse_jsonl, body, label)
    g.check_all(p.persona_id for p in personas)
    report = await run_in_threadpool(svc.personalizer.ingest, personas)
    report.path = label
    return report


def _parse_jsonl(body: bytes, label: str) -> list[Persona]:
    """Validate an uploaded JSONL body with the SDK's reader; problems name the upload, line and field."""
    with tempfile.TemporaryDirectory(prefix="vptt-upload-") as tmp:
        path = Path(tmp) / "upload.jsonl"
        path.write_bytes(body)
        try:
            return list(load_personas(path))
        except UnicodeDecodeError as exc:
            raise PersonaValidationError([FieldProblem(label, 0, "<encoding>", f"not UTF-8 text: {exc.reason} "
                                                       f"at byte {exc.start}")]) from None
        except PersonaValidationError as exc:
            raise PersonaValidationError([FieldProblem(label, p.line, p.field, p.message)
                                          for p in exc.problems]) from None


@router.get("/{persona_id}", response_model=Persona, summary="One persona with its posts")
def show(persona_id: str, g: Grant = Depends(grant), svc: Service = Depends(service)) -> Any:
    g.check(persona_id)
    return svc.store.get(persona_id).model_dump(mode="json")


@router.delete("/{persona_id}", summary="Delete a persona and everything stored for it")
def delete(persona_id: str, g: Grant = Depends(grant), svc: Service = Depends(service)) -> dict[str, str]:
    g.check(persona_id)
    if not svc.store.delete(persona_id):
        raise PersonaNotFoundError(persona_id, svc.store.kind)
    return {"deleted": persona_id}


@router.post("/{persona_id}/posts", response_model=UpsertReply, summary="Add (or replace) one post")
def add_post(persona_id: str, post: dict[str, Any] = Body(..., examples=[{
        "post_id": "p31", "type": "activity", "caption": "A tram at dusk on a steep street.",
        "elements": {"lighting": ["dusk glow"]}}]),
        g: Grant = Depends(grant), svc: Service = Depends(service)) -> Any:
    g.check(persona_id)
    try:
        parsed = Post.model_validate(post)
    except ValidationError as exc:
        raise PersonaValidationError([FieldProblem("request", 0, "post." + ".".join(map(str, e["loc"])),
                                                   e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
                                     ) from None
    return svc.store.add_post(persona_id, parsed).__dict__


@router.delete("/{persona_id}/posts/{post_id}", response_model=UpsertReply, summary="Remove one post")
def remove_post(persona_id: str, post_id: str, g: Grant = Depends(grant),
                svc: Service = Depends(service)) -> Any:
    g.check(persona_id)
    return svc.store.remove_post(persona_id, post_id).__dict__


@router.post("/{persona_id}/photos", response_model=PhotosReport, responses={413: {"model": ErrorReply}},
             summary="Add photos: captioned into posts by a vision model (inverse mode)")
async def add_photos_route(persona_id: str, files: list[UploadFile] = File(..., description="image files"),
                           age: int | None = Form(None), gender: str | None = Form(None),
                           city: str | None = Form(None), country: str | None = Form(None),
                           occupation: str | None = Form(None), g: Grant = Depends(grant),
                           svc: Service = Depends(service)) -> PhotosReport:
    g.check(persona_id)
    photos = [(f.filename or f"photo-{i}", await f.read()) for i, f in enumerate(files)]
    demo = {k: v for k, v in {"age": age, "gender": gender, "city": city, "country": country,
                              "occupation": occupation}.items() if v is not None}
    return await run_in_threadpool(add_photos, persona_id, photos, svc.vision_chat(),
                                   personalizer=svc.personalizer, demographics=demo)


@router.get("/{persona_id}/images/{name}", response_class=FileResponse, summary="A generated image",
            responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorReply}})
def image(persona_id: str, name: str, g: Grant = Depends(grant), svc: Service = Depends(service)) -> Any:
    g.check(persona_id)
    path = svc.image_path(persona_id, name)
    if not path.is_file():
        raise KeyError(f"no image {name!r} for persona {persona_id!r}")
    return FileResponse(path, media_type="image/png")
