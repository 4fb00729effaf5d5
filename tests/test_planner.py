"""Read planner (minimum requests, proven against a DP) and profile validation."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.modbus.planner import ReadRequest, naive_request_count, plan_reads
from drivers.modbus.profile import DeviceProfile, PointSpec, hardware_dir, load_profile
from provisioning.configfile import ConfigError, parse_yaml_model

WIDTH_TYPE = {1: "uint16", 2: "uint32", 4: "float64"}


def profile(points: list[dict[str, Any]], **modbus: Any) -> DeviceProfile:
    return DeviceProfile(
        name="t",
        family="other",
        transport="modbus-tcp",
        modbus=modbus,
        points=[{"name": f"p{i}", **p} for i, p in enumerate(points)],
    )


def reg(address: int, width: int = 1, table: str = "holding") -> dict[str, Any]:
    return {"table": table, "address": address, "type": WIDTH_TYPE[width]}


# --- the shipped gas detector --------------------------------------------------------------------


def test_gas_detector_is_one_request_through_the_gap() -> None:
    gas = load_profile("gas-detector")
    plan = plan_reads(gas)
    assert len(plan) == 1
    (request,) = plan
    assert (request.table, request.function_code, request.address, request.count) == (
        "input",
        4,
        0,
        9,
    )
    assert {p.name for p in request.points} == set(gas.point_names)
    used = {a for p in gas.points for a in range(p.address, p.end)}
    assert set(range(9)) - used == {6}  # the reserved register is read through
    assert naive_request_count(gas) == 9


def test_gas_detector_profile_contents() -> None:
    gas = load_profile(str(hardware_dir() / "sensors" / "gas-detector.yaml"))
    assert (gas.family, gas.transport) == ("gas", "modbus-tcp")
    lel = gas.point("ch4_lel")
    assert (lel.scale, lel.unit, lel.range) == (0.001, "/", (0.0, 1.0))
    assert gas.point("ch4").register_count == 2
    assert gas.point("o2").unit == "/"
    assert [gas.point(n).bit for n in ("fault", "alarm1", "alarm2")] == [0, 1, 2]
    assert gas.point("sensor_state").enum == {
        0: "warmup",
        1: "normal",
        2: "fault",
        3: "calibration",
    }


def test_max_gap_zero_splits_at_the_gap() -> None:
    data = load_profile("gas-detector").model_dump()
    data["modbus"]["max_gap"] = 0
    gas = DeviceProfile.model_validate(data)
    assert [(r.address, r.count) for r in plan_reads(gas)] == [(0, 6), (7, 2)]


def test_block_reads_off_is_one_request_per_register_range() -> None:
    data = load_profile("gas-detector").model_dump()
    data["modbus"]["block_reads"] = False
    plan = plan_reads(DeviceProfile.model_validate(data))
    # seven ranges: the three status bits share register 7
    assert [(r.address, r.count) for r in plan] == [
        (0, 1),
        (1, 2),
        (3, 1),
        (4, 1),
        (5, 1),
        (7, 1),
        (8, 1),
    ]
    assert [p.name for p in plan[5].points] == ["fault", "alarm1", "alarm2"]


# --- coalescing rules --------------------------------------------------------------------------


def test_tables_are_planned_separately_in_function_code_order() -> None:
    p = profile(
        [
            reg(0, table="input"),
            reg(0, table="holding"),
            {"table": "coil", "address": 0},
            {"table": "discrete", "address": 5},
            reg(1, table="holding"),
        ]
    )
    plan = plan_reads(p)
    assert [(r.table, r.function_code, r.address, r.count) for r in plan] == [
        ("coil", 1, 0, 1),
        ("discrete", 2, 5, 1),
        ("holding", 3, 0, 2),
        ("input", 4, 0, 1),
    ]


def test_max_registers_caps_span() -> None:
    p = profile([reg(a) for a in range(0, 10)], max_registers=4)
    assert [(r.address, r.count) for r in plan_reads(p)] == [(0, 4), (4, 4), (8, 2)]


def test_gap_exactly_max_gap_is_read_through() -> None:
    p = profile([reg(0), reg(9), reg(19)], max_gap=8)
    assert [(r.address, r.count) for r in plan_reads(p)] == [(0, 10), (19, 1)]


def test_coils_use_max_bits() -> None:
    p = profile([{"table": "coil", "address": a} for a in (0, 100, 1999, 2000)], max_gap=2000)
    assert [(r.address, r.count) for r in plan_reads(p)] == [(0, 2000), (2000, 1)]


def test_request_is_frozen_and_knows_its_function_code() -> None:
    request = ReadRequest("discrete", 3, 2, ())
    assert request.function_code == 2
    with pytest.raises(AttributeError):
        request.count = 5  # type: ignore[misc]


# --- optimality: greedy == exhaustive minimum ---------------------------------------------------


@st.composite
def register_maps(draw: st.DrawFn) -> tuple[list[tuple[int, int]], int, int]:
    """Non-overlapping (address, width) points, plus max_gap and max_registers."""
    widths = draw(st.lists(st.sampled_from([1, 1, 1, 2, 4]), min_size=1, max_size=9))
    address, points = 0, []
    for width in widths:
        address += draw(st.integers(0, 7))
        points.append((address, width))
        address += width
    draw(st.randoms()).shuffle(points)  # the planner must not rely on file order
    return points, draw(st.integers(0, 6)), draw(st.integers(4, 24))


def minimum_requests(points: list[tuple[int, int]], max_gap: int, limit: int) -> int:
    """DP over all ways to cut the sorted points into consecutive runs.

    A request reads every register of its span, so any request's points can be taken as a
    consecutive run of the sorted points without loss; the DP tries every cut.
    """
    pts = sorted(points)

    def feasible(i: int, j: int) -> bool:  # points i..j inclusive in one request
        span = max(a + w for a, w in pts[i : j + 1]) - pts[i][0]
        gaps = all(pts[k + 1][0] - (pts[k][0] + pts[k][1]) <= max_gap for k in range(i, j))
        return span <= limit and gaps

    @functools.cache
    def best(j: int) -> int:  # minimum requests for the first j points
        if j == 0:
            return 0
        return min(best(i) + 1 for i in range(j) if feasible(i, j - 1))

    return best(len(pts))


@settings(max_examples=300, deadline=None)
@given(register_maps())
def test_greedy_plan_is_minimal_and_valid(case: tuple[list[tuple[int, int]], int, int]) -> None:
    points, max_gap, limit = case
    p = profile([reg(a, w) for a, w in points], max_gap=max_gap, max_registers=limit)
    plan = plan_reads(p)
    assert len(plan) == minimum_requests(points, max_gap, limit)
    covered = [pt.name for r in plan for pt in r.points]
    assert sorted(covered) == sorted(p.point_names)  # every point exactly once
    for request in plan:
        assert request.count <= limit
        members = sorted(request.points, key=lambda pt: pt.address)
        assert request.address == members[0].address
        assert request.end == max(pt.end for pt in members)
        for a, b in itertools.pairwise(members):
            assert b.address - a.end <= max_gap


@settings(max_examples=100, deadline=None)
@given(register_maps())
def test_block_reads_off_never_coalesces(case: tuple[list[tuple[int, int]], int, int]) -> None:
    points, _, _ = case
    p = profile([reg(a, w) for a, w in points], block_reads=False)
    plan = plan_reads(p)
    assert len(plan) == naive_request_count(p) == len(points)


# --- profile validation ------------------------------------------------------------------------


def test_point_wider_than_max_registers_is_a_profile_error() -> None:
    with pytest.raises(ValidationError, match=r"more than modbus\.max_registers=3"):
        profile([reg(0, 4)], max_registers=3)


def test_overlapping_registers_are_an_error() -> None:
    with pytest.raises(ValidationError, match="overlap 'p0'"):
        profile([reg(0, 2), reg(1)])
    # same address in different tables is fine
    profile([reg(0, 2), reg(1, table="input")])


def test_bit_fields_may_share_a_register_but_not_a_bit() -> None:
    profile([{"table": "input", "address": 3, "bit": b} for b in (0, 1, 15)])
    with pytest.raises(ValidationError, match="already used"):
        profile([{"table": "input", "address": 3, "bit": 1}] * 2)
    with pytest.raises(ValidationError, match="overlap"):
        profile([reg(3, table="input"), {"table": "input", "address": 3, "bit": 0}])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "a/b", "table": "input", "address": 0}, "should match pattern"),
        ({"name": "_x", "table": "input", "address": 0}, "should match pattern"),
        ({"name": "x", "table": "coil", "address": 0, "type": "uint16"}, "type must be bool"),
        ({"name": "x", "table": "coil", "address": 0, "bit": 1}, "only registers"),
        ({"name": "x", "table": "input", "address": 0, "bit": 16}, "less than or equal to 15"),
        ({"name": "x", "table": "input", "address": 0, "scale": 0}, "scale must not be 0"),
        (
            {"name": "x", "table": "input", "address": 0, "type": "float32", "enum": {0: "a"}},
            "integer type",
        ),
        ({"name": "x", "table": "input", "address": 0, "enum": {70000: "a"}}, "do not fit"),
        ({"name": "x", "table": "input", "address": 0, "range": [5, 1]}, "above high"),
        ({"name": "x", "table": "input", "address": 65535, "type": "uint32"}, "past register"),
        ({"name": "x", "table": "input", "address": 0, "colour": "red"}, "Extra inputs"),
    ],
)
def test_point_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PointSpec.model_validate(spec)


def test_duplicate_point_names() -> None:
    with pytest.raises(ValidationError, match="duplicate point name"):
        DeviceProfile(
            name="t",
            family="gas",
            transport="modbus-rtu",
            points=[{"name": "x", "table": "input", "address": a} for a in (0, 1)],
        )


PROFILE_YAML = """\
name: broken
family: water
transport: modbus-rtu
points:
  - name: level
    table: holding
    address: 10
    type: float32
  - name: temp
    table: holding
    address: 11
"""


def test_profile_errors_point_at_file_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml_model(PROFILE_YAML, DeviceProfile, "broken.yaml")
    text = str(info.value)
    assert text.startswith("broken.yaml:11:"), text
    assert "points[1].address" in text
    assert "overlap 'level'" in text


def test_unknown_profile_name_lists_available() -> None:
    with pytest.raises(ConfigError, match=r"available: .*gas-detector"):
        load_profile("no-such-device")
