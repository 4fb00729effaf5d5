"""Combustible gas (CH4 as an LEL ratio) warning rule, evaluated on event time.

Defaults follow GB/T 50493-2019 (level-1 alarm at 25 %LEL, level-2 at 50 %LEL):

* blue    ≥ 10 %LEL held for ``blue_hold_s``
* yellow  ≥ 25 %LEL for ``yellow_samples`` consecutive samples
* orange  ≥ 50 %LEL for ``orange_samples`` consecutive samples
* red     orange and still rising for ``red_rising_samples`` consecutive samples

Escalation is immediate. Stepping down (or clearing) needs ``clear_samples`` consecutive
samples below the current level's threshold minus ``hysteresis``, so a reading hovering at a
threshold does not flap. Red latches while the gas stays above the orange hold threshold:
a plateau at 60 %LEL is no safer than the rise that led to it.

Only records that passed the gateway's quality checks (q absent or 1) are judged.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from central.config import GasRuleConfig
from central.registry import AssetInfo
from central.rules.base import Level, Transition, level_of, level_rank
from central.rules.context import (
    AssetContext,
    GasPoint,
    Output,
    Value,
    make_transition,
    meters_between,
)
from central.rules.machine import NO_CAP, Debounce, LevelState, ThresholdSeries
from central.rules.params import Levels, RuleParams

Lane = Literal["live", "late", "skipped"]
WARNING_TYPE = "gas_leak"
RULE_ID = "gas.ch4_lel.gbt50493"
QUANTITY = "ch4_lel"


@dataclass
class _SeriesState:
    level: Level | None = None
    last_time: float | None = None
    last_value: float | None = None
    yellow_run: int = 0
    orange_run: int = 0
    rising_run: int = 0
    blue_since: float | None = None
    below_run: int = 0


@dataclass(frozen=True, slots=True)
class Judgement:
    lane: Lane
    transition: Transition | None


class GasCh4Rule:
    warning_type = WARNING_TYPE
    rule_id = RULE_ID
    quantity = QUANTITY

    def __init__(self, config: GasRuleConfig) -> None:
        self.cfg = config
        self._states: dict[str, _SeriesState] = {}
        self._late: dict[str, _SeriesState] = {}
        self.out_of_order = 0
        self.skipped_quality = 0

    def _threshold(self, level: Level) -> float:
        c = self.cfg
        return {"blue": c.blue, "yellow": c.yellow, "orange": c.orange, "red": c.orange}[level]

    def _entry_level(self, s: _SeriesState, t: float) -> Level | None:
        c = self.cfg
        if s.orange_run >= c.orange_samples:
            return "red" if s.rising_run >= c.red_rising_samples else "orange"
        if s.yellow_run >= c.yellow_samples:
            return "yellow"
        if s.blue_since is not None and t - s.blue_since >= c.blue_hold_s:
            return "blue"
        return None

    def _held_level(self, s: _SeriesState, t: float, value: float) -> Level | None:
        """The highest level under the current one that ``value`` still holds.

        Blue is only stepped down to when its own duration condition holds: a fast fall from
        yellow must clear, not park in a blue that never had its five minutes.
        """
        for level in ("red", "orange", "yellow"):
            if level_rank(level) < level_rank(s.level) and value >= self._hold(level):
                return level  # type: ignore[return-value]
        blue_held = s.blue_since is not None and t - s.blue_since >= self.cfg.blue_hold_s
        return "blue" if level_rank(s.level) > 1 and blue_held else None

    def _hold(self, level: Level) -> float:
        return self._threshold(level) - self.cfg.hysteresis

    def observe(
        self,
        series: str,
        t: float,
        value: float,
        quality: int | None = None,
        update_time: float | None = None,
    ) -> Transition | None:
        return self.judge(series, t, value, quality, update_time).transition

    def judge(
        self,
        series: str,
        t: float,
        value: float,
        quality: int | None = None,
        update_time: float | None = None,
    ) -> Judgement:
        """Judge one sample of one series on event time; the transition's ``asset`` is the
        series key.

        Samples newer than the series' live lane go to the live lane. Older ones — a backlog
        replayed after live data resumed — go to a separate late lane with its own state, so
        the past is judged in its own order and the present is not disturbed by it.
        """
        if quality not in (None, 1):
            self.skipped_quality += 1
            return Judgement("skipped", None)
        live = self._states.setdefault(series, _SeriesState())
        lane: Lane = "live"
        state = live
        if live.last_time is not None and t <= live.last_time:
            lane, state = "late", self._late.setdefault(series, _SeriesState())
            if state.last_time is not None and t <= state.last_time:
                self.out_of_order += 1
                return Judgement("skipped", None)
        tr = self._step(series, state, t, value, update_time)
        if tr is not None and lane == "late":
            tr = dataclasses.replace(tr, late=True)
        return Judgement(lane, tr)

    def advance(
        self, series: str, t: float, value: float, update_time: float | None = None
    ) -> Transition | None:
        """One in-order sample, no lane or quality handling (the rule engine did both)."""
        return self._step(
            series, self._states.setdefault(series, _SeriesState()), t, value, update_time
        )

    def _step(
        self, series: str, s: _SeriesState, t: float, value: float, ut: float | None
    ) -> Transition | None:
        c = self.cfg
        if ut and s.last_time is not None and t - s.last_time > 3 * ut:
            # A gap in the data: runs of consecutive samples do not span it.
            s.yellow_run = s.orange_run = s.rising_run = s.below_run = 0
            s.last_value = s.blue_since = None
        # "Still rising" counts rises between samples both at or above orange: the climb that
        # led to orange is what made it orange, not evidence that it keeps going.
        rose = (
            s.last_value is not None
            and s.last_value >= c.orange
            and value - s.last_value > c.rise_epsilon
        )
        s.rising_run = s.rising_run + 1 if rose else 0
        s.yellow_run = s.yellow_run + 1 if value >= c.yellow else 0
        s.orange_run = s.orange_run + 1 if value >= c.orange else 0
        if value >= c.blue:
            s.blue_since = t if s.blue_since is None else s.blue_since
        else:
            s.blue_since = None
        s.last_time, s.last_value = t, value

        entry = self._entry_level(s, t)
        if level_rank(entry) > level_rank(s.level):
            s.level, s.below_run = entry, 0
            return self._transition(series, entry, t, value)
        if s.level is None:
            return None
        s.below_run = s.below_run + 1 if value < self._hold(s.level) else 0
        if s.below_run < c.clear_samples:
            return None
        s.level, s.below_run = self._held_level(s, t, value), 0
        return self._transition(series, s.level, t, value)

    def _transition(self, series: str, level: Level | None, t: float, value: float) -> Transition:
        threshold = self._threshold(level) if level else self.cfg.yellow - self.cfg.hysteresis
        what = f"CH4 {value * 100:.1f} %LEL"
        summary = (
            f"{what}: {level} (threshold {threshold * 100:.0f} %LEL)"
            if level
            else f"{what}: below {threshold * 100:.0f} %LEL, cleared"
        )
        return Transition(
            asset=series,
            warning_type=WARNING_TYPE,
            level=level,
            event_time=t,
            rule_id=RULE_ID,
            trigger={
                "CH4_LEL_RATIO": f"{value:.4f}",
                "THRESHOLD_LEL_RATIO": f"{threshold:.4f}",
            },
            summary=summary,
        )


# --- The gas family in the rule engine ------------------------------------------------------
# (GasCh4Rule above stays the CH4 state machine; the engine wraps it with confirmation,
# the biogas veto and the quality cap, and adds CO dose and H2S.)

CO_WARNING = "co_exposure"
H2S_WARNING = "h2s_exposure"
_TRIGGER_FMT = "{:.4f}"


class GasCh4Params(RuleParams):
    """CH4 as an LEL ratio. Thresholds left out come from central config ``rules.gas_ch4``."""

    kind: Literal["gas_ch4"] = "gas_ch4"
    quantity: str = QUANTITY
    blue: float | None = Field(None, gt=0, lt=1)
    blue_hold_s: float | None = Field(None, ge=0)
    yellow: float | None = Field(None, gt=0, lt=1)
    yellow_samples: int | None = Field(None, ge=1)
    orange: float | None = Field(None, gt=0, lt=1)
    orange_samples: int | None = Field(None, ge=1)
    red_rising_samples: int | None = Field(None, ge=1)
    rise_epsilon: float | None = Field(None, ge=0)
    hysteresis: float | None = Field(None, ge=0, lt=1)
    clear_samples: int | None = Field(None, ge=1)
    confirm_within_m: float | None = Field(
        100.0, gt=0, description="neighbour distance for confirmation; null: no confirmation"
    )
    confirm_ratio: float = Field(0.25, gt=0, lt=1, description="neighbour reading that confirms")
    confirm_max_age_s: float = Field(120.0, gt=0)
    red_requires_confirmation: bool = True
    sewer_veto: bool = Field(True, description="biogas veto for assets with meta context: sewer")
    biogas_markers: list[str] = Field(
        default_factory=lambda: ["c2h6", "ethane", "odorant", "tht"],
        description="quantities whose presence (> marker_min) says natural gas, not biogas",
    )
    marker_min: float = Field(0.0, ge=0)
    marker_max_age_s: float = Field(600.0, gt=0)
    blue_rise_samples: int | None = Field(
        None, ge=2, description="blue on a sustained rise: this many rising samples in a row"
    )
    blue_rise_total: float = Field(0.05, gt=0, description="… adding up to at least this ratio")

    def thresholds(self, base: GasRuleConfig) -> GasRuleConfig:
        names = GasRuleConfig.model_fields
        update = {k: v for k, v in self.model_dump().items() if k in names and v is not None}
        return GasRuleConfig.model_validate({**base.model_dump(), **update})


@dataclass(slots=True)
class _Rise:
    start: float
    last: float
    run: int = 0
    m: LevelState = dataclasses.field(default_factory=LevelState)


class GasCh4EngineRule:
    """CH4 per detector + neighbour confirmation + biogas veto + quality cap.

    * a raw level from :class:`GasCh4Rule` (persistence, rising, hysteresis);
    * confirmed: another detector within ``confirm_within_m`` read ≥ ``confirm_ratio``
      within ``confirm_max_age_s`` → a yellow becomes orange; red needs confirmation;
    * asset meta ``context: sewer`` caps at yellow unless a biogas marker (ethane, odorant)
      is present on the same asset;
    * suspect readings (gateway q = 3) cap at blue.
    """

    warning_type = WARNING_TYPE

    def __init__(
        self, params: GasCh4Params, base: GasRuleConfig, ctx_info: AssetInfo, rule_id: str
    ) -> None:
        self.p = params
        self.rule_id = rule_id
        self.quantities = (params.quantity,)
        self.cfg = params.thresholds(base)
        self.inner = GasCh4Rule(self.cfg)
        self._raw: dict[str, int] = {}
        self._emitted: dict[str, int] = {}
        self._rise: dict[str, _Rise] = {}
        self._rise_debounce = Debounce(1, 0.0, self.cfg.clear_samples)
        self.sewer = params.sewer_veto and str(ctx_info.meta.get("context", "")) == "sewer"

    def _confirmed(self, ctx: AssetContext, series: str, t: float) -> bool:
        within = self.p.confirm_within_m
        if within is None:
            return False
        me = ctx.info
        for key, point in ctx.shared.gas.items():
            if key == series or point.value < self.p.confirm_ratio:
                continue
            if t - point.t > self.p.confirm_max_age_s or point.t - t > self.p.confirm_max_age_s:
                continue
            if point.asset == me.id:
                return True  # a second detector of the same asset
            if None in (me.lat, me.lon, point.lat, point.lon):
                continue
            if meters_between(me.lat, me.lon, point.lat, point.lon) <= within:  # type: ignore[arg-type]
                return True
        return False

    def _sustained_rise(self, series: str, t: float, value: float) -> bool:
        """A steady climb below the blue threshold ("blue … or a sustained rise"); held by
        the usual clear samples once the climb stops."""
        r = self._rise.get(series)
        if r is None:
            r = self._rise[series] = _Rise(value, value)
        if value - r.last > self.cfg.rise_epsilon:
            r.run += 1
        else:
            r.run, r.start = 0, value
        r.last = value
        need = self.p.blue_rise_samples or 0
        enter = 1 if r.run >= need and value - r.start >= self.p.blue_rise_total else 0
        self._rise_debounce.step(r.m, t, enter, enter)
        return r.m.level > 0

    def _marker_present(self, ctx: AssetContext, t: float) -> bool:
        for q in self.p.biogas_markers:
            v = ctx.fresh(q, t, self.p.marker_max_age_s)
            if isinstance(v, float) and v > self.p.marker_min:
                return True
        return False

    def step(
        self, ctx: AssetContext, series: str, quantity: str, t: float, value: Value, suspect: bool
    ) -> Output:
        if not isinstance(value, float):
            return None
        info = ctx.info
        point = ctx.shared.gas.get(series)
        if point is None:
            ctx.shared.gas[series] = GasPoint(info.id, info.lat, info.lon, t, value)
        else:
            point.t, point.value = t, value
        tr = self.inner.advance(series, t, value, ctx.ut)
        if tr is not None:
            self._raw[series] = level_rank(tr.level)
        raw = self._raw.get(series, 0)
        rising = self._sustained_rise(series, t, value) if self.p.blue_rise_samples else False
        if rising and raw == 0:
            raw = 1
        out, confirmed, vetoed = raw, False, False
        if raw >= 2:
            confirmed = self._confirmed(ctx, series, t)
            if confirmed and raw == 2:
                out = 3
            if raw == 4 and not confirmed and self.p.red_requires_confirmation:
                out = 3
            if self.sewer and out > 2 and not self._marker_present(ctx, t):
                out, vetoed = 2, True
        if suspect and out > 1:
            out = 1
        if out == self._emitted.get(series, 0):
            return None
        self._emitted[series] = out
        level = level_of(out)
        if tr is None or tr.level != level:  # a cap or a confirmation moved the level
            tr = self.inner._transition(series, level, t, value)
        notes = []
        if confirmed:
            notes.append("confirmed by a neighbouring detector")
        if vetoed:
            notes.append("sewer context without ethane/odorant: capped at yellow (biogas)")
        if suspect and raw > 1:
            notes.append("suspect reading: at most blue")
        trigger = dict(tr.trigger)
        trigger["CONFIRMED"] = "TRUE" if confirmed else "FALSE"
        summary = tr.summary
        if notes:
            summary += "; " + "; ".join(notes)
        return dataclasses.replace(
            tr, level=level, trigger=trigger, summary=summary, rule_id=self.rule_id
        )


class CoDoseParams(RuleParams):
    """CO as a time-weighted dose with EN 50291 household-alarm timing.

    ``alarm_minutes`` maps a concentration (ppm) to the exposure time after which an alarm is
    due: 30 ppm never before 120 min (150 here), 50 ppm within 60–90 min, 100 ppm within 10–40,
    300 ppm within 3. Between points the time is interpolated log-log; below the lowest point
    the dose decays with ``recovery_min``. Dose ≥ ``yellow_dose`` → yellow, ≥ 1 → orange
    (the EN 50291 alarm), ≥ 1 at or above ``red_ppm`` → red. Blue: ≥ ``blue_ppm``
    (GB/T 50493 level-1, 17 ppm) for ``blue_samples``.
    """

    kind: Literal["co_dose"] = "co_dose"
    quantity: str = "co"
    alarm_minutes: dict[float, float] = Field(
        default_factory=lambda: {30.0: 150.0, 50.0: 75.0, 100.0: 25.0, 300.0: 2.0}
    )
    recovery_min: float = Field(60.0, gt=0, description="time for a full dose to decay")
    blue_ppm: float = Field(17.0, gt=0)
    blue_samples: int = Field(3, ge=1)
    yellow_dose: float = Field(0.5, gt=0, lt=1)
    red_ppm: float = Field(300.0, gt=0)
    clear_dose: float = Field(0.2, ge=0, lt=1)
    clear_samples: int = Field(3, ge=1)
    max_step_s: float = Field(300.0, gt=0, description="longest gap integrated as exposure")

    @model_validator(mode="after")
    def _curve(self) -> CoDoseParams:
        if len(self.alarm_minutes) < 2:
            raise ValueError("alarm_minutes needs at least two points")
        points = sorted(self.alarm_minutes.items())
        if any(m2 >= m1 for (_, m1), (_, m2) in itertools.pairwise(points)):
            raise ValueError("alarm_minutes must fall as the concentration rises")
        return self


@dataclass(slots=True)
class _CoState:
    dose: float = 0.0
    last_t: float | None = None
    last_ppm: float = 0.0
    m: LevelState = dataclasses.field(default_factory=LevelState)


class CoDoseRule:
    warning_type = CO_WARNING

    def __init__(self, params: CoDoseParams, rule_id: str) -> None:
        self.p = params
        self.rule_id = rule_id
        self.quantities = (params.quantity,)
        pts = sorted(params.alarm_minutes.items())
        self._log_pts = [(math.log(c), math.log(m * 60.0)) for c, m in pts]
        self._floor = pts[0][0]
        self._debounce = Debounce(raise_samples=1, clear_samples=params.clear_samples)
        self._blue_run: dict[str, int] = {}
        self._states: dict[str, _CoState] = {}

    def alarm_seconds(self, ppm: float) -> float:
        """Exposure time at ``ppm`` after which the alarm is due (inf below the curve)."""
        if ppm < self._floor:
            return math.inf
        x = math.log(ppm)
        pts = self._log_pts
        if x >= pts[-1][0]:
            (x0, y0), (x1, y1) = pts[-2], pts[-1]
        else:
            i = next(i for i in range(1, len(pts)) if x < pts[i][0])
            (x0, y0), (x1, y1) = pts[i - 1], pts[i]
        return math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0))

    def step(
        self, ctx: AssetContext, series: str, quantity: str, t: float, value: Value, suspect: bool
    ) -> Output:
        if not isinstance(value, float):
            return None
        p = self.p
        s = self._states.get(series)
        if s is None:
            s = self._states[series] = _CoState()
        if s.last_t is not None:
            dt = min(t - s.last_t, p.max_step_s)
            limit = self.alarm_seconds(s.last_ppm)  # the concentration held over the step
            if limit == math.inf:
                s.dose = max(0.0, s.dose - dt / (p.recovery_min * 60.0))
            else:
                s.dose += dt / limit
        s.last_t, s.last_ppm = t, value
        ctx.site_put("co", t, value)
        run = self._blue_run.get(series, 0) + 1 if value >= p.blue_ppm else 0
        self._blue_run[series] = run
        if s.dose >= 1.0:
            enter = 4 if value >= p.red_ppm else 3
        elif s.dose >= p.yellow_dose:
            enter = 2
        else:
            enter = 1 if run >= p.blue_samples else 0
        if s.dose >= 1.0:
            hold = enter
        elif s.dose >= p.clear_dose:
            hold = 2
        else:
            hold = 1 if value >= p.blue_ppm else 0
        if not self._debounce.step(s.m, t, enter, hold, 1 if suspect else NO_CAP):
            return None
        level = level_of(s.m.emitted)
        return make_transition(
            series,
            CO_WARNING,
            level,
            t,
            self.rule_id,
            {"CO_PPM": f"{value:.1f}", "CO_DOSE": f"{s.dose:.3f}"},
            f"CO {value:.0f} ppm, dose {s.dose * 100:.0f} % of the EN 50291 alarm point: "
            + (str(level) if level else "cleared"),
        )


class ToxicThresholdParams(RuleParams):
    """A toxic gas on fixed thresholds (ppm); H2S defaults 7 / 14 ppm (GB/T 50493 level-1/2)."""

    kind: Literal["toxic_threshold"] = "toxic_threshold"
    quantity: str = "h2s"
    warning_type: str = H2S_WARNING
    levels: Levels = Levels(yellow=7.0, orange=14.0, red=50.0)
    hysteresis: float = Field(1.0, ge=0)
    raise_samples: int = Field(2, ge=1)
    clear_samples: int = Field(3, ge=1)


class ToxicThresholdRule:
    def __init__(self, params: ToxicThresholdParams, rule_id: str) -> None:
        self.p = params
        self.rule_id = rule_id
        self.warning_type = params.warning_type
        self.quantities = (params.quantity,)
        self._levels = ThresholdSeries(
            params.levels.tuple(),
            params.hysteresis,
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
            self.warning_type,
            level,
            t,
            self.rule_id,
            {f"{self.p.quantity.upper()}_PPM": f"{value:.2f}"},
            f"{self.p.quantity.upper()} {value:.1f} ppm: " + (str(level) if level else "cleared"),
        )
