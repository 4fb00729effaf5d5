"""Held-out evaluation of the edge models against simple non-ML baselines (numpy only).

Baselines are compared at the *same false-alarm rate* as the model: the baseline's threshold
is set so that it raises no more false alarms on the held-out negatives than the model did,
then detection rates are compared. Used by training (numbers for the model cards and the
manifest), by the tests (on a small regenerated set) and by nothing at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_models.kinds import KINDS
from edge_models.kinds.elevator import preprocess_window
from edge_models.synth.elevator import ElevatorSet
from edge_models.synth.thermal import ThermalSet
from edge_models.synth.water_level import HORIZON, WaterSet

Runner = Callable[..., list[np.ndarray]]  # float inputs (batch) → float outputs (batch)

RISE_ALARM_M = 0.10  # water: "the level rises ≥ 10 cm within 30 min"


@dataclass(frozen=True, slots=True)
class AlarmComparison:
    positives: int
    negatives: int
    model_far: float  # false-alarm rate on negatives
    model_tpr: float  # detection rate on positives
    baseline_threshold: float
    baseline_far: float
    baseline_tpr: float

    @property
    def model_beats_baseline(self) -> bool:
        return self.model_tpr > self.baseline_tpr and self.model_far <= self.baseline_far + 1e-12


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y_true.astype(int), y_pred.astype(int)), 1)
    return cm


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    denom = precision + recall
    return np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)


def compare_at_matched_far(
    positive: np.ndarray, model_alarm: np.ndarray, baseline_score: np.ndarray
) -> AlarmComparison:
    """Baseline alarms when ``score ≥ threshold``, threshold chosen for FAR ≤ the model's."""
    positive = positive.astype(bool)
    neg_scores = np.sort(baseline_score[~positive])
    n_neg, n_pos = int((~positive).sum()), int(positive.sum())
    model_far = float(model_alarm[~positive].mean()) if n_neg else 0.0
    model_tpr = float(model_alarm[positive].mean()) if n_pos else 0.0
    allowed = int(np.floor(model_far * n_neg + 1e-9))
    if n_neg == 0:
        threshold = -np.inf
    elif allowed >= n_neg:
        threshold = float(neg_scores[0])
    else:  # strictly above the (allowed+1)-th largest negative score
        threshold = float(np.nextafter(neg_scores[n_neg - allowed - 1], np.inf))
    base_alarm = baseline_score >= threshold
    return AlarmComparison(
        n_pos,
        n_neg,
        model_far,
        model_tpr,
        threshold,
        float(base_alarm[~positive].mean()) if n_neg else 0.0,
        float(base_alarm[positive].mean()) if n_pos else 0.0,
    )


def _batched(run: Runner, inputs: list[np.ndarray], batch: int = 1) -> list[np.ndarray]:
    n = len(inputs[0])
    outs: list[list[np.ndarray]] = []
    for i in range(0, n, batch):
        outs.append(run(*[x[i : i + batch] for x in inputs]))
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


# --- thermal ----------------------------------------------------------------------------


def thermal_baseline_score(frames: np.ndarray, rank: int = 1) -> np.ndarray:
    """Max-temperature threshold detector: the score is the ``rank``-th hottest pixel (°C).

    ``rank=2`` ignores one stuck pixel, the cheapest robustness a threshold rule can have.
    """
    flat = frames.reshape(len(frames), -1)
    return np.partition(flat, flat.shape[1] - rank, axis=1)[:, flat.shape[1] - rank]


def evaluate_thermal(run: Runner, data: ThermalSet, batch: int = 1) -> dict[str, Any]:
    kind = KINDS["thermal"]
    x = data.frames.reshape(-1, 24, 32, 1).astype(np.float32)
    probs = _batched(run, [x], batch)[0].reshape(len(x), -1)
    pred = probs.argmax(1)
    cm = confusion(data.labels, pred, len(kind.labels))
    f1 = f1_per_class(cm)
    alarm_true = data.labels >= 2
    model_alarm = np.maximum(probs[:, 2], probs[:, 3]) >= 0.5
    fire_true = data.labels == 3
    fire_alarm = probs[:, 3] >= 0.5
    score = thermal_baseline_score(data.frames)
    return {
        "n": len(x),
        "labels": list(kind.labels),
        "confusion": cm.tolist(),
        "accuracy": float((pred == data.labels).mean()),
        "f1": dict(zip(kind.labels, map(float, f1), strict=True)),
        "macro_f1": float(f1.mean()),
        "alarm_vs_max_temp": asdict(compare_at_matched_far(alarm_true, model_alarm, score)),
        "alarm_vs_2nd_max_temp": asdict(
            compare_at_matched_far(alarm_true, model_alarm, thermal_baseline_score(data.frames, 2))
        ),
        "fire_vs_max_temp": asdict(compare_at_matched_far(fire_true, fire_alarm, score)),
        "fire_vs_2nd_max_temp": asdict(
            compare_at_matched_far(fire_true, fire_alarm, thermal_baseline_score(data.frames, 2))
        ),
        "probs": probs,
    }


# --- elevator ---------------------------------------------------------------------------


def rms_vibration(windows: np.ndarray, smooth: int = 25) -> np.ndarray:
    """Baseline score: RMS of the three axes after removing a 0.5-s moving average."""
    acc = windows[..., :3].astype(np.float64)
    kernel = np.ones(smooth) / smooth
    trend = np.apply_along_axis(lambda s: np.convolve(s, kernel, mode="same"), 1, acc)
    return np.sqrt(((acc - trend)[:, smooth // 2 : -(smooth // 2)] ** 2).sum(-1).mean(-1))


def evaluate_elevator(run: Runner, data: ElevatorSet, batch: int = 1) -> dict[str, Any]:
    kind = KINDS["elevator"]
    x = preprocess_window(data.windows)
    probs = _batched(run, [x], batch)[0].reshape(len(x), -1)
    pred = probs.argmax(1)
    cm = confusion(data.labels, pred, len(kind.labels))
    f1 = f1_per_class(cm)
    anomaly = 1.0 - probs[:, 0]
    positive = data.labels != 0
    return {
        "n": len(x),
        "labels": list(kind.labels),
        "confusion": cm.tolist(),
        "accuracy": float((pred == data.labels).mean()),
        "f1": dict(zip(kind.labels, map(float, f1), strict=True)),
        "macro_f1": float(f1.mean()),
        "anomaly_vs_rms": asdict(
            compare_at_matched_far(positive, anomaly >= 0.5, rms_vibration(data.windows))
        ),
        "probs": probs,
    }


# --- water level ------------------------------------------------------------------------


def linear_extrapolation(level: np.ndarray, fit: int = 6, horizon: int = HORIZON) -> np.ndarray:
    """Baseline forecast: least-squares slope over the last ``fit`` samples, extended."""
    t = np.arange(fit, dtype=np.float64) - (fit - 1)
    y = level[:, -fit:].astype(np.float64)
    slope = ((t - t.mean()) * (y - y.mean(1, keepdims=True))).sum(1) / ((t - t.mean()) ** 2).sum()
    intercept = y.mean(1) - slope * t.mean()  # value of the fit at the last sample
    return intercept + slope * horizon


def evaluate_water(run: Runner, data: WaterSet, batch: int = 1) -> dict[str, Any]:
    from edge_models.kinds.water_level import preprocess_history

    rel, rain = preprocess_history(data.level, data.rain)
    rise = _batched(run, [rel, rain], batch)[0].reshape(-1)
    now = data.level[:, -1]
    forecast = now + rise
    linear = linear_extrapolation(data.level)
    err = {
        "model": np.abs(forecast - data.target),
        "linear_extrapolation": np.abs(linear - data.target),
        "persistence": np.abs(now - data.target),
    }
    actual_rise = data.target - now
    wet = (data.rain.max(1) > 0) | (np.abs(actual_rise) > 0.02)
    rising = actual_rise >= RISE_ALARM_M
    return {
        "n": len(now),
        "n_wet": int(wet.sum()),
        "mae_m": {k: float(v.mean()) for k, v in err.items()},
        "mae_wet_m": {k: float(v[wet].mean()) for k, v in err.items()},
        "p95_abs_err_m": {k: float(np.percentile(v, 95)) for k, v in err.items()},
        "rise_alarm_vs_linear": asdict(
            compare_at_matched_far(rising, rise >= RISE_ALARM_M, linear - now)
        ),
        "forecast": forecast,
    }


def strip_arrays(result: dict[str, Any]) -> dict[str, Any]:
    """Drop per-sample arrays (for JSON)."""
    return {k: v for k, v in result.items() if not isinstance(v, np.ndarray)}
