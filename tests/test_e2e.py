"""End to end with real parts: pymodbus simulator → gateway → Mosquitto → central → CAP.

Everything runs in this test's event loop except Mosquitto (a real process per session, or
per test where the test kills it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aiomqtt
import httpx
import pytest

from central.cap import parse_cap
from central.config import CentralConfig
from central.service import CentralService
from cloud_bridge.mqtt import ALERTS_TOPIC, telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.scenario import load_scenario
from gateway.config import GatewayConfig
from gateway.daemon import GatewayDaemon
from tests.conftest import MosquittoProcess, free_port

pytestmark = pytest.mark.slow


def central_config(tmp_path: Path, broker_url: str, client_id: str) -> CentralConfig:
    return CentralConfig.model_validate(
        {
            "broker": {"url": broker_url},
            "storage": {"url": f"sqlite:///{tmp_path / 'central.db'}"},
            "http": {"port": 0},
            # The tests read the API without a token; writes still need one.
            "auth": {"anonymous_role": "viewer"},
            "client_id": client_id,
            "assets": [
                {
                    "id": "tunnel-a3",
                    "name": "Tunnel A3",
                    "location": {"lat": 31.82, "lon": 117.22},
                    "devices": ["gw-e2e/gas-1", "gw-e2e/gas-2"],
                }
            ],
        }
    )


def gateway_config(tmp_path: Path, broker_url: str, modbus_port: int, poll: float):
    return GatewayConfig.model_validate(
        {
            "site": "site-e2e",
            "gateway_id": "gw-e2e",
            "broker": {"url": broker_url},
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "devices": [
                {
                    "id": f"gas-{unit}",
                    "profile": "gas-detector",
                    "transport": {
                        "type": "modbus-tcp",
                        "port": modbus_port,
                        "device_id": unit,
                        "timeout": 0.5,
                    },
                    "poll_interval": poll,
                    "asset": "tunnel-a3",
                }
                for unit in (1, 2)
            ],
        }
    )


@contextlib.asynccontextmanager
async def running(coro_fn, *args):
    """Run ``coro_fn(stop, *args)`` as a task; stop it cleanly on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(coro_fn(stop, *args))
    try:
        yield task
    finally:
        stop.set()
        # A gateway drains for up to 10 s, then closes its MQTT client (which may be mid
        # reconnect after a broker restart); on a CI box running four test processes that
        # has taken over 30 s once. Slow is not lost: the assertions check the data.
        await asyncio.wait_for(task, 60)


async def wait_until(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_gas_leak_end_to_end(tmp_path, mosquitto, assert_valid_cap):
    speed = 4.0
    scenario = load_scenario("gas-leak")
    central = CentralService(central_config(tmp_path, mosquitto.url, "central-e2e-1"))
    published: list[bytes] = []

    async def watch_alerts(stop: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe(ALERTS_TOPIC, qos=1)
            watching.set()
            async for message in client.messages:
                published.append(bytes(message.payload))  # type: ignore[arg-type]

    watching = asyncio.Event()
    watcher = asyncio.create_task(watch_alerts(asyncio.Event()))
    async with ModbusSimulator(scenario, seed=1) as sim, running(central.run):
        await asyncio.wait_for(watching.wait(), 10)
        await asyncio.wait_for(central.ready.wait(), 10)
        port = await sim.start("127.0.0.1", 0)
        gateway = GatewayDaemon(gateway_config(tmp_path, mosquitto.url, port, 0.5 / speed))
        play = asyncio.create_task(sim.run(speed=speed))
        async with running(gateway.run):
            await play  # the whole scenario, then SIGTERM-equivalent stop
        base = f"http://127.0.0.1:{central.http_port}"
        async with httpx.AsyncClient(base_url=base) as http:

            async def all_stored() -> bool:
                stats = (await http.get("/api/v1/stats")).json()
                return stats["totals"]["stored"] == appended(tmp_path)

            await wait_until(all_stored, 10, "every produced reading stored")
            stats = (await http.get("/api/v1/stats")).json()
            alerts = (await http.get("/api/v1/alerts")).json()
            xml_docs = [
                (await http.get(f"/api/v1/alerts/{a['identifier']}.xml")).content for a in alerts
            ]
            missing = await http.get("/api/v1/alerts/nope.xml")
            openapi = (await http.get("/openapi.json")).json()
        await wait_until(_async_true(lambda: len(published) >= len(alerts)), 5, "CAP on MQTT")
    watcher.cancel()

    gw = stats["gateways"]["gw-e2e"]
    assert gw["duplicates"] == 0 and gw["rejected"] == {}
    assert set(gw["devices"]) == {"gas-1", "gas-2"}
    assert gw["state"] == "offline"  # clean shutdown says so on the state topic

    sequence = [(a["msgType"], a["level"]) for a in alerts]
    assert sequence[:3] == [("Alert", "yellow"), ("Update", "orange"), ("Update", "red")]
    assert sequence[-1][0] == "Cancel"
    assert all(a["asset"] == "tunnel-a3" and a["type"] == "gas_leak" for a in alerts)

    for doc in xml_docs:
        assert_valid_cap(doc)
    parsed = [parse_cap(doc) for doc in xml_docs]
    # Every follow-up references all earlier messages of the same warning.
    for i, cap in enumerate(parsed[1:], start=1):
        assert [ref[1] for ref in cap["references"]] == [p["identifier"] for p in parsed[:i]]
    assert {parse_cap(p)["identifier"] for p in published} == {p["identifier"] for p in parsed}
    assert parsed[0]["parameters"]["CN_WARNING_LEVEL"] == "YELLOW"
    assert missing.status_code == 404
    assert "/api/v1/stats" in openapi["paths"]


def _async_true(fn):
    async def predicate() -> bool:
        return bool(fn())

    return predicate


def appended(tmp_path: Path) -> int:
    from cloud_bridge.outbox import open_readonly_stats

    return open_readonly_stats(tmp_path / "outbox.db").records_appended


async def test_broker_outage_loses_nothing(tmp_path):
    """Kill the broker mid-run; the outbox buffers; after restart every reading is stored once."""
    # Persistence on, as in production: central's session (its subscription and queued
    # packs) must survive the broker's restart, or packs PUBACKed meanwhile would be dropped.
    broker = MosquittoProcess(tmp_path, persistence=True)
    broker.start()
    scenario = load_scenario("gas-leak")
    central = CentralService(central_config(tmp_path, broker.url, "central-e2e-outage"))
    try:
        async with ModbusSimulator(scenario, seed=2) as sim, running(central.run):
            await asyncio.wait_for(central.ready.wait(), 10)
            port = await sim.start("127.0.0.1", 0)
            sim_task = asyncio.create_task(sim.run(speed=2.0, loop=True))
            gateway = GatewayDaemon(gateway_config(tmp_path, broker.url, port, 0.1))
            async with running(gateway.run):
                await asyncio.wait_for(gateway.ready.wait(), 10)
                await asyncio.sleep(1.5)
                broker.stop()
                await asyncio.sleep(2.0)  # polling goes on into the outbox
                depth_while_down = gateway.runtime.outbox.depth()
                broker.start()
                await asyncio.wait_for(central.ready.wait(), 15)
                await asyncio.sleep(1.5)
            sim_task.cancel()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{central.http_port}") as h:

                async def all_stored() -> bool:
                    stats = (await h.get("/api/v1/stats")).json()
                    return stats["totals"]["stored"] == appended(tmp_path)

                await wait_until(all_stored, 20, "backlog drained into central")
                stats = (await h.get("/api/v1/stats")).json()
    finally:
        broker.stop()
    assert depth_while_down > 5, "the outbox should have buffered while the broker was down"
    totals = stats["totals"]
    assert totals["stored"] == appended(tmp_path) == totals["readings_rows"]


async def test_duplicates_and_bad_input_are_counted_not_fatal(tmp_path, mosquitto):
    central = CentralService(central_config(tmp_path, mosquitto.url, "central-e2e-bad"))
    topic = telemetry_topic("site-x", "gw-x")
    now = time.time()
    good = Pack(
        "gw-x",
        3,
        7,
        (
            Record("gas-9/ch4_lel", now, 0.03, "/", 1.0, 1),
            Record("gas-9/co", now, 1.5, "ppm", 1.0, 1),
        ),
    )
    bad_payloads = {
        "malformed": b"\x00\xffnot senml",
        "time_in_ms": json.dumps(
            [
                {
                    "bn": "urn:dev:sentryline:gw-x:",
                    "gw": "gw-x",
                    "ep": 1,
                    "sq": 1,
                    "n": "gas-9/co",
                    "v": 1.0,
                    "t": now * 1000,
                }
            ]
        ).encode(),
        "must_understand": json.dumps(
            [
                {
                    "bn": "urn:dev:sentryline:gw-x:",
                    "gw": "gw-x",
                    "ep": 1,
                    "sq": 2,
                    "n": "gas-9/co",
                    "v": 1.0,
                    "t": now,
                    "crit_": 1,
                }
            ]
        ).encode(),
        "missing_field": json.dumps([{"n": "gas-9/co", "v": 1.0, "t": now}]).encode(),
        "wrong_type": json.dumps(
            [
                {
                    "bn": "urn:dev:sentryline:gw-x:",
                    "gw": "gw-x",
                    "ep": "one",
                    "sq": 3,
                    "n": "gas-9/co",
                    "v": 1.0,
                    "t": now,
                }
            ]
        ).encode(),
        "gateway_mismatch": encode_pack(Pack("gw-y", 1, 1, good.records)),
    }
    async with running(central.run):
        await asyncio.wait_for(central.ready.wait(), 10)
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            for payload in bad_payloads.values():
                await client.publish(topic, payload, qos=1)
            for _ in range(3):  # the same pack three times: stored once
                await client.publish(topic, encode_pack(good), qos=1)
            await client.publish(topic, encode_pack(good, "cbor"), qos=1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{central.http_port}") as h:

            async def settled() -> bool:
                gw = (await h.get("/api/v1/stats")).json()["gateways"].get("gw-x", {})
                return gw.get("duplicates") == 6 and len(gw.get("rejected", {})) == 6

            await wait_until(settled, 10, "all messages counted")
            gw = (await h.get("/api/v1/stats")).json()["gateways"]["gw-x"]
    assert gw["rejected"] == {reason: 1 for reason in bad_payloads}
    assert gw["stored"] == 2 and gw["duplicates"] == 6
    assert gw["devices"]["gas-9"] == {
        "received": 8,
        "stored": 2,
        "duplicates": 6,
        "last_time": pytest.approx(now),
    }


async def test_http_port_in_use_fails_clearly(tmp_path, mosquitto):
    port = free_port()
    cfg = central_config(tmp_path, mosquitto.url, "central-e2e-port")
    cfg.http.port = port
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        service = CentralService(cfg)
        with pytest.raises(ExceptionGroup) as caught:
            await asyncio.wait_for(service.run(asyncio.Event()), 10)
    assert caught.group_contains(RuntimeError, match=f"cannot listen on 127.0.0.1:{port}")


async def test_rtu_bus_with_a_dead_slave_end_to_end(tmp_path, mosquitto):
    """Two detectors and one dead unit on one RS-485 line (a real pty): the leak is still
    warned about, the dead slave is backed off and reported, nothing is lost."""
    from drivers.serial import SerialSettings
    from drivers.sim.rtu_sim import RtuSimulator

    speed = 4.0
    scenario = load_scenario("gas-leak")
    central = CentralService(central_config(tmp_path, mosquitto.url, "central-e2e-rtu"))
    sim = RtuSimulator(scenario, seed=4, line=SerialSettings(115200, "N", 2))
    path = sim.start()
    try:
        cfg = gateway_config(tmp_path, mosquitto.url, 1, 0.5 / speed).model_dump()
        rtu = {
            "type": "modbus-rtu",
            "port": path,
            "baudrate": 115200,
            "parity": "N",
            "stopbits": 2,
            "timeout": 0.2,
        }
        for device in cfg["devices"]:
            device["transport"] = rtu | {"device_id": device["transport"]["device_id"]}
        cfg["devices"].append(
            cfg["devices"][0] | {"id": "gas-dead", "transport": rtu | {"device_id": 9}}
        )
        cfg["uplink"]["status_interval_s"] = 1
        gateway = GatewayDaemon(GatewayConfig.model_validate(cfg))
        async with running(central.run):
            await asyncio.wait_for(central.ready.wait(), 10)
            play = asyncio.create_task(sim.run(speed=speed))
            async with running(gateway.run):
                await play
                counters = {n: c for b in gateway.runtime.buses for n, c in b.counters.items()}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{central.http_port}") as h:

                async def all_stored() -> bool:
                    stats = (await h.get("/api/v1/stats")).json()
                    return stats["totals"]["stored"] == appended(tmp_path)

                await wait_until(all_stored, 15, "every produced reading stored")
                alerts = (await h.get("/api/v1/alerts")).json()
                stats = (await h.get("/api/v1/stats")).json()
    finally:
        sim.stop()
    sequence = [(a["msgType"], a["level"]) for a in alerts]
    assert sequence[:3] == [("Alert", "yellow"), ("Update", "orange"), ("Update", "red")]
    assert counters["gas-dead"].degraded and counters["gas-dead"].ok == 0
    assert counters["gas-dead"].timeouts >= 1
    # Each probe of the dead unit holds the line for one timeout (0.2 s, longer than the
    # healthy devices' 0.125 s interval): a few ticks are lost to it, never the schedule.
    healthy = counters["gas-1"]
    assert healthy.ok > 30 and healthy.skipped_ticks <= 0.15 * healthy.polls
    devices = stats["gateways"]["gw-e2e"]["devices"]
    assert {"gas-1", "gas-2", "gateway"} <= set(devices) and "gas-dead" not in devices
    status = stats["gateways"]["gw-e2e"]["status"]  # the gateway's own status records
    from gateway.clock import kernel_clock_synced

    assert status["devices_degraded"] == 1
    assert status["clock_synced"] is (kernel_clock_synced() is not False)  # this host's truth
    assert status["outbox_depth"] >= 0 and status["records_evicted"] == 0


async def test_an_attached_edge_model_runs_in_the_gateway(tmp_path, mosquitto):
    """A device with a model attachment: inference runs beside polling and its records reach
    central like any reading. (The lift model is fed a gas detector's channels here: this
    tests the wiring, not the model, which tests/test_edge_*.py cover.)"""
    scenario = load_scenario("gas-leak")
    central = CentralService(central_config(tmp_path, mosquitto.url, "central-e2e-edge"))
    async with ModbusSimulator(scenario, seed=5) as sim, running(central.run):
        await asyncio.wait_for(central.ready.wait(), 10)
        port = await sim.start("127.0.0.1", 0)
        cfg = gateway_config(tmp_path, mosquitto.url, port, 0.02).model_dump()
        cfg["devices"][0]["model"] = {
            "model": "elevator",
            "inputs": {"acc_x": "co", "acc_y": "h2s", "acc_z": "o2", "speed": "ch4_lel"},
            "report_every": 0.5,
        }
        gateway = GatewayDaemon(GatewayConfig.model_validate(cfg))
        async with running(gateway.run):

            def inferred() -> int:
                return central.store.db.execute(
                    "SELECT COUNT(*) FROM readings WHERE device = 'gas-1'"
                    " AND quantity = 'vib_anomaly'"
                ).fetchone()[0]

            await wait_until(_async_true(lambda: inferred() >= 2), 20, "model output stored")
            polls = {n: c.ok for b in gateway.runtime.buses for n, c in b.counters.items()}
            backend = gateway.runtime.stages[0].backend
        classes = central.store.db.execute(
            "SELECT DISTINCT vs FROM readings WHERE device = 'gas-1' AND quantity = 'ride_class'"
        ).fetchall()
    assert polls["gas-1"] > 50 and polls["gas-2"] > 50  # polling never waited for inference
    assert backend  # the stage says what it runs on (XNNPACK here)
    assert classes and all(c[0] for c in classes)
