"""The paper's protocol end to end: Q2 image-level run -> Table 2 report -> human ratings -> validation -> calibration.

`vptt bench run --three-phrase` over the two Q2 tasks (generation "A preferred outdoor spot", editing "Here is a
convention center. Add a preferred event" with its shared base image from --task-image), the tiny diffusers
pipeline of tests/tiny_diffusion.py (text-to-image and image-to-image), and `--judge vlm` against a fake
OpenAI-compatible judge served by a real HTTP server process on 127.0.0.1. Then the Table 2 section (score-c vs
judge), `vptt validate` on ratings made from the run, the saved calibration reused by `bench report` and
`vptt score judge --persona-file` (matched posts, calibrated scores).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr
from typer.testing import CliRunner

from tests.conftest import ROOT, make_persona
from tests.fake_judge_server import score_for
from tests.tiny_diffusion import shared_pipeline, torch_threads
from vptt import dump_personas
from vptt.evaluators.calibration import JudgeCalibration
from vptt.evaluators.protocol_report import protocol_section
from vptt.evaluators.stats import win_rates
from vptt.evaluators.vlm_judge import assign_labels
from vptt.sdk.cli.main import app

METHODS = ["baseline", "vprag", "comb"]
SUBJECTS = ["harbour boats at dawn", "ramen under paper lanterns", "a mountain trail in fog", "a pottery wheel",
            "a night market with skewers", "cherry blossoms by a temple", "a surf beach at sunset",
            "a tea ceremony room", "a snowy train platform", "a rooftop garden with tomatoes",
            "a bookshop cat asleep", "a jazz bar stage"]


def tiny_generator():  # type: ignore[no-untyped-def]
    """`--generator tests.test_protocol_chain:tiny_generator`: the session's tiny pipeline, 32 px, 2 steps."""
    from vptt.agents.generators.diffusers_gen import DiffusersGenerator

    return DiffusersGenerator(shared_pipeline(), num_inference_steps=2, guidance_scale=2.0, height=32, width=32)


@pytest.fixture
def judge_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "judge-requests.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_judge_server", str(log)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        proc.terminate()
        proc.wait(10)


def personas_with_images(tmp_path: Path) -> Path:
    out = []
    for k, pid in enumerate(["kai", "lena", "omar"]):
        caps = [f"Photo of {s}, shot by {pid}." for s in SUBJECTS[k:] + SUBJECTS[:k]]
        p = make_persona(pid, caps)
        posts = []
        for i, post in enumerate(p.posts):
            img = tmp_path / "posts" / f"{pid}-{i:02d}.png"
            img.parent.mkdir(exist_ok=True)
            Image.new("RGB", (24, 24), (20 * i, 100 + 10 * k, 200 - 15 * i)).save(img)
            posts.append(post.model_copy(update={"image": str(img)}))
        out.append(p.model_copy(update={"posts": posts}))
    dump_personas(out, tmp_path / "personas.jsonl")
    return tmp_path / "personas.jsonl"


def expected_posts(minilm, persona_file: Path, pid: str, prompts: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """The 10 posts of highest mean caption-prompt cosine, written out as a plain loop."""
    rec = next(json.loads(x) for x in open(persona_file) if json.loads(x)["persona_id"] == pid)
    caps = np.asarray(minilm.embed([p["caption"] for p in rec["posts"]]))
    prm = np.asarray(minilm.embed(prompts))
    scores = [float(np.mean([c @ q / np.linalg.norm(c) / np.linalg.norm(q) for q in prm])) for c in caps]
    chosen = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:10]
    return [rec["posts"][i]["post_id"] for i in sorted(chosen)]


def test_q2_run_report_validation_and_calibration(tmp_path, judge_server, minilm, monkeypatch) -> None:
    base_url, log = judge_server
    persona_file = personas_with_images(tmp_path)
    center = tmp_path / "convention_center.png"
    Image.new("RGB", (32, 32), (90, 90, 140)).save(center)
    monkeypatch.setenv("VPTT_JUDGE_API_KEY", "sk-test-judge")
    root = ["--store", "memory", "--data-dir", str(tmp_path / "data")]
    out = tmp_path / "q2"
    run = [*root, "bench", "run", str(persona_file), "-o", str(out), "--three-phrase",
           "--task", "outdoor_spot", "--task", "convention_center", "--task-image", f"convention_center={center}",
           "--methods", ",".join(METHODS), "--generator", "tests.test_protocol_chain:tiny_generator",
           "--judge", "vlm", "--judge-option", "model=fake-vlm", "--judge-option", f"base_url={base_url}",
           "--judge-option", "profile_tile=32", "--judge-option", "method_tile=32", "--no-progress", "--json",
           "--no-report"]
    with torch_threads(1):
        res = CliRunner().invoke(app, run)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["rows_written"] == summary["images_written"] == 18
    rows = [json.loads(x) for x in open(out / "rows.jsonl")]
    manifest = json.loads((out / "manifest.json").read_text())["config"]
    assert manifest["judge"] == "vlm:fake-vlm" and manifest["judge_posts"] == "matched" and manifest["three_phrase"]
    assert [t["input_image"] for t in manifest["tasks"]] == [None, str(center.resolve())]
    # every judge score is the fake judge's score of the method's blind label; the canvas posts are matched
    matched = {}
    for r in rows:
        labels = {m: lab for lab, m in assign_labels(r["persona_id"], METHODS).items()}
        assert r["judge"] == score_for(labels[r["method"]])
        key = (r["persona_id"], r["task"])
        if key not in matched:
            prompts = [x["prompt"] for x in rows if (x["persona_id"], x["task"]) == key]
            matched[key] = expected_posts(minilm, persona_file, r["persona_id"], prompts)
        assert r["judge_posts"] == matched[key]
        assert Image.open(out / r["image"]).size == (32, 32)
    requests = [json.loads(x) for x in open(log)]
    assert len(requests) == 6 and {q["model"] for q in requests} == {"fake-vlm"}
    edits = [q for q in requests if "EDITING PROMPT" in q["text"]]
    assert len(edits) == 3 and all(q["images"][0] == [32, 32] and len(q["images"]) == 3 for q in edits)
    assert all(len(q["images"]) == 2 for q in requests if q not in edits)
    assert all('"Here is a convention center. Add a preferred event"' in q["text"] for q in edits)
    # Table 2 layout and score-c vs judge per task, checked against a plain computation
    md = protocol_section(rows)
    assert md.startswith("## Image-level experiment (Table 2 layout)")
    for kind, task in [("generation", "outdoor_spot"), ("editing", "convention_center")]:
        trows = [r for r in rows if r["task"] == task]
        vc = np.array([[next(r["score_c"] for r in trows if (r["persona_id"], r["method"]) == (p, m))
                        for m in METHODS] for p in ["kai", "lena", "omar"]])
        vlm = np.array([[next(r["judge"] for r in trows if (r["persona_id"], r["method"]) == (p, m))
                         for m in METHODS] for p in ["kai", "lena", "omar"]])
        vprag = next(line for line in md.splitlines() if line.startswith("| VPRAG |")).rstrip(" |").split(" | ")
        j = METHODS.index("vprag")
        offset = 1 if kind == "generation" else 5
        assert vprag[offset:offset + 4] == [f"{vc[:, j].mean():.3f}", f"{100 * win_rates(vc)[j]:.1f}%",
                                            f"{vlm[:, j].mean():.2f}", f"{100 * win_rates(vlm)[j]:.1f}%"]
        rho = spearmanr(vc.ravel(), vlm.ravel()).statistic
        assert f"| task `{task}` | {rho:.3f} | 9 |" in md

    # human ratings made from the run (3 annotators, a harsher scale than the judge), then validation
    rng = np.random.default_rng(0)
    ratings = tmp_path / "ratings.csv"
    lines = ["annotator,persona_id,task,method,llm,score,image"]
    for r in rows:
        for a, off in [("a1", -1.0), ("a2", -1.5), ("a3", -0.5)]:
            s = float(np.clip(r["judge"] + off + rng.normal(0, 0.3), 0, 5))
            lines.append(f"{a},{r['persona_id']},{r['query']},{r['method'].upper()},tmpl,{s:.2f},{r['image']}")
    ratings.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["validate", str(ratings), "--run", f"tmpl={out}", "-o", str(tmp_path / "val"),
                                   "--calibration-personas", "kai", "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    val = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert val["n_images"] == 12 and val["held_out_personas"] == ["kai"] and val["llms"] == ["tmpl"]
    assert val["calibration"]["after"]["mae"] < val["calibration"]["before"]["mae"]
    cal_path = tmp_path / "val" / "judge_calibration.json"
    cal = JudgeCalibration.load(cal_path)
    # the saved map reused by the report: calibrated VLM columns without the calibration persona
    res = CliRunner().invoke(app, ["bench", "report", str(out), "-o", str(tmp_path / "rep"), "--judge-calibration",
                                   str(cal_path)])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "report.md").read_text()
    md = md[md.index("## Image-level experiment"):]
    assert "Gen. VLM (calibrated)" in md and "1 calibration persona(s) left out (6 rows)" in md
    gen = [r for r in rows if r["task"] == "outdoor_spot" and r["persona_id"] != "kai"]
    vprag = [cal.apply_one(r["judge"]) for r in gen if r["method"] == "vprag"]
    assert next(line for line in md.splitlines() if line.startswith("| VPRAG |")).split(" | ")[3] == \
        f"{np.mean(vprag):.2f}"

    # `vptt score judge` on one persona's images: matched posts from the persona file, calibrated scores
    lena = [r for r in rows if r["persona_id"] == "lena" and r["task"] == "outdoor_spot"]
    args = [*root, "score", "judge", "--persona-file", str(persona_file), "--persona-id", "lena", "--prompt",
            "A preferred outdoor spot", "--model", "fake-vlm", "--base-url", base_url, "--api-key", "sk-x",
            "--judge-calibration", str(cal_path), "--json"]
    for r in lena:
        args += ["--method", f"{r['method']}={out / r['image']}", "--generated-prompt", f"{r['method']}={r['prompt']}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["profile_posts"] == lena[0]["judge_posts"]
    assert got["scores"] == {r["method"]: r["judge"] for r in lena}
    assert got["calibrated_scores"] == {m: pytest.approx(cal.apply_one(s)) for m, s in got["scores"].items()}
    res = CliRunner().invoke(app, [a for a in args if a != "--json"] + ["--posts", "first"])
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and re.search(r"profile canvas posts: lena-00, (lena-0\d, ){8}lena-09\b", text), text


def test_editing_without_its_image_fails_before_any_work(tmp_path) -> None:
    persona_file = personas_with_images(tmp_path)
    env = {**os.environ, "VPTT_STORE": "memory", "VPTT_DATA_DIR": str(tmp_path / "data")}
    res = CliRunner().invoke(app, ["bench", "run", str(persona_file), "-o", str(tmp_path / "o"), "--task",
                                   "convention_center", "--generator", "tests.test_bench_run:slow_generator",
                                   "--no-progress"], env=env)
    assert res.exit_code == 2 and "--task-image convention_center=PATH" in " ".join(res.output.split())
    for bad, match in [("outdoor_spot=x.png", "generation task"), ("nope=x.png", "not in this run"),
                       (f"convention_center={tmp_path / 'missing.png'}", "not found")]:
        res = CliRunner().invoke(app, ["bench", "run", str(persona_file), "-o", str(tmp_path / "o"), "--task",
                                       "convention_center", "--task", "outdoor_spot", "--task-image", bad,
                                       "--no-progress"], env=env)
        assert res.exit_code == 2 and match in res.output, res.output
    (tmp_path / "broken.png").write_text("not an image")
    res = CliRunner().invoke(app, ["bench", "run", str(persona_file), "-o", str(tmp_path / "o"), "--task",
                                   "convention_center", "--task-image", f"convention_center={tmp_path / 'broken.png'}",
                                   "--no-progress"], env=env)
    assert res.exit_code == 2 and "cannot be read" in res.output
    assert not (tmp_path / "o" / "rows.jsonl").exists()
