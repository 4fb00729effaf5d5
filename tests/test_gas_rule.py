"""The CH4 rule: levels, persistence, rising, hysteresis, event time, quality."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from central.config import GasRuleConfig
from central.rules.gas import GasCh4Rule

T0 = 1_800_000_000.0


def run(values: list[float], config: GasRuleConfig | None = None, dt: float = 1.0):
    rule = GasCh4Rule(config or GasRuleConfig())
    out = []
    for i, v in enumerate(values):
        tr = rule.observe("asset-1", T0 + i * dt, v)
        if tr is not None:
            out.append((i, tr.level))
    return out


def test_yellow_needs_two_consecutive_samples():
    assert run([0.02, 0.26, 0.02, 0.26]) == []
    assert run([0.02, 0.26, 0.27]) == [(2, "yellow")]


def test_leak_raises_yellow_orange_red_then_steps_down_and_clears():
    ramp = [0.02, 0.1, 0.2, 0.3, 0.35, 0.45, 0.52, 0.56, 0.60, 0.61, 0.61, 0.61]
    fall = [0.5, 0.44, 0.40, 0.35, 0.3, 0.18, 0.12, 0.08, 0.03, 0.02, 0.02]
    events = run(ramp + fall)
    levels = [lvl for _, lvl in events]
    assert levels == ["yellow", "orange", "red", "yellow", None]
    indexes = [i for i, _ in events]
    assert indexes[0] == 4  # yellow: 0.30 then 0.35, the second sample ≥ 25 %
    assert indexes[1] == 6  # orange: the first sample ≥ 50 %
    assert indexes[2] == 8  # red: rising for two steps while ≥ 50 %
    assert indexes[3] == 15  # yellow again: the third sample below 45 %
    assert indexes[4] == 19  # cleared: the third sample below 20 %


def test_red_latches_on_a_plateau():
    # Rising into red, then flat at 60 %: stays red, no Update, no flapping.
    events = run([0.3, 0.3, 0.52, 0.56, 0.60] + [0.60] * 30)
    assert [lvl for _, lvl in events] == ["yellow", "orange", "red"]


def test_orange_without_rise_stays_orange():
    events = run([0.3, 0.3, 0.55, 0.55, 0.55, 0.55])
    assert [lvl for _, lvl in events] == ["yellow", "orange"]


def test_hovering_at_threshold_does_not_flap():
    # Oscillating ±3 %LEL around 25 %: one yellow, never cleared (hysteresis 5 %).
    values = [0.28, 0.28] + [0.22, 0.28] * 40
    assert [lvl for _, lvl in run(values)] == ["yellow"]


def test_clear_needs_consecutive_samples_below_hold():
    values = [0.3, 0.3, 0.1, 0.1, 0.3, 0.1, 0.1, 0.1]
    events = run(values)
    assert events == [(1, "yellow"), (7, None)]


def test_blue_needs_its_duration():
    cfg = GasRuleConfig(blue_hold_s=60)
    assert run([0.12] * 60, cfg) == []
    assert run([0.12] * 62, cfg) == [(60, "blue")]


def test_thresholds_come_from_config():
    cfg = GasRuleConfig(blue=0.05, yellow=0.15, orange=0.30, hysteresis=0.02)
    assert [lvl for _, lvl in run([0.16, 0.16, 0.31], cfg)] == ["yellow", "orange"]


def test_older_samples_go_to_the_late_lane_in_their_own_order():
    rule = GasCh4Rule(GasRuleConfig())
    assert rule.judge("a", T0 + 100, 0.02).lane == "live"
    # A backlog older than the live data: judged in its own lane, with its own persistence.
    assert rule.judge("a", T0 + 1, 0.3).lane == "late"
    late = rule.judge("a", T0 + 2, 0.3)
    assert late.lane == "late" and late.transition is not None
    assert late.transition.level == "yellow" and late.transition.late
    assert late.transition.event_time == T0 + 2
    # Older than what the late lane already judged: truly out of order, ignored and counted.
    assert rule.judge("a", T0 + 1.5, 0.3).lane == "skipped"
    assert rule.out_of_order == 1
    # The live lane never saw any of it.
    assert rule.judge("a", T0 + 101, 0.02).transition is None


def test_runs_do_not_span_a_gap_in_the_data():
    rule = GasCh4Rule(GasRuleConfig())
    assert rule.observe("a", T0, 0.3, update_time=1.0) is None
    # One sample before a 10-minute gap and one after are not "two consecutive samples".
    assert rule.observe("a", T0 + 600, 0.3, update_time=1.0) is None
    tr = rule.observe("a", T0 + 601, 0.3, update_time=1.0)
    assert tr is not None and tr.level == "yellow"


def test_failed_quality_is_not_judged():
    rule = GasCh4Rule(GasRuleConfig())
    assert rule.observe("a", T0, 0.9, quality=4) is None
    assert rule.observe("a", T0 + 1, 0.9, quality=4) is None
    assert rule.skipped_quality == 2
    assert rule.observe("a", T0 + 2, 0.3, quality=1) is None


def test_assets_are_independent():
    rule = GasCh4Rule(GasRuleConfig())
    rule.observe("a", T0, 0.3)
    assert rule.observe("b", T0 + 1, 0.3) is None
    tr = rule.observe("a", T0 + 2, 0.3)
    assert tr is not None and tr.asset == "a"


def test_trigger_values_are_reported():
    rule = GasCh4Rule(GasRuleConfig())
    rule.observe("a", T0, 0.30)
    tr = rule.observe("a", T0 + 1, 0.31)
    assert tr is not None
    assert tr.trigger["CH4_LEL_RATIO"] == "0.3100"
    assert tr.trigger["THRESHOLD_LEL_RATIO"] == "0.2500"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=200))
def test_transitions_alternate_sensibly(values):
    """Never two identical levels in a row; a clear only follows an active level."""
    events = run(values)
    previous = None
    for _, level in events:
        assert level != previous
        previous = level
    if events:
        assert events[0][1] is not None
