"""The model-kind protocol shared by the stage, training, tests and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class OutputRecord:
    quantity: str  # appended to the device: "{device}/{quantity}"
    value: float | str
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Inference:
    """One model result, interpreted: the class (if any), an alarm candidate, the records."""

    label: str | None
    alarm: str | None  # an alarm class name when the result is alarm-worthy, else None
    score: float  # the number the alarm decision is taken on (probability or metres)
    records: tuple[OutputRecord, ...] = field(default=())


class ModelKind(Protocol):
    name: str
    channels: tuple[str, ...]  # record quantities that form the window ("" kinds take frames)
    window_samples: int  # samples per channel in one model input
    period_s: float  # seconds between samples of the window
    default_every_s: float  # default seconds between inferences per device
    default_persistence: int  # consecutive alarm results before an event
    labels: tuple[str, ...]  # class names, () for regressors
    input_names: tuple[str, ...]  # model inputs in the order preprocess() returns them
    input_shapes: tuple[tuple[int, ...], ...]  # model input shapes (batch 1)
    output_shapes: tuple[tuple[int, ...], ...]

    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one raw input given to ``submit_frame`` (before preprocessing)."""
        ...

    def preprocess(self, frame: np.ndarray) -> list[np.ndarray]:
        """Raw frame (float) → the model's float inputs (batch dimension included)."""
        ...

    def interpret(
        self, outputs: list[np.ndarray], frame: np.ndarray, threshold: float | None
    ) -> Inference:
        """Dequantised model outputs (batch 1) → an :class:`Inference`."""
        ...


def softmax_top(probs: np.ndarray, labels: tuple[str, ...]) -> tuple[str, float]:
    index = int(np.argmax(probs))
    return labels[index], float(probs[index])
