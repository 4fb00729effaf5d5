"""The three networks (Keras). Small on purpose: each int8 file stays well under 100 KB."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from edge_models.kinds import KINDS


def thermal_net() -> Any:
    inp = keras.Input((24, 32, 1), name="frame")
    # Scale °C to O(1) inside the graph; the int8 input keeps the sensor's range.
    x = layers.Rescaling(1.0 / 50.0, offset=-0.4)(inp)
    # A 2×2/2 "patchify" first layer: a 3×3 int8 conv on a 1-channel input is XNNPACK's
    # slowest case (≈35 µs alone); patches keep every hot pixel and cost 6 k MACs.
    x = layers.Conv2D(8, 2, strides=2, activation="relu")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(24, 3, padding="same", activation="relu")(x)
    x = layers.Concatenate()([layers.GlobalMaxPooling2D()(x), layers.GlobalAveragePooling2D()(x)])
    x = layers.Dense(16, activation="relu")(x)
    out = layers.Dense(len(KINDS["thermal"].labels), activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="thermal")


def elevator_net() -> Any:
    kind = KINDS["elevator"]
    inp = keras.Input((kind.window_samples, len(kind.channels)), name="window")
    x = layers.Conv1D(16, 7, strides=2, padding="same", activation="relu")(inp)
    x = layers.Conv1D(24, 5, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv1D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Concatenate()([layers.GlobalMaxPooling1D()(x), layers.GlobalAveragePooling1D()(x)])
    x = layers.Dense(16, activation="relu")(x)
    out = layers.Dense(len(kind.labels), activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="elevator")


def water_net() -> Any:
    kind = KINDS["water_level"]
    level = keras.Input((kind.window_samples,), name="level")
    rain = keras.Input((kind.window_samples,), name="rain")
    x = layers.Concatenate()([level, layers.Rescaling(1.0 / 50.0)(rain)])
    x = layers.Dense(48, activation="relu")(x)
    x = layers.Dense(24, activation="relu")(x)
    out = layers.Dense(1, name="rise")(x)
    return keras.Model([level, rain], out, name="water_level")
