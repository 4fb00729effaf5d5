"""Quality checks and report-by-exception (gateway/reporting.py), on crafted series."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_bridge.senml import Record
from gateway.config import GatewayConfig
from gateway.reporting import (
    QUALITY_FAIL,
    QUALITY_MISSING,
    QUALITY_NOT_EVALUATED,
    QUALITY_PASS,
    QUALITY_SUSPECT,
    ReportFilter,
    ReportingConfig,
    SeriesPolicy,
    worst,
)
from provisioning.configfile import ConfigError, load_yaml_model

T0 = 1_700_000_000.0


def series(values: list[float | bool | str], step: float = 1.0, name: str = "d1/x") -> list[Record]:
    return [Record(name, T0 + i * step, v, update_time=step) for i, v in enumerate(values)]


def filter_with(policy: SeriesPolicy) -> ReportFilter:
    """A filter whose every series follows `policy` (no config round trip)."""
    flt = ReportFilter()
    flt.default = _Fixed(policy)  # type: ignore[assignment]
    return flt


class _Fixed:
    def __init__(self, policy: SeriesPolicy) -> None:
        self._policy = policy

    def policy(self, _quantity: str, _range: object) -> SeriesPolicy:
        return self._policy


def rbe(deadband: float = 0.0, heartbeat: float | None = None, rel: float = 0.0) -> SeriesPolicy:
    return SeriesPolicy(rbe=True, deadband=deadband, deadband_relative=rel, heartbeat_s=heartbeat)


# --- report by exception: properties ------------------------------------------------------

values = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.integers(-1000, 1000),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_deadband_zero_without_heartbeat_sends_every_change(xs: list[float]) -> None:
    flt = filter_with(rbe(0.0, heartbeat=None))
    _, sent = flt.process(series(xs))
    expected = [xs[0]] + [b for a, b in itertools.pairwise(xs) if b != a]
    assert [r.value for r in sent] == expected
    assert flt.counters.suppressed == len(xs) - len(expected)


@settings(max_examples=200, deadline=None)
@given(values, st.floats(min_value=0.0, max_value=1e5), st.floats(min_value=0.0, max_value=2.0))
def test_a_suppressed_value_stays_within_the_deadband_of_the_last_sent(
    xs: list[float], deadband: float, rel: float
) -> None:
    flt = filter_with(rbe(deadband, heartbeat=None, rel=rel))
    records = series(xs)
    last_sent: float | None = None
    for record in records:
        _, sent = flt.process([record])
        if sent:
            assert last_sent is None or abs(record.value - last_sent) > max(
                deadband, rel * abs(last_sent)
            )
            last_sent = float(record.value)
        else:
            assert last_sent is not None
            assert abs(record.value - last_sent) <= max(deadband, rel * abs(last_sent))
    assert flt.counters.seen == len(xs) == flt.counters.sent + flt.counters.suppressed


@settings(max_examples=200, deadline=None)
@given(
    values,
    st.floats(min_value=0.1, max_value=20.0),
    st.floats(min_value=0.05, max_value=3.0),
)
def test_the_heartbeat_bounds_the_gap_between_sent_records(
    xs: list[float], heartbeat: float, step: float
) -> None:
    flt = filter_with(rbe(math.inf, heartbeat=heartbeat))  # only the heartbeat sends
    records = series(xs, step)
    _, sent = flt.process(records)
    times = [r.time for r in sent]
    assert times[0] == records[0].time
    # A heartbeat goes out on the first poll at or after it elapsed: the gap is below
    # heartbeat + one poll interval, which is exactly the `ut` the records announce.
    assert all(b - a < heartbeat + step + 1e-6 for a, b in itertools.pairwise(times))
    assert all(r.update_time == pytest.approx(heartbeat + step) for r in sent)
    assert records[-1].time - times[-1] < heartbeat + 1e-6


def test_rbe_off_passes_every_record_untouched() -> None:
    flt = ReportFilter()
    records = series([1.0, 1.0, 1.0, True, "x"])
    checked, sent = flt.process(records)
    assert sent == records == checked
    assert flt.counters.suppressed == 0


def test_booleans_and_strings_go_out_on_any_change_only() -> None:
    flt = filter_with(rbe(1000.0, heartbeat=None))
    _, sent = flt.process(series([False, False, True, True, False], name="d1/alarm"))
    assert [r.value for r in sent] == [False, True, False]
    _, sent = flt.process(series(["normal", "normal", "fault", "fault"], name="d1/state"))
    assert [r.value for r in sent] == ["normal", "fault"]


def test_a_quality_change_is_reported_even_inside_the_deadband() -> None:
    flt = filter_with(rbe(10.0, heartbeat=None))
    records = series([5.0, 5.0, 5.0, 5.0])
    records[2] = Record(records[2].name, records[2].time, 5.0, quality=QUALITY_FAIL)
    _, sent = flt.process(records)
    assert [r.time for r in sent] == [records[0].time, records[2].time, records[3].time]


def test_gateway_status_records_pass_untouched() -> None:
    flt = filter_with(rbe(1e9, heartbeat=None))
    status = [Record("gateway/outbox_depth", T0 + i, 0.0, "count", 30.0) for i in range(3)]
    checked, sent = flt.process(status)
    assert sent == status == checked
    assert flt.counters.seen == 0


# --- quality checks -----------------------------------------------------------------------


def test_spike_is_flagged_and_the_series_goes_on() -> None:
    flt = ReportFilter(ranges={"d1/x": (0.0, 100.0)})  # default limit: half the span, 50
    xs = [10.0, 11.0, 10.5, 95.0, 10.8, 11.2]
    checked, sent = flt.process(series(xs))
    assert [r.quality for r in checked] == [None, None, QUALITY_PASS, QUALITY_SUSPECT, 1, 1]
    assert [r.value for r in sent] == xs  # flagged, never dropped
    assert flt.counters.flagged["spike"] == 1


def test_values_outside_the_profile_range_fail_and_stay_out_of_the_histories() -> None:
    """CoAP, serial and BLE sources do not range-check: the filter does, from the profile."""
    flt = ReportFilter(ranges={"d1/x": (0.0, 100.0)})
    xs = [10.0, 10.5, 140.0, 10.7, -3.0, 10.6]
    checked, sent = flt.process(series(xs))
    assert [r.quality for r in checked][2::2] == [QUALITY_FAIL, QUALITY_FAIL]
    # 10.7 and 10.6 are judged against 10.0 and 10.5, not against 140 or -3
    assert checked[3].quality == checked[5].quality == 1
    assert [r.value for r in sent] == xs  # flagged, never dropped
    assert flt.counters.flagged["gross_range"] == 2


def test_a_step_costs_at_most_one_suspect_sample() -> None:
    flt = ReportFilter(ranges={"d1/x": (0.0, 100.0)})
    xs = [5.0, 5.0, 5.0, 80.0, 81.0, 80.5, 79.0]
    checked, _ = flt.process(series(xs))
    assert [r.quality for r in checked][3:] == [QUALITY_SUSPECT, 1, 1, 1]


def test_a_point_without_range_is_not_spike_checked_unless_a_limit_is_set() -> None:
    xs = [1.0, 1.0, 1.0, 1e6, 1.0]
    checked, _ = ReportFilter().process(series(xs))
    assert all(r.quality is None for r in checked)  # no flag: not "2", which central skips
    config = ReportingConfig.model_validate({"spike": {"limit": 10, "flag": 4}})
    checked, _ = ReportFilter(config).process(series(xs))
    assert checked[3].quality == QUALITY_FAIL


def test_stuck_value_is_flagged_after_n_repeats_over_the_span() -> None:
    config = ReportingConfig.model_validate(
        {"flat_line": {"enabled": True, "repeats": 4, "tolerance": 0.01, "span_s": 2.0}}
    )
    flt = ReportFilter(config)
    xs = [1.0, 1.3, 2.0, 2.005, 1.995, 2.0, 2.01, 2.3]
    checked, _ = flt.process(series(xs))
    # run of 2.0±0.01 starts at index 2: the 4th repeat (index 5) spans 3 s >= 2 s.
    assert [r.quality for r in checked] == [1, 1, 1, 1, 1, 3, 3, 1]
    assert flt.counters.flagged["flat_line"] == 2


def test_rate_of_change_flags_a_jump_faster_than_the_limit() -> None:
    config = ReportingConfig.model_validate(
        {"rate_of_change": {"enabled": True, "max_per_s": 0.5}, "spike": {"enabled": False}}
    )
    checked, _ = ReportFilter(config).process(series([1.0, 1.2, 1.4, 3.0, 3.1], step=1.0))
    assert [r.quality for r in checked] == [None, 1, 1, QUALITY_SUSPECT, 1]


def test_the_worst_flag_wins_and_gross_range_failures_are_kept_and_counted() -> None:
    assert worst(QUALITY_PASS, QUALITY_SUSPECT, None) == QUALITY_SUSPECT
    assert worst(QUALITY_NOT_EVALUATED, QUALITY_PASS) == QUALITY_PASS
    assert worst(QUALITY_FAIL, QUALITY_MISSING) == QUALITY_MISSING
    assert worst(None, None) is None
    config = ReportingConfig.model_validate(
        {"flat_line": {"enabled": True, "repeats": 2}, "spike": {"enabled": False}}
    )
    flt = ReportFilter(config)
    records = series([3.0, 3.0, 3.0])
    records[1] = Record("d1/x", records[1].time, 3.0, quality=QUALITY_PASS)
    records[2] = Record("d1/x", records[2].time, 3.0, quality=QUALITY_FAIL)
    checked, sent = flt.process(records)
    assert [r.quality for r in checked] == [1, QUALITY_SUSPECT, QUALITY_FAIL]
    assert len(sent) == 3 and flt.counters.flagged["gross_range"] == 1


def test_per_quantity_overrides_and_per_device_configs() -> None:
    gateway_default = ReportingConfig.model_validate(
        {"rbe": True, "deadband": 1.0, "heartbeat_s": 60, "quantities": {"t": {"deadband": 5}}}
    )
    device = ReportingConfig()  # this device reports everything
    flt = ReportFilter(gateway_default, {"d2": device})
    xs = [10.0, 12.0, 14.0, 16.0]
    _, sent_x = flt.process(series(xs, name="d1/x"))
    _, sent_t = flt.process(series(xs, name="d1/t"))
    _, sent_d2 = flt.process(series(xs, name="d2/x"))
    assert len(sent_x) == 4 and [r.value for r in sent_t] == [10.0, 16.0] and len(sent_d2) == 4
    assert sent_t[0].update_time == 61.0  # heartbeat + poll interval
    assert sent_d2[0].update_time == 1.0  # RBE off: ut untouched


# --- configuration ------------------------------------------------------------------------


def gateway_yaml(tmp_path, reporting: str) -> str:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "site: s1\ngateway_id: g1\n"
        "devices:\n"
        "  - id: gas-1\n"
        "    profile: gas-detector\n"
        "    transport: {type: modbus-tcp, port: 1502}\n"
        "    poll_interval: 1\n"
        f"{reporting}"
    )
    return str(path)


def test_default_config_changes_nothing_on_the_wire(tmp_path) -> None:
    config = load_yaml_model(gateway_yaml(tmp_path, ""), GatewayConfig)
    assert config.reporting.rbe is False and config.devices[0].reporting is None


def test_device_reporting_loads_from_yaml(tmp_path) -> None:
    text = (
        "    reporting:\n"
        "      rbe: true\n"
        "      heartbeat_s: 120\n"
        "      quantities:\n"
        "        ch4_lel: {deadband: 0.01}\n"
    )
    config = load_yaml_model(gateway_yaml(tmp_path, text), GatewayConfig)
    reporting = config.devices[0].reporting
    assert reporting is not None and reporting.quantities["ch4_lel"].deadband == 0.01


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        ("    reporting: {rbe: true, heartbeat_s: null}\n", 8, "devices[0].reporting", "heartbeat"),
        (
            "    reporting:\n      deadband: -1\n",
            9,
            "devices[0].reporting.deadband",
            "greater than or equal",
        ),
        (
            "    reporting:\n      rate_of_change: {enabled: true}\n",
            9,
            "devices[0].reporting.rate_of_change",
            "max_per_s",
        ),
        (
            "    reporting:\n      quantities:\n        co: {deadbnd: 2}\n",
            10,
            "devices[0].reporting.quantities.co.deadbnd",
            "Extra inputs",
        ),
    ],
)
def test_reporting_errors_point_at_file_line_and_field(
    tmp_path, text: str, line: int, field: str, message: str
) -> None:
    path = gateway_yaml(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_yaml_model(path, GatewayConfig)
    problem = caught.value.problems[0]
    assert (problem.line, problem.field) == (line, field), str(caught.value)
    assert message in problem.message
    assert f"{path}:{line}" in str(caught.value)


def test_an_override_cannot_turn_the_heartbeat_off_while_rbe_is_on() -> None:
    with pytest.raises(ValueError, match=r"quantities\.co: heartbeat_s is required"):
        ReportingConfig.model_validate({"rbe": True, "quantities": {"co": {"heartbeat_s": None}}})
    config = ReportingConfig.model_validate({"quantities": {"co": {"heartbeat_s": None}}})
    assert config.policy("co", None).heartbeat_s is None  # fine while RBE is off
