"""Small helpers shared by the role CLIs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from provisioning.configfile import ConfigError

T = TypeVar("T")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we count and log errors ourselves


def config_or_exit(loader: Callable[[Path], T], path: Path) -> T:
    """Load a config file or print every problem (file:line:col: field: message) and exit 2."""
    try:
        return loader(path)
    except ConfigError as exc:
        typer.echo(f"configuration error in {exc.source}:", err=True)
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
