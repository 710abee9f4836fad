"""Tests of the feedback model: data, splits, features, network, training, metrics, I/O, LLM recipe, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import respx
import torch
import typer
from sklearn.metrics import accuracy_score, confusion_matrix, mean_absolute_error, mean_squared_error
from typer.testing import CliRunner

import vptt.sdk.cli.feedback as cli
from tests.conftest import HashEmbedderBase, make_persona
from vptt.core.errors import ConfigError, ModelLoadError
from vptt.core.models import Persona
from vptt.core.personas import dump_personas
from vptt.core.providers import ProviderAuthError, RetryConfig
from vptt.evaluators.feedback import (
    FeedbackConfig,
    FeedbackModel,
    FeedbackNet,
    feedback_metrics,
    train_feedback,
    val_test_gap,
)
from vptt.evaluators.feedback_data import (
    FeedbackExample,
    assign_splits,
    check_no_leakage,
    featurize,
    label_example,
    persona_vocabulary,
    profile_tokens,
    prompt_segments,
    read_examples,
    score_bin,
    score_bins,
    split_arrays,
    split_counts,
    synthetic_arrays,
    synthetic_examples,
    with_splits,
    write_examples,
)
from vptt.evaluators.feedback_llm import LLMDataConfig, LLMDataGenerator, parse_reply

BASE = "http://testserver/v1"
TINY = dict(profile_dim=16, prompt_dim=16, hidden=16, heads=4, ffn=32, head_hidden=(16, 8),
            max_profile_tokens=5)


class HashEmbedder(HashEmbedderBase):
    """Deterministic bag-of-words hashing embedder (fast; no model)."""

    name, dim = "hash-feedback", 16


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def personas(n: int = 6) -> list[Persona]:
    topics = ["pottery kiln clay", "surf wave beach", "neon street food", "snow mountain ski",
              "jazz club piano", "desert camel dune", "library old books", "garden roses bees"]
    out = []
    for i in range(n):
        words = topics[i % len(topics)].split()
        els = {"objects": [f"{w} {i}" for w in words], "lighting": [f"{words[0]} light"]}
        captions = [f"A {w} scene number {j}" for j, w in enumerate(words)][: 1 + i % 3]
        out.append(make_persona(f"p{i}", captions, elements=els))
    return out


# ----------------------------------------------------------------------------- bins, labels, JSONL
def test_score_bins_match_naive_rule():
    s = np.array([0.0, 0.3333, 1 / 3, 0.5, 0.6666, 2 / 3, 1.0])
    naive = [2 if x >= 2 / 3 else 0 if x < 1 / 3 else 1 for x in s]
    assert score_bins(s).tolist() == naive
    assert [score_bin(x) for x in (1.0, 0.5, 0.0)] == ["aligned", "neutral", "misaligned"]
    assert label_example("a", "x", "neutral").score == 0.5


def test_examples_roundtrip_and_bad_lines(tmp_path: Path):
    ex = [label_example("a", "a red boat", "aligned"), FeedbackExample(persona_id="b", prompt="x", score=0.3)]
    write_examples(tmp_path / "d.jsonl", ex)
    assert read_examples(tmp_path / "d.jsonl") == ex
    (tmp_path / "bad.jsonl").write_text('{"persona_id": "a", "prompt": "x", "score": 1.5}\nnot json\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: score.*\n.*bad.jsonl:2: invalid JSON"):
        read_examples(tmp_path / "bad.jsonl")


# ----------------------------------------------------------------------------- splits
def test_split_counts_paper_proportions():
    assert split_counts(200) == (130, 20, 50)
    for n in range(0, 40):
        assert sum(split_counts(n)) == n
    with pytest.raises(ConfigError):
        split_counts(10, (0.5, 0.5, 0.5))


def test_assign_splits_deterministic_and_order_free():
    ids = [f"persona-{i}" for i in range(200)]
    a, b = assign_splits(ids), assign_splits(list(reversed(ids)))
    assert a == b
    assert [sum(v == s for v in a.values()) for s in ("train", "val", "test")] == [130, 20, 50]
    assert assign_splits(ids, salt="other") != a


def test_no_leakage_and_detection():
    data = with_splits(synthetic_examples(personas(20), n_aligned=2, n_misaligned=2, n_neutral=1))
    by_split = check_no_leakage(data)
    sets = [set(v) for v in by_split.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, sets)) == 20
    parts = split_arrays(data, featurize(data, {p.persona_id: p for p in personas(20)}, HashEmbedder()))
    for name, arr in parts.items():
        assert {arr.persona_ids[i] for i in arr.persona_index} == set(by_split[name])
        assert len(arr) == sum(e.split == name for e in data)
    leaked = [*data, data[0].model_copy(update={"split": "test" if data[0].split != "test" else "train"})]
    with pytest.raises(ConfigError, match="leakage"):
        check_no_leakage(leaked)
    with pytest.raises(ConfigError, match="no split"):
        check_no_leakage([label_example("a", "x", "aligned")])


# ----------------------------------------------------------------------------- synthetic text data
def test_synthetic_examples_recipe():
    ps = personas(4)
    data = synthetic_examples(ps, seed=3)
    assert data == synthetic_examples(ps, seed=3)
    assert len(data) == 4 * 50 and all(e.source == "synthetic" for e in data)
    for p in ps:
        labels = [e.label for e in data if e.persona_id == p.persona_id]
        assert (labels.count("aligned"), labels.count("misaligned"), labels.count("neutral")) == (20, 20, 10)
        own = [re.compile(rf"\b{re.escape(t)}\b", re.I) for t in persona_vocabulary(p)]
        for e in data:
            if e.persona_id == p.persona_id and e.label == "misaligned":
                assert not any(r.search(e.prompt) for r in own), e.prompt
    with pytest.raises(ConfigError, match="two personas"):
        synthetic_examples(ps[:1])
    twin = ps[0].model_copy(update={"persona_id": "twin"})
    with pytest.raises(ConfigError, match="overlaps"):
        synthetic_examples([ps[0], twin])


# ----------------------------------------------------------------------------- features
def test_profile_tokens_and_segments():
    card, caps = np.ones(4), np.arange(12, dtype=np.float32).reshape(3, 4)
    tok, mask = profile_tokens(card, caps, 6)
    assert tok.shape == (6, 4) and mask.tolist() == [True] * 4 + [False] * 2
    assert np.array_equal(tok[1:4], caps) and not tok[4:].any()
    tok, mask = profile_tokens(card, caps, 2)
    assert mask.all() and np.array_equal(tok[1], caps[0])
    segs = prompt_segments("a boat, misty lake. dawn", 3)
    assert segs == ["a boat, misty lake. dawn", "a boat", "misty lake"]
    assert prompt_segments("a boat, misty lake", 1) == ["a boat, misty lake"]


def test_featurize_shapes_masks_and_missing_persona():
    ps = personas(3)
    data = [label_example("p0", "pottery, kiln", "aligned"), label_example("p2", "surf", "misaligned")]
    emb = HashEmbedder()
    a = featurize(data, {p.persona_id: p for p in ps}, emb, max_profile_tokens=5, max_prompt_tokens=3)
    assert a.profile.shape == (2, 5, 16) and a.prompt.shape == (2, 3, 16)
    assert a.profile_mask.sum(1).tolist() == [1 + 1, 1 + 3]  # card + that persona's posts
    assert a.prompt_mask.tolist() == [[True, True, True], [True, False, False]]
    assert np.allclose(a.profile[0, 0], emb.embed_one(ps[0].card_text()))
    assert np.allclose(a.prompt[0, 2], emb.embed_one("kiln"))
    assert a.persona_index.tolist() == [0, 1] and a.scores.tolist() == [1.0, 0.0]
    with pytest.raises(ConfigError, match="not in the persona file"):
        featurize([label_example("zz", "x", "aligned")], {}, emb)


# ----------------------------------------------------------------------------- network
def _inputs(b: int = 3, t: int = 5, s: int = 2, d: int = 16, seed: int = 0):
    g = np.random.default_rng(seed)
    pm = np.arange(t)[None] < np.array([5, 2, 1])[:b, None]
    qm = np.arange(s)[None] < np.array([2, 1, 1])[:b, None]
    return (g.normal(size=(b, t, d)).astype(np.float32), pm, g.normal(size=(b, s, d)).astype(np.float32), qm)


@pytest.mark.parametrize("side", ["profile", "prompt"])
def test_model_shapes_and_padding_is_ignored(side: str):
    m = FeedbackModel(FeedbackConfig(**TINY, query_side=side))
    prof, pm, prompt, qm = _inputs()
    out = m.predict(prof, pm, prompt, qm)
    assert out.shape == (3,) and ((out > 0) & (out < 1)).all()
    prof2, prompt2 = prof.copy(), prompt.copy()
    prof2[~pm] = 99.0
    prompt2[~qm] = -42.0
    assert np.allclose(m.predict(prof2, pm, prompt2, qm), out, atol=1e-6)
    prof2[0, 0] += 1.0  # a real token does matter
    assert not np.isclose(m.predict(prof2, pm, prompt2, qm)[0], out[0])


def test_attention_gives_padded_keys_zero_weight():
    cfg = FeedbackConfig(**TINY, query_side="prompt", attention_sink=False)
    net = FeedbackNet(cfg).eval()
    prof, pm, prompt, qm = map(torch.from_numpy, _inputs())
    with torch.no_grad():
        score, w = net(prof, pm, prompt, qm, return_attention=True)
    assert w.shape == (3, 2, 5) and score.shape == (3,)
    assert torch.all(w[~pm.unsqueeze(1).expand_as(w)] == 0)
    assert torch.allclose(w.sum(-1), torch.ones(3, 2))


def test_bad_inputs_rejected():
    m = FeedbackModel(FeedbackConfig(**TINY))
    prof, pm, prompt, qm = _inputs()
    pm[1] = False
    with pytest.raises(ConfigError, match="at least one real"):
        m.predict(prof, pm, prompt, qm)
    with pytest.raises(ConfigError, match=r"\(B, T, 16\)"):
        m.predict(prof[..., :8], pm, prompt, qm)
    with pytest.raises(ValueError, match="divisible"):
        FeedbackConfig(hidden=10, heads=4)
    with pytest.raises(ValueError, match="shared_projection"):
        FeedbackConfig(profile_dim=8, prompt_dim=16)


# ----------------------------------------------------------------------------- training
def test_training_beats_constant_predictor_on_learnable_data(tmp_path: Path):
    d = 32
    train, val, test = (synthetic_arrays(n, 30, d, 8, seed=s) for n, s in ((60, 0), (10, 1), (20, 2)))
    cfg = FeedbackConfig(profile_dim=d, prompt_dim=d, hidden=32, heads=4, ffn=64, head_hidden=(32, 16),
                         max_profile_tokens=8, max_epochs=40, patience=10)
    seen: list[int] = []
    result = train_feedback(train, val, cfg, on_epoch=lambda s: seen.append(s.epoch), threads=1)
    assert seen == [h.epoch for h in result.history] and 1 <= result.best_epoch <= len(seen)
    assert result.best_val_loss == min(h.val_loss for h in result.history)
    m = feedback_metrics(result.model.predict_arrays(test), test.scores)
    assert m.mae < 0.85 * m.constant_mae and m.mse < m.constant_mse
    assert m.accuracy > m.constant_accuracy + 0.25
    assert m.aligned_accuracy > 0.35
    png = cli.plot_loss_curve(result.history, tmp_path / "curve.png", result.best_epoch)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_is_reproducible_for_a_seed():
    a = synthetic_arrays(6, 10, 16, 5, seed=0)
    cfg = FeedbackConfig(**TINY, max_epochs=3)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    runs = [train_feedback(a, a, cfg) for _ in range(2)]
    assert [h.train_loss for h in runs[0].history] == [h.train_loss for h in runs[1].history]
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    other = train_feedback(a, a, cfg.model_copy(update={"seed": 1}))
    assert [h.train_loss for h in other.history] != [h.train_loss for h in runs[0].history]


def test_training_rejects_empty_or_mismatched_split():
    a = synthetic_arrays(4, 5, 16, 5, seed=0)
    with pytest.raises(ConfigError, match="validation split is empty"):
        train_feedback(a, a.select(np.array([], np.int64)), FeedbackConfig(**TINY))
    with pytest.raises(ConfigError, match="profile_dim"):
        train_feedback(a, a, FeedbackConfig(**{**TINY, "profile_dim": 32, "prompt_dim": 32}))


# ----------------------------------------------------------------------------- metrics
def test_metrics_against_sklearn():
    g = np.random.default_rng(1)
    t = g.choice([0.0, 0.5, 1.0], size=200)
    p = np.clip(t + g.normal(0, 0.3, size=200), 0, 1)
    m = feedback_metrics(p, t)
    assert m.accuracy == pytest.approx(accuracy_score(score_bins(t), score_bins(p)))
    assert m.mae == pytest.approx(mean_absolute_error(t, p))
    assert m.mse == pytest.approx(mean_squared_error(t, p))
    cm = confusion_matrix(score_bins(t), score_bins(p), labels=[0, 1, 2])
    assert m.confusion == cm.tolist()
    assert m.aligned_accuracy == pytest.approx(cm[2, 2] / cm[2].sum())
    assert m.constant_mae == pytest.approx(mean_absolute_error(t, np.full_like(t, t.mean())))
    worse = feedback_metrics(np.clip(p + 0.2, 0, 1), t)
    assert val_test_gap(m, worse) == pytest.approx(m.accuracy - worse.accuracy)


# ----------------------------------------------------------------------------- save / load
def test_save_load_equality(tmp_path: Path):
    m = FeedbackModel(FeedbackConfig(**TINY, embedder="hash-feedback", seed=7))
    m.meta = {"best_epoch": 3}
    m.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"model.safetensors", "config.json"}
    back = FeedbackModel.load(tmp_path / "m")
    assert back.config == m.config and back.meta == {"best_epoch": 3}
    for (k, v), (k2, v2) in zip(m.net.state_dict().items(), back.net.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = _inputs()
    assert np.array_equal(m.predict(*x), back.predict(*x))


def test_load_errors(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="not a feedback model"):
        FeedbackModel.load(tmp_path)
    FeedbackModel(FeedbackConfig(**TINY)).save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    doc["config"]["hidden"] = 32
    (tmp_path / "m" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="cannot load"):
        FeedbackModel.load(tmp_path / "m")


# ----------------------------------------------------------------------------- LLM recipe (respx)
COUNTS = {"aligned": 2, "misaligned": 2, "neutral": 1}
GOOD = {"aligned": ["a clay bowl", "a kiln at dusk"], "misaligned": ["a neon arcade", "a jet ski"],
        "neutral": ["a parking lot"]}


@pytest.mark.parametrize("reply, problem", [
    ("no json here", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({**GOOD, "extra": []}), "unexpected key 'extra'"),
    (json.dumps({**GOOD, "neutral": []}), "'neutral': expected 1 prompts, got 0"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "aligned"}), "'aligned': missing"),
    (json.dumps({**GOOD, "misaligned": ["a jet ski", 3]}), "not non-empty strings"),
    (json.dumps({**GOOD, "neutral": ["A clay bowl"]}), "duplicate"),
])
def test_parse_reply_reports_problems(reply: str, problem: str):
    parsed = parse_reply(reply, COUNTS)
    assert not parsed.ok and any(problem in p for p in parsed.problems), parsed.problems


def test_parse_reply_accepts_fenced_json():
    parsed = parse_reply("```json\n" + json.dumps(GOOD) + "\n```", COUNTS)
    assert parsed.ok and parsed.prompts == GOOD


def _chat(content: str) -> httpx.Response:
    return httpx.Response(200, json={"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": content}}]})


def _generator(**kw: object) -> LLMDataGenerator:
    cfg = LLMDataConfig(model="m", base_url=BASE, api_key="sk-test", n_aligned=2, n_misaligned=2, n_neutral=1,
                        retry=RetryConfig(max_attempts=3, initial_interval=0, jitter=False), **kw)
    return LLMDataGenerator(cfg, http_client=httpx.Client())


def test_llm_generation_retries_malformed_then_reports():
    ps = personas(2)
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        route = mock.post("/chat/completions").mock(side_effect=[
            _chat("Sure! here they are"), _chat(json.dumps(GOOD)),  # persona 0: fixed on the re-ask
            httpx.Response(503), _chat("{}"), _chat("{}"), _chat("{}")])  # persona 1: 503 retried, never ok
        report = _generator(malformed_retries=2).generate(ps)
    assert report.personas_ok == 1 and report.requests == 5 and route.call_count == 6
    assert [e.prompt for e in report.examples if e.label == "aligned"] == GOOD["aligned"]
    assert {e.persona_id for e in report.examples} == {"p0"}
    assert all(e.source == "llm" for e in report.examples)
    retry_msg = json.loads(route.calls[1].request.content)["messages"][-1]["content"]
    assert "not valid JSON" in retry_msg
    first = json.loads(route.calls[0].request.content)["messages"]
    assert "<persona>" in first[1]["content"] and "pottery" in first[1]["content"]
    [failure] = report.failures
    assert failure.persona_id == "p1" and failure.attempts == 3 and failure.replies == ["{}"] * 3
    assert any("missing" in p for p in failure.problems)


def test_llm_generation_auth_error_stops():
    with respx.mock(base_url=BASE) as mock:
        refused = httpx.Response(401, json={"error": {"message": "no"}})
        mock.post("/chat/completions").mock(return_value=refused)
        with pytest.raises(ProviderAuthError):
            _generator().generate(personas(2))


# ----------------------------------------------------------------------------- CLI
def _app() -> typer.Typer:
    app = typer.Typer()
    cli.register(app)

    @app.callback()
    def _main() -> None:
        """Test root."""
    return app


def test_cli_data_train_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cli, "_build_embedder", HashEmbedder)
    pfile = tmp_path / "p.jsonl"
    dump_personas(personas(12), pfile)
    runner, app = CliRunner(), _app()
    res = runner.invoke(app, ["feedback", "data", "--personas", str(pfile), "--out",
                              str(tmp_path / "d.jsonl"),
                              "--source", "synthetic", "--n-aligned", "4", "--n-misaligned", "4",
                              "--n-neutral", "2", "--splits", "0.5,0.25,0.25"])
    assert res.exit_code == 0, res.output
    assert "OFFLINE STAND-IN" in res.output and "wrote 120 examples" in res.output
    check_no_leakage(read_examples(tmp_path / "d.jsonl"))
    out = tmp_path / "model"
    res = runner.invoke(app, ["feedback", "train", "--data", str(tmp_path / "d.jsonl"), "--personas",
                              str(pfile), "--out", str(out), "--max-epochs", "3", "--hidden", "16",
                              "--max-profile-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "epoch   3/3" in res.output and "validation-test accuracy gap" in res.output
    assert {"model.safetensors", "config.json", "loss_curve.png"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert len(meta["history"]) == 3
    assert set(meta["metrics"]) == {"val", "test", "val_test_gap", "no_better_than_constant"}
    weak = meta["metrics"]["no_better_than_constant"]
    for split in ("val", "test"):  # the loud warning appears exactly for the splits that lose to a constant
        m = meta["metrics"][split]
        loses = not (m["mse"] < m["constant_mse"] and m["accuracy"] > m["constant_accuracy"])
        assert (split in weak) == loses
        assert (f"WARNING: on the {split} split the model is NO BETTER" in res.output) == loses
    res = runner.invoke(app, ["feedback", "eval", "--model", str(out), "--data", str(tmp_path / "d.jsonl"),
                              "--personas", str(pfile), "--split", "all", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc) == {"train", "val", "test", "val_test_gap", "no_better_than_constant"}
    assert doc["test"]["accuracy"] == pytest.approx(meta["metrics"]["test"]["accuracy"])


def test_cli_data_llm_reports_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cli, "_build_generator",
                        lambda cfg: LLMDataGenerator(cfg, http_client=httpx.Client()))
    pfile = tmp_path / "p.jsonl"
    dump_personas(personas(2), pfile)
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(side_effect=[_chat(json.dumps(GOOD)), _chat("oops")])
        res = CliRunner().invoke(_app(), [
            "feedback", "data", "--personas", str(pfile), "--out", str(tmp_path / "d.jsonl"),
            "--base-url", BASE, "--api-key", "sk-test", "--model", "m", "--n-aligned", "2",
            "--n-misaligned", "2", "--n-neutral", "1", "--retries", "0", "--strict"])
    assert res.exit_code == 1
    assert "wrote 5 examples for 1 persona(s)" in res.output
    failures = [json.loads(x) for x in (tmp_path / "d.failures.jsonl").read_text().splitlines()]
    assert failures[0]["persona_id"] == "p1" and failures[0]["replies"] == ["oops"]


def test_cli_data_exits_3_when_nothing_is_produced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cli, "_build_generator",
                        lambda cfg: LLMDataGenerator(cfg, http_client=httpx.Client()))
    pfile = tmp_path / "p.jsonl"
    dump_personas(personas(1), pfile)
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(side_effect=[_chat("oops")])
        res = CliRunner().invoke(_app(), [
            "feedback", "data", "--personas", str(pfile), "--out", str(tmp_path / "d.jsonl"),
            "--base-url", BASE, "--api-key", "sk-test", "--model", "m", "--retries", "0"])
    assert res.exit_code == 3 and "no labelled example was produced" in res.output
    assert not (tmp_path / "d.jsonl").exists()


def test_beats_constant_is_strict() -> None:
    t = np.array([0.1, 0.5, 0.9, 0.2])
    assert feedback_metrics(t, t).beats_constant
    assert not feedback_metrics(np.full(4, t.mean()), t).beats_constant  # the constant itself does not


def test_cli_eval_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cli, "_build_embedder", HashEmbedder)
    res = CliRunner().invoke(_app(), ["feedback", "eval", "--model", str(tmp_path), "--data", "x",
                                      "--personas", "y"])
    assert res.exit_code == 1 and "not a feedback model" in res.output
