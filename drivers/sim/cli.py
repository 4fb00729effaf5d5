"""`sentryline sim`: serve a scenario's simulated devices over real protocols.

A scenario may mix transports (drivers/sim/source_scenario.py, ``SimScenario``): Modbus
TCP devices on one server (``--port``), Modbus RTU devices on one pty line, CoAP devices
each on an aiocoap server of their own (a free UDP port each), serial-line devices each on
a pty. stdout carries exactly one JSON line ("ready") saying where everything is, so that
scripts and tests can start the simulator on port 0 and find it; everything else goes to
stderr. A pure Modbus TCP scenario prints the same ready line as ever::

    {"event": "ready", "host": "127.0.0.1", "port": 5020, "devices": ["gas-1", ...]}

and a mixed one adds what it has::

    "modbus_rtu": {"path": "/dev/pts/7", "baudrate": 19200, "parity": "N", "stopbits": 2,
                   "devices": {"river-gauge": 7}},
    "coap": {"cam-1": "coap://127.0.0.1:40123/thermal"},
    "serial": {"culvert-3": {"path": "/dev/pts/8", "baudrate": 9600, ...}},
    "ble": {"tag-1": "C2:..."}        (in-process only: there is no radio to put them on)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys

import typer

from drivers.serial import SerialSettings
from drivers.sim.mixed import DEFAULT_RTU_LINE, MixedSimulator
from drivers.sim.source_scenario import load_sim_scenario
from provisioning.configfile import ConfigError

__all__ = ["app"]

app = typer.Typer(help="Simulated devices speaking real protocols", no_args_is_help=True)

EXIT_CONFIG = 2  # the scenario or a profile is invalid (same code as typer's usage errors)
EXIT_RUNTIME = 1  # e.g. the port is taken


@app.callback()
def _group() -> None:
    """Simulated devices speaking real protocols."""
    # A callback keeps `run` a named subcommand even while it is the only one.


@app.command()
def run(
    scenario: str = typer.Argument(..., help="Scenario name (hardware/scenarios) or .yaml path"),
    host: str = typer.Option("127.0.0.1", help="Address to bind; loopback by default"),
    port: int = typer.Option(5020, min=0, max=65535, help="Modbus TCP port; 0 picks a free one"),
    speed: float = typer.Option(1.0, min=0.001, help="Scenario seconds per wall second"),
    loop: bool = typer.Option(False, "--loop/--no-loop", help="Restart when the scenario ends"),
    seed: int = typer.Option(0, help="Noise seed; the same seed replays the same readings"),
    rtu_baud: int = typer.Option(
        DEFAULT_RTU_LINE.baudrate, min=300, help="Modbus RTU line speed (8N2 on the pty)"
    ),
) -> None:
    """Run SCENARIO's devices, every transport at once, until it ends (or SIGTERM/SIGINT)."""
    try:
        loaded = load_sim_scenario(scenario)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    logging.getLogger("coap-server").setLevel(logging.ERROR)  # aiocoap's per-request chatter
    line = SerialSettings(rtu_baud, DEFAULT_RTU_LINE.parity, DEFAULT_RTU_LINE.stopbits)
    sim = MixedSimulator(loaded, seed=seed, rtu_line=line)
    try:
        asyncio.run(_serve(sim, host, port, speed, loop))
    except OSError as exc:
        typer.echo(f"sim: {exc}", err=True)
        raise typer.Exit(EXIT_RUNTIME) from None


async def _serve(sim: MixedSimulator, host: str, port: int, speed: float, loop: bool) -> None:
    stop = asyncio.Event()
    event_loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        event_loop.add_signal_handler(sig, stop.set)
    try:
        where = await sim.start(host, port)
        ready = {
            "event": "ready",
            "host": host,
            "port": where.get("port"),
            "devices": sim.scenario.device_ids(),
            **sim.endpoints(host, where),
        }
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        if sim.ble:
            typer.echo(
                f"sim: BLE devices {sorted(sim.ble)} advertise in-process only (no radio here)",
                err=True,
            )
        runner = asyncio.create_task(sim.run(speed=speed, loop=loop))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (runner, stopper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await sim.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            event_loop.remove_signal_handler(sig)


if __name__ == "__main__":
    app()
