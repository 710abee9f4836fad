"""``vptt evaluate``: personas × tasks × methods → prompts, VPTT scores, the paper's tables and plots.

Output directory: ``rows.jsonl`` (one row per persona/task/method, resumable), ``manifest.json`` (config and
versions), ``report.md`` (Table 3 and Tables 7-10 layouts) and ``plots/*.png``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from vptt.agents.methods import CAPTION_METHODS, METHODS, get_method
from vptt.agents.personalizer import Personalizer
from vptt.agents.tasks import PAPER_TABLE3, Task, resolve_tasks
from vptt.agents.vprag import VPRAGConfig
from vptt.core.errors import ConfigError
from vptt.core.files import atomic_write_json, read_json_object
from vptt.core.resultlog import ResultLog
from vptt.stores.records import EmbeddedPersona

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


def persona_rows(pz: Personalizer, scorer: Any, mem: EmbeddedPersona, tasks: Sequence[Task],
                 methods: Sequence[str], query_embs: dict[str, np.ndarray], config: VPRAGConfig,
                 skip: Collection[tuple[str, ...]] = ()) -> list[dict[str, Any]]:
    """Personalize and score every (task, method) of one persona that is not in ``skip``."""
    from vptt.evaluators.vptt_score import PersonaEmbeddings

    results = []
    for task in tasks:
        for m in methods:
            if (mem.persona_id, task.name, m) in skip:
                continue
            results.append((task, pz.personalize_embedded(mem, task.query, query_embs[task.name], method=m,
                                                          config=config)))
    if not results:
        return []
    pe = PersonaEmbeddings(mem.persona_id, mem.card_emb, mem.caption_embs, mem.captions)
    prompts = [r.prompt for _, r in results]
    embs = np.asarray(scorer.embedder.embed(list(dict.fromkeys(prompts))))
    index = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    geo = scorer.prepare(pe)
    from vptt.evaluators.vptt_score import combine, score_prepared

    batch = score_prepared(geo, prompts, embs[[index[p] for p in prompts]], caption_conditioned=True)
    rows = []
    for i, (task, r) in enumerate(results):
        conditioned = r.method in CAPTION_METHODS
        s = batch[i]
        nv = s.nv if conditioned else 0.0  # the paper reports NV = 0 for methods that never saw captions
        score = s.score if conditioned else float(combine(s.pa, s.gs, s.cp, 0.0)[0])
        rows.append({"persona_id": mem.persona_id, "task": task.name, "task_kind": task.kind, "method": r.method,
                     "query": task.query, "prompt": r.prompt, "pa": s.pa, "gs": s.gs, "cp": s.cp, "nv": nv,
                     "score": score, "score_c": s.score_c, "caption_conditioned": conditioned,
                     "n_eff": r.trace.n_eff, "k": r.trace.k, "elements": len(r.trace.kept_elements()),
                     "tokens": r.trace.composition.tokens if r.trace.composition else None,
                     "fallback": r.fallback})
    return rows


def _manifest(pz: Personalizer, tasks: Sequence[Task], methods: Sequence[str], config: VPRAGConfig) -> dict:
    from importlib.metadata import version

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            return "n/a"

    return {"config": {"tasks": [t.model_dump() for t in tasks], "methods": list(methods),
                       "tau": config.tau, "per_category_budget": config.per_category_budget,
                       "three_phrase": config.three_phrase, "embedder": pz.embedder.name,
                       "composer": getattr(pz.composer, "name", type(pz.composer).__name__),
                       "token_budget": getattr(pz.composer, "token_budget", None)},
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
             report: bool = True) -> EvaluationRun:
    """Personalize and score personas × tasks × methods; write rows, report and plots to ``out_dir``.

    Re-running with the same arguments resumes: rows already in ``rows.jsonl`` are skipped.

    Args:
        pz: the Personalizer (its store holds the personas; its embedder embeds queries and prompts).
        out_dir: output directory.
        personas: persona ids (default: every stored persona).
        tasks: preset names, ``name=query`` strings or :class:`Task` objects.
        methods: methods to compare.
        config: VPRAG settings (default: the Personalizer's).
        scorer: a :class:`evaluators.vptt_score.VPTTScorer` (default: one over ``pz.embedder``).
        progress: tqdm bar over personas (True) or a callback called with 1 per persona.
        report: write ``report.md`` and plots at the end.
    """
    from vptt.evaluators.vptt_score import VPTTScorer

    task_list = resolve_tasks(tasks)
    for m in methods:
        get_method(m)
    cfg = config or pz.config
    ids = sorted(personas) if personas is not None else pz.store.list_ids()
    if not ids:
        raise ConfigError("no personas to evaluate; ingest some with `vptt ingest FILE`")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_manifest(out / "manifest.json", _manifest(pz, task_list, methods, cfg))
    log = ResultLog(out / "rows.jsonl", row_key)
    resumed = len(log.done)
    scorer = scorer or VPTTScorer(pz.embedder)
    q = pz.embedder.embed([t.query for t in task_list])
    query_embs = {t.name: q[i] for i, t in enumerate(task_list)}
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc="evaluating", unit="persona")
    t0 = time.perf_counter()
    written = 0
    try:
        for pid in ids:
            if all((pid, t.name, m) in log.done for t in task_list for m in methods):
                pass
            else:
                rows = persona_rows(pz, scorer, pz.store.embedded(pid), task_list, methods, query_embs, cfg,
                                    skip=log.done)
                written += log.append(rows)
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(1)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    run = EvaluationRun(out_dir=str(out), rows_path=str(log.path), report_path=str(out / "report.md"),
                        personas=len(ids), rows_total=len(log.done), rows_written=written, rows_resumed=resumed,
                        seconds=round(seconds, 3), prompts_per_s=round(written / seconds, 1) if seconds else 0.0)
    if report:
        write_report(out)
        run.plots = [str(p) for p in sorted((out / "plots").glob("*.png"))]
    return run


def write_report(out_dir: str | Path, title: str = "VPTT evaluation") -> Path:
    """(Re)write ``report.md`` and ``plots/`` from ``rows.jsonl`` in ``out_dir``."""
    from vptt.evaluators.report import markdown_report, write_plots

    out = Path(out_dir)
    rows = ResultLog(out / "rows.jsonl", row_key).rows(required=(*ROW_KEY, "score"), numeric=("score",))
    if not rows:
        raise ConfigError(f"{out / 'rows.jsonl'} has no rows to report")
    (out / "report.md").write_text(markdown_report(rows, title))
    write_plots(rows, out / "plots")
    return out / "report.md"
