"""What a rule sees besides its own reading: the asset's latest values and shared state.

Rules are instantiated per (asset, lane) and keep their own per-series state. Rules that need
more than one series read :class:`AssetContext` (the latest value of each quantity of the
asset, at event time) and :class:`SharedState` (cross-asset facts: gas readings by position
for neighbour confirmation, rain by site, river rises by station). Both are plain dicts
updated in place: no allocation per reading beyond the dict slot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from central.registry import AssetInfo
from central.rules.base import Level, Transition

Value = float | bool | str


@dataclass(slots=True)
class GasPoint:
    asset: str
    lat: float | None
    lon: float | None
    t: float
    value: float


@dataclass(slots=True)
class SharedState:
    """Cross-asset facts of one lane (live or late), keyed so lookups stay O(1)."""

    gas: dict[str, GasPoint] = field(default_factory=dict)  # series -> latest CH4 ratio
    # (site, quantity) -> (event time, value): rain accumulations, CO, level rises by site
    site: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    # asset -> (event time, rise rate m/h) of river stations, for upstream checks
    rises: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(slots=True)
class AssetContext:
    info: AssetInfo
    shared: SharedState
    late: bool
    ut: float | None = None  # the current reading's SenML update time (gap detection)
    times: dict[str, float] = field(default_factory=dict)  # quantity -> latest event time
    values: dict[str, Value] = field(default_factory=dict)  # quantity -> latest value

    def fresh(self, quantity: str, t: float, max_age_s: float) -> Value | None:
        """The latest value of ``quantity`` if it is no older than ``max_age_s`` at ``t``."""
        seen = self.times.get(quantity)
        if seen is None or t - seen > max_age_s:
            return None
        return self.values[quantity]

    def site_put(self, quantity: str, t: float, value: float) -> None:
        if self.info.site:
            self.shared.site[(self.info.site, quantity)] = (t, value)

    def site_get(self, quantity: str, t: float, max_age_s: float) -> float | None:
        if not self.info.site:
            return None
        got = self.shared.site.get((self.info.site, quantity))
        if got is None or t - got[0] > max_age_s:
            return None
        return got[1]


Output = Transition | Sequence[Transition] | None


class Rule(Protocol):
    rule_id: str
    quantities: tuple[str, ...]

    def step(
        self, ctx: AssetContext, series: str, quantity: str, t: float, value: Value, suspect: bool
    ) -> Output: ...


def meters_between(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Equirectangular distance: exact enough below a few kilometres, and cheap."""
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return 6_371_000.0 * math.hypot(x, y)


def meta_float(info: AssetInfo, key: str, default: float | None = None) -> float | None:
    raw: Any = info.meta.get(key, default)
    if raw is None or isinstance(raw, bool):
        return default
    try:
        return float(raw)
    except (TypeError, ValueError):
        return default


def make_transition(
    source: str,
    warning_type: str,
    level: Level | None,
    t: float,
    rule_id: str,
    trigger: dict[str, str],
    summary: str,
    onset: float | None = None,
    certainty: str | None = None,
) -> Transition:
    """``asset`` carries the source key; fusion replaces it with the asset id."""
    return Transition(
        asset=source,
        warning_type=warning_type,
        level=level,
        event_time=t,
        rule_id=rule_id,
        trigger=trigger,
        summary=summary,
        onset=onset,
        certainty=certainty,
    )
