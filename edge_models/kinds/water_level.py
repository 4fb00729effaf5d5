"""Level and rain history (36 steps of 5 min) → the level 30 minutes ahead."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_models.kinds.base import Inference, OutputRecord

HISTORY = 36
STEP_S = 300.0
HORIZON_S = 1800.0
CHANNELS = ("level", "rain")
LEVEL_CLIP = 2.0  # m of change over the 3-h history
RAIN_CLIP = 150.0  # mm/h


def preprocess_history(level: np.ndarray, rain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Level relative to the latest sample (m), rain intensity (mm/h), both clipped."""
    level = np.asarray(level, np.float32)
    rel = np.clip(level - level[..., -1:], -LEVEL_CLIP, LEVEL_CLIP)
    return rel, np.clip(np.asarray(rain, np.float32), 0.0, RAIN_CLIP)


@dataclass(frozen=True)
class WaterLevelKind:
    name: str = "water_level"
    channels: tuple[str, ...] = CHANNELS
    window_samples: int = HISTORY
    period_s: float = STEP_S
    default_every_s: float = STEP_S
    default_persistence: int = 1
    labels: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ("level", "rain")
    input_shapes: tuple[tuple[int, ...], ...] = ((1, HISTORY), (1, HISTORY))
    output_shapes: tuple[tuple[int, ...], ...] = ((1, 1),)

    def frame_shape(self) -> tuple[int, ...]:
        return (HISTORY, len(CHANNELS))

    def preprocess(self, frame: np.ndarray) -> list[np.ndarray]:
        frame = np.asarray(frame, np.float32)
        rel, rain = preprocess_history(frame[:, 0], frame[:, 1])
        return [rel.reshape(1, HISTORY), rain.reshape(1, HISTORY)]

    def interpret(
        self, outputs: list[np.ndarray], frame: np.ndarray, threshold: float | None
    ) -> Inference:
        rise = float(np.asarray(outputs[0]).reshape(-1)[0])
        forecast = float(frame[-1, 0]) + rise
        alarm = "rise" if threshold is not None and rise >= threshold else None
        records = (
            OutputRecord("level_30min", round(forecast, 4), "m"),
            OutputRecord("level_rise_30min", round(rise, 4), "m"),
        )
        return Inference(None, alarm, rise, records)
