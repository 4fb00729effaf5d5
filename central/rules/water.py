"""River stage, level forecast and rainstorm rules (MWR water-level signals, CMA rainstorms).

Station levels come from asset meta: ``warning_level_m`` (警戒水位), ``guarantee_level_m``
(保证水位), ``historical_max_m``; a missing one disables its level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from central.registry import AssetInfo
from central.rules.base import level_of
from central.rules.context import AssetContext, Output, Value, make_transition, meta_float
from central.rules.machine import NO_CAP, Debounce, LevelState, ThresholdSeries, rank_up
from central.rules.params import RuleParams

FLOOD_WARNING = "river_flood"
FORECAST_WARNING = "river_flood_forecast"
RAIN_WARNING = "rainstorm"


def station_thresholds(info: AssetInfo, near_m: float) -> tuple[float, float, float, float]:
    warning = meta_float(info, "warning_level_m")
    guarantee = meta_float(info, "guarantee_level_m")
    record = meta_float(info, "historical_max_m")
    inf = math.inf
    return (
        inf if warning is None else warning - near_m,
        inf if warning is None else warning,
        inf if guarantee is None else guarantee,
        inf if record is None else record,
    )


class RiverLevelParams(RuleParams):
    kind: Literal["river_level"] = "river_level"
    quantity: str = "level"
    near_m: float = Field(0.3, ge=0, description="blue this close below the warning level")
    hysteresis_m: float = Field(0.05, ge=0)
    raise_samples: int = Field(2, ge=1)
    clear_samples: int = Field(3, ge=1)
    rise_m_per_h: float = Field(
        0.3, gt=0, description="rate of rise R that raises one level (meta rise_m_per_h)"
    )
    rise_samples: int = Field(3, ge=1)
    rain_quantity: str = Field("rain_6h", description="site fact published by the rain rule")
    rain_max_age_s: float = Field(3600.0, gt=0)
    no_rain_mm: float = Field(2.0, ge=0, description="rain below this counts as none")
    upstream_max_age_s: float = Field(3 * 3600.0, gt=0)


@dataclass(slots=True)
class _River:
    last_t: float | None = None
    last_v: float = 0.0
    rise_run: int = 0
    m: LevelState = field(default_factory=LevelState)


class RiverLevelRule:
    warning_type = FLOOD_WARNING

    def __init__(self, params: RiverLevelParams, info: AssetInfo, rule_id: str) -> None:
        self.p = params
        self.rule_id = rule_id
        self.quantities = (params.quantity,)
        self.enter = station_thresholds(info, params.near_m)
        self.hold = tuple(x - params.hysteresis_m for x in self.enter)
        self.rise = meta_float(info, "rise_m_per_h", params.rise_m_per_h) or params.rise_m_per_h
        upstream = info.meta.get("upstream")
        self.upstream = [str(a) for a in upstream] if isinstance(upstream, list) else []
        self._debounce = Debounce(params.raise_samples, 0.0, params.clear_samples)
        self._states: dict[str, _River] = {}

    def _unexplained(self, ctx: AssetContext, t: float) -> bool:
        """Rising with no rain at the site and no rise upstream: suspect (at most blue).

        Only when the site's rain is known: without a gauge nothing can be said."""
        rain = ctx.site_get(self.p.rain_quantity, t, self.p.rain_max_age_s)
        if rain is None or rain >= self.p.no_rain_mm:
            return False
        for other in self.upstream:
            seen = ctx.shared.rises.get(other)
            if seen and t - seen[0] <= self.p.upstream_max_age_s and seen[1] > self.rise / 2:
                return False
        return True

    def step(
        self, ctx: AssetContext, series: str, quantity: str, t: float, value: Value, suspect: bool
    ) -> Output:
        if not isinstance(value, float):
            return None
        s = self._states.get(series)
        if s is None:
            s = self._states[series] = _River()
        rate = 0.0
        if s.last_t is not None and t > s.last_t:
            rate = (value - s.last_v) / ((t - s.last_t) / 3600.0)
            s.rise_run = s.rise_run + 1 if rate > self.rise else 0
        s.last_t, s.last_v = t, value
        ctx.shared.rises[ctx.info.id] = (t, rate)
        enter = rank_up(value, self.enter)
        hold = rank_up(value, self.hold)  # type: ignore[arg-type]
        rising = s.rise_run >= self.p.rise_samples
        if rising:
            enter = min(4, enter + 1)
            hold = max(hold, enter)
        cap = NO_CAP
        unexplained = s.rise_run > 0 and self._unexplained(ctx, t)
        if suspect or unexplained:
            cap = 1
        if not self._debounce.step(s.m, t, enter, hold, cap):
            return None
        level = level_of(s.m.emitted)
        notes = []
        if rising:
            notes.append(f"rising {rate:.2f} m/h for {s.rise_run} samples: one level up")
        if unexplained:
            notes.append("rise without rain or upstream rise: suspect, at most blue")
        summary = f"Stage {value:.2f} m: {level or 'cleared'}"
        if notes:
            summary += "; " + "; ".join(notes)
        return make_transition(
            series,
            FLOOD_WARNING,
            level,
            t,
            self.rule_id,
            {"LEVEL_M": f"{value:.3f}", "RISE_M_PER_H": f"{rate:.3f}"},
            summary,
        )


class RiverForecastParams(RuleParams):
    """The edge model's 30-minute level forecast as an early (Likely) warning."""

    kind: Literal["river_forecast"] = "river_forecast"
    quantity: str = "level_30min"
    horizon_s: float = Field(1800.0, gt=0)
    near_m: float = Field(0.3, ge=0)
    hysteresis_m: float = Field(0.05, ge=0)
    raise_samples: int = Field(2, ge=1)
    clear_samples: int = Field(2, ge=1)


class RiverForecastRule:
    warning_type = FORECAST_WARNING

    def __init__(self, params: RiverForecastParams, info: AssetInfo, rule_id: str) -> None:
        self.p = params
        self.rule_id = rule_id
        self.quantities = (params.quantity,)
        self._levels = ThresholdSeries(
            station_thresholds(info, params.near_m),
            params.hysteresis_m,
            Debounce(params.raise_samples, 0.0, params.clear_samples),
        )

    def step(
        self, ctx: AssetContext, series: str, quantity: str, t: float, value: Value, suspect: bool
    ) -> Output:
        if not isinstance(value, float):
            return None
        if not self._levels.step(series, t, value, suspect):
            return None
        level = self._levels.level(series)
        return make_transition(
            series,
            FORECAST_WARNING,
            level,
            t,
            self.rule_id,
            {"FORECAST_LEVEL_M": f"{value:.3f}", "HORIZON_S": f"{self.p.horizon_s:.0f}"},
            f"Forecast stage {value:.2f} m in {self.p.horizon_s / 60:.0f} min: "
            + (str(level) if level else "cleared"),
            onset=t + self.p.horizon_s,
            certainty="Likely",
        )


class RainParams(RuleParams):
    """Accumulations from a counter that only grows (``rain_acc`` mm, or ``tips`` × mm_per_tip);
    a drop is a counter reset. CMA: blue 50 mm/12 h, yellow 50/6 h, orange 50/3 h, red 100/3 h."""

    kind: Literal["rainstorm"] = "rainstorm"
    quantity: str = "rain_acc"
    mm_per_unit: float = Field(1.0, gt=0, description="0.2 for a tips counter")
    blue_mm_12h: float = Field(50.0, gt=0)
    yellow_mm_6h: float = Field(50.0, gt=0)
    orange_mm_3h: float = Field(50.0, gt=0)
    red_mm_3h: float = Field(100.0, gt=0)
    clear_fraction: float = Field(0.8, gt=0, le=1, description="hold until below this × entry")
    clear_samples: int = Field(3, ge=1)


_WINDOWS = (3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 24 * 3600.0)


@dataclass(slots=True)
class _Rain:
    last_counter: float | None = None
    times: list[float] = field(default_factory=list)
    incs: list[float] = field(default_factory=list)
    starts: list[int] = field(default_factory=lambda: [0] * len(_WINDOWS))
    sums: list[float] = field(default_factory=lambda: [0.0] * len(_WINDOWS))
    m: LevelState = field(default_factory=LevelState)


class RainRule:
    warning_type = RAIN_WARNING

    def __init__(self, params: RainParams, rule_id: str) -> None:
        self.p = params
        self.rule_id = rule_id
        self.quantities = (params.quantity,)
        self._debounce = Debounce(1, 0.0, params.clear_samples)
        self._states: dict[str, _Rain] = {}

    def _rank(self, sums: list[float], f: float) -> int:
        p = self.p
        if sums[1] >= p.red_mm_3h * f:
            return 4
        if sums[1] >= p.orange_mm_3h * f:
            return 3
        if sums[2] >= p.yellow_mm_6h * f:
            return 2
        return 1 if sums[3] >= p.blue_mm_12h * f else 0

    def step(
        self, ctx: AssetContext, series: str, quantity: str, t: float, value: Value, suspect: bool
    ) -> Output:
        if not isinstance(value, float):
            return None
        s = self._states.get(series)
        if s is None:
            s = self._states[series] = _Rain()
        counter = value * self.p.mm_per_unit
        if s.last_counter is None:
            s.last_counter = counter
            return None
        inc = counter - s.last_counter if counter >= s.last_counter else counter  # a reset
        s.last_counter = counter
        s.times.append(t)
        s.incs.append(inc)
        for i, window in enumerate(_WINDOWS):
            s.sums[i] += inc
            j = s.starts[i]
            while s.times[j] <= t - window:
                s.sums[i] -= s.incs[j]
                j += 1
            s.starts[i] = j
        if s.starts[-1] > 512:  # compact what every window has left behind
            cut = s.starts[-1]
            del s.times[:cut], s.incs[:cut]
            s.starts = [j - cut for j in s.starts]
        ctx.site_put("rain_1h", t, s.sums[0])
        ctx.site_put("rain_6h", t, s.sums[2])
        enter, hold = self._rank(s.sums, 1.0), self._rank(s.sums, self.p.clear_fraction)
        if not self._debounce.step(s.m, t, enter, hold, 1 if suspect else NO_CAP):
            return None
        level = level_of(s.m.emitted)
        h1, h3, h6, h12, h24 = (f"{x:.1f}" for x in s.sums)
        return make_transition(
            series,
            RAIN_WARNING,
            level,
            t,
            self.rule_id,
            {
                "RAIN_1H_MM": h1,
                "RAIN_3H_MM": h3,
                "RAIN_6H_MM": h6,
                "RAIN_12H_MM": h12,
                "RAIN_24H_MM": h24,
            },
            f"Rain {h3} mm in 3 h, {h6} mm in 6 h, {h12} mm in 12 h: {level or 'cleared'}",
        )
