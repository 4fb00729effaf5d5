"""What the stage needs from an inference backend (LiteRT or ONNX Runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output tensor: its signature as the manifest records it."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "uint8", "float32"
    scale: float = 0.0  # 0 = not quantised
    zero_point: int = 0

    def same_layout(self, other: TensorSpec) -> bool:
        """Shape and dtype equal (quantisation may differ between model versions)."""
        return self.shape == other.shape and self.dtype == other.dtype


class InferenceModel(Protocol):
    backend: str  # what actually runs: "cpu-xnnpack", "vx", "edgetpu", "gpu", "onnx-cuda", …
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Float inputs in (batch first) → float outputs; quantisation is handled inside."""
        ...
