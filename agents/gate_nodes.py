"""The gate half of the agent graph: ``text_gate``, ``generate`` and ``image_gate`` (see :mod:`agents.graph`).

Each node writes custom stream events a chat UI can show: every scored candidate (``candidate``), each gate
decision (``gate``), each saved image (``image``) and denoising progress (``progress``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from vptt.agents.context import AgentComponents, run_context
from vptt.agents.gates import (
    Candidate,
    CandidateSpec,
    GateDecision,
    ImageGateContext,
    ImageRecord,
    TextGateConfig,
    TextScorer,
    best_candidate,
    candidate_specs,
    image_verdict,
    run_image_checks,
)
from vptt.agents.generators.base import GenerationRequest, save_png
from vptt.core.errors import ConfigError, NoPostsError
from vptt.core.paths import id_to_filename
from vptt.stores.records import EmbeddedPersona


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def plan(state: Mapping[str, Any], comps: AgentComponents) -> list[CandidateSpec]:
    """The text gate's candidate plan for this run's retrieval."""
    n_kept = sum(1 for e in state["trace"]["elements"] if e["status"] == "kept")
    temperature_aware = bool(getattr(comps.composer, "supports_temperature", False))
    return candidate_specs(comps.text_gate, n_kept, temperature_aware)


def image_dir(comps: AgentComponents, persona_id: str) -> Path:
    """Where this persona's images go: ``save_dir`` (or a per-persona folder in it with ``persona_subdirs``)."""
    root = comps.image_dir()
    return root / id_to_filename(persona_id) if comps.persona_subdirs else root


def _score(cand: Candidate, prior: list[dict[str, Any]], scorer: TextScorer, mem: EmbeddedPersona) -> None:
    dup = next((c for c in prior if c["prompt"] == cand.prompt and c["score"] is not None), None)
    if dup is not None:
        cand.score, cand.terms, cand.duplicate_of = dup["score"], dup["terms"], dup["index"]
    elif hasattr(scorer, "explain"):
        cand.score, cand.terms = scorer.explain(mem, cand.prompt)
    else:
        cand.score = float(scorer(mem, cand.prompt))


def text_gate(state: Mapping[str, Any], runtime: Runtime[Any]) -> dict[str, Any]:
    """Score the latest candidate; accept it, ask for another, or decide on the best (or reject)."""
    ctx = run_context(state, runtime)
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
    if skipped:
        decision: GateDecision | None = GateDecision(gate="text", passed=True, action="skipped",
                                                     chosen=cand.index, evaluated=0, reason=skipped)
    else:
        cand.passed = cand.score >= cfg.threshold  # type: ignore[operator]
        cands = [*(Candidate.model_validate(c) for c in prior), cand]
        decision = _text_decision(cands, cfg, more=cand.index + 1 < len(plan(state, comps)))
    runtime.stream_writer({"event": "candidate", "candidate": cand.model_dump()})
    update: dict[str, Any] = {"candidates": [cand.model_dump()], "timings_ms": {"text_gate": _ms(t0)}}
    if decision is None:
        update["next_step"] = "compose"
        return update
    runtime.stream_writer({"event": "gate", "gate": "text", "decision": decision.model_dump()})
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


def generate(state: Mapping[str, Any], runtime: Runtime[Any]) -> dict[str, Any]:
    """Generate (or edit) one image with seed ``seed + attempt``; save it as ``<run_id>-<attempt>.png``.

    The run id is a fresh UUID per run, so two threads (or two turns of one thread) never share a file.
    """
    ctx = run_context(state, runtime)
    ctx.check_deadline("generate")
    comps = ctx.components
    if comps.generator is None:
        raise ConfigError("this run stopped before 'generate' and needs an image generator; resume it with "
                          "the generator it was started with (CLI: vptt resume THREAD --generator ...)")
    attempt = len(state.get("images") or [])
    writer = runtime.stream_writer

    def progress(step: int, total: int) -> None:
        writer({"event": "progress", "node": "generate", "attempt": attempt, "step": step, "total": total})

    req = GenerationRequest(prompt=state["prompt"], seed=state["seed"] + attempt,
                            init_image=ctx.input_image(state), negative_prompt=comps.negative_prompt,
                            deadline=ctx.deadline, on_progress=progress)
    out = comps.generator.generate(req)
    path = save_png(out.image, image_dir(comps, state["persona_id"]), f"{state['run_id']}-{attempt}")
    ctx.memo[("image", attempt)] = out.image
    rec = ImageRecord(attempt=attempt, path=str(path), seed=out.seed, params=out.params,
                      generator=out.generator, elapsed_ms=out.elapsed_ms)
    writer({"event": "image", "persona_id": state["persona_id"], "run_id": state["run_id"],
            "image": rec.model_dump()})
    return {"pending_image": rec.model_dump(), "timings_ms": {"generate": out.elapsed_ms}}


def image_gate(state: Mapping[str, Any], runtime: Runtime[Any]) -> dict[str, Any]:
    """Run the image evaluators; retry with a new seed below threshold, up to ``max_attempts``."""
    ctx = run_context(state, runtime)
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
        runtime.stream_writer({"event": "gate", "gate": "image", "attempt": rec.attempt, "passed": False,
                               "checks": [c.model_dump() for c in rec.checks], "decision": None})
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
    runtime.stream_writer({"event": "gate", "gate": "image", "attempt": rec.attempt, "passed": rec.passed,
                           "checks": [c.model_dump() for c in rec.checks], "decision": decision.model_dump()})
    update.update(image_gate=decision.model_dump(), next_step="result")
    return update
