"""Warning rules. Each rule turns event-time-ordered readings into level transitions."""

from central.rules.base import LEVELS, Level, Transition, level_rank

__all__ = ["LEVELS", "Level", "Transition", "level_rank"]
