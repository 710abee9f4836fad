"""``vptt evaluate``: personas × tasks × methods → prompts, VPTT scores, the paper's tables and plots.

Output directory: ``rows.jsonl`` (one row per persona/task/method, resumable), ``manifest.json`` (config,
versions, sessions and LLM token totals), ``report.md`` (Table 3 and Tables 7-10 layouts), ``report.html``
(the same, with the plots inline and the prompts per persona) and ``plots/*.png``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from vptt.agents.methods import METHODS, get_method
from vptt.agents.personalizer import Personalizer
from vptt.agents.tasks import PAPER_TABLE3, Task, resolve_tasks
from vptt.agents.vprag import VPRAGConfig
from vptt.core.errors import ConfigError
from vptt.core.files import atomic_write_json, read_json_object
from vptt.core.resultlog import ResultLog
from vptt.sdk.pipeline import RowPipeline, RunMeter, is_llm_composer, llm_totals

ROW_KEY = ("persona_id", "task", "method")


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in ROW_KEY)


class EvaluationRun(BaseModel):
    """What an evaluation wrote and how fast it went."""

    out_dir: str
    rows_path: str
    report_path: str
    plots: list[str] = Field(default_factory=list)
    personas: int = 0
    rows_total: int = 0
    rows_written: int = 0
    rows_resumed: int = 0
    seconds: float = 0.0
    prompts_per_s: float = 0.0
    llm: dict[str, int] | None = None
    """LLM figures of this session: completions bought, cache hits, tokens in/out (None without an LLM)."""


def _manifest(pz: Personalizer, tasks: Sequence[Task], methods: Sequence[str], config: VPRAGConfig,
              composer: Any = None) -> dict:
    from importlib.metadata import version

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            return "n/a"

    comp = composer if composer is not None else pz.composer
    llm_cfg = getattr(comp, "config", None)
    return {"config": {"tasks": [t.model_dump() for t in tasks], "methods": list(methods),
                       "tau": config.tau, "per_category_budget": config.per_category_budget,
                       "three_phrase": config.three_phrase, "embedder": pz.embedder.name,
                       "composer": getattr(comp, "name", type(comp).__name__),
                       "token_budget": getattr(comp, "token_budget", None),
                       "include_summary": getattr(comp, "include_summary",
                                                  getattr(llm_cfg, "include_summary", None)),
                       "llm": llm_cfg.describe() if is_llm_composer(comp) and llm_cfg is not None else None},
            "versions": {"vptt": v("vptt"), "python": platform.python_version(), "numpy": v("numpy"),
                         "torch": v("torch"), "transformers": v("transformers"), "chromadb": v("chromadb")},
            "seed": 0}


MANIFEST_FIX = ("delete it to continue this run under the current configuration, or choose another output "
                "directory")


def _check_manifest(path: Path, manifest: dict) -> None:
    if path.exists():
        old = read_json_object(path, what="manifest", fix=MANIFEST_FIX)
        if old.get("config") != manifest["config"]:
            raise ConfigError(f"{path.parent} holds a run with a different configuration; choose another output "
                              "directory, or delete it to start over")
    else:
        atomic_write_json(path, {**manifest, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def evaluate(pz: Personalizer, out_dir: str | Path, *, personas: Iterable[str] | None = None,
             tasks: Iterable[str | Task] = PAPER_TABLE3, methods: Sequence[str] = tuple(METHODS),
             config: VPRAGConfig | None = None, scorer: Any = None, progress: bool | Callable[[int], None] = True,
             report: bool = True, composer: Any = None) -> EvaluationRun:
    """Personalize and score personas × tasks × methods; write rows, report and plots to ``out_dir``.

    Re-running with the same arguments resumes: rows already in ``rows.jsonl`` are skipped. With an
    :class:`~agents.llm_composer.LLMComposer` the requests go through a
    :class:`~vptt.core.llm_client.ChatClient` (``config.concurrency`` in flight, the persistent response cache
    ``<data_dir>/llm_cache.sqlite``), pipelined with scoring; a resumed or repeated run buys no completion
    twice.

    Args:
        pz: the Personalizer (its store holds the personas; its embedder embeds queries and prompts).
        out_dir: output directory.
        personas: persona ids (default: every stored persona).
        tasks: preset names, ``name=query`` strings or :class:`Task` objects.
        methods: methods to compare.
        config: VPRAG settings (default: the Personalizer's).
        scorer: a :class:`evaluators.vptt_score.VPTTScorer` (default: one over ``pz.embedder``).
        progress: tqdm bar over rows with rows/s, LLM calls/s, tokens/s, cache hits and ETA (True), or a
            callback called with 1 per persona.
        report: write ``report.md`` and plots at the end.
        composer: the composer (default ``pz.composer``): a TemplateComposer or an LLMComposer.
    """
    from vptt.evaluators.vptt_score import VPTTScorer

    task_list = resolve_tasks(tasks)
    for m in methods:
        get_method(m)
    cfg = config or pz.config
    comp = composer if composer is not None else pz.composer
    ids = sorted(personas) if personas is not None else pz.store.list_ids()
    if not ids:
        raise ConfigError("no personas to evaluate; ingest some with `vptt ingest FILE`")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_manifest(out / "manifest.json", _manifest(pz, task_list, methods, cfg, comp))
    log = ResultLog(out / "rows.jsonl", row_key)
    resumed = len(log.done)
    scorer = scorer or VPTTScorer(pz.embedder)
    q = pz.embedder.embed([t.query for t in task_list])
    query_embs = {t.name: q[i] for i, t in enumerate(task_list)}
    wanted = [(t.name, m) for t in task_list for m in methods]
    jobs = [(pid, {(t, m) for t, m in wanted if (pid, t, m) in log.done}) for pid in ids]
    jobs = [(pid, done) for pid, done in jobs if len(done) < len(wanted)]
    client = comp.bulk_client(pz.settings.llm_cache_path) if is_llm_composer(comp) else None
    pipe = RowPipeline(pz, scorer, task_list, methods, query_embs, cfg, composer=comp, client=client)
    meter = RunMeter()
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(wanted) - len(done) for _, done in jobs), desc="evaluating", unit="row",
                   smoothing=0.1)
    t0 = time.perf_counter()
    written = 0
    try:
        for got in pipe.run(jobs):
            written += log.append(got.rows)
            meter.add(got.rows)
            if bar is not None:
                bar.update(len(got.rows))
                if meter.postfix():
                    bar.set_postfix_str(meter.postfix(), refresh=False)
            elif callable(progress):
                progress(1)
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
    seconds = time.perf_counter() - t0
    run = EvaluationRun(out_dir=str(out), rows_path=str(log.path), report_path=str(out / "report.md"),
                        personas=len(ids), rows_total=len(log.done), rows_written=written, rows_resumed=resumed,
                        seconds=round(seconds, 3), prompts_per_s=round(written / seconds, 1) if seconds else 0.0,
                        llm=meter.totals if meter.totals["rows_with_llm"] else None)
    record_session(out / "manifest.json", {"rows_written": written, "rows_resumed": resumed,
                                           "seconds": run.seconds, "rows_per_s": run.prompts_per_s,
                                           "llm": run.llm}, log.rows())
    if report:
        write_report(out)
        run.plots = [str(p) for p in sorted((out / "plots").glob("*.png"))]
    return run


def record_session(path: Path, session: dict[str, Any], rows: Iterable[dict[str, Any]]) -> None:
    """Append ``session`` (stamped) to the manifest's ``sessions`` and refresh ``llm_totals`` over ``rows``
    (atomically: a temporary file, then a rename)."""
    data = read_json_object(path, what="manifest", fix=MANIFEST_FIX)
    data.setdefault("sessions", []).append({**session, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    totals = llm_totals(rows)
    if totals["rows_with_llm"]:
        data["llm_totals"] = totals
    atomic_write_json(path, data)


def write_report(out_dir: str | Path, title: str = "VPTT evaluation") -> Path:
    """(Re)write ``report.md``, ``report.html`` and ``plots/`` from ``rows.jsonl`` in ``out_dir``.

    The same report as ``vptt bench report`` (:func:`evaluators.bench_report.bench_report`), written into the
    run's own directory.
    """
    from vptt.evaluators.bench_report import bench_report

    out = Path(out_dir)
    ResultLog(out / "rows.jsonl", row_key)  # repairs a torn last line before the report reads the rows
    return bench_report(out, out, title=title).markdown
