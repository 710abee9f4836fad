"""The worker side of ``vptt bench run``: what to compute for one persona (no file is written here).

:class:`BenchRecipe` says how to build the heavy parts in any process (a Ray actor too), :class:`BenchWorker`
turns one persona into a :class:`PersonaResult` (rows, images, judge scores). The driver in
:mod:`vptt.sdk.bench` is the only writer.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vptt.agents.personalizer import Personalizer
from vptt.agents.tasks import Task
from vptt.agents.vprag import VPRAGConfig
from vptt.core.errors import ConfigError
from vptt.core.paths import id_to_filename
from vptt.core.settings import VPTTSettings
from vptt.core.vectors import encode_vector
from vptt.evaluators.vlm_judge import PostSelection, select_profile_posts
from vptt.sdk.pipeline import RowPipeline, is_llm_composer
from vptt.stores.records import EmbeddedPersona

SEED_RULE = "int.from_bytes(sha256(f'{seed}|{persona_id}|{task}|{method}'.encode()).digest()[:4], 'big') >> 1"
"""How each row's seed derives from the run seed (recorded in the manifest)."""



def derive_seed(run_seed: int, persona_id: str, task: str, method: str) -> int:
    """The row's seed in [0, 2**31): 31 bits of sha256 of ``"{seed}|{persona_id}|{task}|{method}"``.

    Example:
        >>> derive_seed(0, "alice", "garden", "vprag") == derive_seed(0, "alice", "garden", "vprag")
        True
    """
    digest = hashlib.sha256(f"{run_seed}|{persona_id}|{task}|{method}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


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


@dataclass
class BenchComponents:
    """The objects one worker runs with, built once and reused for every persona.

    Attributes:
        personalizer: its store holds the personas; its embedder embeds queries and prompts.
        scorer: a :class:`evaluators.vptt_score.VPTTScorer` (default: over ``personalizer.embedder``; each
            persona's prompts go to it in one call, batched by token budget inside the embedder).
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
            from vptt.evaluators.vptt_score import VPTTScorer

            self.scorer = VPTTScorer(self.personalizer.embedder)
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
        judge: ``"vlm"`` (the paper's VLM judge, :class:`evaluators.vlm_judge.VLMJudge`, configured from
            the settings' judge role: ``judge_model``, ``judge_base_url``, ``judge_api_key``),
            ``"module:factory"`` or a zero-argument factory returning the judge.
        judge_options: :class:`~evaluators.vlm_judge.JudgeConfig` fields for ``"vlm"`` (e.g. ``model``,
            ``base_url``), else keyword arguments for the factory.
        llm: an :class:`~agents.llm_composer.LLMComposerConfig` to compose with an LLM (None: the template
            composer). Each worker opens its own client; all share the response cache in the data directory.
    """

    settings: VPTTSettings = field(default_factory=VPTTSettings)
    generator: Any = None
    generator_options: dict[str, Any] = field(default_factory=dict)
    image_metrics: dict[str, Any] = field(default_factory=dict)
    judge: Any = None
    judge_options: dict[str, Any] = field(default_factory=dict)
    llm: Any = None

    @staticmethod
    def _make(spec: Any, **kwargs: Any) -> Any:
        return (_resolve(spec) if isinstance(spec, str) else spec)(**kwargs)

    def build_personalizer(self) -> Personalizer:
        """The Personalizer alone (cheap: models load on first use), with the LLM composer if one is set."""
        composer = None
        if self.llm is not None:
            from vptt.agents.llm_composer import LLMComposer

            composer = LLMComposer(self.llm)
        return Personalizer(settings=self.settings, composer=composer)

    def build(self) -> BenchComponents:
        """Every component (loads nothing heavy until first use where the component is lazy)."""
        gen = None
        if isinstance(self.generator, str) and ":" not in self.generator:
            from vptt.agents.generators import build_generator

            gen = build_generator(self.generator, **self.generator_options)
        elif self.generator is not None:
            gen = self._make(self.generator, **self.generator_options)
        metrics = {k: self._make(v) for k, v in self.image_metrics.items()}
        judge = None
        if self.judge == "vlm":
            judge = build_vlm_judge(self.settings, self.judge_options)
        elif self.judge is not None:
            judge = self._make(self.judge, **self.judge_options)
        return BenchComponents(self.build_personalizer(), generator=gen, image_metrics=metrics, judge=judge)

    def describe(self) -> dict[str, Any]:
        """Names for the manifest (the specs as given; factories by qualified name)."""
        name = (lambda s: s if s is None or isinstance(s, str)  # noqa: E731
                else f"{getattr(s, '__module__', '?')}:{getattr(s, '__qualname__', type(s).__name__)}")
        judge = name(self.judge)
        if self.judge == "vlm":
            judge = f"vlm:{self.judge_options.get('model') or self.settings.judge_model}"
        return {"generator": name(self.generator), "image_metrics": sorted(self.image_metrics),
                "judge": judge}


def build_vlm_judge(settings: VPTTSettings, options: Mapping[str, Any] | None = None) -> Any:
    """The paper's VLM judge from the settings' judge role, ``options`` overriding JudgeConfig fields."""
    from pydantic import ValidationError

    from vptt.evaluators.vlm_judge import JudgeConfig, VLMJudge

    fields: dict[str, Any] = {"model": settings.judge_model, "base_url": settings.base_url("judge"),
                              "api_key": settings.api_key("judge"), **(options or {})}
    try:
        return VLMJudge(JudgeConfig(**fields))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid judge option(s): {problems} (options are JudgeConfig fields, e.g. "
                          "model, base_url, temperature, max_tokens)") from None


# --------------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class BenchPlan:
    """What to compute for each persona (picklable)."""

    tasks: tuple[Task, ...]
    methods: tuple[str, ...]
    config: VPRAGConfig
    seed: int = 0
    judge_posts: PostSelection = "matched"
    max_profile_posts: int = 10


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
    """A path component for ``text`` (:func:`vptt.core.paths.id_to_filename`: collision- and traversal-free)."""
    return id_to_filename(text)


def image_relpath(persona_id: str, task: str, method: str) -> str:
    """``images/<persona>/<task>/<method>.png`` (each component encoded by :func:`safe_name`)."""
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
        from vptt.agents.generators.base import GenerationRequest, ImageGenerator
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
        self._client: Any = None

    def client(self) -> Any:
        """The LLM client of this worker (built on first use; None with the template composer)."""
        pz = self.c.personalizer
        if self._client is None and is_llm_composer(pz.composer):
            self._client = pz.composer.bulk_client(pz.settings.llm_cache_path)
        return self._client

    def close(self) -> None:
        """Close the LLM client (its connections and loop thread), if one was opened."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def pipeline(self) -> RowPipeline:
        p = self.plan
        return RowPipeline(self.c.personalizer, self.c.scorer, p.tasks, p.methods, self.query_embs(), p.config,
                           client=self.client())

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
        return next(iter(self.run_many([(persona_id, frozenset(skip))])))

    def run_many(self, jobs: Iterable[tuple[str, Iterable[tuple[str, str]]]]) -> Iterator[PersonaResult]:
        """:meth:`run` over many personas; with an LLM composer their requests are in flight together while
        finished personas are scored. Results come in the order they finish."""
        t0, cpu0 = time.perf_counter(), time.process_time()
        p, c = self.plan, self.c
        wanted = {(t.name, m) for t in p.tasks for m in p.methods}
        ready: deque[PersonaResult] = deque()  # personas with nothing to compute, passed on as they are met

        def todo() -> Iterator[tuple[EmbeddedPersona, frozenset[tuple[str, str]]]]:
            for persona_id, skip in jobs:  # read lazily: the pipeline pulls as it has room
                mem = c.personalizer.store.embedded(persona_id)
                if not mem.persona.posts:  # the VPTT score needs captions: recorded as skipped, never retried
                    info = {**persona_info(mem), "skipped": "no posts: the VPTT score needs the persona's captions"}
                    ready.append(PersonaResult(persona_id, [], info))
                    continue
                # a judge compares all methods of a task at once: recompute the whole persona then
                done = frozenset() if c.judge is not None else frozenset(skip)
                if wanted <= done:  # only its record was missing
                    ready.append(PersonaResult(persona_id, [], persona_info(mem)))
                    continue
                yield mem, done  # read once: the pipeline uses it as it is

        tasks = {t.name: t for t in p.tasks}
        for got in self.pipeline().run(todo()):
            while ready:
                yield ready.popleft()
            mem, rows = got.mem, got.rows
            images: dict[str, bytes] = {}
            for row in rows:
                row["seed"] = derive_seed(p.seed, mem.persona_id, row["task"], row["method"])
                if c.generator is not None:
                    images.update(self._image(mem, tasks[row["task"]], row))
            if c.judge is not None and rows:
                self._judge(mem, rows, tasks)
            now, cpu = time.perf_counter(), time.process_time()
            yield PersonaResult(mem.persona_id, rows, persona_info(mem), images, round(now - t0, 6),
                                round(cpu - cpu0, 6))
            t0, cpu0 = now, cpu
        while ready:
            yield ready.popleft()

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

    def profile_posts(self, mem: EmbeddedPersona, prompts: Sequence[str]) -> list[int]:
        """Indices (into ``mem.persona.posts``) of the posts on the judge's profile canvas, in post order.

        Only posts with an image are candidates. ``plan.judge_posts == "matched"``: the
        ``plan.max_profile_posts`` whose caption embeddings have the highest mean cosine to the judged
        methods' generated ``prompts`` (ties: earlier post); ``"first"``: the first ones.
        """
        candidates = [i for i, post in enumerate(mem.persona.posts) if post.image]
        n, k, mode = len(candidates), self.plan.max_profile_posts, self.plan.judge_posts
        caps = prompt_embs = None
        if mode == "matched" and n > k:
            caps = np.asarray(mem.caption_embs)[candidates]
            prompt_embs = np.asarray(self.c.personalizer.embedder.embed(list(prompts)))
        chosen = select_profile_posts(n, max_images=k, mode=mode, caption_embs=caps, prompt_embs=prompt_embs)
        return [candidates[j] for j in chosen]

    def _judge(self, mem: EmbeddedPersona, rows: list[dict[str, Any]], tasks: dict[str, Task]) -> None:
        posts = mem.persona.posts
        for name in dict.fromkeys(r["task"] for r in rows):
            trows = [r for r in rows if r["task"] == name]
            scores: Mapping[str, Any] = {}
            shown = self.profile_posts(mem, [r["prompt"] for r in trows])
            if shown:
                task = tasks[name]
                got = self.c.judge.judge(persona_id=mem.persona_id,
                                         persona_images=[posts[i].image for i in shown],
                                         method_images={r["method"]: r["_image"] for r in trows},
                                         prompt=task.query, task=task.kind, input_image=self.init_image(task))
                scores = getattr(got, "scores", got)
            for r in trows:
                value = scores.get(r["method"])
                r["judge"] = None if value is None else float(value)
                r["judge_posts"] = [posts[i].post_id for i in shown]
                r.pop("_image")
