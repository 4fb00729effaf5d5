"""What each model kind needs around the network: its input window, preprocessing, outputs.

A *kind* is the contract between the stage and a family of model versions: every version of
``thermal`` takes the same input shapes and produces the same outputs, so the stage can swap
versions without changing code. Preprocessing lives here (numpy only) and training imports it,
so the two can never drift apart.
"""

from __future__ import annotations

from edge_models.kinds.base import Inference, ModelKind, OutputRecord
from edge_models.kinds.elevator import ElevatorKind
from edge_models.kinds.thermal import ThermalKind
from edge_models.kinds.water_level import WaterLevelKind

__all__ = [
    "KINDS",
    "ElevatorKind",
    "Inference",
    "ModelKind",
    "OutputRecord",
    "ThermalKind",
    "WaterLevelKind",
    "kind_for",
]

KINDS: dict[str, ModelKind] = {
    "thermal": ThermalKind(),
    "elevator": ElevatorKind(),
    "water_level": WaterLevelKind(),
}


def kind_for(name: str) -> ModelKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown model kind {name!r}; known: {', '.join(sorted(KINDS))}") from None
