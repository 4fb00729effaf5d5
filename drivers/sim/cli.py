"""`sentryline sim`: serve a scenario's simulated devices over real protocols.

stdout carries exactly one JSON line ("ready", with the bound port) so that scripts and
tests can start the simulator on port 0 and find it; everything else goes to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys

import typer

from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.scenario import load_scenario
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
    port: int = typer.Option(5020, min=0, max=65535, help="TCP port; 0 picks a free one"),
    speed: float = typer.Option(1.0, min=0.001, help="Scenario seconds per wall second"),
    loop: bool = typer.Option(False, "--loop/--no-loop", help="Restart when the scenario ends"),
    seed: int = typer.Option(0, help="Noise seed; the same seed replays the same readings"),
) -> None:
    """Run SCENARIO's devices on one Modbus TCP server until it ends (or SIGTERM/SIGINT)."""
    try:
        loaded = load_scenario(scenario)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    try:
        asyncio.run(_serve(ModbusSimulator(loaded, seed=seed), host, port, speed, loop))
    except OSError as exc:
        typer.echo(f"sim: {exc}", err=True)
        raise typer.Exit(EXIT_RUNTIME) from None


async def _serve(sim: ModbusSimulator, host: str, port: int, speed: float, loop: bool) -> None:
    stop = asyncio.Event()
    event_loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        event_loop.add_signal_handler(sig, stop.set)
    bound = await sim.start(host, port)
    try:
        ready = {
            "event": "ready",
            "host": host,
            "port": bound,
            "devices": [d.id for d in sim.scenario.devices],
        }
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
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
