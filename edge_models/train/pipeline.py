"""Train → quantise → export → evaluate → test vectors, for one model (seeded)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edge_models import evaluate
from edge_models.kinds import kind_for
from edge_models.kinds.elevator import preprocess_window
from edge_models.kinds.water_level import preprocess_history
from edge_models.litert import LiteRTModel
from edge_models.synth import elevator as synth_elevator
from edge_models.synth import thermal as synth_thermal
from edge_models.synth import water_level as synth_water
from edge_models.train import export, nets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    inputs: list[np.ndarray]  # preprocessed float model inputs
    targets: np.ndarray


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    description: str
    net: Callable[[], Any]
    data: Callable[[int, float], tuple[Split, Split, Any]]  # (seed, scale) → train, val, test
    evaluate: Callable[..., dict[str, Any]]
    classifier: bool
    epochs: int
    batch: int = 64
    lr: float = 3e-3


def _thermal_data(seed: int, scale: float) -> tuple[Split, Split, Any]:
    def split(n: int, s: int) -> tuple[Split, Any]:
        data = synth_thermal.generate(int(n * scale), s)
        return Split([data.frames[..., None]], data.labels), data

    train, _ = split(16000, seed)
    val, _ = split(2000, seed + 1)
    _, test = split(4000, seed + 2)
    return train, val, test


def _elevator_data(seed: int, scale: float) -> tuple[Split, Split, Any]:
    def split(n: int, s: int) -> tuple[Split, Any]:
        data = synth_elevator.generate(int(n * scale), s)
        return Split([preprocess_window(data.windows)], data.labels), data

    train, _ = split(16000, seed)
    val, _ = split(2000, seed + 1)
    _, test = split(4000, seed + 2)
    return train, val, test


def _water_data(seed: int, scale: float) -> tuple[Split, Split, Any]:
    def split(n: int, s: int, stations: int) -> tuple[Split, Any]:
        data = synth_water.generate(int(n * scale), s, stations=stations, days=60)
        rel, rain = preprocess_history(data.level, data.rain)
        return Split([rel, rain], data.target - data.level[:, -1]), data

    # Different seeds → different simulated stations: the test catchments are unseen.
    train, _ = split(40000, seed, 24)
    val, _ = split(4000, seed + 1, 6)
    _, test = split(8000, seed + 2, 8)
    return train, val, test


RECIPES: dict[str, Recipe] = {
    "thermal": Recipe(
        "thermal",
        "1.0.0",
        "24x32 thermal frame -> background / warm / hotspot / fire",
        nets.thermal_net,
        _thermal_data,
        evaluate.evaluate_thermal,
        classifier=True,
        epochs=14,
    ),
    "elevator": Recipe(
        "elevator",
        "1.0.0",
        "2.56 s lift acceleration + speed window -> normal / vibration / shock",
        nets.elevator_net,
        _elevator_data,
        evaluate.evaluate_elevator,
        classifier=True,
        epochs=14,
    ),
    "water_level": Recipe(
        "water_level",
        "1.0.0",
        "3 h of level and rain (5-min steps) -> level 30 min ahead",
        nets.water_net,
        _water_data,
        evaluate.evaluate_water,
        classifier=False,
        epochs=20,
        batch=128,
    ),
}


def _fit(recipe: Recipe, train: Split, val: Split, seed: int) -> Any:
    # Fresh layer-name counters: names end up in the files, so a model trained after another
    # in one process (`all`) must get the same names as one trained alone.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = recipe.net()
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(
                recipe.lr, recipe.epochs * (len(train.targets) // recipe.batch + 1)
            )
        ),
        loss="sparse_categorical_crossentropy" if recipe.classifier else keras.losses.Huber(0.05),
        metrics=["accuracy"] if recipe.classifier else ["mae"],
    )
    model.fit(
        train.inputs,
        train.targets,
        batch_size=recipe.batch,
        epochs=recipe.epochs,
        validation_data=(val.inputs, val.targets),
        shuffle=True,
        verbose=2,
    )
    return model


def _representative(recipe: Recipe, train: Split, n: int = 400) -> list[np.ndarray]:
    """Calibration samples for PTQ. Classifiers: the first ``n`` training samples (the
    generators draw classes at random). Regressors: a quarter of them are the largest targets,
    or the int8 output range ends at typical values and rare fast rises saturate (the first
    water model clipped at ±0.4 m)."""
    rng = np.random.default_rng(0)
    if recipe.classifier:
        idx = np.arange(min(n, len(train.targets)))
    else:
        order = np.argsort(train.targets)
        extreme = np.concatenate([order[-n // 4 :], order[: n // 8]])  # big rises, big falls
        rest = rng.choice(len(train.targets), n - len(extreme), replace=False)
        idx = np.concatenate([extreme, rest])
    return [x[idx] for x in train.inputs]


def _test_vectors(
    recipe: Recipe, int8: LiteRTModel, model: Any, test: Split
) -> tuple[dict[str, np.ndarray], float]:
    """A few clear test inputs with the int8 (CPU) and float outputs they must give."""
    n = min(400, len(test.targets))
    inputs = [x[:n] for x in test.inputs]
    q = [int8.run(*[x[i : i + 1] for x in inputs])[0][0] for i in range(n)]
    q_out = np.stack(q)
    f_out = np.asarray(model.predict(inputs, verbose=0))
    if recipe.classifier:
        agree = (q_out.argmax(1) == f_out.argmax(1)) & (q_out.max(1) >= 0.8)
        chosen = []
        for c in range(q_out.shape[1]):
            idx = np.flatnonzero(agree & (q_out.argmax(1) == c))[:2]
            chosen.extend(idx.tolist())
    else:
        # Spread over the typical range; the extreme tails are where int8 saturates.
        order = np.argsort(f_out.reshape(-1))
        chosen = order[(np.array([0.05, 0.2, 0.4, 0.6, 0.8, 0.95]) * (n - 1)).astype(int)].tolist()
    sel = np.asarray(chosen, int)
    vectors = {f"in{k}": x[sel].astype(np.float32) for k, x in enumerate(inputs)}
    vectors["out0"] = q_out[sel].astype(np.float32)
    vectors["fout0"] = f_out[sel].astype(np.float32)
    atol = 2.0 * int8.outputs[0].scale
    return vectors, atol


def _agreement(recipe: Recipe, int8_result: dict, float_result: dict) -> dict[str, float]:
    if recipe.classifier:
        a, b = int8_result["probs"], float_result["probs"]
        return {
            "class_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_prob_diff": float(np.abs(a - b).max()),
        }
    a, b = int8_result["forecast"], float_result["forecast"]
    return {
        "mean_abs_diff_m": float(np.abs(a - b).mean()),
        "max_abs_diff_m": float(np.abs(a - b).max()),
    }


def train_one(name: str, out: Path, seed: int = 20240601, scale: float = 1.0) -> dict[str, Any]:
    recipe = RECIPES[name]
    kind = kind_for(name)
    started = time.monotonic()
    tf.config.experimental.enable_op_determinism()
    train, val, test_set = recipe.data(seed, scale)
    model = _fit(recipe, train, val, seed)

    out.mkdir(parents=True, exist_ok=True)
    int8_path = out / f"{name}.tflite"
    float_path = out / f"{name}.f32.tflite"
    onnx_path = out / f"{name}.onnx"
    int8_path.write_bytes(export.to_int8_tflite(model, _representative(recipe, train)))
    float_path.write_bytes(export.to_float_tflite(model))
    export.to_onnx(model, kind.input_names, onnx_path)

    int8 = LiteRTModel(int8_path, input_names=kind.input_names)
    flt = LiteRTModel(float_path, input_names=kind.input_names)
    int8_result = recipe.evaluate(int8.run, test_set)
    float_result = recipe.evaluate(flt.run, test_set)

    test_split = _as_split(name, test_set)
    vectors, atol = _test_vectors(recipe, int8, model, test_split)
    vec_path = out / f"{name}.testvec.npz"
    with open(vec_path, "wb") as fh:
        np.savez(fh, **vectors)

    meta = {
        "name": name,
        "version": recipe.version,
        "description": recipe.description,
        "model": int8_path.name,
        "float_model": float_path.name,
        "onnx": onnx_path.name,
        "test_vectors": vec_path.name,
        "test_atol": round(float(atol), 6),
        "float_atol": 0.02,
        "metrics": {
            "int8": evaluate.strip_arrays(int8_result),
            "float32": evaluate.strip_arrays(float_result),
            "int8_vs_float": _agreement(recipe, int8_result, float_result),
        },
        "trained": {
            "seed": seed,
            "data_scale": scale,
            "train_samples": len(train.targets),
            "test_samples": int(int8_result["n"]),
            "epochs": recipe.epochs,
            "tensorflow": tf.__version__,
            "seconds": round(time.monotonic() - started, 1),
        },
    }
    (out / f"{name}.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _as_split(name: str, data: Any) -> Split:
    if name == "thermal":
        return Split([data.frames[..., None]], data.labels)
    if name == "elevator":
        return Split([preprocess_window(data.windows)], data.labels)
    rel, rain = preprocess_history(data.level, data.rain)
    return Split([rel, rain], data.target - data.level[:, -1])
