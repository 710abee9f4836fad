"""Judge calibration: a monotone map from VLM-judge scores to human scores, fitted on a held-out subset.

The paper calibrates its VLM judges "to remove evaluation bias on a small set" (Sec. 4.2.1). Here that is an
isotonic (non-decreasing) regression of the human score of each image (mean over annotators) on the judge's
score of the same image, fitted by the pool-adjacent-violators algorithm (:func:`isotonic_regression`) on the
images of a *calibration subset* of personas and applied to every other image. The map keeps the judge's
order (a monotone map changes Spearman rho only through the ties it creates) and removes its bias: the
calibrated score is in human units, so the mean absolute error to humans drops.

The subset is chosen by persona, deterministically (:func:`calibration_split`): either named explicitly, or
the first ``ceil(fraction * n)`` personas ordered by ``sha256(f"{seed}|{persona_id}")``. A fitted map is a
:class:`JudgeCalibration`, saved as JSON (``save``/``load``) with the persona ids it was fitted on, so
evaluation can hold them apart wherever the map is applied.

Example:
    >>> cal = JudgeCalibration.fit([1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 1.5, 2.0], personas=["p1"])
    >>> cal.apply([2.0, 2.5, 9.0]).tolist()
    [1.0, 1.25, 2.0]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vptt.core.errors import ConfigError
from vptt.evaluators.agreement import mean_absolute_error, pooled_spearman

__all__ = ["FORMAT", "CalibrationMetrics", "JudgeCalibration", "calibration_metrics", "calibration_split",
           "isotonic_regression"]

FORMAT = "vptt-judge-calibration"


# --------------------------------------------------------------------------- pure functions
def isotonic_regression(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                        weights: Sequence[float] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing least-squares fit of ``y`` on ``x`` (pool adjacent violators).

    Equal ``x`` values are pooled first (weighted mean of their ``y``). Returns the sorted distinct ``x``
    values and the fitted value at each; between them the map is linear, outside it is clipped (as
    scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``).
    """
    xs, ys = np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    ws = np.ones_like(xs) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if not (xs.size == ys.size == ws.size) or xs.size == 0:
        raise ConfigError(f"x, y and weights need the same non-zero length, got {xs.size}, {ys.size}, "
                          f"{ws.size}")
    if not all(np.all(np.isfinite(a)) for a in (xs, ys, ws)) or np.any(ws <= 0):
        raise ConfigError("x and y must be finite and weights finite and positive")
    ux, inverse = np.unique(xs, return_inverse=True)
    w = np.bincount(inverse, weights=ws)
    v = np.bincount(inverse, weights=ws * ys) / w
    # blocks: value, weight, how many distinct x they cover
    values, wsum, count = [], [], []
    for vi, wi in zip(v.tolist(), w.tolist()):
        values.append(vi)
        wsum.append(wi)
        count.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            wt = wsum[-2] + wsum[-1]
            merged = (values[-2] * wsum[-2] + values[-1] * wsum[-1]) / wt
            c = count[-2] + count[-1]
            del values[-1], wsum[-1], count[-1]
            values[-1], wsum[-1], count[-1] = merged, wt, c
    fitted = np.repeat(np.array(values), np.array(count))
    return ux, fitted


def calibration_split(persona_ids: Iterable[str], *, fraction: float | None = None,
                      personas: Iterable[str] | None = None, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split personas into (calibration subset, the rest), deterministically.

    Args:
        persona_ids: every persona of the data.
        fraction: share of personas for calibration: the first ``ceil(fraction * n)`` in the order of
            ``sha256(f"{seed}|{persona_id}")`` (independent of input order and of Python's hash seed).
        personas: name the calibration personas instead (each must be in ``persona_ids``).
        seed: varies the hashed order.

    Raises:
        ConfigError: both or neither of ``fraction`` and ``personas``, a fraction outside (0, 1), unknown
            persona names, or a split that leaves either side empty.
    """
    ids = sorted(set(persona_ids))
    if (fraction is None) == (personas is None):
        raise ConfigError("choose the calibration subset by fraction or by naming personas (exactly one)")
    if personas is not None:
        chosen = sorted(set(personas))
        unknown = [p for p in chosen if p not in set(ids)]
        if unknown:
            raise ConfigError(f"calibration persona(s) not in the data: {unknown[:5]}")
    else:
        if not 0.0 < float(fraction) < 1.0:  # type: ignore[arg-type]
            raise ConfigError(f"calibration fraction must be in (0, 1), got {fraction}")
        order = sorted(ids, key=lambda p: hashlib.sha256(f"{seed}|{p}".encode()).hexdigest())
        chosen = sorted(order[:max(1, math.ceil(float(fraction) * len(ids)))])  # type: ignore[arg-type]
    rest = [p for p in ids if p not in set(chosen)]
    if not chosen or not rest:
        raise ConfigError(f"the calibration split of {len(ids)} persona(s) leaves "
                          f"{'no calibration persona' if not chosen else 'nothing to evaluate on'}; "
                          "use more personas or another fraction")
    return chosen, rest


class CalibrationMetrics(BaseModel):
    """Agreement of judge scores with human scores over images: Spearman rho, MAE, bias (mean difference)."""

    n: int
    rho: float
    mae: float
    bias: float


def calibration_metrics(judge: Sequence[float] | np.ndarray,
                        human: Sequence[float] | np.ndarray) -> CalibrationMetrics:
    """Spearman rho, mean absolute error and bias (mean of ``judge - human``) of paired scores."""
    j, h = np.asarray(judge, dtype=np.float64), np.asarray(human, dtype=np.float64)
    if j.size == 0:
        return CalibrationMetrics(n=0, rho=math.nan, mae=math.nan, bias=math.nan)
    return CalibrationMetrics(n=int(j.size), rho=pooled_spearman(j, h), mae=mean_absolute_error(j, h),
                              bias=float((j - h).mean()))


# --------------------------------------------------------------------------- the saved map
class JudgeCalibration(BaseModel):
    """A fitted monotone map from judge scores to human scores, with what it was fitted on.

    Attributes:
        x, y: the map's knots (distinct judge scores, fitted human scores, both non-decreasing); linear
            between knots, clipped outside.
        calibration_personas: persona ids whose images fitted the map (hold them apart when evaluating).
        selection: how those personas were chosen (``{"fraction": .., "seed": ..}`` or ``{"named": true}``).
        judge: the judge the scores came from, when known (e.g. the run manifest's judge name).
        n_images: images (judge score, human mean) the map was fitted on.
        fit_metrics: agreement on the fitting images before and after the map (in-sample).
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["vptt-judge-calibration"] = FORMAT
    version: Literal[1] = 1
    method: Literal["isotonic"] = "isotonic"
    x: list[float] = Field(min_length=1)
    y: list[float] = Field(min_length=1)
    calibration_personas: list[str] = Field(default_factory=list)
    selection: dict[str, Any] = Field(default_factory=dict)
    judge: str | None = None
    n_images: int = 0
    fit_metrics: dict[str, CalibrationMetrics] = Field(default_factory=dict)
    created: str = ""

    @model_validator(mode="after")
    def _check(self) -> JudgeCalibration:
        x, y = np.asarray(self.x), np.asarray(self.y)
        if x.size != y.size:
            raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("x and y must be finite numbers")
        if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0):
            raise ValueError("x must be strictly increasing and y non-decreasing (a monotone map)")
        return self

    @classmethod
    def fit(cls, judge: Sequence[float] | np.ndarray, human: Sequence[float] | np.ndarray, *,
            personas: Sequence[str] = (), selection: dict[str, Any] | None = None,
            judge_name: str | None = None) -> JudgeCalibration:
        """Fit the isotonic map on paired (judge, human) image scores."""
        j, h = np.asarray(judge, dtype=np.float64), np.asarray(human, dtype=np.float64)
        if j.size < 2:
            raise ConfigError("calibration needs at least 2 images with a judge and a human score, "
                              f"got {j.size}")
        kx, ky = isotonic_regression(j, h)
        cal = cls(x=kx.tolist(), y=ky.tolist(), calibration_personas=sorted(set(personas)),
                  selection=dict(selection or {}), judge=judge_name, n_images=int(j.size),
                  created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        cal.fit_metrics = {"before": calibration_metrics(j, h), "after": calibration_metrics(cal.apply(j), h)}
        return cal

    def apply(self, scores: Sequence[float] | np.ndarray | float) -> np.ndarray:
        """Calibrated scores (NaN stays NaN)."""
        s = np.asarray(scores, dtype=np.float64)
        out = np.interp(s, np.asarray(self.x), np.asarray(self.y))
        return np.where(np.isfinite(s), out, np.nan)

    def apply_one(self, score: float | None) -> float | None:
        """One calibrated score; None stays None."""
        return None if score is None else float(self.apply(float(score)))

    def holds_out(self, persona_id: str) -> bool:
        """True when ``persona_id`` fitted this map (keep it out of evaluation)."""
        return persona_id in set(self.calibration_personas)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the map as JSON (atomically) and return the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> JudgeCalibration:
        """Read a map written by :meth:`save`.

        Raises:
            ConfigError: missing file, not JSON, or not a judge calibration (naming the file and field).
        """
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"judge calibration file not found: {p}; fit one with `vptt validate ... "
                              "--calibration-fraction F` (it writes judge_calibration.json)")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{p}: not a judge calibration (expected \"format\": \"{FORMAT}\")")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{p}: invalid judge calibration: {detail}") from None
