"""The gateway's durable SQLite outbox: sealing, epochs, ordering, bounds, crash safety."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from cloud_bridge.outbox import (
    PRIORITY_EVENT,
    PRIORITY_TELEMETRY,
    PRIORITY_WARNING,
    Outbox,
    OutboxFull,
    OutboxStats,
    open_readonly_stats,
)
from cloud_bridge.senml import CBOR_CONTENT_TYPE, Pack, Record, decode_pack, encode_pack

REPO_ROOT = Path(__file__).resolve().parents[1]
GW = "gw-01"
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = 1.0) -> None:  # near 0: epochs count from 1
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


def recs(n: int, start: float = T0, device: str = "d1") -> list[Record]:
    """n records with exactly representable times and values."""
    return [
        Record(f"{device}/q{i}", start + i * 0.5, float(i) + 0.25, "m", 60.0, 1) for i in range(n)
    ]


def check_invariants(box: Outbox) -> OutboxStats:
    """Stats agree with the table and the lifetime counters add up."""
    st = box.stats()
    entries = box.peek(10**6)
    assert st.depth_packs == len(entries) == box.depth()
    assert st.depth_records == sum(e.n_records for e in entries)
    assert st.payload_bytes == sum(len(e.payload) for e in entries)
    assert st.records_appended == (
        st.depth_records + st.records_acked + st.records_evicted + st.records_expired
    )
    assert st.packs_appended == (
        st.depth_packs + st.packs_acked + st.packs_evicted + st.packs_expired
    )
    assert st.payload_bytes <= box.max_bytes
    if entries and isinstance(box._clock, FakeClock):
        assert st.oldest_age_s == max(0.0, box._clock() - min(e.created for e in entries))
    elif entries:
        assert st.oldest_age_s is not None and st.oldest_age_s >= 0
    else:
        assert st.oldest_age_s is None
    return st


# -- append and sealing -------------------------------------------------------------------
def test_append_assigns_increasing_seq_and_seals_packs(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    assert box.epoch == 1
    batches = [recs(2), recs(3, device="d2")]
    assert box.append(batches) == [(1, 0), (1, 1)]
    clock.now += 5
    assert box.append([recs(1)], priority=PRIORITY_EVENT) == [(1, 2)]
    assert box.append([[], recs(4)]) == [(1, 3)]  # empty batches are skipped, no seq burnt
    assert box.append([]) == []
    assert box.append([[]]) == []
    assert box.append([recs(1)]) == [(1, 4)]

    entries = sorted(box.peek(100), key=lambda e: e.seq)
    assert [(e.epoch, e.seq) for e in entries] == [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]
    assert [e.n_records for e in entries] == [2, 3, 1, 4, 1]
    assert [e.priority for e in entries] == [0, 0, PRIORITY_EVENT, 0, 0]
    assert [e.created for e in entries] == [clock.now - 5, clock.now - 5] + [clock.now] * 3
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    expected = {0: batches[0], 1: batches[1], 2: recs(1), 3: recs(4), 4: recs(1)}
    for entry in entries:
        pack = decode_pack(entry.payload)
        assert pack.key == (GW, 1, entry.seq)
        assert pack.replayed is False
        assert list(pack.records) == expected[entry.seq]
        # sealed: the stored bytes are exactly what encode_pack gives for that pack
        assert entry.payload == encode_pack(Pack(GW, 1, entry.seq, tuple(expected[entry.seq])))
    st = check_invariants(box)
    assert (st.packs_appended, st.records_appended) == (5, 11)
    box.close()


def test_cbor_wire_format(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock, wire_format="cbor")
    box.append([recs(3)])
    (entry,) = box.peek(10)
    assert entry.payload[0] >> 5 == 4  # a CBOR array
    pack = decode_pack(entry.payload, CBOR_CONTENT_TYPE)
    assert pack.key == (GW, 1, 0)
    assert list(pack.records) == recs(3)
    box.close()


def test_listeners_run_after_each_append(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    calls: list[int] = []
    box.add_listener(lambda: calls.append(box.depth()))
    box.append([recs(1), recs(1)])
    box.append([])  # nothing stored, nobody woken
    box.append([recs(2)])
    assert calls == [2, 3]  # after the commit: the packs are visible
    box.close()


# -- epochs and durability ----------------------------------------------------------------
def test_reopen_starts_new_epoch_and_keeps_unacked(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    box.append([recs(1), recs(2), recs(3)])
    first = {e.seq: e for e in box.peek(10)}
    box.ack([first[1].id])
    box.close()

    box = Outbox(db, GW, clock=clock)
    assert box.epoch == 2
    kept = sorted(box.peek(10), key=lambda e: e.seq)
    assert [(e.epoch, e.seq) for e in kept] == [(1, 0), (1, 2)]
    for entry in kept:  # byte-identical re-send after the restart
        assert entry.payload == first[entry.seq].payload
        assert entry.id == first[entry.seq].id
        assert decode_pack(entry.payload).key == (GW, 1, entry.seq)
    assert box.append([recs(1)]) == [(2, 0)]  # new epoch, seq from 0 again
    st = check_invariants(box)
    assert st.epoch == 2
    assert (st.packs_appended, st.packs_acked, st.records_acked) == (4, 1, 2)
    box.close()

    box = Outbox(db, GW, clock=clock)
    assert box.epoch == 3
    assert box.append([recs(1)]) == [(3, 0)]
    assert {(e.epoch, e.seq) for e in box.peek(10)} == {(1, 0), (1, 2), (2, 0), (3, 0)}
    box.close()


def test_reopen_with_nothing_appended_still_advances_epoch(db: Path) -> None:
    for expected in (1, 2, 3):
        box = Outbox(db, GW, clock=FakeClock())
        assert box.epoch == expected
        box.close()


def test_open_readonly_stats_does_not_start_an_epoch(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    box.append([recs(2), recs(3)])
    box.ack([box.peek(1)[0].id])
    # while the writer is open
    st = open_readonly_stats(db)
    assert (st.epoch, st.depth_packs, st.depth_records) == (1, 1, 3)
    assert (st.packs_appended, st.records_appended, st.records_acked) == (2, 5, 2)
    assert st.payload_bytes == len(box.peek(1)[0].payload)
    box.close()
    for _ in range(2):
        assert open_readonly_stats(db).epoch == 1
    box = Outbox(db, GW, clock=clock)
    assert box.epoch == 2  # not 4
    assert box.append([recs(1)]) == [(2, 0)]
    box.close()
    assert open_readonly_stats(db).as_dict()["packs_appended"] == 3


# -- peek and ack -------------------------------------------------------------------------
def test_peek_orders_by_priority_then_age_and_never_deletes(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    order = [
        PRIORITY_TELEMETRY,
        PRIORITY_WARNING,
        PRIORITY_EVENT,
        PRIORITY_TELEMETRY,
        PRIORITY_WARNING,
        PRIORITY_EVENT,
    ]
    for priority in order:
        box.append([recs(1)], priority=priority)
    seqs = [e.seq for e in box.peek(10)]
    assert seqs == [1, 4, 2, 5, 0, 3]
    assert [e.priority for e in box.peek(10)] == [9, 9, 5, 5, 0, 0]
    assert [e.seq for e in box.peek(3)] == [1, 4, 2]
    assert box.peek(0) == []
    assert box.depth() == 6  # peeking deleted nothing
    ids = {e.seq: e.id for e in box.peek(10)}
    assert [e.seq for e in box.peek(3, exclude=[ids[1], ids[2]])] == [4, 5, 0]
    assert [e.seq for e in box.peek(10, exclude=iter(ids.values()))] == []
    assert [e.seq for e in box.peek(10, exclude=[10**9])] == seqs
    assert box.depth() == 6
    box.close()


def test_ack_deletes_only_given_ids(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    box.append([recs(1), recs(2), recs(3), recs(4)])
    ids = {e.seq: e.id for e in box.peek(10)}
    assert box.ack([]) == 0
    assert box.ack([ids[1], ids[3]]) == 6
    assert sorted(e.seq for e in box.peek(10)) == [0, 2]
    assert box.ack([ids[1], 10**9]) == 0  # already gone / unknown: nothing counted
    assert box.ack([ids[2], ids[2]]) == 3  # a repeated id counts once
    assert [e.seq for e in box.peek(10)] == [0]
    st = check_invariants(box)
    assert (st.packs_acked, st.records_acked, st.depth_records) == (3, 9, 1)
    assert box.ack([ids[0]]) == 1
    st = check_invariants(box)
    assert (st.depth_packs, st.depth_records, st.payload_bytes) == (0, 0, 0)
    assert (st.packs_acked, st.records_acked) == (4, 10)
    box.close()


def test_stats_track_ages_and_files(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    st = check_invariants(box)
    assert (st.depth_packs, st.depth_records, st.payload_bytes) == (0, 0, 0)
    assert st.oldest_age_s is None
    box.append([recs(2)])
    clock.now += 30
    box.append([recs(1)])
    clock.now += 12.5
    st = check_invariants(box)
    assert st.oldest_age_s == 42.5
    assert st.file_bytes > 0
    assert st.as_dict()["depth_records"] == 3
    assert set(st.as_dict()) >= {"epoch", "packs_evicted", "records_expired", "file_bytes"}
    clock.now -= 1000  # a clock stepping back never gives a negative age
    assert box.stats().oldest_age_s == 0.0
    box.close()


# -- byte bound ---------------------------------------------------------------------------
def _size(box: Outbox, seq: int, records: Sequence[Record]) -> int:
    return len(encode_pack(Pack(GW, box.epoch, seq, tuple(records))))


def test_eviction_of_published_packs_is_counted_apart(db: Path, clock: FakeClock) -> None:
    """A pack evicted after it was published may have reached central: not a sure loss."""
    size = _size(Outbox(db.with_name("probe.db"), GW, clock=FakeClock()), 0, recs(2))
    box = Outbox(db, GW, clock=clock, max_bytes=2 * size + size // 2)
    box.append([recs(2), recs(2)])
    box.mark_sent([e.id for e in box.peek(1)])  # the oldest is in flight
    box.append([recs(2), recs(2)])  # two over the bound: the in-flight pack and the next go
    st = check_invariants(box)
    assert (st.packs_evicted, st.records_evicted, st.records_evicted_sent) == (2, 4, 2)
    box.close()


def test_byte_bound_evicts_oldest_first_and_no_more(db: Path, clock: FakeClock) -> None:
    size = _size(Outbox(db.with_name("probe.db"), GW, clock=FakeClock()), 0, recs(2))
    box = Outbox(db, GW, clock=clock, max_bytes=3 * size + size // 2)
    assert box.append([recs(2), recs(2), recs(2)]) == [(1, 0), (1, 1), (1, 2)]
    st = check_invariants(box)
    assert st.packs_evicted == 0 and st.payload_bytes == 3 * size
    box.append([recs(2)])  # one over the bound: exactly one pack goes, the oldest
    assert sorted(e.seq for e in box.peek(10)) == [1, 2, 3]
    st = check_invariants(box)
    assert (st.packs_evicted, st.records_evicted) == (1, 2)
    box.append([recs(2), recs(2)])
    assert sorted(e.seq for e in box.peek(10)) == [3, 4, 5]
    st = check_invariants(box)
    assert (st.packs_evicted, st.records_evicted) == (3, 6)
    box.close()


def test_byte_bound_spares_higher_priority(db: Path, clock: FakeClock) -> None:
    size = _size(Outbox(db.with_name("probe.db"), GW, clock=FakeClock()), 0, recs(2))
    box = Outbox(db, GW, clock=clock, max_bytes=3 * size + size // 2)
    box.append([recs(2)], priority=PRIORITY_WARNING)  # the oldest pack
    box.append([recs(2)], priority=PRIORITY_EVENT)
    for _ in range(5):
        box.append([recs(2)])  # telemetry
        prios = sorted(e.priority for e in box.peek(10))
        assert prios == [0, 5, 9]  # only telemetry is evicted while telemetry exists
    assert [e.seq for e in box.peek(10)] == [0, 1, 6]
    box.append([recs(2)], priority=PRIORITY_WARNING)
    # telemetry gone first, then nothing else needed
    assert [e.seq for e in box.peek(10)] == [0, 7, 1]
    box.append([recs(2)], priority=PRIORITY_WARNING)
    # now the event (lowest left) goes, the older warning stays
    assert [e.seq for e in box.peek(10)] == [0, 7, 8]
    st = check_invariants(box)
    assert (st.packs_evicted, st.records_evicted) == (6, 12)
    box.close()


def test_oversized_pack_is_evicted_alone(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock, max_bytes=400)
    box.append([recs(1)], priority=PRIORITY_WARNING)
    assert _size(box, 1, recs(40)) > 400
    assert box.append([recs(40)]) == [(1, 1)]  # sealed and counted, then evicted at once
    assert [e.seq for e in box.peek(10)] == [0]  # the warning did not have to go
    st = check_invariants(box)
    assert (st.packs_evicted, st.records_evicted) == (1, 40)
    box.append([recs(40)], priority=PRIORITY_WARNING)  # now both must go
    st = check_invariants(box)
    assert st.depth_packs == 0
    assert (st.packs_evicted, st.records_evicted) == (3, 81)
    box.close()


def test_eviction_matches_reference_model(db: Path, clock: FakeClock) -> None:
    """Random appends against a model of the stated policy: lowest priority, then oldest."""
    rng = random.Random(8428)
    size = _size(Outbox(db.with_name("probe.db"), GW, clock=FakeClock()), 0, recs(3))
    box = Outbox(db, GW, clock=clock, max_bytes=6 * size)
    model: dict[tuple[int, int], tuple[int, int, int]] = {}  # key -> (priority, size, n)
    evicted_records = 0
    for _ in range(60):
        priority = rng.choice([PRIORITY_TELEMETRY] * 4 + [PRIORITY_EVENT, PRIORITY_WARNING])
        batches = [recs(rng.randint(1, 6)) for _ in range(rng.randint(1, 3))]
        keys = box.append(batches, priority=priority)
        for key, batch in zip(keys, batches, strict=True):
            model[key] = (priority, _size(box, key[1], batch), len(batch))
        # keys are (epoch, seq): within one epoch seq order is insertion (id) order
        while sum(s for _, s, _ in model.values()) > box.max_bytes:
            victim = min(model, key=lambda k: (model[k][0], k))
            evicted_records += model.pop(victim)[2]
        assert {(e.epoch, e.seq) for e in box.peek(1000)} == set(model)
        st = check_invariants(box)
        assert st.records_evicted == evicted_records
    box.close()


# -- age bound ----------------------------------------------------------------------------
def test_expire_drops_old_packs(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock, max_age_s=60)
    clock.now = 1000.0
    box.append([recs(2)], priority=PRIORITY_WARNING)  # age does not care about priority
    clock.now = 1030.0
    box.append([recs(3)])
    clock.now = 1060.0
    assert box.expire() == 0  # created == cutoff is not older than max_age_s
    clock.now = 1070.0
    assert box.expire() == 2
    assert [e.seq for e in box.peek(10)] == [1]
    st = check_invariants(box)
    assert (st.packs_expired, st.records_expired) == (1, 2)
    assert st.oldest_age_s == 40.0
    assert box.expire() == 0
    clock.now = 1100.5
    assert box.expire() == 3
    st = check_invariants(box)
    assert (st.depth_packs, st.packs_expired, st.records_expired) == (0, 2, 5)
    box.close()


def test_expire_without_max_age_keeps_everything(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    box.append([recs(1)])
    clock.now += 10**9
    assert box.expire() == 0
    assert box.depth() == 1
    box.close()


def test_counters_add_up_after_mixed_operations(db: Path, clock: FakeClock) -> None:
    rng = random.Random(7)
    box = Outbox(db, GW, clock=clock, max_bytes=4000, max_age_s=100)
    for step in range(80):
        clock.now += rng.uniform(0, 10)
        op = rng.random()
        if op < 0.6:
            box.append([recs(rng.randint(1, 5))], priority=rng.choice([0, 0, 5, 9]))
        elif op < 0.85:
            entries = box.peek(rng.randint(0, 4))
            box.ack([e.id for e in entries if rng.random() < 0.7])
        else:
            box.expire()
        if step % 10 == 0:  # and across restarts
            box.close()
            box = Outbox(db, GW, clock=clock, max_bytes=4000, max_age_s=100)
        st = check_invariants(box)
    assert st.packs_acked and st.packs_evicted and st.packs_expired
    box.close()


def test_append_colliding_on_epoch_seq_is_rolled_back(db: Path, clock: FakeClock) -> None:
    writer = Outbox(db, GW, clock=clock)
    writer.append([recs(1)])
    # a second handle on the same epoch (new_epoch=False) collides on (epoch, seq)
    other = Outbox(db, GW, clock=clock, new_epoch=False)
    writer.append([recs(1)])
    with pytest.raises(sqlite3.IntegrityError):
        other.append([recs(5)])
    assert other.stats().packs_appended == 2  # nothing of the failed append stayed
    assert other.depth() == 2
    assert other.append([recs(1)]) == [(1, 2)]  # and the handle still works
    writer.close()
    other.close()


def _fail_next(db: Path, sql: str) -> None:
    """Make the next statement on the given table raise inside the outbox's transaction."""
    con = sqlite3.connect(db)
    con.execute(sql)
    con.commit()
    con.close()


def _drop_trigger(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER fail")
    con.commit()
    con.close()


@pytest.mark.parametrize(
    "trigger",
    [
        # the counters update after the INSERT, inside the same transaction
        "CREATE TRIGGER fail BEFORE UPDATE ON meta BEGIN SELECT RAISE(ABORT, 'disk full'); END",
        # eviction DELETE inside the append transaction
        "CREATE TRIGGER fail BEFORE DELETE ON packs BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    ],
    ids=["counters", "eviction"],
)
def test_failed_append_leaves_byte_count_right(db: Path, clock: FakeClock, trigger: str) -> None:
    """A rolled-back append must leave no phantom bytes for later evictions to act on."""
    size = _size(Outbox(db.with_name("probe.db"), GW, clock=FakeClock()), 0, recs(2))
    box = Outbox(db, GW, clock=clock, max_bytes=2 * size)
    box.append([recs(2), recs(2)])
    _fail_next(db, trigger)
    with pytest.raises(sqlite3.IntegrityError):
        box.append([recs(2)])
    _drop_trigger(db)
    st = check_invariants(box)  # payload_bytes == what the table holds
    assert (st.depth_packs, st.packs_appended, st.packs_evicted) == (2, 2, 0)
    box.append([recs(2)])  # exactly one pack must go, not two
    assert sorted(e.seq for e in box.peek(10)) == [1, 3]
    st = check_invariants(box)
    assert (st.packs_evicted, st.payload_bytes) == (1, 2 * size)
    box.close()


class _CommitFailsOnce:
    """A connection whose next COMMIT fails and leaves the transaction open (like BUSY/I-O)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self._con = con
        self.armed = True

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.armed:
            self.armed = False
            raise sqlite3.OperationalError("disk I/O error")
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)


def test_failed_commit_does_not_wedge_the_outbox(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    box.append([recs(1)])
    real = box._db
    box._db = _CommitFailsOnce(real)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        box.append([recs(3)])
    assert not real.in_transaction  # rolled back, not left open
    # The next append works, and reuses the sequence number the failed pack never stored.
    assert box.append([recs(1)]) == [(1, 1)]
    st = check_invariants(box)
    assert (st.depth_packs, st.depth_records, st.packs_appended) == (2, 2, 2)
    box._db = real
    box.close()


# -- crash safety -------------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import sys, time
    from cloud_bridge.outbox import Outbox
    from cloud_bridge.senml import Record

    box = Outbox(sys.argv[1], "gw-01")
    n = int(sys.argv[2])
    for i in range(n):  # one transaction per append
        box.append([[Record("d1/level", 1.7e9 + i, float(i), "m")]])
    print("appended", box.epoch, flush=True)
    time.sleep(60)
    """
)


def test_committed_packs_survive_sigkill(db: Path) -> None:
    n = 150
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        word, child_epoch = line.split()
        assert word == "appended", proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert Path(f"{db}-wal").exists()  # no clean close: the WAL was never checkpointed away

    box = Outbox(db, GW)
    assert box.epoch > int(child_epoch)
    entries = sorted(box.peek(1000), key=lambda e: e.seq)
    assert [(e.epoch, e.seq) for e in entries] == [(int(child_epoch), i) for i in range(n)]
    for i, entry in enumerate(entries):
        pack = decode_pack(entry.payload)
        assert pack.key == (GW, int(child_epoch), i)
        assert pack.records == (Record("d1/level", 1.7e9 + i, float(i), "m"),)
    st = check_invariants(box)
    assert (st.packs_appended, st.records_appended) == (n, n)
    box.close()


# -- integrity, full disk, durability ------------------------------------------------------
def test_corrupt_file_is_moved_aside_and_reported(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    box.append([recs(3)])
    box.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 3000)  # header intact, body garbage
    fresh = Outbox(db, GW, clock=clock)
    assert fresh.moved_aside is not None and fresh.moved_aside.exists()
    assert fresh.moved_aside.read_bytes().startswith(b"SQLite format 3")
    st = fresh.stats()
    assert st.corrupt_files_moved_aside == 1 and st.depth_packs == 0
    # The fresh file must not start the epochs again: central has (gateway, 1, 0) already
    # and would drop new packs as duplicates. The sidecar epoch file remembers.
    assert fresh.append([recs(1)]) == [(2, 0)]
    fresh.close()


def test_epoch_never_repeats_even_when_file_and_sidecar_are_lost(db: Path) -> None:
    box = Outbox(db, GW, clock=FakeClock(1_790_000_000.0))
    first = box.epoch
    box.close()
    for path in db.parent.iterdir():
        path.unlink()
    later = Outbox(db, GW, clock=FakeClock(1_790_000_050.0))
    assert later.epoch > first  # the clock is the last floor
    later.close()


def test_not_a_database_is_moved_aside(db: Path, clock: FakeClock) -> None:
    db.write_text("this is not sqlite at all\n" * 100)
    box = Outbox(db, GW, clock=clock)
    assert box.moved_aside is not None
    assert box.moved_aside.read_text().startswith("this is not sqlite")
    box.close()


def test_full_file_evicts_oldest_telemetry_and_keeps_warnings(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock, max_file_bytes=256 * 1024)
    box.append([recs(5)], priority=PRIORITY_WARNING)
    appended = 0
    for _ in range(400):  # far more than 256 KiB of telemetry
        box.append([recs(20)])
        appended += 20
    st = check_invariants(box)
    assert st.records_evicted > 0, "the file cap must have forced eviction"
    assert st.file_bytes <= 256 * 1024 * 1.25  # the WAL may briefly exceed its share
    entries = box.peek(10_000)
    assert entries[0].priority == PRIORITY_WARNING  # the warning survived
    telemetry_ids = [e.id for e in entries if e.priority == PRIORITY_TELEMETRY]
    assert telemetry_ids == sorted(telemetry_ids) and telemetry_ids[0] > 2  # oldest went
    box.close()


def test_full_file_of_warnings_evicts_oldest_warnings_last(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock, max_file_bytes=64 * 1024)
    for _ in range(300):
        box.append([recs(20)], priority=PRIORITY_WARNING)
    st = check_invariants(box)
    assert st.records_evicted > 0 and st.depth_packs > 0
    ids = [e.id for e in box.peek(10_000)]
    assert max(ids) == st.packs_appended  # the newest warning is kept
    box.close()


def test_pack_larger_than_the_file_raises_outbox_full(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock, max_file_bytes=64 * 1024)
    box.append([recs(5)])
    with pytest.raises(OutboxFull):
        box.append([recs(3000)])
    st = check_invariants(box)
    assert st.depth_packs == 0 and st.records_evicted == 5  # it tried, by the policy
    assert box.append([recs(1)])[0][1] == 1  # still usable; the failed pack's seq reused
    box.close()


def test_priority_appends_restore_normal_sync(db: Path, clock: FakeClock) -> None:
    box = Outbox(db, GW, clock=clock)
    box.append([recs(1)], priority=PRIORITY_WARNING)
    (level,) = box._db.execute("PRAGMA synchronous").fetchone()
    assert level == 1  # NORMAL again after the FULL-synchronous warning transaction
    box.close()


def test_marking_sent_on_a_full_file_makes_room_instead_of_failing(
    db: Path, clock: FakeClock
) -> None:
    box = Outbox(db, GW, clock=clock, max_file_bytes=128 * 1024)
    for _ in range(200):
        box.append([recs(20)])
    ids = [e.id for e in box.peek(10_000)]
    box.mark_sent(ids)  # rows grow (sent_at): pages are needed on a file at its cap
    st = box.stats()
    assert st.depth_packs > 0
    assert st.records_appended == st.depth_records + st.records_evicted
    assert box.peek(10_000) == []  # every surviving pack is marked sent
    box.close()
