"""Thermal camera: static heat, growing hot areas, dT/dt, CO confirmation, persistence."""

from __future__ import annotations

from central.registry import AssetInfo
from tests.test_rules_engine import T0, Harness


def camera(site: str | None = "plant") -> AssetInfo:
    return AssetInfo("cam", "Cable trench camera", type="thermal", site=site)


def frame(
    h: Harness, t: float, t_max: float, t_bg: float = 25.0, hot_px: float = 0.0, **extra: float
) -> None:
    for quantity, value in (("t_bg", t_bg), ("hot_px", hot_px), *extra.items()):
        h.send("cam", quantity, t, value)
    h.send("cam", "t_max", t, t_max)


def test_sunlit_warm_patch_that_does_not_grow_stays_silent():
    h = Harness(camera())
    for i in range(600):  # ten minutes of frames: a 48 °C patch, 23 K over background
        frame(h, T0 + i, 48.0, 25.0, 40.0)
    assert h.events == []


def test_static_heat_steps_up_with_persistence_and_clears():
    h = Harness(camera())
    for i, temp in enumerate([40, 52, 52, 52, 62, 62, 62, 62]):
        frame(h, T0 + i, float(temp), 25.0, 5.0)
    assert h.levels("fire") == ["blue", "yellow"]
    for i in range(8, 12):
        frame(h, T0 + i, 58.0, 25.0, 5.0)  # inside the 3 K hysteresis: still yellow
    assert h.levels("fire") == ["blue", "yellow"]
    for i in range(12, 18):
        frame(h, T0 + i, 30.0, 25.0, 0.0)
    assert h.levels("fire") == ["blue", "yellow", None]


def test_a_single_hot_frame_is_not_a_fire():
    h = Harness(camera())
    for i, temp in enumerate([30, 30, 120, 30, 30, 30]):  # a welding flash, one frame
        frame(h, T0 + i, float(temp), 25.0, 1.0)
    assert h.events == []


def growing_fire(h: Harness, seconds: int, co: float | None = None) -> None:
    for i in range(seconds):
        extra = {} if co is None else {"co": co + i * 0.2}
        # +10 K/min from 40 °C, the hot area doubling every ~30 s
        frame(h, T0 + i, 40.0 + i / 6.0, 25.0, 4.0 * 2 ** (i / 30), **extra)


def test_fast_rise_with_a_growing_hot_area_is_orange_and_co_makes_it_red():
    h = Harness(camera())
    growing_fire(h, 70)
    assert h.levels("fire") == ["yellow", "orange"]
    orange = next(tr for tr in h.transitions if tr.level == "orange")
    assert float(orange.trigger["RATE_K_PER_MIN"]) >= 8.0

    with_co = Harness(camera())
    growing_fire(with_co, 70, co=5.0)
    assert with_co.levels("fire") == ["yellow", "red"]  # no flapping between the two
    assert with_co.transitions[-1].trigger["CO_CONFIRMED"] == "TRUE"


def test_co_from_a_gas_detector_on_the_same_site_confirms():
    h = Harness(camera(site="plant"), AssetInfo("gas", "gas", type="gas", site="plant"))
    for i in range(70):
        h.send("gas", "co", T0 + i, 3.0 + i * 0.5)  # CO climbing next to the camera
        frame(h, T0 + i, 40.0 + i / 6.0, 25.0, 4.0 * 2 ** (i / 30))
    assert h.levels("fire", "cam")[-1] == "red"


def test_fire_probability_is_evidence():
    h = Harness(camera())
    for i in range(6):  # warm but below 50 °C: blue only because the model says fire
        frame(h, T0 + i, 45.0, 25.0, 2.0, fire_prob=0.9)
    assert h.levels("fire") == ["blue"]
    for i in range(6, 12):  # 62 °C and the model agrees: orange, not just yellow
        frame(h, T0 + i, 62.0, 25.0, 2.0, fire_prob=0.9)
    assert h.levels("fire")[-1] == "orange"
