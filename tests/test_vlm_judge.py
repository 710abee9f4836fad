"""Tests of the VLM judge: prompts, canvases, blind labels, parser, client (respx), calibration, CLI."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import respx
import typer
from PIL import Image
from scipy.stats import rankdata
from typer.testing import CliRunner

from vptt.core.errors import ConfigError, ProviderAuthError
from vptt.evaluators._canvas import grid_layout, methods_canvas, profile_canvas
from vptt.evaluators.vlm_judge import (
    SYSTEM_PROMPT,
    JudgeConfig,
    JudgeResult,
    ProblemKind,
    VLMJudge,
    assign_labels,
    calibrate,
    parse_judge_reply,
    unshuffle,
    user_prompt,
)
from vptt.sdk.cli.score_judge import register

BASE = "http://testserver/v1"
KEY = "sk-SECRET-4242-do-not-leak"
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (200, 30, 200),
           (30, 200, 200), (120, 60, 10), (10, 120, 60), (60, 10, 120), (90, 90, 90), (250, 140, 0)]
METHODS = ["baseline", "persona_only", "brag", "vprag", "comb"]
EXPL = "[1-2 sentence explanation of why this score, focusing on specific visual elements]"

# The paper's text (supplement 15.1), PDF's doubled bold markers undone; compared whitespace-collapsed.
PAPER_SYSTEM = """
You are an expert visual judge evaluating AI-generated images for visual similarity to a user's persona.
Evaluate how well each generated image captures the VISUAL ELEMENTS from the persona's posts.
EVALUATION CRITERIA (Visual Similarity): 1. **Objects & Materials:** Same objects, materials, textures
visible in posts? 2. **Environment & Setting:** Similar locations, backgrounds, environments?
3. **Appearance Patterns:** Similar clothing styles, colors, expressions? 4. **Lighting & Atmosphere:**
Similar lighting, mood, atmosphere? 5. **Colors & Composition:** Similar color palettes and visual
composition? 6. **Cultural/Style Markers:** Similar cultural elements, aesthetic style? SCORING (0-5
scale, use 0.5 increments): - **5.0:** Excellent visual similarity - Captures most key visual elements
from posts - **4.0-4.5:** Good visual similarity - Several key visual elements present - **3.0-3.5:**
Moderate visual similarity - Some visual elements recognizable - **2.0-2.5:** Weak visual similarity -
Few visual elements match - **1.0-1.5:** Minimal visual similarity - Barely any visual connection -
**0.0-0.5:** No visual similarity - Completely different visual style **IMPORTANT**: Focus on VISUAL
similarity, not just conceptual alignment.
"""
PAPER_RESPOND = """
A: Score=X.X - [1-2 sentence explanation of why this score, focusing on specific visual elements]
B: Score=Y.Y - [1-2 sentence explanation of why this score, focusing on specific visual elements]
C: Score=Z.Z - [1-2 sentence explanation of why this score, focusing on specific visual elements]
D: Score=W.W - [1-2 sentence explanation of why this score, focusing on specific visual elements]
E: Score=V.V - [1-2 sentence explanation of why this score, focusing on specific visual elements]
"""
PAPER_GENERATION = """
TASK: Evaluate these 5 generated images for visual similarity to the persona's posts **GENERATION PROMPT:**
"a cup of coffee" IMAGE 1 (Reference - Profile Context): Grid of selected posts from the persona's gallery
(numbered). IMAGE 2 (Generated Images to Evaluate): 5 generated images labeled A through E (left to
right). Each was generated using a different approach (you don't know which approach was used for which
image). YOUR TASK: For EACH image (A, B, C, D, E), score 0-5 based on: - How similar are the VISUAL
ELEMENTS (objects, environment, appearance, lighting, colors)? - Do the generated images look like they
could belong to the same persona's gallery? - Are there recognizable visual patterns from the posts?
Respond in this EXACT format (one line per image):
""" + PAPER_RESPOND
PAPER_EDITING = """
TASK: Evaluate these 5 edited images for visual similarity to the persona's posts EDITING PROMPT:
"a cup of coffee" IMAGE 1 (Input Image): The original input image that was edited. IMAGE 2 (Reference -
Profile Context): Grid of selected posts from the persona's gallery (numbered). IMAGE 3 (Edited Images
to Evaluate): 5 edited images labeled A through E (left to right). Each was edited using a different
approach (you don't know which approach was used for which image). YOUR TASK: For EACH image (A, B, C,
D, E), score 0-5 based on: - How similar are the VISUAL ELEMENTS (objects, environment, appearance,
lighting, colors)? - Do the edited images look like they could belong to the same persona's gallery?
- Are there recognizable visual patterns from the posts? Respond in this EXACT format (one line per
image):
""" + PAPER_RESPOND


def squash(text: str) -> str:
    return " ".join(text.split())


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (40, 40)) -> Image.Image:
    return Image.new("RGB", size, colour)


def reply_for(labels: str, scores: list[float]) -> str:
    return "\n".join(f"{lab}: Score={s} - reason {lab}" for lab, s in zip(labels, scores))


def completion(text: str | None) -> httpx.Response:
    return httpx.Response(200, json={
        "id": "c1", "object": "chat.completion", "created": 0, "model": "judge-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}]})


def make_judge(**overrides: object) -> VLMJudge:
    cfg = {"model": "judge-model", "base_url": BASE, "api_key": KEY, "profile_tile": 32, "method_tile": 32,
           "max_retries": 0, **overrides}
    return VLMJudge(JudgeConfig(**cfg), http_client=httpx.Client())


def decode(url: str) -> Image.Image:
    head, data = url.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


# ----------------------------------------------------------------------------- prompts


def test_prompts_match_paper_for_five_methods():
    assert squash(SYSTEM_PROMPT) == squash(PAPER_SYSTEM)
    assert squash(user_prompt("generation", "a cup of coffee")) == squash(PAPER_GENERATION)
    assert squash(user_prompt("editing", "a cup of coffee")) == squash(PAPER_EDITING)


def test_prompt_for_three_methods_names_three_labels():
    text = user_prompt("generation", "x {y}", 3)
    assert "these 3 generated images" in text and "labeled A through C" in text and "(A, B, C)" in text
    assert '"x {y}"' in text and "D: Score" not in text
    expected = [f"{a}: Score={p} - {EXPL}" for a, p in zip("ABC", ["X.X", "Y.Y", "Z.Z"])]
    assert text.strip().splitlines()[-3:] == expected
    with pytest.raises(ConfigError):
        user_prompt("generation", "x", 6)


# ----------------------------------------------------------------------------- canvases


def test_grid_layout_offsets_by_hand():
    g = grid_layout(10, cols=5, tile=50, label_height=10, gap=2)
    assert (g.width, g.height) == (2 + 5 * 52, 2 + 2 * 62)
    assert g.labels[0].as_tuple() == (2, 2, 52, 12) and g.tiles[0].as_tuple() == (2, 12, 52, 62)
    assert g.tiles[7].as_tuple() == (2 + 2 * 52, 64 + 10, 2 + 2 * 52 + 50, 64 + 60)


def test_profile_canvas_tiles_and_numbered_labels():
    imgs = [solid(c) for c in COLOURS]  # 11 images: only the first 10 are used
    canvas = profile_canvas(imgs, tile=48, label_height=16, gap=4)
    g = grid_layout(10, cols=5, tile=48, label_height=16, gap=4)
    assert canvas.size == (g.width, g.height) == (4 + 5 * 52, 4 + 2 * 68)
    px = np.asarray(canvas)
    for i in range(10):
        x, y = g.tiles[i].center
        assert tuple(px[y, x]) == COLOURS[i]  # tile i holds post i, row-major 5 x 2
        lb = g.labels[i]
        band = px[lb.top:lb.bottom, lb.left:lb.right].reshape(-1, 3)
        assert not (band == COLOURS[i]).all(axis=1).any()  # the label band is not the tile colour
        assert (band.sum(axis=1) > 600).sum() > 5  # white number ink drawn on the black band
    crops = [px[b.top:b.bottom, b.left:b.right].tobytes() for b in g.labels]
    assert len(set(crops)) == 10  # "1".."10" all drawn differently
    assert tuple(px[1, 1]) == (255, 255, 255)  # gap is background


def test_profile_canvas_few_images_one_row_and_letterbox():
    imgs = [solid((10, 10, 10), (80, 20)), solid((0, 255, 0))]
    canvas = profile_canvas(imgs, tile=40, label_height=10, gap=2)
    g = grid_layout(2, cols=5, tile=40, label_height=10, gap=2)
    assert canvas.size == (g.width, g.height) == (2 + 2 * 42, 2 + 52)
    px = np.asarray(canvas)
    t0 = g.tiles[0]
    assert tuple(px[t0.center[1], t0.center[0]]) == (10, 10, 10)
    assert tuple(px[t0.top + 1, t0.center[0]]) == (255, 255, 255)  # wide image letterboxed, not stretched


def test_methods_canvas_one_row_labelled():
    canvas = methods_canvas([solid(c) for c in COLOURS[:5]], list("ABCDE"), tile=40, label_height=12, gap=3)
    g = grid_layout(5, cols=5, tile=40, label_height=12, gap=3)
    assert canvas.size == (3 + 5 * 43, 3 + 55)
    px = np.asarray(canvas)
    assert [tuple(px[b.center[1], b.center[0]]) for b in g.tiles] == COLOURS[:5]
    crops = {px[b.top:b.bottom, b.left:b.right].tobytes() for b in g.labels}
    assert len(crops) == 5


# ----------------------------------------------------------------------------- blind labels


def test_shuffle_deterministic_and_persona_specific():
    a = assign_labels("persona-001", METHODS)
    assert a == assign_labels("persona-001", METHODS)
    assert sorted(a) == list("ABCDE") and sorted(a.values()) == sorted(METHODS)
    perms = {tuple(assign_labels(f"persona-{i:03d}", METHODS).values()) for i in range(40)}
    assert len(perms) >= 15  # different personas get different orders


def test_shuffle_independent_of_python_hash_seed():
    code = ("from evaluators.vlm_judge import assign_labels as f; "
            "print(list(f('persona-7', list('abcde')).values()))")
    root = Path(__file__).resolve().parents[1]
    outs = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert outs == {str(list(assign_labels("persona-7", list("abcde")).values())) + "\n"}


def test_unshuffle_round_trip_and_sizes():
    labels = assign_labels("p9", METHODS[:3])
    assert list(labels) == ["A", "B", "C"]
    truth = {"baseline": 1.0, "persona_only": 2.5, "brag": 4.0}
    by_label = {lab: truth[m] for lab, m in labels.items()}
    assert unshuffle(by_label, labels) == truth
    with pytest.raises(ConfigError):
        unshuffle({"E": 1.0}, labels)
    for bad in (["one"], METHODS + ["six"], ["a", "a"]):
        with pytest.raises(ConfigError):
            assign_labels("p", bad)


# ----------------------------------------------------------------------------- parser


def test_parse_well_formed():
    text = ("A: Score=4.5 - Warm café light and wooden tables match posts 2 and 7.\n\n"
            "B: Score=0 - Nothing in common.\nC: Score = 3.0 \u2013 Some beach tones.\n"
            "D: Score=5.0 - [fits the gallery]\nE: Score=2.5 - Weak match.")
    r = parse_judge_reply(text, "ABCDE")
    assert r.ok and r.problems == []
    assert r.scores == {"A": 4.5, "B": 0.0, "C": 3.0, "D": 5.0, "E": 2.5}
    assert r.reasons["A"] == "Warm café light and wooden tables match posts 2 and 7."
    assert r.reasons["D"] == "[fits the gallery]"


@pytest.mark.parametrize("text, kind, label, kept", [
    ("A: Score=4.0 - ok\nC: Score=1.0 - ok", ProblemKind.MISSING_LABEL, "B", {"A", "C"}),
    ("A: Score=4.0 - ok\nB: Score=1.0 - x\nB: Score=2.0 - y\nC: Score=1 - z",
     ProblemKind.DUPLICATE_LABEL, "B", {"A", "C"}),
    ("A: Score=4.3 - ok\nB: Score=1.0 - x\nC: Score=2 - z", ProblemKind.OFF_GRID, "A", {"B", "C"}),
    ("A: Score=4.0 - ok\nB: Score=5.5 - x\nC: Score=2 - z", ProblemKind.OUT_OF_RANGE, "B", {"A", "C"}),
    ("A: Score=4.0 - ok\nB: Score=-1 - x\nC: Score=2 - z", ProblemKind.OUT_OF_RANGE, "B", {"A", "C"}),
    ("Here are my scores:\nA: Score=4.0 - ok\nB: Score=1 - x\nC: Score=2 - z",
     ProblemKind.UNPARSEABLE_LINE, None, {"A", "B", "C"}),
    ("A: Score=4.0 - ok\nB: Score=1 - x\nC: Score=2 - z\nD: Score=2 - extra",
     ProblemKind.UNKNOWN_LABEL, "D", {"A", "B", "C"}),
    ("A: Score=4.0\nB: Score=1 - x\nC: Score=2 - z", ProblemKind.UNPARSEABLE_LINE, None, {"B", "C"}),
    ("A: Score=4/5 - ok\nB: Score=1 - x\nC: Score=2 - z", ProblemKind.UNPARSEABLE_LINE, None, {"B", "C"}),
    ("A: Score=4.0 - a B: Score=1.0 - b C: Score=2.0 - c", ProblemKind.UNPARSEABLE_LINE, None, set()),
    ("   \n", ProblemKind.EMPTY_REPLY, None, set()),
])
def test_parse_reports_malformed(text, kind, label, kept):
    r = parse_judge_reply(text, "ABC")
    assert not r.ok
    assert kind in {p.kind for p in r.problems}
    if label is not None:
        assert any(p.kind == kind and p.label == label for p in r.problems)
    assert set(r.scores) == kept


def test_parse_unparseable_line_reports_line_number():
    r = parse_judge_reply("A: Score=4.0 - ok\n**B**: Score=1.0 - x", "AB")
    kinds = sorted(p.kind.value for p in r.problems)
    assert kinds == ["missing_label", "unparseable_line"]
    bad = next(p for p in r.problems if p.kind == ProblemKind.UNPARSEABLE_LINE)
    assert bad.line_no == 2 and bad.line == "**B**: Score=1.0 - x"


# ----------------------------------------------------------------------------- client (respx)


def _inputs(n: int = 5) -> dict:
    return {"persona_id": "persona-001", "persona_images": [solid(c) for c in COLOURS[:10]],
            "method_images": {m: solid(COLOURS[i]) for i, m in enumerate(METHODS[:n])},
            "prompt": "a cup of coffee"}


def test_generation_request_and_unshuffled_scores():
    judge = make_judge()
    inputs = _inputs()
    labels = assign_labels("persona-001", METHODS)
    scores_by_label = [4.5, 1.0, 3.0, 0.5, 2.0]
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        reply = reply_for("ABCDE", scores_by_label)
        route = mock.post("/chat/completions").mock(return_value=completion(reply))
        result = judge.judge(**inputs)
    body = json.loads(route.calls[0].request.content)
    assert route.calls[0].request.headers["authorization"] == f"Bearer {KEY}"
    assert body["model"] == "judge-model" and body["temperature"] == 0.0 and body["seed"] == 42
    assert body["max_tokens"] == 5000 and "top_p" not in body
    system, user = body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["content"][0] == {"type": "text", "text": user_prompt("generation", "a cup of coffee")}
    images = [decode(part["image_url"]["url"]) for part in user["content"][1:]]
    assert len(images) == 2
    assert images[0].size == profile_canvas(inputs["persona_images"], tile=32).size
    g = grid_layout(5, cols=5, tile=32, label_height=40, gap=8)
    assert images[1].size == (g.width, g.height)
    px = np.asarray(images[1])
    for i, lab in enumerate("ABCDE"):  # left-to-right order follows the blind labels
        x, y = g.tiles[i].center
        assert tuple(px[y, x]) == COLOURS[METHODS.index(labels[lab])]
    assert result.ok and result.attempts == 1 and result.labels == labels
    assert result.scores == {labels[lab]: s for lab, s in zip("ABCDE", scores_by_label)}
    assert result.reasons[labels["C"]] == "reason C"


def test_editing_request_sends_input_image_first():
    judge = make_judge(seed=7, temperature=0.0, max_tokens=300, top_p=0.95)
    inputs = _inputs(3)
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=completion(reply_for("ABC", [1, 2, 3])))
        result = judge.judge(**inputs, task="editing", input_image=solid((1, 2, 3), (24, 16)))
    body = json.loads(route.calls[0].request.content)
    assert body["seed"] == 7 and body["max_tokens"] == 300 and body["top_p"] == 0.95
    content = body["messages"][1]["content"]
    assert content[0]["text"] == user_prompt("editing", "a cup of coffee", 3)
    images = [decode(p["image_url"]["url"]) for p in content[1:]]
    assert len(images) == 3
    assert images[0].size == (24, 16) and images[0].getpixel((5, 5)) == (1, 2, 3)
    assert images[2].size == (8 + 3 * 40, 8 + 40 + 32 + 8)
    assert result.ok and sorted(result.scores.values()) == [1.0, 2.0, 3.0]


def test_retry_on_malformed_reply_then_success():
    judge = make_judge()
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(side_effect=[
            completion("A: Score=4.2 - x\nB: Score=1 - y"), completion(reply_for("ABC", [4.0, 1.0, 2.5]))])
        result = judge.judge(**_inputs(3))
    assert route.call_count == 2 and result.ok and result.attempts == 2
    assert result.replies[0].startswith("A: Score=4.2")
    assert result.raw_reply == reply_for("ABC", [4.0, 1.0, 2.5])
    second = json.loads(route.calls[1].request.content)["messages"]
    assert second[2] == {"role": "assistant", "content": "A: Score=4.2 - x\nB: Score=1 - y"}
    assert "could not be parsed" in second[3]["content"] and "not a 0.5 step" in second[3]["content"]
    assert "no line for C" in second[3]["content"] and "C: Score=Z.Z" in second[3]["content"]


def test_retry_exhausted_or_disabled_reports_problems():
    for retries, calls in ((1, 2), (0, 1)):
        judge = make_judge(malformed_retries=retries)
        with respx.mock(base_url=BASE) as mock:
            route = mock.post("/chat/completions").mock(return_value=completion("A: Score=4.0 - x"))
            result = judge.judge(**_inputs(2))
        assert route.call_count == calls and result.attempts == calls and not result.ok
        assert [p.kind for p in result.problems] == [ProblemKind.MISSING_LABEL]
        assert len(result.scores) == 1


def test_empty_content_is_a_parse_problem():
    judge = make_judge(malformed_retries=0)
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=completion(None))
        result = judge.judge(**_inputs(2))
    assert [p.kind for p in result.problems] == [ProblemKind.EMPTY_REPLY] and result.scores == {}


def test_input_validation():
    judge = make_judge()
    with pytest.raises(ConfigError, match="input_image"):
        judge.prepare(**_inputs(), task="editing")
    with pytest.raises(ConfigError, match="prompt"):
        judge.prepare(**{**_inputs(), "prompt": "  "})
    with pytest.raises(ConfigError, match="persona images"):
        judge.prepare(**{**_inputs(), "persona_images": []})
    with pytest.raises(ConfigError, match="2 to 5"):
        judge.prepare(**{**_inputs(), "method_images": {"only": solid((0, 0, 0))}})


def test_api_key_never_leaks():
    judge = make_judge()
    assert KEY not in repr(judge.config) and KEY not in str(judge.config) and KEY not in repr(judge)
    assert KEY not in judge.config.model_dump_json()
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=completion(reply_for("AB", [1, 2])))
        result = judge.judge(**_inputs(2))
    assert KEY not in result.model_dump_json() and KEY not in repr(result)
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=httpx.Response(
            401, json={"error": {"message": f"Incorrect API key provided: {KEY}",
                                 "type": "invalid_request_error"}}))
        with pytest.raises(ProviderAuthError) as info:
            judge.judge(**_inputs(2))
    assert KEY not in str(info.value) and "HTTP 401" in str(info.value)
    # the provider's exception (its request carries the Authorization header) is not chained
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_missing_api_key_is_config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = VLMJudge(JudgeConfig(base_url=BASE, profile_tile=32, method_tile=32))
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        judge.judge(**_inputs(2))


# ----------------------------------------------------------------------------- calibration


def test_calibration_against_hand_computed_spearman():
    # pairs (a1, b1, a2, b2): judge 1,2,3,4 vs human 1,3,2,4 -> sum d^2 = 2, rho = 1 - 6*2/(4*15) = 0.8
    judge = [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]
    human = [{"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 4.0}]
    rep = calibrate(judge, human)
    assert rep.rho == pytest.approx(0.8) and rep.n_pairs == 4 and rep.n_items == 2 and rep.skipped_pairs == 0
    assert rep.judge_mean == {"a": 2.0, "b": 3.0} and rep.human_mean == {"a": 1.5, "b": 3.5}
    assert rep.judge_win_pct == {"a": 0.0, "b": 100.0} and rep.human_win_pct == {"a": 0.0, "b": 100.0}


def test_calibration_ties_missing_and_judge_results():
    jr = JudgeResult(persona_id="p", task="generation", model="m", labels={"A": "a", "B": "b", "C": "c"},
                     scores={"a": 3.0, "b": 3.0}, reasons={}, raw_reply="", problems=[], attempts=1,
                     replies=[])
    judge = [jr, {"a": 1.0, "b": 2.0, "c": 5.0}, {"a": 0.5, "b": 4.5, "c": 4.5}]
    human = [{"a": 2.0, "b": 4.0, "c": 1.0}, {"a": 2.0, "b": 2.0, "c": 4.5}, {"a": 1.0, "b": 3.0, "c": 5.0}]
    rep = calibrate(judge, human)
    xs = np.array([3.0, 3.0, 1.0, 2.0, 5.0, 0.5, 4.5, 4.5])  # c of item 0 has no judge score: skipped
    ys = np.array([2.0, 4.0, 2.0, 2.0, 4.5, 1.0, 3.0, 5.0])
    expected = np.corrcoef(rankdata(xs), rankdata(ys))[0, 1]  # Spearman = Pearson of average ranks
    assert rep.rho == pytest.approx(expected) and rep.n_pairs == 8 and rep.skipped_pairs == 1
    assert rep.judge_win_pct == pytest.approx({"a": 100 / 6, "b": 100 / 3, "c": 50.0})
    assert rep.human_win_pct == pytest.approx({"a": 0.0, "b": 100 / 3, "c": 200 / 3})
    assert rep.judge_mean["c"] == pytest.approx(4.75)
    with pytest.raises(ConfigError):
        calibrate(judge, human[:2])


# ----------------------------------------------------------------------------- CLI


def test_cli_judge(tmp_path, monkeypatch):
    posts = tmp_path / "persona-001"
    posts.mkdir()
    for i, c in enumerate(COLOURS[:4]):
        solid(c).save(posts / f"{i:02d}.png")
    for m in ("x", "y"):
        solid((9, 9, 9)).save(tmp_path / f"{m}.png")
    import vptt.sdk.cli.score_judge as cli

    monkeypatch.setattr(cli, "_build_judge", lambda cfg: VLMJudge(cfg, http_client=httpx.Client()))
    app, score = typer.Typer(), typer.Typer()
    register(score)
    app.add_typer(score, name="score")
    args = ["score", "judge", "--persona-images", str(posts), "--method", f"x={tmp_path / 'x.png'}",
            "--method", f"y={tmp_path / 'y.png'}", "--prompt", "a bike", "--model", "m", "--base-url", BASE,
            "--api-key", KEY, "--json", "--save-canvases", str(tmp_path / "out")]
    labels = assign_labels("persona-001", ["x", "y"])
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=completion(reply_for("AB", [4.0, 1.5])))
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["scores"] == {labels["A"]: 4.0, labels["B"]: 1.5} and KEY not in res.output
    assert json.loads(route.calls[0].request.content)["seed"] == 42
    saved = Image.open(tmp_path / "out" / "profile_canvas.png")
    assert saved.size == profile_canvas([solid((0, 0, 0))] * 4).size
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=completion("nonsense"))
        res = CliRunner().invoke(app, args[:-3] + ["--retries", "0"])
    assert res.exit_code == 1 and "parse problem" in res.output
    res = CliRunner().invoke(app, args[:6] + ["--prompt", "p", "--method", "bad"])
    assert res.exit_code != 0
