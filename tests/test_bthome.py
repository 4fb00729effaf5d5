"""BTHome v2 parser on advertisement bytes assembled from the published format.

The byte strings are what a receiver captures (btmon / bleak service data): full AD payloads
are split into AD structures here exactly as BlueZ does, and the service data after the
0xFCD2 UUID is what the parser gets. No radio is involved anywhere in this file.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ble.bthome import (
    OBJECTS,
    BthomePacket,
    PacketDedup,
    ParseFailure,
    parse_service_data,
)


def service_data(advertisement: bytes) -> dict[int, bytes]:
    """AD structures (length, type, data) -> {uuid16: data} for type 0x16 (Service Data)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(advertisement):
        length = advertisement[pos]
        if length == 0:
            break
        ad_type, body = advertisement[pos + 1], advertisement[pos + 2 : pos + 1 + length]
        if ad_type == 0x16:
            out[int.from_bytes(body[:2], "little")] = body[2:]
        pos += 1 + length
    return out


def ok(data: bytes | str) -> BthomePacket:
    packet = parse_service_data(bytes.fromhex(data) if isinstance(data, str) else data)
    assert isinstance(packet, BthomePacket), packet
    return packet


def values(packet: BthomePacket) -> dict[str, tuple[object, str | None]]:
    return {m.quantity: (m.value, m.unit) for m in packet.measurements}


# --- captured advertisements ------------------------------------------------------------------


def test_the_format_pages_example_advertisement() -> None:
    # Flags, complete local name "DIY-sensor", service data 0xFCD2: 25.00 °C, 50.55 %.
    adv = bytes.fromhex("0201060B094449592D73656E736F720A16D2FC4002C40903BF13")
    data = service_data(adv)
    assert set(data) == {0xFCD2}
    packet = ok(data[0xFCD2])
    assert values(packet) == {"temperature": (25.0, "Cel"), "humidity": (50.55, "%RH")}
    assert packet.trigger_based is False
    assert packet.packet_id is None
    assert packet.problem is None and packet.unparsed == b""


def test_a_thermometer_with_packet_id_battery_and_negative_temperature() -> None:
    # pvvx-style thermometer: packet id 0x93, battery 87 %, -2.00 °C, 91.20 %RH, 2.981 V.
    packet = ok("40 0093 0157 0238FF 03A023 0CA50B")
    assert packet.packet_id == 0x93
    assert values(packet) == {
        "battery": (87, "%EL"),
        "temperature": (-2.0, "Cel"),
        "humidity": (91.2, "%RH"),
        "voltage": (2.981, "V"),
    }
    assert [m.object_id for m in packet.measurements] == [0x01, 0x02, 0x03, 0x0C]


def test_two_temperatures_become_temperature_and_temperature_2() -> None:
    # Soil probe: air 25.00 °C (0x02, 0.01 °C) and ground 27.5 °C (0x45, 0.1 °C).
    packet = ok("40 02C409 451301")
    assert values(packet) == {"temperature": (25.0, "Cel"), "temperature_2": (27.5, "Cel")}


@pytest.mark.parametrize(
    ("hexdata", "quantity", "value", "unit"),
    [
        ("04138A01", "pressure", 1008.83, "hPa"),
        ("05138A14", "illuminance", 13460.67, "lx"),
        ("0C020C", "voltage", 3.074, "V"),
        ("518756", "acceleration", 22.151, "m/s2"),
        ("3F020C", "rotation", 307.4, "deg"),
        ("3FFEFF", "rotation", -0.2, "deg"),
        ("14020C", "moisture", 0.3074, "/"),  # 30.74 % as a ratio
        ("2F23", "moisture", 0.35, "/"),
        ("2E23", "humidity", 35, "%RH"),
        ("0161", "battery", 97, "%EL"),
        ("12E204", "co2", 1250, "ppm"),
        ("0F01", "binary", True, None),
        ("1000", "power_on", False, None),
        ("1101", "opening", True, None),
        ("2D01", "window_open", True, None),
        ("3A01", "button", "press", None),
        ("3A04", "button", "long_press", None),
        ("3A80", "button", "hold_press", None),
        ("3C0103", "dimmer", -3, "count"),
        ("3C0205", "dimmer", 5, "count"),
        ("400C00", "distance", 0.012, "m"),  # 12 mm
        ("414E00", "distance", 7.8, "m"),
        ("065E1F", "mass", 80.3, "kg"),
        ("44A00F", "speed", 40.0, "m/s"),
        ("57F6", "temperature", -10, "Cel"),
        ("5801", "temperature", 0.35, "Cel"),
        ("5F0A00", "precipitation", 1.0, "mm"),
    ],
)
def test_object_sizes_factors_and_units(
    hexdata: str, quantity: str, value: object, unit: str | None
) -> None:
    packet = ok("40" + hexdata)
    assert values(packet) == {quantity: (value, unit)}


def test_text_and_raw_objects_carry_their_own_length() -> None:
    packet = ok("40 530C48656C6C6F20576F726C6421 5402C0FF 0161")
    assert values(packet) == {
        "text": ("Hello World!", None),
        "raw": ("c0ff", None),
        "battery": (97, "%EL"),
    }


def test_a_trigger_based_button_with_four_buttons() -> None:
    # Shelly BLU RC Button 4 style: trigger flag, packet id, battery, four button slots;
    # only the second and fourth were pressed, the numbering still follows the slots.
    packet = ok("44 0021 0164 3A00 3A02 3A00 3A01")
    assert packet.trigger_based is True
    assert packet.packet_id == 0x21
    assert values(packet) == {
        "battery": (100, "%EL"),
        "button_2": ("double_press", None),
        "button_4": ("press", None),
    }


def test_an_unknown_object_id_stops_parsing_and_keeps_what_came_before() -> None:
    # 0x30 is not defined: its size is unknowable, so the humidity after it is unreadable.
    packet = ok("40 02C409 301234 03BF13")
    assert values(packet) == {"temperature": (25.0, "Cel")}
    assert packet.problem == "unknown_object"
    assert packet.unparsed == bytes.fromhex("30123403BF13")
    assert "0x30" in packet.detail


def test_a_truncated_object_is_reported_with_the_unparsed_tail() -> None:
    packet = ok("40 0161 02C4")
    assert values(packet) == {"battery": (97, "%EL")}
    assert packet.problem == "truncated"
    assert packet.unparsed == bytes.fromhex("02C4")
    text = ok("40 53")  # text object without its length byte
    assert text.problem == "truncated" and text.measurements == ()


def test_the_advertised_mac_flag_is_honoured() -> None:
    packet = ok("42 563412C1A4A4 02C409")  # MAC A4:A4:C1:12:34:56, stored reversed
    assert packet.mac == "A4:A4:C1:12:34:56"
    assert values(packet) == {"temperature": (25.0, "Cel")}


@pytest.mark.parametrize(
    ("hexdata", "reason"),
    [
        ("", "empty"),
        ("41 a47e1c3d9a 78563412 d2c1b0a9", "encrypted"),  # payload, counter, MIC
        ("45 00", "encrypted"),
        ("20 02C409", "version"),  # version 1 bits
        ("60 02C409", "version"),  # version 3
        ("00", "version"),
        ("42 5634", "truncated"),  # MAC flag without the MAC
    ],
)
def test_unsupported_advertisements_are_failures_not_exceptions(hexdata: str, reason: str) -> None:
    result = parse_service_data(bytes.fromhex(hexdata))
    assert isinstance(result, ParseFailure)
    assert result.reason == reason


def test_only_the_device_info_byte_is_an_empty_packet() -> None:
    packet = ok("40")
    assert packet.measurements == () and packet.problem is None


# --- duplicates -------------------------------------------------------------------------------


def test_repeats_of_one_packet_are_dropped_and_a_new_packet_id_passes() -> None:
    dedup = PacketDedup(window_s=10, max_hold_s=300)
    first = bytes.fromhex("40 0093 02C409")
    again = bytes.fromhex("40 0093 02C409")
    new = bytes.fromhex("40 0094 02C409")  # same reading, new packet
    assert dedup.is_repeat(first, 100.0) is False
    assert dedup.is_repeat(again, 101.0) is True
    assert dedup.is_repeat(again, 109.0) is True  # each sighting extends the window
    assert dedup.is_repeat(new, 110.0) is False
    assert dedup.is_repeat(first, 111.0) is False  # an old packet is not the last one


def test_a_device_back_after_a_gap_or_a_long_hold_is_accepted() -> None:
    dedup = PacketDedup(window_s=10, max_hold_s=60)
    data = bytes.fromhex("40 0207 02C409")
    assert dedup.is_repeat(data, 0.0) is False
    assert dedup.is_repeat(data, 25.0) is False  # out of range for 25 s: a new sighting
    for t in range(26, 85, 2):
        dedup.is_repeat(data, float(t))
    assert dedup.is_repeat(data, 86.0) is False  # held 61 s: let one through for liveness


def test_a_stuck_packet_id_never_swallows_new_readings() -> None:
    dedup = PacketDedup()
    assert dedup.is_repeat(bytes.fromhex("40 0000 02C409"), 0.0) is False
    assert dedup.is_repeat(bytes.fromhex("40 0000 02C509"), 1.0) is False


# --- never raises -----------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=40))
def test_arbitrary_bytes_give_a_result_never_an_exception(data: bytes) -> None:
    result = parse_service_data(data)
    assert isinstance(result, BthomePacket | ParseFailure)


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=40), info=st.sampled_from([0x40, 0x44, 0x42]))
def test_arbitrary_objects_behind_a_valid_header_parse_or_stop_cleanly(
    body: bytes, info: int
) -> None:
    result = parse_service_data(bytes([info]) + body)
    if isinstance(result, ParseFailure):
        assert result.reason == "truncated" and info == 0x42
        return
    assert (result.problem is None) == (result.unparsed == b"")
    names = [m.quantity for m in result.measurements]
    assert len(names) == len(set(names))  # repeats are numbered, never overwritten


_NUMERIC = sorted(
    oid
    for oid, spec in OBJECTS.items()
    if spec.kind in ("uint", "sint") and spec.size in (1, 2, 3, 4)
)


@st.composite
def encoded_objects(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]]]:
    ids = sorted(draw(st.lists(st.sampled_from(_NUMERIC), min_size=1, max_size=6)))
    raw_values, body = [], b""
    for oid in ids:
        spec = OBJECTS[oid]
        bits = 8 * spec.size
        if spec.kind == "sint":
            raw = draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
        else:
            raw = draw(st.integers(0, 2**bits - 1))
        body += bytes([oid]) + raw.to_bytes(spec.size, "little", signed=spec.kind == "sint")
        raw_values.append((oid, raw))
    return b"\x40" + body, raw_values


@settings(max_examples=300, deadline=None)
@given(case=encoded_objects())
def test_encoded_values_come_back_scaled(case: tuple[bytes, list[tuple[int, int]]]) -> None:
    data, raw_values = case
    packet = ok(data)
    assert packet.problem is None
    assert len(packet.measurements) == len(raw_values)
    for measurement, (oid, raw) in zip(packet.measurements, raw_values, strict=True):
        spec = OBJECTS[oid]
        assert measurement.object_id == oid and measurement.unit == spec.unit
        assert measurement.value == pytest.approx(
            raw * spec.factor, rel=1e-9, abs=spec.factor / 100
        )
