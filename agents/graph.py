"""The personalization agent as a LangGraph ``StateGraph``.

    load_persona -> retrieve -> compose -> text_gate -+-> compose           (below threshold, candidates left)
                                                      +-> generate -> image_gate -+-> generate   (new seed)
                                                      +-> result                  +-> result

The state holds only plain data (ids, texts, scores, trace dicts, image file paths, chat messages) so every
checkpoint serializes cheaply and a run resumes by thread id. Heavy objects come from the runtime context:
the live components of an in-process agent (:class:`~vptt.agents.context.RunContext`), or, in a served graph,
components built from the plain :class:`~vptt.agents.context.AgentContext` and cached per configuration.

A thread is a conversation: every run is a turn (``turns``, ``messages``), and a run for the same persona
refines the previous turn's prompt (:mod:`vptt.agents.conversation`). With no generator the graph ends after
the text gate ("deferred rendering"). An agent with a feedback re-ranker gets a ``rerank`` node between
``retrieve`` and ``compose`` (paper Sec. 3.3). Nodes write custom stream events (:mod:`vptt.agents.streaming`).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime

from vptt.agents.context import AgentContext, run_context
from vptt.agents.conversation import Turn, mark_repeated, previous_turn, refined_query, retrieval_query
from vptt.agents.gate_nodes import _ms, generate, image_gate, plan, text_gate
from vptt.agents.gates import Candidate, ImageGateConfig, TextGateConfig, subset_trace
from vptt.agents.methods import CAPTION_METHODS, get_method
from vptt.agents.results import Status
from vptt.agents.streaming import TokenStream
from vptt.agents.trace import RetrievalTrace
from vptt.core.checks import check_query
from vptt.core.errors import NoPostsError

NODES = ("load_persona", "retrieve", "compose", "text_gate", "generate", "image_gate", "result")
"""Nodes of the default graph, in pipeline order; ``rerank`` sits between ``retrieve`` and ``compose`` when the
agent has a feedback re-ranker."""
MAX_TURNS = 50
"""Turns a thread keeps in its state (the oldest are dropped)."""
RESET = "__reset__"


def _add_ms(a: Mapping[str, float] | None, b: Mapping[str, float] | None) -> dict[str, float]:
    if b is not None and b.get(RESET):  # a new run of the thread starts its timings afresh
        return {k: v for k, v in b.items() if k != RESET}
    out = dict(a or {})
    for k, v in (b or {}).items():
        out[k] = round(out.get(k, 0.0) + v, 3)
    return out


def _append(a: list[Any] | None, b: list[Any] | None) -> list[Any]:
    """Append; ``None`` empties the list (a new run of the thread)."""
    return [] if b is None else [*(a or []), *b]


def _append_turns(a: list[Any] | None, b: list[Any] | None) -> list[Any]:
    return _append(a, b)[-MAX_TURNS:]


class AgentState(TypedDict, total=False):
    """Checkpointed state: plain data only. Input keys: ``persona_id``, ``query`` (or a human message in
    ``messages``), ``method``, ``seed``, ``refine``, ``init_image`` (a path), ``persona_json``, ``agent_options`` (how an in-process agent
    was configured, no secrets, so that a resume elsewhere can rebuild it)."""

    # input of a run
    persona_id: str
    persona_json: str | None
    query: str
    method: str
    seed: int
    init_image: str | None
    refine: bool | None
    agent_options: dict[str, Any] | None
    # one run
    run_id: str
    retrieval_query: str
    previous: dict[str, Any] | None
    fallback: str | None
    trace: dict[str, Any] | None
    pending: dict[str, Any] | None
    candidates: Annotated[list[dict[str, Any]], _append]
    candidate_traces: Annotated[list[dict[str, Any]], _append]
    text_gate: dict[str, Any] | None
    chosen: int | None
    prompt: str | None
    pending_image: dict[str, Any] | None
    images: Annotated[list[dict[str, Any]], _append]
    image_gate: dict[str, Any] | None
    rerank: dict[str, Any] | None
    next_step: str | None
    status: Status | None
    timings_ms: Annotated[dict[str, float], _add_ms]
    request_id: str
    # the conversation
    turns: Annotated[list[dict[str, Any]], _append_turns]
    messages: Annotated[list[AnyMessage], add_messages]


_PER_RUN = ("previous", "fallback", "trace", "pending", "text_gate", "chosen", "prompt", "pending_image",
            "image_gate", "rerank", "next_step", "status")


def _text(message: Any) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)


def _request(state: Mapping[str, Any]) -> tuple[str, str, list[AnyMessage]]:
    """This run's request: a new human message, else ``query``; and the message to record (if any)."""
    msgs = state.get("messages") or []
    last = msgs[-1] if msgs else None
    if isinstance(last, HumanMessage) and last.id != state.get("request_id"):
        return _text(last), str(last.id), []
    query = check_query(state.get("query") or "")
    rid = f"request-{uuid.uuid4().hex}"
    return query, rid, [HumanMessage(content=query, id=rid)]


# --------------------------------------------------------------------------- nodes
def load_persona(state: AgentState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Start a turn: the request, the persona's memory, the turn being refined; reset the per-run state.

    Falls back to ``persona_only`` for a persona without posts (or raises with ``strict``).
    """
    ctx = run_context(state, runtime)
    ctx.check_deadline("load_persona")
    t0 = time.perf_counter()
    query, request_id, new_messages = _request(state)
    mem = ctx.embedded()
    method, fallback = state.get("method") or "vprag", None
    get_method(method)
    if not mem.persona.posts and method in CAPTION_METHODS:
        if ctx.components.strict:
            raise NoPostsError(f"persona {mem.persona_id!r} has no posts; add posts or use "
                               "method='persona_only'")
        fallback = f"persona {mem.persona_id!r} has no posts: fell back from {method!r} to 'persona_only'"
        method = "persona_only"
    prev = previous_turn(state.get("turns"), mem.persona_id) if state.get("refine") is not False else None
    seed = state.get("seed")
    update: dict[str, Any] = {k: None for k in _PER_RUN}
    update.update(candidates=None, candidate_traces=None, images=None, refine=None,
                  run_id=uuid.uuid4().hex, query=query, request_id=request_id, messages=new_messages,
                  method=method, fallback=fallback, persona_id=mem.persona_id, previous=prev,
                  retrieval_query=retrieval_query(query, prev),
                  seed=int(seed) if seed is not None else random.SystemRandom().randrange(2 ** 30),
                  timings_ms={RESET: 1, "load_persona": _ms(t0)})
    return update


def retrieve(state: AgentState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Embed the (retrieval) query and run the retrieval method (VPRAG or a baseline)."""
    ctx = run_context(state, runtime)
    ctx.check_deadline("retrieve")
    p = ctx.components.personalizer
    t0 = time.perf_counter()
    q_emb = p.embedder.embed_one(state.get("retrieval_query") or state["query"])
    t1 = time.perf_counter()
    mem, method = ctx.embedded(), state["method"]
    cats = p.category_embeddings(mem.categories) if method in ("vprag", "comb") else {}
    trace = get_method(method)(q_emb, mem, cats, ctx.components.vprag_config or p.config)
    if state.get("previous"):
        trace.notes.append(f"follow-up: retrieval ran on {state['retrieval_query']!r}")
    timings = {"embed_query": round((t1 - t0) * 1000, 3), "retrieve": _ms(t1)}
    ctx.memo["trace"] = trace
    dumped = trace.model_dump()
    runtime.stream_writer({"event": "retrieval", "trace": dumped})
    return {"trace": dumped, "timings_ms": timings}


def rerank(state: AgentState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Learnable feedback (Algorithm 1, optional step): sample M candidate retrievals, keep argmax f_theta.

    Only in graphs built with ``rerank=True``. The chosen candidate's trace replaces the retrieval's, so
    ``compose`` composes the re-ranked prompt; every candidate and its predicted score are recorded.
    """
    from vptt.agents.rerank import candidate_prompts

    ctx = run_context(state, runtime)
    ctx.check_deadline("rerank")
    comps, t0 = ctx.components, time.perf_counter()
    mem = ctx.embedded()
    method = state["method"] if state["method"] in ("vprag", "comb") else None
    if method is None or comps.reranker is None:  # baselines have no retrieval knobs to sample
        why = f"method {state['method']!r} has no candidates to re-rank" if method is None else \
            "no feedback model configured"
        return {"rerank": {"skipped": why}}
    cands = candidate_prompts(comps.personalizer, mem, state["query"], m=comps.rerank_m, seed=state["seed"],
                              method=method, composer=comps.composer, config=comps.vprag_config,
                              retrieval_text=state.get("retrieval_query"))  # a follow-up: the chained query
    res = comps.reranker.rerank(mem, [c.prompt for c in cands])
    best = cands[res.best_index]
    best.trace.notes.append(f"re-ranked: candidate {res.best_index} ({best.label}) of {len(cands)} by the "
                            f"feedback model, predicted score {res.scores[res.best_index]:.3f}")
    ctx.memo["trace"] = best.trace
    record = {"best_index": res.best_index, "scores": list(res.scores), "labels": [c.label for c in cands],
              "prompts": [c.prompt for c in cands], "embedder": res.embedder}
    dumped = best.trace.model_dump()
    runtime.stream_writer({"event": "retrieval", "trace": dumped, "reranked": True})
    return {"rerank": record, "trace": dumped, "timings_ms": {"rerank": _ms(t0)}}


def compose(state: AgentState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Compose candidate i of the plan (the first: the plain composition of the retrieval).

    A follow-up hands the previous turn to composers that take it (``supports_history``); for the others it
    composes ``"{previous prompt}, {request}"`` plus the new elements the previous prompt lacks.
    """
    ctx = run_context(state, runtime)
    ctx.check_deadline("compose")
    comps = ctx.components
    i = len(state.get("candidates") or [])
    spec = plan(state, comps)[i]
    base = ctx.memo.pop("trace", None) if i == 0 else None
    base = base if base is not None else RetrievalTrace.model_validate(state["trace"])
    trace = subset_trace(base, spec.keep) if spec.keep is not None else base
    persona, composer = ctx.embedded().persona, comps.composer
    query, prev, kwargs = state["query"].strip(), state.get("previous"), {}
    if prev and getattr(composer, "supports_history", False):
        from vptt.agents.llm_composer import PreviousTurn

        kwargs["previous"] = PreviousTurn(query=prev["query"], prompt=prev["prompt"],
                                          trace=RetrievalTrace.model_validate(prev["trace"]))
    elif prev:
        trace = mark_repeated(trace, prev["prompt"])
        summary = persona.summary if getattr(composer, "include_summary", False) else ""
        query = refined_query(prev["prompt"], query, summary)
    stream = None
    if ctx.stream_tokens and getattr(composer, "supports_streaming", False):
        stream = kwargs["on_token"] = TokenStream(runtime.stream_writer, i, getattr(composer, "name", "composer"))
    t0 = time.perf_counter()
    usage, temperature = None, None
    try:
        if hasattr(composer, "compose_detailed"):
            comp = composer.compose_detailed(query, trace, persona, temperature=spec.temperature, **kwargs)
            prompt, usage, temperature = comp.prompt, comp.usage.model_dump(), comp.temperature
        else:
            prompt = composer.compose(query, trace, persona)
    except Exception as exc:
        if stream is not None:
            stream.error(exc)
        raise
    if stream is not None:
        stream.end(prompt)
    ctx.memo[("trace", i)] = trace
    cand = Candidate(index=i, label=spec.label, prompt=prompt, temperature=temperature,
                     n_elements=len(trace.kept_elements()), composer=getattr(composer, "name", "composer"),
                     usage=usage, compose_ms=_ms(t0))
    return {"pending": cand.model_dump(), "candidate_traces": [trace.model_dump()],
            "timings_ms": {"compose": cand.compose_ms}}


def result(state: AgentState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Settle the run's status and record the turn (and the chat reply) in the conversation."""
    gate = state.get("text_gate") or {}
    if gate.get("action") == "reject":
        status = "rejected"
    elif not state.get("images"):
        status = "deferred"
    elif not (state.get("image_gate") or {}).get("passed", True):
        status = "image_rejected"
    else:
        status = "completed"
    traces = state.get("candidate_traces") or []
    chosen = state.get("chosen") or 0
    trace = traces[chosen] if chosen < len(traces) else (state.get("trace") or {})
    prompt = state.get("prompt") or ""
    prev = state.get("previous") or {}
    turn = Turn(run_id=state["run_id"], persona_id=state["persona_id"], query=state["query"],
                retrieval_query=state.get("retrieval_query") or state["query"], prompt=prompt,
                method=state["method"], status=status, refines=prev.get("run_id"), trace=trace)
    reply = AIMessage(content=prompt, id=f"prompt-{state['run_id']}",
                      response_metadata={"status": status, "persona_id": state["persona_id"],
                                         "run_id": state["run_id"]})
    return {"status": status, "turns": [turn.model_dump()], "messages": [reply]}


def _route(state: AgentState) -> str:
    return state["next_step"]  # type: ignore[return-value]


def build_graph(rerank_node: bool = False) -> StateGraph:
    """The (uncompiled) agent graph; compile it once per agent, with or without a checkpointer.

    ``rerank_node`` inserts the learnable-feedback re-ranker between ``retrieve`` and ``compose``.
    """
    g = StateGraph(AgentState, context_schema=AgentContext)
    nodes = (load_persona, retrieve, *((rerank,) if rerank_node else ()), compose, text_gate, generate,
             image_gate, result)
    for fn in nodes:
        g.add_node(fn.__name__, fn)
    g.add_edge(START, "load_persona")
    g.add_edge("load_persona", "retrieve")
    if rerank_node:
        g.add_edge("retrieve", "rerank")
        g.add_edge("rerank", "compose")
    else:
        g.add_edge("retrieve", "compose")
    g.add_edge("compose", "text_gate")
    g.add_conditional_edges("text_gate", _route, ["compose", "generate", "result"])
    g.add_edge("generate", "image_gate")
    g.add_conditional_edges("image_gate", _route, ["generate", "result"])
    g.add_edge("result", END)
    return g


def recursion_limit(text_gate: TextGateConfig, image_gate: ImageGateConfig) -> int:
    """Supersteps a run can take at most (with slack)."""
    return 5 + 2 * text_gate.max_candidates + 2 * image_gate.max_attempts + 4
