"""Warning lifecycle: acknowledge, assign, manual clear (CAP Cancel), audit; what every CAP
message carries (rule id, trigger values, effective, onset, area, internal-alarm profile).
On SQLite and PostgreSQL; every CAP document is checked against the XSD."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from central.cap import parse_cap
from central.config import AssetConfig, CapConfig
from central.registry import AssetRegistry
from central.rules.base import Transition
from central.store import Store
from central.warnings import WarningConflict, WarningManager, WarningNotFound
from tests.opsdb import BACKENDS, open_backend

T0 = 1_795_000_000.0  # event times (epoch seconds)
NOW = T0 + 30.0  # wall clock of central

ASSETS = [
    AssetConfig(
        id="tunnel-a3",
        name="Tunnel A3",
        site="hefei-east",
        location={"lat": 31.82, "lon": 117.22},  # type: ignore[arg-type]
        radius_km=0.2,
    ),
    AssetConfig(
        id="slope-7",
        name="Slope 7",
        geometry=[
            {"lat": 31.8, "lon": 117.2},  # type: ignore[list-item]
            {"lat": 31.81, "lon": 117.2},  # type: ignore[list-item]
            {"lat": 31.81, "lon": 117.21},  # type: ignore[list-item]
        ],
    ),
]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    for db in open_backend(request.param, tmp_path):
        yield Store(db)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def manager(store, clock):
    registry = AssetRegistry(ASSETS, {}, db=store.db)
    return WarningManager(store, CapConfig(sender="sl@test"), registry.info, clock)


def gas(level, t=T0, **changes) -> Transition:
    base = Transition(
        asset="tunnel-a3",
        warning_type="gas_leak",
        level=level,
        event_time=t,
        rule_id="gas.ch4",
        trigger={"CH4_LEL_RATIO": "0.2700", "THRESHOLD_LEL_RATIO": "0.2500"},
        summary="CH4 27.0 %LEL",
    )
    return dataclasses.replace(base, **changes)


def test_alert_carries_rule_trigger_effective_area_and_incident(manager, assert_valid_cap):
    message = manager.apply(gas("yellow"))
    assert message is not None
    assert_valid_cap(message.xml)
    cap = parse_cap(message.xml)
    assert cap["msgType"] == "Alert" and cap["level"] == "yellow"
    assert cap["parameters"]["RULE_ID"] == "gas.ch4"
    assert cap["parameters"]["CH4_LEL_RATIO"] == "0.2700"
    assert cap["parameters"]["SITE_ID"] == "hefei-east"
    assert datetime.fromisoformat(cap["effective"]).timestamp() == T0  # event time, not now
    assert datetime.fromisoformat(cap["sent"]).timestamp() == NOW
    assert b"<circle>31.82,117.22 0.2</circle>" in message.xml
    assert cap["incidents"] == message.incident and message.incident.startswith("INC-")


def test_polygon_geometry_becomes_the_cap_area(manager, assert_valid_cap):
    message = manager.apply(gas("red", asset="slope-7", warning_type="landslide"))
    assert message is not None
    assert_valid_cap(message.xml)
    assert b"<polygon>31.8,117.2 31.81,117.2 31.81,117.21 31.8,117.2</polygon>" in message.xml
    assert b"<circle>" not in message.xml


@pytest.mark.parametrize("warning_type", ["sensor_fault", "sensor_offline"])
def test_internal_alarms_are_unknown_and_assess(manager, assert_valid_cap, warning_type):
    message = manager.apply(gas("blue", warning_type=warning_type, rule_id="quality.flatline"))
    assert message is not None
    assert_valid_cap(message.xml)
    cap = parse_cap(message.xml)
    assert (cap["severity"], cap["urgency"], cap["certainty"], cap["responseType"]) == (
        "Unknown",
        "Unknown",
        "Unknown",
        "Assess",
    )
    assert cap["level"] == "blue"
    ordinary = parse_cap(manager.apply(gas("blue")).xml)  # type: ignore[union-attr]
    assert (ordinary["severity"], ordinary["responseType"]) == ("Minor", "Monitor")


def test_predicted_failure_time_is_the_cap_onset(manager, assert_valid_cap):
    onset = T0 + 20 * 3600
    by_field = manager.apply(gas("orange", onset=onset, certainty="Likely"))
    assert by_field is not None
    assert_valid_cap(by_field.xml)
    cap = parse_cap(by_field.xml)
    assert datetime.fromisoformat(cap["onset"]).timestamp() == onset
    assert cap["certainty"] == "Likely"
    by_trigger = manager.apply(
        gas("red", asset="slope-7", warning_type="landslide", trigger={"onset": str(onset)})
    )
    assert by_trigger is not None
    assert_valid_cap(by_trigger.xml)
    cap = parse_cap(by_trigger.xml)
    assert datetime.fromisoformat(cap["onset"]).timestamp() == onset
    assert "onset" not in cap["parameters"]
    assert parse_cap(manager.apply(gas("red")).xml)["onset"] is None  # type: ignore[union-attr]


def test_ack_assign_clear_with_audit(manager, clock, assert_valid_cap):
    alert = manager.apply(gas("yellow"))
    assert alert is not None
    warning_id = manager.list(active=True)[0]["id"]

    clock.now = NOW + 60
    acked = manager.acknowledge(warning_id, "kim")
    assert (acked["acknowledged"], acked["acknowledged_by"], acked["acknowledged_at"]) == (
        True,
        "kim",
        NOW + 60,
    )
    assert manager.acknowledge(warning_id, "lee")["acknowledged_by"] == "kim"  # idempotent

    assert manager.assign(warning_id, "crew-3", "kim")["assignee"] == "crew-3"
    assert manager.assign(warning_id, None, "kim")["assignee"] is None

    clock.now = NOW + 120
    cancel = manager.clear(warning_id, "kim", "false alarm: calibration gas")
    assert_valid_cap(cancel.xml)
    cap = parse_cap(cancel.xml)
    assert cap["msgType"] == "Cancel" and cap["level"] == "yellow"
    assert [r[1] for r in cap["references"]] == [alert.identifier]
    assert cap["parameters"]["RULE_ID"] == "manual.clear"
    assert cap["parameters"]["CLEARED_BY"] == "kim"
    assert "Cleared manually by kim: false alarm" in cancel.xml.decode()
    assert cap["incidents"] == alert.incident

    after = manager.find(warning_id)
    assert (after["active"], after["cleared_by"], after["cleared_event_time"]) == (
        False,
        "kim",
        NOW + 120,
    )
    assert ("tunnel-a3", "gas_leak") not in manager.active

    log = manager.audit.query(target=warning_id)
    assert [e.action for e in log] == [
        "warning.clear",
        "warning.assign",
        "warning.assign",
        "warning.ack",
    ]
    ack = log[-1]
    assert (ack.actor, ack.at) == ("kim", NOW + 60)
    assert ack.before["acknowledged_by"] is None and ack.after["acknowledged_by"] == "kim"
    assert log[0].after["reason"] == "false alarm: calibration gas"
    assert log[0].after["cap"] == cancel.identifier

    with pytest.raises(WarningConflict):
        manager.clear(warning_id, "kim")
    with pytest.raises(WarningConflict):
        manager.acknowledge(warning_id, "kim")
    with pytest.raises(WarningNotFound):
        manager.acknowledge("w-nope", "kim")


def test_after_a_manual_clear_the_rules_raise_a_fresh_warning(manager):
    manager.apply(gas("yellow"))
    first = manager.list()[0]["id"]
    manager.clear(first, "kim")
    assert manager.apply(gas(None, t=T0 + 5)) is None  # nothing left to cancel
    again = manager.apply(gas("orange", t=T0 + 10))
    assert again is not None and again.msg_type == "Alert"
    ids = [w["id"] for w in manager.list()]
    assert len(ids) == 2 and first in ids


def test_an_escalation_needs_a_new_acknowledgement(manager):
    manager.apply(gas("yellow"))
    warning_id = manager.list()[0]["id"]
    manager.acknowledge(warning_id, "kim")
    manager.apply(gas("yellow", t=T0 + 1))  # same level: nothing
    assert manager.find(warning_id)["acknowledged"] is True
    manager.apply(gas("orange", t=T0 + 2))
    assert manager.find(warning_id)["acknowledged"] is False
    manager.acknowledge(warning_id, "kim")
    manager.apply(gas("yellow", t=T0 + 3))  # de-escalation keeps it
    assert manager.find(warning_id)["acknowledged"] is True


def test_operator_state_survives_a_restart(manager, store, clock):
    manager.apply(gas("yellow"))
    warning_id = manager.list()[0]["id"]
    manager.acknowledge(warning_id, "kim")
    manager.assign(warning_id, "crew-3", "kim")
    registry = AssetRegistry([], {}, db=store.db)
    restarted = WarningManager(store, CapConfig(sender="sl@test"), registry.info, clock)
    view = restarted.find(warning_id)
    assert (view["acknowledged_by"], view["assignee"]) == ("kim", "crew-3")
    cancel = restarted.clear(warning_id, "lee")
    assert parse_cap(cancel.xml)["incidents"] == view["incident"]


def test_list_filters(manager):
    manager.apply(gas("yellow"))
    manager.apply(gas("red", asset="slope-7", warning_type="landslide"))
    manager.clear(manager.list(asset="slope-7")[0]["id"], "kim")
    assert [w["asset"] for w in manager.list(active=True)] == ["tunnel-a3"]
    assert [w["asset"] for w in manager.list(active=False)] == ["slope-7"]
    assert [w["type"] for w in manager.list(level="red")] == ["landslide"]
    assert manager.list(asset="nope") == []


def test_a_bad_position_from_a_birth_drops_the_area_not_the_warning(store, clock, assert_valid_cap):
    registry = AssetRegistry([], {}, db=store.db)
    registry.learn_birth(
        "gw-9", {"devices": [{"id": "d", "asset": "far", "location": {"lat": 200, "lon": 0}}]}
    )
    manager = WarningManager(store, CapConfig(), registry.info, clock)
    message = manager.apply(gas("red", asset="far"))
    assert message is not None
    assert_valid_cap(message.xml)
    assert b"<circle>" not in message.xml and b"<areaDesc>far</areaDesc>" in message.xml


def test_a_clear_made_by_another_worker_is_not_cancelled_or_updated_again(manager, store, clock):
    """Shared mode: an operator clears on a follower; the leader's copy must not act on it."""
    leader = manager
    leader.apply(gas("yellow"))
    warning_id = leader.list()[0]["id"]
    registry = AssetRegistry([], {}, db=store.db)
    follower = WarningManager(store, CapConfig(sender="sl@test"), registry.info, clock)
    follower.clear(warning_id, "kim")
    assert leader.apply(gas(None, t=T0 + 5)) is None  # already cancelled by the follower
    again = leader.apply(gas("orange", t=T0 + 10))  # the condition is back: a fresh warning
    assert again is not None and again.msg_type == "Alert"
    cancels = [w for w in leader.list() if w["id"] == warning_id]
    assert len(cancels) == 1 and cancels[0]["active"] is False
