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
from dataclasses import dataclass
from typing import Literal

from central.config import GasRuleConfig
from central.rules.base import Level, Transition, level_rank

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
