"""The driver contract: what every registered driver must do, checked the same way for all.

Each check is a plain function that raises ContractFailure with a message a maintainer can
act on; tests/test_driver_contract.py runs them for every registered driver, and
``sentryline driver check NAME`` runs them outside pytest. The checks:

* manifest   driver.yaml, profile.yaml (agreeing with the manifest) and a README load;
* plan       the read plan covers every point once, within the device's limits, in the
             minimum number of requests (computed here independently of the planner);
* senml      every point name is SenML-legal, numeric points carry a registered unit, and the
             family's suggested names (wire-formats.md) use their suggested unit or kind;
* ranges     every numeric point has a plausible range, and the range fits its encoding;
* scenario   scenario.yaml loads, uses this driver's profile and defines every point;
* wire       the simulator serves the scenario over the driver's transport (Modbus TCP on
             loopback, Modbus RTU on a pty) and the gateway's own endpoint, read plan and
             decoder read back what values_at says, within the encoding's rounding;
* faults     every fault of the scenario shows on the wire as it should (silent: no reply,
             garbage: an undecodable reply, slow: a late but good reply, stuck and spike: the
             frozen or jumped value);
* decoder    the manifest's decoder (if any) loads and maps values to profile points.

Drivers of the other transports (CoAP, serial line, BLE) have no register map: they get
the same checks except `plan`, each asked over their own protocol by
drivers/source_contract.py (an aiocoap server, a pty pair, synthesised BTHome bytes).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from drivers.ble.profile import BleProfile
from drivers.coap.profile import CoapProfile
from drivers.modbus.codec import Value, decode_request
from drivers.modbus.planner import ReadRequest, plan_reads
from drivers.modbus.profile import BIT_TABLES, INT_LIMITS, DeviceProfile, PointSpec, Table
from drivers.modbus.rtu import ModbusRtuEndpoint
from drivers.modbus.transport import ModbusReadError, ModbusTcpEndpoint
from drivers.registry import DriverInfo, SourceProfile
from drivers.serial import SerialSettings
from drivers.serial.profile import SerialLineProfile
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.rtu_sim import RtuSimulator
from drivers.sim.scenario import (
    DeviceSpec,
    FaultSpec,
    Scenario,
    silent_at,
    wire_fault_at,
)
from drivers.sim.source_scenario import SourceScenario, reading_at
from drivers.source_contract import (
    SourceContractFailure,
    SourceProfileAny,
    check_source_faults,
    check_source_scenario_devices,
    check_source_wire,
)
from drivers.source_profile import SourcePoint
from provisioning.configfile import ConfigError

__all__ = [
    "CHECKS",
    "KNOWN_UNITS",
    "SUGGESTED_NAMES",
    "CheckResult",
    "ContractFailure",
    "check_decoder",
    "check_faults",
    "check_manifest",
    "check_plan",
    "check_ranges",
    "check_scenario",
    "check_senml",
    "check_wire",
    "minimum_requests",
    "run_contract",
    "sample_times",
]

# SenML units: RFC 8428's registry, RFC 8798's additions and its secondary units (the
# IANA "SenML Units" and "Secondary Units" registries).
KNOWN_UNITS: frozenset[str] = frozenset(
    {
        # RFC 8428
        *("m", "kg", "g", "s", "A", "K", "cd", "mol", "Hz", "rad", "sr", "N", "Pa", "J"),
        *("W", "C", "V", "F", "Ohm", "S", "Wb", "T", "H", "Cel", "lm", "lx", "Bq", "Gy"),
        *("Sv", "kat", "m2", "m3", "l", "m/s", "m/s2", "m3/s", "l/s", "W/m2", "cd/m2"),
        *("bit", "bit/s", "lat", "lon", "pH", "dB", "dBW", "Bspl", "count", "/", "%"),
        *("%RH", "%EL", "EL", "1/s", "1/min", "beat/min", "beats", "S/m"),
        # RFC 8798 primary
        *("B", "VA", "VAs", "var", "vars", "J/m", "kg/m3", "deg"),
        # RFC 8798 secondary
        *("ms", "min", "h", "MHz", "kW", "kVA", "kvar", "Ah", "Wh", "kWh", "varh", "kvarh"),
        *("kVAh", "Wh/km", "KiB", "GB", "Mbit/s", "B/s", "MB/s", "mV", "mA", "dBm"),
        *("ug/m3", "mm/h", "m/h", "ppm", "ppb", "/100", "/1000", "hPa", "mm", "cm", "km"),
        "km/h",
    }
)
_BOOL, _STRING = "vb", "vs"
# The suggested names of wire-formats.md: a point with one of these names must carry the
# unit given (or be a bool "vb" / a string "vs"), whatever its family.
SUGGESTED_NAMES: dict[str, dict[str, str]] = {
    "gas": {"ch4_lel": "/", "ch4": "ppm", "co": "ppm", "h2s": "ppm", "o2": "/"},
    "water": {"level": "m", "rain": "mm/h", "rain_acc": "mm"},
    "elevator": {
        "speed": "m/s",
        "acc_x": "m/s2",
        "acc_y": "m/s2",
        "acc_z": "m/s2",
        "floor": "count",
        "door_open": _BOOL,
        "occupied": _BOOL,
        "in_zone": _BOOL,
        "alarm_btn": _BOOL,
        "mode": _STRING,
    },
    "displacement": {
        "crack": "mm",
        "tilt_x": "rad",
        "tilt_y": "rad",
        "gnss_e": "m",
        "gnss_n": "m",
        "gnss_u": "m",
    },
    "thermal": {"t_max": "Cel", "t_bg": "Cel", "hot_px": "count"},
}
_SENML_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
_FLOAT32_MAX = 3.4028234663852886e38

SEED = 11  # noise seed of the simulated devices (any value: expectations use the same)
RTU_LINE = SerialSettings(115200, "N", 2)  # 11 bits per character like 8E1; ptys refuse parity
READ_TIMEOUT_S = 0.3  # generous for loopback, short enough for silent-device checks
_SAMPLES = 8  # evenly spread sample times per scenario, plus one inside every value fault


class ContractFailure(AssertionError):
    """A driver breaks the contract; the message says what and where."""


# --- static checks ---------------------------------------------------------------------------


def check_manifest(driver: DriverInfo) -> SourceProfile:
    """driver.yaml and profile.yaml load and agree; the README says something. The profile
    is a DeviceProfile for Modbus drivers, the transport's model for the others."""
    try:
        profile = driver.profile()
    except ConfigError as exc:
        raise ContractFailure(f"profile does not load:\n{exc}") from None
    if not driver.readme_path.read_text(encoding="utf-8").strip():
        raise ContractFailure(f"{driver.readme_path} is empty")
    return profile


def minimum_requests(profile: DeviceProfile) -> int:
    """The fewest read requests the device's limits allow, by dynamic programming.

    Independent of the planner: per table, best[j] is the minimum for the first j points
    (sorted by address), trying every run i..j-1 as the last request. A run is one request
    when its span fits the size limit and no hole inside it is wider than max_gap; with
    block_reads off only points on the very same registers may share a request.
    """
    settings = profile.modbus
    total = 0
    tables: dict[Table, list[PointSpec]] = {}
    for point in profile.points:
        tables.setdefault(point.table, []).append(point)
    for table, members in tables.items():
        points = sorted(members, key=lambda p: (p.address, p.end))
        if not settings.block_reads:
            total += len({(p.address, p.register_count) for p in points})
            continue
        limit = settings.max_bits if table in BIT_TABLES else settings.max_registers
        n = len(points)
        feasible = [[False] * n for _ in range(n)]
        for i in range(n):
            end = points[i].end
            for j in range(i, n):
                if j > i:
                    if points[j].address - end > settings.max_gap:
                        break
                    end = max(end, points[j].end)
                if end - points[i].address > limit:
                    break
                feasible[i][j] = True
        best = [0] + [math.inf] * n
        for j in range(1, n + 1):
            best[j] = min(best[i] + 1 for i in range(j) if feasible[i][j - 1])
        total += int(best[n])
    return total


def check_plan(profile: DeviceProfile) -> list[ReadRequest]:
    """The plan reads every point exactly once, within limits, in the minimum requests."""
    plan = plan_reads(profile)
    settings = profile.modbus
    problems: list[str] = []
    seen: dict[str, int] = {}
    for request in plan:
        limit = settings.max_bits if request.table in BIT_TABLES else settings.max_registers
        if not 1 <= request.count <= limit or request.end > 65536:
            problems.append(f"{request.table} {request.address}+{request.count} exceeds {limit}")
        for point in request.points:
            seen[point.name] = seen.get(point.name, 0) + 1
            if point.table != request.table or not (
                request.address <= point.address and point.end <= request.end
            ):
                problems.append(f"{point.name} is outside its request {request}")
    for point in profile.points:
        if seen.get(point.name, 0) != 1:
            problems.append(f"{point.name} is read {seen.get(point.name, 0)} times, not once")
    minimum = minimum_requests(profile)
    if len(plan) != minimum:
        problems.append(f"{len(plan)} requests planned, {minimum} are enough")
    if problems:
        raise ContractFailure("read plan: " + "; ".join(problems))
    return plan


def _kind(point: PointSpec) -> str:
    if point.table in BIT_TABLES or point.type == "bool":
        return _BOOL
    return _STRING if point.enum is not None else "v"


def _source_kind(point: SourcePoint) -> str:
    return {"bool": _BOOL, "string": _STRING}.get(point.kind, "v")


def check_senml(profile: SourceProfile) -> None:
    """Names SenML-legal; numeric points carry a registered unit, bools and enums none;
    suggested names use their suggested unit."""
    suggested = {name: unit for names in SUGGESTED_NAMES.values() for name, unit in names.items()}
    problems: list[str] = []
    for point in profile.points:
        kind = _kind(point) if isinstance(point, PointSpec) else _source_kind(point)
        if not _SENML_NAME.match(f"device-1/{point.name}"):
            problems.append(f"{point.name}: not a SenML name")
        if kind == "v" and point.unit is None:
            problems.append(f"{point.name}: a number needs a unit (e.g. count)")
        elif kind != "v" and point.unit is not None:
            problems.append(f"{point.name}: a {kind} record has no unit, got {point.unit!r}")
        if point.unit is not None and point.unit not in KNOWN_UNITS:
            problems.append(f"{point.name}: {point.unit!r} is not a registered SenML unit")
        want = suggested.get(point.name)
        got = point.unit if kind == "v" else kind
        if want is not None and got != want:
            problems.append(f"{point.name}: the suggested name means {want!r}, got {got!r}")
    if problems:
        raise ContractFailure("SenML: " + "; ".join(problems))


def check_ranges(profile: SourceProfile) -> None:
    """Every numeric point has a range (the gateway's gross-range quality test) that its
    encoding can carry: a range the registers cannot hold would saturate silently."""
    if not isinstance(profile, DeviceProfile):
        missing = [p.name for p in profile.points if p.kind == "number" and p.range is None]
        if missing:
            raise ContractFailure(
                "ranges: " + "; ".join(f"{name}: numeric point without range" for name in missing)
            )
        return
    problems: list[str] = []
    for point in profile.points:
        if _kind(point) != "v":
            continue
        if point.range is None:
            problems.append(f"{point.name}: numeric point without range")
            continue
        raws = [(edge - point.offset) / point.scale for edge in point.range]
        if point.type in INT_LIMITS:
            low, high = INT_LIMITS[point.type]
            if not all(low - 0.5 <= raw <= high + 0.5 for raw in raws):
                problems.append(
                    f"{point.name}: range {list(point.range)} needs raw {raws}, "
                    f"{point.type} holds {low}..{high}"
                )
        elif point.type == "float32" and not all(abs(raw) <= _FLOAT32_MAX for raw in raws):
            problems.append(f"{point.name}: range {list(point.range)} overflows float32")
    if problems:
        raise ContractFailure("ranges: " + "; ".join(problems))


def check_scenario(driver: DriverInfo, profile: SourceProfile) -> Scenario | SourceScenario:
    """scenario.yaml loads, every device uses this driver and defines every point."""
    try:
        scenario = driver.scenario()
    except ConfigError as exc:
        raise ContractFailure(f"scenario does not load:\n{exc}") from None
    if isinstance(scenario, SourceScenario):
        assert not isinstance(profile, DeviceProfile)
        found = check_source_scenario_devices(profile, driver.name, scenario)
        if found:
            raise ContractFailure(f"{driver.scenario_path}: " + "; ".join(found))
        return scenario
    assert isinstance(profile, DeviceProfile)
    problems: list[str] = []
    names = set(profile.point_names)
    for device in scenario.devices:
        if device.profile != driver.name:
            problems.append(f"device {device.id} uses profile {device.profile!r}")
            continue
        missing = names - set(device.values) - set(device.signals)
        if missing:
            problems.append(f"device {device.id} leaves {sorted(missing)} undefined")
        if not any(_readable(device, t) for t in sample_times(scenario)):
            problems.append(f"device {device.id} never answers at the sample times")
    if problems:
        raise ContractFailure(f"{driver.scenario_path}: " + "; ".join(problems))
    return scenario


def check_decoder(
    driver: DriverInfo, profile: SourceProfile, scenario: Scenario | SourceScenario
) -> None:
    """The decoder, if any, loads and maps a poll's values to profile points."""
    try:
        decoder = driver.decoder(profile)
    except ConfigError as exc:
        raise ContractFailure(str(exc)) from None
    if decoder is None:
        return
    if isinstance(scenario, SourceScenario):
        values = reading_at(scenario.devices[0], 0.0)[0]
    else:
        values = ModbusSimulator(scenario, seed=SEED).values(scenario.devices[0], 0.0)
    out = decoder.decode(values)
    unknown = sorted(set(out) - set(profile.point_names))
    if unknown:
        raise ContractFailure(f"decoder returns {unknown}, which are not profile points")
    bad = {k: v for k, v in out.items() if not _is_value(v)}
    if bad:
        raise ContractFailure(f"decoder returns values SenML cannot carry: {bad}")


def _is_value(value: object) -> bool:
    if isinstance(value, bool | str):
        return True
    return isinstance(value, int | float) and math.isfinite(value)


# --- comparing decoded values with the scenario ---------------------------------------------


def tolerance(point: PointSpec, want: float) -> float:
    """How far an honest encode/decode may move a value: half a count for integers, the
    format's rounding for floats."""
    scale = abs(point.scale)
    if point.type in INT_LIMITS:
        return scale / 2 * (1 + 1e-9) + 1e-12
    raw = abs((want - point.offset) / point.scale)
    epsilon = 2.0**-23 if point.type == "float32" else 2.0**-51
    return scale * raw * epsilon + abs(point.offset) * 2.0**-51 + 1e-12


def mismatches(
    profile: DeviceProfile, got: Mapping[str, Value], want: Mapping[str, Value]
) -> list[str]:
    """Points whose decoded value is not the scenario's value."""
    problems: list[str] = []
    for point in profile.points:
        if point.name not in want:
            continue
        if point.name not in got:
            problems.append(f"{point.name}: not read")
            continue
        a, b = got[point.name], want[point.name]
        kind = _kind(point)
        if kind == _BOOL:
            ok = isinstance(a, bool) and a == bool(b)
        elif kind == _STRING:
            assert point.enum is not None
            label = point.enum.get(b, b) if isinstance(b, int) else b
            ok = a == label
        else:
            ok = (
                isinstance(a, int | float)
                and isinstance(b, int | float)
                and abs(a - b) <= tolerance(point, float(b))
            )
        if not ok:
            problems.append(f"{point.name}: read {a!r}, scenario says {b!r}")
    return problems


# --- the simulator and the gateway's endpoint, per transport ---------------------------------


class _Endpoint(Protocol):
    timeout: float

    async def read(self, request: ReadRequest, device_id: int) -> list[int] | list[bool]: ...


@dataclass
class _Rig:
    """A scenario served on the driver's transport and the gateway endpoint reading it."""

    endpoint: _Endpoint
    set_time: Callable[[float], None]
    values: Callable[[DeviceSpec, float], dict[str, Value]]


@asynccontextmanager
async def serve(scenario: Scenario, transport: str) -> AsyncIterator[_Rig]:
    """Serve `scenario` (Modbus TCP on loopback, or RTU on a pty) and connect an endpoint."""
    if transport == "modbus-rtu":
        rtu = RtuSimulator(scenario, seed=SEED, line=RTU_LINE)
        path = rtu.start()
        settings = RTU_LINE
        serial = ModbusRtuEndpoint(
            path, settings.baudrate, settings.parity, settings.stopbits, READ_TIMEOUT_S
        )

        def set_rtu_time(t: float) -> None:
            rtu.set_time(t)  # the simulator acts out the scenario's wire faults at t itself

        try:
            yield _Rig(serial, set_rtu_time, rtu.model.values)
        finally:
            await serial.close()
            rtu.stop()
        if rtu.error is not None:
            raise ContractFailure(f"the RTU simulator failed: {rtu.error!r}")
        return
    sim = ModbusSimulator(scenario, seed=SEED)
    port = await sim.start("127.0.0.1", 0)
    tcp = ModbusTcpEndpoint("127.0.0.1", port, timeout=READ_TIMEOUT_S)
    try:
        yield _Rig(tcp, sim.set_time, sim.values)
    finally:
        await tcp.close()
        await sim.stop()


async def read_device(
    endpoint: _Endpoint, plan: Iterable[ReadRequest], device_id: int
) -> dict[str, Value]:
    """One poll the way the gateway does it: every planned request, decoded."""
    values: dict[str, Value] = {}
    for request in plan:
        values.update(decode_request(request, await endpoint.read(request, device_id)))
    return values


def sample_times(scenario: Scenario) -> list[float]:
    """Evenly spread times plus the middle of every stuck or spike window, sorted."""
    times = {scenario.duration * k / _SAMPLES for k in range(_SAMPLES)}
    for device in scenario.devices:
        for fault in device.faults:
            if fault.kind in ("stuck", "spike"):
                times.add(_middle(fault, scenario.duration))
    return sorted(times)


def _middle(fault: FaultSpec, duration: float) -> float:
    return (fault.at + min(fault.end, duration)) / 2


def _readable(device: DeviceSpec, t: float) -> bool:
    return not silent_at(device, t) and wire_fault_at(device, t) is None


async def check_wire(
    driver: DriverInfo, profile: SourceProfile, scenario: Scenario | SourceScenario
) -> int:
    """Serve the scenario and read every device back at the sample times; returns the
    number of polls compared."""
    if isinstance(scenario, SourceScenario):
        assert not isinstance(profile, DeviceProfile)
        return await _source_check(check_source_wire, profile, scenario)
    assert isinstance(profile, DeviceProfile)
    plan = plan_reads(profile)
    problems: list[str] = []
    polls = 0
    async with serve(scenario, driver.transport) as rig:
        for t in sample_times(scenario):
            rig.set_time(t)
            for device in scenario.devices:
                if not _readable(device, t):
                    continue
                try:
                    got = await read_device(rig.endpoint, plan, device.device_id)
                except ModbusReadError as exc:
                    problems.append(f"t={t:g} {device.id}: {exc}")
                    continue
                polls += 1
                for problem in mismatches(profile, got, rig.values(device, t)):
                    problems.append(f"t={t:g} {device.id}: {problem}")
    if problems:
        raise ContractFailure(f"{driver.transport} read-back:\n  " + "\n  ".join(problems))
    return polls


async def check_faults(
    driver: DriverInfo, profile: SourceProfile, scenario: Scenario | SourceScenario
) -> int:
    """Every fault of the scenario shows on the wire as its kind says; returns how many."""
    if isinstance(scenario, SourceScenario):
        assert not isinstance(profile, DeviceProfile)
        return await _source_check(check_source_faults, profile, scenario)
    assert isinstance(profile, DeviceProfile)
    plan = plan_reads(profile)
    problems: list[str] = []
    checked = 0
    async with serve(scenario, driver.transport) as rig:
        for device in scenario.devices:
            for index, fault in enumerate(device.faults):
                t = _middle(fault, scenario.duration)
                # A device-wide fault overlapping this one decides what the wire shows.
                if any(f is not fault and f.point is None and f.active(t) for f in device.faults):
                    continue
                rig.set_time(t)
                problem = await _fault_problem(rig, plan, profile, device, fault, t)
                checked += 1
                if problem:
                    problems.append(f"{device.id} faults[{index}] ({fault.kind}): {problem}")
    if problems:
        raise ContractFailure("faults on the wire:\n  " + "\n  ".join(problems))
    return checked


async def _source_check(
    check: Callable[[SourceProfileAny, SourceScenario], Awaitable[int]],
    profile: SourceProfileAny,
    scenario: SourceScenario,
) -> int:
    try:
        return await check(profile, scenario)
    except SourceContractFailure as exc:
        raise ContractFailure(str(exc)) from None


async def _fault_problem(
    rig: _Rig,
    plan: list[ReadRequest],
    profile: DeviceProfile,
    device: DeviceSpec,
    fault: FaultSpec,
    t: float,
) -> str | None:
    unit = device.device_id
    if fault.kind in ("silent", "garbage"):
        expected = "timeout" if fault.kind == "silent" else "decode"
        try:
            await rig.endpoint.read(plan[0], unit)
        except ModbusReadError as exc:
            return None if exc.kind == expected else f"expected a {expected} error, got {exc}"
        return f"the device answered; expected a {expected} error"
    if fault.kind == "slow":
        assert fault.delay is not None
        saved = rig.endpoint.timeout
        rig.endpoint.timeout = saved + fault.delay
        started = time.monotonic()
        try:
            got = await read_device(rig.endpoint, plan, unit)
        except ModbusReadError as exc:
            return f"a slow reply must still arrive within timeout + delay: {exc}"
        finally:
            rig.endpoint.timeout = saved
        elapsed = time.monotonic() - started
        if elapsed < fault.delay * 0.9:
            return f"replied in {elapsed:.3f} s, the fault delays {fault.delay} s"
        wrong = mismatches(profile, got, rig.values(device, t))
        return "; ".join(wrong) or None
    # stuck and spike: the registers show the frozen or jumped value
    got = await read_device(rig.endpoint, plan, unit)
    want = rig.values(device, t)
    wrong = mismatches(profile, got, want)
    if wrong:
        return "; ".join(wrong)
    if fault.point is not None and fault.value is not None:
        point = profile.point(fault.point)
        return "; ".join(mismatches(profile, got, {point.name: fault.value})) or None
    if fault.kind == "stuck":
        rig.set_time(fault.at)
        before = await read_device(rig.endpoint, plan, unit)
        names = [fault.point] if fault.point is not None else list(profile.point_names)
        moved = [n for n in names if before.get(n) != got.get(n)]
        if moved:
            return f"{moved} changed while stuck"
    return None


# --- everything, for the CLI -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


CHECKS: tuple[str, ...] = (
    "manifest",
    "plan",
    "senml",
    "ranges",
    "scenario",
    "decoder",
    "wire",
    "faults",
)


async def run_contract(driver: DriverInfo) -> list[CheckResult]:
    """Run every check in order; checks needing an earlier result are skipped if it failed."""
    results: list[CheckResult] = []

    def record(name: str, action: Callable[[], object]) -> object | None:
        try:
            value = action()
        except ContractFailure as exc:
            results.append(CheckResult(name, False, str(exc)))
            return None
        results.append(CheckResult(name, True, "" if value is None else _summary(value)))
        return value if value is not None else True

    profile = record("manifest", lambda: check_manifest(driver))
    if profile is None:
        return results
    assert isinstance(profile, DeviceProfile | CoapProfile | SerialLineProfile | BleProfile)
    if isinstance(profile, DeviceProfile):  # only a register map has a read plan
        record("plan", lambda: check_plan(profile))
    record("senml", lambda: check_senml(profile))
    record("ranges", lambda: check_ranges(profile))
    scenario = record("scenario", lambda: check_scenario(driver, profile))
    if not isinstance(scenario, Scenario | SourceScenario):
        return results
    record("decoder", lambda: check_decoder(driver, profile, scenario))
    for name, check in (("wire", check_wire), ("faults", check_faults)):
        try:
            count = await asyncio.wait_for(check(driver, profile, scenario), 120)
        except ContractFailure as exc:
            results.append(CheckResult(name, False, str(exc)))
        except TimeoutError:
            results.append(CheckResult(name, False, "did not finish within 120 s"))
        else:
            results.append(CheckResult(name, True, f"{count} {_UNITS[name]}"))
    return results


_UNITS = {"wire": "polls compared", "faults": "faults seen"}


def _summary(value: object) -> str:
    if isinstance(value, DeviceProfile | CoapProfile | SerialLineProfile | BleProfile):
        return f"{len(value.points)} points"
    if isinstance(value, Scenario | SourceScenario):
        return f"{len(value.devices)} devices, {value.duration:g} s"
    if isinstance(value, list):
        return f"{len(value)} requests"
    return ""
