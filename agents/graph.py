"""The personalization agent as a LangGraph ``StateGraph``.

    load_persona -> retrieve -> compose -> text_gate -+-> compose           (below threshold, candidates left)
                                                      +-> generate -> image_gate -+-> generate   (new seed)
                                                      +-> result                  +-> result

The state holds only plain data (ids, texts, scores, trace dicts, image file paths) so every checkpoint
serializes cheaply and a run resumes by thread id. Heavy objects (personalizer, store, embedder, composer,
generator pipelines, evaluators) travel in the per-run :class:`RunContext`, LangGraph's runtime context.
With no generator the graph ends after the text gate ("deferred rendering": judge the script first). An
agent with a feedback re-ranker gets a ``rerank`` node between ``retrieve`` and ``compose`` (paper Sec. 3.3).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from PIL import Image

from vptt.agents.composer import Composer
from vptt.agents.gates import (
    Candidate,
    CandidateSpec,
    GateDecision,
    ImageEvaluator,
    ImageGateConfig,
    ImageGateContext,
    ImageRecord,
    TextGateConfig,
    TextScorer,
    best_candidate,
    candidate_specs,
    image_verdict,
    run_image_checks,
    subset_trace,
)
from vptt.agents.generators.base import GenerationRequest, ImageGenerator, save_png
from vptt.agents.methods import CAPTION_METHODS, get_method
from vptt.agents.results import Status
from vptt.agents.trace import RetrievalTrace
from vptt.agents.vprag import VPRAGConfig
from vptt.core.errors import NoPostsError
from vptt.core.providers import RunTimeoutError
from vptt.stores.records import EmbeddedPersona

if TYPE_CHECKING:
    from vptt.agents.personalizer import Personalizer
    from vptt.core.models import Persona

NODES = ("load_persona", "retrieve", "compose", "text_gate", "generate", "image_gate", "result")
"""Nodes of the default graph, in pipeline order; ``rerank`` sits between ``retrieve`` and ``compose`` when the
agent has a feedback re-ranker."""


def _add_ms(a: Mapping[str, float] | None, b: Mapping[str, float] | None) -> dict[str, float]:
    out = dict(a or {})
    for k, v in (b or {}).items():
        out[k] = round(out.get(k, 0.0) + v, 3)
    return out


def _append(a: list[Any] | None, b: list[Any] | None) -> list[Any]:
    return [*(a or []), *(b or [])]


class AgentState(TypedDict, total=False):
    """Checkpointed state: plain data only."""

    run_id: str
    persona_id: str
    persona_json: str | None
    query: str
    method: str
    seed: int
    init_image: str | None
    fallback: str | None
    trace: dict[str, Any]
    pending: dict[str, Any]
    candidates: Annotated[list[dict[str, Any]], _append]
    candidate_traces: Annotated[list[dict[str, Any]], _append]
    text_gate: dict[str, Any]
    chosen: int
    prompt: str
    pending_image: dict[str, Any]
    images: Annotated[list[dict[str, Any]], _append]
    image_gate: dict[str, Any]
    rerank: dict[str, Any]
    next_step: str
    status: Status
    timings_ms: Annotated[dict[str, float], _add_ms]


@dataclass
class AgentComponents:
    """The heavy, long-lived parts of an agent (never checkpointed)."""

    personalizer: Personalizer
    composer: Composer
    text_scorer: TextScorer | None
    text_gate: TextGateConfig
    generator: ImageGenerator | None
    evaluators: tuple[ImageEvaluator, ...]
    image_gate: ImageGateConfig
    save_dir: Path | None = None
    vprag_config: VPRAGConfig | None = None
    strict: bool = False
    negative_prompt: str | None = None
    reranker: Any = None  # agents.rerank.FeedbackReranker: learnable feedback (paper Sec. 3.3)
    rerank_m: int = 8

    def image_dir(self) -> Path:
        """Where images are written: ``save_dir``, else a temporary directory made on first use."""
        if self.save_dir is None:
            self.save_dir = Path(tempfile.mkdtemp(prefix="vptt-agent-"))
        return self.save_dir


@dataclass
class RunContext:
    """LangGraph runtime context of one run: the persona, its store, the components and a deadline."""

    components: AgentComponents
    persona: Persona | str
    persona_id: str
    deadline: float | None = None
    memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def store(self) -> Any:
        return self.components.personalizer.store

    def check_deadline(self, node: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RunTimeoutError(f"the run passed its time limit before node {node!r}; raise run_timeout_s "
                                  "or resume the run by its thread id")

    def embedded(self) -> EmbeddedPersona:
        mem = self.memo.get("embedded")
        if mem is None:
            mem = self.memo["embedded"] = self.components.personalizer.embedded(self.persona)
        return mem  # type: ignore[no-any-return]

    def input_image(self, state: AgentState) -> Image.Image | None:
        path = state.get("init_image")
        if not path:
            return None
        if "init_image" not in self.memo:
            with Image.open(path) as im:
                self.memo["init_image"] = im.convert("RGB")
        return self.memo["init_image"]  # type: ignore[no-any-return]


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


# --------------------------------------------------------------------------- nodes
def load_persona(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Fetch the persona's embedded memory; fall back to ``persona_only`` for a persona without posts."""
    ctx = runtime.context
    ctx.check_deadline("load_persona")
    t0 = time.perf_counter()
    mem = ctx.embedded()
    method, fallback = state["method"], None
    if not mem.persona.posts and method in CAPTION_METHODS:
        if ctx.components.strict:
            raise NoPostsError(f"persona {mem.persona_id!r} has no posts; add posts or use "
                               "method='persona_only'")
        fallback = f"persona {mem.persona_id!r} has no posts: fell back from {method!r} to 'persona_only'"
        method = "persona_only"
    return {"method": method, "fallback": fallback, "persona_id": mem.persona_id,
            "timings_ms": {"load_persona": _ms(t0)}}


def retrieve(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Embed the query and run the retrieval method (VPRAG or a baseline)."""
    ctx = runtime.context
    ctx.check_deadline("retrieve")
    p = ctx.components.personalizer
    t0 = time.perf_counter()
    q_emb = p.embedder.embed_one(state["query"])
    t1 = time.perf_counter()
    mem, method = ctx.embedded(), state["method"]
    cats = p.category_embeddings(mem.categories) if method in ("vprag", "comb") else {}
    trace = get_method(method)(q_emb, mem, cats, ctx.components.vprag_config or p.config)
    timings = {"embed_query": round((t1 - t0) * 1000, 3), "retrieve": _ms(t1)}
    ctx.memo["trace"] = trace
    return {"trace": trace.model_dump(), "timings_ms": timings}


def rerank(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Learnable feedback (Algorithm 1, optional step): sample M candidate retrievals, keep argmax f_theta.

    Only in graphs built with ``rerank=True``. The chosen candidate's trace replaces the retrieval's, so
    ``compose`` composes the re-ranked prompt; every candidate and its predicted score are recorded.
    """
    from vptt.agents.rerank import candidate_prompts

    ctx = runtime.context
    ctx.check_deadline("rerank")
    comps, t0 = ctx.components, time.perf_counter()
    mem = ctx.embedded()
    method = state["method"] if state["method"] in ("vprag", "comb") else None
    if method is None:  # baselines have no retrieval knobs to sample
        return {"rerank": {"skipped": f"method {state['method']!r} has no candidates to re-rank"}}
    cands = candidate_prompts(comps.personalizer, mem, state["query"], m=comps.rerank_m, seed=state["seed"],
                              method=method, composer=comps.composer, config=comps.vprag_config)
    res = comps.reranker.rerank(mem, [c.prompt for c in cands])
    best = cands[res.best_index]
    best.trace.notes.append(f"re-ranked: candidate {res.best_index} ({best.label}) of {len(cands)} by the "
                            f"feedback model, predicted score {res.scores[res.best_index]:.3f}")
    ctx.memo["trace"] = best.trace
    record = {"best_index": res.best_index, "scores": list(res.scores), "labels": [c.label for c in cands],
              "prompts": [c.prompt for c in cands], "embedder": res.embedder}
    return {"rerank": record, "trace": best.trace.model_dump(), "timings_ms": {"rerank": _ms(t0)}}


def _plan(state: AgentState, comps: AgentComponents) -> list[CandidateSpec]:
    n_kept = sum(1 for e in state["trace"]["elements"] if e["status"] == "kept")
    temperature_aware = bool(getattr(comps.composer, "supports_temperature", False))
    return candidate_specs(comps.text_gate, n_kept, temperature_aware)


def compose(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Compose candidate i of the plan (the first: the plain composition of the retrieval)."""
    ctx = runtime.context
    ctx.check_deadline("compose")
    comps = ctx.components
    i = len(state.get("candidates") or [])
    spec = _plan(state, comps)[i]
    base = ctx.memo.pop("trace", None) if i == 0 else None
    base = base if base is not None else RetrievalTrace.model_validate(state["trace"])
    trace = subset_trace(base, spec.keep) if spec.keep is not None else base
    persona, composer = ctx.embedded().persona, comps.composer
    t0 = time.perf_counter()
    usage, temperature = None, None
    if hasattr(composer, "compose_detailed"):
        comp = composer.compose_detailed(state["query"].strip(), trace, persona, temperature=spec.temperature)
        prompt, usage, temperature = comp.prompt, comp.usage.model_dump(), comp.temperature
    else:
        prompt = composer.compose(state["query"].strip(), trace, persona)
    ctx.memo[("trace", i)] = trace
    cand = Candidate(index=i, label=spec.label, prompt=prompt, temperature=temperature,
                     n_elements=len(trace.kept_elements()), composer=getattr(composer, "name", "composer"),
                     usage=usage, compose_ms=_ms(t0))
    return {"pending": cand.model_dump(), "candidate_traces": [trace.model_dump()],
            "timings_ms": {"compose": cand.compose_ms}}


def _score(cand: Candidate, prior: list[dict[str, Any]], scorer: TextScorer, mem: EmbeddedPersona) -> None:
    dup = next((c for c in prior if c["prompt"] == cand.prompt and c["score"] is not None), None)
    if dup is not None:
        cand.score, cand.terms, cand.duplicate_of = dup["score"], dup["terms"], dup["index"]
    elif hasattr(scorer, "explain"):
        cand.score, cand.terms = scorer.explain(mem, cand.prompt)
    else:
        cand.score = float(scorer(mem, cand.prompt))


def text_gate(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Score the latest candidate; accept it, ask for another, or decide on the best (or reject)."""
    ctx = runtime.context
    ctx.check_deadline("text_gate")
    comps, cfg = ctx.components, ctx.components.text_gate
    t0 = time.perf_counter()
    cand = Candidate.model_validate(state["pending"])
    prior = list(state.get("candidates") or [])
    after = "generate" if comps.generator is not None else "result"
    scorer = comps.text_scorer
    skipped = "no text scorer configured" if scorer is None else ""
    if scorer is not None:
        try:
            _score(cand, prior, scorer, ctx.embedded())
        except NoPostsError as exc:
            skipped = f"cannot score: {exc}"
    update: dict[str, Any] = {"timings_ms": {}}
    if skipped:
        decision = GateDecision(gate="text", passed=True, action="skipped", chosen=cand.index, evaluated=0,
                                reason=skipped)
    else:
        cand.passed = cand.score >= cfg.threshold  # type: ignore[operator]
        cands = [*(Candidate.model_validate(c) for c in prior), cand]
        decision = _text_decision(cands, cfg, more=cand.index + 1 < len(_plan(state, comps)))
    update["candidates"] = [cand.model_dump()]
    update["timings_ms"] = {"text_gate": _ms(t0)}
    if decision is None:
        update["next_step"] = "compose"
        return update
    chosen = cand if decision.chosen == cand.index else Candidate.model_validate(prior[decision.chosen or 0])
    update.update(text_gate=decision.model_dump(), chosen=chosen.index, prompt=chosen.prompt,
                  next_step=after if decision.action != "reject" else "result")
    return update


def _text_decision(cands: list[Candidate], cfg: TextGateConfig, more: bool) -> GateDecision | None:
    last = cands[-1]
    if last.passed and cfg.stop_on_pass:
        return GateDecision(gate="text", passed=True, action="accept", chosen=last.index,
                            best_score=last.score, threshold=cfg.threshold, evaluated=len(cands),
                            reason=f"candidate {last.index} scored {last.score:.4f} >= {cfg.threshold}")
    if more:
        return None
    best = best_candidate(cands)
    score = f"{best.score:.4f}" if best.score is not None else "n/a"
    if best.passed:
        action, reason = "accept", f"best of {len(cands)}: candidate {best.index} scored {score}"
    elif cfg.on_reject == "best":
        action, reason = "accept_best", (f"no candidate reached {cfg.threshold}; going on with the best "
                                         f"(candidate {best.index}, {score})")
    else:
        action, reason = "reject", (f"early rejection: no candidate of {len(cands)} reached {cfg.threshold} "
                                    f"(best {score}); no image generated")
    return GateDecision(gate="text", passed=bool(best.passed), action=action, chosen=best.index,
                        best_score=best.score, threshold=cfg.threshold, evaluated=len(cands), reason=reason)


def generate(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Generate (or edit) one image with seed ``seed + attempt``; save it and record its parameters."""
    ctx = runtime.context
    ctx.check_deadline("generate")
    comps = ctx.components
    assert comps.generator is not None
    attempt = len(state.get("images") or [])
    writer = runtime.stream_writer

    def progress(step: int, total: int) -> None:
        writer({"node": "generate", "attempt": attempt, "step": step, "total": total})

    req = GenerationRequest(prompt=state["prompt"], seed=state["seed"] + attempt,
                            init_image=ctx.input_image(state), negative_prompt=comps.negative_prompt,
                            deadline=ctx.deadline, on_progress=progress)
    out = comps.generator.generate(req)
    path = save_png(out.image, comps.image_dir(), f"{state['run_id']}-{attempt}")
    ctx.memo[("image", attempt)] = out.image
    rec = ImageRecord(attempt=attempt, path=str(path), seed=out.seed, params=out.params,
                      generator=out.generator, elapsed_ms=out.elapsed_ms)
    return {"pending_image": rec.model_dump(), "timings_ms": {"generate": out.elapsed_ms}}


def image_gate(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Run the image evaluators; retry with a new seed below threshold, up to ``max_attempts``."""
    ctx = runtime.context
    ctx.check_deadline("image_gate")
    comps = ctx.components
    t0 = time.perf_counter()
    rec = ImageRecord.model_validate(state["pending_image"])
    image = ctx.memo.get(("image", rec.attempt))
    image = image if image is not None else rec.image
    gctx = ImageGateContext(persona=ctx.embedded(), query=state["query"], prompt=state["prompt"],
                            init_image=ctx.input_image(state), attempt=rec.attempt)
    rec.checks = run_image_checks(comps.evaluators, image, gctx) if comps.evaluators else []
    rec.passed, margin = image_verdict(rec.checks)
    update: dict[str, Any] = {"images": [rec.model_dump()], "timings_ms": {"image_gate": _ms(t0)}}
    if not comps.evaluators:
        decision = GateDecision(gate="image", passed=True, action="skipped", chosen=rec.attempt, evaluated=1,
                                reason="no image evaluators configured")
    elif rec.passed:
        decision = GateDecision(gate="image", passed=True, action="accept", chosen=rec.attempt,
                                best_score=margin, evaluated=rec.attempt + 1,
                                reason=f"attempt {rec.attempt} passed every evaluator")
    elif rec.attempt + 1 < comps.image_gate.max_attempts:
        update["next_step"] = "generate"
        return update
    else:
        records = [*(ImageRecord.model_validate(r) for r in state.get("images") or []), rec]
        margins = [image_verdict(r.checks)[1] for r in records]
        best = max(range(len(records)), key=lambda j: (margins[j], -j))
        decision = GateDecision(gate="image", passed=False, action="accept_best", chosen=best,
                                best_score=margins[best], evaluated=len(records),
                                reason=f"no image of {len(records)} passed; kept attempt {best} "
                                       f"(margin {margins[best]:.4f})")
    update.update(image_gate=decision.model_dump(), next_step="result")
    return update


def result(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Settle the run's status."""
    gate = state.get("text_gate") or {}
    if gate.get("action") == "reject":
        status = "rejected"
    elif not state.get("images"):
        status = "deferred"
    elif not (state.get("image_gate") or {}).get("passed", True):
        status = "image_rejected"
    else:
        status = "completed"
    return {"status": status}


def _route(state: AgentState) -> str:
    return state["next_step"]


def build_graph(rerank_node: bool = False) -> StateGraph:
    """The (uncompiled) agent graph; compile it once per agent, with or without a checkpointer.

    ``rerank_node`` inserts the learnable-feedback re-ranker between ``retrieve`` and ``compose``.
    """
    g = StateGraph(AgentState, context_schema=RunContext)
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
