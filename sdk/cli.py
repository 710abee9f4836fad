"""The ``vptt`` command line (typer)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ._cliutil import cli_errors
from .settings import VPTTSettings

app = typer.Typer(help="vptt: persona-aware visual personalization (VPRAG, VPTT score, evaluators).",
                  no_args_is_help=True, pretty_exceptions_enable=False)
personas_app = typer.Typer(help="List, show and delete stored personas.", no_args_is_help=True)
score_app = typer.Typer(help="Image-level evaluators (MaSC, FPR, Stellar, CLIP/DINO, VLM judge).",
                        no_args_is_help=True)
bench_app = typer.Typer(help="VPTT-Bench: generate persona banks, run benchmarks, report.", no_args_is_help=True)
app.add_typer(personas_app, name="personas")
app.add_typer(score_app, name="score")
app.add_typer(bench_app, name="bench")

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
_state: dict[str, Any] = {}
SAMPLE_FILE = Path(__file__).resolve().parent.parent / "examples" / "data" / "personas.jsonl"


@app.callback()
def main(data_dir: Optional[Path] = typer.Option(None, help="Data directory (default: $VPTT_DATA_DIR or .vptt)."),
         store: Optional[str] = typer.Option(None, help="chroma (default) or memory."),
         chroma_host: Optional[str] = typer.Option(None, help="Use a Chroma server at this host."),
         chroma_port: Optional[int] = typer.Option(None, help="Port of the Chroma server.")) -> None:
    """Options shared by every command (each also readable from VPTT_* environment variables)."""
    overrides = {k: v for k, v in {"data_dir": data_dir, "store": store, "chroma_host": chroma_host,
                                   "chroma_port": chroma_port}.items() if v is not None}
    _state["settings"] = VPTTSettings(**overrides)
    _state.pop("personalizer", None)


def _personalizer() -> Any:
    if "personalizer" not in _state:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        from .personalizer import Personalizer

        _state["personalizer"] = Personalizer(settings=_state.get("settings") or VPTTSettings())
    return _state["personalizer"]


@app.command()
@cli_errors
def ingest(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Persona JSONL file."),
           on_error: str = typer.Option("raise", help="raise: stop at the first bad line; skip: load the rest.")) -> None:
    """Validate FILE and upsert its personas (idempotent: re-ingesting changes nothing)."""
    report = _personalizer().ingest(file, on_error=on_error, progress=True)  # type: ignore[arg-type]
    console.print(f"created {len(report.created)}, updated {len(report.updated)}, "
                  f"unchanged {len(report.unchanged)}; embedded {report.texts_embedded} texts")
    for line in report.skipped:
        err.print(f"[yellow]skipped[/yellow] {line}")


@personas_app.command("list")
@cli_errors
def personas_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List stored persona ids."""
    store = _personalizer().store
    ids = store.list_ids()
    if as_json:
        console.print_json(json.dumps(ids))
        return
    table = Table("persona_id", "age", "occupation", "city", "posts", show_edge=False)
    for pid in ids:
        p = store.get(pid)
        d = p.demographics
        table.add_row(pid, "" if d.age is None else str(d.age), d.occupation, f"{d.city}, {d.country}".strip(", "),
                      str(len(p.posts)))
    console.print(table)
    console.print(f"{len(ids)} persona(s)")


@personas_app.command("show")
@cli_errors
def personas_show(persona_id: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show one persona."""
    p = _personalizer().store.get(persona_id)
    if as_json:
        console.print_json(p.model_dump_json())
        return
    console.print(f"[bold]{p.persona_id}[/bold]  {p.card_text()}")
    for post in p.posts:
        console.print(f"  [cyan]{post.post_id}[/cyan] ({post.type}) {post.caption[:100]}…")


@personas_app.command("delete")
@cli_errors
def personas_delete(persona_id: str) -> None:
    """Delete one persona and everything stored for it."""
    if not _personalizer().store.delete(persona_id):
        err.print(f"[red]error:[/red] persona {persona_id!r} not found")
        raise typer.Exit(1)
    console.print(f"deleted {persona_id}")


def _agent(*, token_budget: Optional[int] = None, three_phrase: bool = False, composer: str = "template",
           llm_model: str = "gpt-4o-mini", llm_base_url: Optional[str] = None, api_key: Optional[str] = None,
           gate_threshold: Optional[float] = None, max_candidates: int = 4, generator: str = "none",
           model: Optional[str] = None, device: str = "cpu", steps: Optional[int] = None,
           save_dir: Optional[Path] = None, checkpoint: Optional[Path] = None,
           reranker: Optional[Path] = None, rerank_m: int = 8) -> Any:
    """A PersonalizationAgent configured from command-line options."""
    from agents.composer import TemplateComposer
    from agents.gates import TextGateConfig
    from agents.llm_composer import LLMComposerConfig
    from agents.vprag import VPRAGConfig

    from .agent import PersonalizationAgent

    pz = _personalizer()
    pz.config = VPRAGConfig(tau=pz.config.tau, per_category_budget=pz.config.per_category_budget,
                            three_phrase=three_phrase)
    if composer == "llm":
        comp: Any = LLMComposerConfig(model=llm_model, base_url=llm_base_url, api_key=api_key)
    elif composer == "template":
        comp = TemplateComposer(token_budget, pz.settings.include_summary) if token_budget else None
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
        from agents.rerank import FeedbackReranker

        rr = FeedbackReranker.load(reranker, pz.embedder)
    return PersonalizationAgent(pz, composer=comp, text_scorer=None if threshold is None else "vptt",
                                generator=generator, generator_options=gen_opts or None, text_gate=gate,
                                save_dir=save_dir, checkpoint=str(checkpoint) if checkpoint else None,
                                reranker=rr, rerank_m=rerank_m)


def _print_agent_result(result: Any, as_json: bool, trace: bool) -> None:
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    from ._render import render_result

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


@app.command()
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


@app.command()
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


@app.command()
@cli_errors
def evaluate(out: Path = typer.Option(Path("vptt-eval"), help="Output directory (resumable)."),
             persona: Optional[list[str]] = typer.Option(None, help="Persona id (repeatable; default all)."),
             task: Optional[list[str]] = typer.Option(None, help="Preset name, name=query or name:editing=query "
                                                      "(repeatable; default: the paper's four tasks)."),
             methods: str = typer.Option("baseline,persona_only,brag,vprag,comb", help="Comma-separated methods."),
             three_phrase: bool = typer.Option(False, help="The paper's three-phrase budget (Q = 3)."),
             as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON.")) -> None:
    """Personalize and score personas x tasks x methods; write rows.jsonl, report.md and plots."""
    from agents.tasks import PAPER_TABLE3
    from agents.vprag import VPRAGConfig

    from .evaluate import evaluate as run_evaluation

    pz = _personalizer()
    config = VPRAGConfig(tau=pz.config.tau, per_category_budget=pz.config.per_category_budget,
                         three_phrase=three_phrase)
    run = run_evaluation(pz, out, personas=persona or None, tasks=task or PAPER_TABLE3,
                         methods=[m.strip() for m in methods.split(",") if m.strip()], config=config)
    if as_json:
        print(run.model_dump_json(indent=2))
        return
    console.print((out / "report.md").read_text())
    console.print(f"{run.rows_written} rows written ({run.rows_resumed} resumed) in {run.seconds:.1f} s "
                  f"({run.prompts_per_s} prompts/s); plots: {', '.join(run.plots)}")


DEMO_QUERIES = [
    ("p01_kyoto_ceramicist", "A preferred outdoor spot"),
    ("p07_oaxaca_chef", "A photo showing my next social media post with my style and content"),
    ("p05_tromso_fisherman", "A cultural site I would visit on a weekend"),
    ("p21_accra_kente_photographer", "Here is a convention center. Add a preferred event"),
]


@app.command()
@cli_errors
def demo(file: Path = typer.Option(SAMPLE_FILE, help="Persona JSONL to ingest."),
         methods: str = typer.Option("baseline,brag,vprag", help="Comma-separated methods to compare.")) -> None:
    """Ingest the bundled sample personas and personalize a few queries, with traces. Offline."""
    if not file.exists():
        raise FileNotFoundError(f"sample personas not found at {file}; pass --file")
    pz = _personalizer()
    console.rule("ingest")
    report = pz.ingest(file, progress=True)
    console.print(f"{file}: created {len(report.created)}, updated {len(report.updated)}, unchanged "
                  f"{len(report.unchanged)}; embedded {report.texts_embedded} texts; store: {pz.store!r}")
    from ._render import render_result

    stored = set(pz.store.list_ids())
    for pid, query in DEMO_QUERIES:
        if pid not in stored:
            continue
        console.rule(f"{pid}: {query}")
        for m in methods.split(","):
            result = pz.personalize(pid, query, method=m.strip())
            render_result(result, console, trace=m.strip() == "vprag")


_PLUGINS = [  # (module, function, typer app it registers into); modules absent from an install are skipped
    ("evaluators._cli_masc", "register", score_app),
    ("evaluators._cli_fpr", "register", score_app),
    ("evaluators._cli_clip_dino", "register", score_app),
    ("evaluators._cli_stellar", "register", score_app),
    ("evaluators._cli_vlm_judge", "register", score_app),
    ("evaluators._cli_feedback", "register", app),
    ("agents.persona_gen._cli", "register_bench", bench_app),
    ("agents.persona_gen._cli", "register_root", app),
    ("sdk._cli_bench", "register_bench", bench_app),
]


def _register_plugins() -> None:
    """Evaluator, feedback and benchmark modules add their commands to the CLI."""
    for name, func, target in _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        getattr(module, func)(target)


_register_plugins()
