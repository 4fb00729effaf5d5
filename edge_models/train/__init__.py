"""Training for the edge models (needs the ``[train]`` extra: TensorFlow CPU, tf2onnx).

``python -m edge_models.train all`` (or ``thermal``, ``elevator``, ``water_level``) trains on
seeded synthetic data, quantises to full int8 with a representative dataset, exports float32
.tflite and .onnx twins, writes test vectors and metrics, then regenerates the manifest.
"""
