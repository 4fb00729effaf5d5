"""Keras model → int8 .tflite (full-integer PTQ), float32 .tflite, float32 .onnx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

OPSET = 17


def to_int8_tflite(model: Any, representative: list[np.ndarray], samples: int = 400) -> bytes:
    """Full-integer post-training quantisation: int8 weights, activations, inputs, outputs."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    n = min(samples, len(representative[0]))

    def rep() -> Iterator[list[np.ndarray]]:
        for i in range(n):
            yield [x[i : i + 1].astype(np.float32) for x in representative]

    converter.representative_dataset = rep
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def to_float_tflite(model: Any) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def to_onnx(model: Any, input_names: tuple[str, ...], path: Path) -> None:
    import tf2onnx

    signature = [
        tf.TensorSpec(tuple(inp.shape), tf.float32, name=name)
        for inp, name in zip(model.inputs, input_names, strict=True)
    ]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
    canonical_names(proto)
    path.write_bytes(proto.SerializeToString())


def canonical_names(proto: Any) -> None:
    """Rename nodes, initializers, intermediate tensors (n0, t0, c0 …) and symbolic dims.

    tf2onnx numbers the names it invents with a process-wide counter whose order is not
    stable between runs; the graph is the same, the bytes are not. Inputs and outputs keep
    their names (callers feed them by name).
    """
    graph = proto.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    mapping: dict[str, str] = {}
    for i, init in enumerate(graph.initializer):
        if init.name not in keep:
            mapping[init.name] = f"c{i}"
    count = 0
    for node in graph.node:
        for name in node.output:
            if name not in keep and name not in mapping:
                mapping[name] = f"t{count}"
                count += 1
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for info in graph.value_info:
        info.name = mapping.get(info.name, info.name)
    for info in [*graph.input, *graph.output, *graph.value_info]:
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param:  # "unk__109": the only symbolic dimension here is the batch
                dim.dim_param = "batch"
