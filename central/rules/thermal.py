"""Thermal camera / fire rule (EN 54-5 heat classes; proposal defaults from the domain notes).

Per frame (``t_max``), with the latest ``t_bg`` and ``hot_px`` of the camera:

* blue: t_max ≥ 50 °C, or the edge model's ``fire_prob`` ≥ ``fire_prob_evidence``;
* yellow: t_max ≥ 60 °C, or ΔT over the background ≥ 20 K *and* a growing hot area (a sunlit
  patch is warm but does not grow);
* orange: dT/dt ≥ 8 K/min held for 30 s with a growing hot area; a yellow backed by
  ``fire_prob`` also becomes orange;
* red: t_max ≥ 100 °C, or orange confirmed by CO rising on the asset or its site.

Levels need ``persist_frames`` frames in a row (multi-frame persistence).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from central.rules.base import level_of
from central.rules.context import AssetContext, Output, Value, make_transition
from central.rules.machine import NO_CAP, Debounce, LevelState
from central.rules.params import RuleParams

WARNING = "fire"


class ThermalParams(RuleParams):
    kind: Literal["thermal"] = "thermal"
    max_quantity: str = "t_max"
    bg_quantity: str = "t_bg"
    area_quantity: str = "hot_px"
    fire_prob_quantity: str = "fire_prob"
    blue_c: float = 50.0
    yellow_c: float = 60.0
    red_c: float = 100.0
    delta_bg_k: float = Field(20.0, gt=0)
    rate_k_per_min: float = Field(8.0, gt=0)
    rate_hold_s: float = Field(30.0, ge=0)
    rate_window_s: float = Field(30.0, gt=0, description="dT/dt over this span")
    growth_ratio: float = Field(1.2, gt=1, description="hot area × this within growth_window_s")
    growth_window_s: float = Field(60.0, gt=0)
    min_hot_px: float = Field(2.0, ge=0)
    fire_prob_evidence: float = Field(0.7, gt=0, le=1)
    co_quantity: str = "co"
    co_rise_ppm: float = Field(5.0, gt=0)
    co_window_s: float = Field(300.0, gt=0)
    hysteresis_k: float = Field(3.0, ge=0)
    persist_frames: int = Field(3, ge=1)
    clear_samples: int = Field(3, ge=1)
    max_age_s: float = Field(60.0, gt=0)


@dataclass(slots=True)
class _Cam:
    frames: deque[tuple[float, float, float]] = field(default_factory=deque)  # t, t_max, hot
    fast_since: float | None = None
    co: deque[tuple[float, float]] = field(default_factory=deque)
    m: LevelState = field(default_factory=LevelState)


class ThermalRule:
    warning_type = WARNING

    def __init__(self, params: ThermalParams, rule_id: str) -> None:
        self.p = params
        self.rule_id = rule_id
        self.quantities = (params.max_quantity, params.co_quantity)
        self._debounce = Debounce(params.persist_frames, 0.0, params.clear_samples)
        self._cams: dict[str, _Cam] = {}

    def _co_rising(self, ctx: AssetContext, cam: _Cam, t: float) -> bool:
        p = self.p
        site = ctx.site_get(p.co_quantity, t, p.co_window_s)
        if site is not None:
            cam.co.append((t, site))
        while cam.co and cam.co[0][0] < t - p.co_window_s:
            cam.co.popleft()
        if len(cam.co) < 2:
            return False
        return cam.co[-1][1] - min(v for _, v in cam.co) >= p.co_rise_ppm

    def _rank(self, t_max: float, dbg: float | None, growing: bool, fast: bool, prob: bool):
        p = self.p
        if t_max >= p.red_c:
            return 4
        rank = 0
        if t_max >= p.blue_c or prob:
            rank = 1
        if t_max >= p.yellow_c or (dbg is not None and dbg >= p.delta_bg_k and growing):
            rank = 2
        if fast and growing:
            rank = 3
        if rank == 2 and prob:
            rank = 3
        return rank

    def step(
        self, ctx: AssetContext, series: str, quantity: str, t: float, value: Value, suspect: bool
    ) -> Output:
        if not isinstance(value, float):
            return None
        p = self.p
        source = f"{ctx.info.id}#{self.rule_id}"
        cam = self._cams.get(source)
        if cam is None:
            cam = self._cams[source] = _Cam()
        if quantity == p.co_quantity:
            cam.co.append((t, value))
            return None
        bg = ctx.fresh(p.bg_quantity, t, p.max_age_s)
        hot = ctx.fresh(p.area_quantity, t, p.max_age_s)
        prob_v = ctx.fresh(p.fire_prob_quantity, t, p.max_age_s * 5)
        hot_px = hot if isinstance(hot, float) else 0.0
        cam.frames.append((t, value, hot_px))
        keep = max(p.rate_window_s, p.growth_window_s)
        while cam.frames[0][0] < t - keep:
            cam.frames.popleft()
        rate = 0.0
        old = next((f for f in cam.frames if f[0] >= t - p.rate_window_s), None)
        if old is not None and t > old[0]:
            rate = (value - old[1]) / ((t - old[0]) / 60.0)
        if rate >= p.rate_k_per_min:
            cam.fast_since = t if cam.fast_since is None else cam.fast_since
        else:
            cam.fast_since = None
        fast = cam.fast_since is not None and t - cam.fast_since >= p.rate_hold_s
        smallest = min(f[2] for f in cam.frames)
        growing = hot_px >= p.min_hot_px and hot_px >= p.growth_ratio * max(smallest, 1.0)
        dbg = value - bg if isinstance(bg, float) else None
        prob = isinstance(prob_v, float) and prob_v >= p.fire_prob_evidence
        enter = self._rank(value, dbg, growing, fast, prob)
        hold = self._rank(
            value + p.hysteresis_k,
            None if dbg is None else dbg + p.hysteresis_k,
            growing or cam.m.level >= 2,
            fast,
            prob,
        )
        hold = min(hold, max(enter, cam.m.level))
        co = False
        if enter == 3 and self._co_rising(ctx, cam, t):
            enter, co = 4, True
        hold = max(hold, enter)  # whatever qualifies for entry also holds
        if not self._debounce.step(cam.m, t, enter, hold, 1 if suspect else NO_CAP):
            return None
        level = level_of(cam.m.emitted)
        return make_transition(
            source,
            WARNING,
            level,
            t,
            self.rule_id,
            {
                "T_MAX_C": f"{value:.1f}",
                "DT_BG_K": "" if dbg is None else f"{dbg:.1f}",
                "RATE_K_PER_MIN": f"{rate:.1f}",
                "HOT_PX": f"{hot_px:.0f}",
                "CO_CONFIRMED": "TRUE" if co else "FALSE",
            },
            f"max {value:.0f} °C, {rate:.1f} K/min, hot area {hot_px:.0f} px"
            + (", growing" if growing else "")
            + (", CO rising" if co else "")
            + f": {level or 'cleared'}",
        )
