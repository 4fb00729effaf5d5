"""ONNX Runtime backend for the same models exported to ONNX (float32 graphs).

Providers are requested in the board's order (TensorRT, CUDA, …) and filtered by what this
build of onnxruntime offers; the CPU provider is always appended. ``backend`` names the
provider that actually got the session (ONNX Runtime can drop a provider whose libraries do
not load, so we read it back from the session rather than trusting the request).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edge_models.backend import TensorSpec
from edge_models.boards import OnnxProvider

log = logging.getLogger(__name__)

_SHORT = {
    "TensorrtExecutionProvider": "onnx-tensorrt",
    "CUDAExecutionProvider": "onnx-cuda",
    "OpenVINOExecutionProvider": "onnx-openvino",
    "CPUExecutionProvider": "onnx-cpu",
}
_DTYPES = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


def gpu_providers_available(ort: ModuleType | None = None) -> list[str]:
    """GPU execution providers this onnxruntime build offers (empty on a CPU-only machine)."""
    try:
        ort = ort or _import_ort()
    except ImportError:
        return []
    gpu = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    return [p for p in ort.get_available_providers() if p in gpu]


def _import_ort() -> ModuleType:
    import onnxruntime

    return onnxruntime


class OnnxModel:
    def __init__(
        self,
        path: Path,
        *,
        providers: Sequence[OnnxProvider] = (),
        threads: int = 1,
        input_names: Sequence[str] | None = None,
        ort: ModuleType | None = None,
    ) -> None:
        ort = ort or _import_ort()
        available = set(ort.get_available_providers())
        chosen: list[tuple[str, dict[str, Any]]] = []
        self.unavailable: list[str] = []
        for p in providers:
            if p.name in available:
                chosen.append((p.name, {k: str(v) for k, v in p.options.items()}))
            else:
                self.unavailable.append(p.name)
        if not any(name == "CPUExecutionProvider" for name, _ in chosen):
            chosen.append(("CPUExecutionProvider", {}))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=[name for name, _ in chosen],
            provider_options=[opts for _, opts in chosen],
        )
        active = self._session.get_providers()
        self.providers: list[str] = list(active)
        self.backend = _SHORT.get(active[0], active[0])
        if self.unavailable:
            log.warning(
                "%s: running on %s; unavailable providers: %s",
                Path(path).name,
                self.backend,
                ", ".join(self.unavailable),
            )
        self.path = Path(path)
        ins = list(self._session.get_inputs())
        if input_names and len(input_names) == len(ins):
            by_name = {i.name: i for i in ins}
            if all(n in by_name for n in input_names):
                ins = [by_name[n] for n in input_names]
        self._input_names = [i.name for i in ins]
        self.inputs = tuple(_spec(i) for i in ins)
        self.outputs = tuple(_spec(o) for o in self._session.get_outputs())

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        feed = {
            name: np.asarray(x, np.float32).reshape((-1, *spec.shape[1:]))
            for name, x, spec in zip(self._input_names, inputs, self.inputs, strict=True)
        }
        return [np.asarray(o, np.float32) for o in self._session.run(None, feed)]


def _spec(node: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else 1 for d in node.shape)
    return TensorSpec(node.name, shape, _DTYPES.get(node.type, node.type))
