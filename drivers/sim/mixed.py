"""One scenario clock for simulated devices of every transport (``sentryline sim run``).

A :class:`~drivers.sim.source_scenario.SimScenario` may list Modbus TCP devices (one
pymodbus server), Modbus RTU devices (one RTU line on a pty), CoAP devices (an aiocoap
server per device, each on its own UDP port, as real nodes are separate hosts) and
serial-line devices (a pty each). :class:`MixedSimulator` starts them all, then moves them
through scenario time together: every tick sets the time everywhere, and CoAP observers
and serial lines get a report every device ``interval``.

BLE devices cannot be reached from another process (there is no radio to put the
advertisements on), so a standalone run lists them as skipped; in-process users (tests, a
gateway in the same process) take ``ble_source`` and feed it to their scanner.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from drivers.serial import SerialSettings
from drivers.sim.ble_sim import BthomeAdvertiser, SimulatedAdvertisementSource
from drivers.sim.coap_sim import ScenarioCoapDevice
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.rtu_sim import RtuFault, RtuSimulator
from drivers.sim.scenario import ScenarioClock, wire_fault_at
from drivers.sim.serial_sim import ScenarioLineSimulator
from drivers.sim.source_scenario import SimScenario

__all__ = ["DEFAULT_RTU_LINE", "MixedSimulator"]

# 8N2 has the 11-bit character of 8E1 (ptys refuse parity settings).
DEFAULT_RTU_LINE = SerialSettings(19200, "N", 2)
TICK_S = 0.05


@dataclass
class _Due:
    device_id: str
    interval: float
    next_at: float = 0.0


class MixedSimulator:
    def __init__(
        self,
        scenario: SimScenario,
        *,
        seed: int = 0,
        rtu_line: SerialSettings = DEFAULT_RTU_LINE,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        tcp, rtu = scenario.tcp, scenario.rtu
        self.tcp = ModbusSimulator(tcp, seed=seed) if tcp is not None else None
        self.rtu = RtuSimulator(rtu, seed=seed, line=rtu_line) if rtu is not None else None
        self.rtu_line = rtu_line
        sources = scenario.sources
        self.coap = {
            d.id: ScenarioCoapDevice(d, seed=seed) for d in sources if d.transport == "coap"
        }
        serial = [d for d in sources if d.transport == "serial-line"]
        self.serial = ScenarioLineSimulator(serial, seed=seed) if serial else None
        ble = [d for d in sources if d.transport == "ble-bthome"]
        self.ble_source = SimulatedAdvertisementSource()
        self.ble = {d.id: BthomeAdvertiser(d, seed=seed) for d in ble}
        self.skipped = [
            d.id for d in sources if d.transport not in ("coap", "serial-line", "ble-bthome")
        ]
        self.time: float | None = None
        self._reports = [_Due(d.id, d.interval) for d in sources]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> dict[str, Any]:
        """Bind and open everything; returns where each part can be reached."""
        where: dict[str, Any] = {}
        try:
            if self.tcp is not None:
                where["port"] = await self.tcp.start(host, port)
            if self.rtu is not None:
                where["rtu_path"] = self.rtu.start()
            for sim in self.coap.values():
                await sim.start(host, 0)
            if self.serial is not None:
                self.serial.open()
        except BaseException:
            await self.stop()
            raise
        self.set_time(0.0)
        return where

    def set_time(self, t: float) -> None:
        self.time = t
        if self.tcp is not None:
            self.tcp.set_time(t)
        if self.rtu is not None:
            self.rtu.set_time(t)
            for device in self.rtu.model.scenario.devices:
                fault = wire_fault_at(device, t)
                if fault is None:
                    self.rtu.faults.pop(device.device_id, None)
                elif fault.kind == "slow" and fault.delay is not None:
                    self.rtu.faults[device.device_id] = RtuFault("slow", delay_s=fault.delay)
                else:
                    self.rtu.faults[device.device_id] = RtuFault("garbage")
        for sim in self.coap.values():
            sim.set_time(t)

    async def report(self, elapsed: float, t: float) -> None:
        """Devices whose interval has come round send: notifications, lines, adverts."""
        serial_due: set[str] = set()
        for due in self._reports:
            if elapsed < due.next_at:
                continue
            due.next_at = elapsed + due.interval
            if due.device_id in self.coap:
                sim = self.coap[due.device_id]
                if sim.profile.mode == "observe":
                    sim.notify()
            elif due.device_id in self.ble:
                adv = self.ble[due.device_id].advertisement(t, time.time())
                if adv is not None:
                    self.ble_source.publish(adv)
            else:
                serial_due.add(due.device_id)
        if self.serial is not None and serial_due:
            await self.serial.report(t, serial_due)

    async def run(self, speed: float = 1.0, loop: bool = False) -> None:
        """Advance every device through the scenario at `speed` x real time."""
        event_loop = asyncio.get_running_loop()
        clock = ScenarioClock(self.scenario.duration, event_loop.time(), speed, loop)
        for due in self._reports:
            due.next_at = 0.0
        while True:
            now = event_loop.time()
            t = clock.at(now)
            if t is None:
                break
            self.set_time(t)
            await self.report((now - clock.start) * speed, t)
            await asyncio.sleep(TICK_S)
        self.set_time(self.scenario.duration)

    async def stop(self) -> None:
        if self.tcp is not None:
            await self.tcp.stop()
        if self.rtu is not None:
            self.rtu.stop()
        for sim in self.coap.values():
            await sim.stop()
        if self.serial is not None:
            self.serial.close()

    def endpoints(self, host: str, where: dict[str, Any]) -> dict[str, Any]:
        """The parts of the "ready" line beyond the Modbus TCP port."""
        out: dict[str, Any] = {}
        if self.rtu is not None:
            line = self.rtu_line
            out["modbus_rtu"] = {
                "path": where["rtu_path"],
                "baudrate": line.baudrate,
                "parity": line.parity,
                "stopbits": line.stopbits,
                "devices": {d.id: d.device_id for d in self.scenario.rtu_devices},
            }
        if self.coap:
            out["coap"] = {device_id: sim.uri for device_id, sim in self.coap.items()}
        if self.serial is not None:
            out["serial"] = {
                device_id: {"path": path, **_line(self.serial, device_id)}
                for device_id, path in self.serial.paths.items()
            }
        if self.ble:
            out["ble"] = {device_id: adv.device.address for device_id, adv in self.ble.items()}
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def _line(sim: ScenarioLineSimulator, device_id: str) -> dict[str, Any]:
    settings = sim.settings(device_id)
    return {"baudrate": settings.baudrate, "parity": "N", "stopbits": settings.stopbits}
