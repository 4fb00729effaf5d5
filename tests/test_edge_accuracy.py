"""Each shipped model meets its card's figures on a small freshly generated test set.

The sets use seeds that training never saw; they are small (seconds), so the bounds sit a
little below the held-out figures in docs/models/*.md. "Beats the baseline" is checked at the
model's own false-alarm rate, as in the cards.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_models import evaluate
from edge_models.kinds import KINDS
from edge_models.litert import LiteRTModel
from edge_models.manifest import MANIFEST_NAME, default_models_dir, load_manifest
from edge_models.onnx_backend import OnnxModel
from edge_models.synth import elevator, thermal, water_level

pytest.importorskip("ai_edge_litert")

MODELS = default_models_dir()
SEED = 99_001  # training used 20240601..20240603


def _model(name: str, suffix: str = ".tflite") -> LiteRTModel:
    return LiteRTModel(MODELS / f"{name}{suffix}", input_names=KINDS[name].input_names)


def test_thermal_classifier_and_alarm_beat_max_temperature():
    data = thermal.generate(800, SEED)
    result = evaluate.evaluate_thermal(_model("thermal").run, data)
    assert result["macro_f1"] >= 0.90, result["f1"]
    assert result["f1"]["fire"] >= 0.97
    alarm = result["alarm_vs_max_temp"]
    assert alarm["model_far"] <= 0.05
    assert alarm["model_tpr"] >= 0.95
    assert alarm["model_tpr"] > alarm["baseline_tpr"]
    assert alarm["baseline_far"] <= alarm["model_far"]
    fire = result["fire_vs_max_temp"]
    assert fire["model_tpr"] > fire["baseline_tpr"]


def test_elevator_classifier_beats_rms_threshold():
    data = elevator.generate(800, SEED)
    result = evaluate.evaluate_elevator(_model("elevator").run, data)
    assert result["macro_f1"] >= 0.95, result["f1"]
    assert result["f1"]["shock"] >= 0.98
    cmp = result["anomaly_vs_rms"]
    assert cmp["model_far"] <= 0.02
    assert cmp["model_tpr"] >= cmp["baseline_tpr"]


def test_water_level_forecast_beats_linear_extrapolation():
    data = water_level.generate(1500, SEED, stations=4, days=30)
    result = evaluate.evaluate_water(_model("water_level").run, data)
    mae = result["mae_m"]
    assert mae["model"] < mae["linear_extrapolation"] < mae["persistence"]
    assert mae["model"] <= 0.06
    assert result["mae_wet_m"]["model"] < result["mae_wet_m"]["linear_extrapolation"]


@pytest.mark.parametrize("name", sorted(KINDS))
def test_int8_agrees_with_float32(name):
    int8, flt = _model(name), _model(name, ".f32.tflite")
    if name == "water_level":
        data = water_level.generate(300, SEED + 1, stations=2, days=15)
        a = evaluate.evaluate_water(int8.run, data)["forecast"]
        b = evaluate.evaluate_water(flt.run, data)["forecast"]
        assert np.mean(np.abs(a - b)) < 0.01
        return
    if name == "thermal":
        data = thermal.generate(300, SEED + 1)
        a = evaluate.evaluate_thermal(int8.run, data)["probs"]
        b = evaluate.evaluate_thermal(flt.run, data)["probs"]
    else:
        data = elevator.generate(300, SEED + 1)
        a = evaluate.evaluate_elevator(int8.run, data)["probs"]
        b = evaluate.evaluate_elevator(flt.run, data)["probs"]
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.97


@pytest.mark.parametrize("name", sorted(KINDS))
def test_onnx_cpu_gives_the_litert_class_on_the_test_vectors(name):
    pytest.importorskip("onnxruntime")
    kind = KINDS[name]
    entry = load_manifest(MODELS / MANIFEST_NAME).entry(name)
    onnx = OnnxModel(MODELS / entry.onnx.file, input_names=kind.input_names)
    litert = _model(name)
    assert onnx.backend == "onnx-cpu"
    with np.load(MODELS / entry.test_vectors.file) as vectors:
        inputs = [vectors[f"in{k}"] for k in range(len(kind.input_names))]
        float_ref = vectors["fout0"]
    for i in range(len(float_ref)):
        row = [x[i : i + 1] for x in inputs]
        o, q = onnx.run(*row)[0], litert.run(*row)[0]
        np.testing.assert_allclose(o, float_ref[i : i + 1], atol=1e-3)
        if kind.labels:
            assert int(o.argmax()) == int(q.argmax())
        else:
            assert abs(float(o[0, 0]) - float(q[0, 0])) < 0.05
