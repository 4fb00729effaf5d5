"""The state machine every rule shares: persistence up, hysteresis and a hold time down, caps.

A rule reduces each reading to two ranks (0 none, 1 blue … 4 red): ``enter``, the level the
reading qualifies for on the entry thresholds, and ``hold``, the level it still qualifies for
on the exit thresholds (entry minus hysteresis). The machine turns those into a stable level:

* up: ``enter`` above the current level for ``raise_samples`` consecutive readings spanning
  at least ``raise_s`` seconds of event time; it steps to the lowest ``enter`` of that run
  (a single high reading inside a run of lower ones does not jump straight to the top);
* down: ``hold`` below the current level for ``clear_samples`` readings and ``clear_s``
  seconds; it steps to the highest ``hold`` of that run.

What is emitted is the level after a *cap* (suspect data → at most blue, an unconfirmed gas
reading → at most orange, a lift in inspection mode → nothing), applied at emission so that
the underlying level is kept and comes back as soon as the cap lifts.
"""

from __future__ import annotations

from dataclasses import dataclass

from central.rules.base import Level, level_of

NO_CAP = 4


@dataclass(slots=True)
class LevelState:
    level: int = 0  # the debounced level, before the cap
    emitted: int = 0  # the level last reported (after the cap)
    up_run: int = 0
    up_since: float = 0.0
    up_min: int = 0
    down_run: int = 0
    down_since: float = 0.0
    down_max: int = 0


@dataclass(frozen=True, slots=True)
class Debounce:
    raise_samples: int = 1
    raise_s: float = 0.0
    clear_samples: int = 3
    clear_s: float = 0.0

    def step(self, s: LevelState, t: float, enter: int, hold: int, cap: int = NO_CAP) -> bool:
        """Advance ``s`` by one reading; True when the emitted level changed."""
        if hold < enter:
            hold = enter  # a reading that qualifies for a level also holds it
        if enter > s.level:
            s.down_run = 0
            if s.up_run == 0:
                s.up_since, s.up_min = t, enter
            else:
                s.up_min = min(s.up_min, enter)
            s.up_run += 1
            if s.up_run >= self.raise_samples and t - s.up_since >= self.raise_s:
                s.level, s.up_run = s.up_min, 0
        elif hold < s.level:
            s.up_run = 0
            if s.down_run == 0:
                s.down_since, s.down_max = t, hold
            else:
                s.down_max = max(s.down_max, hold)
            s.down_run += 1
            if s.down_run >= self.clear_samples and t - s.down_since >= self.clear_s:
                s.level, s.down_run = s.down_max, 0
        else:
            s.up_run = s.down_run = 0
        out = s.level if s.level < cap else cap
        if out == s.emitted:
            return False
        s.emitted = out
        return True

    def reset_runs(self, s: LevelState) -> None:
        """A gap in the data: runs of consecutive readings never span it."""
        s.up_run = s.down_run = 0


def rank_up(value: float, thresholds: tuple[float, float, float, float]) -> int:
    """The rank ``value`` reaches on ascending (blue, yellow, orange, red) thresholds."""
    if value >= thresholds[3]:
        return 4
    if value >= thresholds[2]:
        return 3
    if value >= thresholds[1]:
        return 2
    if value >= thresholds[0]:
        return 1
    return 0


class ThresholdSeries:
    """Per-series level on fixed ascending thresholds: the common shape of a simple rule."""

    __slots__ = ("_debounce", "_enter", "_hold", "_states")

    def __init__(
        self,
        enter: tuple[float, float, float, float],
        hysteresis: float,
        debounce: Debounce,
    ) -> None:
        self._enter = enter
        self._hold = tuple(x - hysteresis for x in enter)
        self._debounce = debounce
        self._states: dict[str, LevelState] = {}

    def step(self, series: str, t: float, value: float, suspect: bool) -> bool:
        """Advance ``series`` by one reading; True when its emitted level changed."""
        s = self._states.get(series)
        if s is None:
            s = self._states[series] = LevelState()
        enter = rank_up(value, self._enter)
        hold = rank_up(value, self._hold)  # type: ignore[arg-type]
        return self._debounce.step(s, t, enter, hold, 1 if suspect else NO_CAP)

    def level(self, series: str) -> Level | None:
        return level_of(self._states[series].emitted)


def emitted_level(s: LevelState) -> Level | None:
    return level_of(s.emitted)
