"""The reporting filter inside the real gateway: pymodbus simulator → GatewayDaemon → Mosquitto.

One device's reading freezes mid-run (a scenario stuck fault) and must arrive flagged; the
other reads a constant and, with report-by-exception on, must arrive only as heartbeats,
each announcing a `ut` that covers the silence until the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import aiomqtt

from cloud_bridge.mqtt import telemetry_topic
from cloud_bridge.senml import Record, decode_pack
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.scenario import Scenario
from gateway.config import GatewayConfig
from gateway.daemon import GatewayDaemon
from gateway.reporting import QUALITY_PASS, QUALITY_SUSPECT
from provisioning.configfile import parse_yaml_model

POLL_S = 0.1
HEARTBEAT_S = 1.0
STUCK_AT = 1.5

SCENARIO = f"""
name: stuck-and-constant
duration: 600
devices:
  - id: gas-1
    profile: gas-detector
    device_id: 1
    values: {{sensor_state: normal}}
    signals:
      ch4_lel: {{baseline: 0.1, noise: 0.02}}
    faults:
      - {{kind: stuck, point: ch4_lel, at: {STUCK_AT}}}
  - id: gas-2
    profile: gas-detector
    device_id: 2
    values: {{ch4_lel: 0.02, co: 3, sensor_state: normal}}
"""


def gateway_config(tmp_path, broker_url: str, port: int) -> GatewayConfig:
    def device(unit: int, reporting: dict[str, object]) -> dict[str, object]:
        return {
            "id": f"gas-{unit}",
            "profile": "gas-detector",
            "transport": {"type": "modbus-tcp", "port": port, "device_id": unit, "timeout": 0.5},
            "poll_interval": POLL_S,
            "reporting": reporting,
        }

    return GatewayConfig.model_validate(
        {
            "site": "site-rep",
            "gateway_id": "gw-rep",
            "broker": {"url": broker_url},
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "uplink": {"confirm": "puback", "status_interval_s": 1},
            "devices": [
                device(1, {"flat_line": {"enabled": True, "repeats": 5}}),
                device(2, {"rbe": True, "deadband": 0.001, "heartbeat_s": HEARTBEAT_S}),
            ],
        }
    )


async def collect(client: aiomqtt.Client, into: list[Record]) -> None:
    async for message in client.messages:
        into.extend(decode_pack(bytes(message.payload)).records)  # type: ignore[arg-type]


async def test_stuck_value_is_flagged_and_rbe_keeps_a_constant_alive(tmp_path, mosquitto) -> None:
    scenario = parse_yaml_model(SCENARIO, Scenario)
    received: list[Record] = []
    async with ModbusSimulator(scenario, seed=3) as sim:
        port = await sim.start("127.0.0.1", 0)
        daemon = GatewayDaemon(gateway_config(tmp_path, mosquitto.url, port))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="rep-sub") as client:
            await client.subscribe(telemetry_topic("site-rep", "gw-rep"), qos=1)
            listener = asyncio.create_task(collect(client, received))
            play = asyncio.create_task(sim.run())
            stop = asyncio.Event()
            gateway = asyncio.create_task(daemon.run(stop))
            try:
                await asyncio.sleep(STUCK_AT + 3.0)
            finally:
                stop.set()
                await asyncio.wait_for(gateway, 20)
                play.cancel()
                await asyncio.sleep(0.5)  # the last packs on their way from the broker
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
    assert daemon.runtime is not None and daemon.runtime.reporting is not None
    counters = daemon.runtime.reporting.counters

    stuck = sorted((r for r in received if r.name == "gas-1/ch4_lel"), key=lambda r: r.time)
    before = [r for r in stuck if r.time < stuck[0].time + STUCK_AT - 0.3]
    frozen = [r for r in stuck if r.time > stuck[0].time + STUCK_AT + 1.0]
    assert before and all(r.quality == QUALITY_PASS for r in before)
    assert frozen and all(r.quality == QUALITY_SUSPECT for r in frozen)
    assert len({r.value for r in frozen}) == 1  # the simulator really froze it
    assert counters.flagged["flat_line"] >= len(frozen)

    constant = sorted((r for r in received if r.name == "gas-2/co"), key=lambda r: r.time)
    polls = daemon.runtime.buses[0].counters["gas-2"].ok
    assert polls >= 20 and 2 <= len(constant) <= polls // 5  # heartbeats, not every poll
    gaps = [b.time - a.time for a, b in itertools.pairwise(constant)]
    assert all(g < HEARTBEAT_S + POLL_S + 0.1 for g in gaps)  # alive to central's eyes
    assert all(r.update_time == HEARTBEAT_S + POLL_S for r in constant)
    assert counters.suppressed > 0 and counters.heartbeats >= len(constant) - 1

    status = {r.quantity: r.value for r in received if r.device == "gateway"}
    assert status.get("rbe_suppressed", 0) > 0  # the counters reach central too
