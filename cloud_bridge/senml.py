"""SenML (RFC 8428) packs: the one wire format between gateways and central.

Inside the product a reading is a resolved :class:`Record` (absolute time in seconds, full
name, unit, one value). On the wire a :class:`Pack` is a SenML array whose first record also
carries the pack's identity as extension labels:

``gw``  gateway id, ``ep`` boot epoch, ``sq`` sequence number within the epoch — the
(gateway, epoch, seq) dedup key end to end — and optionally ``rp`` (true when the pack is a
replay from the outbox backlog). Extension labels never end in ``_``: RFC 8428 reserves that
suffix for "must understand" labels, and a receiver rejects packs that carry one it does not
know. A record may carry ``q`` (QARTOD-style quality flag: 1 pass, 3 suspect, 4 fail) and ``cu``
(true: stamped while the gateway's clock was not synchronised; a correction follows).

Record names are ``{device}/{quantity}``; the pack's base name is
``urn:dev:sentryline:{gateway}:`` so resolved names are globally unique.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import cbor2

JSON_CONTENT_TYPE = "application/senml+json"
CBOR_CONTENT_TYPE = "application/senml+cbor"
WireFormat = Literal["json", "cbor"]
CONTENT_TYPES: dict[str, str] = {"json": JSON_CONTENT_TYPE, "cbor": CBOR_CONTENT_TYPE}

# RFC 8428 §4.5.3: times >= 2**28 are absolute POSIX seconds, smaller ones relative to "now".
ABSOLUTE_TIME_MIN = 2**28
# Anything past ~5138 AD in seconds is a millisecond timestamp sent by mistake.
MILLISECONDS_SUSPECT = 1e11

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-:./_]*\Z")
DEVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}\Z")

# Integers central stores must fit SQLite's signed 64-bit INTEGER.
_INT_MAX = 2**63 - 1

# JSON label -> CBOR label (RFC 8428 Table 4) for the labels we use, plus our extensions,
# which stay text keys in CBOR (only registered labels get integers).
_CBOR_LABELS = {
    "bver": -1,
    "bn": -2,
    "bt": -3,
    "bu": -4,
    "bv": -5,
    "bs": -6,
    "n": 0,
    "u": 1,
    "v": 2,
    "vs": 3,
    "vb": 4,
    "s": 5,
    "t": 6,
    "ut": 7,
    "vd": 8,
}
_JSON_LABELS = {v: k for k, v in _CBOR_LABELS.items()}
_KNOWN_LABELS = frozenset(_CBOR_LABELS) | {"gw", "ep", "sq", "rp", "q", "cu"}

Value = float | str | bool


class PackRejected(ValueError):
    """A pack that central must not store; ``reason`` is a short stable counter key.

    ``key`` is the pack's (gateway, epoch, seq) when its identity could be read: central then
    confirms the rejection, so the gateway stops re-sending a pack that can never be stored.
    """

    def __init__(self, reason: str, detail: str, key: tuple[str, int, int] | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.key = key


@dataclass(frozen=True, slots=True)
class Record:
    """One resolved reading."""

    name: str  # "{device}/{quantity}" relative to the gateway's base name
    time: float  # absolute POSIX seconds (UTC)
    value: Value
    unit: str | None = None
    update_time: float | None = None  # SenML `ut`: the longest time before the next report
    quality: int | None = None  # QARTOD flag: 1 pass, 3 suspect, 4 fail
    clock_synced: bool = True  # False: stamped while the gateway clock was unsynchronised

    @property
    def device(self) -> str:
        return self.name.rpartition("/")[0]

    @property
    def quantity(self) -> str:
        return self.name.rpartition("/")[2]


@dataclass(frozen=True, slots=True)
class Pack:
    gateway: str
    epoch: int
    seq: int
    records: tuple[Record, ...]
    replayed: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.gateway, self.epoch, self.seq)

    @property
    def base_name(self) -> str:
        return base_name_for(self.gateway)


def base_name_for(gateway: str) -> str:
    return f"urn:dev:sentryline:{gateway}:"


def _value_fields(value: Value) -> dict[str, Any]:
    # bool before float: bool is an int subclass in Python.
    if isinstance(value, bool):
        return {"vb": value}
    if isinstance(value, str):
        return {"vs": value}
    return {"v": value}


def pack_to_records(pack: Pack) -> list[dict[str, Any]]:
    """The SenML JSON-label representation of ``pack`` (compact: base time, relative t)."""
    if not pack.records:
        raise ValueError("a pack needs at least one record")
    base_time = min(r.time for r in pack.records)
    out: list[dict[str, Any]] = []
    for i, rec in enumerate(pack.records):
        item: dict[str, Any] = {}
        if i == 0:
            item.update(
                bn=pack.base_name, bt=base_time, gw=pack.gateway, ep=pack.epoch, sq=pack.seq
            )
            if pack.replayed:
                item["rp"] = True
        item["n"] = rec.name
        if rec.unit is not None:
            item["u"] = rec.unit
        item.update(_value_fields(rec.value))
        offset = round(rec.time - base_time, 6)
        if offset:
            item["t"] = offset
        if rec.update_time is not None:
            item["ut"] = rec.update_time
        if rec.quality is not None:
            item["q"] = rec.quality
        if not rec.clock_synced:
            item["cu"] = True  # "clock unsynchronised": sent only when true, to stay compact
        out.append(item)
    return out


def encode_pack(pack: Pack, fmt: WireFormat = "json") -> bytes:
    items = pack_to_records(pack)
    if fmt == "json":
        return json.dumps(items, separators=(",", ":"), allow_nan=False).encode()
    return cbor2.dumps([{_CBOR_LABELS.get(k, k): v for k, v in item.items()} for item in items])


def _parse_bytes(payload: bytes, content_type: str | None) -> Any:
    is_cbor = content_type == CBOR_CONTENT_TYPE or (
        content_type is None and payload[:1] and payload[0] >> 5 == 4  # CBOR major type 4
    )
    try:
        if is_cbor:
            data = cbor2.loads(payload)
            if isinstance(data, list):
                data = [
                    {(_JSON_LABELS.get(k, k) if type(k) is int else k): v for k, v in item.items()}
                    if isinstance(item, dict)
                    else item
                    for item in data
                ]
            return data
        return json.loads(payload)
    except (ValueError, cbor2.CBORDecodeError, UnicodeDecodeError, RecursionError) as exc:
        kind = "CBOR" if is_cbor else "JSON"
        raise PackRejected("malformed", f"payload is not valid {kind}: {exc}") from None


def _number(item: dict[str, Any], label: str, index: int) -> float | None:
    if label not in item:
        return None
    raw = item[label]
    # Hot path (every value of every reading): a finite float needs no more checks.
    if type(raw) is float and math.isfinite(raw):
        return raw
    if not isinstance(raw, bool) and isinstance(raw, int | float):
        try:
            number = float(raw)  # OverflowError for ints beyond the float range
        except OverflowError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise PackRejected("wrong_type", f"record {index}: '{label}' must be a finite number")


def _text(raw: Any) -> bool:
    """A string that can be stored as UTF-8 (JSON escapes can smuggle in lone surrogates)."""
    if not isinstance(raw, str):
        return False
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _flag(raw: Any) -> bool:
    return not isinstance(raw, bool) and isinstance(raw, int) and -_INT_MAX - 1 <= raw <= _INT_MAX


def decode_pack(payload: bytes, content_type: str | None = None, now: float | None = None) -> Pack:
    """Parse and validate a pack; raise :class:`PackRejected` with a counter-friendly reason.

    ``now`` resolves relative times (RFC 8428); packs from gateways normally use absolute ones.
    """
    data = _parse_bytes(payload, content_type)
    if not isinstance(data, list) or not data:
        raise PackRejected("not_a_pack", "a SenML pack is a non-empty array of records")
    if not all(isinstance(item, dict) for item in data):
        raise PackRejected("wrong_type", "every SenML record must be an object/map")

    head = data[0]
    for label in ("gw", "ep", "sq"):
        if label not in head:
            raise PackRejected("missing_field", f"first record lacks '{label}' (pack identity)")
    gateway, epoch, seq = head["gw"], head["ep"], head["sq"]
    if not isinstance(gateway, str) or not DEVICE_RE.match(gateway):
        raise PackRejected("wrong_type", "'gw' must be a gateway id ([a-z0-9_.-])")
    for label, val in (("ep", epoch), ("sq", seq)):
        if not _flag(val) or val < 0:
            raise PackRejected("wrong_type", f"'{label}' must be a non-negative 64-bit integer")
    try:
        return _decode_records(data, gateway, epoch, seq, head.get("rp", False), now)
    except PackRejected as exc:
        exc.key = (gateway, epoch, seq)
        raise


def _check_labels(item: dict[Any, Any], index: int) -> None:
    for label in item:
        if not isinstance(label, str):
            raise PackRejected("wrong_type", f"record {index}: label {label!r} is not text")
        if label.endswith("_") and label not in _KNOWN_LABELS:
            raise PackRejected(
                "must_understand", f"record {index}: unknown must-understand label '{label}'"
            )


@functools.lru_cache(maxsize=65_536)
def _local_name(full_name: str, prefix: str) -> str | None:
    """``<device>/<name>`` below the gateway's base name, or None if the name is not valid.

    Cached: a fleet repeats the same few thousand names in every pack (a pure function of
    its arguments, so the cache can never answer wrongly)."""
    if not full_name or not NAME_RE.match(full_name) or not full_name.startswith(prefix):
        return None
    local = full_name[len(prefix) :]
    device, _, quantity = local.rpartition("/")
    return local if device and quantity else None


def _decode_records(
    data: list[dict[str, Any]],
    gateway: str,
    epoch: int,
    seq: int,
    replayed: Any,
    now: float | None,
) -> Pack:
    if not isinstance(replayed, bool):
        raise PackRejected("wrong_type", "'rp' must be a boolean")

    base_name = ""
    base_time = 0.0
    base_unit: str | None = None
    base_value = 0.0
    records: list[Record] = []
    prefix = base_name_for(gateway)
    for index, item in enumerate(data):
        # Hot path: labels that are all known need no per-label checks.
        if not item.keys() <= _KNOWN_LABELS:
            _check_labels(item, index)
        if "bver" in item and (isinstance(item["bver"], bool) or not isinstance(item["bver"], int)):
            raise PackRejected("wrong_type", f"record {index}: 'bver' must be an integer")
        if "bn" in item:
            if not isinstance(item["bn"], str):
                raise PackRejected("wrong_type", f"record {index}: 'bn' must be a string")
            base_name = item["bn"]
        bt = _number(item, "bt", index)
        if bt is not None:
            base_time = bt
        if "bu" in item:
            if not _text(item["bu"]):
                raise PackRejected("wrong_type", f"record {index}: 'bu' must be a string")
            base_unit = item["bu"]
        bv = _number(item, "bv", index)
        if bv is not None:
            base_value = bv

        name = item.get("n", "")
        if not isinstance(name, str):
            raise PackRejected("wrong_type", f"record {index}: 'n' must be a string")
        full_name = base_name + name
        local_name = _local_name(full_name, prefix)
        if local_name is None:
            if not full_name or not NAME_RE.match(full_name):
                raise PackRejected("bad_name", f"record {index}: invalid SenML name {full_name!r}")
            raise PackRejected(
                "bad_name", f"record {index}: name {full_name!r} is not '{prefix}<device>/<name>'"
            )

        if "v" in item and "vs" not in item and "vb" not in item and "vd" not in item:
            label = "v"  # hot path: one numeric value
        else:
            value_labels = [lbl for lbl in ("v", "vs", "vb", "vd") if lbl in item]
            if len(value_labels) != 1:
                raise PackRejected(
                    "missing_field" if not value_labels else "wrong_type",
                    f"record {index}: exactly one of v/vs/vb/vd required,"
                    f" got {value_labels or 'none'}",
                )
            label = value_labels[0]
        raw = item[label]
        value: Value
        if label == "v":
            number = _number(item, "v", index)
            assert number is not None  # "v" is in item, so _number returned or raised
            value = base_value + number
            if not math.isfinite(value):
                raise PackRejected("wrong_type", f"record {index}: 'bv' + 'v' overflows")
        elif label == "vb":
            if not isinstance(raw, bool):
                raise PackRejected("wrong_type", f"record {index}: 'vb' must be a boolean")
            value = raw
        else:
            if not _text(raw):
                raise PackRejected("wrong_type", f"record {index}: '{label}' must be a string")
            value = raw

        t = _number(item, "t", index) or 0.0
        when = base_time + t
        if when >= MILLISECONDS_SUSPECT:
            raise PackRejected(
                "time_in_ms", f"record {index}: time {when:.0f} looks like milliseconds"
            )
        if when < ABSOLUTE_TIME_MIN:
            if now is None:
                raise PackRejected("relative_time", f"record {index}: relative time {when}")
            when = now + when

        unit = item.get("u", base_unit)
        if unit is not None and not _text(unit):
            raise PackRejected("wrong_type", f"record {index}: 'u' must be a string")
        ut = _number(item, "ut", index)
        quality = item.get("q")
        if quality is not None and not _flag(quality):
            raise PackRejected("wrong_type", f"record {index}: 'q' must be an integer flag")
        unsynced = item.get("cu", False)
        if not isinstance(unsynced, bool):
            raise PackRejected("wrong_type", f"record {index}: 'cu' must be a boolean")
        records.append(Record(local_name, when, value, unit, ut, quality, not unsynced))

    return Pack(gateway, epoch, seq, tuple(records), replayed)
