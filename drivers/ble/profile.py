"""Bluetooth LE driver profiles: BTHome v2 advertisers and GATT-notifying sensors.

A ``profile.yaml`` with ``transport: ble-bthome`` (hardware/sensors/ble-tilt-tag is the
example)::

    name: ble-tilt-tag
    family: displacement
    transport: ble-bthome
    bthome:
      update_interval_s: 30       # the tag's advertising period (SenML ut)
      local_name: TILT            # the name it advertises, if any (to find it on site)
      objects:                    # BTHome measurement -> quantity (renames and scaling)
        rotation: {quantity: tilt_x, scale: 0.017453292519943295}   # deg -> rad
        rotation_2: {quantity: tilt_y, scale: 0.017453292519943295}
        temperature: temperature  # a plain rename: keep value and unit
    points:
      - {name: tilt_x, unit: rad, range: [-3.15, 3.15]}
      ...

Measurements of the advertisement that are neither mapped nor named like a point are
dropped (a tag may advertise a packet id, a button, a second temperature). Units come from
the points. With ``transport: ble-gatt`` the profile has ``gatt:`` instead: the service
UUID, ``standard`` SIG characteristics (2a6e temperature, 2a19 battery, ...) and/or
``characteristics`` each with a ``struct`` format and fields in order (units come from the
points; a field that names a different unit is an error).

For the gateway: ``BthomeScanner`` needs ``device_config(device_id, mac=…)`` and its Records
passed through ``map_records``; ``GattSubscriber`` needs ``decoders()`` (or use
``gatt_config(address)`` for the transport block).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal, Self

from pydantic import Field, model_validator

from cloud_bridge.senml import Record
from drivers.ble.bthome import OBJECTS
from drivers.ble.gatt import (
    STANDARD,
    BleGattTransportConfig,
    CharacteristicConfig,
    CharDecoder,
    full_uuid,
    struct_decoder,
)
from drivers.ble.scanner import BthomeDeviceConfig
from drivers.source_profile import Problems, SourceProfileBase, StrictModel, check_known_quantities

__all__ = ["BleProfile", "BthomeObject", "BthomeSpec", "GattSpec"]

# The BTHome measurement names parse_service_data can report (a repeat gets _2, _3, ...).
_BTHOME_NAMES = frozenset(spec.quantity for spec in OBJECTS.values())


class BthomeObject(StrictModel):
    """Where one BTHome measurement goes: quantity = value * scale + offset."""

    quantity: str
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self


class BthomeSpec(StrictModel):
    objects: dict[str, str | BthomeObject] = Field(default_factory=dict)
    update_interval_s: float | None = Field(None, gt=0, description="advertising period")
    local_name: str | None = Field(None, min_length=1, description="advertised name, if any")

    @model_validator(mode="after")
    def _known_objects(self) -> Self:
        unknown = [name for name in self.objects if _base_name(name) not in _BTHOME_NAMES]
        if unknown:
            raise ValueError(
                f"{unknown} are not BTHome measurement names (temperature, rotation, battery, "
                "acceleration, ...; a second one of a kind is temperature_2)"
            )
        return self

    def mapping(self, name: str) -> BthomeObject | None:
        target = self.objects.get(name)
        if isinstance(target, str):
            return BthomeObject(quantity=target)
        return target


class GattSpec(StrictModel):
    service: str = Field(min_length=4, description="primary service UUID (to find the device)")
    standard: tuple[str, ...] = ()
    characteristics: tuple[CharacteristicConfig, ...] = ()

    @model_validator(mode="after")
    def _something_to_read(self) -> Self:
        unknown = [u for u in self.standard if full_uuid(u) not in STANDARD]
        if unknown:
            raise ValueError(f"no standard decoder for {unknown}; use `characteristics`")
        if not self.standard and not self.characteristics:
            raise ValueError("list `standard` UUIDs and/or `characteristics` to subscribe to")
        return self


class BleProfile(SourceProfileBase):
    transport: Literal["ble-bthome", "ble-gatt"]
    bthome: BthomeSpec | None = None
    gatt: GattSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.transport == "ble-bthome" and (self.bthome is None or self.gatt is not None):
            raise ValueError("transport: ble-bthome needs `bthome:` (and no `gatt:`)")
        if self.transport == "ble-gatt" and (self.gatt is None or self.bthome is not None):
            raise ValueError("transport: ble-gatt needs `gatt:` (and no `bthome:`)")
        return self

    @property
    def kind(self) -> Literal["bthome", "gatt"]:
        return "bthome" if self.transport == "ble-bthome" else "gatt"

    def _mapping_problems(self) -> Problems:
        mapped: list[tuple[tuple[str | int, ...], str]] = []
        if self.bthome is not None:
            for name in self.bthome.objects:
                target = self.bthome.mapping(name)
                assert target is not None
                mapped.append((("bthome", "objects", name), target.quantity))
        units: list[tuple[tuple[str | int, ...], str, str | None]] = []
        if self.gatt is not None:
            for uuid in self.gatt.standard:
                # The SIG decoders name their own quantities: decode a zero payload to see them.
                decoder = STANDARD[full_uuid(uuid)]
                for quantity, _, unit in decoder(bytes(8)):
                    mapped.append((("gatt", "standard"), quantity))
                    units.append((("gatt", "standard"), quantity, unit))
            for index, char in enumerate(self.gatt.characteristics):
                for j, spec in enumerate(char.fields):
                    loc: tuple[str | int, ...] = ("gatt", "characteristics", index, "fields", j)
                    mapped.append(((*loc, "quantity"), spec.quantity))
                    if "unit" in spec.model_fields_set:
                        units.append(((*loc, "unit"), spec.quantity, spec.unit))
        problems = check_known_quantities(self, mapped)
        if problems:
            return problems
        for loc, quantity, unit in units:
            declared = self.point(quantity).unit
            if unit != declared:
                problems.append(
                    (loc, f"{quantity} arrives in {unit!r}; the point says {declared!r}", unit)
                )
        return problems

    # --- BTHome --------------------------------------------------------------------------------

    def device_config(
        self, device_id: str, mac: str | None = None, name: str | None = None
    ) -> BthomeDeviceConfig:
        """The scanner's entry for one tag of this model (found by MAC and/or name)."""
        spec = self._bthome()
        return BthomeDeviceConfig(
            id=device_id,
            mac=mac,
            name=name if name is not None else (spec.local_name if mac is None else None),
            update_time=spec.update_interval_s,
        )

    def map_records(self, records: list[Record]) -> list[Record]:
        """BthomeScanner's Records -> this profile's quantities, scaled, with the points'
        units; measurements that map to no point are dropped."""
        spec = self._bthome()
        points = {p.name: p for p in self.points}
        out: list[Record] = []
        for record in records:
            measurement = record.quantity
            target = spec.mapping(measurement)
            if target is None:
                if measurement not in points:
                    continue
                target = BthomeObject(quantity=measurement)
            value = record.value
            if target.scale != 1.0 or target.offset != 0.0:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue  # a text/raw object cannot be scaled: not this quantity
                value = round(value * target.scale + target.offset, 9)
                if not math.isfinite(value):
                    continue
            point = points[target.quantity]
            out.append(
                replace(
                    record,
                    name=f"{record.device}/{target.quantity}",
                    value=value,
                    unit=point.unit,
                )
            )
        return out

    def _bthome(self) -> BthomeSpec:
        if self.bthome is None:
            raise ValueError(f"{self.name} is a {self.transport} driver, not BTHome")
        return self.bthome

    # --- GATT ----------------------------------------------------------------------------------

    def decoders(self) -> dict[str, CharDecoder]:
        """Characteristic UUID -> decoder, for GattSubscriber (units from the points)."""
        if self.gatt is None:
            raise ValueError(f"{self.name} is a {self.transport} driver, not GATT")
        out = {full_uuid(u): STANDARD[full_uuid(u)] for u in self.gatt.standard}
        for char in self.gatt.characteristics:
            fields = [
                f.model_copy(update={"unit": self.point(f.quantity).unit}) for f in char.fields
            ]
            out[full_uuid(char.uuid)] = struct_decoder(char.format, fields)
        return out

    def gatt_config(self, address: str, timeout: float = 20.0) -> BleGattTransportConfig:
        """The gateway's ``transport: {type: ble-gatt}`` block for one device of this model."""
        if self.gatt is None:
            raise ValueError(f"{self.name} is a {self.transport} driver, not GATT")
        return BleGattTransportConfig(
            type="ble-gatt",
            address=address,
            standard=self.gatt.standard,
            characteristics=self.gatt.characteristics,
            timeout=timeout,
        )


def _base_name(name: str) -> str:
    """temperature_2 -> temperature (the scanner's suffix for repeats)."""
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() and head in _BTHOME_NAMES else name
