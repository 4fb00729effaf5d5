"""`sentryline demo`: the whole data path on one machine, with real processes.

broker (Mosquitto, else embedded amqtt) · central service · Modbus simulator playing the
gas-leak scenario · gateway daemon — each its own process on loopback, all stopped at the end.

``--scenario five-families`` plays a scenario that mixes transports (Modbus TCP and RTU,
serial line, CoAP: ``sentryline sim run`` serves them all and says where in its ready line);
the gateway reads every family, the thermal camera through the thermal model and the lift
through the elevator model, and the summary shows per family what central stored and the
model events central received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console

from central.cap import parse_cap
from cloud_bridge.mqtt import ALERTS_TOPIC, BrokerSettings, ClientOptions, make_client
from cloud_bridge.outbox import open_readonly_stats
from drivers.sim.scenario import load_scenario
from drivers.sim.source_scenario import SimScenario, load_sim_scenario
from provisioning.localnet import (
    Mosquitto,
    free_port,
    mosquitto_binary,
    stop_process,
    wait_for_port,
)

LEVEL_STYLE = {
    "blue": "bold blue",
    "yellow": "bold yellow",
    "orange": "bold dark_orange",
    "red": "bold red",
}
DEMO_SITE = "demo-site"
DEMO_GATEWAY = "gw-demo"


@dataclass
class Processes:
    """Every process the demo starts, stopped (by PID, SIGTERM then SIGKILL) at the end."""

    workdir: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        kwargs.setdefault("stdout", log)
        proc = subprocess.Popen(argv, stderr=log, stdin=subprocess.DEVNULL, **kwargs)
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
        return stop_process(proc, signal.SIGTERM, timeout) or 0

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            self.stop(proc, 5.0)

    def check_alive(self) -> None:
        for name, proc in self.started:
            if proc.poll() is not None:
                log = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "provisioning.cli", *args]


def start_broker(procs: Processes, console: Console, choice: str) -> tuple[str, str]:
    """(broker url, protocol). Mosquitto when installed; else an embedded amqtt (MQTT 3.1.1)."""
    binary = mosquitto_binary()
    if choice == "mosquitto" and not binary:
        raise RuntimeError("Mosquitto is not installed (apt-get install mosquitto)")
    if binary and choice != "amqtt":
        broker = Mosquitto(procs.workdir)
        broker.start()
        procs.started.append(("mosquitto", broker.proc))  # type: ignore[arg-type]
        console.print(f"broker: Mosquitto ({binary}) on 127.0.0.1:{broker.port}")
        return broker.url, "5"
    port = free_port()
    try:
        import amqtt  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "no MQTT broker: install Mosquitto (apt-get install mosquitto) or `pip install amqtt`"
        ) from None
    conf = procs.workdir / "amqtt.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
    )
    procs.start("amqtt", [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)])
    # MQTT 3.1.1 has no content-type property: central sniffs JSON vs CBOR from the bytes.
    wait_for_port(port, 15)
    console.print(f"broker: embedded amqtt on 127.0.0.1:{port} (MQTT 3.1.1: no content type)")
    return f"mqtt://127.0.0.1:{port}", "3.1.1"


def _central_config(
    workdir: Path, broker_url: str, protocol: str, http_port: int, assets: list[dict[str, Any]]
) -> dict[str, Any]:
    """The demo's central: SQLite in the working directory, loopback HTTP, these assets."""
    return {
        "broker": {"url": broker_url, "protocol": protocol},
        "storage": {"url": f"sqlite:///{workdir / 'central.db'}"},
        "http": {"host": "127.0.0.1", "port": http_port},
        "cap": {"sender": "sentryline-demo@localhost", "identifier_prefix": "demo"},
        "auth": {"anonymous_role": "viewer"},  # the demo's console reads without a token
        "assets": assets,
    }


def _http_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def _http_bytes(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read()


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _wait_http(port: int, timeout: float, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        with contextlib.suppress(OSError):
            _http_json(port, "/healthz")
            return
        time.sleep(0.1)
    raise RuntimeError(f"central did not answer on port {port} within {timeout:.0f}s")


async def _watch_alerts(
    broker: BrokerSettings, console: Console, seen: list[dict], ready: asyncio.Event
) -> None:
    """Show each CAP message as central publishes it."""
    async with make_client(broker, ClientOptions(identifier="sl-demo-watch")) as client:
        await client.subscribe(ALERTS_TOPIC, qos=1)
        ready.set()
        async for message in client.messages:
            cap = parse_cap(bytes(message.payload))  # type: ignore[arg-type]
            seen.append(cap)
            level = cap["level"]
            console.print(
                f"  CAP {cap['msgType']:<6} [{LEVEL_STYLE[level]}]{level.upper():<6}[/] "
                f"{cap['event']} — {cap['identifier']}"
            )


async def _play(
    procs: Processes,
    console: Console,
    *,
    central_port: int,
    play_seconds: float,
    gateway_cmd: list[str] | Callable[[dict[str, Any]], list[str]],
    sim_cmd: list[str],
) -> subprocess.Popen[bytes]:
    """Start simulator and gateway, report progress for ``play_seconds``; return the gateway.

    `gateway_cmd` may be a function of the simulator's ready line (ports, ptys, URIs)."""
    sim = procs.start("simulator", sim_cmd, stdout=subprocess.PIPE)
    line = await asyncio.to_thread(sim.stdout.readline)  # type: ignore[union-attr]
    if not line:
        procs.check_alive()
        raise RuntimeError("simulator exited before it was ready")
    ready = json.loads(line)
    transports = ", ".join(
        name
        for key, name in (
            ("port", "Modbus TCP"),
            ("modbus_rtu", "Modbus RTU"),
            ("serial", "serial line"),
            ("coap", "CoAP"),
        )
        if ready.get(key)
    )
    console.print(f"simulator: {ready['devices']} ({transports})")
    if callable(gateway_cmd):
        gateway_cmd = gateway_cmd(ready)
    gateway = procs.start("gateway", gateway_cmd)
    started = time.monotonic()
    next_report = started
    while (elapsed := time.monotonic() - started) < play_seconds:
        procs.check_alive()
        if time.monotonic() >= next_report:
            stats = await asyncio.to_thread(_http_json, central_port, "/api/v1/stats")
            console.print(
                f"[dim]t={elapsed:5.1f}s  readings stored at central: "
                f"{stats['totals']['stored']}[/dim]"
            )
            next_report += 5
        await asyncio.sleep(0.2)
    return gateway


def demo(
    duration: float | None = typer.Option(
        None, help="seconds to play (default: the scenario's length at this speed)"
    ),
    out: Path | None = typer.Option(None, "--out", help="write each CAP message to DIR"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON summary on stdout"),
    speed: float = typer.Option(1.0, min=0.25, max=10, help="scenario time per wall second"),
    scenario: str = typer.Option(
        "gas-leak",
        help="scenario name or file; five-families mixes Modbus, serial, CoAP and edge models",
    ),
    keep: bool = typer.Option(False, help="keep the temporary working directory"),
    broker: str = typer.Option(
        "auto", help="auto (Mosquitto if installed, else amqtt), mosquitto or amqtt"
    ),
) -> None:
    """Run broker, central, simulator and gateway; play a gas leak; show the CAP warnings."""
    console = Console(stderr=as_json)
    workdir = Path(tempfile.mkdtemp(prefix="sentryline-demo-"))
    procs = Processes(workdir)
    try:
        if broker not in ("auto", "mosquitto", "amqtt"):
            raise RuntimeError(f"--broker must be auto, mosquitto or amqtt, not {broker!r}")
        summary = asyncio.run(_demo(procs, console, duration, out, speed, scenario, broker))
    except RuntimeError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        procs.stop_all()
        if keep:
            console.print(f"working directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if as_json:
        typer.echo(json.dumps(summary))


async def _demo(
    procs: Processes,
    console: Console,
    duration: float | None,
    out: Path | None,
    speed: float,
    scenario_name: str,
    broker_choice: str,
) -> dict[str, Any]:
    workdir = procs.workdir
    mixed = load_sim_scenario(scenario_name)
    if mixed.rtu_devices or mixed.sources:
        return await _demo_mixed(
            procs, console, duration, out, speed, scenario_name, broker_choice, mixed
        )
    scenario = load_scenario(scenario_name)
    broker_url, protocol = start_broker(procs, console, broker_choice)
    broker = BrokerSettings(url=broker_url, protocol=protocol)  # type: ignore[arg-type]
    central_port = free_port()
    sim_port = free_port()
    central_cfg = _central_config(
        workdir,
        broker_url,
        protocol,
        central_port,
        [
            {
                "id": "pipe-gallery-a3",
                "name": "Pipe gallery A, section 3",
                "type": "utility-tunnel",
                "location": {"lat": 31.8206, "lon": 117.2272},
                "devices": [f"{DEMO_GATEWAY}/{d.id}" for d in scenario.devices],
            }
        ],
    )
    poll = round(0.5 / speed, 4)
    gateway_cfg = {
        "site": DEMO_SITE,
        "gateway_id": DEMO_GATEWAY,
        "broker": {"url": broker_url, "protocol": protocol},
        "outbox": {"path": str(workdir / "outbox.db")},
        "devices": [
            {
                "id": d.id,
                "profile": d.profile,
                "transport": {
                    "type": "modbus-tcp",
                    "host": "127.0.0.1",
                    "port": sim_port,
                    "device_id": d.device_id,
                    "timeout": 0.5,
                },
                "poll_interval": poll,
                "asset": "pipe-gallery-a3",
            }
            for d in scenario.devices
        ],
    }
    (workdir / "central.yaml").write_text(yaml.safe_dump(central_cfg, sort_keys=False))
    (workdir / "gateway.yaml").write_text(yaml.safe_dump(gateway_cfg, sort_keys=False))

    procs.start("central", _cli("central", "run", "--config", str(workdir / "central.yaml")))
    _wait_http(central_port, 20, procs)
    console.print(f"central: http://127.0.0.1:{central_port}/api/v1/alerts")
    play_seconds = duration if duration is not None else scenario.duration / speed + 1.0
    console.print(
        f"playing scenario '{scenario.name}' for {play_seconds:.0f}s "
        f"(speed ×{speed}, polling every {poll}s)"
    )
    seen: list[dict] = []
    watching = asyncio.Event()
    watcher = asyncio.create_task(_watch_alerts(broker, console, seen, watching))
    await asyncio.wait_for(watching.wait(), 10)
    gateway = await _play(
        procs,
        console,
        central_port=central_port,
        play_seconds=play_seconds,
        gateway_cmd=_cli("gateway", "run", "--config", str(workdir / "gateway.yaml")),
        sim_cmd=_cli(
            "sim", "run", scenario_name, "--port", str(sim_port), "--speed", str(speed), "--loop"
        ),
    )
    # SIGTERM: the gateway stops polling, seals its last pack and drains the outbox.
    code = procs.stop(gateway, 30)
    if code != 0:
        raise RuntimeError(f"gateway exited with {code}; see {workdir / 'gateway.log'}")
    outbox = open_readonly_stats(workdir / "outbox.db")
    produced = outbox.records_appended
    stats: dict[str, Any] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = await asyncio.to_thread(_http_json, central_port, "/api/v1/stats")
        if stats["totals"]["stored"] >= produced:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # let the last CAP message reach the watcher
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await watcher

    alerts = await asyncio.to_thread(_http_json, central_port, "/api/v1/alerts")
    if out is not None:
        for alert in alerts:
            xml = await asyncio.to_thread(
                _http_bytes, central_port, f"/api/v1/alerts/{alert['identifier']}.xml"
            )
            await asyncio.to_thread(_write_file, out / f"{alert['identifier']}.xml", xml)
    totals = stats.get("totals", {})
    summary = {
        "readings": {
            "produced": produced,
            "stored": totals.get("stored", 0),
            "duplicates": totals.get("duplicates", 0),
        },
        "alerts": [
            {"identifier": a["identifier"], "msgType": a["msgType"], "level": a["level"]}
            for a in alerts
        ],
    }
    ok = summary["readings"]["produced"] == summary["readings"]["stored"]
    console.print(
        f"readings: produced {produced}, stored {totals.get('stored', 0)}, "
        f"duplicates dropped {totals.get('duplicates', 0)} — "
        + ("[green]nothing lost[/green]" if ok else "[red]MISMATCH[/red]")
    )
    console.print(
        "warnings: " + " → ".join(f"{a['msgType']}({a['level']})" for a in summary["alerts"])
    )
    if out is not None:
        console.print(f"CAP files written to {out}")
    if os.environ.get("SENTRYLINE_DEMO_STRICT") and not ok:
        raise RuntimeError("produced != stored")
    return summary


# --- a scenario of every transport (five-families) ---------------------------------------------

# Central's rule set (asset type) per driver family; rain gauges have their own.
_ASSET_TYPES = {
    "gas": "utility-tunnel",
    "water": "water-level",
    "elevator": "elevator",
    "displacement": "displacement",
    "thermal": "thermal",
}
# Asset metadata the rules need: the retaining wall's design control values (the scenario's
# crack opens 0.45 -> 1.9 mm, the wall tilts 0.0002 -> 0.004 rad and moves 18 mm east; the
# rule wants two series to agree, k-of-n, before it warns).
_ASSET_META: dict[str, dict[str, Any]] = {
    "displacement": {"control_values": {"crack": 2.0, "tilt_x": 0.005, "gnss_e": 0.02}},
}
# Edge models the gateway attaches by family: the lift model needs 50 Hz acceleration.
_MODELS: dict[str, tuple[dict[str, Any], float | None]] = {
    "thermal": ({"model": "thermal", "report_every": 2.0}, None),
    "elevator": ({"model": "elevator", "report_every": 2.0}, 0.02),
}


def _families(scenario: SimScenario) -> dict[str, tuple[str, str]]:
    """device id -> (family, driver) for every device of the scenario."""
    from drivers.registry import load_source_profile

    out: dict[str, tuple[str, str]] = {}
    for spec in [*scenario.devices, *scenario.rtu_devices, *scenario.sources]:
        family = load_source_profile(spec.profile).family
        if spec.profile == "rain-gauge":
            family = "rain"
        out[spec.id] = (family, spec.profile)
    return out


def _mixed_gateway_config(
    scenario: SimScenario,
    families: dict[str, tuple[str, str]],
    ready: dict[str, Any],
    broker_url: str,
    protocol: str,
    outbox: Path,
    poll: float,
) -> dict[str, Any]:
    """The gateway's config for what the simulator says it serves where."""
    devices: list[dict[str, Any]] = []

    def add(device_id: str, transport: dict[str, Any], polled: bool) -> None:
        family, driver = families[device_id]
        doc: dict[str, Any] = {"id": device_id, "profile": driver, "transport": transport}
        model, rate = _MODELS.get(family, (None, None))
        if polled or (rate is not None):
            doc["poll_interval"] = rate if rate is not None else poll
        if model is not None:
            doc["model"] = model
        doc["asset"] = f"asset-{device_id}"
        devices.append(doc)

    for spec in scenario.devices:
        tcp = {"type": "modbus-tcp", "port": ready["port"], "device_id": spec.device_id}
        add(spec.id, tcp | {"timeout": 0.5}, True)
    rtu = ready.get("modbus_rtu") or {}
    for device_id, unit in rtu.get("devices", {}).items():
        line = {k: rtu[k] for k in ("baudrate", "parity", "stopbits")}
        add(device_id, {"type": "modbus-rtu", "port": rtu["path"], "device_id": unit} | line, True)
    for device_id, where in (ready.get("serial") or {}).items():
        line = {k: where[k] for k in ("baudrate", "parity", "stopbits") if k in where}
        add(device_id, {"type": "serial-line", "port": where["path"]} | line, False)
    for device_id, uri in (ready.get("coap") or {}).items():
        polled = load_source_profile_mode(families[device_id][1]) == "poll"
        add(device_id, {"type": "coap", "uri": uri, "timeout": 2.0}, polled)
    return {
        "site": DEMO_SITE,
        "gateway_id": DEMO_GATEWAY,
        "broker": {"url": broker_url, "protocol": protocol},
        "outbox": {"path": str(outbox)},
        "uplink": {"status_interval_s": 5},
        "devices": devices,
    }


def load_source_profile_mode(driver: str) -> str:
    from drivers.registry import load_source_profile

    return str(getattr(load_source_profile(driver), "mode", "poll"))


def _central_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read central's SQLite file (read-only, beside the running service)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        return conn.execute(sql).fetchall()


async def _demo_mixed(
    procs: Processes,
    console: Console,
    duration: float | None,
    out: Path | None,
    speed: float,
    scenario_name: str,
    broker_choice: str,
    scenario: SimScenario,
) -> dict[str, Any]:
    workdir = procs.workdir
    families = _families(scenario)
    broker_url, protocol = start_broker(procs, console, broker_choice)
    broker = BrokerSettings(url=broker_url, protocol=protocol)  # type: ignore[arg-type]
    central_port = free_port()
    central_cfg = _central_config(
        workdir,
        broker_url,
        protocol,
        central_port,
        [
            {
                "id": f"asset-{device_id}",
                "name": f"{family} ({device_id})",
                "type": "rain-gauge" if family == "rain" else _ASSET_TYPES.get(family, "generic"),
                "location": {"lat": 31.8206, "lon": 117.2272},
                "meta": _ASSET_META.get(family, {}),
                "devices": [f"{DEMO_GATEWAY}/{device_id}"],
            }
            for device_id, (family, _) in families.items()
        ],
    )
    (workdir / "central.yaml").write_text(yaml.safe_dump(central_cfg, sort_keys=False))
    poll = round(0.5 / speed, 4)

    def gateway_cmd(ready: dict[str, Any]) -> list[str]:
        cfg = _mixed_gateway_config(
            scenario, families, ready, broker_url, protocol, workdir / "outbox.db", poll
        )
        (workdir / "gateway.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        return _cli("gateway", "run", "--config", str(workdir / "gateway.yaml"))

    procs.start("central", _cli("central", "run", "--config", str(workdir / "central.yaml")))
    _wait_http(central_port, 20, procs)
    console.print(f"central: http://127.0.0.1:{central_port}/api/v1/alerts")
    play_seconds = duration if duration is not None else scenario.duration / speed + 1.0
    console.print(
        f"playing scenario '{scenario.name}' for {play_seconds:.0f}s (speed ×{speed}): "
        + ", ".join(sorted({f for f, _ in families.values()}))
    )
    seen: list[dict] = []
    watching = asyncio.Event()
    watcher = asyncio.create_task(_watch_alerts(broker, console, seen, watching))
    await asyncio.wait_for(watching.wait(), 10)
    gateway = await _play(
        procs,
        console,
        central_port=central_port,
        play_seconds=play_seconds,
        gateway_cmd=gateway_cmd,
        sim_cmd=_cli("sim", "run", scenario_name, "--port", "0", "--speed", str(speed), "--loop"),
    )
    code = procs.stop(gateway, 30)
    if code != 0:
        raise RuntimeError(f"gateway exited with {code}; see {workdir / 'gateway.log'}")
    produced = open_readonly_stats(workdir / "outbox.db").records_appended
    stats: dict[str, Any] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = await asyncio.to_thread(_http_json, central_port, "/api/v1/stats")
        if stats["totals"]["stored"] >= produced:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await watcher
    alerts = await asyncio.to_thread(_http_json, central_port, "/api/v1/alerts")
    if out is not None:
        for alert in alerts:
            xml = await asyncio.to_thread(
                _http_bytes, central_port, f"/api/v1/alerts/{alert['identifier']}.xml"
            )
            await asyncio.to_thread(_write_file, out / f"{alert['identifier']}.xml", xml)

    per_device = stats.get("gateways", {}).get(DEMO_GATEWAY, {}).get("devices", {})
    by_family: dict[str, dict[str, int]] = {}
    for device_id, (family, _) in sorted(families.items()):
        stored = int(per_device.get(device_id, {}).get("stored", 0))
        by_family.setdefault(family, {})[device_id] = stored
    rows = await asyncio.to_thread(
        _central_rows,
        workdir / "central.db",
        "SELECT e.device, e.vs, m.vs, e.t FROM readings e LEFT JOIN readings m"
        " ON m.gateway = e.gateway AND m.device = e.device AND m.t = e.t"
        " AND m.quantity = 'event_model'"
        f" WHERE e.gateway = '{DEMO_GATEWAY}' AND e.quantity = 'event' ORDER BY e.t",
    )
    events = [{"device": d, "event": e, "model": m, "t": t} for d, e, m, t in rows]
    # How close each model came to an alarm: an event's absence reads differently at 0.05
    # than at 0.45.
    scores = await asyncio.to_thread(
        _central_rows,
        workdir / "central.db",
        "SELECT device, quantity, MAX(v), COUNT(*) FROM readings"
        f" WHERE gateway = '{DEMO_GATEWAY}'"
        " AND quantity IN ('vib_anomaly', 'fire_prob', 'hotspot_prob') GROUP BY device, quantity",
    )
    models: dict[str, dict[str, Any]] = {}
    for device_id, quantity, top, n in scores:
        entry = models.setdefault(device_id, {"results": 0, "events": 0})
        entry[f"max_{quantity}"] = top
        entry["results"] = max(entry["results"], n)
    for event in events:
        models.setdefault(event["device"], {"results": 0, "events": 0})["events"] += 1
    totals = stats.get("totals", {})
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "readings": {
            "produced": produced,
            "stored": totals.get("stored", 0),
            "duplicates": totals.get("duplicates", 0),
        },
        "families": by_family,
        "model_events": events,
        "models": models,
        "alerts": [
            {
                "identifier": a["identifier"],
                "msgType": a["msgType"],
                "level": a["level"],
                "asset": a.get("asset"),
            }
            for a in alerts
        ],
    }
    ok = produced == totals.get("stored", 0)
    for family, devices in by_family.items():
        listed = ", ".join(f"{d} {n}" for d, n in devices.items())
        console.print(f"  {family:<12} stored at central: {listed}")
    for event in events:
        console.print(
            f"  model event at central: {event['device']} {event['event']} ({event['model']})"
        )
    for device_id, entry in sorted(models.items()):
        figures = ", ".join(f"{k} {v:.2f}" for k, v in entry.items() if k.startswith("max_"))
        console.print(
            f"  model on {device_id}: {entry['events']} event(s), {entry['results']} result(s)"
            f" reported ({figures})"
        )
    console.print(
        f"readings: produced {produced}, stored {totals.get('stored', 0)}, "
        f"duplicates dropped {totals.get('duplicates', 0)} — "
        + ("[green]nothing lost[/green]" if ok else "[red]MISMATCH[/red]")
    )
    console.print(
        "warnings: "
        + " · ".join(f"{a['asset']} {a['msgType']}({a['level']})" for a in summary["alerts"])
    )
    if out is not None:
        console.print(f"CAP files written to {out}")
    if os.environ.get("SENTRYLINE_DEMO_STRICT") and not ok:
        raise RuntimeError("produced != stored")
    return summary
