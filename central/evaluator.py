"""The leader's evaluator: judges the packs every worker stored, each gateway in order.

With several workers (``workers.mode: shared``) an MQTT shared subscription spreads one
gateway's packs over all of them, so no worker sees a whole series; rule state is in memory
and must see each series in event-time order. Every worker therefore only stores (and
confirms) its share and queues each new pack in ``pack_queue``; the one leader (central/
leader.py) takes queued packs here and runs the very same ``IngestPipeline.evaluate`` the
single-process service runs inline.

Order: packs of one gateway epoch are judged in ``seq`` order. Two workers may commit
neighbouring packs in either order, so a pack whose predecessor is neither judged nor queued
is held until it is, or for at most ``reorder_wait_s`` (a predecessor that was rejected, or
lost, never comes). Older packs (a replayed backlog) go at once: the rules judge them in
their late lane anyway.

Exactly once: the judged packs leave the queue in the same transaction as the alerts and
warnings they caused. A leader that dies mid-batch commits nothing; its successor (fresh
rule state, active warnings restored from the database, as after a restart) judges the
batch again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from central.ingest import IngestPipeline
from central.store import QueuedPack, Store
from central.warnings import IssuedMessage

GatewayEpoch = tuple[str, int]


@dataclass
class EvaluatorStats:
    judged_packs: int = 0
    held_packs: int = 0  # packs currently waiting for a predecessor
    released_by_timeout: int = 0
    batches: int = 0


class QueueEvaluator:
    def __init__(
        self,
        store: Store,
        pipeline: IngestPipeline,
        reorder_wait_s: float = 0.5,
        batch_max: int = 2000,
        clock: Callable[[], float] = time.monotonic,
        term: int | None = None,
    ) -> None:
        self.store = store
        self.term = term  # the leader's fencing token (Store.begin_term); None: unfenced
        self.pipeline = pipeline
        self.reorder_wait_s = reorder_wait_s
        self.batch_max = batch_max
        self.clock = clock
        self.stats = EvaluatorStats()
        self._last: dict[GatewayEpoch, int] = {}  # highest seq judged per gateway epoch
        self._first_seen: dict[tuple[str, int, int], float] = {}

    def step(self) -> list[IssuedMessage]:
        """Judge every queued pack that is ready; returns the CAP messages issued."""
        queued = self.store.queued_packs(self.batch_max)
        ready = self._ready(queued)
        if not ready:
            return []
        received_at = max(q.received_at for q in ready)
        with self.store.db.transaction():
            if self.term is not None:
                self.store.check_term(self.term)
            self.store.dequeue([q.pack.key for q in ready])
            issued = self.pipeline.evaluate([q.pack for q in ready], received_at)
        for q in ready:
            self._first_seen.pop(q.pack.key, None)
        self.stats.judged_packs += len(ready)
        self.stats.batches += 1
        return issued

    def _ready(self, queued: list[QueuedPack]) -> list[QueuedPack]:
        now = self.clock()
        by_epoch: dict[GatewayEpoch, list[QueuedPack]] = {}
        for q in queued:
            by_epoch.setdefault((q.pack.gateway, q.pack.epoch), []).append(q)
            self._first_seen.setdefault(q.pack.key, now)
        ready: list[QueuedPack] = []
        held = 0
        for key, packs in by_epoch.items():
            packs.sort(key=lambda q: q.pack.seq)
            last = self._last.get(key)
            if last is None:
                last = self._judged_before(key, packs[0].pack.seq)
            for i, q in enumerate(packs):
                seq = q.pack.seq
                if last is not None and seq <= last:
                    ready.append(q)  # older than what was judged: the late lane's business
                    continue
                if last is None or seq != last + 1:
                    # A gap: the predecessor may still be committing on another worker.
                    if now - self._first_seen[q.pack.key] < self.reorder_wait_s:
                        held += len(packs) - i  # hold this one and everything after it
                        break
                    self.stats.released_by_timeout += 1
                ready.append(q)
                last = seq
            if last is not None:
                self._last[key] = last
        self.stats.held_packs = held
        return ready

    def _judged_before(self, key: GatewayEpoch, seq: int) -> int | None:
        """After a takeover (or a gateway's first pack): is the predecessor already judged,
        i.e. stored and no longer queued? Then judging can go on from it."""
        gateway, epoch = key
        if seq == 0:
            return -1  # the first pack of an epoch has no predecessor
        stored = self.store.db.execute(
            "SELECT 1 FROM packs_seen WHERE gateway = ? AND epoch = ? AND seq = ?",
            (gateway, epoch, seq - 1),
        ).fetchone()
        if stored is None:
            return None  # not here yet (or never coming): hold until the wait runs out
        queued = self.store.db.execute(
            "SELECT 1 FROM pack_queue WHERE gateway = ? AND epoch = ? AND seq = ?",
            (gateway, epoch, seq - 1),
        ).fetchone()
        return None if queued is not None else seq - 1
