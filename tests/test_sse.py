"""Server-sent events through a real uvicorn: live events, resumption, keep-alives, auth,
and a client that stops reading being dropped while others go on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from central.delivery import Delivery, EventHub, feeds_router
from central.delivery.hub import Event
from tests.pgschema import private_schema
from tests.test_delivery_support import Central, auth_for, eventually, serve

YELLOW = [0.30, 0.30, 0.30]


@dataclass
class Listener:
    events: list[dict] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int | None = None


async def listen(url: str, listener: Listener, headers: dict | None = None) -> None:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(5, read=None)) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        listener.status = response.status_code
        if response.status_code != 200:
            return
        assert response.headers["content-type"].startswith("text/event-stream")
        block: dict = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in block:
                    block["data"] = json.loads(block["data"])
                    listener.events.append(block)
                block = {}
            elif line.startswith(":"):
                listener.comments.append(line[1:].strip())
            else:
                key, _, value = line.partition(": ")
                block[key] = value


@contextlib.asynccontextmanager
async def listening(url: str, headers: dict | None = None):
    listener = Listener()
    task = asyncio.create_task(listen(url, listener, headers))
    try:
        await eventually(lambda: listener.comments or task.done(), 5, "stream open")
        yield listener
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_app(target, **router_args):
    """The feeds router on a FastAPI app; ``target`` a directory (SQLite file in it), a
    SQLite file path, or a PostgreSQL URL."""
    if isinstance(target, Path) and target.is_dir():
        target = target / "c.db"
    central = Central.open(target)
    delivery = Delivery(central.store.db, EventHub(queue_size=16), central.asset_site)
    app = FastAPI()
    token = auth_for(app, central.store.db)
    app.include_router(feeds_router(delivery, **router_args))
    return central, delivery, app, token


async def test_warnings_alerts_and_gateway_changes_arrive_live_and_resume_by_id(tmp_path):
    central, delivery, app, token = make_app(tmp_path, keepalive_s=0.2)
    viewer = token("viewer")
    async with serve(app) as base:
        url = f"{base}/api/v1/events?access_token={viewer}"
        async with listening(url) as first:
            issued = central.gas("gas-1", YELLOW)
            delivery.on_issued(issued)
            central.gateway_state("online")
            delivery.refresh()
            await eventually(lambda: len(first.events) >= 3, 5, "three events")
            await eventually(lambda: "keep-alive" in first.comments, 5, "a keep-alive")
        kinds = [e["event"] for e in first.events]
        assert kinds == ["alert", "warning", "gateway"]
        alert, warning, gateway = (e["data"] for e in first.events)
        assert alert["identifier"] == issued[0].identifier and alert["level"] == "yellow"
        [stored] = central.store.list_warnings()
        assert warning["id"] == stored["id"] and warning["change"] == "new"
        assert warning["level"] == "yellow" and warning["active"] is True
        assert gateway == gateway | {"gateway": "gw-1", "state": "online"}
        ids = [e["id"] for e in first.events]
        assert len(set(ids)) == 3 and all(i.startswith(delivery.hub.boot) for i in ids)

        # Resume after the first event: the two missed ones come again, then live ones.
        async with listening(url, {"Last-Event-ID": ids[0]}) as resumed:
            await eventually(lambda: len(resumed.events) >= 2, 5, "replayed events")
            central.gateway_state("offline")
            delivery.refresh()
            await eventually(lambda: len(resumed.events) >= 3, 5, "a live event after replay")
        assert [e["id"] for e in resumed.events[:2]] == ids[1:]
        assert resumed.events[2]["data"]["state"] == "offline"

        # An id from another process (or fallen out of the buffer) asks the client to reload.
        async with listening(url, {"Last-Event-ID": "0000dead-5"}) as stale:
            await eventually(lambda: len(stale.events) >= 1, 5, "reset")
        assert stale.events[0]["event"] == "reset"
    central.store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_cleared_and_updated_warnings_are_told_as_such(tmp_path, backend):
    with contextlib.ExitStack() as stack:
        target = (
            tmp_path / "c.db"
            if backend == "sqlite"
            else stack.enter_context(private_schema("t_sse"))
        )
        await _cleared_and_updated(make_app(target))


async def _cleared_and_updated(made) -> None:
    central, delivery, app, token = made
    async with serve(app) as base:
        url = f"{base}/api/v1/events"
        async with listening(url, {"Authorization": f"Bearer {token('viewer')}"}) as listener:
            delivery.on_issued(central.gas("gas-1", YELLOW))
            delivery.on_issued(central.gas("gas-1", [0.6]))
            delivery.on_issued(central.gas("gas-1", [0.01] * 8))
            await eventually(
                lambda: sum(e["event"] == "warning" for e in listener.events) >= 3, 5, "warnings"
            )
    changes = [
        (e["data"]["change"], e["data"]["level"])
        for e in listener.events
        if e["event"] == "warning"
    ]
    assert changes[:2] == [("new", "yellow"), ("updated", "orange")]
    assert changes[-1][0] == "cleared"
    msg_types = [e["data"]["msgType"] for e in listener.events if e["event"] == "alert"]
    assert msg_types == ["Alert", "Update", "Cancel"]
    central.store.close()


async def test_the_event_stream_needs_a_token(tmp_path):
    central, _delivery, app, _token = make_app(tmp_path)
    assert "text/event-stream" in str(app.openapi()["paths"]["/api/v1/events"])
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/api/v1/events")).status_code == 401
        bad = await client.get("/api/v1/events", params={"access_token": "slt_nope"})
        assert bad.status_code == 401
    central.store.close()


def test_hub_drops_a_subscriber_whose_queue_is_full_and_keeps_the_others():
    async def scenario() -> None:
        hub = EventHub(queue_size=4)
        slow = hub.subscribe()
        fast = hub.subscribe()
        received: list[Event] = []
        for i in range(10):
            hub.publish("alert", {"n": i})
            while not fast.queue.empty():
                received.append(fast.queue.get_nowait())
        assert slow.dropped and slow.closed.is_set()
        assert not fast.dropped and [e.data["n"] for e in received] == list(range(10))
        assert hub.dropped_clients == 1 and hub.clients == 1

    asyncio.run(scenario())


async def test_a_client_that_stops_reading_is_dropped_and_others_keep_streaming(tmp_path):
    central, delivery, app, token = make_app(tmp_path, send_timeout_s=0.5)
    viewer = token("viewer")
    async with serve(app) as base:
        port = int(base.rsplit(":", 1)[1])
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        request = f"GET /api/v1/events?access_token={viewer} HTTP/1.1\r\nHost: x\r\n\r\n"
        stalled.sendall(request.encode())  # ... and never reads a byte
        try:
            async with listening(f"{base}/api/v1/events?access_token={viewer}") as healthy:
                await eventually(lambda: delivery.hub.clients == 2, 5, "two clients")
                big = "x" * 32_000
                for i in range(200):  # far more than the stalled socket's buffers hold
                    delivery.hub.publish("alert", {"n": i, "pad": big})
                    await asyncio.sleep(0.005)
                await eventually(lambda: delivery.hub.dropped_clients >= 1, 10, "a drop")
                await eventually(lambda: len(healthy.events) >= 200, 10, "all events")
        finally:
            stalled.close()
    assert [e["data"]["n"] for e in healthy.events] == list(range(200))
    assert delivery.hub.dropped_clients == 1
    central.store.close()


async def test_an_acknowledgement_made_elsewhere_reaches_listeners(tmp_path):
    central, delivery, app, token = make_app(tmp_path, keepalive_s=5)
    delivery.watch_interval_s = 0.2
    stop = asyncio.Event()
    watcher = asyncio.create_task(delivery.run(stop))
    async with serve(app) as base:
        url = f"{base}/api/v1/events?access_token={token('viewer')}"
        async with listening(url) as listener:
            delivery.on_issued(central.gas("gas-1", YELLOW))
            [warning] = central.store.list_warnings()
            # What the API's ack endpoint does (central/warnings.py), outside delivery.
            central.pipeline.warnings.acknowledge(warning["id"], "op-anna")
            await eventually(
                lambda: any(e["data"].get("change") == "acknowledged" for e in listener.events),
                5,
                "the acknowledgement (seen by the watcher)",
            )
    stop.set()
    await asyncio.wait_for(watcher, 10)
    [acked] = [e["data"] for e in listener.events if e["data"].get("change") == "acknowledged"]
    assert acked["id"] == warning["id"] and acked["acknowledged_by"] == "op-anna"
    assert acked["active"] is True and acked["level"] == "yellow"
    central.store.close()
