"""Run the persona pipeline over a seed file: resumable JSONL output, a report, threads, optional rendering.

Personas are generated one by one and each valid persona is appended to the output as one line written by a
single ``write`` and flushed (a torn last line from a crash is cut off on the next run). Ids are stable
(``vptt_<seed index>``), so a re-run skips the personas already in the file. The report JSON lists the
generated, skipped and excluded profiles (with reasons), every malformed reply with its raw text, every
dropped post and every bias re-mapping.

Example:
    >>> seeds = load_seeds("persona_seeds.jsonl")                                   # doctest: +SKIP
    >>> chat = JSONChat(LLMConfig(base_url="http://localhost:8000/v1", api_key="EMPTY"))  # doctest: +SKIP
    >>> report = generate_personas(seeds, "bench.jsonl", chat=chat, workers=8)           # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from vptt.agents.persona_gen.faces import render_persona, stable_u64
from vptt.agents.persona_gen.pipeline import (
    ExcludedProfile,
    GenerationConfig,
    InvalidPost,
    JSONChat,
    MalformedReply,
    PersonaOutcome,
    generate_persona,
    persona_id_for,
)
from vptt.core.errors import ConfigError
from vptt.core.models import Persona
from vptt.core.resultlog import ResultLog

SEED_KEYS = ("persona", "text", "seed", "description", "input persona")
"""Keys read from JSONL seed lines (PersonaHub uses ``persona``)."""


class GenerationReport(BaseModel):
    """What one run did (written as JSON next to the output)."""

    mode: Literal["llm", "procedural"] = "llm"
    model: str = ""
    output: str = ""
    requested: int = 0
    generated: list[str] = Field(default_factory=list)
    skipped_existing: list[str] = Field(default_factory=list)
    excluded: list[ExcludedProfile] = Field(default_factory=list)
    malformed: list[MalformedReply] = Field(default_factory=list)
    invalid_posts: list[InvalidPost] = Field(default_factory=list)
    remapped: list[dict[str, Any]] = Field(default_factory=list)
    render_failures: dict[str, dict[str, str]] = Field(default_factory=dict)
    elapsed_s: float = 0.0

    def summary(self) -> str:
        unrecovered = sum(not m.recovered for m in self.malformed)
        return (f"generated {len(self.generated)}, skipped {len(self.skipped_existing)} already present, "
                f"excluded {len(self.excluded)}; malformed replies {len(self.malformed)} "
                f"({unrecovered} unrecovered); dropped posts {len(self.invalid_posts)}; "
                f"re-mapped locations {len(self.remapped)}")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file renamed into place)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.model_dump_json(indent=1))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_seeds(path: str | os.PathLike[str]) -> list[str]:
    """Seed texts: a ``.jsonl`` file (objects with a ``persona``/``text``/... key, or strings) or plain text
    with one seed per line. Blank lines are skipped.

    Raises:
        ConfigError: a JSONL line that is not JSON or has no seed text (the line is named).
    """
    p = Path(path)
    seeds: list[str] = []
    with open(p, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            if p.suffix.lower() not in (".jsonl", ".ndjson"):
                seeds.append(raw.strip())
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{p}:{lineno}: not JSON ({exc.msg}); use one JSON object per line"
                                  ) from None
            text = obj if isinstance(obj, str) else next(
                (obj[k] for k in SEED_KEYS if isinstance(obj, dict) and isinstance(obj.get(k), str)), None)
            if not text or not text.strip():
                raise ConfigError(f"{p}:{lineno}: no seed text; give a string or an object with one of "
                                  f"{SEED_KEYS}")
            seeds.append(text.strip())
    return seeds


def select_seeds(n_seeds: int, count: int | None = None, *, offset: int = 0,
                 mode: Literal["sequential", "hash"] = "sequential") -> list[int]:
    """Seed indices to use: ``count`` of them from ``offset`` in file order, or (``hash``) the paper's
    ``seed_index_i = hash(i) mod n_seeds`` with a stable hash, collisions probed to the next free index."""
    if n_seeds <= 0:
        raise ConfigError("the seed file holds no seeds")
    count = n_seeds - offset if count is None else count
    if count < 0 or offset < 0 or (mode == "sequential" and offset + count > n_seeds) or count > n_seeds:
        raise ConfigError(f"cannot take {count} seeds from offset {offset} of {n_seeds}")
    if mode == "sequential":
        return list(range(offset, offset + count))
    taken: dict[int, None] = {}
    for i in range(offset, offset + count):
        j = stable_u64(f"seed|{i}") % n_seeds
        while j in taken:
            j = (j + 1) % n_seeds
        taken[j] = None
    return list(taken)


def _persona_key(row: Any) -> tuple[str, ...]:
    return (str(row["persona_id"]),)


def existing_ids(path: str | os.PathLike[str]) -> set[str]:
    """Persona ids already in a JSONL output. A torn last line (a crash mid-write) is cut off the file.

    Raises:
        ValueError: a line other than the last is not a persona record (the line is named).
    """
    return {k[0] for k in ResultLog(path, _persona_key).done}


class PersonaWriter:
    """Appends personas to a JSONL file (one fsync'ed write per persona, thread-safe, torn lines repaired)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._log = ResultLog(path, _persona_key)
        self.path = self._log.path

    def write(self, persona: Persona) -> None:
        self._log.append([persona.model_dump(mode="json")])


def _record(report: GenerationReport, outcome: PersonaOutcome) -> None:
    report.malformed += outcome.malformed
    if outcome.render_failures:
        report.render_failures[outcome.persona_id] = outcome.render_failures
    report.invalid_posts += outcome.invalid_posts
    if outcome.excluded is not None:
        report.excluded.append(outcome.excluded)
        return
    assert outcome.persona is not None
    report.generated.append(outcome.persona_id)
    remap = outcome.persona.extra.get("generation", {}).get("bias_remap") or {}
    if remap.get("remapped"):
        report.remapped.append({"persona_id": outcome.persona_id, "from": remap["original"],
                                "to": remap["new"]})


def generate_personas(seeds: Sequence[str], out_path: str | os.PathLike[str], *, chat: JSONChat,
                      config: GenerationConfig | None = None, indices: Sequence[int] | None = None,
                      workers: int = 1, report_path: str | os.PathLike[str] | None = None,
                      progress: bool = True, generator: Any = None, render_dir: str | None = None,
                      render_mode: str = "standard", render_max_posts: int | None = None,
                      on_outcome: Callable[[PersonaOutcome], None] | None = None) -> GenerationReport:
    """Generate a persona for each chosen seed and append the valid ones to ``out_path``.

    Args:
        seeds: the seed texts (see :func:`load_seeds`).
        out_path: the JSONL output; personas already in it are skipped (resume).
        chat: the chat endpoint.
        config: pipeline settings.
        indices: which seeds (default all, see :func:`select_seeds`); the index fixes the persona id.
        workers: personas generated at the same time (threads).
        report_path: where the report JSON goes (default ``<out_path>.report.json``); rewritten as it goes.
        progress: show a tqdm bar.
        generator: optional image generator; each valid persona is rendered (portrait + posts, 10.2) into
            ``render_dir`` before it is written, with the image paths in the persona.
        on_outcome: called with every outcome (after it is recorded).
    """
    cfg = config or GenerationConfig()
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if generator is not None and not render_dir:
        raise ConfigError("rendering needs render_dir (where the images go)")
    idx = list(range(len(seeds)) if indices is None else indices)
    report_file = Path(report_path) if report_path else Path(f"{out_path}.report.json")
    report = GenerationReport(mode="llm", model=chat.config.model, output=str(out_path), requested=len(idx))
    done = existing_ids(out_path)
    todo = [i for i in idx if persona_id_for(i, cfg.id_prefix) not in done]
    report.skipped_existing = sorted(persona_id_for(i, cfg.id_prefix) for i in set(idx) - set(todo))
    writer, render_lock, t0 = PersonaWriter(out_path), threading.Lock(), time.perf_counter()

    def run(i: int) -> PersonaOutcome:
        outcome = generate_persona(seeds[i], i, chat, cfg)
        if outcome.persona is not None and generator is not None:
            with render_lock:
                res = render_persona(outcome.persona, generator, str(render_dir), mode=render_mode,
                                     max_posts=render_max_posts)
            outcome.persona = res.persona
            outcome.render_failures = res.failures
        if outcome.persona is not None:
            writer.write(outcome.persona)
        return outcome

    bar = _bar(len(todo), progress)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(run, i) for i in todo]
        for n, fut in enumerate(as_completed(futures), 1):
            outcome = fut.result()
            _record(report, outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ok=len(report.generated), excluded=len(report.excluded))
            if n % 10 == 0:
                report.elapsed_s = round(time.perf_counter() - t0, 3)
                report.save(report_file)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # e.g. a refused API key or Ctrl-C: stop what is queued
        raise
    finally:
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
        report.elapsed_s = round(time.perf_counter() - t0, 3)
        report.save(report_file)
    return report


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="personas", unit="persona")


def write_procedural(out_path: str | os.PathLike[str], n: int, *, seed: int = 0, n_posts: int = 30,
                     id_prefix: str = "proc_", report_path: str | os.PathLike[str] | None = None
                     ) -> GenerationReport:
    """Append ``n`` procedural personas (offline smoke-test data, not LLM-generated) to ``out_path``."""
    from vptt.agents.persona_gen.procedural import PROCEDURAL_LABEL, procedural_persona

    t0 = time.perf_counter()
    report = GenerationReport(mode="procedural", model=PROCEDURAL_LABEL, output=str(out_path), requested=n)
    done, writer = existing_ids(out_path), PersonaWriter(out_path)
    for i in range(n):
        persona = procedural_persona(i, seed=seed, n_posts=n_posts, id_prefix=id_prefix)
        if persona.persona_id in done:
            report.skipped_existing.append(persona.persona_id)
            continue
        writer.write(persona)
        report.generated.append(persona.persona_id)
    report.elapsed_s = round(time.perf_counter() - t0, 3)
    report.save(report_path or f"{out_path}.report.json")
    return report
