"""Raw Modbus registers <-> engineering values, for the gateway (decode) and simulators (encode).

Multi-register values are packed big-endian and then reordered: ``byte_order`` swaps the two
bytes inside each register, ``word_order`` reverses the register sequence. That covers the
four layouts devices use in the wild (ABCD, BADC, CDAB, DCBA).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

from drivers.modbus.planner import ReadRequest
from drivers.modbus.profile import BIT_TABLES, INT_LIMITS, PointSpec, Table

__all__ = [
    "CodecError",
    "RequestDecoder",
    "Value",
    "compile_request",
    "decode_image",
    "decode_point",
    "decode_request",
    "encode_image",
    "encode_point",
    "from_words",
    "to_words",
]

Value = float | int | bool | str

_STRUCT: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "float64": "d",
}
_FLOAT32_MAX = 3.4028234663852886e38


class CodecError(ValueError):
    """A block that cannot be decoded, or a value that cannot be encoded."""


def to_words(point: PointSpec, raw: int | float) -> list[int]:
    """Pack one raw (unscaled) number into registers in the point's word/byte order."""
    data = struct.pack(">" + _STRUCT[point.type], raw)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if point.byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if point.word_order == "little":
        words.reverse()
    return words


def from_words(point: PointSpec, words: Sequence[int]) -> int | float:
    """Inverse of to_words: registers in the point's order -> raw number."""
    ordered = list(words)
    if point.word_order == "little":
        ordered.reverse()
    if point.byte_order == "little":
        ordered = [((w & 0xFF) << 8) | (w >> 8) for w in ordered]
    data = b"".join((w & 0xFFFF).to_bytes(2, "big") for w in ordered)
    (raw,) = struct.unpack(">" + _STRUCT[point.type], data)
    return raw


def decode_point(point: PointSpec, words: Sequence[int] | Sequence[bool]) -> Value:
    """Decode one point from exactly its own registers (or its one bit)."""
    if point.table in BIT_TABLES:
        return bool(words[0])
    if point.bit is not None:
        # The bit number refers to the register as it arrives (bit 0 = least significant).
        return bool((int(words[0]) >> point.bit) & 1)
    if point.type == "bool":
        return int(words[0]) != 0
    raw = from_words(point, [int(w) for w in words])
    if point.enum is not None:
        return point.enum.get(int(raw), f"unknown({int(raw)})")
    if point.scale == 1.0 and point.offset == 0.0:
        return raw  # int stays int, float stays float
    divisor = _divisor(point.scale)
    if divisor is not None:
        # 617 / 1000 is the double nearest 0.617; 617 * 0.001 is 0.617000...01. Clean
        # decimals keep SenML payloads short and comparisons with set points exact.
        return raw / divisor + point.offset
    return raw * point.scale + point.offset


def decode_request(request: ReadRequest, words: Sequence[int] | Sequence[bool]) -> dict[str, Value]:
    """Engineering values for every point of a request, from the registers it read.

    ``words`` may be longer than the request (bit reads come back padded to whole bytes).
    """
    values: dict[str, Value] = {}
    for point in request.points:
        start = point.address - request.address
        stop = start + point.register_count
        if start < 0 or stop > len(words):
            raise CodecError(
                f"{request.table} block at {request.address} has {len(words)} values, "
                f"point {point.name!r} needs offsets {start}..{stop - 1}"
            )
        values[point.name] = decode_point(point, words[start:stop])
    return values


RequestDecoder = Callable[[Sequence[int] | Sequence[bool]], dict[str, Value]]


def compile_request(request: ReadRequest) -> RequestDecoder:
    """A decoder for one planned request, built once: the same values as decode_request,
    without re-reading each point's settings on every poll (the gateway's hot path)."""
    steps = [(p.name, p.address - request.address, _point_decoder(p)) for p in request.points]
    needed = max(p.address - request.address + p.register_count for p in request.points)
    misplaced = any(p.address < request.address for p in request.points)

    def decode(words: Sequence[int] | Sequence[bool]) -> dict[str, Value]:
        if misplaced or len(words) < needed:
            return decode_request(request, words)  # raises the CodecError that says why
        return {name: fn(words, offset) for name, offset, fn in steps}

    return decode


def _point_decoder(point: PointSpec) -> Callable[[Sequence[int] | Sequence[bool], int], Value]:
    """(words, offset) -> value for one point, specialised on its type and layout."""
    if point.table in BIT_TABLES:
        return lambda words, i: bool(words[i])
    if point.bit is not None:
        bit = point.bit
        return lambda words, i: bool((int(words[i]) >> bit) & 1)
    if point.type == "bool":
        return lambda words, i: int(words[i]) != 0
    raw = _raw_decoder(point)
    if point.enum is not None:
        labels = point.enum
        return lambda words, i: _enum_label(labels, int(raw(words, i)))
    if point.scale == 1.0 and point.offset == 0.0:
        return raw
    offset = point.offset
    divisor = _divisor(point.scale)
    if divisor is not None:
        return lambda words, i: raw(words, i) / divisor + offset
    scale = point.scale
    return lambda words, i: raw(words, i) * scale + offset


def _enum_label(labels: Mapping[int, str], raw: int) -> str:
    label = labels.get(raw)
    return label if label is not None else f"unknown({raw})"


def _raw_decoder(point: PointSpec) -> Callable[[Sequence[int] | Sequence[bool], int], int | float]:
    count = point.register_count
    swap = point.byte_order == "little"
    if count == 1 and point.type == "uint16":
        if swap:
            return lambda words, i: ((int(words[i]) & 0xFF) << 8) | ((int(words[i]) >> 8) & 0xFF)
        return lambda words, i: int(words[i]) & 0xFFFF
    if count == 1 and point.type == "int16":

        def int16(words: Sequence[int] | Sequence[bool], i: int) -> int:
            w = int(words[i]) & 0xFFFF
            if swap:
                w = ((w & 0xFF) << 8) | (w >> 8)
            return w - 0x10000 if w & 0x8000 else w

        return int16
    packer = struct.Struct(f">{count}H")
    unpacker = struct.Struct(">" + _STRUCT[point.type])
    reverse = point.word_order == "little"

    def wide(words: Sequence[int] | Sequence[bool], i: int) -> int | float:
        ordered = [int(w) & 0xFFFF for w in words[i : i + count]]
        if reverse:
            ordered.reverse()
        if swap:
            ordered = [((w & 0xFF) << 8) | (w >> 8) for w in ordered]
        return unpacker.unpack(packer.pack(*ordered))[0]

    return wide


def encode_point(point: PointSpec, value: Value) -> list[int] | bool:
    """Engineering value -> raw registers (or a bool for bits), for simulators and tests.

    Integer types round to the nearest raw count and clamp to the type's range, like a
    device's ADC saturating; enum points take the label or the raw int.
    """
    if point.table in BIT_TABLES or point.bit is not None:
        return _as_bool(point, value)
    if point.type == "bool":
        return [1 if _as_bool(point, value) else 0]
    if point.enum is not None:
        return to_words(point, _enum_raw(point, value))
    number = _as_number(point, value)
    divisor = _divisor(point.scale)
    if divisor is not None:
        raw = (number - point.offset) * divisor
    else:
        raw = (number - point.offset) / point.scale
    if point.type in INT_LIMITS:
        if not math.isfinite(raw):
            raise CodecError(f"point {point.name!r}: {value!r} has no {point.type} encoding")
        low, high = INT_LIMITS[point.type]
        return to_words(point, min(max(round(raw), low), high))
    if point.type == "float32" and math.isfinite(raw):
        raw = min(max(raw, -_FLOAT32_MAX), _FLOAT32_MAX)  # struct refuses finite overflow
    return to_words(point, raw)


def encode_image(
    points: Iterable[PointSpec], values: Mapping[str, Value]
) -> dict[Table, dict[int, int | bool]]:
    """Encode many points into per-table address -> word (or bit) maps.

    Bit fields sharing a register are OR-ed into one word; points without a value are left
    out (the caller decides what an unset register holds).
    """
    image: dict[Table, dict[int, int | bool]] = {}
    for point in points:
        if point.name not in values:
            continue
        table = image.setdefault(point.table, {})
        encoded = encode_point(point, values[point.name])
        if isinstance(encoded, bool):
            if point.bit is None:
                table[point.address] = encoded
            else:
                word = int(table.get(point.address, 0))
                mask = 1 << point.bit
                table[point.address] = (word | mask) if encoded else (word & ~mask)
        else:
            for i, word in enumerate(encoded):
                table[point.address + i] = word
    return image


@functools.cache
def _divisor(scale: float) -> int | None:
    """The integer n with scale == 1/n (0.1, 0.001, ...), if there is one."""
    inverse = 1.0 / scale
    n = round(inverse)
    return n if n != 0 and abs(n) > 1 and 1.0 / n == scale else None


def _as_bool(point: PointSpec, value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0
    raise CodecError(f"point {point.name!r} is a bool, got {value!r}")


def _as_number(point: PointSpec, value: Value) -> float:
    if isinstance(value, str):
        raise CodecError(f"point {point.name!r} is numeric, got {value!r}")
    return float(value)


def _enum_raw(point: PointSpec, value: Value) -> int:
    assert point.enum is not None
    if isinstance(value, str):
        for raw, label in point.enum.items():
            if label == value:
                return raw
        labels = ", ".join(point.enum.values())
        raise CodecError(f"point {point.name!r}: {value!r} is not one of {labels}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"point {point.name!r} is an enum, got {value!r}")
    low, high = INT_LIMITS[point.type]
    if not low <= value <= high:
        raise CodecError(f"point {point.name!r}: raw {value} does not fit {point.type}")
    return value


def decode_image(
    requests: Iterable[ReadRequest], image: Mapping[Table, Mapping[int, int | bool]]
) -> dict[str, Value]:
    """Decode a register image through a read plan (the inverse of :func:`encode_image`).

    Registers the image does not hold read as 0, as an unset register would.
    """
    values: dict[str, Value] = {}
    for request in requests:
        table = image.get(request.table, {})
        words = [table.get(request.address + i, 0) for i in range(request.count)]
        values.update(decode_request(request, words))  # type: ignore[arg-type]
    return values
