"""The text/event-stream response: one hub subscription per client, keep-alives, and a
send timeout so that a client that stops reading is dropped instead of holding anything."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from central.delivery.hub import EventHub, Subscription


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        hub: EventHub,
        last_event_id: str | None,
        keepalive_s: float = 15.0,
        send_timeout_s: float = 10.0,
        retry_ms: int = 3000,
    ) -> None:
        super().__init__(
            None,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            media_type=self.media_type,
        )
        # A stream has no length: drop the Content-Length: 0 an empty Response declares.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.hub = hub
        self.last_event_id = last_event_id
        self.keepalive_s = keepalive_s
        self.send_timeout_s = send_timeout_s
        self.retry_ms = retry_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.hub.subscribe(self.last_event_id)
        watcher = asyncio.create_task(_watch_disconnect(receive, sub))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            first = f"retry: {self.retry_ms}\n: connected {self.hub.boot}\n\n".encode()
            if await self._send(send, sub, first):
                await self._pump(send, sub)
        finally:
            watcher.cancel()
            self.hub.unsubscribe(sub)

    async def _pump(self, send: Send, sub: Subscription) -> None:
        closed = asyncio.create_task(sub.closed.wait())
        try:
            while not sub.closed.is_set():
                getter = asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait(
                    {getter, closed}, timeout=self.keepalive_s, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if closed in done:
                        return
                    chunk = b": keep-alive\n\n"
                else:
                    chunk = getter.result().encode()
                if sub.dropped or not await self._send(send, sub, chunk):
                    return
        finally:
            closed.cancel()

    async def _send(self, send: Send, sub: Subscription, chunk: bytes) -> bool:
        """False when the client did not take the chunk in time (it is dropped)."""
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except TimeoutError:
            self.hub.drop(sub)
            return False
        except OSError:
            return False
        return True


async def _watch_disconnect(receive: Receive, sub: Subscription) -> None:
    with contextlib.suppress(Exception):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                sub.closed.set()
                return
