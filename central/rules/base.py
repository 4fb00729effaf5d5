"""What every rule produces: a transition of one asset's warning of one type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Level = Literal["blue", "yellow", "orange", "red"]
LEVELS: tuple[Level, ...] = ("blue", "yellow", "orange", "red")


def level_rank(level: Level | None) -> int:
    """0 for no warning, 1 blue … 4 red."""
    return 0 if level is None else LEVELS.index(level) + 1


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
