"""`sentryline gateway …` and `sentryline outbox …`."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import typer

from cloud_bridge.outbox import open_readonly_stats
from provisioning.clitools import config_or_exit, setup_logging

app = typer.Typer(help="Run the gateway daemon.", no_args_is_help=True)
outbox_app = typer.Typer(help="Inspect a gateway's outbox.", no_args_is_help=True)


async def _run_until_signal(daemon_run) -> None:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon_run(stop)


@app.command("run")
def run(
    config: Path = typer.Option(..., "--config", "-c", help="gateway YAML file"),
    log_level: str = typer.Option("info", help="debug, info, warning, error"),
) -> None:
    """Poll the configured devices and bridge their readings to the broker."""
    from gateway.config import load_gateway_config
    from gateway.daemon import GatewayDaemon

    setup_logging(log_level)
    cfg = config_or_exit(load_gateway_config, config)
    asyncio.run(_run_until_signal(GatewayDaemon(cfg).run))


@app.command("check")
def check(
    config: Path = typer.Option(..., "--config", "-c", help="gateway YAML file"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Validate a gateway config and show how each device will be read (exit 2 if invalid)."""
    from gateway.config import load_gateway_config
    from gateway.sources.build import describe_devices

    cfg = config_or_exit(load_gateway_config, config)
    rows = describe_devices(cfg)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("device", "transport", "driver", "reads", "where", "model", title=str(config))
    for row in rows:
        table.add_row(
            *(str(row[k] or "-") for k in ("id", "transport", "driver", "reads", "where", "model"))
        )
    Console().print(table)


@outbox_app.command("stats")
def stats(
    db: Path = typer.Option(..., "--db", help="outbox SQLite file"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Depth, oldest age, bytes and lifetime counters of an outbox file."""
    if not db.is_file():
        typer.echo(f"error: no outbox file at {db}", err=True)
        raise typer.Exit(2)
    figures = open_readonly_stats(db).as_dict()
    if as_json:
        typer.echo(json.dumps(figures))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("counter", "value", title=f"outbox {db}")
    for key, value in figures.items():
        table.add_row(
            key,
            "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.1f}",
        )
    Console().print(table)
