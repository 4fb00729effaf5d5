"""An in-process publish/subscribe hub for server-sent events.

Every event gets an id ``<boot>-<n>``: ``n`` counts up within this process, ``boot`` changes
with every start, so a client resuming with a Last-Event-ID from an earlier process (or one
older than the replay buffer) is told to reload instead of silently missing events.
A subscriber has a bounded queue; one that falls behind is dropped, never the publisher.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    kind: str  # "warning" | "alert" | "gateway" | "reset"
    data: dict[str, Any]

    def encode(self) -> bytes:
        """The event in text/event-stream framing (data is one line of JSON)."""
        body = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {body}\n\n".encode()


@dataclass(eq=False, slots=True)
class Subscription:
    queue: asyncio.Queue[Event]
    dropped: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class EventHub:
    def __init__(self, queue_size: int = 256, replay_size: int = 1000) -> None:
        self.boot = secrets.token_hex(4)
        self._serial = 0
        self._queue_size = queue_size
        self._replay: deque[Event] = deque(maxlen=replay_size)
        self._subscribers: set[Subscription] = set()
        self.published = 0
        self.dropped_clients = 0
        self._closed = False

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        """Hand an event to every subscriber now; never blocks, never raises for a client."""
        self._serial += 1
        event = Event(f"{self.boot}-{self._serial}", kind, data)
        self._replay.append(event)
        self.published += 1
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.drop(sub)
        return event

    def drop(self, sub: Subscription) -> None:
        """Cut a subscriber that fell behind (its stream ends; it may resume by id)."""
        if sub.dropped:
            return
        sub.dropped = True
        sub.closed.set()
        self._subscribers.discard(sub)
        self.dropped_clients += 1

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        """A new subscription, primed with what it missed since ``last_event_id``.

        When that id is unknown (another boot, or older than the replay buffer) the first
        event is a ``reset``: the client reloads its state from the REST API.
        """
        sub = Subscription(asyncio.Queue(self._queue_size))
        if self._closed:
            sub.closed.set()
            return sub
        if last_event_id:
            missed = self._since(last_event_id)
            if missed is None:
                reset = Event(self._last_id(), "reset", {"reason": "cannot resume"})
                missed = [reset]
            for event in missed[-self._queue_size :]:
                sub.queue.put_nowait(event)
        self._subscribers.add(sub)
        return sub

    def close(self) -> None:
        """End every stream (the service is stopping: open streams would hold it up)."""
        self._closed = True
        for sub in list(self._subscribers):
            self.unsubscribe(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        sub.closed.set()

    def _last_id(self) -> str:
        return f"{self.boot}-{self._serial}"

    def _since(self, last_event_id: str) -> list[Event] | None:
        boot, _, serial = last_event_id.partition("-")
        if boot != self.boot or not serial.isdigit():
            return None
        n = int(serial)
        if n > self._serial:
            return None
        if n == self._serial:
            return []
        oldest = int(self._replay[0].id.partition("-")[2]) if self._replay else self._serial + 1
        if n + 1 < oldest:
            return None  # fell out of the replay buffer
        return [e for e in self._replay if int(e.id.partition("-")[2]) > n]
