"""``vptt personalize`` and ``vptt resume``: one request through the agent graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from vptt.sdk.cli._common import cli_errors, personalizer

console = Console()
err = Console(stderr=True)


def _agent(*, token_budget: Optional[int] = None, three_phrase: bool = False, composer: str = "template",
           llm_model: str = "gpt-4o-mini", llm_base_url: Optional[str] = None, api_key: Optional[str] = None,
           gate_threshold: Optional[float] = None, max_candidates: int = 4, generator: str = "none",
           model: Optional[str] = None, device: str = "cpu", steps: Optional[int] = None,
           save_dir: Optional[Path] = None, checkpoint: Optional[Path] = None,
           reranker: Optional[Path] = None, rerank_m: int = 8) -> Any:
    """A PersonalizationAgent configured from command-line options."""
    from vptt.agents.composer import TemplateComposer
    from vptt.agents.gates import TextGateConfig
    from vptt.agents.llm_composer import LLMComposerConfig
    from vptt.agents.vprag import VPRAGConfig
    from vptt.sdk.agent import PersonalizationAgent

    pz = personalizer()
    pz.config = VPRAGConfig(tau=pz.config.tau, per_category_budget=pz.config.per_category_budget,
                            three_phrase=three_phrase)
    if composer == "llm":
        comp: Any = LLMComposerConfig(model=llm_model, base_url=llm_base_url or pz.settings.base_url("llm"),
                                      api_key=api_key or pz.settings.api_key("llm"))
    elif composer == "template":
        comp = TemplateComposer(token_budget, pz.settings.include_summary) if token_budget is not None else None
    else:
        raise typer.BadParameter(f"--composer must be template or llm, got {composer!r}")
    gen_opts: dict[str, Any] = {}
    if generator == "diffusers":
        gen_opts = {k: v for k, v in {"model": model, "device": device, "num_inference_steps": steps}.items()
                    if v is not None}
    elif generator == "openai":
        gen_opts = {k: v for k, v in {"model": model, "api_key": api_key}.items() if v is not None}
    threshold = gate_threshold if gate_threshold is not None else pz.settings.text_gate_threshold
    gate = TextGateConfig(max_candidates=max_candidates, **({} if threshold is None else {"threshold": threshold}))
    rr = None
    if reranker is not None:
        from vptt.agents.rerank import FeedbackReranker

        rr = FeedbackReranker.load(reranker, pz.embedder)
    return PersonalizationAgent(pz, composer=comp, text_scorer=None if threshold is None else "vptt",
                                generator=generator, generator_options=gen_opts or None, text_gate=gate,
                                save_dir=save_dir, checkpoint=str(checkpoint) if checkpoint else None,
                                reranker=rr, rerank_m=rerank_m)


def _print_agent_result(result: Any, as_json: bool, trace: bool) -> None:
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    from vptt.sdk.cli._render import render_result

    render_result(result, console, trace=trace)
    console.print(f"status: [bold]{result.status}[/bold]" + (f"  thread: {result.thread_id}" if result.thread_id else ""))
    for c in result.candidates or []:
        score = "-" if c.score is None else f"{c.score:.3f}"
        console.print(f"  candidate {c.index} ({c.label}): score {score}  passed {c.passed}  {c.prompt[:80]}…")
    for img in result.images or []:
        console.print(f"  image attempt {img.attempt}: {img.path}  seed {img.seed}  passed {img.passed}")
    if result.rerank and "scores" in result.rerank:
        scores = ", ".join(f"{x:.3f}" for x in result.rerank["scores"])
        console.print(f"  re-ranked {len(result.rerank['scores'])} candidates: [{scores}] -> "
                      f"{result.rerank['best_index']}")


@cli_errors
def personalize(persona_id: str, query: str,
                method: str = typer.Option("vprag", help="baseline, persona_only, brag, vprag or comb."),
                as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
                trace: bool = typer.Option(True, help="Print the retrieval trace."),
                token_budget: Optional[int] = typer.Option(None, help="Token budget of the template prompt."),
                three_phrase: bool = typer.Option(False, help="The paper's three-phrase budget."),
                composer: str = typer.Option("template", help="template or llm (OpenAI-compatible chat)."),
                llm_model: str = typer.Option("gpt-4o-mini", help="Chat model of the LLM composer."),
                llm_base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint (vLLM, Ollama)."),
                api_key: Optional[str] = typer.Option(None, envvar="OPENAI_API_KEY", show_envvar=True,
                                                      help="API key of the chat/image endpoint."),
                gate_threshold: Optional[float] = typer.Option(None, help="Text gate: minimum VPTT_score."),
                max_candidates: int = typer.Option(4, help="Text gate: most candidate prompts composed."),
                generator: str = typer.Option("none", help="none, diffusers or openai."),
                model: Optional[str] = typer.Option(None, help="Image model id or local directory."),
                device: str = typer.Option("cpu", help="Device of a local diffusers model."),
                steps: Optional[int] = typer.Option(None, help="Denoising steps (diffusers)."),
                save_dir: Optional[Path] = typer.Option(None, help="Where generated images are saved."),
                checkpoint: Optional[Path] = typer.Option(None, help="SQLite checkpoint file (resumable runs)."),
                thread_id: Optional[str] = typer.Option(None, help="Checkpoint thread id of this run."),
                reranker: Optional[Path] = typer.Option(None, exists=True, help="Feedback model directory "
                                                        "(`vptt feedback train`): re-rank M candidates."),
                rerank_m: int = typer.Option(8, help="Candidates sampled for the re-ranker."),
                stream: bool = typer.Option(False, help="Print node events as JSON lines while running.")) -> None:
    """Personalize QUERY for a stored persona through the agent graph."""
    agent = _agent(token_budget=token_budget, three_phrase=three_phrase, composer=composer, llm_model=llm_model,
                   llm_base_url=llm_base_url, api_key=api_key, gate_threshold=gate_threshold,
                   max_candidates=max_candidates, generator=generator, model=model, device=device, steps=steps,
                   save_dir=save_dir, checkpoint=checkpoint, reranker=reranker, rerank_m=rerank_m)
    with agent:
        if stream:
            result = None
            for event in agent.stream(persona_id, query, method=method, thread_id=thread_id):
                print(event.model_dump_json(exclude={"result"}))
                result = event.result or result
        else:
            result = agent.run(persona_id, query, method=method, thread_id=thread_id)
    _print_agent_result(result, as_json, trace)


@cli_errors
def resume(thread_id: str, checkpoint: Path = typer.Option(..., exists=True, help="SQLite checkpoint file."),
           as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
           generator: str = typer.Option("none", help="Generator of the interrupted run."),
           model: Optional[str] = typer.Option(None, help="Image model id or local directory."),
           save_dir: Optional[Path] = typer.Option(None, help="Where generated images are saved.")) -> None:
    """Finish a run checkpointed under THREAD_ID after a failure or interruption."""
    agent = _agent(generator=generator, model=model, save_dir=save_dir, checkpoint=checkpoint)
    with agent:
        result = agent.resume(thread_id)
    _print_agent_result(result, as_json, trace=False)


def register(app: typer.Typer) -> None:
    """Add ``personalize`` and ``resume`` to the root app."""
    app.command()(personalize)
    app.command()(resume)
