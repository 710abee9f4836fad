"""``vptt bench run``: personas × tasks × methods at scale, resumable, on one process or on Ray.

Every (persona, task, method) gets the :func:`sdk.evaluate.persona_rows` row (prompt, VPTT terms) plus its
seed, and, when an image generator is given, the image path, image-metric values and a judge score.
Output directory::

    manifest.json    config (tasks, methods, VPRAG settings, seed and seed rule, generator, metrics, judge),
                     versions, and one entry per session (backend, workers, rows written, throughput)
    rows.jsonl       one row per (persona, task, method) (:class:`sdk._resultlog.ResultLog`)
    personas.jsonl   one record per persona: age, gender, country, mean caption embedding (base64 float32)
    personas.npz     the same as arrays, rewritten at the end of each session (for reports)
    images/<persona>/<task>/<method>.png

Only the driver writes, one persona at a time: its images (atomically), its persona record, then its rows
(one fsync'ed append). Workers only compute and return a :class:`PersonaResult`. After a crash or
``kill -9`` the same call continues: personas with every row present are skipped, the rest recomputed,
and rows whose key is already present are dropped, so no row is lost or duplicated. Seeds derive from the
run seed and the row key (:func:`derive_seed`), so recomputed rows and images are the same.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from agents.methods import METHODS, get_method
from agents.tasks import PAPER_TABLE3, Task, resolve_tasks
from agents.vprag import VPRAGConfig
from stores.records import EmbeddedPersona

from ._resultlog import ResultLog
from .errors import ConfigError
from .evaluate import _check_manifest, _manifest, persona_rows, row_key
from .personalizer import Personalizer
from .settings import VPTTSettings

__all__ = ["SEED_RULE", "BenchComponents", "BenchPlan", "BenchRecipe", "BenchRun", "BenchWorker",
           "ImageContext", "LengthBatchedEmbedder", "PersonaResult", "decode_vector", "derive_seed",
           "encode_vector", "run_bench", "write_personas_npz"]

SEED_RULE = "int.from_bytes(sha256(f'{seed}|{persona_id}|{task}|{method}'.encode()).digest()[:4], 'big') >> 1"
"""How each row's seed derives from the run seed (recorded in the manifest)."""

Backend = Literal["local", "ray"]


def derive_seed(run_seed: int, persona_id: str, task: str, method: str) -> int:
    """The row's seed in [0, 2**31): 31 bits of sha256 of ``"{seed}|{persona_id}|{task}|{method}"``.

    Example:
        >>> derive_seed(0, "alice", "garden", "vprag") == derive_seed(0, "alice", "garden", "vprag")
        True
    """
    digest = hashlib.sha256(f"{run_seed}|{persona_id}|{task}|{method}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def encode_vector(v: np.ndarray) -> str:
    """A float32 vector as base64 (little-endian)."""
    return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(s: str) -> np.ndarray:
    """Inverse of :func:`encode_vector`."""
    return np.frombuffer(base64.b64decode(s), dtype="<f4").astype(np.float32)


def _resolve(spec: str) -> Any:
    """``"package.module:attribute"`` -> the attribute."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"expected 'package.module:factory', got {spec!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {spec!r}: {exc}") from exc


# --------------------------------------------------------------------------- components
@dataclass(frozen=True)
class ImageContext:
    """What an image metric may look at besides the image."""

    persona: EmbeddedPersona
    task: Task
    method: str
    prompt: str
    seed: int
    init_image: Any = None


ImageMetric = Callable[[Any, ImageContext], "float | Mapping[str, float]"]
"""``metric(image, context) -> value`` or ``{name: value}``; a row stores them under ``image_metrics``."""


class LengthBatchedEmbedder:
    """Embeds texts in small batches of similar length.

    One batch of a persona's 20 prompts (5 to 270 tokens) pads every prompt to the longest; batches of 4
    sorted by length halve the CPU time of MiniLM on one thread. Rows come back in the input order.
    """

    def __init__(self, inner: Any, batch_size: int = 4) -> None:
        self.inner = inner
        self.batch_size = batch_size
        self.name = getattr(inner, "name", type(inner).__name__)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts = [np.asarray(self.inner.embed([texts[i] for i in order[k:k + self.batch_size]]))
                 for k in range(0, len(order), self.batch_size)]
        if not parts:
            return np.asarray(self.inner.embed([]))
        out = np.empty((len(texts), parts[0].shape[1]), dtype=parts[0].dtype)
        out[order] = np.concatenate(parts)
        return out


@dataclass
class BenchComponents:
    """The objects one worker runs with, built once and reused for every persona.

    Attributes:
        personalizer: its store holds the personas; its embedder embeds queries and prompts.
        scorer: a :class:`evaluators.vptt_score.VPTTScorer` (default: over ``personalizer.embedder`` through
            :class:`LengthBatchedEmbedder`).
        generator: optional; ``generate(prompt, *, seed=None, init_image=None)`` returning an object with
            ``.image`` (PIL), or an :class:`agents.generators.ImageGenerator`.
        image_metrics: name -> :data:`ImageMetric`, applied to every generated image.
        judge: optional; ``judge(persona_id=, persona_images=, method_images=, prompt=, task=,
            input_image=)`` returning per-method scores (``.scores`` or a mapping), like
            :class:`evaluators.vlm_judge.VLMJudge`; called once per (persona, task) if the persona has
            post images.
    """

    personalizer: Personalizer
    scorer: Any = None
    generator: Any = None
    image_metrics: Mapping[str, ImageMetric] = field(default_factory=dict)
    judge: Any = None

    def __post_init__(self) -> None:
        if self.scorer is None:
            from evaluators.vptt_score import VPTTScorer

            self.scorer = VPTTScorer(LengthBatchedEmbedder(self.personalizer.embedder))
        if self.generator is not None and not callable(getattr(self.generator, "generate", None)):
            raise ConfigError("generator must have a generate(...) method")
        if (self.image_metrics or self.judge is not None) and self.generator is None:
            raise ConfigError("image metrics and a judge need images: pass a generator too")

    def describe(self) -> dict[str, Any]:
        """Names for the manifest."""
        name = (lambda o: None if o is None else str(getattr(o, "name", type(o).__name__)))  # noqa: E731
        return {"generator": name(self.generator), "image_metrics": sorted(self.image_metrics),
                "judge": name(self.judge)}


@dataclass
class BenchRecipe:
    """How a worker builds its :class:`BenchComponents`; picklable, so Ray ships it to every actor.

    Attributes:
        settings: store and embedder settings (the Ray backend needs a Chroma server: ``chroma_host``).
        generator: a generator name of :func:`agents.generators.build_generator` (``"diffusers"``,
            ``"openai"``), ``"module:factory"``, or a zero-argument factory; None for the text path.
        generator_options: keyword arguments for the named generator or factory.
        image_metrics: metric name -> ``"module:factory"`` or a zero-argument factory returning the metric.
        judge: ``"module:factory"`` or a zero-argument factory returning the judge.
    """

    settings: VPTTSettings = field(default_factory=VPTTSettings)
    generator: Any = None
    generator_options: dict[str, Any] = field(default_factory=dict)
    image_metrics: dict[str, Any] = field(default_factory=dict)
    judge: Any = None

    @staticmethod
    def _make(spec: Any, **kwargs: Any) -> Any:
        return (_resolve(spec) if isinstance(spec, str) else spec)(**kwargs)

    def build_personalizer(self) -> Personalizer:
        """The Personalizer alone (cheap: models load on first use)."""
        return Personalizer(settings=self.settings)

    def build(self) -> BenchComponents:
        """Every component (loads nothing heavy until first use where the component is lazy)."""
        gen = None
        if isinstance(self.generator, str) and ":" not in self.generator:
            from agents.generators import build_generator

            gen = build_generator(self.generator, **self.generator_options)
        elif self.generator is not None:
            gen = self._make(self.generator, **self.generator_options)
        metrics = {k: self._make(v) for k, v in self.image_metrics.items()}
        judge = self._make(self.judge) if self.judge is not None else None
        return BenchComponents(self.build_personalizer(), generator=gen, image_metrics=metrics, judge=judge)

    def describe(self) -> dict[str, Any]:
        """Names for the manifest (the specs as given; factories by qualified name)."""
        name = (lambda s: s if s is None or isinstance(s, str)  # noqa: E731
                else f"{getattr(s, '__module__', '?')}:{getattr(s, '__qualname__', type(s).__name__)}")
        return {"generator": name(self.generator), "image_metrics": sorted(self.image_metrics),
                "judge": name(self.judge)}


# --------------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class BenchPlan:
    """What to compute for each persona (picklable)."""

    tasks: tuple[Task, ...]
    methods: tuple[str, ...]
    config: VPRAGConfig
    seed: int = 0


@dataclass
class PersonaResult:
    """One persona's output: its rows, its record for ``personas.jsonl`` and its PNG files (relative path)."""

    persona_id: str
    rows: list[dict[str, Any]]
    info: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def safe_name(text: str) -> str:
    """A path component for ``text``: itself when safe, else a cleaned stem plus 8 hex of its sha256."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", text):
        return text
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:60] or "x"
    return f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def image_relpath(persona_id: str, task: str, method: str) -> str:
    """``images/<persona>/<task>/<method>.png`` (components made path-safe)."""
    return "/".join(["images", safe_name(persona_id), safe_name(task), safe_name(method) + ".png"])


def persona_info(mem: EmbeddedPersona) -> dict[str, Any]:
    """The persona's record: demographics for colouring maps and its mean caption embedding."""
    d = mem.persona.demographics
    caps = np.asarray(mem.caption_embs, dtype=np.float64)
    return {"persona_id": mem.persona_id, "age": d.age, "gender": d.gender, "country": d.country,
            "occupation": d.occupation, "n_posts": int(caps.shape[0]),
            "caption_mean": encode_vector(caps.mean(axis=0)) if caps.shape[0] else None}


def _generate(gen: Any, prompt: str, seed: int, init_image: Any) -> Any:
    try:
        from agents.generators.base import GenerationRequest, ImageGenerator
    except ImportError:  # pragma: no cover - generators are part of the package
        ImageGenerator = None  # type: ignore[assignment]  # noqa: N806
    if ImageGenerator is not None and isinstance(gen, ImageGenerator):
        return gen.generate(GenerationRequest(prompt=prompt, seed=seed, init_image=init_image)).image
    return gen.generate(prompt, seed=seed, init_image=init_image).image


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class BenchWorker:
    """Computes :class:`PersonaResult`s with components built once (in-process, or one per Ray actor)."""

    def __init__(self, components: BenchComponents, plan: BenchPlan) -> None:
        self.c = components
        self.plan = plan
        self._query_embs: dict[str, np.ndarray] | None = None
        self._init_images: dict[str, Any] = {}

    def query_embs(self) -> dict[str, np.ndarray]:
        """Each task's query embedding (embedded once per worker)."""
        if self._query_embs is None:
            q = self.c.personalizer.embedder.embed([t.query for t in self.plan.tasks])
            self._query_embs = {t.name: q[i] for i, t in enumerate(self.plan.tasks)}
        return self._query_embs

    def init_image(self, task: Task) -> Any:
        """The task's input image (editing tasks with ``input_image``), loaded once."""
        if task.input_image is None:
            return None
        if task.name not in self._init_images:
            from PIL import Image

            with Image.open(task.input_image) as im:
                self._init_images[task.name] = im.convert("RGB")
        return self._init_images[task.name]

    def run(self, persona_id: str, skip: Iterable[tuple[str, str]] = ()) -> PersonaResult:
        """Rows for every (task, method) of the persona not in ``skip`` (pairs of task and method names)."""
        t0, cpu0 = time.perf_counter(), time.process_time()
        p, c = self.plan, self.c
        mem = c.personalizer.store.embedded(persona_id)
        if not mem.persona.posts:  # the VPTT score needs captions: recorded as skipped, never retried
            info = {**persona_info(mem), "skipped": "no posts: the VPTT score needs the persona's captions"}
            return PersonaResult(persona_id, [], info)
        # a judge compares all methods of a task at once: recompute the whole persona then
        done = set() if c.judge is not None else {(persona_id, t, m) for t, m in skip}
        rows = persona_rows(c.personalizer, c.scorer, mem, p.tasks, p.methods, self.query_embs(), p.config,
                            skip=done)
        images: dict[str, bytes] = {}
        tasks = {t.name: t for t in p.tasks}
        for row in rows:
            row["seed"] = derive_seed(p.seed, persona_id, row["task"], row["method"])
            if c.generator is not None:
                images.update(self._image(mem, tasks[row["task"]], row))
        if c.judge is not None and rows:
            self._judge(mem, rows, tasks)
        return PersonaResult(persona_id, rows, persona_info(mem), images, round(time.perf_counter() - t0, 6),
                             round(time.process_time() - cpu0, 6))

    def _image(self, mem: EmbeddedPersona, task: Task, row: dict[str, Any]) -> dict[str, bytes]:
        init = self.init_image(task)
        image = _generate(self.c.generator, row["prompt"], row["seed"], init)
        row["_image"] = image  # popped by _judge / below
        rel = image_relpath(mem.persona_id, task.name, row["method"])
        ctx = ImageContext(mem, task, row["method"], row["prompt"], row["seed"], init)
        values: dict[str, float] = {}
        for name, metric in self.c.image_metrics.items():
            got = metric(image, ctx)
            if isinstance(got, Mapping):
                values.update({f"{name}.{k}": float(v) for k, v in got.items()})
            else:
                values[name] = float(got)
        row["image"] = rel
        row["image_metrics"] = values
        data = _png(image)
        if self.c.judge is None:
            row.pop("_image")
        return {rel: data}

    def _judge(self, mem: EmbeddedPersona, rows: list[dict[str, Any]], tasks: dict[str, Task]) -> None:
        posts = [post.image for post in mem.persona.posts if post.image]
        for name in dict.fromkeys(r["task"] for r in rows):
            trows = [r for r in rows if r["task"] == name]
            scores: Mapping[str, Any] = {}
            if posts:
                task = tasks[name]
                got = self.c.judge.judge(persona_id=mem.persona_id, persona_images=posts,
                                         method_images={r["method"]: r["_image"] for r in trows},
                                         prompt=task.query, task=task.kind, input_image=self.init_image(task))
                scores = getattr(got, "scores", got)
            for r in trows:
                value = scores.get(r["method"])
                r["judge"] = None if value is None else float(value)
                r.pop("_image")


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


class _Sink:
    """The single writer: images, persona records and rows of each arriving :class:`PersonaResult`."""

    def __init__(self, out: Path, progress: Any) -> None:
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
        if self.progress is not None:
            self.progress(1)


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


def _write_session(path: Path, session: dict[str, Any]) -> None:
    data = json.loads(path.read_text())
    data.setdefault("sessions", []).append(session)
    tmp = path.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _bench_manifest(pz: Personalizer, plan: BenchPlan, described: dict[str, Any], backend: str) -> dict:
    m = _manifest(pz, plan.tasks, plan.methods, plan.config)
    m["config"].update(seed=plan.seed, seed_rule=SEED_RULE, **described)
    m["seed"] = plan.seed
    if backend == "ray":
        from importlib.metadata import version

        m["versions"]["ray"] = version("ray")
    return m


def _progress_bar(progress: bool | Callable[[int], None], total: int, backend: str) -> tuple[Any, Any]:
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"bench run ({backend})", unit="persona", smoothing=0.1)
        return bar, bar.update
    return None, progress if callable(progress) else None


def run_bench(source: Personalizer | BenchComponents | BenchRecipe, out_dir: str | Path, *,
              personas: Iterable[str] | None = None, tasks: Iterable[str | Task] = PAPER_TABLE3,
              methods: Sequence[str] = tuple(METHODS), config: VPRAGConfig | None = None, seed: int = 0,
              backend: Backend = "local", workers: int = 1, address: str | None = None,
              runtime_env: dict[str, Any] | None = None, shard_size: int | None = None,
              gpus_per_worker: float = 0.0, ingest: str | os.PathLike[str] | None = None,
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
        progress: tqdm bar with ETA (True), or a callback called with 1 per finished persona.

    Raises:
        ConfigError: bad arguments, a Ray run without a Chroma server store, or ``out_dir`` holding a run
            of another configuration.
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
        source = replace(source, settings=s.model_copy(update={"data_dir": s.data_dir.resolve()}))
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
    plan = BenchPlan(tuple(resolve_tasks(tasks)), tuple(methods), config or pz.config, seed)
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
    bar, tick = _progress_bar(progress, len(jobs), backend)
    sink.progress = tick
    t0 = time.perf_counter()
    try:
        if backend == "local":
            worker = BenchWorker(comps, plan)  # type: ignore[arg-type]
            for pid, skip in jobs:
                sink.commit(worker.run(pid, skip))
        elif jobs:
            from ._ray_backend import run_on_ray

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
                   worker_personas=sink.by_worker, worker_cpu_seconds=sink.cpu)
    keep = {"backend", "workers", "personas_computed", "rows_written", "rows_resumed", "seconds",
            "rows_per_s"}
    _write_session(out / "manifest.json", {**run.model_dump(include=keep),
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return run
