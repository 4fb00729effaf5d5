"""Declarative Modbus device profiles: the register map of one device model.

A profile is written once per device model (hardware/sensors/<name>/profile.yaml) and
validated up front, so that every mistake a field engineer can make in a register map
(overlapping registers, a 32-bit value that does not fit, an enum on a float) is reported
with its file, line and field before the gateway ever polls a device.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from provisioning.configfile import ConfigError, ConfigProblem, load_yaml_model

__all__ = [
    "DataType",
    "DeviceProfile",
    "ModbusSettings",
    "PointSpec",
    "Table",
    "available_profiles",
    "hardware_dir",
    "load_profile",
    "raise_at",
]

Table = Literal["coil", "discrete", "holding", "input"]
DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64"]

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
INTEGER_TYPES: frozenset[str] = frozenset({"int16", "uint16", "int32", "uint32"})
REGISTER_COUNT: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
}
# Raw limits of the integer types: enum keys and encoded values must fit.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}

# SenML names allow '/', but point names are joined onto a device base name with ':'
# and '/' is reserved for topic/path use, so it is refused here.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
_NAME_RE = re.compile(NAME_PATTERN)


def raise_at(model: str, problems: list[tuple[tuple[str | int, ...], str, Any]]) -> NoReturn:
    """Raise a ValidationError whose errors point at nested fields.

    A plain ValueError from a model validator is reported at the model itself; raising a
    ValidationError from a *wrap* validator keeps the nested location, so the config loader
    can point at the exact line of the offending point.
    """
    raise ValidationError.from_exception_data(
        model,
        [
            InitErrorDetails(
                type=PydanticCustomError("profile_error", message),
                loc=loc,
                input=value,
            )
            for loc, message, value in problems
        ],
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointSpec(_Strict):
    """One value on the device: where it lives and how raw registers become engineering units."""

    name: str = Field(pattern=NAME_PATTERN)
    table: Table
    address: int = Field(ge=0, le=65535)
    type: DataType = "uint16"
    # Devices disagree on both orders (Telegraf's ABCD/CDAB/BADC/DCBA); the default is the
    # Modbus specification's big-endian, high word first.
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    bit: int | None = Field(default=None, ge=0, le=15)
    enum: dict[int, str] | None = None
    range: tuple[float, float] | None = None
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _force_bool(cls, data: Any) -> Any:
        # Coils, discrete inputs and bit fields can only hold a bool; saying so in every
        # profile would be noise, so the type defaults to bool there.
        if (
            isinstance(data, dict)
            and "type" not in data
            and (data.get("table") in BIT_TABLES or data.get("bit") is not None)
        ):
            data = {**data, "type": "bool"}
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems: list[str] = []
        is_bool = self.type == "bool"
        if self.table in BIT_TABLES and not is_bool:
            problems.append(f"a {self.table} holds one bit: type must be bool, not {self.type}")
        if self.bit is not None:
            if self.table in BIT_TABLES:
                problems.append(f"bit: only registers have bit fields, a {self.table} is a bit")
            if not is_bool:
                problems.append(f"a bit field is a bool: type must be bool, not {self.type}")
        if self.scale == 0:
            problems.append("scale must not be 0 (raw values could not be recovered)")
        if is_bool and (self.scale != 1.0 or self.offset != 0.0 or self.range is not None):
            problems.append("scale, offset and range do not apply to bool points")
        if self.enum is not None:
            if self.type not in INTEGER_TYPES:
                problems.append(f"enum needs an integer type, not {self.type}")
            elif self.scale != 1.0 or self.offset != 0.0:
                problems.append("enum points map raw values: scale and offset must stay 1 and 0")
            else:
                low, high = INT_LIMITS[self.type]
                bad = [k for k in self.enum if not low <= k <= high]
                if bad:
                    problems.append(f"enum keys {bad} do not fit in {self.type}")
            if len(set(self.enum.values())) != len(self.enum):
                problems.append("enum labels must be unique (they are decoded back to raw values)")
        if self.range is not None and self.range[0] > self.range[1]:
            problems.append(f"range low {self.range[0]} is above high {self.range[1]}")
        if self.address + self.register_count - 1 > 65535:
            problems.append(f"{self.type} at {self.address} runs past register 65535")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def register_count(self) -> int:
        return REGISTER_COUNT[self.type]

    @property
    def end(self) -> int:
        """First address after this point (exclusive end)."""
        return self.address + self.register_count

    @property
    def is_bit_field(self) -> bool:
        return self.bit is not None


class ModbusSettings(_Strict):
    # Reading a few unused registers costs ~2 bytes each; a new request costs a round trip
    # (tens of ms on RS-485), so small gaps are read through.
    max_gap: int = Field(default=8, ge=0)
    # 125 is the FC3/FC4 protocol limit; many devices break earlier, so leave headroom.
    max_registers: int = Field(default=120, ge=1, le=125)
    max_bits: int = Field(default=2000, ge=1, le=2000)
    # Some devices answer block reads that span reserved registers with an exception.
    block_reads: bool = True


class DeviceProfile(_Strict):
    name: str
    family: Literal["gas", "water", "elevator", "displacement", "thermal", "other"]
    transport: Literal["modbus-tcp", "modbus-rtu"]
    description: str = ""
    manufacturer: str = ""
    modbus: ModbusSettings = ModbusSettings()
    points: list[PointSpec] = Field(min_length=1)

    @model_validator(mode="wrap")
    @classmethod
    def _check_map(cls, data: Any, handler: Callable[[Any], DeviceProfile]) -> DeviceProfile:
        profile = handler(data)
        problems = _map_problems(profile)
        if problems:
            raise_at("DeviceProfile", problems)
        return profile

    def point(self, name: str) -> PointSpec:
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)

    @property
    def point_names(self) -> list[str]:
        return [p.name for p in self.points]


def _map_problems(profile: DeviceProfile) -> list[tuple[tuple[str | int, ...], str, Any]]:
    """Whole-map checks: unique names, no overlapping registers, points fit one request."""
    problems: list[tuple[tuple[str | int, ...], str, Any]] = []
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
        limit = (
            profile.modbus.max_bits if point.table in BIT_TABLES else profile.modbus.max_registers
        )
        if point.register_count > limit:
            problems.append(
                (
                    ("points", index, "type"),
                    f"{point.type} needs {point.register_count} registers, more than "
                    f"modbus.max_registers={limit}: it could never be read",
                    point.type,
                )
            )

    # Sort by address per table; with no overlaps, each point only needs comparing with
    # the furthest-reaching earlier point.
    order = sorted(range(len(profile.points)), key=lambda i: _sort_key(profile.points[i]))
    last: dict[str, int] = {}
    for index in order:
        point = profile.points[index]
        prev_index = last.get(point.table)
        if prev_index is not None:
            prev = profile.points[prev_index]
            if point.address < prev.end:
                if _shares_register(prev, point):
                    if prev.bit == point.bit:
                        problems.append(
                            (
                                ("points", index, "bit"),
                                f"bit {point.bit} of {point.table} register {point.address} "
                                f"is already used by {prev.name!r}",
                                point.bit,
                            )
                        )
                else:
                    problems.append(
                        (
                            ("points", index, "address"),
                            f"{point.table} registers {point.address}..{point.end - 1} overlap "
                            f"{prev.name!r} ({prev.address}..{prev.end - 1})",
                            point.address,
                        )
                    )
        if prev_index is None or point.end >= profile.points[prev_index].end:
            last[point.table] = index
    return problems


def _sort_key(point: PointSpec) -> tuple[int, int, int]:
    return (point.address, -point.register_count, point.bit if point.bit is not None else -1)


def _shares_register(a: PointSpec, b: PointSpec) -> bool:
    return a.is_bit_field and b.is_bit_field and a.address == b.address


def hardware_dir() -> Path:
    """The repository's hardware/ folder (profiles and scenarios ship with the code)."""
    return Path(__file__).resolve().parents[2] / "hardware"


def available_profiles() -> list[str]:
    """Names load_profile() accepts: driver folders, flat legacy files, installed drivers."""
    from drivers.registry import profile_names  # the registry imports this module

    return profile_names()


def _looks_like_path(name_or_path: str | Path) -> bool:
    if isinstance(name_or_path, Path):
        return True
    return name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or "\\" in name_or_path


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a profile from a .yaml path or a driver folder path, or by name.

    A name is looked up as hardware/sensors/{name}/profile.yaml (a driver folder),
    hardware/sensors/{name}.yaml (the flat layout), then in the folders of
    SENTRYLINE_DRIVER_PATH and the installed driver packages (see drivers/registry.py).
    """
    from drivers.registry import PROFILE_FILE, profile_names, profile_path

    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if path.is_dir():  # a driver folder
            return load_yaml_model(path / PROFILE_FILE, DeviceProfile)
        return load_yaml_model(name_or_path, DeviceProfile)
    found = profile_path(name_or_path)
    if found is None:
        names = ", ".join(profile_names()) or "none"
        raise ConfigError(
            str(name_or_path),
            [ConfigProblem(None, None, "", f"unknown device profile; available: {names}")],
        )
    return load_yaml_model(found, DeviceProfile)
