"""Displacement of structures and slopes: % of control value, tangent angle, inverse velocity.

* Per series: cumulative change and its 24-hour rate as a fraction of the design control
  values (asset meta ``control_values: {crack: 5.0}`` in the quantity's unit and
  ``control_rates: {crack: 0.5}`` per day; ``control_value`` / ``control_rate`` for all);
  yellow ≥ 70 %, orange ≥ 85 %, red ≥ 100 %. A daily temperature cycle cancels out of a
  24-hour rate and stays far below the control value; a single step (one jump larger than
  ``step_fraction`` of the control value) is absorbed into the baseline, not warned on.
* k-of-n: the structure's level is the k-th highest series level (k = min(k, series seen)).
* Tangent angle (Xu Qiang): α = atan(v / v_steady) on the smoothed velocity of the
  ``tangent_quantity`` (asset meta ``steady_velocity_per_day``).
* Inverse velocity (Fukuzono): a linear fit of 1/v over time, R² ≥ ``iv_min_r2``, predicts the
  failure time; < 72 h → orange, < 24 h → red, with the predicted time as CAP ``onset``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from central.registry import AssetInfo
from central.rules.base import Transition, level_of
from central.rules.context import AssetContext, Output, Value, make_transition, meta_float
from central.rules.machine import NO_CAP, Debounce, LevelState, rank_up
from central.rules.params import Levels, RuleParams

WARNING = "displacement"
_UNSET = object()
DAY = 86400.0


class DisplacementParams(RuleParams):
    kind: Literal["displacement"] = "displacement"
    quantities: list[str] = Field(
        default_factory=lambda: ["crack", "tilt_x", "tilt_y", "gnss_e", "gnss_n", "gnss_u"]
    )
    fractions: Levels = Levels(yellow=0.70, orange=0.85, red=1.00)
    hysteresis: float = Field(0.05, ge=0, description="as a fraction of the control value")
    raise_samples: int = Field(3, ge=1)
    clear_samples: int = Field(3, ge=1)
    rate_window_s: float = Field(DAY, gt=0)
    step_fraction: float = Field(0.3, gt=0, description="one jump this large is a step")
    k: int = Field(2, ge=1, description="series that must agree (k-of-n)")
    consensus_max_age_s: float = Field(DAY, gt=0)
    tangent_quantity: str | None = Field(None, description="the slope's main displacement")
    velocity_window_s: float = Field(6 * 3600.0, gt=0)
    tangent_deg: Levels = Levels(blue=45.0, yellow=50.0, orange=80.0, red=85.0)
    iv_window_s: float = Field(2 * DAY, gt=0)
    iv_min_points: int = Field(6, ge=3)
    iv_min_r2: float = Field(0.8, gt=0, le=1)
    iv_orange_h: float = Field(72.0, gt=0)
    iv_red_h: float = Field(24.0, gt=0)
    heavy_rain_mm_h: float | None = Field(
        20.0, gt=0, description="site rain in the last hour that escalates yellow to orange"
    )
    rain_max_age_s: float = Field(3600.0, gt=0)


@dataclass(slots=True)
class _Series:
    offset: float = 0.0
    last: float | None = None
    steps: int = 0
    hist: deque[tuple[float, float]] = field(default_factory=deque)
    m: LevelState = field(default_factory=LevelState)
    seen: float = 0.0


def _fit(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares y = a + b·x: (a, b, r²)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    syy = sum((y - my) ** 2 for _, y in points)
    if sxx == 0:
        return my, 0.0, 0.0
    b = sxy / sxx
    r2 = (sxy * sxy) / (sxx * syy) if syy > 0 else 1.0
    return my - b * mx, b, r2


class DisplacementRule:
    warning_type = WARNING

    def __init__(self, params: DisplacementParams, info: AssetInfo, rule_id: str) -> None:
        self.p = params
        self.rule_id = rule_id
        self.quantities = tuple(params.quantities)
        self.info = info
        self._debounce = Debounce(params.raise_samples, 0.0, params.clear_samples)
        self._series: dict[str, _Series] = {}
        self._consensus = LevelState()
        self._tangent = LevelState()
        self._iv = LevelState()
        self._vel: deque[tuple[float, float]] = deque()
        self.steady = meta_float(info, "steady_velocity_per_day")
        self.tangent_q = params.tangent_quantity or info.meta.get("tangent_quantity")
        self._enter = params.fractions.tuple()
        self._controls: dict[str, float | None] = {}
        self._rate_controls: dict[str, float | None] = {}
        self._counted_at = -math.inf
        self._n = 0
        self._agreed = 0
        self._hold = tuple(x - params.hysteresis for x in self._enter)

    def _control(self, key: str, quantity: str) -> float | None:
        per = self.info.meta.get(f"{key}s")
        if isinstance(per, dict) and quantity in per:
            try:
                return float(per[quantity])
            except (TypeError, ValueError):
                return None
        return meta_float(self.info, key)

    def step(
        self, ctx: AssetContext, series: str, quantity: str, t: float, value: Value, suspect: bool
    ) -> Output:
        if not isinstance(value, float):
            return None
        p = self.p
        s = self._series.get(series)
        if s is None:
            s = self._series[series] = _Series()
        control = self._controls.get(quantity, _UNSET)
        if control is _UNSET:
            control = self._controls[quantity] = self._control("control_value", quantity)
            self._rate_controls[quantity] = self._control("control_rate", quantity)
        if s.last is not None and control and abs(value - s.last) > p.step_fraction * control:
            s.offset += value - s.last  # a single step: re-baseline, do not warn
            s.steps += 1
        s.last = value
        v = value - s.offset
        s.hist.append((t, v))
        keep = max(p.rate_window_s, p.velocity_window_s)
        while s.hist and s.hist[0][0] < t - keep - 3600.0:
            s.hist.popleft()
        s.seen = t
        out: list[Transition] = []
        rank, hold, frac, rate_frac = 0, 0, 0.0, 0.0
        if control:
            frac = abs(v) / control
            rank, hold = rank_up(frac, self._enter), rank_up(frac, self._hold)  # type: ignore[arg-type]
        rate_control = self._rate_controls[quantity]
        if rate_control and s.hist[0][0] <= t - p.rate_window_s:
            old = next(x for tt, x in s.hist if tt >= t - p.rate_window_s)
            rate_frac = abs(v - old) / (rate_control * p.rate_window_s / DAY)
            rank = max(rank, rank_up(rate_frac, self._enter))
            hold = max(hold, rank_up(rate_frac, self._hold))  # type: ignore[arg-type]
        cap = 1 if suspect else NO_CAP
        changed = self._debounce.step(s.m, t, rank, hold, NO_CAP)
        c = self._consensus
        # The k-th highest level changes only when a series' level does, or when a series
        # ages out of the consensus: recompute then, not on every reading.
        if changed or cap != NO_CAP or c.emitted or t - self._counted_at >= 3600.0:
            self._counted_at = t
            levels = sorted(
                (x.m.emitted for x in self._series.values() if t - x.seen <= p.consensus_max_age_s),
                reverse=True,
            )
            self._n, k = len(levels), min(p.k, len(levels))
            self._agreed = levels[k - 1] if k else 0
        k, levels_n = min(p.k, self._n), self._n
        new = min(self._agreed, cap)
        rain = None
        if new == 2 and p.heavy_rain_mm_h is not None:
            rain = ctx.site_get("rain_1h", t, p.rain_max_age_s)
            if rain is not None and rain >= p.heavy_rain_mm_h:
                new = min(3, cap)  # short-duration heavy rain escalates (CMA, landslides)
        if new != c.emitted:
            c.emitted = c.level = new
            out.append(
                make_transition(
                    f"{self.info.id}#{self.rule_id}",
                    WARNING,
                    level_of(new),
                    t,
                    self.rule_id,
                    {
                        "QUANTITY": quantity,
                        "CONTROL_FRACTION": f"{frac:.3f}",
                        "RATE_FRACTION": f"{rate_frac:.3f}",
                        "AGREEING": f"{k}/{levels_n}",
                    },
                    f"{quantity} at {frac * 100:.0f} % of its control value, rate at "
                    f"{rate_frac * 100:.0f} %; {k} of {levels_n} sensors agree"
                    + (f"; heavy rain {rain:.0f} mm/h escalates" if new == 3 and rain else "")
                    + f": {level_of(new) or 'cleared'}",
                )
            )
        if quantity == self.tangent_q:
            out.extend(self._slope(s, t, cap))
        return out or None

    def _slope(self, s: _Series, t: float, cap: int) -> list[Transition]:
        p = self.p
        window = [(tt, x) for tt, x in s.hist if tt >= t - p.velocity_window_s]
        if len(window) < 3 or window[-1][0] - window[0][0] < p.velocity_window_s / 2:
            return []
        _, slope, _ = _fit(window)
        v = abs(slope) * DAY  # per day
        out: list[Transition] = []
        if self.steady:
            alpha = math.degrees(math.atan(v / self.steady))
            enter = rank_up(alpha, self.p.tangent_deg.tuple())
            if self._debounce.step(self._tangent, t, enter, enter, cap):
                out.append(
                    make_transition(
                        f"{self.info.id}#{self.rule_id}#tangent",
                        WARNING,
                        level_of(self._tangent.emitted),
                        t,
                        self.rule_id,
                        {"TANGENT_ANGLE_DEG": f"{alpha:.1f}", "VELOCITY_PER_DAY": f"{v:.3f}"},
                        f"tangent angle {alpha:.1f}° (velocity {v:.2f}/day): "
                        f"{level_of(self._tangent.emitted) or 'cleared'}",
                    )
                )
        self._vel.append((t, v))
        while self._vel and self._vel[0][0] < t - p.iv_window_s:
            self._vel.popleft()
        enter, onset, hours, r2 = 0, None, math.inf, 0.0
        pts = [(tt / 3600.0, 1.0 / vv) for tt, vv in self._vel if vv > 0]
        if len(pts) >= p.iv_min_points:
            a, b, r2 = _fit(pts)
            if b < 0 and r2 >= p.iv_min_r2:
                failure_h = -a / b
                hours = failure_h - t / 3600.0
                if hours > 0:
                    onset = failure_h * 3600.0
                    enter = 4 if hours < p.iv_red_h else 3 if hours < p.iv_orange_h else 0
        if self._debounce.step(self._iv, t, enter, enter, cap):
            level = level_of(self._iv.emitted)
            out.append(
                make_transition(
                    f"{self.info.id}#{self.rule_id}#iv",
                    WARNING,
                    level,
                    t,
                    self.rule_id,
                    {"PREDICTED_FAILURE_H": f"{hours:.1f}", "IV_R2": f"{r2:.2f}"},
                    (
                        f"inverse velocity predicts failure in {hours:.0f} h (R² {r2:.2f})"
                        if level
                        else "inverse-velocity prediction no longer holds"
                    )
                    + f": {level or 'cleared'}",
                    onset=onset if level else None,
                )
            )
        return out
