"""The leader's evaluator over the pack queue, in process, on the real PostgreSQL.

Two "workers" are two Stores on one private schema (two connections), as two processes
would be. The MQTT side is covered by tests/test_workers.py; here the order and exactly-once
rules are driven deterministically.
"""

from __future__ import annotations

import pytest

from central.config import CentralConfig
from central.evaluator import QueueEvaluator
from central.ingest import AssetRegistry, Inbound, IngestPipeline
from central.leader import LeaderLock
from central.rules.gas import GasCh4Rule
from central.store import QueueClaimLost, Store
from central.warnings import WarningManager
from cloud_bridge.mqtt import telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack
from tests.pgschema import private_schema

T0 = 1_800_000_000.0
NOW = T0 + 3600
CFG = CentralConfig()
# Clean, a leak (yellow, then orange), back to yellow, clean again: Alert, Update, Update,
# Cancel when judged in order.
PROFILE = [0.02] * 4 + [0.3] * 4 + [0.6] * 3 + [0.3] * 5 + [0.02] * 6


def packs(gateway: str = "gw-1", per_pack: int = 2) -> list[Pack]:
    out = []
    for seq, start in enumerate(range(0, len(PROFILE), per_pack)):
        records = tuple(
            Record("gas-1/ch4_lel", T0 + i, PROFILE[i], "/")
            for i in range(start, min(start + per_pack, len(PROFILE)))
        )
        out.append(Pack(gateway, 1, seq, records))
    return out


class Worker:
    """One worker's ingest side: stores and queues, never judges."""

    def __init__(self, url: str) -> None:
        self.store = Store(url, queue_packs=True)
        registry = AssetRegistry([], {})
        warnings = WarningManager(self.store, CFG.cap, registry.info)
        self.pipeline = IngestPipeline(
            self.store, registry, warnings, [GasCh4Rule(CFG.rules.gas_ch4)]
        )
        self.pipeline.evaluate_inline = False

    def send(self, *batch: Pack) -> list:
        topic = telemetry_topic("s", batch[0].gateway)
        return self.pipeline.handle([Inbound(topic, encode_pack(p), None, NOW) for p in batch])


def evaluator(url: str, reorder_wait_s: float = 60.0, clock=None) -> QueueEvaluator:
    store = Store(url)
    registry = AssetRegistry([], {})
    warnings = WarningManager(store, CFG.cap, registry.info)
    pipeline = IngestPipeline(store, registry, warnings, [GasCh4Rule(CFG.rules.gas_ch4)])
    kwargs = {"clock": clock} if clock else {}
    return QueueEvaluator(store, pipeline, reorder_wait_s=reorder_wait_s, **kwargs)


def reference(tmp_path) -> list[tuple[str, str]]:
    """The single-process answer: the same packs judged inline, in order."""
    store = Store(tmp_path / "ref.db")
    registry = AssetRegistry([], {})
    warnings = WarningManager(store, CFG.cap, registry.info)
    pipeline = IngestPipeline(store, registry, warnings, [GasCh4Rule(CFG.rules.gas_ch4)])
    issued = []
    for pack in packs():
        msg = Inbound(telemetry_topic("s", "gw-1"), encode_pack(pack), None, NOW)
        issued += pipeline.handle([msg])
    store.close()
    return [(m.msg_type, m.level) for m in issued]


def alerts(store: Store) -> list[tuple[str, str]]:
    return [(a["msgType"], a["level"]) for a in store.list_alerts()]


@pytest.fixture
def url():
    with private_schema("evaluator") as url:
        yield url


def test_workers_only_store_and_the_evaluator_judges_each_gateway_in_seq_order(url, tmp_path):
    expected = reference(tmp_path)
    assert [kind for kind, _ in expected] == ["Alert", "Update", "Update", "Cancel"]
    a, b = Worker(url), Worker(url)
    leader = evaluator(url)
    sent = packs()
    # Round-robin across two workers, each pair committed in the wrong order.
    for first, second in zip(sent[0::2], sent[1::2], strict=False):
        assert b.send(second) == []  # a worker never judges
        leader.step()  # the later pack waits: its predecessor is not stored yet
        assert leader.stats.held_packs == 1
        assert a.send(first) == []
        leader.step()
    if len(sent) % 2:
        a.send(sent[-1])
    leader.step()
    assert a.store.queue_depth() == 0
    assert alerts(a.store) == expected
    assert leader.stats.released_by_timeout == 0


def test_a_missing_predecessor_is_waited_for_only_so_long(url):
    now = [0.0]
    worker = Worker(url)
    leader = evaluator(url, reorder_wait_s=2.0, clock=lambda: now[0])
    sent = packs()
    worker.send(sent[0])
    leader.step()
    worker.send(sent[2])  # sent[1] was rejected, or is lost: it never comes
    leader.step()
    assert leader.stats.held_packs == 1 and worker.store.queue_depth() == 1
    now[0] = 2.5
    leader.step()
    assert worker.store.queue_depth() == 0 and leader.stats.released_by_timeout == 1


def test_a_successor_judges_from_where_the_dead_leader_committed(url, tmp_path):
    expected = reference(tmp_path)
    worker = Worker(url)
    sent = packs()
    first = evaluator(url)
    for pack in sent[:6]:  # the leak is raised and escalated
        worker.send(pack)
        first.step()
    issued_before = alerts(worker.store)
    assert issued_before == expected[:2]
    # The leader dies; the next one starts with fresh rule state, warnings from the DB.
    del first
    second = evaluator(url)
    for pack in sent[6:]:
        worker.send(pack)
        second.step()
    assert alerts(worker.store) == expected  # nothing issued twice, nothing missing


def test_a_leader_that_lost_its_claim_commits_nothing(url):
    worker = Worker(url)
    stale, current = evaluator(url), evaluator(url)
    sent = packs()
    for pack in sent[:6]:
        worker.send(pack)
    # Both saw the same queue; the current leader judges and commits first.
    current.step()
    raised = alerts(worker.store)
    assert raised  # the leak was raised once
    stale_queue = worker.store.queued_packs(10)
    assert stale_queue == []
    # The stale one (it read the queue before the other committed) must not issue again.
    stale._ready = (
        lambda _queued: [  # type: ignore[method-assign]
            type("Q", (), {"pack": p, "received_at": NOW})() for p in sent[:6]
        ]
    )
    with pytest.raises(QueueClaimLost):
        stale.step()
    assert alerts(worker.store) == raised


def test_the_advisory_lock_elects_one_leader_and_frees_on_session_end(url):
    one, two = LeaderLock(url, 4242), LeaderLock(url, 4242)
    assert one.try_acquire()
    assert not two.try_acquire()
    assert one.check()
    one.release()  # as when the process dies: the server ends the session
    assert two.try_acquire()
    two.release()


def test_shared_workers_need_postgresql_and_a_storage_url_is_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"needs storage\.url postgresql"):
        CentralConfig.model_validate({"workers": {"mode": "shared"}})
    with pytest.raises(ValidationError, match="sqlite:///PATH or postgresql"):
        CentralConfig.model_validate({"storage": {"url": "mysql://db/central"}})
    shared = CentralConfig.model_validate(
        {"workers": {"mode": "shared"}, "storage": {"url": "postgresql://central@db/sl"}}
    )
    assert shared.storage.dialect == "postgresql"


def test_a_superseded_leader_cannot_issue_even_from_packs_it_alone_saw(url, tmp_path):
    """Fencing: a new leader's term ends the old one's, before any of its deletes."""
    worker = Worker(url)
    old = evaluator(url)
    old.term = old.store.begin_term()
    for pack in packs()[:2]:
        worker.send(pack)
    old.step()  # still the leader: judges
    new = evaluator(url)
    new.term = new.store.begin_term()  # elected while the old one is partitioned away
    for pack in packs()[2:8]:  # the leak; only the old leader looks at the queue
        worker.send(pack)
    with pytest.raises(QueueClaimLost, match="superseded"):
        old.step()
    assert alerts(worker.store) == []  # nothing issued by the old leader
    new.step()
    assert alerts(worker.store) == reference(tmp_path)[:3]  # Alert, Update, Update: once
