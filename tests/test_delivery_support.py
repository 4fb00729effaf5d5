"""Shared parts of the delivery tests (no tests here): a real HTTP receiver on loopback and
a real ingest pipeline that turns gas readings into stored CAP messages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from central.config import CentralConfig
from central.ingest import Inbound, IngestPipeline
from central.registry import AssetRegistry
from central.rules.gas import GasCh4Rule
from central.store import Store
from central.warnings import IssuedMessage, WarningManager
from cloud_bridge.mqtt import state_topic, telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack

ASSETS = [
    {
        "id": "tunnel-a3",
        "name": "Tunnel A3",
        "site": "site-north",
        "location": {"lat": 31.8200, "lon": 117.2200},
        "devices": ["gw-1/gas-1"],
    },
    {
        "id": "pump-7",
        "name": "Pump station 7",
        "site": "site-north",
        "location": {"lat": 31.8230, "lon": 117.2260},
        "devices": ["gw-1/gas-2"],
    },
    {
        "id": "bridge-2",
        "name": "Bridge 2",
        "site": "site-south",
        "location": {"lat": 31.8170, "lon": 117.2290},
        "devices": ["gw-1/gas-3"],
    },
]


@dataclass
class Central:
    """Store + registry + warnings + pipeline, as the service wires them."""

    store: Store
    registry: AssetRegistry
    pipeline: IngestPipeline
    config: CentralConfig
    seq: int = 0
    epoch: int = 1
    clock: float = field(default_factory=lambda: time.time() - 600)

    @classmethod
    def open(cls, target: Path | str) -> Central:
        """On a SQLite file (a path) or PostgreSQL (a URL)."""
        config = CentralConfig.model_validate({"assets": ASSETS})
        store = Store(target)
        registry = AssetRegistry(config.assets, store.gateway_births(), db=store.db)
        warnings = WarningManager(store, config.cap, registry.info)
        pipeline = IngestPipeline(store, registry, warnings, [GasCh4Rule(config.rules.gas_ch4)])
        return cls(store, registry, pipeline, config)

    def asset_site(self, asset: str) -> str | None:
        return self.registry.info(asset).site

    def gas(self, device: str, values: list[float]) -> list[IssuedMessage]:
        """One pack per reading, 1 s apart on one rising clock (started 10 minutes ago),
        from gateway gw-1; what was issued."""
        issued: list[IssuedMessage] = []
        for value in values:
            self.seq += 1
            self.clock += 1.0
            record = Record(f"{device}/ch4_lel", self.clock, value, "/")
            pack = Pack("gw-1", self.epoch, self.seq, (record,))
            inbound = Inbound(
                telemetry_topic("site-north", "gw-1"), encode_pack(pack), None, self.clock + 0.1
            )
            issued += self.pipeline.handle([inbound])
        return issued

    def gateway_state(self, state: str) -> None:
        body = f'{{"state": "{state}", "epoch": {self.epoch}}}'.encode()
        self.pipeline.handle([Inbound(state_topic("site-north", "gw-1"), body, None, time.time())])


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP/1.1 server on 127.0.0.1 answering ``plan(n)`` for the n-th request."""

    plan: Callable[[int], int]
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    got: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(headers, body))
            status = self.plan(len(self.requests))
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            self.got.set()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def receiver(plan: Callable[[int], int], port: int = 0) -> AsyncIterator[Receiver]:
    rx = Receiver(plan)
    server = await asyncio.start_server(rx._handle, "127.0.0.1", port)
    rx.port = server.sockets[0].getsockname()[1]
    try:
        yield rx
    finally:
        server.close()
        await server.wait_closed()


async def eventually(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serve(app) -> AsyncIterator[str]:
    """The app under a real uvicorn on a free loopback port; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True  # open event streams would otherwise hold the shutdown
        await asyncio.wait_for(task, 10)


def auth_for(app, db):
    """The real token check (central/auth.py) on an app built in a test; returns a
    ``token(role)`` maker."""
    from central.auth import Authenticator, TokenStore

    tokens = TokenStore(db)
    if not hasattr(app.state, "auth"):
        app.state.auth = Authenticator(tokens)

    def token(role: str) -> str:
        return tokens.create(f"test-{role}", role)[1]  # type: ignore[arg-type]

    return token
