"""What each warning type is called in CAP and what people should do, per level.

Rules add their warning types here; the lifecycle (central/warnings.py) only looks them up.
"""

from __future__ import annotations

from central.rules.base import Level

EVENT_NAMES: dict[str, str] = {
    "gas_leak": "Combustible gas leak",
    "co_exposure": "Carbon monoxide exposure",
    "h2s_exposure": "Hydrogen sulphide exposure",
    "river_flood": "River flood (stage)",
    "river_flood_forecast": "River flood forecast",
    "rainstorm": "Rainstorm",
    "lift_trapped": "Passenger trapped in lift",
    "lift_overspeed": "Lift overspeed",
    "lift_door": "Lift door open while moving",
    "lift_vibration": "Abnormal lift vibration",
    "displacement": "Structural or slope displacement",
    "fire": "Fire (thermal)",
    "sensor_fault": "Sensor fault",
    "sensor_offline": "Sensor offline",
}

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
    "co_exposure": {
        "red": "Get everyone out into fresh air now; call the emergency services.",
        "orange": "Ventilate and clear the space; find the combustion source.",
        "yellow": "Ventilate; check boilers, generators and vehicles nearby.",
        "blue": "Monitor the CO trend.",
    },
    "h2s_exposure": {
        "red": "Evacuate; enter only with breathing apparatus.",
        "orange": "Clear the space; no entry without gas monitors and ventilation.",
        "yellow": "Ventilate before entry; wear personal monitors.",
        "blue": "Monitor the trend.",
    },
    "river_flood": {
        "red": "Evacuate the flood zone now; follow the flood-control plan.",
        "orange": "Guard the embankments; prepare evacuation of low-lying areas.",
        "yellow": "Patrol the embankments; clear drains; warn riverside users.",
        "blue": "Watch the stage; check upstream stations and the forecast.",
    },
    "river_flood_forecast": {
        "red": "Forecast above the historical maximum: prepare evacuation now.",
        "orange": "Forecast above the guarantee level: ready the flood-control crews.",
        "yellow": "Forecast above the warning level: prepare patrols.",
        "blue": "Forecast near the warning level: watch the stage.",
    },
    "rainstorm": {
        "red": "Stop outdoor work and traffic in flood-prone areas; shelter in place.",
        "orange": "Stop outdoor work; open drainage pumping; close underpasses.",
        "yellow": "Prepare drainage pumping; warn people in low-lying areas.",
        "blue": "Check drains and pumping stations.",
    },
    "lift_trapped": {
        "red": "Dispatch the lift rescue team now; talk to the passengers over the intercom.",
        "orange": "Dispatch a technician; keep the lift out of service.",
        "yellow": "Check the lift at the next opportunity.",
        "blue": "Monitor.",
    },
    "lift_overspeed": {
        "red": "Take the lift out of service now; dispatch a technician.",
        "orange": "Take the lift out of service; inspect governor and brake.",
        "yellow": "Schedule an inspection of the drive and the governor.",
        "blue": "Monitor.",
    },
    "lift_door": {
        "red": "Stop the lift now; dispatch a technician; check on the passengers.",
        "orange": "Take the lift out of service; inspect the door circuit.",
        "yellow": "Inspect the door circuit.",
        "blue": "Monitor.",
    },
    "lift_vibration": {
        "yellow": "Schedule an inspection of guide rails, rollers and ropes.",
        "blue": "Monitor the ride quality.",
    },
    "displacement": {
        "red": "Close the structure or slope area and evacuate; call the structural engineer.",
        "orange": "Restrict access; increase survey frequency; engineer on site.",
        "yellow": "Inspect on site; check neighbouring sensors and rainfall.",
        "blue": "Monitor the trend.",
    },
    "fire": {
        "red": "Call the fire brigade and evacuate now.",
        "orange": "Send someone to look now; prepare extinguishers; be ready to evacuate.",
        "yellow": "Check the hot spot on the camera and on site.",
        "blue": "Watch the hot spot.",
    },
    "sensor_fault": {
        level: "Assess the sensor: check wiring, calibration and the installation."
        for level in ("red", "orange", "yellow", "blue")
    },
    "sensor_offline": {
        level: "Assess the link: check power, the bus and the gateway of this sensor."
        for level in ("red", "orange", "yellow", "blue")
    },
}


def event_name(warning_type: str) -> str:
    return EVENT_NAMES.get(warning_type, warning_type.replace("_", " ").capitalize())


def instruction(warning_type: str, level: Level) -> str:
    return INSTRUCTIONS.get(warning_type, _DEFAULT_INSTRUCTIONS).get(
        level, _DEFAULT_INSTRUCTIONS[level]
    )
