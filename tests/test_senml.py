"""SenML (RFC 8428) packs: round trip, wire labels, base fields, rejections, fuzzing."""

from __future__ import annotations

import json
import math
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_bridge.senml import (
    ABSOLUTE_TIME_MIN,
    CBOR_CONTENT_TYPE,
    CONTENT_TYPES,
    DEVICE_RE,
    JSON_CONTENT_TYPE,
    Pack,
    PackRejected,
    Record,
    base_name_for,
    decode_pack,
    encode_pack,
)

GW = "gw-01"
BASE = base_name_for(GW)  # "urn:dev:sentryline:gw-01:"
T0 = 1_700_000_000.25
UNITS = ["m", "m/s", "m/s2", "rad", "Cel", "K", "Pa", "count", "/", "%RH", "ppm", "mm/h", "hPa"]


# -- strategies ---------------------------------------------------------------------------
gateways = st.from_regex(DEVICE_RE, fullmatch=True)
devices = st.from_regex(r"[a-z0-9][a-z0-9_.\-]{0,15}", fullmatch=True)
quantities = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
# Absolute POSIX seconds with a sub-second part, inside [2**28, 4e9).
abs_times = st.builds(
    lambda whole, frac: whole + frac,
    st.integers(min_value=2**28, max_value=4 * 10**9 - 1),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.booleans(),
)


@st.composite
def records(draw: st.DrawFn) -> Record:
    return Record(
        name=f"{draw(devices)}/{draw(quantities)}",
        time=draw(abs_times),
        value=draw(values),
        unit=draw(st.none() | st.sampled_from(UNITS)),
        update_time=draw(st.none() | st.floats(min_value=0.0, max_value=86_400.0)),
        quality=draw(st.none() | st.sampled_from([1, 2, 3, 4, 9])),
    )


packs = st.builds(
    Pack,
    gateway=gateways,
    epoch=st.integers(min_value=0, max_value=2**63 - 1),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    records=st.lists(records(), min_size=1, max_size=50).map(tuple),
    replayed=st.booleans(),
)


# -- helpers ------------------------------------------------------------------------------
class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()  # head(label=DROP) removes the label; None stays (JSON null)


def head(**overrides: Any) -> dict[str, Any]:
    """The identity-carrying first record of a valid JSON pack, with overrides."""
    item: dict[str, Any] = {"bn": BASE, "bt": T0, "gw": GW, "ep": 3, "sq": 7, "n": "d1/temp"}
    item["v"] = 21.5
    item.update(overrides)
    return {k: v for k, v in item.items() if v is not DROP}


def jpack(*items: dict[str, Any]) -> bytes:
    return json.dumps(list(items)).encode()


def rejected(payload: bytes, **kwargs: Any) -> PackRejected:
    with pytest.raises(PackRejected) as info:
        decode_pack(payload, **kwargs)
    return info.value


def assert_same_records(got: Pack, want: Pack) -> None:
    assert got.key == want.key
    assert got.replayed is want.replayed
    assert len(got.records) == len(want.records)
    for g, w in zip(got.records, want.records, strict=True):
        assert g.name == w.name
        assert g.device == w.device and g.quantity == w.quantity
        assert abs(g.time - w.time) <= 1e-6, (g.time, w.time)
        assert type(g.value) is type(w.value)
        assert g.value == w.value  # exact, floats included
        assert g.unit == w.unit
        assert g.update_time == w.update_time
        assert g.quality == w.quality


# -- round trip ---------------------------------------------------------------------------
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pack=packs, fmt=st.sampled_from(["json", "cbor"]), sniff=st.booleans())
def test_round_trip(pack: Pack, fmt: str, sniff: bool) -> None:
    payload = encode_pack(pack, fmt)  # type: ignore[arg-type]
    got = decode_pack(payload, None if sniff else CONTENT_TYPES[fmt])
    assert got.gateway == pack.gateway
    assert got.epoch == pack.epoch and got.seq == pack.seq
    assert got.base_name == f"urn:dev:sentryline:{pack.gateway}:"
    # json floats use repr (shortest exact); cbor2 writes float64: both are exact.
    assert_same_records(got, pack)


def test_round_trip_concrete_values() -> None:
    pack = Pack(
        GW,
        4,
        12,
        (
            Record("d1/ch4_lel", T0, 0.125, "/", 60.0, 1),
            Record("d1/mode", T0 + 1.5, "auto"),
            Record("d2/door_open", T0 - 0.75, True, quality=3),
        ),
        replayed=True,
    )
    for fmt in ("json", "cbor"):
        got = decode_pack(encode_pack(pack, fmt))
        assert got.key == (GW, 4, 12)
        assert got.replayed is True
        assert [r.name for r in got.records] == ["d1/ch4_lel", "d1/mode", "d2/door_open"]
        assert [r.time for r in got.records] == [T0, T0 + 1.5, T0 - 0.75]
        assert [r.value for r in got.records] == [0.125, "auto", True]
        assert [r.unit for r in got.records] == ["/", None, None]
        assert got.records[0].update_time == 60.0
        assert [r.quality for r in got.records] == [1, None, 3]
        assert got.records[2].device == "d2" and got.records[2].quantity == "door_open"


def test_encode_rejects_empty_pack() -> None:
    with pytest.raises(ValueError):
        encode_pack(Pack(GW, 0, 0, ()))


# -- wire labels and content types --------------------------------------------------------
def test_cbor_uses_integer_labels() -> None:
    pack = Pack(
        GW,
        2,
        9,
        (
            Record("d1/temp", T0, 21.5, "Cel", 30.0, 1),
            Record("d1/mode", T0 + 2, "auto"),
            Record("d1/door_open", T0 + 3, False),
        ),
        replayed=True,
    )
    raw = cbor2.loads(encode_pack(pack, "cbor"))
    assert isinstance(raw, list) and len(raw) == 3
    first, second, third = raw
    # bn=-2 bt=-3 n=0 u=1 v=2 vs=3 vb=4 t=6 ut=7; extensions stay text.
    assert set(first) == {-2, -3, "gw", "ep", "sq", "rp", 0, 1, 2, 7, "q"}
    assert first[-2] == BASE
    assert first[-3] == T0
    assert first[0] == "d1/temp"
    assert first[1] == "Cel"
    assert first[2] == 21.5
    assert first[7] == 30.0
    assert (first["gw"], first["ep"], first["sq"], first["rp"], first["q"]) == (GW, 2, 9, True, 1)
    assert set(second) == {0, 3, 6}
    assert (second[0], second[3], second[6]) == ("d1/mode", "auto", 2.0)
    assert set(third) == {0, 4, 6}
    assert third[4] is False
    # No registered label is ever written as text in CBOR.
    registered = {"bver", "bn", "bt", "bu", "bv", "bs", "n", "u", "v", "vs", "vb", "s", "t", "ut"}
    assert not any(isinstance(k, str) and k in registered for item in raw for k in item)


def test_json_uses_text_labels() -> None:
    pack = Pack(GW, 2, 9, (Record("d1/temp", T0, 21.5, "Cel"), Record("d1/temp", T0 + 1, 22.0)))
    raw = json.loads(encode_pack(pack, "json"))
    assert raw == [
        {"bn": BASE, "bt": T0, "gw": GW, "ep": 2, "sq": 9, "n": "d1/temp", "u": "Cel", "v": 21.5},
        {"n": "d1/temp", "v": 22.0, "t": 1.0},
    ]


@pytest.mark.parametrize("fmt", ["json", "cbor"])
def test_content_type_sniffing(fmt: str) -> None:
    pack = Pack(GW, 1, 5, (Record("d1/temp", T0, 20.0),))
    payload = encode_pack(pack, fmt)  # type: ignore[arg-type]
    assert decode_pack(payload).records[0].value == 20.0  # no content type
    assert decode_pack(payload, CONTENT_TYPES[fmt]).key == (GW, 1, 5)


def test_declared_content_type_wins_over_sniffing() -> None:
    pack = Pack(GW, 1, 5, (Record("d1/temp", T0, 20.0),))
    assert rejected(encode_pack(pack, "cbor"), content_type=JSON_CONTENT_TYPE).reason == "malformed"
    assert rejected(encode_pack(pack, "json"), content_type=CBOR_CONTENT_TYPE).reason == "malformed"


# -- base fields (RFC 8428 §4.1, §4.6) ----------------------------------------------------
def test_base_name_and_name_concatenate() -> None:
    pack = decode_pack(
        jpack(
            head(bn=f"{BASE}d1/", n="temp"),
            {"n": "rh", "v": 0.5},
            {"bn": f"{BASE}d1/temp", "v": 1.0},  # no n: bn alone is the full name
        )
    )
    assert [r.name for r in pack.records] == ["d1/temp", "d1/rh", "d1/temp"]
    assert [r.device for r in pack.records] == ["d1", "d1", "d1"]


def test_base_time_plus_time() -> None:
    pack = decode_pack(jpack(head(t=-5), {"n": "d1/temp", "v": 1, "t": 2.5}, {"n": "d1/x", "v": 2}))
    assert [r.time for r in pack.records] == [T0 - 5, T0 + 2.5, T0]


def test_base_unit_used_when_unit_absent() -> None:
    pack = decode_pack(
        jpack(head(bu="Cel"), {"n": "d1/t2", "v": 1, "u": "K"}, {"n": "d1/t3", "v": 2})
    )
    assert [r.unit for r in pack.records] == ["Cel", "K", "Cel"]
    # without bu a record without u has no unit
    assert decode_pack(jpack(head())).records[0].unit is None


def test_later_base_fields_override_earlier_ones() -> None:
    t1 = 1_800_000_000.5
    pack = decode_pack(
        jpack(
            head(bn=f"{BASE}d1/", n="a", bu="m"),
            {"n": "b", "v": 1},
            {"bn": f"{BASE}d2/", "bt": t1, "bu": "Pa", "n": "a", "v": 2, "t": 1},
            {"n": "b", "v": 3},
        )
    )
    assert [r.name for r in pack.records] == ["d1/a", "d1/b", "d2/a", "d2/b"]
    assert [r.time for r in pack.records] == [T0, T0, t1 + 1, t1]
    assert [r.unit for r in pack.records] == ["m", "m", "Pa", "Pa"]
    assert [r.value for r in pack.records] == [21.5, 1.0, 2.0, 3.0]


def test_base_value_added_to_numeric_values() -> None:
    pack = decode_pack(
        jpack(
            head(bv=100.0, v=1.5),
            {"n": "d1/temp", "v": -2},
            {"n": "d1/mode", "vs": "auto"},
            {"bv": 0, "n": "d1/temp", "v": 7},
        )
    )
    assert [r.value for r in pack.records] == [101.5, 98.0, "auto", 7.0]


def test_records_after_the_first_inherit_pack_identity() -> None:
    pack = decode_pack(jpack(head(rp=True), {"n": "d2/level", "v": 0.3, "u": "m", "ut": 60}))
    assert pack.key == (GW, 3, 7) and pack.replayed is True
    assert pack.records[1] == Record("d2/level", T0, 0.3, "m", 60.0, None)


def test_quality_and_update_time_decoded() -> None:
    pack = decode_pack(jpack(head(q=3, ut=120)))
    assert pack.records[0].quality == 3
    assert pack.records[0].update_time == 120.0


# -- rejections ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\xffgarbage", b"not json at all", b"[{", b"\x85\x01", b"\xa1\x01", b"\x9f\x01"],
    ids=["empty", "binary", "text", "truncated-json", "truncated-cbor", "cbor-map-trunc", "indef"],
)
def test_garbage_is_malformed(payload: bytes) -> None:
    assert rejected(payload).reason == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps(head()).encode(),  # an object, not an array
        b"[]",
        b'"pack"',
        b"42",
        b"null",
        cbor2.dumps({"gw": GW}),
        cbor2.dumps([]),
    ],
    ids=["object", "empty-array", "string", "number", "null", "cbor-map", "cbor-empty"],
)
def test_not_a_pack(payload: bytes) -> None:
    content_type = CBOR_CONTENT_TYPE if payload[:1] in (b"\xa1", b"\x80") else None
    assert rejected(payload, content_type=content_type).reason == "not_a_pack"


def test_sniffing_only_takes_cbor_arrays() -> None:
    # Without a content type a CBOR map is not recognised as CBOR (a pack is an array).
    assert rejected(cbor2.dumps({"gw": GW})).reason == "malformed"


def test_records_must_be_objects() -> None:
    assert rejected(jpack(head()).replace(b"]", b",3]")).reason == "wrong_type"


@pytest.mark.parametrize("label", ["gw", "ep", "sq"])
def test_missing_identity(label: str) -> None:
    err = rejected(jpack(head(**{label: DROP})))
    assert err.reason == "missing_field"
    assert label in err.detail


@pytest.mark.parametrize(
    "overrides",
    [
        {"ep": "3"},
        {"ep": -1},
        {"sq": -5},
        {"sq": 1.0},
        {"ep": True},
        {"ep": 2**63},  # does not fit central's SQLite INTEGER
        {"gw": "GW 1"},
        {"gw": "gw1\n"},
        {"gw": ""},
        {"gw": 17},
        {"rp": "yes"},
        {"v": "21.5"},
        {"v": True},
        {"v": None},
        {"v": 10**400},  # an int too large for a float
        {"v": DROP, "vb": 1},
        {"v": DROP, "vs": 5},
        {"v": DROP, "vs": "\ud800"},  # lone surrogate: cannot be stored as UTF-8
        {"u": 5},
        {"u": "\udfff"},
        {"bu": ["m"]},
        {"bn": 5},
        {"n": 5},
        {"bt": "now"},
        {"t": "1"},
        {"t": 10**400},
        {"ut": "60"},
        {"q": "1"},
        {"q": 1.0},
        {"q": 2**64},
        {"bver": "10"},
        {"bv": "1"},
        {"v": 1e308, "bv": 1e308},  # sum overflows to infinity
    ],
    ids=repr,
)
def test_wrong_type(overrides: dict[str, Any]) -> None:
    assert rejected(jpack(head(**overrides))).reason == "wrong_type"


@pytest.mark.parametrize(
    "literal",
    [b'"v":NaN', b'"v":Infinity', b'"v":-Infinity', b'"bt":NaN', b'"t":NaN', b'"ut":Infinity'],
)
def test_json_nan_and_infinity_rejected(literal: bytes) -> None:
    body = b'[{"bn":"%s","bt":1700000000,"gw":"%s","ep":1,"sq":0,"n":"d1/x","v":1,%s}]' % (
        BASE.encode(),
        GW.encode(),
        literal,
    )
    # Python's json.loads accepts NaN/Infinity (the last duplicate key wins); decode_pack must not.
    assert not all(math.isfinite(x) for x in json.loads(body)[0].values() if isinstance(x, float))
    assert rejected(body).reason == "wrong_type"


def test_cbor_nan_rejected() -> None:
    payload = cbor2.dumps([{-2: BASE, -3: T0, "gw": GW, "ep": 1, "sq": 0, 0: "d1/x", 2: math.nan}])
    assert rejected(payload).reason == "wrong_type"


def test_cbor_float_or_bool_keys_are_not_registered_labels() -> None:
    # 2.0 == 2 and True == 1 in Python: they must not be read as 'v' or 'u'.
    payload = cbor2.dumps([{-2: BASE, -3: T0, "gw": GW, "ep": 1, "sq": 0, 0: "d1/x", 2.0: 5}])
    assert rejected(payload).reason == "wrong_type"


@pytest.mark.parametrize("when", [1.7e12, 1_700_000_000_000, 1e11])
def test_time_in_milliseconds(when: float) -> None:
    assert rejected(jpack(head(bt=when))).reason == "time_in_ms"
    assert rejected(jpack(head(bt=DROP, t=when))).reason == "time_in_ms"


def test_must_understand_label_rejected_plain_unknown_ignored() -> None:
    err = rejected(jpack(head(foo_=1)))
    assert err.reason == "must_understand"
    assert "foo_" in err.detail
    assert rejected(jpack(head(), {"n": "d1/x", "v": 1, "x_": 0})).reason == "must_understand"
    pack = decode_pack(jpack(head(foo=1), {"n": "d1/x", "v": 2, "bar": {"nested": [1]}}))
    assert [r.value for r in pack.records] == [21.5, 2.0]


def test_value_count() -> None:
    assert rejected(jpack(head(v=DROP))).reason == "missing_field"  # no value field
    assert rejected(jpack(head(vs="on"))).reason == "wrong_type"  # v and vs
    assert rejected(jpack(head(v=DROP, vs="a", vb=True))).reason == "wrong_type"


@pytest.mark.parametrize(
    "overrides",
    [
        {"bn": "urn:dev:sentryline:gw-02:"},  # another gateway's base name
        {"bn": DROP},  # no base name at all
        {"bn": "urn:dev:other:gw-01:"},
        {"n": "temp"},  # no device part
        {"n": "/temp"},  # empty device
        {"n": "d1/"},  # empty quantity
        {"n": "d1/temp\n"},  # '$' would match before a trailing newline
        {"n": "d1/te mp"},
        {"n": "d1/température"},
        {"bn": DROP, "n": ""},
    ],
    ids=repr,
)
def test_bad_name(overrides: dict[str, Any]) -> None:
    assert rejected(jpack(head(**overrides))).reason == "bad_name"


def test_relative_time() -> None:
    payload = jpack(head(bt=DROP, t=10), {"n": "d1/x", "v": 1, "t": -30.5}, {"n": "d1/y", "v": 2})
    assert rejected(payload).reason == "relative_time"
    now = 1_750_000_000.0
    pack = decode_pack(payload, now=now)
    assert [r.time for r in pack.records] == [now + 10, now - 30.5, now]
    # relative base time plus relative offset
    pack = decode_pack(jpack(head(bt=-60, t=5)), now=now)
    assert pack.records[0].time == now - 55
    # just below / at the absolute threshold
    assert rejected(jpack(head(bt=ABSOLUTE_TIME_MIN - 1))).reason == "relative_time"
    assert decode_pack(jpack(head(bt=ABSOLUTE_TIME_MIN))).records[0].time == ABSOLUTE_TIME_MIN


def test_rejection_is_a_value_error_with_detail() -> None:
    err = rejected(b"[]")
    assert isinstance(err, ValueError)
    assert str(err).startswith("not_a_pack: ")
    assert err.detail


# -- fuzz: central never crashes on input -------------------------------------------------
LABELS = ["bver", "bn", "bt", "bu", "bv", "bs", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"]
LABELS += ["gw", "ep", "sq", "rp", "q", "foo", "foo_"]

any_text = st.text(
    alphabet=st.characters() | st.sampled_from("\ud800\udfff"),
    max_size=12,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.sampled_from([0, -1, 2**28, 2**63, 2**64, 10**400, 1.7e12, 1e11, T0, -0.0]),
    st.sampled_from([GW, BASE, f"{BASE}d1/", "d1/temp", "temp", "/", "Cel"]),
    any_text,
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(any_text, kids, max_size=4),
    max_leaves=12,
)
cbor_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.binary(max_size=8),
    st.text(max_size=8),
    st.sampled_from([GW, BASE, "d1/temp", T0, 1.7e12]),
)
cbor_values = st.recursive(
    cbor_scalars,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.integers(-8, 10) | st.text(max_size=4), kids, max_size=4)
    ),
    max_leaves=12,
)


# Values that have broken decoders: null, huge ints, non-finite floats, lone surrogates.
nasty = st.sampled_from(
    [
        *(None, True, 0, -1, 2**63, 2**64, -(2**64), 10**400, 1.7e12, 1e308, -1e308),
        *(math.nan, math.inf, -math.inf, "", "\ud800", "d1/x\n", [], {}, [1], {"v": 1}),
    ]
)


@st.composite
def near_valid_json(draw: st.DrawFn) -> bytes:
    """A valid pack whose records get random labels set to random values (deep coverage)."""
    items = [head()] + [{"n": f"d{i}/x", "v": i} for i in range(draw(st.integers(0, 3)))]
    for item in items:
        for label in draw(st.lists(st.sampled_from(LABELS), max_size=3)):
            if draw(st.booleans()):
                item.pop(label, None)
            else:
                item[label] = draw(nasty | json_values)
    return json.dumps(items).encode()


@st.composite
def near_valid_cbor(draw: st.DrawFn) -> bytes:
    labels = [-1, -2, -3, -4, -5, -6, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, "gw", "ep", "sq", "rp", "q"]
    items: list[dict[Any, Any]] = [{-2: BASE, -3: T0, "gw": GW, "ep": 1, "sq": 0, 0: "d/x", 2: 1}]
    for _ in range(draw(st.integers(0, 3))):
        items.append({0: "d/y", 2: 2.5})
    for item in items:
        for label in draw(st.lists(st.sampled_from(labels), max_size=3)):
            item[label] = draw(nasty.filter(lambda x: x != "\ud800") | cbor_values)
    return cbor2.dumps(items)


def _decode_never_crashes(payload: bytes, content_type: str | None = None) -> None:
    try:
        pack = decode_pack(payload, content_type)
    except PackRejected as exc:
        assert exc.reason in {
            "malformed",
            "not_a_pack",
            "missing_field",
            "wrong_type",
            "time_in_ms",
            "must_understand",
            "bad_name",
            "relative_time",
        }
        return
    assert isinstance(pack, Pack)
    for rec in pack.records:  # what central will store: finite, UTF-8, 64-bit
        assert math.isfinite(rec.time)
        rec.name.encode()
        if isinstance(rec.value, str):
            rec.value.encode()
        elif isinstance(rec.value, float):
            assert math.isfinite(rec.value)
        if rec.unit is not None:
            rec.unit.encode()
    assert 0 <= pack.epoch < 2**63 and 0 <= pack.seq < 2**63


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
content_types = st.sampled_from([None, JSON_CONTENT_TYPE, CBOR_CONTENT_TYPE, "text/plain"])


@FUZZ
@given(payload=st.binary(max_size=200), content_type=content_types)
def test_fuzz_arbitrary_bytes(payload: bytes, content_type: str | None) -> None:
    _decode_never_crashes(payload, content_type)


@FUZZ
@given(data=json_values)
def test_fuzz_arbitrary_json(data: Any) -> None:
    _decode_never_crashes(json.dumps(data).encode())


@FUZZ
@given(data=cbor_values)
def test_fuzz_arbitrary_cbor(data: Any) -> None:
    _decode_never_crashes(cbor2.dumps(data))


@FUZZ
@given(payload=near_valid_json())
def test_fuzz_near_valid_json(payload: bytes) -> None:
    _decode_never_crashes(payload)


@FUZZ
@given(payload=near_valid_cbor())
def test_fuzz_near_valid_cbor(payload: bytes) -> None:
    _decode_never_crashes(payload)


small_packs = st.builds(
    Pack,
    gateway=gateways,
    epoch=st.integers(min_value=0, max_value=2**40),
    seq=st.integers(min_value=0, max_value=2**40),
    records=st.lists(records(), min_size=1, max_size=4).map(tuple),
    replayed=st.booleans(),
)


@settings(FUZZ, max_examples=150)
@given(pack=small_packs, data=st.data())
def test_fuzz_corrupted_valid_payload(pack: Pack, data: st.DataObject) -> None:
    payload = bytearray(encode_pack(pack, data.draw(st.sampled_from(["json", "cbor"]))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(payload)))
    _decode_never_crashes(bytes(payload[:cut]))
