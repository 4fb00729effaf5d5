"""What every rule produces: a transition of one asset's warning of one type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Level = Literal["blue", "yellow", "orange", "red"]
LEVELS: tuple[Level, ...] = ("blue", "yellow", "orange", "red")


_RANKS: dict[str | None, int] = {None: 0, "blue": 1, "yellow": 2, "orange": 3, "red": 4}
_BY_RANK: tuple[Level | None, ...] = (None, *LEVELS)


def level_rank(level: Level | None) -> int:
    """0 for no warning, 1 blue … 4 red."""
    return _RANKS[level]


def level_of(rank: int) -> Level | None:
    """The inverse of :func:`level_rank` (ranks outside 0..4 are clamped)."""
    return _BY_RANK[max(0, min(4, rank))]


@dataclass(frozen=True, slots=True)
class Transition:
    asset: str
    warning_type: str
    level: Level | None  # None: the condition cleared
    event_time: float  # when the condition was met (or cleared), from the readings
    rule_id: str
    trigger: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    late: bool = False  # judged from data older than the live stream (a replayed backlog)
    # Predicted: when the hazard is expected (CAP ``onset``), e.g. an inverse-velocity
    # failure time or a 30-minute level forecast. None for observed conditions.
    onset: float | None = None
    # CAP certainty override ("Likely" for forecasts); None lets the level table decide.
    certainty: str | None = None
