"""Lift rules: trapped passenger, overspeed, door open while moving, vibration, suppression."""

from __future__ import annotations

from central.registry import AssetInfo
from tests.test_rules_engine import T0, Harness


def lift(**meta) -> AssetInfo:
    return AssetInfo("lift", "Lift 3", type="elevator", meta={"rated_speed_mps": 1.0, **meta})


def state(h: Harness, t: float, **values) -> None:
    """One poll of the monitor: every quantity given, at the same event time."""
    for quantity, value in values.items():
        h.send("lift", quantity, t, value)


def stuck_between_floors(h: Harness, seconds: int, start: float = T0, **extra) -> None:
    for i in range(0, seconds + 1, 5):
        state(
            h,
            start + i,
            mode="normal",
            speed=0.0,
            door_open=False,
            occupied=True,
            in_zone=False,
            **extra,
        )


def test_trapped_passenger_after_the_hold_time_then_cleared_when_the_door_opens():
    h = Harness(lift())
    stuck_between_floors(h, 55)
    assert h.levels("lift_trapped") == []
    stuck_between_floors(h, 10, start=T0 + 60)
    assert h.levels("lift_trapped") == ["red"]
    assert h.transitions[-1].event_time == T0 + 60
    for i in range(3):  # rescued: levelled and the door opens
        state(h, T0 + 100 + i * 5, speed=0.0, door_open=True, occupied=True, in_zone=True)
    assert h.levels("lift_trapped") == ["red", None]


def test_the_alarm_button_corroborates_and_shortens_the_hold():
    h = Harness(lift())
    stuck_between_floors(h, 15, alarm_btn=True)
    assert h.levels("lift_trapped") == ["red"]
    assert h.transitions[-1].trigger["ALARM_BUTTON"] == "TRUE"


def test_inspection_mode_suppresses_everything():
    h = Harness(lift())
    for i in range(0, 200, 5):
        state(h, T0 + i, mode="inspection", speed=1.3, door_open=True, occupied=True, in_zone=False)
    assert h.events == []


def test_fire_mode_as_a_number_also_suppresses_and_a_warning_in_force_is_cancelled():
    h = Harness(lift())
    for i in range(3):
        state(h, T0 + i, mode=0.0, speed=1.2, door_open=False, occupied=True, in_zone=False)
    assert h.levels("lift_overspeed") == ["red"]
    for i in range(3, 6):
        state(h, T0 + i, mode=2.0, speed=1.2, door_open=False, occupied=True, in_zone=False)
    assert h.levels("lift_overspeed") == ["red", None]
    assert "suppressed" in h.transitions[-1].summary


def test_overspeed_levels_follow_the_rated_speed():
    h = Harness(lift(rated_speed_mps=2.0))
    for i, v in enumerate([2.0, 2.12, 2.12, 2.35, 2.35, 2.0, 2.0, 2.0]):
        state(h, T0 + i, mode="normal", speed=-v, occupied=False)  # going down
    assert h.levels("lift_overspeed") == ["yellow", "red", None]
    assert h.transitions[1].trigger["RATED_MPS"] == "2.00"


def test_a_single_fast_sample_is_not_overspeed():
    h = Harness(lift())
    for i, v in enumerate([1.0, 1.3, 1.0, 1.0]):
        state(h, T0 + i, mode="normal", speed=v)
    assert h.levels("lift_overspeed") == []


def test_door_open_while_moving_is_red_when_occupied_orange_when_empty():
    occupied, empty = Harness(lift()), Harness(lift())
    for i in range(3):
        state(occupied, T0 + i, mode="normal", speed=0.8, door_open=True, occupied=True)
        state(empty, T0 + i, mode="normal", speed=0.8, door_open=True, occupied=False)
    assert occupied.levels("lift_door") == ["red"]
    assert empty.levels("lift_door") == ["orange"]


def test_edge_model_vibration_is_evidence_for_yellow():
    h = Harness(lift())
    for i, p in enumerate([0.9, 0.2, 0.9, 0.9, 0.95]):
        h.send("lift", "vib_anomaly", T0 + i * 3, p)
    assert h.levels("lift_vibration") == ["yellow"]
    for i, cls in enumerate(["normal", "normal"]):
        h.send("lift", "ride_class", T0 + 20 + i * 3, cls)
    assert h.levels("lift_vibration") == ["yellow", None]
