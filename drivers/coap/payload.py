"""CoAP payloads from devices -> Records: device-level SenML (JSON 110 / CBOR 112) and plain
JSON/CBOR mapped by a small declarative profile.

``cloud_bridge.senml.decode_pack`` reads *gateway* packs (gw/ep/sq identity, our base name);
a device's pack is different: its base name is the device's own (often a URN), times are
commonly relative ("now", or "-5 s") and it may carry `vd` blobs (a thermal frame) and `s`
sums. :class:`SenmlDecoder` resolves such a pack against the moment it was received and maps
every record to ``{device}/{quantity}`` under the gateway's name for the device.

Nothing here does I/O and nothing raises anything but :class:`PayloadError`, whose `reason`
is a short stable counter key (malformed, not_senml, wrong_type, bad_name, must_understand,
time_in_ms, bad_time, content_format, no_fields).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import cbor2
from pydantic import BaseModel, ConfigDict, Field

# The label tables and time rules are the wire format's; reuse them rather than drift.
from cloud_bridge.senml import _JSON_LABELS as CBOR_TO_JSON_LABELS
from cloud_bridge.senml import ABSOLUTE_TIME_MIN, MILLISECONDS_SUSPECT, NAME_RE, Record

__all__ = [
    "CF_CBOR",
    "CF_JSON",
    "CF_SENML_CBOR",
    "CF_SENML_JSON",
    "CF_TEXT",
    "Blob",
    "DecodeContext",
    "Decoded",
    "FieldMap",
    "PayloadDecoder",
    "PayloadError",
    "PlainDecoder",
    "PlainProfile",
    "SenmlDecoder",
    "decode_frame_i16",
    "encode_frame_i16",
]

# CoAP Content-Format numbers (IANA "CoAP Content-Formats" registry).
CF_TEXT = 0
CF_JSON = 50
CF_CBOR = 60
CF_SENML_JSON = 110
CF_SENML_CBOR = 112

_JSON_FORMATS = frozenset({CF_JSON, CF_SENML_JSON})
_CBOR_FORMATS = frozenset({CF_CBOR, CF_SENML_CBOR})
# Labels this decoder understands; anything ending in "_" beyond these rejects the pack
# (RFC 8428 §4.4 "must understand"), anything else is ignored.
_UNDERSTOOD = frozenset(CBOR_TO_JSON_LABELS.values())
_QUANTITY_BAD = re.compile(r"[^A-Za-z0-9_.\-]+")
_SEGMENT_SPLIT = re.compile(r"[:/]")


class PayloadError(ValueError):
    """A payload that yields no records; `reason` is a stable counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What the driver knows when a payload arrives."""

    device: str
    receive_time: float  # gateway clock, POSIX seconds: relative SenML times resolve against it
    update_time: float | None = None  # SenML `ut` to use when the payload carries none
    clock_synced: bool = True  # False: the gateway clock is not synchronised (Record.cu)


@dataclass(frozen=True, slots=True)
class Blob:
    """A SenML `vd` (opaque data) value: a Record cannot carry bytes, so blobs travel apart."""

    name: str  # "{device}/{quantity}"
    time: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Decoded:
    records: list[Record] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)


class PayloadDecoder(Protocol):
    def __call__(
        self, payload: bytes, content_format: int | None, ctx: DecodeContext
    ) -> Decoded: ...


# --- shared helpers -------------------------------------------------------------------------


def _load(payload: bytes, content_format: int | None, kind: str) -> Any:
    """JSON or CBOR by Content-Format; sniffed when the device sent none (or text/plain)."""
    if content_format in _JSON_FORMATS:
        is_cbor = False
    elif content_format in _CBOR_FORMATS:
        is_cbor = True
    elif content_format is None or content_format == CF_TEXT:
        stripped = payload.lstrip()
        is_cbor = not stripped[:1] or stripped[:1] not in b"[{"
    else:
        raise PayloadError("content_format", f"{kind}: unsupported content format {content_format}")
    if not payload:
        raise PayloadError("malformed", f"{kind}: empty payload")
    try:
        return cbor2.loads(payload) if is_cbor else json.loads(payload)
    except (ValueError, cbor2.CBORDecodeError, UnicodeDecodeError, RecursionError) as exc:
        what = "CBOR" if is_cbor else "JSON"
        raise PayloadError("malformed", f"{kind}: not valid {what}: {exc}") from None


def _finite(raw: Any, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PayloadError("wrong_type", f"{what} must be a number")
    try:
        number = float(raw)
    except OverflowError:
        raise PayloadError("wrong_type", f"{what} is out of range") from None
    if not math.isfinite(number):
        raise PayloadError("wrong_type", f"{what} must be finite")
    return number


def _text(raw: Any, what: str) -> str:
    if not isinstance(raw, str):
        raise PayloadError("wrong_type", f"{what} must be a string")
    try:
        raw.encode("utf-8")  # JSON escapes can smuggle in lone surrogates
    except UnicodeEncodeError:
        raise PayloadError("wrong_type", f"{what} is not valid UTF-8") from None
    return raw


def _stamp(ctx: DecodeContext, rec: Record, relative: bool) -> Record:
    # Only times taken from the gateway clock inherit its sync state; a device's absolute
    # timestamp is the device's claim and is passed on as such.
    if relative and not ctx.clock_synced:
        return replace(rec, clock_synced=False)
    return rec


# --- SenML from a device --------------------------------------------------------------------


def _label_name(label: Any) -> Any:
    """CBOR integer labels -> their JSON names (RFC 8428 Table 4); others unchanged."""
    if isinstance(label, int) and not isinstance(label, bool):
        return CBOR_TO_JSON_LABELS.get(label, label)
    return label


@dataclass(slots=True)
class _Base:
    """SenML base fields: they apply to every later record until replaced."""

    name: str = ""
    time: float = 0.0
    unit: str | None = None
    value: float = 0.0
    sum: float = 0.0

    def update(self, item: dict[str, Any], index: int) -> None:
        where = f"record {index}"
        if "bn" in item:
            self.name = _text(item["bn"], f"{where}: 'bn'")
        if "bt" in item:
            self.time = _finite(item["bt"], f"{where}: 'bt'")
        if "bu" in item:
            self.unit = _text(item["bu"], f"{where}: 'bu'")
        if "bv" in item:
            self.value = _finite(item["bv"], f"{where}: 'bv'")
        if "bs" in item:
            self.sum = _finite(item["bs"], f"{where}: 'bs'")


class SenmlDecoder:
    """Device SenML pack -> Records named ``{ctx.device}/{quantity}``.

    The quantity is the record's own name ``n`` (or, when ``n`` is empty, the last segment of
    the base name), with characters a Record name cannot hold replaced by ``_``
    (``3303/0/5700`` -> ``3303_0_5700``). ``names`` renames: keys are matched against the
    resolved name (``bn`` + ``n``) first, then ``n``.

    A pack with one invalid record is rejected whole (RFC 8428: a receiver must not guess),
    with the reason counted by the driver.
    """

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self.names = dict(names or {})

    def __call__(self, payload: bytes, content_format: int | None, ctx: DecodeContext) -> Decoded:
        data = _load(payload, content_format, "SenML")
        if isinstance(data, dict):
            if not any(_label_name(k) in _UNDERSTOOD for k in data):
                raise PayloadError(
                    "not_senml", "an object without SenML labels (plain JSON/CBOR needs a mapping)"
                )
            data = [data]  # a lone record: common on constrained devices, harmless to accept
        if not isinstance(data, list) or not data:
            raise PayloadError("not_senml", "a SenML pack is a non-empty array of records")
        out = Decoded()
        base = _Base()
        for index, raw_item in enumerate(data):
            if not isinstance(raw_item, dict):
                raise PayloadError("not_senml", f"record {index} is not a map")
            item = self._labels(raw_item, index)
            base.update(item, index)
            self._record(item, index, ctx, base, out)
        if not out.records and not out.blobs:
            raise PayloadError("not_senml", "the pack holds base fields only, no values")
        return out

    @staticmethod
    def _labels(raw_item: dict[Any, Any], index: int) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for raw_label, value in raw_item.items():
            label = _label_name(raw_label)
            if not isinstance(label, str):
                continue  # an unknown integer label: ignorable like any unknown label
            if label.endswith("_") and label not in _UNDERSTOOD:
                raise PayloadError(
                    "must_understand", f"record {index}: must-understand label '{label}'"
                )
            item[label] = value
        return item

    def _record(
        self, item: dict[str, Any], index: int, ctx: DecodeContext, base: _Base, out: Decoded
    ) -> None:
        where = f"record {index}"
        value_labels = [lbl for lbl in ("v", "vs", "vb", "vd") if lbl in item]
        has_sum = "s" in item
        if not value_labels and not has_sum:
            if any(lbl in item for lbl in ("n", "t", "u", "ut")):
                raise PayloadError("not_senml", f"{where}: no value (v/vs/vb/vd/s)")
            return  # a base-only record (RFC 8428 allows it)
        if len(value_labels) > 1:
            raise PayloadError("wrong_type", f"{where}: several values {value_labels}")

        name = _text(item.get("n", ""), f"{where}: 'n'")
        resolved = base.name + name
        if not resolved or not NAME_RE.match(resolved):
            raise PayloadError("bad_name", f"{where}: invalid SenML name {resolved!r}")
        full = f"{ctx.device}/{self._quantity(resolved, name, base.name, where)}"

        when = base.time + (_finite(item["t"], f"{where}: 't'") if "t" in item else 0.0)
        if abs(when) >= MILLISECONDS_SUSPECT:
            raise PayloadError("time_in_ms", f"{where}: time {when:.0f} looks like milliseconds")
        relative = when < ABSOLUTE_TIME_MIN
        if relative:
            when = ctx.receive_time + when  # RFC 8428 §4.5.3: relative to "now"
        unit = _text(item["u"], f"{where}: 'u'") if "u" in item else base.unit
        ut = _finite(item["ut"], f"{where}: 'ut'") if "ut" in item else ctx.update_time

        if value_labels:
            label = value_labels[0]
            raw = item[label]
            value: float | str | bool
            if label == "vd":
                out.blobs.append(Blob(full, when, self._data(raw, where)))
            else:
                if label == "v":
                    number = _finite(raw, f"{where}: 'v'")
                    if isinstance(raw, int) and not base.value and abs(raw) < 2**53:
                        value = raw  # keep counts integral (hot_px 20, not 20.0)
                    else:
                        value = base.value + number
                    if not math.isfinite(value):
                        raise PayloadError("wrong_type", f"{where}: 'bv' + 'v' overflows")
                elif label == "vb":
                    if not isinstance(raw, bool):
                        raise PayloadError("wrong_type", f"{where}: 'vb' must be a boolean")
                    value = raw
                else:
                    value = _text(raw, f"{where}: 'vs'")
                out.records.append(_stamp(ctx, Record(full, when, value, unit, ut), relative))
        if has_sum:
            # RFC 8428: `s` is in the record's unit multiplied by seconds, which has no
            # registered name in general: the sum travels as its own series, unit-less.
            total = base.sum + _finite(item["s"], f"{where}: 's'")
            if not math.isfinite(total):
                raise PayloadError("wrong_type", f"{where}: 'bs' + 's' overflows")
            rec = Record(f"{full}_sum", when, total, None, ut)
            out.records.append(_stamp(ctx, rec, relative))

    def _quantity(self, resolved: str, name: str, base_name: str, where: str) -> str:
        mapped = self.names.get(resolved) or self.names.get(name)
        if mapped is None:
            raw = name or _SEGMENT_SPLIT.split(base_name.rstrip(":/"))[-1]
            mapped = _QUANTITY_BAD.sub("_", raw).strip("_")
        if not mapped or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", mapped):
            raise PayloadError("bad_name", f"{where}: no quantity in {resolved!r}")
        return mapped

    @staticmethod
    def _data(raw: Any, where: str) -> bytes:
        if isinstance(raw, bytes):
            return raw  # CBOR carries vd as a byte string
        text = _text(raw, f"{where}: 'vd'")
        try:
            # JSON: base64url, padding omitted (RFC 8428 §4.3); tolerate padding anyway, but
            # not stray characters (the lenient default would silently drop them).
            padded = text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4)
            return base64.b64decode(padded, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError("wrong_type", f"{where}: 'vd' is not base64url") from None


# --- plain JSON / CBOR by profile -----------------------------------------------------------


class FieldMap(BaseModel):
    """One value in a plain payload: where it is, what it is called, how it scales."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pointer: str = Field(
        min_length=1, description="JSON pointer (/a/0/b, RFC 6901) or a top-level key"
    )
    quantity: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0


class PlainProfile(BaseModel):
    """Declarative mapping for devices that send plain JSON/CBOR instead of SenML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["auto", "json", "cbor"] = "auto"
    fields: tuple[FieldMap, ...] = Field(min_length=1)
    time: str | None = Field(None, description="pointer to an absolute POSIX time, if any")
    time_scale: float = Field(1.0, gt=0, description="0.001 when the device sends milliseconds")


_MISSING = object()


def _resolve(doc: Any, pointer: str) -> Any:
    if not pointer.startswith("/"):
        return doc.get(pointer, _MISSING) if isinstance(doc, dict) else _MISSING
    node = doc
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            found = node.get(token, _MISSING)
            if found is _MISSING and token.isdigit():
                found = node.get(int(token), _MISSING)  # CBOR maps often use integer keys
            node = found
        elif isinstance(node, list) and token.isdigit():
            node = node[int(token)] if int(token) < len(node) else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


class PlainDecoder:
    """Plain JSON/CBOR document -> Records by a :class:`PlainProfile`.

    Fields absent from a payload are skipped (devices often report partial documents); a
    payload with none of them, or a field of the wrong type, is an error.
    """

    def __init__(self, profile: PlainProfile) -> None:
        self.profile = profile
        forced = {"json": CF_JSON, "cbor": CF_CBOR}.get(profile.format)
        self._forced_format = forced

    def __call__(self, payload: bytes, content_format: int | None, ctx: DecodeContext) -> Decoded:
        fmt = self._forced_format if self._forced_format is not None else content_format
        doc = _load(payload, fmt, "plain")
        when, relative = ctx.receive_time, True
        if self.profile.time is not None:
            raw_time = _resolve(doc, self.profile.time)
            if raw_time is not _MISSING:
                when = _finite(raw_time, f"time {self.profile.time}") * self.profile.time_scale
                if when >= MILLISECONDS_SUSPECT:
                    raise PayloadError("time_in_ms", f"time {when:.0f} looks like milliseconds")
                if when < ABSOLUTE_TIME_MIN:
                    raise PayloadError("bad_time", f"{when} is not an absolute POSIX time")
                relative = False
        out = Decoded()
        for spec in self.profile.fields:
            raw = _resolve(doc, spec.pointer)
            if raw is _MISSING or raw is None:
                continue
            value: float | str | bool
            if isinstance(raw, bool | str):
                if spec.scale != 1.0 or spec.offset != 0.0:
                    raise PayloadError(
                        "wrong_type", f"{spec.pointer}: scaled field is not a number"
                    )
                value = _text(raw, spec.pointer) if isinstance(raw, str) else raw
            else:
                value = _finite(raw, spec.pointer) * spec.scale + spec.offset
                if not math.isfinite(value):
                    raise PayloadError("wrong_type", f"{spec.pointer}: scaled value overflows")
            rec = Record(f"{ctx.device}/{spec.quantity}", when, value, spec.unit, ctx.update_time)
            out.records.append(_stamp(ctx, rec, relative))
        if not out.records:
            raise PayloadError("no_fields", "none of the profile's fields is in the payload")
        return out


# --- 2-D frames in `vd` ---------------------------------------------------------------------


def encode_frame_i16(values: Sequence[float], scale: float = 0.01) -> bytes:
    """Row-major values -> little-endian int16 in units of `scale` (0.01 °C: ±327 °C)."""
    ints = [max(-32768, min(32767, round(v / scale))) for v in values]
    return struct.pack(f"<{len(ints)}h", *ints)


def decode_frame_i16(data: bytes, rows: int, cols: int, scale: float = 0.01) -> list[list[float]]:
    """The inverse of :func:`encode_frame_i16`; raises PayloadError on a wrong size."""
    if len(data) != 2 * rows * cols:
        raise PayloadError("wrong_type", f"frame is {len(data)} bytes, not {rows}x{cols} int16")
    flat = struct.unpack(f"<{rows * cols}h", data)
    return [[flat[r * cols + c] * scale for c in range(cols)] for r in range(rows)]
