"""`sentryline central …`."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import typer

from central.assets_cli import register as register_ops_commands
from provisioning.clitools import config_or_exit, setup_logging
from provisioning.configfile import ConfigError

app = typer.Typer(help="Run the central fusion-and-warning service.", no_args_is_help=True)
register_ops_commands(app)  # assets …, token …


@app.command("run")
def run(
    config: Path = typer.Option(..., "--config", "-c", help="central YAML file"),
    log_level: str = typer.Option("info", help="debug, info, warning, error"),
) -> None:
    """Ingest gateway telemetry, evaluate the rules, issue CAP 1.2 warnings."""
    from central.config import load_central_config
    from central.service import CentralService

    setup_logging(log_level)
    cfg = config_or_exit(load_central_config, config)

    try:
        service = CentralService(cfg)
    except ConfigError as exc:  # a rule-set file in rules_dir (file:line field)
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None

    def reload_rules() -> None:
        try:
            service.reload_rules()
        except ConfigError as exc:
            logging.getLogger("central").error("rules not reloaded, still in force: %s", exc)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload_rules)  # rules as data: no restart
        await service.run(stop)

    try:
        asyncio.run(main())
    except* RuntimeError as group:
        for exc in group.exceptions:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
