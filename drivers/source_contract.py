"""The driver contract for CoAP, serial-line and BLE drivers: the same questions as for
Modbus (drivers/contract.py dispatches here), asked over each transport's real protocol.

* senml / ranges  every point is SenML-legal, numbers carry a registered unit and a range;
* scenario        scenario.yaml (a SourceScenario) uses this driver and defines every point;
* wire            the scenario is served on the driver's transport — an aiocoap server on
                  127.0.0.1 (GET, and Observe for observe-mode profiles), a pty pair read by
                  the real LineSensor, synthesised BTHome advertisements through a simulated
                  radio into the real BthomeScanner — and the gateway-side code, built from
                  the profile, reads back what the scenario says, within the encoding's
                  rounding (a thermal frame pixel by pixel);
* faults          silent and garbage show as counted failures, never as an exception, and
                  the next report reads normally; slow is late but good; stuck and spike
                  show the frozen or jumped value.

Each transport has a rig (``serve_source``) with one operation: have a device report its
reading for scenario time t and collect what the gateway side made of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from cloud_bridge.senml import Record
from drivers.ble.gatt import GattSubscriber, ReconnectBackoff
from drivers.ble.profile import BleProfile
from drivers.ble.scanner import BthomeScanner
from drivers.coap.client import CoapObserver, CoapPoller, open_context
from drivers.coap.payload import Blob
from drivers.coap.profile import CoapProfile
from drivers.modbus.codec import Value
from drivers.serial.line_sensor import LineSensor
from drivers.serial.profile import SerialLineProfile
from drivers.sim.ble_sim import (
    BthomeAdvertiser,
    GattPeripheral,
    SimulatedAdvertisementSource,
    bthome_tolerance,
    gatt_tolerance,
)
from drivers.sim.coap_sim import ScenarioCoapDevice, coap_tolerance
from drivers.sim.scenario import FaultSpec
from drivers.sim.serial_sim import ScenarioLineSimulator, serial_tolerance
from drivers.sim.source_scenario import (
    FRAME_SUMMARY,
    SourceDevice,
    SourceScenario,
    effective_time,
    reading_at,
    sample_rng,
    silent_at,
    wire_fault_at,
)
from drivers.source_profile import SourcePoint

__all__ = [
    "SourceContractFailure",
    "SourceProfileAny",
    "SourceRead",
    "check_source_faults",
    "check_source_scenario_devices",
    "check_source_wire",
    "serve_source",
    "source_mismatches",
    "source_sample_times",
]

SourceProfileAny = CoapProfile | SerialLineProfile | BleProfile

SEED = 11
READ_TIMEOUT_S = 0.5  # a report that has not arrived by then is not coming
_SAMPLES = 8


class SourceContractFailure(AssertionError):
    """Raised by the checks here; drivers.contract re-raises it as its ContractFailure."""


@dataclass
class SourceRead:
    """What the gateway side made of one report."""

    records: list[Record] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # failures counted, by reason
    elapsed_s: float = 0.0


class SourceRig(Protocol):
    def values(self, device: SourceDevice, t: float) -> dict[str, Value]: ...

    def frame(self, device: SourceDevice, t: float) -> list[float] | None: ...

    def tolerance(self, point: str) -> float: ...

    async def read(
        self, device: SourceDevice, t: float, wait_s: float = READ_TIMEOUT_S
    ) -> SourceRead: ...


def _reading(device: SourceDevice, t: float) -> tuple[dict[str, Value], list[float] | None]:
    return reading_at(device, t, sample_rng(SEED, device.id, effective_time(device, t)))


class _RigBase:
    def values(self, device: SourceDevice, t: float) -> dict[str, Value]:
        return _reading(device, t)[0]

    def frame(self, device: SourceDevice, t: float) -> list[float] | None:
        return _reading(device, t)[1]


def _delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


# --- CoAP ------------------------------------------------------------------------------------


class _CoapRig(_RigBase):
    def __init__(self, profile: CoapProfile, sims: dict[str, ScenarioCoapDevice], ctx: object):
        self.profile = profile
        self.sims = sims
        self.ctx = ctx
        self._records: list[Record] = []
        self._blobs: list[Blob] = []
        self.pollers = {
            device_id: CoapPoller(
                device_id,
                sim.uri,
                1.0,
                self._records.extend,
                decoder=profile.decoder(),
                timeout=READ_TIMEOUT_S,
                accept=profile.accept_format,
                context=ctx,  # type: ignore[arg-type]
                blob_sink=self._blobs.extend,
            )
            for device_id, sim in sims.items()
        }

    def tolerance(self, point: str) -> float:
        return coap_tolerance(self.profile, point)

    async def read(
        self, device: SourceDevice, t: float, wait_s: float = READ_TIMEOUT_S
    ) -> SourceRead:
        self.sims[device.id].set_time(t)
        poller = self.pollers[device.id]
        poller.timeout = wait_s
        before = dict(poller.counters.errors)
        self._records.clear()
        self._blobs.clear()
        started = time.monotonic()
        await poller.poll_once(self.ctx)  # type: ignore[arg-type]
        return SourceRead(
            list(self._records),
            list(self._blobs),
            _delta(poller.counters.errors, before),
            time.monotonic() - started,
        )


# --- serial line -----------------------------------------------------------------------------


class _SerialRig(_RigBase):
    def __init__(self, profile: SerialLineProfile, sim: ScenarioLineSimulator) -> None:
        self.profile = profile
        self.sim = sim
        self.inbox: dict[str, list[Record]] = {d.id: [] for d in sim.devices}
        self.arrived = asyncio.Event()
        # The pty has no line speed and refuses parity: 8N1 at the profile's rate.
        settings = replace(profile.settings(), parity="N")
        self.sensors = {
            device_id: LineSensor(
                device_id,
                path,
                settings,
                self._sink(device_id),
                readings=profile.readings(),
                decoder=profile.frame_decoder(),
                update_time=profile.update_time,
                reconnect_s=0.1,
            )
            for device_id, path in sim.paths.items()
        }

    def _sink(self, device_id: str) -> Callable[[list[Record]], None]:
        def sink(records: list[Record]) -> None:
            self.inbox[device_id].extend(records)
            self.arrived.set()

        return sink

    def tolerance(self, point: str) -> float:
        return serial_tolerance(self.profile, point)

    async def read(
        self, device: SourceDevice, t: float, wait_s: float = READ_TIMEOUT_S
    ) -> SourceRead:
        sensor = self.sensors[device.id]
        stats = sensor.decoder_stats
        before = {**stats.rejected_frames, "bad_fields": sensor.counters.bad_fields}
        inbox = self.inbox[device.id]
        inbox.clear()
        expected = len(self.values(device, t))
        started = time.monotonic()
        await self.sim.report(t, {device.id})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                while len({r.quantity for r in inbox}) < expected:
                    self.arrived.clear()
                    await self.arrived.wait()
        await asyncio.sleep(0.02)  # let a trailing rejected frame be counted too
        after = {**stats.rejected_frames, "bad_fields": sensor.counters.bad_fields}
        return SourceRead(list(inbox), [], _delta(after, before), time.monotonic() - started)


# --- BLE (BTHome) ----------------------------------------------------------------------------


class _BthomeRig(_RigBase):
    def __init__(self, profile: BleProfile, scenario: SourceScenario) -> None:
        self.profile = profile
        self.radio = SimulatedAdvertisementSource()
        self.advertisers = {d.id: BthomeAdvertiser(d, seed=SEED) for d in scenario.devices}
        self.inbox: list[Record] = []
        self.arrived = asyncio.Event()
        self.scanner = BthomeScanner(
            self.radio,
            self._sink,
            devices=[profile.device_config(d.id, mac=d.address) for d in scenario.devices],
        )

    def _sink(self, records: list[Record]) -> None:
        self.inbox.extend(self.profile.map_records(records))
        self.arrived.set()

    def tolerance(self, point: str) -> float:
        return bthome_tolerance(self.profile, point)

    async def read(
        self, device: SourceDevice, t: float, wait_s: float = READ_TIMEOUT_S
    ) -> SourceRead:
        counters = self.scanner.counters.get(device.id)
        before = dict(counters.errors) if counters else {}
        self.inbox.clear()
        started = time.monotonic()
        advertisement = self.advertisers[device.id].advertisement(t, time.time())
        if advertisement is not None:
            self.radio.publish(advertisement)
        expected = len(self.values(device, t))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                while len(self.inbox) < expected:
                    self.arrived.clear()
                    await self.arrived.wait()
        await asyncio.sleep(0)  # let the scanner take an undecodable advertisement too
        counters = self.scanner.counters.get(device.id)
        after = dict(counters.errors) if counters else {}
        return SourceRead(list(self.inbox), [], _delta(after, before), time.monotonic() - started)


# --- BLE (GATT) -----------------------------------------------------------------------------


class _GattRig(_RigBase):
    def __init__(self, profile: BleProfile, scenario: SourceScenario) -> None:
        self.profile = profile
        self.peripherals = {d.id: GattPeripheral(d, seed=SEED) for d in scenario.devices}
        self.inbox: dict[str, list[Record]] = {d.id: [] for d in scenario.devices}
        self.subscribers = {
            device_id: GattSubscriber(
                device_id,
                peripheral.link,
                profile.decoders(),
                self.inbox[device_id].extend,
                backoff=ReconnectBackoff(initial_s=0.05, max_s=0.2),
            )
            for device_id, peripheral in self.peripherals.items()
        }

    def tolerance(self, point: str) -> float:
        return gatt_tolerance(self.profile, point)

    async def read(
        self, device: SourceDevice, t: float, wait_s: float = READ_TIMEOUT_S
    ) -> SourceRead:
        del wait_s  # notifications are delivered synchronously by the simulated link
        counters = self.subscribers[device.id].counters
        before = dict(counters.errors)
        inbox = self.inbox[device.id]
        inbox.clear()
        started = time.monotonic()
        self.peripherals[device.id].notify(t)
        await asyncio.sleep(0)
        return SourceRead(
            list(inbox), [], _delta(counters.errors, before), time.monotonic() - started
        )


# --- serving ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_source(
    scenario: SourceScenario, profile: SourceProfileAny
) -> AsyncIterator[SourceRig]:
    """Serve `scenario` on the profile's transport and connect the gateway side to it."""
    if isinstance(profile, CoapProfile):
        sims = {d.id: ScenarioCoapDevice(d, seed=SEED) for d in scenario.devices}
        ctx = await open_context()
        try:
            for sim in sims.values():
                await sim.start("127.0.0.1", 0)
            yield _CoapRig(profile, sims, ctx)
        finally:
            await ctx.shutdown()
            for sim in sims.values():
                await sim.stop()
        return
    if isinstance(profile, SerialLineProfile):
        line = ScenarioLineSimulator(list(scenario.devices), seed=SEED)
        line.open()
        rig = _SerialRig(profile, line)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(s.run()) for s in rig.sensors.values()]
                await asyncio.sleep(0.05)  # the sensors open their ports
                try:
                    yield rig
                finally:
                    for task in tasks:
                        task.cancel()
        finally:
            line.close()
        return
    if profile.kind == "bthome":
        rig_ble = _BthomeRig(profile, scenario)
        async with asyncio.TaskGroup() as group:
            task = group.create_task(rig_ble.scanner.run())
            try:
                yield rig_ble
            finally:
                task.cancel()
        return
    rig_gatt = _GattRig(profile, scenario)
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(s.run()) for s in rig_gatt.subscribers.values()]
        try:
            async with asyncio.timeout(5):  # every subscriber connected and subscribed
                for peripheral in rig_gatt.peripherals.values():
                    await peripheral.wait_subscribed()
            yield rig_gatt
        finally:
            for task in tasks:
                task.cancel()


# --- checks ----------------------------------------------------------------------------------


def source_sample_times(scenario: SourceScenario) -> list[float]:
    times = {scenario.duration * k / _SAMPLES for k in range(_SAMPLES)}
    for device in scenario.devices:
        for fault in device.faults:
            if fault.kind in ("stuck", "spike"):
                times.add(_middle(fault.at, fault.end, scenario.duration))
    return sorted(times)


def _middle(at: float, end: float, duration: float) -> float:
    return (at + min(end, duration)) / 2


def readable(device: SourceDevice, t: float) -> bool:
    return not silent_at(device, t) and wire_fault_at(device, t) is None


def check_source_scenario_devices(
    profile: SourceProfileAny, driver_name: str, scenario: SourceScenario
) -> list[str]:
    """Problems: devices of another driver, points left undefined, never readable."""
    problems: list[str] = []
    names = set(profile.point_names)
    for device in scenario.devices:
        if device.profile != driver_name:
            problems.append(f"device {device.id} uses profile {device.profile!r}")
            continue
        defined = set(device.values) | set(device.signals)
        if device.frame is not None:
            defined |= FRAME_SUMMARY
        missing = names - defined
        if missing:
            problems.append(f"device {device.id} leaves {sorted(missing)} undefined")
        if not any(readable(device, t) for t in source_sample_times(scenario)):
            problems.append(f"device {device.id} never reports at the sample times")
    return problems


def source_mismatches(
    points: Mapping[str, SourcePoint],
    tolerance: Callable[[str], float],
    records: list[Record],
    want: Mapping[str, Value],
) -> list[str]:
    """Where the records are not the scenario's values (and units not the points')."""
    problems: list[str] = []
    got: dict[str, Record] = {}
    for record in records:
        if record.quantity not in points:
            problems.append(f"{record.quantity}: not a point of the profile")
        got[record.quantity] = record
    for name, b in want.items():
        record = got.get(name)
        if record is None:
            problems.append(f"{name}: not read")
            continue
        point = points[name]
        a = record.value
        if record.unit != point.unit:
            problems.append(f"{name}: unit {record.unit!r}, the point says {point.unit!r}")
        if point.kind == "bool":
            ok = isinstance(a, bool) and a == bool(b)
        elif point.kind == "string":
            ok = a == b
        else:
            ok = (
                isinstance(a, int | float)
                and not isinstance(a, bool)
                and isinstance(b, int | float)
                and abs(a - b) <= tolerance(name) + 1e-9 * abs(b)
            )
        if not ok:
            problems.append(f"{name}: read {a!r}, scenario says {b!r}")
    return problems


def _frame_problems(profile: SourceProfileAny, read: SourceRead, want: list[float]) -> list[str]:
    if not isinstance(profile, CoapProfile) or profile.frame is None:
        return []
    frames = [b for b in read.blobs if b.name.endswith(f"/{profile.frame_quantity}")]
    if len(frames) != 1:
        return [f"{len(frames)} frame blobs in one reading, expected 1"]
    try:
        rows = profile.frame.decode(frames[0].data)
    except ValueError as exc:
        return [f"frame does not decode: {exc}"]
    flat = [v for row in rows for v in row]
    limit = profile.frame.scale / 2 + 1e-9
    bad = [i for i, (a, b) in enumerate(zip(flat, want, strict=True)) if abs(a - b) > limit]
    if bad:
        i = bad[0]
        return [
            f"frame: {len(bad)} pixels differ, first ({i // profile.frame.cols}, "
            f"{i % profile.frame.cols}) read {flat[i]}, scenario says {want[i]}"
        ]
    return []


def _points(profile: SourceProfileAny) -> dict[str, SourcePoint]:
    return {p.name: p for p in profile.points}


async def _compare(
    rig: SourceRig, profile: SourceProfileAny, device: SourceDevice, t: float
) -> list[str]:
    read = await rig.read(device, t)
    if read.errors and not read.records:
        return [f"failed: {read.errors}"]
    problems = source_mismatches(
        _points(profile), rig.tolerance, read.records, rig.values(device, t)
    )
    frame = rig.frame(device, t)
    if frame is not None:
        problems += _frame_problems(profile, read, frame)
    return problems


async def check_source_wire(profile: SourceProfileAny, scenario: SourceScenario) -> int:
    """Serve the scenario and read every device back at the sample times; returns how many
    readings were compared. Raises SourceContractFailure listing every mismatch."""
    problems: list[str] = []
    compared = 0
    async with serve_source(scenario, profile) as rig:
        for t in source_sample_times(scenario):
            for device in scenario.devices:
                if not readable(device, t):
                    continue
                compared += 1
                problems += [
                    f"t={t:g} {device.id}: {p}" for p in await _compare(rig, profile, device, t)
                ]
        if isinstance(profile, CoapProfile) and profile.mode == "observe":
            assert isinstance(rig, _CoapRig)
            observed, more = await _observe_check(rig, profile, scenario)
            compared += observed
            problems += more
    if problems:
        raise SourceContractFailure(f"{profile.transport} read-back:\n  " + "\n  ".join(problems))
    return compared


async def _observe_check(
    rig: _CoapRig, profile: CoapProfile, scenario: SourceScenario
) -> tuple[int, list[str]]:
    """Observe (RFC 7641): register once, then every notification carries the reading of
    the moment it was sent."""
    problems: list[str] = []
    compared = 0
    for device in scenario.devices:
        sim = rig.sims[device.id]
        times = [t for t in source_sample_times(scenario) if readable(device, t)][:3]
        if not times:
            continue
        sim.set_time(times[0])
        records: list[Record] = []
        blobs: list[Blob] = []
        arrived = asyncio.Event()

        def sink(
            batch: list[Record], out: list[Record] = records, event: asyncio.Event = arrived
        ) -> None:
            out.extend(batch)
            event.set()

        observer = CoapObserver(
            device.id,
            sim.uri,
            sink,
            decoder=profile.decoder(),
            timeout=READ_TIMEOUT_S,
            accept=profile.accept_format,
            context=rig.ctx,  # type: ignore[arg-type]
            blob_sink=blobs.extend,
            silence_s=5.0,
        )
        task = asyncio.create_task(observer.observe_once(rig.ctx))  # type: ignore[arg-type]
        try:
            for index, t in enumerate(times):
                if index > 0:
                    sim.set_time(t)
                    sim.notify()
                async with asyncio.timeout(2.0):
                    while len(records) < len(rig.values(device, t)):
                        arrived.clear()
                        await arrived.wait()
                read = SourceRead(list(records), list(blobs))
                records.clear()
                blobs.clear()
                compared += 1
                found = source_mismatches(
                    _points(profile), rig.tolerance, read.records, rig.values(device, t)
                )
                frame = rig.frame(device, t)
                if frame is not None:
                    found += _frame_problems(profile, read, frame)
                problems += [f"observe t={t:g} {device.id}: {p}" for p in found]
        except TimeoutError:
            problems.append(f"observe {device.id}: a notification did not arrive within 2 s")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if observer.counters.registrations != 1:
            problems.append(f"observe {device.id}: {observer.counters.registrations} registrations")
    return compared, problems


async def check_source_faults(profile: SourceProfileAny, scenario: SourceScenario) -> int:
    """Every fault shows as its kind says, is counted rather than raised, and the device
    reads normally again afterwards; returns how many faults were seen."""
    problems: list[str] = []
    checked = 0
    async with serve_source(scenario, profile) as rig:
        for device in scenario.devices:
            for index, fault in enumerate(device.faults):
                t = _middle(fault.at, fault.end, scenario.duration)
                if any(f is not fault and f.point is None and f.active(t) for f in device.faults):
                    continue  # a device-wide fault overlapping this one decides the wire
                checked += 1
                problem = await _fault_problem(rig, profile, device, fault, t)
                if problem:
                    problems.append(f"{device.id} faults[{index}] ({fault.kind}): {problem}")
            # Failures are counted, never fatal: the device reads normally afterwards.
            after = [t for t in source_sample_times(scenario) if readable(device, t)]
            if after:
                wrong = await _compare(rig, profile, device, after[-1])
                problems += [f"{device.id} after the faults: {w}" for w in wrong]
    if problems:
        raise SourceContractFailure("faults on the wire:\n  " + "\n  ".join(problems))
    return checked


async def _fault_problem(
    rig: SourceRig, profile: SourceProfileAny, device: SourceDevice, fault: FaultSpec, t: float
) -> str | None:
    kind = fault.kind
    if kind in ("silent", "garbage"):
        read = await rig.read(device, t, wait_s=0.3)
        if read.records:
            return f"{len(read.records)} readings came through; expected none"
        if kind == "garbage" and not read.errors:
            return "the garbage was not counted as a failure"
        if kind == "silent" and isinstance(profile, CoapProfile) and "timeout" not in read.errors:
            return f"expected a counted timeout, got {read.errors or 'nothing'}"
        return None
    if kind == "slow":
        assert fault.delay is not None
        read = await rig.read(device, t, wait_s=READ_TIMEOUT_S + fault.delay)
        if read.elapsed_s < fault.delay * 0.9:
            return f"answered in {read.elapsed_s:.3f} s, the fault delays {fault.delay} s"
        wrong = source_mismatches(
            _points(profile), rig.tolerance, read.records, rig.values(device, t)
        )
        return "; ".join(wrong) or None
    read = await rig.read(device, t)
    want = rig.values(device, t)
    wrong = source_mismatches(_points(profile), rig.tolerance, read.records, want)
    if wrong:
        return "; ".join(wrong)
    got = {r.quantity: r.value for r in read.records}
    if fault.point is not None and fault.value is not None:
        value = got.get(fault.point)
        target = fault.value
        if isinstance(value, int | float) and isinstance(target, int | float):
            if not math.isclose(value, target, abs_tol=rig.tolerance(fault.point) + 1e-9):
                return f"{fault.point} read {value!r}, the fault says {target!r}"
        elif value != target:
            return f"{fault.point} read {value!r}, the fault says {target!r}"
    if kind == "stuck":
        before = await rig.read(device, fault.at)
        then = {r.quantity: r.value for r in before.records}
        names = [fault.point] if fault.point is not None else list(got)
        moved = [n for n in names if then.get(n) != got.get(n)]
        if moved:
            return f"{moved} changed while stuck"
    return None
