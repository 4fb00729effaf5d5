"""Register codec: fixed vectors, round trips over every type and order, bits, enums, errors."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.codec import (
    CodecError,
    compile_request,
    decode_point,
    decode_request,
    encode_image,
    encode_point,
)
from drivers.modbus.planner import ReadRequest
from drivers.modbus.profile import INT_LIMITS, PointSpec

ORDERS = ["big", "little"]
NUMERIC_TYPES = ["int16", "uint16", "int32", "uint32", "float32", "float64"]


def point(**kwargs: Any) -> PointSpec:
    fields: dict[str, Any] = {"name": "p", "table": "holding", "address": 0}
    fields.update(kwargs)
    return PointSpec(**fields)


def decode_one(p: PointSpec, words: list[int], pad: int = 0) -> Any:
    """Decode through a request that starts `pad` registers before the point."""
    request = ReadRequest(p.table, p.address - pad, pad + len(words), (p,))
    return decode_request(request, [0xAAAA] * pad + words)[p.name]


# --- fixed vectors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "value", "words"),
    [
        ({"type": "float32"}, 1.0, [0x3F80, 0x0000]),
        ({"type": "float32", "word_order": "little"}, 1.0, [0x0000, 0x3F80]),
        ({"type": "float32", "byte_order": "little"}, 1.0, [0x803F, 0x0000]),
        ({"type": "float64"}, 1.0, [0x3FF0, 0, 0, 0]),
        ({"type": "float64", "word_order": "little"}, 1.0, [0, 0, 0, 0x3FF0]),
        ({"type": "int16"}, -1, [0xFFFF]),
        ({"type": "int16"}, -32768, [0x8000]),
        ({"type": "uint16"}, 0x1234, [0x1234]),
        ({"type": "uint16", "byte_order": "little"}, 0x1234, [0x3412]),
        # word_order does not affect single registers
        ({"type": "uint16", "word_order": "little"}, 0x1234, [0x1234]),
        ({"type": "uint32"}, 0x12345678, [0x1234, 0x5678]),  # ABCD
        ({"type": "uint32", "word_order": "little"}, 0x12345678, [0x5678, 0x1234]),  # CDAB
        ({"type": "uint32", "byte_order": "little"}, 0x12345678, [0x3412, 0x7856]),  # BADC
        (
            {"type": "uint32", "word_order": "little", "byte_order": "little"},
            0x12345678,
            [0x7856, 0x3412],
        ),  # DCBA
        ({"type": "int32"}, -2, [0xFFFF, 0xFFFE]),
    ],
)
def test_fixed_vectors(kwargs: dict[str, Any], value: Any, words: list[int]) -> None:
    p = point(**kwargs)
    assert encode_point(p, value) == words
    decoded = decode_one(p, words)
    assert decoded == value
    assert type(decoded) is type(value)


# --- round trips over every type x word order x byte order ----------------------------------


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[PointSpec, Any]:
    type_ = draw(st.sampled_from(NUMERIC_TYPES))
    p = point(
        type=type_,
        address=draw(st.integers(0, 1000)),
        word_order=draw(st.sampled_from(ORDERS)),
        byte_order=draw(st.sampled_from(ORDERS)),
    )
    if type_ in INT_LIMITS:
        low, high = INT_LIMITS[type_]
        return p, draw(st.integers(low, high))
    if type_ == "float32":
        return p, draw(st.floats(width=32, allow_nan=False))
    return p, draw(st.floats(allow_nan=False))


@given(typed_values(), st.integers(0, 3))
def test_round_trip_every_type_and_order(case: tuple[PointSpec, Any], pad: int) -> None:
    p, value = case
    words = encode_point(p, value)
    assert isinstance(words, list)
    assert len(words) == p.register_count
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode_one(p, words, pad) == value


@given(
    type_=st.sampled_from(NUMERIC_TYPES),
    word_order=st.sampled_from(ORDERS),
    byte_order=st.sampled_from(ORDERS),
    data=st.data(),
)
def test_raw_words_survive_decode_encode(
    type_: str, word_order: str, byte_order: str, data: st.DataObject
) -> None:
    """Any register content a device sends decodes to a value that encodes back to it."""
    p = point(type=type_, word_order=word_order, byte_order=byte_order)
    words = data.draw(
        st.lists(st.integers(0, 0xFFFF), min_size=p.register_count, max_size=p.register_count)
    )
    value = decode_one(p, words)
    if isinstance(value, float) and math.isnan(value):
        return  # NaN payloads are not unique
    assert encode_point(p, value) == words


@given(
    raw=st.integers(0, 0xFFFF),
    scale=st.sampled_from([0.1, 0.01, 0.001, 0.0001, 0.5, 2.5, 0.37, -0.1]),
    offset=st.sampled_from([0.0, -40.0, 273.15]),
)
def test_scaled_raw_round_trip(raw: int, scale: float, offset: float) -> None:
    p = point(type="uint16", scale=scale, offset=offset)
    value = decode_one(p, [raw])
    assert isinstance(value, float)
    assert value == pytest.approx(raw * scale + offset)
    assert encode_point(p, value) == [raw]


@given(value=st.floats(0, 6553.5))
def test_scaled_value_rounds_to_nearest_count(value: float) -> None:
    p = point(type="uint16", scale=0.1)
    (raw,) = encode_point(p, value)  # type: ignore[misc]
    assert abs(raw * 0.1 - value) <= 0.05 + 1e-9
    assert abs(decode_one(p, [raw]) - value) <= 0.05 + 1e-9


def test_scaled_decimals_are_clean() -> None:
    # 617 * 0.001 would be 0.6170000000000001; gateways publish these values verbatim.
    assert decode_one(point(scale=0.001), [617]) == 0.617
    assert decode_one(point(scale=0.1), [12]) == 1.2
    assert decode_one(point(scale=0.0001), [2090]) == 0.209


def test_unscaled_int_stays_int_scaled_becomes_float() -> None:
    assert type(decode_one(point(type="uint32"), [0, 5])) is int
    assert type(decode_one(point(type="int16", scale=2.0), [3])) is float
    assert decode_one(point(type="int16", scale=2.0), [3]) == 6.0
    assert decode_one(point(type="int16", offset=-40.0), [0xFFFF]) == -41.0


def test_float32_scaling() -> None:
    p = point(type="float32", scale=0.5, offset=1.0)
    words = encode_point(p, 3.0)
    assert words == list(struct.unpack(">HH", struct.pack(">f", 4.0)))
    assert decode_one(p, words) == 3.0  # type: ignore[arg-type]


# --- clamping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "value", "words"),
    [
        ("uint16", 70000, [0xFFFF]),
        ("uint16", -5, [0]),
        ("int16", -40000, [0x8000]),
        ("int16", 40000, [0x7FFF]),
        ("uint32", 2**40, [0xFFFF, 0xFFFF]),
        ("uint16", 2.5, [2]),  # round half to even
        ("uint16", 2.51, [3]),
    ],
)
def test_encode_clamps_and_rounds(type_: str, value: float, words: list[int]) -> None:
    assert encode_point(point(type=type_), value) == words


def test_float32_overflow_clamps_to_max() -> None:
    words = encode_point(point(type="float32"), 1e39)
    assert (
        decode_one(point(type="float32"), words)
        == struct.unpack(  # type: ignore[arg-type]
            ">f", struct.pack(">f", 3.4028234663852886e38)
        )[0]
    )


def test_integer_types_refuse_nan() -> None:
    with pytest.raises(CodecError):
        encode_point(point(type="uint16"), math.nan)


# --- bits, bit fields, enums -------------------------------------------------------------------


def test_bit_fields() -> None:
    bits = [point(name=f"b{i}", address=7, bit=i, table="input") for i in (0, 1, 2, 15)]
    request = ReadRequest("input", 7, 1, tuple(bits))
    assert decode_request(request, [0b1000_0000_0000_0101]) == {
        "b0": True,
        "b1": False,
        "b2": True,
        "b15": True,
    }
    assert encode_point(bits[1], True) is True
    image = encode_image(bits, {"b0": True, "b1": False, "b2": True, "b15": True})
    assert image == {"input": {7: 0b1000_0000_0000_0101}}


def test_bit_points_default_to_bool() -> None:
    assert point(bit=3).type == "bool"
    assert point(table="coil").type == "bool"
    assert point(table="discrete").register_count == 1


def test_coils_and_discretes() -> None:
    coils = [point(name=f"c{i}", table="coil", address=10 + i) for i in range(3)]
    request = ReadRequest("coil", 10, 3, tuple(coils))
    # pymodbus pads bit responses to whole bytes: longer blocks are fine
    assert decode_request(request, [True, False, True, False, False, False, False, False]) == {
        "c0": True,
        "c1": False,
        "c2": True,
    }
    assert encode_point(coils[0], 1) is True
    assert encode_point(coils[0], False) is False
    assert encode_image(coils, {"c0": True, "c2": False}) == {"coil": {10: True, 12: False}}


def test_bool_in_a_register() -> None:
    p = point(type="bool")
    assert decode_one(p, [0]) is False
    assert decode_one(p, [0x100]) is True
    assert encode_point(p, True) == [1]


def test_enums() -> None:
    p = point(type="uint16", enum={0: "warmup", 1: "normal", 2: "fault", 3: "calibration"})
    assert decode_one(p, [1]) == "normal"
    assert decode_one(p, [9]) == "unknown(9)"
    assert encode_point(p, "calibration") == [3]
    assert encode_point(p, 2) == [2]
    assert encode_point(p, 9) == [9]  # raw values outside the table are encodable (fault tests)
    with pytest.raises(CodecError, match="not one of"):
        encode_point(p, "bogus")
    with pytest.raises(CodecError):
        encode_point(p, 70000)


def test_signed_enum() -> None:
    p = point(type="int16", enum={-1: "error", 0: "ok"})
    assert decode_one(p, [0xFFFF]) == "error"
    assert encode_point(p, "error") == [0xFFFF]


def test_type_mismatches_raise_codec_error() -> None:
    with pytest.raises(CodecError):
        encode_point(point(type="uint16"), "12")
    with pytest.raises(CodecError):
        encode_point(point(bit=0), "yes")


# --- short blocks ------------------------------------------------------------------------------


def test_short_block_raises_codec_error() -> None:
    p = point(name="ch4", type="uint32", address=1, table="input")
    request = ReadRequest("input", 0, 3, (p,))
    with pytest.raises(CodecError, match="'ch4'") as info:
        decode_request(request, [0, 1])
    assert isinstance(info.value, ValueError)
    with pytest.raises(CodecError):
        decode_request(ReadRequest("coil", 0, 1, (point(table="coil"),)), [])


def test_decode_point_direct() -> None:
    assert decode_point(point(type="int32"), [0xFFFF, 0xFFFF]) == -1


# --- compile_request: the gateway's precompiled decoder -----------------------------------

_NUMERIC = ["int16", "uint16", "int32", "uint32", "float32", "float64"]


@st.composite
def _any_point(draw: Any, address: int) -> PointSpec:
    kind = draw(st.sampled_from(["number", "enum", "bit", "bool", "coil"]))
    if kind == "coil":
        return PointSpec(name="p", table="coil", address=address)
    if kind == "bit":
        return PointSpec(name="p", table="holding", address=address, bit=draw(st.integers(0, 15)))
    if kind == "bool":
        return PointSpec(name="p", table="holding", address=address, type="bool")
    orders = {
        "word_order": draw(st.sampled_from(["big", "little"])),
        "byte_order": draw(st.sampled_from(["big", "little"])),
    }
    if kind == "enum":
        dtype = draw(st.sampled_from(["int16", "uint16", "uint32"]))
        return PointSpec(
            name="p", table="input", address=address, type=dtype, enum={0: "a", 1: "b"}, **orders
        )
    return PointSpec(
        name="p",
        table="input",
        address=address,
        type=draw(st.sampled_from(_NUMERIC)),
        scale=draw(st.sampled_from([1.0, 0.1, 0.01, 0.001, 2.5, -0.5])),
        offset=draw(st.sampled_from([0.0, -40.0, 3.25])),
        **orders,
    )


@given(st.data())
def test_compiled_request_decodes_exactly_like_decode_request(data: st.DataObject) -> None:
    points, address = [], 3
    for i in range(data.draw(st.integers(1, 5))):
        point = data.draw(_any_point(address)).model_copy(update={"name": f"p{i}"})
        if point.table == "coil":  # one table per request
            point = PointSpec(name=f"p{i}", table="input", address=address, bit=i % 16)
        points.append(point)
        address = point.end + data.draw(st.integers(0, 2))
    request = ReadRequest("input", 3, address - 3, tuple(points))
    words = data.draw(
        st.lists(st.integers(0, 0xFFFF), min_size=request.count, max_size=request.count + 2)
    )
    compiled = compile_request(request)(words)
    expected = decode_request(request, words)
    assert compiled.keys() == expected.keys()
    for name, value in expected.items():
        got = compiled[name]
        assert type(got) is type(value)
        assert got == value or (math.isnan(value) and math.isnan(got)), name


def test_compiled_request_reports_a_short_block_like_decode_request() -> None:
    point = PointSpec(name="t", table="input", address=4, type="float32")
    request = ReadRequest("input", 4, 2, (point,))
    with pytest.raises(CodecError, match=r"needs offsets 0\.\.1"):
        compile_request(request)([1])
