"""Displacement: % of control value, k-of-n, daily cycles and single steps, inverse velocity."""

from __future__ import annotations

import math

from central.registry import AssetInfo
from tests.test_rules_engine import T0, Harness

H = 3600.0
DAY = 86400.0


def structure(**meta) -> AssetInfo:
    return AssetInfo(
        "bridge",
        "Bridge 7",
        type="displacement",
        meta={"control_value": 5.0, "control_rate": 2.0, **meta},
    )


def two_cracks(**meta) -> Harness:
    return Harness(structure(**meta), bindings={"cm-1": "bridge", "cm-2": "bridge"})


def test_percent_of_control_value_needs_two_sensors_to_agree_then_steps_down():
    h = two_cracks()
    for i in range(12):  # cm-1 at 90 % of the 5 mm control value; cm-2 quiet
        h.send("cm-1", "crack", T0 + i * 600, 4.5)
        h.send("cm-2", "crack", T0 + i * 600, 0.2)
    assert h.levels("displacement") == []  # one of two: no consensus
    for i in range(12, 24):  # cm-2 opens gradually to 3.6 mm (72 %: yellow)
        h.send("cm-1", "crack", T0 + i * 600, 4.5)
        h.send("cm-2", "crack", T0 + i * 600, min(3.6, 0.2 + 0.5 * (i - 11)))
    assert h.levels("displacement") == ["yellow"]
    tr = h.transitions[-1]
    assert tr.trigger["AGREEING"] == "2/2"
    for i in range(24, 30):
        h.send("cm-1", "crack", T0 + i * 600, 4.5)
        h.send("cm-2", "crack", T0 + i * 600, 4.6)  # both ≥ 85 %: orange
    assert h.levels("displacement") == ["yellow", "orange"]
    for i in range(30, 45):  # closing again, gradually
        h.send("cm-1", "crack", T0 + i * 600, max(2.0, 4.5 - 0.5 * (i - 29)))
        h.send("cm-2", "crack", T0 + i * 600, max(2.0, 4.6 - 0.5 * (i - 29)))
    assert h.levels("displacement") == ["yellow", "orange", "yellow", None]


def test_a_single_sensor_structure_needs_no_consensus():
    h = Harness(structure(), bindings={"cm-1": "bridge"})
    h.series("cm-1", "crack", T0, [5.2] * 4, dt=600)
    assert h.levels("displacement") == ["red"]


def test_daily_temperature_cycle_stays_silent():
    h = two_cracks()
    for i in range(14 * 24):  # two weeks, hourly: ±0.8 mm daily breathing of the crack
        t = T0 + i * H
        breathing = 0.8 * math.sin(2 * math.pi * i / 24)
        h.send("cm-1", "crack", t, 0.5 + breathing)
        h.send("cm-2", "crack", t, 0.3 + breathing)
    assert h.levels("displacement") == []


def test_a_single_step_is_absorbed_not_warned():
    h = two_cracks()
    for i in range(48):
        jump = 4.0 if i >= 10 else 0.0  # cm-1 knocked: a 4 mm step that stays
        h.send("cm-1", "crack", T0 + i * H, 0.3 + jump)
        h.send("cm-2", "crack", T0 + i * H, 0.3)
    assert h.levels("displacement") == []


def test_the_24_hour_rate_counts_against_the_rate_control():
    h = two_cracks(control_value=50.0)  # the cumulative is far below its control value
    for i in range(60):  # 2.0 mm/day = 100 % of the rate control on both sensors
        t = T0 + i * H
        h.send("cm-1", "crack", t, 1.0 + 2.0 * i / 24)
        h.send("cm-2", "crack", t, 0.5 + 2.0 * i / 24)
    assert h.levels("displacement")[-1] == "red"
    assert float(h.transitions[-1].trigger["RATE_FRACTION"]) >= 1.0


def accelerating_slope(hours_to_failure: float, hours: int, **meta) -> Harness:
    """Displacement of a slope that fails at T0 + hours_to_failure h (1/v falls linearly)."""
    h = Harness(
        AssetInfo(
            "slope",
            "Slope K3",
            type="slope",
            meta={"steady_velocity_per_day": 0.002, "tangent_quantity": "gnss_e", **meta},
        ),
        bindings={"gnss-1": "slope"},
    )
    tf = hours_to_failure
    for i in range(hours + 1):
        # v = A / (tf − t) → s = −A·ln(tf − t); in mm, with A so that v = 2 mm/day at t = 0;
        # GNSS offsets are in metres, so is the steady velocity (0.002 m/day)
        a = 2.0 / 24 * tf
        s_mm = -a * math.log((tf - i) / tf)
        h.send("gnss-1", "gnss_e", T0 + i * H, s_mm / 1000.0)
    return h


def test_inverse_velocity_predicts_failure_and_sets_onset():
    h = accelerating_slope(hours_to_failure=120, hours=110)
    iv = [tr for tr in h.transitions if tr.trigger.get("PREDICTED_FAILURE_H")]
    assert iv, h.events
    red = [tr for tr in iv if tr.level == "red"]
    assert red and red[0].onset is not None
    assert abs(red[0].onset - (T0 + 120 * H)) < 12 * H  # the fit finds the failure time
    orange = [tr for tr in iv if tr.level == "orange"]
    assert orange and (T0 + 120 * H) - orange[0].event_time < 72 * H


def test_tangent_angle_stages_on_smoothed_velocity():
    # Inverse velocity off for this asset (a per-asset override), to see the tangent stages.
    h = accelerating_slope(120, 110, rules={"displacement": {"iv_min_points": 100000}})
    tangent = [tr for tr in h.transitions if tr.trigger.get("TANGENT_ANGLE_DEG")]
    angles = [float(tr.trigger["TANGENT_ANGLE_DEG"]) for tr in tangent]
    assert angles == sorted(angles) and angles[-1] >= 80
    assert [tr.level for tr in tangent] == ["blue", "yellow", "orange"]
    assert not [tr for tr in h.transitions if tr.trigger.get("PREDICTED_FAILURE_H")]


def test_a_steady_creep_predicts_nothing():
    h = Harness(
        AssetInfo(
            "slope",
            "Slope K3",
            type="slope",
            meta={"steady_velocity_per_day": 0.002, "tangent_quantity": "gnss_e"},
        ),
        bindings={"gnss-1": "slope"},
    )
    for i in range(100):  # 1 mm/day, constant: below the steady velocity
        h.send("gnss-1", "gnss_e", T0 + i * H, (1.0 * i / 24) / 1000.0)
    assert [tr for tr in h.transitions if tr.trigger.get("PREDICTED_FAILURE_H")] == []
    assert h.levels("displacement") == []


def test_heavy_rain_on_the_site_escalates_yellow_to_orange():
    def run(rain_mm_per_10min: float) -> list:
        h = Harness(
            AssetInfo("bank", "River bank", type="slope", site="hill", meta={"control_value": 5.0}),
            AssetInfo("rg", "rg", type="rain-gauge", site="hill"),
            bindings={"cm-1": "bank", "cm-2": "bank"},
        )
        for i in range(12):
            t = T0 + i * 600
            h.send("rg", "rain_acc", t, i * rain_mm_per_10min)
            h.send("cm-1", "crack", t, min(3.7, 0.5 + 0.4 * i))
            h.send("cm-2", "crack", t, min(3.6, 0.5 + 0.4 * i))
        return h.levels("displacement", "bank")

    assert run(0.5) == ["yellow"]  # 3 mm/h: yellow stays yellow
    assert run(5.0) == ["orange"]  # 30 mm/h: the same displacement is orange
