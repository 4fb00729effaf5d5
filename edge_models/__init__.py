"""Edge models: small int8 models run on the gateway (thermal, elevator, water level).

Runtime: ``litert`` (LiteRT interpreter, delegates per board profile), ``onnx_backend``
(ONNX Runtime), ``stage`` (the gateway integration), ``verify``/``manifest`` (what may run).
Training lives in ``edge_models.train`` and needs the ``[train]`` extra. See docs/models/.
"""
