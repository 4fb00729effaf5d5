"""Delegate selection and CPU fallback.

NPUs, Edge TPUs and GPUs cannot exist on a CI machine, so the real LiteRT is exercised up to
the delegate-loading boundary (a library that does not exist → CPU, and it says so), and a
fake LiteRT API stands in for what happens past it (a delegate that loads, one that rejects
the model, XNNPACK failing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_models.boards import AcceleratorSpec
from edge_models.delegates import CPU_REFERENCE, CPU_XNNPACK, LiteRTApi
from edge_models.litert import LiteRTModel
from edge_models.manifest import default_models_dir
from edge_models.onnx_backend import gpu_providers_available

pytest.importorskip("ai_edge_litert")

# LiteRT's Delegate.__del__ touches an attribute that a failed load never set; harmless.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

THERMAL = default_models_dir() / "thermal.tflite"


def test_missing_delegate_library_runs_on_cpu_and_says_so(caplog):
    caplog.set_level(logging.WARNING, logger="edge_models.delegates")
    accel = AcceleratorSpec(kind="vx", library="/nonexistent/libvx_delegate.so")
    model = LiteRTModel(THERMAL, accelerators=[accel])
    assert model.backend == CPU_XNNPACK
    assert [(a.backend, a.ok) for a in model.attempts] == [("vx", False), (CPU_XNNPACK, True)]
    assert "libvx_delegate.so" in model.attempts[0].detail
    assert "running on cpu-xnnpack" in caplog.text and "vx" in caplog.text
    probs = model.run(np.full((1, 24, 32, 1), 20.0, np.float32))[0]
    assert probs.shape == (1, 4) and abs(float(probs.sum()) - 1.0) < 0.05


def test_every_accelerator_kind_falls_back_in_order():
    accels = [
        AcceleratorSpec(kind="edgetpu"),  # no _edgetpu variant shipped
        AcceleratorSpec(kind="gpu", library="libdoes_not_exist_gpu.so"),
        AcceleratorSpec(kind="external", library="libnot_here.so"),
    ]
    model = LiteRTModel(THERMAL, accelerators=accels)
    assert model.backend == CPU_XNNPACK
    failed = [(a.backend, a.ok) for a in model.attempts[:3]]
    assert failed == [("edgetpu", False), ("gpu", False), ("external", False)]
    assert "_edgetpu" in model.attempts[0].detail


# --- past the loading boundary: a fake LiteRT ----------------------------------------------


@dataclass
class FakeApi:
    """Real interpreter underneath; delegates and resolver failures are scripted."""

    loadable: set[str] = field(default_factory=set)
    reject_with_delegate: bool = False
    xnnpack_fails: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)

    def api(self) -> LiteRTApi:
        real = LiteRTApi.default()

        def load_delegate(library: str, options: dict) -> object:
            if library not in self.loadable:
                raise ValueError(f"Failed to load delegate from {library}")
            return ("delegate", library)

        def interpreter(**kwargs: Any) -> Any:
            self.calls.append(kwargs)
            if kwargs.get("experimental_delegates"):
                if self.reject_with_delegate:
                    raise RuntimeError("Failed to apply delegate: unsupported op")
                kwargs = {k: v for k, v in kwargs.items() if k != "experimental_delegates"}
            if self.xnnpack_fails and kwargs.get("experimental_op_resolver_type") == (
                real.op_resolver.AUTO
            ):
                raise RuntimeError("XNNPACK: failed to create delegate")
            return real.interpreter(**kwargs)

        return LiteRTApi(interpreter, load_delegate, real.op_resolver)


def test_a_delegate_that_loads_is_used_and_reported():
    fake = FakeApi(loadable={"libvx_delegate.so"})
    model = LiteRTModel(THERMAL, accelerators=[AcceleratorSpec(kind="vx")], api=fake.api())
    assert model.backend == "vx"
    assert fake.calls[0]["experimental_delegates"] == [("delegate", "libvx_delegate.so")]


def test_a_delegate_that_rejects_the_model_falls_back_to_cpu():
    fake = FakeApi(loadable={"libvx_delegate.so"}, reject_with_delegate=True)
    model = LiteRTModel(THERMAL, accelerators=[AcceleratorSpec(kind="vx")], api=fake.api())
    assert model.backend == CPU_XNNPACK
    assert "unsupported op" in model.attempts[0].detail


def test_edgetpu_uses_the_compiled_variant(tmp_path: Path):
    variant = tmp_path / "thermal_edgetpu.tflite"
    variant.write_bytes(THERMAL.read_bytes())  # stands in for edgetpu_compiler's output
    fake = FakeApi(loadable={"libedgetpu.so.1"})
    model = LiteRTModel(
        THERMAL,
        accelerators=[AcceleratorSpec(kind="edgetpu", options={"device": "usb"})],
        variants={"_edgetpu": variant},
        api=fake.api(),
    )
    assert model.backend == "edgetpu"
    assert model.path == variant
    assert fake.calls[0]["model_path"] == str(variant)


def test_xnnpack_failure_falls_back_to_reference_kernels():
    fake = FakeApi(xnnpack_fails=True)
    model = LiteRTModel(THERMAL, api=fake.api())
    assert model.backend == CPU_REFERENCE


def test_a_broken_file_is_an_error_not_a_silent_fallback(tmp_path: Path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises((RuntimeError, ValueError)):
        LiteRTModel(bad)


# --- ONNX Runtime ----------------------------------------------------------------------------


def test_onnx_gpu_providers_fall_back_to_cpu_when_absent():
    ort = pytest.importorskip("onnxruntime")
    from edge_models.boards import OnnxProvider
    from edge_models.onnx_backend import OnnxModel

    if gpu_providers_available(ort):
        pytest.skip("this machine has a GPU provider: the fallback path is not reachable")
    model = OnnxModel(
        default_models_dir() / "thermal.onnx",
        providers=[
            OnnxProvider(name="TensorrtExecutionProvider"),
            OnnxProvider(name="CUDAExecutionProvider"),
        ],
        input_names=("frame",),
    )
    assert model.backend == "onnx-cpu"
    assert model.unavailable == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]


def test_onnx_on_gpu_when_available():
    ort = pytest.importorskip("onnxruntime")
    from edge_models.boards import OnnxProvider
    from edge_models.onnx_backend import OnnxModel

    if "CUDAExecutionProvider" not in gpu_providers_available(ort):
        pytest.skip("skipped: no GPU (CUDAExecutionProvider not in this onnxruntime build)")
    model = OnnxModel(
        default_models_dir() / "thermal.onnx",
        providers=[OnnxProvider(name="CUDAExecutionProvider")],
        input_names=("frame",),
    )
    assert model.backend == "onnx-cuda"
