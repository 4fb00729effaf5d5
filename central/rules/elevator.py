"""Lift rules over several quantities of one car (GB/T 24476 lift IoT, EN 81 overspeed).

* ``lift_trapped`` red: stopped, door closed, occupied, outside the levelling zone for
  ``trapped_hold_s`` (``alarm_hold_s`` when the alarm button corroborates);
* ``lift_overspeed``: |speed| ≥ 105 % of the asset's ``rated_speed_mps`` → yellow, ≥ 115 % → red;
* ``lift_door``: door open while moving → red when occupied, orange when empty;
* ``lift_vibration`` yellow: the edge model's ``vib_anomaly`` or an abnormal ``ride_class``
  for ``vibration_samples`` results in a row;
* everything is suppressed in inspection and fire modes (a technician or firefighter is in
  charge; their rides are not passenger rides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from central.registry import AssetInfo
from central.rules.base import Transition, level_of
from central.rules.context import AssetContext, Output, Value, make_transition, meta_float
from central.rules.machine import NO_CAP, Debounce, LevelState
from central.rules.params import RuleParams

TRAPPED, OVERSPEED = "lift_trapped", "lift_overspeed"
DOOR, VIBRATION = "lift_door", "lift_vibration"
_MODES = {0.0: "normal", 1.0: "inspection", 2.0: "fire"}


class ElevatorParams(RuleParams):
    kind: Literal["elevator"] = "elevator"
    rated_speed_mps: float | None = Field(
        None, gt=0, description="default when the asset meta has no rated_speed_mps"
    )
    stopped_mps: float = Field(0.05, ge=0)
    moving_mps: float = Field(0.1, gt=0)
    trapped_hold_s: float = Field(60.0, ge=0)
    alarm_hold_s: float = Field(10.0, ge=0)
    overspeed_yellow: float = Field(1.05, gt=1)
    overspeed_red: float = Field(1.15, gt=1)
    overspeed_samples: int = Field(2, ge=1)
    door_samples: int = Field(2, ge=1)
    vibration_threshold: float = Field(0.8, gt=0, le=1)
    abnormal_rides: list[str] = Field(default_factory=lambda: ["vibration", "shock"])
    vibration_samples: int = Field(3, ge=1)
    clear_samples: int = Field(2, ge=1)
    suppress_modes: list[str] = Field(default_factory=lambda: ["inspection", "fire"])
    max_age_s: float = Field(30.0, gt=0, description="older contact states count as unknown")


@dataclass(slots=True)
class _Lift:
    trapped_since: float | None = None
    vib_run: int = 0
    m: dict[str, LevelState] = field(
        default_factory=lambda: {k: LevelState() for k in (TRAPPED, OVERSPEED, DOOR, VIBRATION)}
    )


# Which warnings a reading of each quantity steps. Sample-counted conditions step on one
# quantity only (speed: one count per poll, however many contacts the poll carries); the
# other quantities are read from the asset context. Time-held conditions step on any.
_AFFECTS: dict[str, tuple[str, ...]] = {
    "speed": (TRAPPED, OVERSPEED, DOOR),
    "door_open": (TRAPPED,),
    "occupied": (TRAPPED,),
    "in_zone": (TRAPPED,),
    "alarm_btn": (TRAPPED,),
    "mode": (TRAPPED,),
    "vib_anomaly": (VIBRATION,),
    "ride_class": (VIBRATION,),
}


class ElevatorRule:
    def __init__(self, params: ElevatorParams, info: AssetInfo, rule_id: str) -> None:
        self.p = params
        self.rule_id = rule_id
        self.quantities = tuple(_AFFECTS)
        self.rated = meta_float(info, "rated_speed_mps", params.rated_speed_mps)
        self._fast = Debounce(params.overspeed_samples, 0.0, params.clear_samples)
        self._door = Debounce(params.door_samples, 0.0, params.clear_samples)
        self._once = Debounce(1, 0.0, params.clear_samples)
        self._state = _Lift()
        self.source = f"{info.id}#{rule_id}"

    def _flag(self, ctx: AssetContext, q: str, t: float) -> bool | None:
        v = ctx.fresh(q, t, self.p.max_age_s)
        if v is None:
            return None
        if isinstance(v, str):
            return v.lower() in ("true", "1", "on", "yes")
        return bool(v)

    def _mode(self, ctx: AssetContext, t: float) -> str:
        v = ctx.fresh("mode", t, self.p.max_age_s * 20)
        if isinstance(v, float):
            return _MODES.get(v, "normal")
        return str(v).lower() if v is not None else "normal"

    def step(
        self, ctx: AssetContext, series: str, quantity: str, t: float, value: Value, suspect: bool
    ) -> Output:
        p, s = self.p, self._state
        mode = self._mode(ctx, t)
        cap = 0 if mode in p.suppress_modes else (1 if suspect else NO_CAP)
        speed_v = ctx.fresh("speed", t, p.max_age_s)
        speed = abs(speed_v) if isinstance(speed_v, float) else None
        door = self._flag(ctx, "door_open", t)
        occupied = self._flag(ctx, "occupied", t)
        out: list[Transition] = []
        for kind in _AFFECTS[quantity]:
            if kind == TRAPPED:
                in_zone = self._flag(ctx, "in_zone", t)
                stuck = (
                    speed is not None
                    and speed <= p.stopped_mps
                    and door is False
                    and occupied is True
                    and in_zone is False
                )
                if not stuck:
                    s.trapped_since = None
                elif s.trapped_since is None:
                    s.trapped_since = t
                held = 0.0 if s.trapped_since is None else t - s.trapped_since
                alarm = self._flag(ctx, "alarm_btn", t) is True
                need = p.alarm_hold_s if alarm else p.trapped_hold_s
                enter = 4 if stuck and held >= need else 0
                if self._once.step(s.m[TRAPPED], t, enter, 4 if stuck else 0, cap):
                    out.append(
                        self._tr(
                            TRAPPED,
                            s.m[TRAPPED],
                            t,
                            {
                                "STOPPED_S": f"{held:.0f}",
                                "ALARM_BUTTON": "TRUE" if alarm else "FALSE",
                            },
                            f"car stopped outside the levelling zone, occupied, door "
                            f"closed for {held:.0f} s" + (", alarm button" if alarm else ""),
                        )
                    )
            elif kind == OVERSPEED:
                if self.rated is None or speed is None:
                    continue
                ratio = speed / self.rated
                enter = 4 if ratio >= p.overspeed_red else 2 if ratio >= p.overspeed_yellow else 0
                if self._fast.step(s.m[OVERSPEED], t, enter, enter, cap):
                    out.append(
                        self._tr(
                            OVERSPEED,
                            s.m[OVERSPEED],
                            t,
                            {"SPEED_MPS": f"{speed:.2f}", "RATED_MPS": f"{self.rated:.2f}"},
                            f"speed {speed:.2f} m/s = {ratio * 100:.0f} % of rated",
                        )
                    )
            elif kind == DOOR:
                moving = speed is not None and speed >= p.moving_mps
                enter = (4 if occupied else 3) if moving and door is True else 0
                if self._door.step(s.m[DOOR], t, enter, enter, cap):
                    out.append(
                        self._tr(
                            DOOR,
                            s.m[DOOR],
                            t,
                            {"SPEED_MPS": f"{speed or 0:.2f}"},
                            "door open while moving" + (", occupied" if occupied else ""),
                        )
                    )
            else:  # VIBRATION
                if quantity == "vib_anomaly" and isinstance(value, float):
                    bad = value >= p.vibration_threshold
                    s.vib_run = s.vib_run + 1 if bad else 0
                elif quantity == "ride_class":
                    bad = str(value).lower() in p.abnormal_rides
                    s.vib_run = s.vib_run + 1 if bad else 0
                enter = 2 if s.vib_run >= p.vibration_samples else 0
                if self._once.step(s.m[VIBRATION], t, enter, 2 if s.vib_run else 0, cap):
                    out.append(
                        self._tr(
                            VIBRATION,
                            s.m[VIBRATION],
                            t,
                            {"RUNS": str(s.vib_run)},
                            f"abnormal vibration in {s.vib_run} edge-model results",
                        )
                    )
        if mode in p.suppress_modes and out:
            for i, tr in enumerate(out):
                out[i] = make_transition(
                    tr.asset,
                    tr.warning_type,
                    tr.level,
                    t,
                    tr.rule_id,
                    tr.trigger,
                    tr.summary + f"; suppressed: lift in {mode} mode",
                )
        return out or None

    def _tr(
        self, kind: str, s: LevelState, t: float, trigger: dict[str, str], what: str
    ) -> Transition:
        level = level_of(s.emitted)
        return make_transition(
            self.source,
            kind,
            level,
            t,
            self.rule_id,
            trigger,
            f"{what}: {level or 'cleared'}",
        )
