"""River stage, rate of rise, suspect rises, forecasts and rainstorm accumulations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from central.registry import AssetInfo
from tests.test_rules_engine import T0, Harness

STATION = {"warning_level_m": 5.0, "guarantee_level_m": 6.0, "historical_max_m": 7.0}
H = 3600.0


def station(name: str = "st", site: str | None = "river-a", **meta) -> AssetInfo:
    return AssetInfo(
        name, name, 31.8, 117.2, type="water-level", site=site, meta={**STATION, **meta}
    )


def test_stage_levels_step_up_down_with_hysteresis_and_clear():
    h = Harness(station())
    h.series("st", "level", T0, [4.0, 4.0, 4.75, 4.75], dt=300)  # within 0.3 m: blue
    assert h.levels("river_flood") == ["blue"]
    h.series("st", "level", T0 + 1200, [5.1, 5.1, 6.05, 6.05], dt=300)
    assert h.levels("river_flood") == ["blue", "yellow", "orange"]
    h.series("st", "level", T0 + 2400, [5.98] * 5, dt=300)  # inside 0.05 m: stays orange
    assert h.levels("river_flood")[-1] == "orange"
    h.series("st", "level", T0 + 4000, [5.5] * 3, dt=300)
    assert h.levels("river_flood")[-1] == "yellow"
    h.series("st", "level", T0 + 5000, [3.0] * 3, dt=300)
    assert h.levels("river_flood") == ["blue", "yellow", "orange", "yellow", None]


def test_fast_rise_raises_one_level_after_three_samples():
    h = Harness(station())
    # 0.1 m per 5 min = 1.2 m/h > 0.3 m/h, still 1 m below the warning level
    h.series("st", "level", T0, [3.6, 3.7, 3.8, 3.9, 4.0], dt=300)
    assert h.levels("river_flood") == ["blue"]
    assert "one level up" in h.transitions[-1].summary
    assert float(h.transitions[-1].trigger["RISE_M_PER_H"]) > 1.0


def test_a_rise_without_rain_or_upstream_rise_is_suspect():
    h = Harness(station(), AssetInfo("rg", "rg", type="rain-gauge", site="river-a"))
    h.series("rg", "rain_acc", T0 - 2 * H, [10.0] * 30, dt=300)  # dry: no accumulation
    h.series("st", "level", T0, [5.0, 5.2, 5.4, 5.6, 5.8, 6.1, 6.3], dt=300)
    assert h.levels("river_flood") == ["blue"]
    assert any("suspect" in tr.summary for tr in h.transitions)


def test_the_same_rise_with_an_upstream_rise_is_believed():
    up = station("up", site="river-up")
    h = Harness(
        station(upstream=["up"]), up, AssetInfo("rg", "rg", type="rain-gauge", site="river-a")
    )
    h.series("rg", "rain_acc", T0 - 2 * H, [10.0] * 30, dt=300)
    h.series("up", "level", T0 - 600, [2.0, 2.2, 2.4], dt=300)
    h.series("st", "level", T0, [5.0, 5.2, 5.4, 5.6, 5.8, 6.1, 6.3], dt=300)
    assert h.levels("river_flood", "st")[-1] in ("orange", "red")


def test_level_forecast_is_a_likely_early_warning_with_onset():
    h = Harness(station())
    h.series("st", "level_30min", T0, [5.2, 5.3], dt=300)
    [tr] = [t for t in h.transitions if t.warning_type == "river_flood_forecast"]
    assert tr.level == "yellow" and tr.certainty == "Likely"
    assert tr.onset == T0 + 300 + 1800


def rain_levels(mm_per_step: float, steps: int, dry: int = 0, dt: float = 600) -> list:
    h = Harness(AssetInfo("rg", "rg", type="rain-gauge"))
    total = 0.0
    for i in range(steps + dry):
        h.send("rg", "rain_acc", T0 + i * dt, total)
        if i < steps:
            total += mm_per_step
    return h.levels("rainstorm")


def test_cma_thresholds_per_window():
    # 50 mm spread evenly over 12 h → blue; over 6 h → yellow; over 3 h → orange.
    assert rain_levels(51 / 72, 73) == ["blue"]
    assert rain_levels(51 / 36, 37) == ["yellow"]
    assert rain_levels(51 / 18, 19) == ["orange"]
    assert rain_levels(101 / 18, 19)[-1] == "red"
    assert rain_levels(49 / 18, 19) == []  # 49 mm in 3 h: nothing yet
    # After the storm the windows empty out and the warning clears.
    assert rain_levels(51 / 18, 19, dry=80)[-1] is None


def test_rain_counter_reset_is_not_negative_rain():
    h = Harness(AssetInfo("rg", "rg", type="rain-gauge"))
    h.series("rg", "rain_acc", T0, [900.0, 910.0, 0.0, 5.0], dt=600)
    assert h.levels("rainstorm") == []
    h.series("rg", "rain_acc", T0 + 2400, [5.0 + 10 * i for i in range(1, 12)], dt=600)
    assert h.levels("rainstorm")[-1] == "red"  # 110 mm in under 2 h


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 5), min_size=2, max_size=80))
def test_rain_accumulation_never_exceeds_what_fell(increments):
    h = Harness(AssetInfo("rg", "rg", type="rain-gauge"))
    total = 0.0
    for i, inc in enumerate(increments):
        total += inc
        h.send("rg", "rain_acc", T0 + i * 600, total)
    for tr in h.transitions:
        assert float(tr.trigger["RAIN_24H_MM"]) <= total + 1e-6
