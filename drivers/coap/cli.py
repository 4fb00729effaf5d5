"""`sentryline sensor coap`: read a CoAP device from the field engineer's laptop or the gateway.

``get URI`` reads a resource once, ``observe URI`` follows it (re-registering like the
gateway does). Records go to stdout — one line each, or JSON Lines with ``--json`` (data on
stdout, logs on stderr). A SenML ``vd`` blob prints as its size (``--json``: base64url).

Exit codes: 0 ok; 1 no usable response (timeout, network, 4.xx/5.xx) or fewer notifications
than ``--count`` within ``--seconds``; 2 usage or mapping-file error; 4 a response came but
its payload could not be decoded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import typer

from cloud_bridge.senml import Record
from drivers.coap.client import (
    CoapObserver,
    CoapRequestError,
    ReregisterBackoff,
    check_uri,
    fetch,
    open_context,
)
from drivers.coap.payload import (
    CF_SENML_CBOR,
    Blob,
    DecodeContext,
    Decoded,
    PayloadDecoder,
    PayloadError,
    PlainDecoder,
    PlainProfile,
    SenmlDecoder,
)
from provisioning.configfile import ConfigError, load_yaml_model

__all__ = ["EXIT_PAYLOAD", "EXIT_REQUEST", "app"]

EXIT_REQUEST = 1
EXIT_USAGE = 2
EXIT_PAYLOAD = 4

app = typer.Typer(
    help="CoAP devices: read or observe a resource and print its readings",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

_JSON = typer.Option(False, "--json", help="JSON Lines on stdout")
_DEVICE = typer.Option("coap", "--device", help="device id the records are named under")
_CBOR = typer.Option(False, "--cbor", help="ask for SenML CBOR (Accept: 112)")
_PLAIN = typer.Option(
    None, "--plain", help="YAML mapping for a plain JSON/CBOR payload (fields: pointer, …)"
)
_TIMEOUT = typer.Option(5.0, "--timeout", min=0.01, help="seconds to wait for a response")


def _decoder(plain: Path | None) -> PayloadDecoder:
    if plain is None:
        return SenmlDecoder()
    try:
        return PlainDecoder(load_yaml_model(plain, PlainProfile))
    except ConfigError as exc:
        typer.echo(f"mapping error in {exc.source}:\n{exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def _uri(uri: str) -> str:
    try:
        return check_uri(uri)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_USAGE) from None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _print_records(records: list[Record], as_json: bool) -> None:
    for rec in records:
        if as_json:
            item = {"name": rec.name, "time": rec.time, "value": rec.value, "unit": rec.unit}
            sys.stdout.write(json.dumps(item) + "\n")
        else:
            unit = f" {rec.unit}" if rec.unit else ""
            sys.stdout.write(f"{rec.name}  {rec.value}{unit}  {_iso(rec.time)}\n")
    sys.stdout.flush()


def _print_blobs(blobs: list[Blob], as_json: bool) -> None:
    for blob in blobs:
        if as_json:
            data = base64.urlsafe_b64encode(blob.data).rstrip(b"=").decode()
            item = {"name": blob.name, "time": blob.time, "vd": data, "bytes": len(blob.data)}
            sys.stdout.write(json.dumps(item) + "\n")
        else:
            sys.stdout.write(f"{blob.name}  <{len(blob.data)} bytes>  {_iso(blob.time)}\n")
    sys.stdout.flush()


def _logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    logging.getLogger("coap").setLevel(logging.ERROR)  # aiocoap's own chatter


@app.command()
def get(
    uri: str = typer.Argument(..., help="coap://host[:port]/path"),
    as_json: bool = _JSON,
    device: str = _DEVICE,
    cbor: bool = _CBOR,
    plain: Path | None = _PLAIN,
    timeout: float = _TIMEOUT,
) -> None:
    """GET URI once and print the decoded records."""
    _logging()
    uri = _uri(uri)
    decoder = _decoder(plain)
    asyncio.run(_get(uri, decoder, device, CF_SENML_CBOR if cbor else None, timeout, as_json))


async def _get(
    uri: str,
    decoder: PayloadDecoder,
    device: str,
    accept: int | None,
    limit_s: float,
    as_json: bool,
) -> None:
    ctx = await open_context()
    try:
        try:
            response = await fetch(ctx, uri, limit_s=limit_s, accept=accept)
        except CoapRequestError as exc:
            typer.echo(f"coap get {uri}: {exc}", err=True)
            raise typer.Exit(EXIT_REQUEST) from None
        received = time.time()
        try:
            decoded = decoder(
                response.payload, response.opt.content_format, DecodeContext(device, received)
            )
        except PayloadError as exc:
            typer.echo(f"coap get {uri}: payload {exc}", err=True)
            raise typer.Exit(EXIT_PAYLOAD) from None
        _print_records(decoded.records, as_json)
        _print_blobs(decoded.blobs, as_json)
    finally:
        await ctx.shutdown()


@app.command()
def observe(
    uri: str = typer.Argument(..., help="coap://host[:port]/path"),
    count: int = typer.Option(0, "--count", min=0, help="stop after N readings (0: never)"),
    seconds: float = typer.Option(0.0, "--seconds", min=0, help="give up after S s (0: never)"),
    as_json: bool = _JSON,
    device: str = _DEVICE,
    cbor: bool = _CBOR,
    plain: Path | None = _PLAIN,
    timeout: float = _TIMEOUT,
) -> None:
    """Observe URI and print every notification's records (re-registers when it drops)."""
    _logging()
    uri = _uri(uri)
    decoder = _decoder(plain)
    accept = CF_SENML_CBOR if cbor else None
    reached = asyncio.run(_observe(uri, decoder, device, accept, timeout, count, seconds, as_json))
    if not reached:
        typer.echo(f"coap observe {uri}: fewer than {count} readings in {seconds:g} s", err=True)
        raise typer.Exit(EXIT_REQUEST)


async def _observe(
    uri: str,
    decoder: PayloadDecoder,
    device: str,
    accept: int | None,
    limit_s: float,
    count: int,
    seconds: float,
    as_json: bool,
) -> bool:
    done = asyncio.Event()
    seen = 0

    def printing(payload: bytes, content_format: int | None, ctx: DecodeContext) -> Decoded:
        # Print here rather than in the sinks: one decoded response is one reading, however
        # its records and blobs are then split between sinks.
        nonlocal seen
        decoded = decoder(payload, content_format, ctx)
        if not done.is_set():
            _print_records(decoded.records, as_json)
            _print_blobs(decoded.blobs, as_json)
            seen += 1
            if count and seen >= count:
                done.set()
        return decoded

    observer = CoapObserver(
        device,
        uri,
        lambda _records: None,
        decoder=printing,
        timeout=limit_s,
        accept=accept,
        blob_sink=lambda _blobs: None,
        backoff=ReregisterBackoff(initial_s=1.0, max_s=10.0),
    )
    task = asyncio.create_task(observer.run())
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds or None):
                await done.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return done.is_set() or count == 0
