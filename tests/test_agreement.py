"""Agreement statistics and judge calibration, each checked against an independent reference.

Kendall's W against a naive formula over scipy ranks and against scipy's Friedman statistic; Top-2
agreement against a plain loop; bootstrap intervals against a naive re-implementation; isotonic regression
against scikit-learn; calibration on synthetic judges with known biases.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import friedmanchisquare, rankdata, spearmanr
from sklearn.isotonic import IsotonicRegression

from vptt import ConfigError
from vptt.evaluators.agreement import (
    bootstrap_ci,
    cluster_bootstrap_ci,
    item_kendalls_w,
    mean_sd,
    top_k_agreement,
    top_k_hits,
)
from vptt.evaluators.calibration import (
    JudgeCalibration,
    calibration_metrics,
    calibration_split,
    isotonic_regression,
)

ROOT = Path(__file__).resolve().parents[1]


def naive_w(mat: np.ndarray) -> float:
    """Kendall's W from its textbook definition, ranks by scipy, tie-corrected."""
    m, n = mat.shape
    ranks = np.array([rankdata(row) for row in mat])
    sums = ranks.sum(axis=0)
    s = ((sums - sums.mean()) ** 2).sum()
    ties = sum(((c ** 3) - c).sum() for c in (np.unique(row, return_counts=True)[1] for row in mat))
    return 12 * s / (m ** 2 * (n ** 3 - n) - m * ties)


def test_kendalls_w_by_construction_and_against_references() -> None:
    agree = np.array([[1.0, 2.0, 3.0, 4.0]] * 3)  # three annotators, same order: W = 1
    opposite = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])  # rank sums all equal: W = 0
    one_rater = np.array([[1.0, 2.0, 3.0, 4.0]])
    flat = np.full((3, 4), 2.5)  # no ranking information
    w = item_kendalls_w([agree, opposite, one_rater, flat])
    assert w[:2] == pytest.approx([1.0, 0.0]) and np.isnan(w[2]) and np.isnan(w[3])
    mean, sd, n = mean_sd(w)
    assert (mean, n) == (0.5, 2) and sd == pytest.approx(np.sqrt(0.5))  # sd with ddof=1
    rng = np.random.default_rng(3)
    blocks = [rng.integers(0, 11, (int(rng.integers(2, 7)), 4)) / 2 for _ in range(40)]  # 0.5 grid: ties
    got = item_kendalls_w(blocks)
    for b, g in zip(blocks, got):
        if np.isnan(g):
            continue
        assert g == pytest.approx(naive_w(b))
        m, k = b.shape  # Friedman's tie-corrected chi2 = m (k - 1) W
        if not np.all(b == b[:, :1]):
            assert g == pytest.approx(friedmanchisquare(*b.T).statistic / (m * (k - 1)))


def naive_top2(pred: np.ndarray, ref: np.ndarray) -> float:
    total = 0.0
    for p, r in zip(pred, ref):
        best = [j for j in range(len(p)) if p[j] == max(p)]
        second = sorted(r, reverse=True)[1]
        total += sum(1 for j in best if r[j] >= second) / len(best)
    return total / len(pred)


def test_top2_agreement_by_hand_and_against_a_loop() -> None:
    pred = np.array([[0.1, 0.9, 0.5, 0.2],   # best 1; human top 2 = {2, 1} -> hit
                     [0.9, 0.1, 0.5, 0.2],   # best 0; human top 2 = {2, 1} -> miss
                     [0.5, 0.5, 0.1, 0.0],   # best {0, 1} tie; human top 2 = {1, 3} -> half
                     [0.3, 0.2, 0.9, 0.1]])  # best 2; human 4, 3, 3, 1: 2nd place tied -> {0, 1, 2} -> hit
    ref = np.array([[1.0, 3.0, 4.0, 2.0], [1.0, 3.0, 4.0, 2.0], [0.0, 5.0, 1.0, 2.0], [4.0, 3.0, 3.0, 1.0]])
    assert top_k_hits(pred, ref, k=2).tolist() == [1.0, 0.0, 0.5, 1.0]
    assert top_k_agreement(pred, ref) == 0.625
    assert top_k_agreement(pred, ref, k=1) == 0.125  # only the tie of item 3 half-matches the human best
    rng = np.random.default_rng(5)
    p, r = rng.integers(0, 6, (200, 4)) / 1.0, rng.integers(0, 11, (200, 4)) / 2
    assert top_k_agreement(p, r) == pytest.approx(naive_top2(p, r))
    with pytest.raises(ConfigError):
        top_k_hits(p, r[:, :3])


def test_bootstrap_intervals_are_seeded_and_equal_a_naive_loop() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(1.0, 1.0, 80)
    ci = bootstrap_ci(lambda idx: float(v[idx].mean()), v.size, n_boot=300, seed=4)
    assert ci == bootstrap_ci(lambda idx: float(v[idx].mean()), v.size, n_boot=300, seed=4)
    draws = np.random.default_rng(4)
    means = [v[draws.integers(0, v.size, v.size)].mean() for _ in range(300)]
    assert ci == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert ci[0] < v.mean() < ci[1]
    # clusters: items of 4 images; resampling whole items, pooled scipy Spearman
    items = np.repeat(np.arange(30), 4)
    x = rng.normal(size=120)
    y = x + rng.normal(scale=1.0, size=120)
    got = cluster_bootstrap_ci(x, y, items.tolist(), n_boot=200, seed=9)
    draws = np.random.default_rng(9)
    rhos = []
    for _ in range(200):
        take = np.concatenate([np.flatnonzero(items == i) for i in draws.integers(0, 30, 30)])
        rhos.append(spearmanr(x[take], y[take]).statistic)
    assert got == pytest.approx(tuple(np.quantile(rhos, [0.025, 0.975])))


def test_isotonic_regression_equals_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 11, 300) / 2
    y = np.clip(0.6 * x + rng.normal(0, 1, 300), 0, 5)
    w = rng.uniform(0.5, 2.0, 300)
    kx, ky = isotonic_regression(x, y, w)
    assert np.all(np.diff(ky) >= 0) and np.array_equal(kx, np.unique(x))
    ref = IsotonicRegression(out_of_bounds="clip").fit(x, y, sample_weight=w)
    grid = np.linspace(-1, 6, 141)
    np.testing.assert_allclose(np.interp(grid, kx, ky), ref.predict(grid), atol=1e-12)
    with pytest.raises(ConfigError):
        isotonic_regression([1.0], [1.0, 2.0])


def _synthetic(judge_of, n_personas: int = 100, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    pids = np.repeat([f"p{i:03d}" for i in range(n_personas)], 4)
    human = rng.uniform(0.5, 4.5, pids.size)
    judge = np.clip(np.round(2 * judge_of(human, rng)) / 2, 0, 5)  # a real judge answers in 0.5 steps
    return pids, human, judge


@pytest.mark.parametrize("name, judge_of", [
    ("additive +1.2", lambda h, rng: h + 1.2 + rng.normal(0, 0.25, h.size)),
    ("compressing", lambda h, rng: 5 * np.sqrt(h / 5) + rng.normal(0, 0.15, h.size)),
    ("harsh x0.6", lambda h, rng: 0.6 * h + rng.normal(0, 0.2, h.size)),
])
def test_calibration_removes_synthetic_bias_on_held_out_personas(name, judge_of) -> None:
    pids, human, judge = _synthetic(judge_of)
    cal_ids, rest = calibration_split(pids.tolist(), fraction=0.4, seed=1)
    fit = np.isin(pids, cal_ids)
    cal = JudgeCalibration.fit(judge[fit], human[fit], personas=cal_ids)
    before = calibration_metrics(judge[~fit], human[~fit])
    after = calibration_metrics(cal.apply(judge[~fit]), human[~fit])
    assert abs(before.bias) > 0.5, name  # the judge really is biased
    # 160 fitting images: the bias left is sampling error (sd ~0.035 over seeds), 0.15 is ~4 sd
    assert abs(after.bias) < 0.15, (name, after)
    assert after.mae < 0.5 * before.mae, (name, before, after)
    assert after.rho == pytest.approx(before.rho, abs=0.03)  # a monotone map keeps the order
    assert set(cal.calibration_personas) == set(cal_ids) and not set(cal_ids) & set(rest)


def test_calibration_file_round_trip_and_bad_files(tmp_path) -> None:
    cal = JudgeCalibration.fit([1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 1.0, 3.0], personas=["b", "a"],
                               selection={"fraction": 0.2, "seed": 0})
    assert cal.x == [1.0, 2.0, 3.0, 4.0] and cal.y == [0.5, 1.25, 1.25, 3.0]  # 1.5 and 1.0 pooled
    path = cal.save(tmp_path / "cal.json")
    back = JudgeCalibration.load(path)
    assert back == cal and back.calibration_personas == ["a", "b"] and back.holds_out("a")
    assert back.apply([0.0, 1.5, np.nan, 9.0]).tolist()[:2] == [0.5, 0.875]
    assert back.apply_one(None) is None and back.apply_one(9.0) == 3.0
    bad = {"x": [1.0, 2.0], "y": [2.0, 1.0]}
    for name, text, match in [("missing.json", None, "not found"), ("notjson.json", "{", "not JSON"),
                              ("other.json", json.dumps({"format": "x"}), "not a judge calibration"),
                              ("decreasing.json", json.dumps({"format": "vptt-judge-calibration", **bad}),
                               "monotone"),
                              ("extra.json", json.dumps({"format": "vptt-judge-calibration", "x": [1.0],
                                                         "y": [1.0], "slope": 2}), "slope")]:
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=match) as info:
            JudgeCalibration.load(tmp_path / name)
        assert name in str(info.value)


def test_calibration_split_is_deterministic_and_validated() -> None:
    ids = [f"p{i}" for i in range(20)]
    a = calibration_split(ids, fraction=0.25, seed=3)
    assert a == calibration_split(list(reversed(ids)) + ids, fraction=0.25, seed=3)
    assert len(a[0]) == 5 and sorted(a[0] + a[1]) == sorted(ids)
    assert calibration_split(ids, fraction=0.25, seed=4) != a
    code = ("from vptt.evaluators.calibration import calibration_split as f; "
            "print(f([f'p{i}' for i in range(20)], fraction=0.25, seed=3)[0])")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": s, "PATH": ""}).stdout for s in ("1", "2")}
    assert outs == {str(a[0]) + "\n"}
    assert calibration_split(ids, personas=["p3", "p1"]) == (["p1", "p3"], sorted(set(ids) - {"p1", "p3"}))
    for kwargs, match in [({}, "exactly one"), ({"fraction": 0.2, "personas": ["p1"]}, "exactly one"),
                          ({"fraction": 1.0}, r"\(0, 1\)"), ({"personas": ["zz"]}, "not in the data"),
                          ({"personas": ids}, "nothing to evaluate")]:
        with pytest.raises(ConfigError, match=match):
            calibration_split(ids, **kwargs)
