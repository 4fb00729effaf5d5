"""Thermal frames (24×32, °C) → background / warm / hotspot / fire."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_models.kinds.base import Inference, OutputRecord

ROWS, COLS = 24, 32
LABELS = ("background", "warm", "hotspot", "fire")
ALARMS = frozenset({"hotspot", "fire"})


@dataclass(frozen=True)
class ThermalKind:
    name: str = "thermal"
    channels: tuple[str, ...] = ()
    window_samples: int = 1
    period_s: float = 0.0
    default_every_s: float = 0.0  # every frame
    default_persistence: int = 2  # two frames in a row (EN 54-style confirmation)
    labels: tuple[str, ...] = LABELS
    input_names: tuple[str, ...] = ("frame",)
    input_shapes: tuple[tuple[int, ...], ...] = ((1, ROWS, COLS, 1),)
    output_shapes: tuple[tuple[int, ...], ...] = ((1, len(LABELS)),)

    def frame_shape(self) -> tuple[int, ...]:
        return (ROWS, COLS)

    def preprocess(self, frame: np.ndarray) -> list[np.ndarray]:
        # The network takes apparent temperatures as they are: quantisation is the only step.
        return [np.asarray(frame, np.float32).reshape(1, ROWS, COLS, 1)]

    def interpret(
        self, outputs: list[np.ndarray], frame: np.ndarray, threshold: float | None
    ) -> Inference:
        probs = np.asarray(outputs[0]).reshape(-1)
        index = int(np.argmax(probs))
        label = LABELS[index]
        alarm_score = float(max(probs[2], probs[3]))
        limit = 0.5 if threshold is None else threshold
        alarm = None
        if probs[3] >= limit:
            alarm = "fire"
        elif probs[2] >= limit:
            alarm = "hotspot"
        records = (
            OutputRecord("fire_prob", round(float(probs[3]), 4), "/"),
            OutputRecord("hotspot_prob", round(float(probs[2]), 4), "/"),
            OutputRecord("thermal_class", label),
        )
        return Inference(label, alarm, alarm_score, records)
