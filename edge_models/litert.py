"""A LiteRT model with int8 quantisation handled for the caller (float in, float out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_models.backend import TensorSpec
from edge_models.boards import AcceleratorSpec
from edge_models.delegates import Attempt, LiteRTApi, open_interpreter
from edge_models.quant import Dequantizer, Quantizer, QuantParams


@dataclass(frozen=True, slots=True)
class _Port:
    index: int
    quant: QuantParams
    spec: TensorSpec


def _port(detail: dict) -> _Port:
    q = QuantParams.from_details(detail)
    spec = TensorSpec(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=q.scale if q.is_quantized else 0.0,
        zero_point=q.zero_point if q.is_quantized else 0,
    )
    return _Port(int(detail["index"]), q, spec)


def order_inputs(ports: list[_Port], names: Sequence[str] | None) -> list[_Port]:
    """Put inputs in the kind's order by name ("level", "rain"); converters reorder them."""
    if not names or len(names) != len(ports):
        return ports
    ordered = []
    for name in names:
        matches = [p for p in ports if p.spec.name == name or f"_{name}:" in p.spec.name + ":"]
        if len(matches) != 1:
            return ports
        ordered.append(matches[0])
    return ordered


class LiteRTModel:
    """One interpreter; not thread-safe (the stage runs it on one worker thread)."""

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 1,
        accelerators: Sequence[AcceleratorSpec] = (),
        variants: Mapping[str, Path] | None = None,
        input_names: Sequence[str] | None = None,
        batch: int = 1,
        api: LiteRTApi | None = None,
    ) -> None:
        opened = open_interpreter(
            Path(path), accelerators, threads, api or LiteRTApi.default(), variants, batch
        )
        self._interp: Any = opened.interpreter
        self.path = opened.model_path
        self.backend: str = opened.backend
        self.attempts: tuple[Attempt, ...] = opened.attempts
        self._in = order_inputs([_port(d) for d in self._interp.get_input_details()], input_names)
        self._out = [_port(d) for d in self._interp.get_output_details()]
        self.inputs = tuple(p.spec for p in self._in)
        self.outputs = tuple(p.spec for p in self._out)
        self._quantizers = [Quantizer(p.quant, p.spec.shape) for p in self._in]
        self._dequantizers = [Dequantizer(p.quant) for p in self._out]
        self._set, self._get = self._interp.set_tensor, self._interp.get_tensor

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if len(inputs) != len(self._in):
            raise ValueError(f"expected {len(self._in)} input(s), got {len(inputs)}")
        for port, quantizer, x in zip(self._in, self._quantizers, inputs, strict=True):
            self._set(port.index, quantizer(x))
        self._interp.invoke()
        return [
            deq(self._get(p.index)) for p, deq in zip(self._out, self._dequantizers, strict=True)
        ]

    def run_raw(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Already-quantised inputs → raw integer outputs (for tests and benchmarks)."""
        for port, x in zip(self._in, inputs, strict=True):
            self._interp.set_tensor(port.index, x)
        self._interp.invoke()
        return [self._interp.get_tensor(p.index) for p in self._out]

    def quant_params(self) -> tuple[list[QuantParams], list[QuantParams]]:
        return [p.quant for p in self._in], [p.quant for p in self._out]
