"""`vptt bench run`: rows, seeds, images, manifest; resume after an injected crash and after a kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import ROOT, make_persona
from vptt import ConfigError, Persona, Personalizer, VPTTSettings, dump_personas
from vptt.agents.generators.base import ImageGenerator
from vptt.agents.tasks import Task
from vptt.sdk.bench import BenchComponents, BenchRecipe, decode_vector, run_bench
from vptt.sdk.cli.bench import register_bench
from vptt.sdk.evaluate import evaluate
from vptt.stores.embedding_cache import CachedEmbedder
from vptt.stores.memory import InMemoryPersonaStore

TASKS = ["outdoor_spot", "garden"]
METHODS = ["baseline", "persona_only", "brag", "vprag", "comb"]


def expected_seed(seed: int, pid: str, task: str, method: str) -> int:
    """The seed rule written out independently: 31 high bits of the first 4 sha256 bytes."""
    h = hashlib.sha256(f"{seed}|{pid}|{task}|{method}".encode()).hexdigest()
    return int(h[:8], 16) // 2


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in open(path) if line.strip()]


def keyed(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["persona_id"], r["task"], r["method"]): r for r in rows}


def assert_rows_close(got: dict[str, Any], want: dict[str, Any], abs: float = 1e-6) -> None:
    """Rows equal up to float tolerance (nested image metrics compared the same way)."""
    assert set(got) == set(want)
    flat = {k: v for k, v in got.items() if not isinstance(v, dict)}
    assert flat == pytest.approx({k: want[k] for k in flat}, abs=abs)
    for k in set(got) - set(flat):
        assert got[k] == pytest.approx(want[k], abs=abs)


def fake_image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8))


class FakeGenerator:
    """The brief's duck-typed protocol: generate(prompt, *, seed, init_image) -> object with .image."""

    name = "fake"

    def __init__(self, fail_after: int | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, int | None, bool]] = []
        self.fail_after, self.delay = fail_after, delay

    def generate(self, prompt: str, *, seed: int | None = None, init_image: Any = None) -> SimpleNamespace:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("injected crash")
        self.calls.append((prompt, seed, init_image is not None))
        time.sleep(self.delay)
        return SimpleNamespace(image=fake_image(seed or 0))


def slow_generator() -> FakeGenerator:
    """Factory for the CLI subprocess (`--generator tests.test_bench_run:slow_generator`)."""
    return FakeGenerator(delay=float(os.environ.get("FAKE_GEN_DELAY", "0")))


class RequestGenerator(ImageGenerator):
    """The package's own protocol (GenerationRequest -> GeneratedImage)."""

    name = "request-fake"
    supports_edit = True

    def _generate(self, request):  # type: ignore[no-untyped-def]
        return fake_image(request.seed), request.seed, {}


def red(image: Image.Image, ctx: Any) -> float:
    return float(np.asarray(image)[..., 0].mean() / 255)


class FakeJudge:
    name = "fake-judge"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def judge(self, *, persona_id: str, persona_images: list[str], method_images: dict[str, Image.Image],
              prompt: str, task: str, input_image: Any) -> SimpleNamespace:
        self.calls.append({"persona": persona_id, "methods": sorted(method_images), "task": task,
                           "edit": input_image is not None})
        scores = {m: float(np.asarray(im)[0, 0, 1] % 6) for m, im in method_images.items()}
        return SimpleNamespace(scores=scores)


@pytest.fixture
def pz(embedder, two_personas) -> Personalizer:
    p = Personalizer(InMemoryPersonaStore(embedder))
    p.ingest(two_personas)
    return p


def test_text_rows_equal_evaluate_seeds_manifest_and_personas(pz, tmp_path) -> None:
    run = run_bench(pz, tmp_path / "b", tasks=TASKS, seed=7, progress=False)
    assert (run.rows_written, run.rows_total, run.personas_computed, run.images_written) == (20, 20, 2, 0)
    rows = read_rows(tmp_path / "b" / "rows.jsonl")
    ev = evaluate(pz, tmp_path / "e", tasks=TASKS, progress=False, report=False)
    ref = keyed(read_rows(Path(ev.rows_path)))
    assert set(keyed(rows)) == set(ref)
    for r in rows:
        assert r.pop("seed") == expected_seed(7, r["persona_id"], r["task"], r["method"])
        assert r == pytest.approx(ref[(r["persona_id"], r["task"], r["method"])])
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["seed"] == manifest["config"]["seed"] == 7 and "sha256" in manifest["config"]["seed_rule"]
    assert manifest["config"]["generator"] is None and manifest["versions"]["numpy"] == np.__version__
    assert len(manifest["sessions"]) == 1 and manifest["sessions"][0]["rows_written"] == 20
    z = np.load(tmp_path / "b" / "personas.npz")
    assert z["persona_id"].tolist() == ["alice", "bob"] and z["age"].tolist() == [30.0, 30.0]
    for i, pid in enumerate(["alice", "bob"]):
        want = pz.store.embedded(pid).caption_embs.mean(0)
        np.testing.assert_allclose(z["caption_mean"][i], want, atol=1e-6)
    again = run_bench(pz, tmp_path / "b", tasks=TASKS, seed=7, progress=False)
    assert (again.rows_written, again.rows_resumed, again.personas_computed) == (0, 20, 0)
    assert len(json.loads((tmp_path / "b" / "manifest.json").read_text())["sessions"]) == 2
    with pytest.raises(ConfigError, match="different configuration"):
        run_bench(pz, tmp_path / "b", tasks=TASKS, seed=8, progress=False)


def test_persona_without_posts_is_skipped_not_retried(embedder, two_personas, tmp_path) -> None:
    pz = Personalizer(InMemoryPersonaStore(embedder))
    pz.ingest([*two_personas, Persona.model_validate({"persona_id": "empty", "summary": "Nobody posts."})])
    run = run_bench(pz, tmp_path / "b", tasks=["outdoor_spot"], methods=["vprag"], progress=False)
    assert (run.rows_written, run.personas_computed, run.personas_skipped) == (2, 3, ["empty"])
    again = run_bench(pz, tmp_path / "b", tasks=["outdoor_spot"], methods=["vprag"], progress=False)
    assert (again.rows_written, again.personas_computed, again.personas_skipped) == (0, 0, ["empty"])
    recs = {json.loads(x)["persona_id"]: json.loads(x) for x in open(tmp_path / "b" / "personas.jsonl")}
    assert "no posts" in recs["empty"]["skipped"] and recs["empty"]["caption_mean"] is None


def _with_post_images(persona, image: Path):  # type: ignore[no-untyped-def]
    posts = [p.model_copy(update={"image": str(image)}) for p in persona.posts]
    return persona.model_copy(update={"posts": posts})


def test_images_metrics_and_judge(embedder, two_personas, tmp_path) -> None:
    room = tmp_path / "room.png"
    fake_image(1).save(room)
    alice, bob = two_personas
    pz = Personalizer(InMemoryPersonaStore(embedder))
    pz.ingest([_with_post_images(alice, room), bob])  # bob has no post images: not judged
    tasks = ["outdoor_spot", Task(name="room", query="Here is a room. Decorate it", kind="editing",
                                  input_image=str(room))]
    gen, judge = FakeGenerator(), FakeJudge()
    comps = BenchComponents(pz, generator=gen, image_metrics={"red": red, "size": lambda im, ctx: {
        "w": im.width, "edit": float(ctx.init_image is not None)}}, judge=judge)
    run = run_bench(comps, tmp_path / "b", tasks=tasks, methods=["baseline", "vprag"], progress=False)
    assert run.rows_written == run.images_written == len(gen.calls) == 8
    rows = read_rows(tmp_path / "b" / "rows.jsonl")
    for r in rows:
        seed = expected_seed(0, r["persona_id"], r["task"], r["method"])
        assert r["seed"] == seed and r["image"] == f"images/{r['persona_id']}/{r['task']}/{r['method']}.png"
        saved = np.asarray(Image.open(tmp_path / "b" / r["image"]))
        np.testing.assert_array_equal(saved, np.asarray(fake_image(seed)))
        edit = r["task"] == "room"
        assert r["image_metrics"] == pytest.approx({"red": saved[..., 0].mean() / 255, "size.w": 8.0,
                                                    "size.edit": float(edit)})
        assert (r["prompt"], seed, edit) in gen.calls
        assert r["judge"] == (float(saved[0, 0, 1] % 6) if r["persona_id"] == "alice" else None)
    assert sorted((c["persona"], c["task"], c["edit"]) for c in judge.calls) == [
        ("alice", "editing", True), ("alice", "generation", False)]
    assert all(c["methods"] == ["baseline", "vprag"] for c in judge.calls)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]
    assert (manifest["generator"], manifest["image_metrics"], manifest["judge"]) == ("fake", ["red", "size"],
                                                                                   "fake-judge")
    # the package's ImageGenerator protocol gets the same seeds through a GenerationRequest
    run2 = run_bench(BenchComponents(pz, generator=RequestGenerator()), tmp_path / "c", tasks=tasks,
                     methods=["vprag"], progress=False)
    for r in read_rows(Path(run2.rows_path)):
        seed = expected_seed(0, r["persona_id"], r["task"], "vprag")
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c" / r["image"])),
                                      np.asarray(fake_image(seed)))


def garden_image(tmp_path: Path) -> dict[str, Path]:
    """The editing task's shared input image (a generator needs one for every editing task)."""
    fake_image(5).save(tmp_path / "garden.png")
    return {"garden": tmp_path / "garden.png"}


def test_resume_after_injected_crash_loses_and_duplicates_nothing(pz, tmp_path) -> None:
    images = garden_image(tmp_path)
    clean = read_rows(Path(run_bench(BenchComponents(pz, generator=FakeGenerator()), tmp_path / "clean",
                                     tasks=TASKS, task_images=images, progress=False).rows_path))
    out = tmp_path / "b"
    with pytest.raises(RuntimeError, match="injected crash"):  # alice (10 images) done, crash inside bob
        run_bench(BenchComponents(pz, generator=FakeGenerator(fail_after=13)), out, tasks=TASKS,
                  task_images=images, progress=False)
    assert len(read_rows(out / "rows.jsonl")) == 10
    for name in ("rows.jsonl", "personas.jsonl"):  # and a torn write, as a kill -9 mid-append leaves
        with open(out / name, "a") as fh:
            fh.write('{"persona_id": "bob", "task": "gard')
    gen = FakeGenerator()
    again = run_bench(BenchComponents(pz, generator=gen), out, tasks=TASKS, task_images=images, progress=False)
    got = (again.rows_resumed, again.rows_written, again.rows_total, again.personas_computed)
    assert got == (10, 10, 20, 1)
    assert {seed for _, seed, _ in gen.calls} == {r["seed"] for r in clean if r["persona_id"] == "bob"}
    rows = read_rows(out / "rows.jsonl")
    assert len(rows) == len(keyed(rows)) == 20
    ref = keyed(clean)
    for r in rows:
        assert_rows_close(r, ref[(r["persona_id"], r["task"], r["method"])])
        assert (out / r["image"]).read_bytes() == (tmp_path / "clean" / r["image"]).read_bytes()
    assert [json.loads(x)["persona_id"] for x in open(out / "personas.jsonl")] == ["alice", "bob"]


def _cli(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from sdk.cli import app; app()", "--store", "memory", "--data-dir",
            str(data), "bench", "run", *args]


def test_kill_9_midway_then_rerun(minilm, tmp_path) -> None:
    personas = [make_persona(f"p{i}", [f"Photo {i} of a quiet harbour at dawn with boats.",
                                       f"Street market {i} with lanterns and fruit stalls."])
                for i in range(6)]
    dump_personas(personas, tmp_path / "p.jsonl")
    # the uninterrupted reference run, in-process; it also fills the embedding cache the CLI runs share
    pz = Personalizer(InMemoryPersonaStore(CachedEmbedder(minilm, tmp_path / "data" / "embeddings.sqlite")))
    pz.ingest(personas)
    images = garden_image(tmp_path)
    ref_run = run_bench(BenchComponents(pz, generator=FakeGenerator()), tmp_path / "ref", tasks=TASKS,
                        methods=["baseline", "vprag"], task_images=images, progress=False)
    ref = keyed(read_rows(Path(ref_run.rows_path)))
    out = tmp_path / "out"
    args = _cli(tmp_path / "data", str(tmp_path / "p.jsonl"), "-o", str(out), "--task", "outdoor_spot",
                "--task", "garden", "--task-image", f"garden={images['garden']}", "--methods", "baseline,vprag",
                "--generator",
                "tests.test_bench_run:slow_generator", "--no-report", "--no-progress")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FAKE_GEN_DELAY": "0.25"}  # 1 s per persona
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    rows_file, deadline = out / "rows.jsonl", time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if rows_file.exists() and rows_file.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before the kill: {proc.stdout.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = rows_file.read_bytes().count(b"\n")  # whole rows only: a torn last line is cut on resume
    assert 4 <= partial < 24
    done = subprocess.run(args + ["--json"], cwd=ROOT, env={**env, "FAKE_GEN_DELAY": "0"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows_total"] == 24 and summary["rows_written"] == 24 - partial
    rows = read_rows(rows_file)
    assert len(rows) == len(keyed(rows)) == 24
    for r in rows:
        assert_rows_close(r, ref[(r["persona_id"], r["task"], r["method"])])
        assert (out / r["image"]).read_bytes() == (tmp_path / "ref" / r["image"]).read_bytes()
    recs = [json.loads(x)["persona_id"] for x in open(out / "personas.jsonl")]
    assert sorted(recs) == [f"p{i}" for i in range(6)]


def test_cli_run_and_report(two_personas, tmp_path) -> None:
    app = typer.Typer()
    register_bench(app)
    dump_personas(two_personas, tmp_path / "p.jsonl")
    env = {"VPTT_DATA_DIR": str(tmp_path / "data"), "VPTT_STORE": "memory", "HF_HUB_OFFLINE": "1"}
    r = CliRunner().invoke(app, ["run", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "out"), "--task",
                                 "outdoor_spot", "--methods", "baseline,vprag", "--no-progress", "--json"],
                           env=env)
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["rows_written"] == 4 and Path(got["report"]).read_text().startswith("<!DOCTYPE html>")
    r = CliRunner().invoke(app, ["report", str(tmp_path / "out"), "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"] == 4
    r = CliRunner().invoke(app, ["run", "-o", str(tmp_path / "x"), "--backend", "ray"], env=env)
    assert r.exit_code == 2 and "Chroma server" in " ".join(r.output.split())


def test_validation(pz, tmp_path) -> None:
    with pytest.raises(ConfigError, match="BenchRecipe"):
        run_bench(pz, tmp_path / "a", backend="ray")
    with pytest.raises(ConfigError, match="Chroma server"):
        run_bench(BenchRecipe(VPTTSettings(store="memory")), tmp_path / "a", backend="ray")
    with pytest.raises(ConfigError, match="backend"):
        run_bench(pz, tmp_path / "a", backend="dask")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=">= 1"):
        run_bench(pz, tmp_path / "a", workers=0)
    with pytest.raises(ConfigError, match="not in the store"):
        run_bench(pz, tmp_path / "a", personas=["alice", "carol"])
    with pytest.raises(ConfigError, match="unknown method"):
        run_bench(pz, tmp_path / "a", methods=["vprg"])
    with pytest.raises(ConfigError, match="need images"):
        BenchComponents(pz, image_metrics={"red": red})
    with pytest.raises(ConfigError, match="module:factory"):
        BenchRecipe(generator="nomodule:").build()
    assert decode_vector("AACAPw==").tolist() == [1.0]
