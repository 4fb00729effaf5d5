"""`sentryline sensor ble`: which BTHome sensors can this gateway hear, and what do they say?

``scan`` listens for `--seconds` and prints every BTHome v2 advertiser seen: address,
name, RSSI, the id the gateway would give it (unless configured otherwise) and its latest
readings. ``--json``: one JSON object per device on stdout.

Exit codes: 0 ok (also when nothing was heard); 3 no usable Bluetooth LE here (no adapter,
no BlueZ or D-Bus, no bleak) — one line on stderr says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from typing import cast

import typer

from drivers.ble.scanner import (
    AdvertisementSource,
    BleakAdvertisementSource,
    BthomeScanner,
    ScanMode,
    SeenDevice,
)

__all__ = ["EXIT_NO_BLE", "app", "make_app"]

EXIT_NO_BLE = 3

SourceFactory = Callable[[str | None, ScanMode], AdvertisementSource]


def _bleak_source(adapter: str | None, mode: ScanMode) -> AdvertisementSource:
    return BleakAdvertisementSource(adapter=adapter, mode=mode)


def make_app(source_factory: SourceFactory = _bleak_source) -> typer.Typer:
    """The sub-app; `source_factory` is where tests put a fake radio."""
    app = typer.Typer(
        help="Bluetooth LE sensors: scan for BTHome v2 advertisements",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )

    @app.callback()
    def _group() -> None:
        """Bluetooth LE sensors (BTHome v2)."""
        # A callback keeps `scan` a named subcommand even while it is the only one.

    @app.command()
    def scan(
        seconds: float = typer.Option(10.0, "--seconds", min=0.1, help="how long to listen"),
        as_json: bool = typer.Option(False, "--json", help="JSON Lines on stdout"),
        adapter: str | None = typer.Option(None, "--adapter", help="e.g. hci1 (default: first)"),
        mode: str = typer.Option("auto", "--mode", help="passive, active or auto"),
    ) -> None:
        """Listen for BTHome v2 advertisements and list the devices heard."""
        if mode not in ("passive", "active", "auto"):
            typer.echo(f"--mode must be passive, active or auto, not {mode!r}", err=True)
            raise typer.Exit(2)
        # The scanner's own error log would repeat the one line printed below.
        quiet = logging.getLogger("drivers.ble")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            source = source_factory(adapter, cast(ScanMode, mode))
            scanner = asyncio.run(_scan(source, seconds))
        finally:
            quiet.setLevel(level)
        if scanner.unavailable is not None:
            typer.echo(f"ble scan: {scanner.unavailable}", err=True)
            raise typer.Exit(EXIT_NO_BLE)
        _print(sorted(scanner.seen.values(), key=lambda d: -(d.rssi or -999)), as_json)

    return app


async def _scan(source: AdvertisementSource, seconds: float) -> BthomeScanner:
    scanner = BthomeScanner(source, lambda _records: None)  # every advertiser, nothing kept
    task = asyncio.create_task(scanner.run())
    await asyncio.wait({task}, timeout=seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return scanner


def _print(devices: list[SeenDevice], as_json: bool) -> None:
    for dev in devices:
        if as_json:
            item = {
                "address": dev.address,
                "name": dev.name,
                "rssi": dev.rssi,
                "device": dev.device,
                "last_time": dev.last_time,
                "trigger_based": dev.trigger_based,
                "values": {q: {"value": v, "unit": u} for q, (v, u) in dev.values.items()},
                "problem": dev.problem or None,
            }
            sys.stdout.write(json.dumps(item) + "\n")
        else:
            values = " ".join(
                f"{q}={v}{'' if u is None else ' ' + u}" for q, (v, u) in dev.values.items()
            )
            problem = f"  [{dev.problem}]" if dev.problem else ""
            name = dev.name or "-"
            sys.stdout.write(
                f"{dev.address}  {name:<16} {dev.rssi or '':>4} dBm  {dev.device}  "
                f"{values}{problem}\n"
            )
    if not devices and not as_json:
        sys.stdout.write("no BTHome devices heard\n")
    sys.stdout.flush()


app = make_app()
