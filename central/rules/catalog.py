"""What each warning type is called in CAP and what people should do, per level.

Rules add their warning types here; the lifecycle (central/warnings.py) only looks them up.
"""

from __future__ import annotations

from central.rules.base import Level

EVENT_NAMES: dict[str, str] = {"gas_leak": "Combustible gas leak"}

_DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "red": "Act now: follow the emergency plan for this asset.",
    "orange": "Dispatch a crew and keep people away; prepare to act.",
    "yellow": "Check the sensor and its neighbours; monitor closely.",
    "blue": "Monitor the trend.",
}

INSTRUCTIONS: dict[str, dict[str, str]] = {
    "gas_leak": {
        "red": "Evacuate the area, cut ignition sources and isolate the gas supply now.",
        "orange": "Dispatch a crew; keep people out of the space; prepare to isolate the supply.",
        "yellow": "Check the detector and the neighbouring sensors; ventilate; monitor closely.",
        "blue": "Monitor the trend.",
    },
}


def event_name(warning_type: str) -> str:
    return EVENT_NAMES.get(warning_type, warning_type.replace("_", " ").capitalize())


def instruction(warning_type: str, level: Level) -> str:
    return INSTRUCTIONS.get(warning_type, _DEFAULT_INSTRUCTIONS).get(
        level, _DEFAULT_INSTRUCTIONS[level]
    )
