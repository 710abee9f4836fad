"""``vptt personalize`` and ``vptt resume``: one request through the agent graph.

Output is shell-friendly: on a terminal the result is rendered (prompt, trace, gates); when stdout is a pipe
or a file only the prompt is printed (``--json``: the result as JSON; ``--pretty``: the rendering anyway).
``--stream --json`` prints JSON lines only (one per event, the result last).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from vptt.sdk.cli._common import EXIT_IMAGE_REJECTED, EXIT_REJECTED, cli_errors, personalizer

console = Console()
err = Console(stderr=True)

EXIT_CODES = ("Exit codes: 0 accepted (status deferred or completed); 1 error (message on stderr); "
              "2 invalid input; 3 rejected by the text gate (no candidate reached the threshold, no image); "
              "4 no image passed the image gate (the best one is still saved and reported).")
_EXIT = {"rejected": EXIT_REJECTED, "image_rejected": EXIT_IMAGE_REJECTED}


def _agent(*, token_budget: Optional[int] = None, three_phrase: bool = False, composer: str = "template",
           llm_model: str = "gpt-4o-mini", llm_base_url: Optional[str] = None,
           llm_api_key: Optional[str] = None, gate_threshold: Optional[float] = None, max_candidates: int = 4,
           generator: str = "none", model: Optional[str] = None, device: str = "cpu",
           steps: Optional[int] = None, images_base_url: Optional[str] = None,
           images_api_key: Optional[str] = None, save_dir: Optional[Path] = None,
           checkpoint: Optional[Path] = None, reranker: Optional[Path] = None, rerank_m: int = 8) -> Any:
    """A PersonalizationAgent configured from command-line options.

    Keys come from the options, else from the settings (``VPTT_LLM_API_KEY`` / ``VPTT_IMAGES_API_KEY``, then
    ``OPENAI_API_KEY``); they are never recorded. The other options are stored with each checkpointed run so
    that ``vptt resume`` rebuilds the same agent.
    """
    from vptt.agents.composer import TemplateComposer
    from vptt.agents.gates import TextGateConfig
    from vptt.agents.llm_composer import LLMComposerConfig
    from vptt.agents.vprag import VPRAGConfig
    from vptt.sdk.agent import PersonalizationAgent

    pz = personalizer()
    s = pz.settings
    pz.config = VPRAGConfig(tau=pz.config.tau, per_category_budget=pz.config.per_category_budget,
                            three_phrase=three_phrase)
    if composer == "llm":
        comp: Any = LLMComposerConfig(model=llm_model, base_url=llm_base_url or s.base_url("llm"),
                                      api_key=llm_api_key or s.api_key("llm"))
    elif composer == "template":
        comp = TemplateComposer(token_budget, s.include_summary) if token_budget is not None else None
    else:
        raise typer.BadParameter(f"--composer must be template or llm, got {composer!r}")
    gen_opts: dict[str, Any] = {}
    if generator == "diffusers":
        gen_opts = {"model": model, "device": device, "num_inference_steps": steps}
    elif generator == "openai":
        gen_opts = {"model": model, "base_url": images_base_url or s.base_url("images"),
                    "api_key": images_api_key or s.api_key("images")}
    threshold = gate_threshold if gate_threshold is not None else s.text_gate_threshold
    gate = TextGateConfig(max_candidates=max_candidates, **({} if threshold is None else {"threshold": threshold}))
    rr = None
    if reranker is not None:
        from vptt.agents.rerank import FeedbackReranker

        rr = FeedbackReranker.load(reranker, pz.embedder)
    options = {"token_budget": token_budget, "three_phrase": three_phrase, "composer": composer,
               "llm_model": llm_model, "llm_base_url": llm_base_url, "gate_threshold": gate_threshold,
               "max_candidates": max_candidates, "generator": generator, "model": model, "device": device,
               "steps": steps, "images_base_url": images_base_url,
               "save_dir": str(save_dir) if save_dir else None, "reranker": str(reranker) if reranker else None,
               "rerank_m": rerank_m}
    return PersonalizationAgent(pz, composer=comp, text_scorer=None if threshold is None else "vptt",
                                generator=generator,
                                generator_options={k: v for k, v in gen_opts.items() if v is not None} or None,
                                text_gate=gate, save_dir=save_dir, checkpoint=str(checkpoint) if checkpoint else None,
                                reranker=rr, rerank_m=rerank_m, options=options)


def _print_agent_result(result: Any, as_json: bool, trace: bool, pretty: bool) -> None:
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    if not (pretty or sys.stdout.isatty()):
        print(result.prompt)
        return
    from vptt.sdk.cli._render import render_result

    render_result(result, console, trace=trace)
    console.print(f"status: [bold]{result.status}[/bold]" + (f"  thread: {result.thread_id}" if result.thread_id else ""))
    if result.refines:
        console.print(f"  refined the previous turn ({result.refines}): {result.previous_prompt}")
    for c in result.candidates or []:
        score = "-" if c.score is None else f"{c.score:.3f}"
        console.print(f"  candidate {c.index} ({c.label}): score {score}  passed {c.passed}  {c.prompt[:80]}…")
    for img in result.images or []:
        console.print(f"  image attempt {img.attempt}: {img.path}  seed {img.seed}  passed {img.passed}")
    if result.rerank and "scores" in result.rerank:
        scores = ", ".join(f"{x:.3f}" for x in result.rerank["scores"])
        console.print(f"  re-ranked {len(result.rerank['scores'])} candidates: [{scores}] -> "
                      f"{result.rerank['best_index']}")


def _finish(result: Any) -> None:
    """Exit with the run's status code (see ``EXIT_CODES``)."""
    code = _EXIT.get(result.status, 0)
    if code:
        reason = (result.text_gate or result.image_gate)
        err.print(f"[yellow]{result.status}[/yellow]: {getattr(reason, 'reason', '')}", highlight=False)
        raise typer.Exit(code)


def _stream(events: Any, as_json: bool) -> Any:
    """Print events (JSON lines on stdout with ``--json``, readable lines on stderr otherwise)."""
    result = None
    for event in events:
        if event.result is not None:
            result = event.result
            if as_json:
                print(json.dumps({"kind": "result", "node": "result", "result": result.model_dump(mode="json")}),
                      flush=True)
            continue
        if as_json:
            print(event.model_dump_json(exclude={"result"}), flush=True)
        elif event.kind == "token":
            err.print(event.data.get("text", ""), end="", highlight=False, markup=False)
        else:
            err.print(f"[dim]{event.kind}[/dim] {event.node}", highlight=False)
    return result


@cli_errors
def personalize(persona_id: str, query: str,
                method: str = typer.Option("vprag", help="baseline, persona_only, brag, vprag or comb."),
                as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (with --stream: "
                                             "JSON lines only)."),
                pretty: bool = typer.Option(False, "--pretty", help="Render the result even when stdout is not "
                                            "a terminal."),
                trace: bool = typer.Option(True, help="Render the retrieval trace."),
                token_budget: Optional[int] = typer.Option(None, help="Token budget of the template prompt."),
                three_phrase: bool = typer.Option(False, help="The paper's three-phrase budget."),
                composer: str = typer.Option("template", help="template or llm (OpenAI-compatible chat)."),
                llm_model: str = typer.Option("gpt-4o-mini", help="Chat model of the LLM composer."),
                llm_base_url: Optional[str] = typer.Option(None, help="Chat endpoint (vLLM, Ollama); default "
                                                           "$VPTT_LLM_BASE_URL."),
                llm_api_key: Optional[str] = typer.Option(None, help="Key of the chat endpoint; default "
                                                          "$VPTT_LLM_API_KEY, then $OPENAI_API_KEY."),
                gate_threshold: Optional[float] = typer.Option(None, help="Text gate: minimum VPTT_score."),
                max_candidates: int = typer.Option(4, help="Text gate: most candidate prompts composed."),
                generator: str = typer.Option("none", help="none, diffusers or openai."),
                model: Optional[str] = typer.Option(None, help="Image model id or local directory."),
                device: str = typer.Option("cpu", help="Device of a local diffusers model."),
                steps: Optional[int] = typer.Option(None, help="Denoising steps (diffusers)."),
                images_base_url: Optional[str] = typer.Option(None, help="Image endpoint (openai generator); "
                                                              "default $VPTT_IMAGES_BASE_URL."),
                images_api_key: Optional[str] = typer.Option(None, help="Key of the image endpoint; default "
                                                             "$VPTT_IMAGES_API_KEY, then $OPENAI_API_KEY."),
                save_dir: Optional[Path] = typer.Option(None, help="Where generated images are saved."),
                checkpoint: Optional[Path] = typer.Option(None, help="SQLite checkpoint file (threads, resume)."),
                thread_id: Optional[str] = typer.Option(None, help="Conversation thread: a follow-up in a thread "
                                                        "refines the previous prompt (needs --checkpoint)."),
                reranker: Optional[Path] = typer.Option(None, exists=True, help="Feedback model directory "
                                                        "(`vptt feedback train`): re-rank M candidates."),
                rerank_m: int = typer.Option(8, help="Candidates sampled for the re-ranker."),
                stream: bool = typer.Option(False, help="Show events while running (JSON lines with --json).")
                ) -> None:
    """Personalize QUERY for a stored persona through the agent graph."""
    agent = _agent(token_budget=token_budget, three_phrase=three_phrase, composer=composer, llm_model=llm_model,
                   llm_base_url=llm_base_url, llm_api_key=llm_api_key, gate_threshold=gate_threshold,
                   max_candidates=max_candidates, generator=generator, model=model, device=device, steps=steps,
                   images_base_url=images_base_url, images_api_key=images_api_key, save_dir=save_dir,
                   checkpoint=checkpoint, reranker=reranker, rerank_m=rerank_m)
    with agent:
        if stream:
            result = _stream(agent.stream(persona_id, query, method=method, thread_id=thread_id), as_json)
        else:
            result = agent.run(persona_id, query, method=method, thread_id=thread_id)
    if not (stream and as_json):
        _print_agent_result(result, as_json, trace, pretty)
    _finish(result)


@cli_errors
def resume(thread_id: str, checkpoint: Path = typer.Option(..., exists=True, help="SQLite checkpoint file."),
           as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
           pretty: bool = typer.Option(False, "--pretty", help="Render the result even when not a terminal."),
           generator: Optional[str] = typer.Option(None, help="Generator (default: the run's own)."),
           model: Optional[str] = typer.Option(None, help="Image model (default: the run's own)."),
           images_api_key: Optional[str] = typer.Option(None, help="Key of the image endpoint; default "
                                                        "$VPTT_IMAGES_API_KEY, then $OPENAI_API_KEY."),
           llm_api_key: Optional[str] = typer.Option(None, help="Key of the chat endpoint; default "
                                                     "$VPTT_LLM_API_KEY, then $OPENAI_API_KEY."),
           save_dir: Optional[Path] = typer.Option(None, help="Where generated images are saved.")) -> None:
    """Finish the last run of THREAD_ID after a failure or interruption (or print it if it finished).

    The agent is rebuilt with the options the run was started with (stored in the checkpoint; keys come from
    the options or the environment); options given here override them.
    """
    options = _recorded_options(thread_id, checkpoint)
    options.update({k: v for k, v in {"generator": generator, "model": model,
                                      "save_dir": save_dir}.items() if v is not None})
    for key in ("save_dir", "reranker"):
        if options.get(key):
            options[key] = Path(options[key])
    agent = _agent(**options, llm_api_key=llm_api_key, images_api_key=images_api_key, checkpoint=checkpoint)
    with agent:
        result = agent.resume(thread_id)
    _print_agent_result(result, as_json, trace=False, pretty=pretty)
    _finish(result)


def _recorded_options(thread_id: str, checkpoint: Path) -> dict[str, Any]:
    """The agent options stored with the thread's last run (empty for runs made without the CLI)."""
    from vptt.core.errors import ConfigError
    from vptt.sdk.agent import PersonalizationAgent

    with PersonalizationAgent(personalizer(), text_scorer=None, checkpoint=str(checkpoint)) as probe:
        values = probe.thread_state(thread_id)
    if not values:
        raise ConfigError(f"no run with thread_id {thread_id!r} in {checkpoint}; list the threads you started "
                          "with --thread-id, or start one with `vptt personalize ... --checkpoint FILE "
                          "--thread-id ID`")
    known = set(_agent.__code__.co_varnames[:_agent.__code__.co_kwonlyargcount])
    return {k: v for k, v in (values.get("agent_options") or {}).items() if k in known}


def register(app: typer.Typer) -> None:
    """Add ``personalize`` and ``resume`` to the root app."""
    app.command(epilog=EXIT_CODES)(personalize)
    app.command(epilog=EXIT_CODES)(resume)
