"""Report statistics against scipy, the statistics module, naive loops and hand-worked examples."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from vptt.core.errors import ConfigError
from vptt.evaluators.stats import (
    average_ranks,
    cohens_d,
    kendalls_w,
    mean,
    spearman_rho,
    summarize_methods,
    win_rates,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_mean(rng: np.random.Generator) -> None:
    x = rng.normal(size=50)
    assert mean(x) == pytest.approx(statistics.fmean(x.tolist()), abs=1e-14)
    with pytest.raises(ConfigError):
        mean([])
    with pytest.raises(ConfigError):
        mean([1.0, float("nan")])


def test_win_rates_hand_worked_with_ties() -> None:
    scores = [[0.5, 0.7, 0.7],  # B and C tie: half each
              [0.9, 0.1, 0.2],  # A
              [0.3, 0.3, 0.3]]  # three-way tie: a third each
    expected = np.array([1 + 1 / 3, 0.5 + 1 / 3, 0.5 + 1 / 3]) / 3
    np.testing.assert_allclose(win_rates(scores), expected)
    np.testing.assert_allclose(win_rates([[0.50, 0.505]], atol=0.01), [0.5, 0.5])


def test_win_rates_match_naive_loop(rng: np.random.Generator) -> None:
    s = rng.integers(0, 4, size=(200, 5)).astype(float)  # many ties
    wins = np.zeros(5)
    for row in s:
        best = [j for j in range(5) if row[j] == max(row)]
        for j in best:
            wins[j] += 1 / len(best)
    np.testing.assert_allclose(win_rates(s), wins / 200)
    assert win_rates(s).sum() == pytest.approx(1.0)


def test_cohens_d_formula(rng: np.random.Generator) -> None:
    a, b = rng.normal(1.0, 2.0, size=40), rng.normal(0.0, 1.0, size=25)
    s_pooled = math.sqrt((39 * statistics.variance(a.tolist()) + 24 * statistics.variance(b.tolist())) / 63)
    expected = abs(statistics.fmean(a.tolist()) - statistics.fmean(b.tolist())) / s_pooled
    assert cohens_d(a, b) == pytest.approx(expected, rel=1e-12)
    assert cohens_d(b, a) == pytest.approx(expected, rel=1e-12)
    # hand-worked: means 2 and 4, sample variances 1 and 1 -> s_pooled = 1, d = 2
    assert cohens_d([1, 2, 3], [3, 4, 5]) == 2.0
    assert cohens_d([1, 1], [1, 1]) == 0.0 and cohens_d([1, 1], [2, 2]) == math.inf
    with pytest.raises(ConfigError):
        cohens_d([1.0], [2.0])


def test_average_ranks_and_spearman_against_scipy(rng: np.random.Generator) -> None:
    for _ in range(5):
        x, y = rng.integers(0, 6, size=30).astype(float), rng.normal(size=30)
        y[:10] = x[:10]  # correlated part, ties in both
        np.testing.assert_allclose(average_ranks(x), sps.rankdata(x))
        assert spearman_rho(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)
    assert spearman_rho([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman_rho([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ConfigError):
        spearman_rho([1, 2], [1, 2, 3])


def test_kendalls_w_hand_worked() -> None:
    assert kendalls_w([[1, 2, 3, 4]] * 3) == pytest.approx(1.0)
    assert kendalls_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)
    # 3 raters, 3 items: rank sums (4, 6, 8), mean 6, S = 8; W = 12 * 8 / (9 * 24) = 4/9
    assert kendalls_w([[1, 2, 3], [2, 1, 3], [1, 3, 2]]) == pytest.approx(4 / 9)
    # ties: rater 2 ties items 1-2 -> ranks (1.5, 1.5, 3); sums (2.5, 3.5, 6), S = 6.5
    # T = 2^3 - 2 = 6: corrected W = 12 * 6.5 / (4 * 24 - 2 * 6) = 78 / 84; uncorrected 78 / 96
    assert kendalls_w([[1, 2, 3], [5, 5, 9]]) == pytest.approx(78 / 84)
    assert kendalls_w([[1, 2, 3], [5, 5, 9]], tie_correction=False) == pytest.approx(78 / 96)


def test_kendalls_w_against_friedman_and_mean_spearman(rng: np.random.Generator) -> None:
    ratings = rng.integers(0, 5, size=(6, 8)).astype(float)  # 6 raters, 8 items, with ties
    m, n = ratings.shape
    chi2 = sps.friedmanchisquare(*ratings.T).statistic  # tie-corrected Friedman: chi2 = m (n - 1) W
    assert kendalls_w(ratings) == pytest.approx(chi2 / (m * (n - 1)), rel=1e-12)
    untied = np.argsort(rng.normal(size=(5, 7)), axis=1).astype(float)
    rhos = [sps.spearmanr(a, b).statistic for a, b in itertools.combinations(untied, 2)]
    w = kendalls_w(untied, tie_correction=False)  # no ties: mean pairwise rho = (m W - 1) / (m - 1)
    assert np.mean(rhos) == pytest.approx((5 * w - 1) / 4, abs=1e-12)
    assert kendalls_w(untied) == pytest.approx(w)
    with pytest.raises(ConfigError):
        kendalls_w([[1, 2, 3]])


def test_summarize_methods(rng: np.random.Generator) -> None:
    scores = {"Baseline": rng.normal(0.3, 0.02, 100), "BRAG": rng.normal(0.6, 0.05, 100),
              "VPRAG": rng.normal(0.63, 0.05, 100)}
    rows = {r.name: r for r in summarize_methods(scores, reference="Baseline")}
    assert math.isnan(rows["Baseline"].cohens_d) and rows["VPRAG"].reference == "Baseline"
    assert rows["VPRAG"].cohens_d == pytest.approx(cohens_d(scores["VPRAG"], scores["Baseline"]))
    assert sum(r.win_rate for r in rows.values()) == pytest.approx(1.0)
    assert rows["BRAG"].std == pytest.approx(np.std(scores["BRAG"], ddof=1))
    best = summarize_methods(scores)  # Table 3: d against the best method
    assert {r.reference for r in best} == {"VPRAG"}
    with pytest.raises(ConfigError):
        summarize_methods({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ConfigError):
        summarize_methods(scores, reference="Comb.")
