"""int8 quantisation: the arithmetic, and that LiteRTModel applies the file's own parameters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_models.kinds import KINDS
from edge_models.litert import LiteRTModel
from edge_models.manifest import default_models_dir
from edge_models.quant import Dequantizer, Quantizer, QuantParams, dequantize, quantize

pytest.importorskip("ai_edge_litert")

INT8 = np.dtype(np.int8)


@settings(max_examples=200, deadline=None)
@given(
    scale=st.floats(1e-3, 10.0),
    zero_point=st.integers(-128, 127),
    values=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=50),
)
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(scale, zero_point, values):
    q = QuantParams(scale, zero_point, INT8)
    x = np.asarray(values, np.float32)
    low, high = (-128 - zero_point) * scale, (127 - zero_point) * scale
    ints = quantize(x, q)
    back = dequantize(ints, q)
    inside = (x >= low) & (x <= high)
    tol = scale / 2 + 1e-3 * scale + 1e-6 * np.abs(x[inside])
    assert np.all(np.abs(back[inside] - x[inside]) <= tol)
    # Outside the range the value saturates at the nearest end, never wraps around.
    assert np.all(ints[x > high + scale] == 127)
    assert np.all(ints[x < low - scale] == -128)


def test_quantize_matches_the_definition_and_writes_into_a_buffer():
    q = QuantParams(0.5, -10, INT8)
    x = np.array([0.0, 0.24, 0.26, -5.0, 1000.0, -1000.0], np.float32)
    buf = np.zeros(6, np.int8)
    out = quantize(x, q, buf)
    assert out is buf
    assert buf.tolist() == [-10, -10, -9, -20, 127, -128]


@settings(max_examples=100, deadline=None)
@given(
    scale=st.floats(1e-3, 10.0),
    zero_point=st.integers(-128, 127),
    values=st.lists(st.floats(-1e4, 1e4), min_size=6, max_size=6),
)
def test_the_preallocated_quantizer_equals_quantize(scale, zero_point, values):
    q = QuantParams(scale, zero_point, INT8)
    x = np.asarray(values, np.float32).reshape(2, 3)
    fast = Quantizer(q, (2, 3))
    ints = quantize(x, q)
    assert np.array_equal(fast(x), ints)
    assert np.array_equal(Dequantizer(q)(ints), dequantize(ints, q))


def test_float_tensors_pass_through():
    q = QuantParams(0.0, 0, np.dtype(np.float32))
    x = np.array([1.5, -2.25], np.float32)
    assert not q.is_quantized
    assert np.array_equal(dequantize(quantize(x, q), q), x)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_model_run_equals_manual_quantisation_with_the_file_parameters(name):
    kind = KINDS[name]
    model = LiteRTModel(default_models_dir() / f"{name}.tflite", input_names=kind.input_names)
    assert all(s.dtype == "int8" and s.scale > 0 for s in model.inputs + model.outputs)
    in_q, out_q = model.quant_params()
    rng = np.random.default_rng(1)
    xs = [rng.normal(0, 1, s.shape).astype(np.float32) for s in model.inputs]
    raw = model.run_raw(*[quantize(x, q) for x, q in zip(xs, in_q, strict=True)])
    expected = [dequantize(r, q) for r, q in zip(raw, out_q, strict=True)]
    got = model.run(*xs)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == np.float32
        assert np.array_equal(g, e)
