"""Serial-line driver profiles: devices that talk on their own, one frame per reading.

A ``profile.yaml`` with ``transport: serial-line`` (hardware/sensors/water-level-serial is
the example)::

    name: water-level-serial
    family: water
    transport: serial-line
    framing: nmea               # nmea ($ID,f1,f2*HH) or binary (STX LEN payload CRC ETX)
    serial: {baudrate: 9600, parity: N, stopbits: 1, bytesize: 8}   # the device's defaults
    update_time: 2              # seconds between frames, if the device has a fixed period
    sentences:                  # nmea: sentence id -> how its fields become readings
      WL: {parser: water_level}            # a built-in parser of line_sensor.py
      TP: {fields: [{index: 0, quantity: t_water}]}   # or fields by position
    points:
      - {name: level, unit: m, range: [0, 30]}
      - {name: t_water, unit: Cel, range: [-5, 40]}

``binary:`` instead of ``sentences:`` unpacks each binary frame's payload with a ``struct``
format (``<hH``) into fields in order. Units come from the points, so a reading always
carries the unit the profile declares.

``SerialLineProfile.frame_decoder()`` and ``.readings()`` are what
``drivers.serial.line_sensor.LineSensor`` takes; ``.settings()`` its line settings.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from drivers.serial import Parity, SerialSettings
from drivers.serial.framing import BinaryDecoder, BinaryFrame, NmeaDecoder, NmeaFrame
from drivers.serial.line_sensor import (
    FrameDecoder,
    Reading,
    SentenceMap,
    SentenceParser,
    rain_gauge,
    water_level,
)
from drivers.source_profile import Problems, SourceProfileBase, StrictModel, check_known_quantities

__all__ = [
    "BUILTIN_PARSERS",
    "BinaryField",
    "BinaryLayout",
    "SentenceField",
    "SentenceSpec",
    "SerialDefaults",
    "SerialLineProfile",
]

# Built-in parsers of line_sensor.py and the quantities (with units) each one reports.
BUILTIN_PARSERS: dict[str, dict[str, str]] = {
    "water_level": {"level": "m"},
    "rain_gauge": {"rain": "mm/h", "rain_acc": "mm"},
}
_SENTENCE_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")  # framing.encode_nmea's rule
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on", "a"})  # NMEA: A = active / valid
_FALSE = frozenset({"0", "false", "f", "no", "n", "off", "v"})


class SerialDefaults(StrictModel):
    """The device's factory line settings (a gateway config may override them)."""

    baudrate: int = Field(9600, gt=0)
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    def settings(self) -> SerialSettings:
        return SerialSettings(self.baudrate, self.parity, self.stopbits, self.bytesize)


class SentenceField(StrictModel):
    """One field of a sentence: position after the sentence id (0 = first field)."""

    index: int = Field(ge=0, le=40)
    quantity: str
    type: Literal["float", "int", "bool", "str"] = "float"
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.type in ("bool", "str") and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"scale and offset do not apply to {self.type} fields")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self


class SentenceSpec(StrictModel):
    """How one sentence id becomes readings: a built-in parser, or fields by position."""

    parser: Literal["water_level", "rain_gauge"] | None = None
    tip_mm: float = Field(0.2, gt=0, description="rain_gauge: rain per bucket tip (mm)")
    fields: list[SentenceField] = Field(default_factory=list)
    count: int | None = Field(None, ge=1, le=40, description="exact number of fields, if fixed")

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if (self.parser is None) == (not self.fields):
            raise ValueError("give either `parser` (built-in) or `fields`, not both or neither")
        if self.parser is not None and self.count is not None:
            raise ValueError("`count` applies to `fields`; built-in parsers check their own")
        if self.count is not None and any(f.index >= self.count for f in self.fields):
            raise ValueError(f"a field index is beyond count {self.count}")
        return self

    @property
    def quantities(self) -> list[str]:
        if self.parser is not None:
            return list(BUILTIN_PARSERS[self.parser])
        return [f.quantity for f in self.fields]


class BinaryField(StrictModel):
    quantity: str
    scale: float = 1.0
    offset: float = 0.0


class BinaryLayout(StrictModel):
    """A binary frame's payload: ``struct`` format (little-endian ``<``), fields in order."""

    format: str = Field(min_length=2)
    fields: list[BinaryField] = Field(min_length=1)

    @field_validator("format")
    @classmethod
    def _valid_format(cls, fmt: str) -> str:
        try:
            struct.calcsize(fmt)
        except struct.error as exc:
            raise ValueError(f"invalid struct format {fmt!r}: {exc}") from None
        if fmt[0] not in "<>!=":
            raise ValueError("start the format with a byte order (< little, > big)")
        return fmt

    @model_validator(mode="after")
    def _fits(self) -> Self:
        count = len(struct.unpack(self.format, bytes(struct.calcsize(self.format))))
        if len(self.fields) > count:
            raise ValueError(f"{len(self.fields)} fields but {self.format!r} unpacks {count}")
        return self


class SerialLineProfile(SourceProfileBase):
    transport: Literal["serial-line"]
    framing: Literal["nmea", "binary"] = "nmea"
    serial: SerialDefaults = SerialDefaults()
    update_time: float | None = Field(None, gt=0, description="seconds between frames")
    sentences: dict[str, SentenceSpec] = Field(default_factory=dict)
    binary: BinaryLayout | None = None

    @model_validator(mode="after")
    def _framing(self) -> Self:
        if self.framing == "nmea":
            if not self.sentences or self.binary is not None:
                raise ValueError("framing: nmea needs `sentences:` (and no `binary:`)")
        elif self.binary is None or self.sentences:
            raise ValueError("framing: binary needs `binary:` (and no `sentences:`)")
        return self

    def _mapping_problems(self) -> Problems:
        problems: Problems = []
        mapped: list[tuple[tuple[str | int, ...], str]] = []
        for sentence, spec in self.sentences.items():
            if not _SENTENCE_RE.match(sentence):
                problems.append(
                    (("sentences", sentence), "a sentence id is A-Z then 1-9 of A-Z0-9", sentence)
                )
            if spec.parser is not None:
                mapped += [(("sentences", sentence, "parser"), q) for q in spec.quantities]
            else:
                mapped += [
                    (("sentences", sentence, "fields", i, "quantity"), f.quantity)
                    for i, f in enumerate(spec.fields)
                ]
        if self.binary is not None:
            mapped += [
                (("binary", "fields", i, "quantity"), f.quantity)
                for i, f in enumerate(self.binary.fields)
            ]
        problems += check_known_quantities(self, mapped)
        if problems:
            return problems
        # Built-in parsers report fixed units: the points must say the same.
        for sentence, spec in self.sentences.items():
            for quantity, unit in BUILTIN_PARSERS.get(spec.parser or "", {}).items():
                declared = self.point(quantity).unit
                if declared != unit:
                    problems.append(
                        (
                            ("sentences", sentence, "parser"),
                            f"{spec.parser} reports {quantity} in {unit!r}; the point says "
                            f"{declared!r}",
                            spec.parser,
                        )
                    )
        return problems

    def settings(self) -> SerialSettings:
        return self.serial.settings()

    def frame_decoder(self) -> FrameDecoder:
        """A fresh streaming decoder (one per port: it keeps partial frames)."""
        return NmeaDecoder() if self.framing == "nmea" else BinaryDecoder()

    def readings(self) -> Callable[[Any], list[Reading]]:
        """frame -> [(quantity, value, unit)]; LookupError for a sentence with no mapping,
        ValueError for fields that do not parse (LineSensor counts both)."""
        if self.binary is not None:
            return self._binary_readings(self.binary)
        parsers: dict[str, SentenceParser] = {
            sentence: self._sentence_parser(sentence, spec)
            for sentence, spec in self.sentences.items()
        }
        return SentenceMap(parsers)

    def _unit(self, quantity: str) -> str | None:
        return self.point(quantity).unit

    def _sentence_parser(self, sentence: str, spec: SentenceSpec) -> SentenceParser:
        if spec.parser == "water_level":
            return water_level
        if spec.parser == "rain_gauge":
            return rain_gauge(spec.tip_mm)
        fields = [(f, self.point(f.quantity)) for f in spec.fields]

        def parse(frame: NmeaFrame) -> list[Reading]:
            if spec.count is not None and len(frame.fields) != spec.count:
                raise ValueError(f"{sentence} needs {spec.count} fields, got {len(frame.fields)}")
            out: list[Reading] = []
            for field, point in fields:
                if field.index >= len(frame.fields):
                    raise ValueError(f"{sentence} has no field {field.index}")
                text = frame.fields[field.index]
                if text == "":
                    continue  # NMEA: an empty field means "no value now"
                out.append((field.quantity, _field_value(field, text), point.unit))
            return out

        return parse

    def _binary_readings(self, layout: BinaryLayout) -> Callable[[Any], list[Reading]]:
        packer = struct.Struct(layout.format)
        units = [self._unit(f.quantity) for f in layout.fields]

        def parse(frame: BinaryFrame) -> list[Reading]:
            if len(frame.payload) != packer.size:
                raise ValueError(f"payload of {len(frame.payload)} bytes, {packer.size} expected")
            raw = packer.unpack(frame.payload)
            out: list[Reading] = []
            for field, value, unit in zip(layout.fields, raw, units, strict=False):
                number = value * field.scale + field.offset
                if not math.isfinite(number):
                    raise ValueError(f"{field.quantity} is not finite")
                out.append((field.quantity, round(number, 9), unit))
            return out

        return parse


def _field_value(field: SentenceField, text: str) -> float | int | bool | str:
    if field.type == "str":
        return text
    if field.type == "bool":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{field.quantity}: {text!r} is not a flag")
    number = int(text) if field.type == "int" else float(text)  # ValueError for junk
    if not math.isfinite(number):
        raise ValueError(f"{field.quantity}: {text!r} is not finite")
    if field.type == "int" and field.scale == 1.0 and field.offset == 0.0:
        return number
    return round(number * field.scale + field.offset, 9)
