"""Gas family in the engine: CH4 confirmation, biogas veto, CO dose (EN 50291), H2S."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.registry import AssetInfo
from central.rules.gas import CoDoseParams, CoDoseRule
from tests.test_rules_engine import T0, Harness

RISING_LEAK = [0.05, 0.30, 0.35, 0.52, 0.56, 0.60, 0.64, 0.68]


def detector(name: str, lat: float, lon: float = 117.2, **meta) -> AssetInfo:
    return AssetInfo(name, name, lat, lon, type="gas", meta=meta)


def test_red_needs_a_confirming_neighbour():
    alone = Harness(detector("a", 31.8))
    alone.series("a", "ch4_lel", T0, RISING_LEAK)
    assert alone.levels("gas_leak") == ["yellow", "orange"]  # rising ≥ 50 %, unconfirmed

    pair = Harness(detector("a", 31.8), detector("b", 31.8005))  # ≈ 56 m apart
    pair.series("b", "ch4_lel", T0, [0.3] * 8)
    pair.series("a", "ch4_lel", T0, RISING_LEAK)
    assert pair.levels("gas_leak", "a") == ["orange", "red"]
    red = next(tr for tr in pair.transitions if tr.asset == "a" and tr.level == "red")
    assert red.trigger["CONFIRMED"] == "TRUE"
    assert "confirmed by a neighbouring detector" in red.summary


def test_a_neighbour_too_far_away_or_too_old_does_not_confirm():
    far = Harness(detector("a", 31.8), detector("b", 31.81))  # ≈ 1.1 km
    far.series("b", "ch4_lel", T0, [0.3] * 8)
    far.series("a", "ch4_lel", T0, RISING_LEAK)
    assert far.levels("gas_leak", "a") == ["yellow", "orange"]

    stale = Harness(detector("a", 31.8), detector("b", 31.8001))
    stale.series("b", "ch4_lel", T0 - 3600, [0.3] * 3)  # an hour before
    stale.series("a", "ch4_lel", T0, RISING_LEAK)
    assert stale.levels("gas_leak", "a") == ["yellow", "orange"]


def test_confirmed_yellow_becomes_orange_and_steps_down_with_hysteresis_then_clears():
    h = Harness(detector("a", 31.8), detector("b", 31.8002))
    h.series("b", "ch4_lel", T0, [0.28] * 30)
    h.series("a", "ch4_lel", T0, [0.28, 0.28])
    assert h.levels("gas_leak", "a") == ["orange"]
    h.series("a", "ch4_lel", T0 + 2, [0.22, 0.28] * 5)  # hovering inside the hysteresis
    assert h.levels("gas_leak", "a") == ["orange"]
    h.series("a", "ch4_lel", T0 + 12, [0.02] * 3)
    assert h.levels("gas_leak", "a") == ["orange", None]


def test_biogas_in_a_sewer_caps_at_yellow_unless_ethane_says_natural_gas():
    sewer = Harness(detector("w", 31.8, context="sewer"), detector("n", 31.8001))
    sewer.series("n", "ch4_lel", T0, [0.6] * 10)
    sewer.series("w", "ch4_lel", T0, RISING_LEAK)
    assert sewer.levels("gas_leak", "w") == ["yellow"]
    assert "biogas" in sewer.transitions[-1].summary or any(
        "biogas" in tr.summary for tr in sewer.transitions
    )

    natural = Harness(detector("w", 31.8, context="sewer"), detector("n", 31.8001))
    natural.series("n", "ch4_lel", T0, [0.6] * 10)
    natural.series("w", "c2h6", T0, [0.01] * 8)  # ethane: pipeline gas, not a sewer
    natural.series("w", "ch4_lel", T0, RISING_LEAK)
    assert natural.levels("gas_leak", "w")[-1] == "red"


def test_central_config_ch4_thresholds_still_apply():
    from central.config import GasRuleConfig
    from central.rules.engine import RuleEngine
    from central.rules.spec import load_rulebook

    eng = RuleEngine(
        load_rulebook(),
        lambda gw, dev: dev,
        lambda a: AssetInfo(a, a),  # generic: the CH4 rule as it always was
        GasRuleConfig(blue=0.05, yellow=0.15, orange=0.30, hysteresis=0.02),
    )
    h = Harness()
    h.engine = eng
    h.series("x", "ch4_lel", T0, [0.16, 0.16, 0.31, 0.35, 0.40])
    assert h.levels("gas_leak") == ["yellow", "orange", "red"]  # generic: no confirmation


# --- CO dose (EN 50291) ----------------------------------------------------------------------


def minutes_to_orange(ppm: float, limit_min: float = 300) -> float | None:
    h = Harness(detector("c", 31.8))
    for i in range(int(limit_min * 6)):  # one reading every 10 s
        h.send("c", "co", T0 + i * 10, ppm)
        if "orange" in h.levels("co_exposure") or "red" in h.levels("co_exposure"):
            return i * 10 / 60
    return None


@pytest.mark.parametrize(
    ("ppm", "earliest", "latest"),
    [(50.0, 60, 90), (100.0, 10, 40), (300.0, 0, 3)],
)
def test_co_alarm_timing_follows_en_50291(ppm, earliest, latest):
    took = minutes_to_orange(ppm)
    assert took is not None and earliest <= took <= latest, took


def test_co_at_30_ppm_never_alarms_within_two_hours():
    assert minutes_to_orange(30.0, limit_min=120) is None


def test_co_dose_steps_up_and_clears_as_it_decays():
    h = Harness(detector("c", 31.8))
    h.series("c", "co", T0, [100.0] * 180, dt=10)  # 30 min at 100 ppm
    assert h.levels("co_exposure") == ["blue", "yellow", "orange"]
    h.series("c", "co", T0 + 1800, [300.0] * 6, dt=10)
    assert h.levels("co_exposure")[-1] == "red"
    h.series("c", "co", T0 + 1900, [2.0] * 1200, dt=10)  # fresh air: the dose decays
    assert h.levels("co_exposure")[-1] is None


@settings(max_examples=60, deadline=None)
@given(st.floats(30, 1000))
def test_alarm_time_falls_as_concentration_rises(ppm):
    rule = CoDoseRule(CoDoseParams(), "co")
    assert rule.alarm_seconds(ppm) >= rule.alarm_seconds(ppm * 1.1)
    assert rule.alarm_seconds(29.9) == float("inf")


# --- H2S ------------------------------------------------------------------------------------


def test_h2s_yellow_orange_hysteresis_and_clear():
    h = Harness(detector("s", 31.8))
    h.series("s", "h2s", T0, [2.0, 8.0, 8.0])
    assert h.levels("h2s_exposure") == ["yellow"]
    h.series("s", "h2s", T0 + 3, [15.0, 15.0])
    assert h.levels("h2s_exposure") == ["yellow", "orange"]
    h.series("s", "h2s", T0 + 5, [13.5, 13.5, 13.5, 13.5])  # inside the 1 ppm hysteresis
    assert h.levels("h2s_exposure") == ["yellow", "orange"]
    h.series("s", "h2s", T0 + 9, [10.0] * 3)
    assert h.levels("h2s_exposure") == ["yellow", "orange", "yellow"]
    h.series("s", "h2s", T0 + 12, [1.0] * 3)
    assert h.levels("h2s_exposure") == ["yellow", "orange", "yellow", None]


def test_a_sustained_rise_below_ten_percent_is_blue_and_noise_is_not():
    h = Harness(detector("a", 31.8))
    h.series("a", "ch4_lel", T0, [0.01 + 0.006 * i for i in range(12)])  # 1 → 7.6 %LEL
    assert h.levels("gas_leak") == ["blue"]
    assert h.transitions[-1].event_time == T0 + 10  # the tenth rising step
    h.series("a", "ch4_lel", T0 + 12, [0.07] * 3)  # the climb stops: cleared after 3
    assert h.levels("gas_leak") == ["blue", None]

    noisy = Harness(detector("a", 31.8))
    noisy.series("a", "ch4_lel", T0, [0.02, 0.03] * 30)  # jitter, no trend
    assert noisy.events == []
