"""Shared pieces of rule parameters (pydantic: they come from YAML and asset meta)."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RuleParams(BaseModel):
    """Every rule entry of a rule set: ``kind`` picks the rule, ``id`` names it (unique in the
    set; per-asset overrides in ``meta.rules.<id>``)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field("", pattern=r"^[a-z0-9_.\-]*$")
    enabled: bool = True


class Levels(BaseModel):
    """Ascending thresholds per level; null disables a level."""

    model_config = ConfigDict(extra="forbid")
    blue: float | None = None
    yellow: float | None = None
    orange: float | None = None
    red: float | None = None

    @model_validator(mode="after")
    def _ascending(self) -> Levels:
        values = [v for v in (self.blue, self.yellow, self.orange, self.red) if v is not None]
        if values != sorted(values):
            raise ValueError("thresholds must not decrease from blue to red")
        return self

    def tuple(self, scale: float = 1.0) -> tuple[float, float, float, float]:
        inf = math.inf
        return tuple(  # type: ignore[return-value]
            inf if v is None else v * scale for v in (self.blue, self.yellow, self.orange, self.red)
        )
