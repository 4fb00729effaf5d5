"""A device's model attachment (gateway config), importable without numpy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from edge_models.kinds import ModelKind


class ModelAttachment(BaseModel):
    """What a device profile carries to run a model on that device's readings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["thermal", "elevator", "water_level"]
    version: str | None = Field(None, pattern=r"^\d+\.\d+\.\d+$", description="pin a version")
    window: float | None = Field(
        None, gt=0, le=86_400, description="seconds of readings kept per device"
    )
    inputs: dict[str, str] = Field(
        default_factory=dict, description="model channel → the device's quantity name"
    )
    every: float | None = Field(None, ge=0, le=3600, description="seconds between inferences")
    report_every: float = Field(10.0, ge=0, le=3600, description="seconds between telemetry")
    persistence: int | None = Field(None, ge=1, le=100, description="results before an event")
    threshold: float | None = Field(None, description="alarm threshold (probability or metres)")
    max_gap: float | None = Field(None, gt=0, le=86_400, description="largest gap in a window")

    @model_validator(mode="after")
    def _fits_kind(self) -> ModelAttachment:
        kind = self.kind
        unknown = sorted(set(self.inputs) - set(kind.channels))
        if unknown:
            known = ", ".join(kind.channels) or "none: it takes frames"
            raise ValueError(f"inputs {unknown} are not channels of '{self.model}' ({known})")
        span = kind.window_samples * kind.period_s
        if self.window is not None and self.window < span:
            raise ValueError(f"window {self.window} s is shorter than the model's {span:g} s")
        return self

    @property
    def kind(self) -> ModelKind:
        # Imported here: the kinds pull in numpy (~15 MB), which a gateway without models
        # never needs.
        from edge_models.kinds import KINDS

        return KINDS[self.model]
