"""CLI sub-apps for drivers, field work and the planner bench.

Mounted by provisioning/cli.py as::

    sentryline driver  new | list | check     (driver_app: maintainers)
    sentryline sensor  modbus read | scan     (sensor_app: field engineers)
    sentryline bench   modbus-planner         (bench_app)

Data goes to stdout (a table, or JSON with --json), progress and errors to stderr. Nothing
ever prompts. Exit codes, the same for every command:

    0  done (scan: at least one device answered)
    1  the device, port or driver failed (no reply, exception, port busy, contract broken,
       folder exists)
    2  usage or configuration error (bad option, unknown profile, invalid YAML)
    3  scan: nothing answered
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import typer

from drivers.contract import run_contract
from drivers.field import (
    PortError,
    SerialLine,
    parse_bauds,
    parse_ids,
    parse_port,
    plan_scan,
    read_device,
    scan,
)
from drivers.modbus.profile import DeviceProfile, load_profile
from drivers.modbus.transport import ModbusReadError
from drivers.registry import RegistryError, builtin_dir, get_driver, list_drivers, scan_drivers
from drivers.scaffold import FAMILIES, TRANSPORTS, ScaffoldError, scaffold_driver
from provisioning.configfile import ConfigError

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "bench_app",
    "driver_app",
    "sensor_app",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
_EXIT_CODES = (
    "Exit codes: 0 done (scan: a device answered); 1 device, port or driver failed; "
    "2 usage or configuration error; 3 scan: nothing answered."
)

driver_app = typer.Typer(help="Sensor drivers: create, list and check them.", no_args_is_help=True)
sensor_app = typer.Typer(help="Field tools for sensors on site.", no_args_is_help=True)
modbus_app = typer.Typer(help="Modbus devices: read one, scan a line.", no_args_is_help=True)
sensor_app.add_typer(modbus_app, name="modbus")
bench_app = typer.Typer(help="Benchmarks that need no broker.", no_args_is_help=True)


@bench_app.callback()
def _bench_group() -> None:
    """Benchmarks that need no broker."""
    # A callback keeps a lone command a named subcommand wherever the app is mounted.


@modbus_app.callback()
def _modbus_group() -> None:
    """Modbus devices: read one, scan a line."""


def _out(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _fail(message: str, code: int) -> typer.Exit:
    _err(message)
    return typer.Exit(code)


def _quiet_pymodbus() -> None:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we report errors ourselves


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


# --- driver ---------------------------------------------------------------------------------


@driver_app.command("new", epilog=_EXIT_CODES)
def driver_new(
    name: str = typer.Argument(..., help="Driver name: lower case, digits and '-'"),
    family: str = typer.Option("other", help=f"One of: {', '.join(FAMILIES)}"),
    transport: str = typer.Option("modbus-tcp", help=f"One of: {', '.join(TRANSPORTS)}"),
    directory: Path | None = typer.Option(
        None, "--dir", help="Where to create NAME/ (default: hardware/sensors)"
    ),
) -> None:
    """Create a driver folder that passes the contract as written; prints its path."""
    try:
        folder = scaffold_driver(name, directory or builtin_dir(), family, transport)
    except ScaffoldError as exc:
        exists = "already exists" in str(exc)
        raise _fail(f"driver new: {exc}", EXIT_FAILED if exists else EXIT_USAGE) from None
    typer.echo(str(folder))
    hint = "" if directory is None else f" (with SENTRYLINE_DRIVER_PATH={folder.parent})"
    _err(f"next: edit {folder}/profile.yaml, then `sentryline driver check {name}`{hint}")


@driver_app.command("list")
def driver_list(as_json: bool = typer.Option(False, "--json", help="JSON on stdout")) -> None:
    """Every registered driver: built-in folders, SENTRYLINE_DRIVER_PATH, packages."""
    drivers, problems = scan_drivers()
    if as_json:
        _out([d.as_dict() for d in drivers])
    elif drivers:
        rows = [["name", "family", "transport", "version", "source"]]
        for d in drivers:
            source = f"package ({d.package})" if d.package else d.source
            rows.append([d.name, d.family, d.transport, d.version, source])
        typer.echo(_table(rows))
    for problem in problems:
        _err(str(problem))
    if problems:
        raise typer.Exit(EXIT_USAGE)


@driver_app.command("check", epilog=_EXIT_CODES)
def driver_check(
    name: str = typer.Argument(..., help="A registered driver"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """Run the driver contract (the same checks as tests/test_driver_contract.py)."""
    _quiet_pymodbus()
    try:
        driver = get_driver(name)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    results = asyncio.run(run_contract(driver))
    if as_json:
        _out([{"check": r.name, "ok": r.ok, "detail": r.detail} for r in results])
    else:
        for r in results:
            typer.echo(f"{'ok  ' if r.ok else 'FAIL'}  {r.name:<9} {r.detail}".rstrip())
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_FAILED)


# --- sensor modbus --------------------------------------------------------------------------

_PORT_HELP = "tcp://host:port, rtu:///dev/ttyUSB0?baud=9600&parity=E&stopbits=1, or a tty path"


@modbus_app.command("read", epilog=_EXIT_CODES)
def modbus_read(
    port: str = typer.Option(..., "--port", help=_PORT_HELP),
    device_id: int = typer.Option(..., "--device-id", help="Unit id (1-247 on a serial line)"),
    profile: str = typer.Option(..., "--profile", help="Driver/profile name or .yaml path"),
    timeout: float = typer.Option(1.0, min=0.01, help="Seconds a reply may take"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """Read every point of one device once, decoded with its profile."""
    _quiet_pymodbus()
    try:
        target = parse_port(port)
        loaded = load_profile(profile)
    except (PortError, ConfigError) as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    try:
        reading = asyncio.run(read_device(target, device_id, loaded, timeout))
    except PortError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except ModbusReadError as exc:
        raise _fail(f"read failed: {exc}", EXIT_FAILED) from None
    records = reading.records(loaded)
    _err(f"{len(records)} points in {reading.requests} requests, {reading.elapsed_s * 1000:.0f} ms")
    if as_json:
        _out(
            {
                "port": target.label,
                "device_id": device_id,
                "profile": loaded.name,
                "requests": reading.requests,
                "elapsed_s": round(reading.elapsed_s, 4),
                "records": records,
            }
        )
        return
    rows = [["point", "value", "unit", "quality"]]
    for record in records:
        value = record.get("v", record.get("vb", record.get("vs")))
        quality = {1: "ok", 4: "OUT OF RANGE"}.get(record.get("q", 0), "")
        rows.append([record["n"], str(value), record.get("u", ""), quality])
    typer.echo(_table(rows))


@modbus_app.command("scan", epilog=_EXIT_CODES)
def modbus_scan(
    port: str = typer.Option(..., "--port", help=_PORT_HELP),
    baud: str | None = typer.Option(
        None, "--baud", help="Serial only: rates to try, e.g. 9600,19200 (default: the port's)"
    ),
    ids: str = typer.Option("1-247", "--ids", help="Unit ids, e.g. 1-247 or 1,5,10-20"),
    timeout: float = typer.Option(0.1, min=0.005, help="Seconds to wait for each id's reply"),
    identify: bool = typer.Option(
        True, "--identify/--no-identify", help="Ask found devices for FC43/MEI14 identification"
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """Find the devices on a line: any reply, even an exception, proves one is there."""
    _quiet_pymodbus()
    try:
        target = parse_port(port)
        plan = plan_scan(target, parse_ids(ids), parse_bauds(baud) if baud else None, timeout)
    except PortError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if baud and not isinstance(target, SerialLine):
        _err("--baud applies to serial lines only; ignored for Modbus TCP")
    try:
        hits = asyncio.run(scan(plan, identify_devices=identify, progress=_err))
    except ModbusReadError as exc:
        raise _fail(f"scan failed: {exc}", EXIT_FAILED) from None
    _err(f"{len(hits)} device(s) answered")
    if as_json:
        _out({"port": target.label, "devices": [h.as_dict() for h in hits]})
    elif hits:
        rows = [["baud", "id", "reply", "vendor", "product", "revision", "note"]]
        for h in hits:
            identity = h.identity or {}
            rows.append(
                [
                    str(h.baud or "-"),
                    str(h.device_id),
                    h.reply,
                    identity.get("vendor", ""),
                    identity.get("product_code", ""),
                    identity.get("revision", ""),
                    h.identity_error or h.detail,
                ]
            )
        typer.echo(_table(rows))
    if not hits:
        raise typer.Exit(EXIT_NOT_FOUND)


# --- bench ----------------------------------------------------------------------------------


@bench_app.command("modbus-planner")
def bench_modbus_planner(
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """Requests per poll per driver profile: planned, one per tag, and the minimum."""
    try:
        from bench.modbus_planner import format_table, planner_rows, rows_json
    except ModuleNotFoundError as exc:  # bench/ ships with the source tree only
        message = f"bench is not importable ({exc}): run from a source checkout"
        raise _fail(message, EXIT_FAILED) from exc
    try:
        # Only register maps have read plans: the other transports' drivers are left out.
        profiles = [d.profile() for d in list_drivers() if d.is_modbus]
        rows = planner_rows(p for p in profiles if isinstance(p, DeviceProfile))
    except (ConfigError, RegistryError) as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    typer.echo(rows_json(rows) if as_json else format_table(rows))
    if not all(r.minimal for r in rows):
        raise typer.Exit(EXIT_FAILED)
