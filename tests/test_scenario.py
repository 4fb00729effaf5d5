"""Scenario model: phases, derive, clamping, faults, the gas-leak tuning, config errors."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from drivers.modbus.codec import decode_point, encode_point
from drivers.sim.scenario import (
    SPIKE_SECONDS,
    DeviceSpec,
    Scenario,
    ScenarioClock,
    effective_time,
    load_scenario,
    sample_rng,
    scenario_dir,
    silent_at,
    values_at,
)
from provisioning.configfile import ConfigError, parse_yaml_model


def scenario(body: str, source: str = "test.yaml") -> Scenario:
    return parse_yaml_model(textwrap.dedent(body), Scenario, source)


def device(body: str) -> DeviceSpec:
    """A one-device scenario; `body` is the device's YAML without its `- id:` line."""
    head = "name: t\nduration: 60\ndevices:\n  - id: d\n    profile: gas-detector\n"
    head += "    device_id: 1\n"
    return parse_yaml_model(
        head + textwrap.indent(textwrap.dedent(body), "    "), Scenario
    ).devices[0]


# --- phases ------------------------------------------------------------------------------------


def test_gas_leak_phases_without_noise() -> None:
    gas1 = load_scenario("gas-leak").device("gas-1")
    lel = {t: values_at(gas1, t)["ch4_lel"] for t in (0, 5, 13, 21, 25, 30, 33.5, 37, 40)}
    assert lel[0] == lel[5] == 0.02
    assert lel[13] == pytest.approx(0.02 + 0.6 * 8 / 16)
    assert lel[21] == lel[25] == lel[30] == pytest.approx(0.62)
    assert lel[33.5] == pytest.approx(0.62 - 0.6 * 3.5 / 7)
    assert lel[37] == lel[40] == pytest.approx(0.02)


def test_interrupted_ramp_starts_next_phase_where_it_got() -> None:
    d = device(
        """\
        signals:
          co:
            baseline: 0
            phases:
              - {at: 0, ramp_to: 100, over: 10}
              - {at: 5, ramp_to: 0, over: 5}
              - {at: 20, set: 7}
        """
    )
    assert values_at(d, 5)["co"] == pytest.approx(50)
    assert values_at(d, 7.5)["co"] == pytest.approx(25)
    assert values_at(d, 15)["co"] == 0
    assert values_at(d, 20)["co"] == 7


# --- derive and clamp --------------------------------------------------------------------------


def test_derive_follows_the_noisy_source() -> None:
    gas1 = load_scenario("gas-leak").device("gas-1")
    values = values_at(gas1, 12.0, random.Random(3))
    assert values["ch4"] == pytest.approx(values["ch4_lel"] * 50000)
    assert values["o2"] == pytest.approx(0.209 - 0.0105 * values["ch4_lel"])
    assert values["alarm1"] is (values["ch4_lel"] >= 0.25)
    assert values["sensor_state"] == "normal"
    assert values["fault"] is False


def test_values_are_clamped_to_the_point_range() -> None:
    d = device(
        """\
        values: {o2: 0.5}
        signals:
          ch4_lel: {baseline: 0, noise: 0.2, phases: [{at: 10, set: 1.5}]}
          h2s: {derive: {from: ch4_lel, scale: 1000}}
        """
    )
    rng = random.Random(1)
    samples = [values_at(d, t / 10, rng) for t in range(200)]
    assert all(0 <= s["ch4_lel"] <= 1 for s in samples)
    assert any(s["ch4_lel"] == 0 for s in samples[:100])  # negative noise clamps at 0
    assert all(s["ch4_lel"] == 1 for s in samples[100:])
    assert all(s["h2s"] <= 200 for s in samples)  # derived values clamp too
    assert samples[0]["o2"] == 0.25


def test_noise_is_reproducible_per_sample() -> None:
    gas1 = load_scenario("gas-leak").device("gas-1")
    a = values_at(gas1, 7.25, sample_rng(4, "gas-1", 7.25))
    b = values_at(gas1, 7.25, sample_rng(4, "gas-1", 7.25))
    c = values_at(gas1, 7.25, sample_rng(5, "gas-1", 7.25))
    assert a == b
    assert a["ch4_lel"] != c["ch4_lel"]


# --- the gas-leak tuning the gateway tests rely on -----------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_gas_leak_is_tuned_for_half_second_polling(seed: int) -> None:
    sc = load_scenario("gas-leak")
    gas1 = sc.device("gas-1")
    lel_point = gas1.profile_model.point("ch4_lel")
    times = [i * 0.5 for i in range(int(sc.duration / 0.5))]

    def decoded(t: float) -> float:
        # what a gateway decodes: noise, clamping and register quantisation included
        value = values_at(gas1, t, sample_rng(seed, "gas-1", t))["ch4_lel"]
        return float(decode_point(lel_point, encode_point(lel_point, value)))  # type: ignore[arg-type]

    lel = [decoded(t) for t in times]
    rising = [v for t, v in zip(times, lel, strict=True) if 5 <= t <= 21]
    assert rising[0] < 0.25 < 0.5 < rising[-1] and rising[-1] > 0.6
    # strictly rising sample to sample once above 0.5 (and almost everywhere below)
    above = [i for i in range(1, len(rising)) if rising[i - 1] > 0.5]
    assert all(rising[i] > rising[i - 1] for i in above)
    assert sum(rising[i] <= rising[i - 1] for i in range(1, len(rising))) <= 1
    holding = [v for t, v in zip(times, lel, strict=True) if 21 <= t <= 30]
    assert all(abs(v - 0.62) < 0.015 for v in holding)
    tail = [v for t, v in zip(times, lel, strict=True) if t >= sc.duration - 7]
    assert len(tail) >= 14 and all(v < 0.04 for v in tail)


def test_gas_2_never_alarms() -> None:
    gas2 = load_scenario("gas-leak").device("gas-2")
    assert (
        max(values_at(gas2, t / 2, sample_rng(0, "gas-2", t / 2))["ch4_lel"] for t in range(90))
        < 0.25
    )


# --- faults ------------------------------------------------------------------------------------

FAULTS = """\
signals:
  ch4_lel: {baseline: 0.1, noise: 0.01, phases: [{at: 0, ramp_to: 0.5, over: 40}]}
faults:
  - {at: 10, until: 15, kind: stuck}
  - {at: 20, until: 25, kind: silent}
  - {at: 30, kind: spike, point: co, value: 999}
  - {at: 40, until: 45, kind: stuck, point: h2s, value: 150}
  - {at: 50, kind: stuck, point: ch4_lel}
"""


def test_stuck_device_freezes_everything() -> None:
    d = device(FAULTS)
    assert effective_time(d, 12) == 10
    assert effective_time(d, 15) == 15
    frozen = values_at(d, 10, sample_rng(0, "d", 10))
    assert values_at(d, 14.9, sample_rng(0, "d", effective_time(d, 14.9))) == frozen
    assert values_at(d, 15)["ch4_lel"] != frozen["ch4_lel"]


def test_silent_window() -> None:
    d = device(FAULTS)
    assert [silent_at(d, t) for t in (19.9, 20, 24.9, 25)] == [False, True, True, False]


def test_spike_lasts_one_sample_and_is_not_clamped() -> None:
    d = device(FAULTS)
    assert "co" not in values_at(d, 29.9)
    assert values_at(d, 30)["co"] == 999
    assert values_at(d, 30 + SPIKE_SECONDS - 0.01)["co"] == 999
    assert "co" not in values_at(d, 30 + SPIKE_SECONDS)


def test_spike_outside_range_is_kept_implausible() -> None:
    d = device("faults: [{at: 1, kind: spike, point: o2, value: 0.9}]\nvalues: {o2: 0.209}\n")
    assert values_at(d, 1.2)["o2"] == 0.9  # range is 0..0.25: the gateway must flag it
    assert values_at(d, 2)["o2"] == 0.209


def test_stuck_point_with_and_without_value() -> None:
    d = device(FAULTS)
    assert values_at(d, 42)["h2s"] == 150
    assert "h2s" not in values_at(d, 46)
    stuck_at = values_at(d, 50)["ch4_lel"]
    assert values_at(d, 59, random.Random(1))["ch4_lel"] == stuck_at


# --- scenario clock ----------------------------------------------------------------------------


def test_scenario_clock() -> None:
    clock = ScenarioClock(duration=10, start=100.0, speed=2.0)
    assert clock.at(99.0) == 0.0
    assert clock.at(102.5) == 5.0
    assert clock.at(105.0) is None
    looping = ScenarioClock(duration=10, start=100.0, speed=2.0, loop=True)
    assert looping.at(106.0) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        ScenarioClock(duration=10, start=0, speed=0)


# --- loading and config errors -----------------------------------------------------------------


def test_load_by_name_and_path(tmp_path: Path) -> None:
    sc = load_scenario("gas-leak")
    assert sc.name == "gas-leak"
    assert [(d.id, d.device_id) for d in sc.devices] == [("gas-1", 1), ("gas-2", 2)]
    assert sc.duration == 45
    copy = tmp_path / "copy.yaml"
    copy.write_text((scenario_dir() / "gas-leak.yaml").read_text())
    assert load_scenario(copy) == sc
    assert load_scenario(str(copy)).name == "gas-leak"
    with pytest.raises(ConfigError, match=r"available: .*gas-leak"):
        load_scenario("no-such-scenario")
    with pytest.raises(ConfigError, match="file not found"):
        load_scenario(tmp_path / "missing.yaml")


def error_text(body: str) -> str:
    with pytest.raises(ConfigError) as info:
        scenario(body)
    return str(info.value)


BASE = """\
name: t
duration: 30
devices:
  - id: gas-1
    profile: gas-detector
    device_id: 1
"""


@pytest.mark.parametrize(
    ("extra", "where", "message"),
    [
        ("    values: {o2: 0.2, methane: 3}\n", "test.yaml:7:", "no point 'methane'"),
        ("    values: {sensor_state: asleep}\n", "test.yaml:7:", "not one of"),
        ("    values:\n      fault: maybe\n", "test.yaml:8:", "is a bool"),
        (
            "    signals:\n      ch4_lel:\n        phases:\n          - {at: 5, ramp_to: 0.6}\n",
            "test.yaml:10:",
            "ramp_to and over go together",
        ),
        (
            "    signals:\n      ch4_lel:\n        phases:\n          - {at: 5, set: 1}\n"
            "          - {at: 2, set: 0}\n",
            "test.yaml:9:",
            "time order",
        ),
        (
            "    signals:\n      ch4: {derive: {from: ch4_lel, scale: 5}}\n",
            "test.yaml:8:",
            "non-derived signal",
        ),
        ("    signals:\n      alarm1: {baseline: 1}\n", "test.yaml:8:", "needs derive.above"),
        ("    signals:\n      sensor_state: {baseline: 1}\n", "test.yaml:8:", "constant values"),
        ("    faults:\n      - {at: 5, kind: spike}\n", "test.yaml:8:", "needs a point"),
        ("    faults:\n      - {at: 5, until: 2, kind: silent}\n", "test.yaml:8:", "must be after"),
        ("    faults:\n      - {at: 5, kind: stuck, point: nope}\n", "test.yaml:8:", "no point"),
        ("    faults:\n      - {at: 5, kind: melt}\n", "test.yaml:8:", "stuck"),
        ("    faults:\n      - {at: 5, kind: dropout}\n", "test.yaml:8:", "rate (0..1"),
        (
            "    faults:\n      - {at: 5, kind: dropout, rate: 1.5}\n",
            "test.yaml:8:",
            "less than or equal to 1",
        ),
        (
            "    faults:\n      - {at: 5, kind: silent, rate: 0.5}\n",
            "test.yaml:8:",
            "goes with kind: dropout",
        ),
        ("    colour: red\n", "test.yaml:7:", "Extra inputs"),
        (
            "  - id: gas-2\n    profile: gas-detector\n    device_id: 1\n",
            "test.yaml:9:",
            "unit id already used",
        ),
        (
            "  - id: gas-1\n    profile: gas-detector\n    device_id: 2\n",
            "test.yaml:7:",
            "duplicate id",
        ),
    ],
)
def test_config_errors_point_at_the_line(extra: str, where: str, message: str) -> None:
    text = error_text(BASE + extra)
    assert where in text, text
    assert message in text, text


def test_unknown_profile_is_reported_at_the_profile_line() -> None:
    text = error_text(BASE.replace("gas-detector", "pressure-cooker"))
    assert text.startswith("test.yaml:5:"), text
    assert "available:" in text and "gas-detector" in text


def test_broken_profile_file_is_reported_with_its_own_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nfamily: gas\ntransport: modbus-tcp\npoints:\n  - name: x\n"
        "    table: input\n    address: -1\n"
    )
    text = error_text(BASE.replace("gas-detector", str(bad)))
    assert "test.yaml:5:" in text
    assert f"{bad}:7:" in text
