"""Per-series quality checks and report-by-exception (RBE), between the pollers and the outbox.

Pure: no I/O and no clock of its own. Every decision is made from the records' own fields
(read time, value, quality), so a test can replay a series and get the same verdicts.

Quality (QARTOD-style flags, the same ones central reads as ``q``: 1 pass, 2 not evaluated,
3 suspect, 4 fail, 9 missing). The pollers already run the gross-range test (bus.py marks
a value outside the profile's range 4); here come spike, flat line (stuck) and rate of
change. The worst flag wins, and a failed check never drops a reading: it is flagged.
A record none of the checks could judge keeps the quality it arrived with (often none):
central treats "no flag" as usable, and 2 would make its rules skip the reading.

Report-by-exception: a record is sent when its value moved by more than the deadband since
the last *sent* value (deadband 0: on any change; booleans, enums and strings: on any
change), when its quality flag changed, or when the heartbeat elapsed since the last sent
record of the series. Whatever is held back is counted. With RBE on, a record's ``ut``
becomes heartbeat + poll interval: the longest a quiet-but-alive series can stay silent,
so central does not call it offline.

Conservative defaults: RBE is off (every reading is sent); the spike test runs only on
points with a range (limit: half the range's span; a real step costs at most one suspect
sample); flat-line and rate-of-change checks run only where configured, since what counts
as "stuck" or "too fast" depends on the quantity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud_bridge.senml import Record
from drivers.modbus.profile import DeviceProfile
from drivers.source_profile import SourceProfileBase

__all__ = [
    "CHECKS",
    "QUALITY_FAIL",
    "QUALITY_MISSING",
    "QUALITY_NOT_EVALUATED",
    "QUALITY_PASS",
    "QUALITY_SUSPECT",
    "FlatLineCheck",
    "QuantityReporting",
    "RateOfChangeCheck",
    "ReportCounters",
    "ReportFilter",
    "ReportingConfig",
    "SeriesPolicy",
    "SpikeCheck",
    "profile_ranges",
    "worst",
]

QUALITY_PASS = 1
QUALITY_NOT_EVALUATED = 2
QUALITY_SUSPECT = 3
QUALITY_FAIL = 4
QUALITY_MISSING = 9

# Precedence when flags combine (ioos_qc's order): missing > fail > suspect > pass > n/e.
_RANK = {QUALITY_NOT_EVALUATED: 0, QUALITY_PASS: 1, QUALITY_SUSPECT: 2, QUALITY_FAIL: 3}
_RANK[QUALITY_MISSING] = 4

CHECKS = ("gross_range", "spike", "flat_line", "rate_of_change")
GATEWAY_DEVICE = "gateway"  # the gateway's own status records: never filtered
_GATEWAY_PREFIX = GATEWAY_DEVICE + "/"

Flag = Literal[3, 4]


def worst(*flags: int | None) -> int | None:
    """The flag that wins (None: nothing evaluated); unknown flags rank as a failure."""
    present = [f for f in flags if f is not None]
    if not present:
        return None
    return max(present, key=lambda f: _RANK.get(f, _RANK[QUALITY_FAIL]))


# --- configuration (pydantic: it comes from the gateway's YAML) ---------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpikeCheck(_Strict):
    """|x − median of the last `window` passing values| > limit flags x. A step (the next
    value stays near the flagged one) is accepted at its second sample."""

    enabled: bool = True
    window: int = Field(5, ge=2, le=100, description="values the median is taken over")
    limit: float | None = Field(None, gt=0, description="absolute limit, engineering units")
    range_fraction: float = Field(
        0.5, gt=0, le=10, description="without `limit`: this share of the point's range span"
    )
    flag: Flag = QUALITY_SUSPECT


class FlatLineCheck(_Strict):
    """`repeats` values within `tolerance` of the run's first value, spanning at least
    `span_s` seconds, flag the series (a stuck sensor or a frozen register)."""

    enabled: bool = False
    repeats: int = Field(10, ge=2, le=1_000_000)
    tolerance: float = Field(0.0, ge=0)
    span_s: float = Field(0.0, ge=0)
    flag: Flag = QUALITY_SUSPECT


class RateOfChangeCheck(_Strict):
    """|Δx / Δt| above `max_per_s` (engineering units per second) flags x."""

    enabled: bool = False
    max_per_s: float | None = Field(None, gt=0)
    flag: Flag = QUALITY_SUSPECT

    @model_validator(mode="after")
    def _needs_limit(self) -> Self:
        if self.enabled and self.max_per_s is None:
            raise ValueError("rate_of_change needs max_per_s when enabled")
        return self


class QuantityReporting(_Strict):
    """Per-quantity overrides: only the fields given replace the device's settings."""

    rbe: bool | None = None
    deadband: float | None = Field(None, ge=0)
    deadband_relative: float | None = Field(None, ge=0)
    heartbeat_s: float | None = Field(None, gt=0)
    checks: bool | None = None
    spike: SpikeCheck | None = None
    flat_line: FlatLineCheck | None = None
    rate_of_change: RateOfChangeCheck | None = None


class ReportingConfig(_Strict):
    """``reporting:`` of a gateway (default for its devices) or of one device."""

    rbe: bool = Field(False, description="report by exception (off: every reading is sent)")
    deadband: float = Field(0.0, ge=0, description="absolute change that is reported")
    deadband_relative: float = Field(
        0.0, ge=0, description="relative change (share of the last sent value) that is reported"
    )
    heartbeat_s: float | None = Field(
        300.0, gt=0, description="longest silence of a series when RBE holds its values back"
    )
    checks: bool = Field(True, description="run the quality checks below")
    spike: SpikeCheck = SpikeCheck()
    flat_line: FlatLineCheck = FlatLineCheck()
    rate_of_change: RateOfChangeCheck = RateOfChangeCheck()
    quantities: dict[str, QuantityReporting] = Field(
        default_factory=dict, description="overrides by quantity (point) name"
    )

    @model_validator(mode="after")
    def _heartbeat_with_rbe(self) -> Self:
        # Without a heartbeat a quiet series would look dead to central: refuse it here.
        if self.rbe and self.heartbeat_s is None:
            raise ValueError("heartbeat_s is required when rbe is on")
        for name in self.quantities:
            merged = self.model_copy(update=self._override(name))  # as policy() merges
            rbe, heartbeat = merged.rbe, merged.heartbeat_s
            if rbe and heartbeat is None:
                raise ValueError(f"quantities.{name}: heartbeat_s is required when rbe is on")
        return self

    def policy(self, quantity: str, point_range: tuple[float, float] | None) -> SeriesPolicy:
        """The settings of one series, overrides applied, compiled once."""
        merged = self.model_copy(update=self._override(quantity))
        spike_limit: float | None = None
        if merged.checks and merged.spike.enabled:
            spike_limit = merged.spike.limit
            if spike_limit is None and point_range is not None:
                span = point_range[1] - point_range[0]
                spike_limit = span * merged.spike.range_fraction if span > 0 else None
        flat = merged.flat_line if merged.checks and merged.flat_line.enabled else None
        rate = merged.rate_of_change
        return SeriesPolicy(
            rbe=merged.rbe,
            deadband=merged.deadband,
            deadband_relative=merged.deadband_relative,
            heartbeat_s=merged.heartbeat_s,
            spike_limit=spike_limit,
            spike_window=merged.spike.window,
            spike_flag=merged.spike.flag,
            flat_repeats=flat.repeats if flat else None,
            flat_tolerance=flat.tolerance if flat else 0.0,
            flat_span_s=flat.span_s if flat else 0.0,
            flat_flag=flat.flag if flat else QUALITY_SUSPECT,
            rate_max_per_s=rate.max_per_s if merged.checks and rate.enabled else None,
            rate_flag=rate.flag,
        )

    def _override(self, quantity: str) -> dict[str, object]:
        override = self.quantities.get(quantity)
        if override is None:
            return {}
        return {k: getattr(override, k) for k in override.model_fields_set}


# --- the filter (dataclasses inside) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesPolicy:
    rbe: bool = False
    deadband: float = 0.0
    deadband_relative: float = 0.0
    heartbeat_s: float | None = None
    spike_limit: float | None = None  # None: no spike test
    spike_window: int = 5
    spike_flag: int = QUALITY_SUSPECT
    flat_repeats: int | None = None  # None: no flat-line test
    flat_tolerance: float = 0.0
    flat_span_s: float = 0.0
    flat_flag: int = QUALITY_SUSPECT
    rate_max_per_s: float | None = None  # None: no rate-of-change test
    rate_flag: int = QUALITY_SUSPECT


@dataclass
class ReportCounters:
    seen: int = 0
    sent: int = 0
    suppressed: int = 0
    heartbeats: int = 0  # sent only because the heartbeat elapsed
    flagged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHECKS, 0))

    def as_dict(self) -> dict[str, object]:
        return {
            "seen": self.seen,
            "sent": self.sent,
            "suppressed": self.suppressed,
            "heartbeats": self.heartbeats,
            "flagged": dict(self.flagged),
        }


@dataclass(slots=True)
class _Series:
    policy: SeriesPolicy
    # Passing values the spike median is taken over (a list: a deque costs ~600 bytes,
    # and a gateway holds one per series).
    recent: list[float] = field(default_factory=list)
    spike_pending: float | None = None  # last value flagged as a spike (a step, if it stays)
    flat_ref: float | None = None
    flat_since: float = 0.0
    flat_count: int = 0
    previous: tuple[float, float] | None = None  # (time, value) for the rate of change
    sent_value: object = None
    sent_quality: int | None = None
    sent_time: float | None = None
    # The profile's plausible range: Modbus pollers mark values outside it themselves, the
    # CoAP, serial and BLE sources leave it to this filter.
    gross_range: tuple[float, float] | None = None


class ReportFilter:
    """Flag and (optionally) thin out records, series by series.

    `devices`: a device's own ``reporting:`` (else `default` applies); `ranges`: the
    profile range of each series ("device/quantity"), for the spike test's default limit.
    """

    def __init__(
        self,
        default: ReportingConfig | None = None,
        devices: Mapping[str, ReportingConfig] | None = None,
        ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.default = default or ReportingConfig()
        self.devices = dict(devices or {})
        self.ranges = dict(ranges or {})
        self.counters = ReportCounters()
        self._series: dict[str, _Series] = {}
        self._policies: dict[tuple[int, str, tuple[float, float] | None], SeriesPolicy] = {}

    def process(self, records: Iterable[Record]) -> tuple[list[Record], list[Record]]:
        """(every record, flagged; the records to send). Order is kept in both."""
        checked: list[Record] = []
        send: list[Record] = []
        counters = self.counters
        for record in records:
            series = self._series.get(record.name)
            if series is None:
                if record.name.startswith(_GATEWAY_PREFIX):
                    checked.append(record)
                    send.append(record)
                    continue
                series = self._new_series(record)
            counters.seen += 1
            record = self._check(series, record)
            checked.append(record)
            out = self._report(series, record)
            if out is None:
                counters.suppressed += 1
            else:
                counters.sent += 1
                send.append(out)
        return checked, send

    def _new_series(self, record: Record) -> _Series:
        config = self.devices.get(record.device, self.default)
        point_range = self.ranges.get(record.name)
        key = (id(config), record.quantity, point_range)
        policy = self._policies.get(key)
        if policy is None:  # devices of one model share their policies
            policy = self._policies[key] = config.policy(record.quantity, point_range)
        series = _Series(policy, gross_range=point_range)
        self._series[record.name] = series
        return series

    # -- quality -------------------------------------------------------------------------

    def _check(self, series: _Series, record: Record) -> Record:
        # The hot path of the gateway (every reading): plain comparisons, no allocations
        # unless a flag changes.
        value = record.value
        quality = record.quality
        if quality == QUALITY_FAIL:
            self.counters.flagged["gross_range"] += 1
            return record  # an implausible value must not enter the histories
        if isinstance(value, (bool, str)) or not math.isfinite(value):
            return record
        policy = series.policy
        x = float(value)
        flagged = self.counters.flagged
        bounds = series.gross_range
        if bounds is not None and not bounds[0] <= x <= bounds[1]:
            flagged["gross_range"] += 1
            return replace(record, quality=QUALITY_FAIL)  # kept out of the histories too
        if policy.spike_limit is not None:
            flag = self._spike(series, x, policy.spike_limit)
            if flag is not None:
                if flag != QUALITY_PASS:
                    flagged["spike"] += 1
                quality = _worse(quality, flag)
        if policy.flat_repeats is not None:
            flag = self._flat_line(series, record.time, x)
            if flag != QUALITY_PASS:
                flagged["flat_line"] += 1
            quality = _worse(quality, flag)
        if policy.rate_max_per_s is not None:
            flag = self._rate(series, record.time, x, policy.rate_max_per_s)
            if flag is not None:
                if flag != QUALITY_PASS:
                    flagged["rate_of_change"] += 1
                quality = _worse(quality, flag)
        return record if quality == record.quality else replace(record, quality=quality)

    @staticmethod
    def _spike(series: _Series, x: float, limit: float) -> int | None:
        recent = series.recent
        if len(recent) < 2:
            recent.append(x)
            return None  # not enough history to judge
        if abs(x - _median(recent)) <= limit:
            recent.append(x)
            if len(recent) > series.policy.spike_window:
                del recent[0]
            series.spike_pending = None
            return QUALITY_PASS
        pending = series.spike_pending
        if pending is not None and abs(x - pending) <= limit:
            # The level stayed where the "spike" went: a step. Judge from the new level on.
            recent[:] = (pending, x)
            series.spike_pending = None
            return QUALITY_PASS
        series.spike_pending = x
        return series.policy.spike_flag

    @staticmethod
    def _flat_line(series: _Series, t: float, x: float) -> int:
        policy = series.policy
        ref = series.flat_ref
        if ref is not None and abs(x - ref) <= policy.flat_tolerance:
            series.flat_count += 1
        else:
            series.flat_ref, series.flat_since, series.flat_count = x, t, 1
        assert policy.flat_repeats is not None
        if series.flat_count >= policy.flat_repeats and t - series.flat_since >= policy.flat_span_s:
            return policy.flat_flag
        return QUALITY_PASS

    @staticmethod
    def _rate(series: _Series, t: float, x: float, max_per_s: float) -> int | None:
        previous, series.previous = series.previous, (t, x)
        if previous is None or t <= previous[0]:
            return None
        rate = abs(x - previous[1]) / (t - previous[0])
        return series.policy.rate_flag if rate > max_per_s else QUALITY_PASS

    # -- report by exception ---------------------------------------------------------------

    def _report(self, series: _Series, record: Record) -> Record | None:
        policy = series.policy
        if not policy.rbe:
            return record
        reason = self._due(series, record)
        if reason is None:
            return None
        if reason == "heartbeat":
            self.counters.heartbeats += 1
        series.sent_value, series.sent_quality, series.sent_time = (
            record.value,
            record.quality,
            record.time,
        )
        # The longest silence now: a heartbeat goes out on the first poll after it elapsed.
        # (No heartbeat, no promise: the config refuses that, a bare SeriesPolicy may not.)
        if policy.heartbeat_s is None:
            return replace(record, update_time=None)
        return replace(record, update_time=policy.heartbeat_s + (record.update_time or 0.0))

    @staticmethod
    def _due(series: _Series, record: Record) -> str | None:
        if series.sent_time is None:
            return "first"
        if record.quality != series.sent_quality:
            return "quality"
        policy = series.policy
        if policy.heartbeat_s is not None and record.time - series.sent_time >= policy.heartbeat_s:
            return "heartbeat"
        if _moved(series.sent_value, record.value, policy):
            return "change"
        return None


def _worse(current: int | None, flag: int) -> int:
    if current is None:
        return flag
    return flag if _RANK.get(flag, 3) > _RANK.get(current, 3) else current


def _median(values: list[float]) -> float:
    # statistics.median type-checks every value; this is the same number, several x faster.
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _moved(last: object, value: object, policy: SeriesPolicy) -> bool:
    """Whether `value` differs from the last sent one by more than the deadband."""
    if isinstance(value, bool | str) or isinstance(last, bool | str):
        return type(value) is not type(last) or value != last
    assert isinstance(value, int | float) and isinstance(last, int | float)
    if math.isnan(value) or math.isnan(last):
        return math.isnan(value) != math.isnan(last)
    if math.isinf(value) or math.isinf(last):
        return value != last
    # Strictly more than the deadband: deadband 0 reports every change, never a repeat.
    return abs(value - last) > max(policy.deadband, policy.deadband_relative * abs(last))


def profile_ranges(
    device: str, profile: DeviceProfile | SourceProfileBase
) -> dict[str, tuple[float, float]]:
    """The plausible range of each series of one device, from its profile (any transport):
    the gross range test, and the spike test's default limit."""
    return {f"{device}/{p.name}": p.range for p in profile.points if p.range is not None}
