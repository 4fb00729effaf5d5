"""What every non-Modbus driver profile shares: identity and the quantities it reports.

A Modbus profile lists register points; a CoAP, serial-line or BLE device reports named
readings in a format of its own. Their profiles (drivers/coap/profile.py,
drivers/serial/profile.py, drivers/ble/profile.py) all start with the same identity
(name, family, transport) and a ``points:`` list naming every quantity the driver hands to
the gateway, with its SenML unit and plausible range, so that the contract suite, the
gateway's range check and the documentation read the same list for every transport. The
transport-specific mapping (SenML renames, NMEA fields, BTHome objects) must land on those
points: a mapping to an undeclared quantity is reported at its file:line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.modbus.profile import NAME_PATTERN, raise_at

__all__ = [
    "Family",
    "PointKind",
    "Problems",
    "SourcePoint",
    "SourceProfileBase",
    "StrictModel",
    "check_known_quantities",
]

# The same choices as DeviceProfile.family and drivers.registry.Family (a test keeps them
# equal); repeated here because the registry imports this module.
Family = Literal["gas", "water", "elevator", "displacement", "thermal", "other"]
PointKind = Literal["number", "bool", "string"]
Problems = list[tuple[tuple[str | int, ...], str, Any]]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a profile must not pass silently."""

    model_config = ConfigDict(extra="forbid")


class SourcePoint(StrictModel):
    """One quantity the driver reports: a SenML record ``{device}/{name}``."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: PointKind = "number"  # number: SenML v; bool: vb; string: vs
    unit: str | None = None
    range: tuple[float, float] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind != "number" and (self.unit is not None or self.range is not None):
            raise ValueError(f"a {self.kind} point has no unit or range")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range low {self.range[0]} is above high {self.range[1]}")
        return self


class SourceProfileBase(StrictModel):
    """Identity and points; subclasses add `transport` and the wire mapping."""

    name: str
    family: Family
    description: str = ""
    manufacturer: str = ""
    points: list[SourcePoint] = Field(min_length=1)

    @model_validator(mode="wrap")
    @classmethod
    def _check_points(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        profile = handler(data)
        problems: Problems = []
        seen: dict[str, int] = {}
        for index, point in enumerate(profile.points):
            if point.name in seen:
                problems.append(
                    (
                        ("points", index, "name"),
                        f"duplicate point name (also points[{seen[point.name]}])",
                        point.name,
                    )
                )
            seen.setdefault(point.name, index)
        problems += profile._mapping_problems()
        if problems:
            raise_at(cls.__name__, problems)
        return profile

    def _mapping_problems(self) -> Problems:
        """Transport mappings that name undeclared points (overridden per transport)."""
        return []

    def point(self, name: str) -> SourcePoint:
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)

    @property
    def point_names(self) -> list[str]:
        return [p.name for p in self.points]


def check_known_quantities(
    profile: SourceProfileBase, mapped: Iterable[tuple[tuple[str | int, ...], str]]
) -> Problems:
    """(location, quantity) pairs whose quantity is not a declared point."""
    names = set(profile.point_names)
    known = ", ".join(profile.point_names)
    return [
        (loc, f"{quantity!r} is not one of the profile's points ({known})", quantity)
        for loc, quantity in mapped
        if quantity not in names
    ]
