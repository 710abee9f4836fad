"""``/api/personalize`` (JSON, and a server-sent event stream), ``/api/compare``, ``/api/score`` and
``/api/threads``: thin calls into the agent and the SDK's front-door functions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from vptt.agents.conversation import Turn
from vptt.core.errors import VPTTError
from vptt.sdk.agent import NodeEvent
from vptt.sdk.api import MethodComparison, PromptScore, compare_methods, score_prompt
from vptt.sdk.server.auth import Grant, grant
from vptt.sdk.server.errors import error_body
from vptt.sdk.server.schemas import CompareRequest, ErrorReply, PersonalizeRequest, ScoreRequest
from vptt.sdk.server.service import Service, image_links, service

router = APIRouter(prefix="/api", tags=["personalize"],
                   responses={400: {"model": ErrorReply}, 401: {"model": ErrorReply}, 403: {"model": ErrorReply},
                              404: {"model": ErrorReply}})
SSE_DOC = {"200": {"content": {"text/event-stream": {"schema": {"type": "string", "description": (
    "events: node, token, retrieval, candidate, gate, image, progress, then result (or error); each "
    "`data:` line is one JSON object")}}}}}
_NODE_KEYS = ("status", "prompt", "chosen", "method", "fallback", "next_step")


def _run_kwargs(req: PersonalizeRequest, g: Grant) -> dict[str, Any]:
    g.check(req.persona_id)
    return {"method": req.method, "seed": req.seed, "refine": req.refine,
            "thread_id": g.thread(req.thread_id) if req.thread_id else None}


@router.post("/personalize", summary="Personalize a query for a persona (one turn of a conversation with "
                                     "thread_id)")
def personalize(req: PersonalizeRequest, g: Grant = Depends(grant), svc: Service = Depends(service)) -> Any:
    result = svc.agent.run(req.persona_id, req.query, **_run_kwargs(req, g))
    return svc.payload(result)


def sse(kind: str, data: Any) -> bytes:
    """One server-sent event."""
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n".encode()


def _event_data(event: NodeEvent, persona_id: str) -> dict[str, Any]:
    """What a client sees of an event: node updates as their keys and small fields, images as URLs."""
    data = dict(event.data)
    if event.kind == "node":
        small = {k: data[k] for k in _NODE_KEYS if data.get(k) is not None}
        return {"node": event.node, "keys": sorted(data), **small}
    if event.kind == "image":
        data["image"] = {**data["image"], **image_links(persona_id, data["image"])}
    return {"node": event.node, **data}


@router.post("/personalize/stream", responses=SSE_DOC,  # type: ignore[arg-type]
             summary="The same run as a server-sent event stream (tokens, trace, gate decisions, images)")
async def personalize_stream(req: PersonalizeRequest, g: Grant = Depends(grant),
                             svc: Service = Depends(service)) -> StreamingResponse:
    events = svc.agent.stream(req.persona_id, req.query, **_run_kwargs(req, g))
    first = await run_in_threadpool(next, events)  # bad requests fail here, as a plain HTTP error

    def body() -> Iterator[bytes]:
        event: NodeEvent | None = first
        try:
            while event is not None:
                if event.result is not None:
                    yield sse("result", svc.payload(event.result))
                else:
                    yield sse(event.kind, _event_data(event, req.persona_id))
                event = next(events, None)
        except VPTTError as exc:
            status, err = error_body(exc)
            yield sse("error", {**err, "status": status})

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/compare", response_model=list[MethodComparison],
             summary="Every method's prompt side by side, each with its VPTT score")
def compare(req: CompareRequest, g: Grant = Depends(grant), svc: Service = Depends(service)) -> Any:
    g.check(req.persona_id)
    return compare_methods(req.persona_id, req.query, methods=req.methods, personalizer=svc.personalizer,
                           composer=svc.agent.components.composer)


@router.post("/score", response_model=PromptScore, summary="The VPTT score of a given prompt for a persona")
def score(req: ScoreRequest, g: Grant = Depends(grant), svc: Service = Depends(service)) -> Any:
    g.check(req.persona_id)
    return score_prompt(req.persona_id, req.prompt, personalizer=svc.personalizer)


@router.get("/threads/{thread_id}", response_model=list[Turn], summary="The turns of one of your conversations")
def thread(thread_id: str, g: Grant = Depends(grant), svc: Service = Depends(service)) -> Any:
    turns = svc.agent.history(g.thread(thread_id))
    for t in turns:
        g.check(t.persona_id)
    return turns
