"""All devices of a scenario on one real pymodbus TCP server, one unit id per device.

pymodbus 3.16 notes (why it is built this way):
- ModbusServerContext/ModbusDeviceContext are deprecated in 3.16 (they log a warning and
  are converted to SimDevice internally), so we build SimDevice objects directly.
- Register values are pushed through SimDevice's documented `action` hook, which receives
  the live register block on every access; the simulator keeps its own image per table and
  copies it in, instead of poking at the server's internal data structures.
- A silent device must not answer at all (a gateway has to see a timeout, not an exception
  response). The server's `trace_pdu` hook sees every decoded request; returning None for
  a request makes the request handler drop it (`if self.last_pdu:` in
  ServerRequestHandler.callback_data), so no response is ever sent for that unit id.
- Port 0: after `serve_forever(background=True)` the server's `transport` is the
  asyncio.Server, whose socket knows the port the OS picked.
- Wire faults from the scenario: a dropout drops the request in `trace_pdu` like a silent
  unit, for a seeded share of the requests; slow awaits its delay inside the SimDevice
  action (the handler awaits it before answering, other units keep answering meanwhile);
  garbage replaces the outgoing frame in `trace_packet` with random bytes of its length
  (the unit id is byte 6 of the MBAP header).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import cast

from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.codec import encode_image
from drivers.modbus.profile import BIT_TABLES, DeviceProfile, Table
from drivers.sim.scenario import (
    DeviceSpec,
    FaultSpec,
    Scenario,
    ScenarioClock,
    effective_time,
    sample_rng,
    silent_at,
    values_at,
    wire_fault_at,
)

__all__ = ["TICK_SECONDS", "ModbusSimulator"]

# Registers are refreshed this often (wall time): 20 Hz, well above any sane poll rate.
TICK_SECONDS = 0.05

_TABLE_OF_FUNCTION: dict[int, Table] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}
# SimDevice's non-shared layout: (coils, discrete inputs, holding, input).
_SIM_TABLES: tuple[Table, ...] = ("coil", "discrete", "holding", "input")


class _DeviceImage:
    """The registers one simulated device shows, by table, refreshed by set_time."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.profile: DeviceProfile = spec.profile_model
        self.tables: dict[Table, dict[int, int | bool]] = {}
        self.delay_s = 0.0  # a slow fault: how late every reply comes

    def update(self, values: dict[str, float | int | bool | str]) -> None:
        # Build the new image completely, then swap: a read never sees half an update.
        self.tables = encode_image(self.profile.points, values)

    def sim_device(self) -> SimDevice:
        blocks: list[list[SimData]] = []
        for table in _SIM_TABLES:
            addresses = [p.address for p in self.profile.points if p.table == table]
            ends = [p.end for p in self.profile.points if p.table == table]
            if not addresses:
                blocks.append([_unused_block(table)])
                continue
            # One block over the whole span, so reads through unused registers succeed
            # like on a real device; a list value keeps SimData's build linear in size.
            low, size = min(addresses), max(ends) - min(addresses)
            if table in BIT_TABLES:
                blocks.append([SimData(low, values=[False] * size, datatype=DataType.BITS)])
            else:
                blocks.append([SimData(low, values=[0] * size, datatype=DataType.REGISTERS)])
        return SimDevice(
            self.spec.device_id,
            simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
            action=self.apply,
        )

    async def apply(
        self,
        function_code: int,
        start_address: int,
        _address: int,
        _count: int,
        registers: list[int],
        _set_values: list[int] | list[bool] | None,
    ) -> None:
        """SimDevice action: copy our image into the live block before pymodbus reads it."""
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        table = _TABLE_OF_FUNCTION.get(function_code)
        image = self.tables.get(table) if table else None
        if not image:
            return None
        if table in BIT_TABLES:
            # Bit blocks are packed 16 per register, bit 0 = lowest address; start_address
            # counts registers (SimDevice bit addressing: address = register * 16 + bit).
            for address, bit in image.items():
                index, mask = address // 16 - start_address, 1 << (address % 16)
                registers[index] = (registers[index] | mask) if bit else (registers[index] & ~mask)
        else:
            for address, word in image.items():
                registers[address - start_address] = int(word)
        return None


def _unused_block(table: Table) -> SimData:
    # SimDevice needs at least one entry per table; bit tables only accept BITS entries, so
    # an unused coil/discrete table reads as 16 False bits at 0 and unused register tables
    # answer ILLEGAL_ADDRESS.
    if table in BIT_TABLES:
        return SimData(0, values=[False] * 16, datatype=DataType.BITS)
    return SimData(0, datatype=DataType.INVALID)


class ModbusSimulator:
    """Serve a scenario's devices over Modbus TCP and move them through scenario time."""

    def __init__(
        self, scenario: Scenario, *, seed: int = 0, noise: bool = True, fault_seed: int = 0
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.noise = noise
        self.devices = {d.device_id: _DeviceImage(d) for d in scenario.devices}
        self.silent_units: set[int] = set()
        # The wire fault (slow, garbage, dropout) active per unit; the RTU simulator reads it.
        self.wire_faults: dict[int, FaultSpec] = {}
        self.dropped = 0  # requests a dropout fault swallowed
        self.garbled = 0  # replies a garbage fault replaced
        self._rng = random.Random(fault_seed)
        self.time: float | None = None
        self.host: str | None = None
        self.port: int | None = None
        self._server: ModbusTcpServer | None = None

    def values(self, spec: DeviceSpec, t: float) -> dict[str, float | int | bool | str]:
        """What `spec` shows at time t: the exact computation set_time uses (for tests)."""
        rng = sample_rng(self.seed, spec.id, effective_time(spec, t)) if self.noise else None
        return values_at(spec, t, rng)

    def set_time(self, t: float) -> None:
        """Write every device's registers for scenario time t."""
        silent: set[int] = set()
        wire: dict[int, FaultSpec] = {}
        for unit, image in self.devices.items():
            image.update(self.values(image.spec, t))
            if silent_at(image.spec, t):
                silent.add(unit)
            fault = wire_fault_at(image.spec, t)
            if fault is not None:
                wire[unit] = fault
            image.delay_s = fault.delay if fault is not None and fault.delay else 0.0
        self.silent_units = silent
        self.wire_faults = wire
        self.time = t

    def drops(self, unit: int) -> bool:
        """Whether a dropout fault swallows this request to `unit` (seeded draw)."""
        fault = self.wire_faults.get(unit)
        if fault is None or fault.kind != "dropout" or fault.rate is None:
            return False
        if self._rng.random() >= fault.rate:
            return False
        self.dropped += 1
        return True

    def garbage(self, unit: int, length: int) -> bytes | None:
        """Random bytes to send instead of the reply, if a garbage fault is on `unit`."""
        fault = self.wire_faults.get(unit)
        if fault is None or fault.kind != "garbage":
            return None
        self.garbled += 1
        return self._rng.randbytes(max(1, length))

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0 = any free port) and return the bound port."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        if self.time is None:
            self.set_time(0.0)
        server = ModbusTcpServer(
            [image.sim_device() for image in self.devices.values()],
            address=(host, port),
            trace_pdu=self._trace_pdu,
            trace_packet=self._trace_packet,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus reports a failed bind this way
            await server.shutdown()
            raise OSError(f"cannot listen on {host}:{port}: {exc}") from None
        self._server = server
        listener = cast(asyncio.Server, server.transport)
        self.host, self.port = host, int(listener.sockets[0].getsockname()[1])
        return self.port

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        # Requests for silent or unknown unit ids are dropped: like an RS-485 slave that is
        # off the bus, the client only ever sees a timeout.
        if not sending and (
            pdu.dev_id not in self.devices
            or pdu.dev_id in self.silent_units
            or self.drops(pdu.dev_id)
        ):
            return cast(ModbusPDU, None)
        return pdu

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        if sending and len(packet) > 6 and self.wire_faults:
            garbage = self.garbage(packet[6], len(packet))
            if garbage is not None:
                return garbage
        return packet

    async def run(self, speed: float = 1.0, loop: bool = False) -> None:
        """Advance scenario time at `speed` x real time until the end (forever if `loop`)."""
        event_loop = asyncio.get_running_loop()
        clock = ScenarioClock(self.scenario.duration, event_loop.time(), speed, loop)
        while (t := clock.at(event_loop.time())) is not None:
            self.set_time(t)
            await asyncio.sleep(TICK_SECONDS)
        self.set_time(self.scenario.duration)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()
            # Let the transports run their close callbacks before the loop may end.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)

    async def __aenter__(self) -> ModbusSimulator:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
