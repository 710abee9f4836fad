"""``vptt bench run``: personas × tasks × methods at scale, resumable, on one process or on Ray.

Every (persona, task, method) gets the :class:`sdk.pipeline.RowPipeline` row (prompt, VPTT terms) plus its
seed, and, when an image generator is given, the image path, image-metric values and a judge score.
Output directory::

    manifest.json    config (tasks, methods, VPRAG settings, seed and seed rule, composer and LLM sampling
                     settings, generator, metrics, judge), versions, one entry per session (backend, workers,
                     rows written, throughput, LLM completions bought / from the cache and tokens), and
                     ``llm_totals`` over all rows
    rows.jsonl       one row per (persona, task, method) (:class:`sdk._resultlog.ResultLog`)
    personas.jsonl   one record per persona: age, gender, country, mean caption embedding (base64 float32)
    personas.npz     the same as arrays, rewritten at the end of each session (for reports)
    images/<persona>/<task>/<method>.png

Only the driver writes, one persona at a time: its images (atomically), its persona record, then its rows
(one fsync'ed append). Workers only compute and return a :class:`PersonaResult`. After a crash or
``kill -9`` the same call continues: personas with every row present are skipped, the rest recomputed,
and rows whose key is already present are dropped, so no row is lost or duplicated. Seeds derive from the
run seed and the row key (:func:`derive_seed`), so recomputed rows and images are the same.

With an LLM composer (``BenchRecipe(llm=LLMComposerConfig(...))``, CLI ``--composer llm``) each worker keeps its
share of ``concurrency`` requests in flight (:class:`sdk.pipeline.RowPipeline`), and every completion goes
through the response cache in the data directory, so a recomputed row buys nothing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from vptt.agents.methods import METHODS, get_method
from vptt.agents.personalizer import Personalizer
from vptt.agents.tasks import PAPER_TABLE3, Task, check_task_images, resolve_tasks, with_task_images
from vptt.agents.vprag import VPRAGConfig
from vptt.core.errors import ConfigError
from vptt.core.resultlog import ResultLog
from vptt.core.vectors import decode_vector, encode_vector
from vptt.evaluators.vlm_judge import PostSelection
from vptt.sdk.bench_worker import (
    SEED_RULE,
    BenchComponents,
    BenchPlan,
    BenchRecipe,
    BenchWorker,
    ImageContext,
    PersonaResult,
    derive_seed,
)
from vptt.sdk.evaluate import _check_manifest, _manifest, record_session, row_key
from vptt.sdk.pipeline import RunMeter

Backend = Literal["local", "ray"]

__all__ = ["SEED_RULE", "BenchComponents", "BenchPlan", "BenchRecipe", "BenchRun", "BenchWorker",
           "ImageContext", "PersonaResult", "decode_vector", "derive_seed",
           "encode_vector", "run_bench", "write_personas_npz"]


# --------------------------------------------------------------------------- driver
class BenchRun(BaseModel):
    """What one ``bench run`` session did."""

    out_dir: str
    rows_path: str
    manifest_path: str
    backend: str
    workers: int
    personas: int = 0
    personas_computed: int = 0
    personas_skipped: list[str] = Field(default_factory=list)
    rows_total: int = 0
    rows_written: int = 0
    rows_resumed: int = 0
    images_written: int = 0
    seconds: float = 0.0
    rows_per_s: float = 0.0
    personas_per_s: float = 0.0
    worker_personas: dict[str, int] = Field(default_factory=dict)
    worker_cpu_seconds: dict[str, float] = Field(default_factory=dict)
    llm: dict[str, int] | None = None
    """LLM figures of this session: completions bought, cache hits, tokens in/out (None without an LLM)."""


class _Sink:
    """The single writer: images, persona records and rows of each arriving :class:`PersonaResult`."""

    def __init__(self, out: Path, progress: Any) -> None:
        self.meter = RunMeter()
        self.out = out
        self.rows = ResultLog(out / "rows.jsonl", row_key)
        self.personas = ResultLog(out / "personas.jsonl", lambda r: (str(r["persona_id"]),))
        self.progress = progress
        self.written = self.images = self.computed = 0
        self.by_worker: dict[str, int] = {}
        self.cpu: dict[str, float] = {}
        self.skipped = [str(r["persona_id"]) for r in self.personas.rows() if r.get("skipped")]

    def commit(self, result: PersonaResult, worker: str = "0") -> None:
        for rel, data in result.images.items():
            path = self.out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            self.images += 1
        self.personas.append([result.info])
        self.written += self.rows.append(result.rows)
        self.computed += 1
        if result.info.get("skipped"):
            self.skipped.append(result.persona_id)
        self.by_worker[worker] = self.by_worker.get(worker, 0) + 1
        self.cpu[worker] = round(self.cpu.get(worker, 0.0) + result.cpu_seconds, 3)
        self.meter.add(result.rows)
        if self.progress is not None:
            self.progress(result)


def write_personas_npz(out_dir: str | Path) -> Path:
    """``personas.npz`` (ids, ages with NaN for unknown, genders, countries, mean caption embeddings)."""
    out = Path(out_dir)
    recs = ResultLog(out / "personas.jsonl", lambda r: (str(r["persona_id"]),)).rows()
    vecs = [decode_vector(r["caption_mean"]) if r.get("caption_mean") else None for r in recs]
    dim = next((v.size for v in vecs if v is not None), 0)
    emb = np.stack([v if v is not None else np.full(dim, np.nan, np.float32) for v in vecs]) if recs else \
        np.zeros((0, 0), np.float32)
    path, tmp = out / "personas.npz", out / ".personas.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, persona_id=np.array([r["persona_id"] for r in recs], dtype=str),
                 age=np.array([np.nan if r.get("age") is None else r["age"] for r in recs], dtype=np.float64),
                 gender=np.array([r.get("gender") or "" for r in recs], dtype=str),
                 country=np.array([r.get("country") or "" for r in recs], dtype=str), caption_mean=emb)
    os.replace(tmp, path)
    return path


def _bench_manifest(pz: Personalizer, plan: BenchPlan, described: dict[str, Any], backend: str) -> dict:
    m = _manifest(pz, plan.tasks, plan.methods, plan.config)
    m["config"].update(seed=plan.seed, seed_rule=SEED_RULE, **described)
    m["seed"] = plan.seed
    if backend == "ray":
        from importlib.metadata import version

        m["versions"]["ray"] = version("ray")
    return m


def _progress_bar(progress: bool | Callable[[int], None], total_rows: int, backend: str,
                  meter: RunMeter) -> tuple[Any, Any]:
    """A tqdm bar over rows (rows/s, ETA, and LLM calls/s, tokens/s, cache hits), or the user's callback."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_rows, desc=f"bench run ({backend})", unit="row", smoothing=0.1)

        def tick(result: PersonaResult) -> None:
            bar.update(len(result.rows))
            postfix = meter.postfix()
            if postfix:
                bar.set_postfix_str(postfix, refresh=False)
        return bar, tick
    if callable(progress):
        return None, lambda result: progress(1)
    return None, None


def run_bench(source: Personalizer | BenchComponents | BenchRecipe, out_dir: str | Path, *,
              personas: Iterable[str] | None = None, tasks: Iterable[str | Task] = PAPER_TABLE3,
              methods: Sequence[str] = tuple(METHODS), config: VPRAGConfig | None = None, seed: int = 0,
              backend: Backend = "local", workers: int = 1, address: str | None = None,
              runtime_env: dict[str, Any] | None = None, shard_size: int | None = None,
              gpus_per_worker: float = 0.0, ingest: str | os.PathLike[str] | None = None,
              task_images: Mapping[str, str | os.PathLike[str]] | None = None,
              judge_posts: PostSelection = "matched",
              progress: bool | Callable[[int], None] = True) -> BenchRun:
    """Run (or continue) a benchmark of personas × tasks × methods into ``out_dir``.

    Args:
        source: a Personalizer (text path, local backend), ready :class:`BenchComponents` (local backend),
            or a :class:`BenchRecipe` (either backend; Ray workers build their components from it).
        out_dir: output directory; re-running with the same arguments continues an interrupted run.
        personas: persona ids (default: every stored persona, sorted).
        tasks: preset names, ``name=query`` strings or :class:`~agents.tasks.Task` objects.
        methods: methods to compare.
        config: VPRAG settings (default: the Personalizer's).
        seed: run seed; each row's seed is :func:`derive_seed` of it and the row key.
        backend: ``"local"`` (this process) or ``"ray"`` (``workers`` actors, personas sharded among them).
        workers: Ray actors (one CPU each).
        address: a Ray cluster address (``ray://host:10001`` or ``auto``); default starts a local Ray.
        runtime_env: Ray runtime environment (e.g. ``{"working_dir": "."}`` on a cluster).
        shard_size: personas per Ray task (default: about 16 tasks per worker, at most 8 personas).
        gpus_per_worker: GPUs each Ray actor reserves (e.g. 1 for a diffusers generator; 0.5 packs two).
        ingest: a persona JSONL to upsert into the store first (idempotent).
        task_images: ``{editing task name: image path}``, the shared input image of each editing task
            (:func:`agents.tasks.with_task_images`); with a generator every editing task needs one.
        judge_posts: which posts the judge's profile canvas shows: ``"matched"`` (the 10 whose captions are
            closest to the judged prompts) or ``"first"`` (the first 10); recorded per row as ``judge_posts``.
        progress: tqdm bar with ETA (True), or a callback called with 1 per finished persona.

    Raises:
        ConfigError: bad arguments, a Ray run without a Chroma server store, an editing task without an
            input image while generating, or ``out_dir`` holding a run of another configuration.
    """
    if backend not in ("local", "ray"):
        raise ConfigError(f"backend must be 'local' or 'ray', got {backend!r}")
    if workers < 1 or (shard_size is not None and shard_size < 1) or gpus_per_worker < 0:
        raise ConfigError("workers and shard_size must be >= 1 and gpus_per_worker >= 0")
    for m in methods:
        get_method(m)
    if backend == "ray":
        if not isinstance(source, BenchRecipe):
            raise ConfigError("the Ray backend needs a BenchRecipe (workers build their own models from it)")
        s = source.settings
        if s.store != "chroma" or not s.chroma_host:
            raise ConfigError("the Ray backend needs a persona store every worker can reach: a Chroma "
                              "server. Start one (`chroma run --host 127.0.0.1 --port 8000 --path DIR`) and "
                              "pass VPTTSettings(chroma_host=..., chroma_port=...) "
                              "(CLI: vptt --chroma-host HOST bench run ...)")
        # local Ray workers then share the driver's embedding cache instead of one per working directory
        source = replace(source, settings=s.model_copy(update={"data_dir": s.data_dir.resolve()}),
                         llm=_per_worker(source.llm, workers))
    comps = source if isinstance(source, BenchComponents) else None
    if isinstance(source, Personalizer):
        comps = BenchComponents(source)
    if isinstance(source, BenchRecipe) and backend == "local":
        comps = source.build()
    pz = comps.personalizer if comps is not None else source.build_personalizer()  # type: ignore[union-attr]
    # a recipe describes itself by its specs, so a run may switch backends and still resume
    described = (source if isinstance(source, BenchRecipe) else comps).describe()  # type: ignore[union-attr]
    if ingest is not None:
        pz.ingest(ingest, progress=progress is True)
    if judge_posts not in ("matched", "first"):
        raise ConfigError(f"judge_posts must be 'matched' or 'first', got {judge_posts!r}")
    task_list = with_task_images(resolve_tasks(tasks), task_images or {})
    generator = comps.generator if comps is not None else source.generator  # type: ignore[union-attr]
    generating = generator is not None
    check_task_images(task_list, generating=generating)
    plan = BenchPlan(tuple(task_list), tuple(methods), config or pz.config, seed, judge_posts=judge_posts)
    if described.get("judge") is not None:
        described = {**described, "judge_posts": judge_posts}
    stored = pz.store.list_ids()
    ids = sorted(set(personas)) if personas is not None else stored
    if not ids:
        raise ConfigError("no personas to run; ingest some (`vptt ingest FILE`) or pass a persona JSONL")
    missing = sorted(set(ids) - set(stored))
    if missing:
        raise ConfigError(f"{len(missing)} persona id(s) not in the store, e.g. {missing[:3]}; "
                          "ingest them first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_manifest(out / "manifest.json", _bench_manifest(pz, plan, described, backend))
    ray_options = {"workers": workers, "address": address, "runtime_env": runtime_env,
                   "shard_size": shard_size, "gpus_per_worker": gpus_per_worker}
    return _drive(comps, source, pz, plan, ids, out, backend=backend, ray_options=ray_options,
                  progress=progress)


def _per_worker(llm: Any, workers: int) -> Any:
    """The LLM settings of one of ``workers`` Ray workers: concurrency and rate limits shared among them."""
    if llm is None:
        return None
    share = {"concurrency": max(1, math.ceil(llm.concurrency / workers))}
    for name in ("requests_per_min", "tokens_per_min"):
        if getattr(llm, name) is not None:
            share[name] = getattr(llm, name) / workers
    return llm.model_copy(update=share)


def _drive(comps: BenchComponents | None, source: Any, pz: Personalizer, plan: BenchPlan, ids: list[str],
           out: Path, *, backend: str, ray_options: dict[str, Any],
           progress: bool | Callable[[int], None]) -> BenchRun:
    """Skip what is done, compute the rest on the chosen backend, record the session."""
    sink = _Sink(out, None)
    resumed = len(sink.rows.done)
    done_pairs: dict[str, set[tuple[str, str]]] = {}
    for pid, task, method in sink.rows.done:
        done_pairs.setdefault(pid, set()).add((task, method))
    wanted = {(t.name, m) for t in plan.tasks for m in plan.methods}
    skipped = set(sink.skipped)
    jobs = [(pid, frozenset(done_pairs.get(pid, set()) & wanted)) for pid in ids if pid not in skipped
            and (not wanted <= done_pairs.get(pid, set()) or (pid,) not in sink.personas.done)]
    bar, tick = _progress_bar(progress, sum(len(wanted) - len(skip) for _, skip in jobs), backend, sink.meter)
    sink.progress = tick
    t0 = time.perf_counter()
    try:
        if backend == "local":
            worker = BenchWorker(comps, plan)  # type: ignore[arg-type]
            try:
                for result in worker.run_many(jobs):
                    sink.commit(result)
            finally:
                worker.close()
        elif jobs:
            from vptt.sdk._ray_backend import run_on_ray

            run_on_ray(source, plan, jobs, sink.commit, **ray_options)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    write_personas_npz(out)
    run = BenchRun(out_dir=str(out), rows_path=str(sink.rows.path), manifest_path=str(out / "manifest.json"),
                   backend=backend, workers=ray_options["workers"] if backend == "ray" else 1,
                   personas=len(ids),
                   personas_computed=sink.computed, rows_total=len(sink.rows.done), rows_written=sink.written,
                   rows_resumed=resumed, images_written=sink.images, seconds=round(seconds, 3),
                   personas_skipped=sorted(set(sink.skipped) & set(ids)),
                   rows_per_s=round(sink.written / seconds, 2) if seconds > 0 else 0.0,
                   personas_per_s=round(sink.computed / seconds, 3) if seconds > 0 else 0.0,
                   worker_personas=sink.by_worker, worker_cpu_seconds=sink.cpu,
                   llm=sink.meter.totals if sink.meter.totals["rows_with_llm"] else None)
    keep = {"backend", "workers", "personas_computed", "rows_written", "rows_resumed", "seconds",
            "rows_per_s", "llm"}
    record_session(out / "manifest.json", run.model_dump(include=keep), sink.rows.rows())
    return run
