"""Incidents: warnings close in space and time share an id that every CAP message carries;
the incident's level follows its active members; a site's level is its assets' highest."""

from __future__ import annotations

import pytest

from central.cap import parse_cap
from central.config import AssetConfig, CapConfig
from central.incidents import IncidentTracker, close_in_space, distance_km
from central.registry import AssetInfo, AssetRegistry
from central.rules.base import Transition
from central.store import Store
from central.warnings import WarningManager
from tests.opsdb import BACKENDS, build_central, open_backend

T0 = 1_795_000_000.0


def asset(id, site, lat=None, lon=None):
    loc = {"lat": lat, "lon": lon} if lat is not None else None
    return AssetConfig(id=id, site=site, location=loc)  # type: ignore[arg-type]


# 0.001° of latitude ≈ 111 m
ASSETS = [
    asset("well-1", "east", 31.820, 117.22),
    asset("well-2", "east", 31.823, 117.22),  # ~330 m from well-1
    asset("well-9", "east", 31.900, 117.22),  # ~8.9 km away, same site
    asset("pump-1", "west", 31.8201, 117.22),  # 11 m away, other site
    asset("hall-a", "tower"),  # no position
    asset("hall-b", "tower"),
]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    for db in open_backend(request.param, tmp_path):
        yield Store(db)


@pytest.fixture
def manager(store):
    registry = AssetRegistry(ASSETS, {}, db=store.db)
    incidents = IncidentTracker(store.db, registry.info, radius_km=1.0, window_s=600)
    return WarningManager(store, CapConfig(), registry.info, lambda: T0 + 5, incidents=incidents)


def raise_(manager, asset, level="yellow", t=T0, warning_type="gas_leak"):
    tr = Transition(asset, warning_type, level, t, "gas.ch4")
    return manager.apply(tr)


def test_distance_and_closeness():
    assert distance_km((31.82, 117.22), (31.823, 117.22)) == pytest.approx(0.3336, abs=1e-3)
    a = AssetInfo("a", "a", 31.82, 117.22, site="s")
    assert close_in_space(a, AssetInfo("b", "b", 31.823, 117.22, site="s"), 1.0)
    assert close_in_space(a, AssetInfo("b", "b", 31.823, 117.22), 1.0)  # no site: distance
    assert not close_in_space(a, AssetInfo("b", "b", 31.823, 117.22, site="t"), 1.0)
    assert not close_in_space(a, AssetInfo("b", "b", 31.9, 117.22, site="s"), 1.0)
    assert close_in_space(AssetInfo("x", "x", site="s"), AssetInfo("y", "y", site="s"), 1.0)
    assert not close_in_space(AssetInfo("x", "x"), AssetInfo("y", "y"), 1.0)


def test_nearby_warnings_share_an_incident_and_far_ones_do_not(manager, assert_valid_cap):
    first = raise_(manager, "well-1")
    near = raise_(manager, "well-2", "orange", T0 + 60)
    far = raise_(manager, "well-9", t=T0 + 60)
    other_site = raise_(manager, "pump-1", t=T0 + 60)
    other_type = raise_(manager, "well-1", t=T0 + 90, warning_type="water_leak")
    assert first.incident == near.incident == other_type.incident
    assert far.incident not in (first.incident, other_site.incident)
    assert other_site.incident != first.incident
    incident = manager.incidents.get(first.incident)
    assert incident is not None
    assert (incident.site, incident.level, incident.peak_level, incident.active) == (
        "east",
        "orange",
        "orange",
        True,
    )
    assert [m.asset for m in incident.members] == ["well-1", "well-2", "well-1"]
    for message in (first, near, far, other_site, other_type):
        assert_valid_cap(message.xml)
        assert parse_cap(message.xml)["incidents"] == message.incident


def test_same_site_without_positions_groups(manager):
    assert raise_(manager, "hall-a").incident == raise_(manager, "hall-b").incident


def test_every_message_of_a_member_carries_the_incident_and_it_closes(manager):
    a = raise_(manager, "well-1")
    b = raise_(manager, "well-2", t=T0 + 10)
    up = raise_(manager, "well-1", "red", T0 + 20)
    assert manager.incidents.get(a.incident).level == "red"
    down = raise_(manager, "well-1", None, T0 + 30)
    assert {a.incident, b.incident, up.incident, down.incident} == {a.incident}
    assert parse_cap(down.xml)["incidents"] == a.incident
    incident = manager.incidents.get(a.incident)
    assert (incident.level, incident.peak_level, incident.active) == ("yellow", "red", True)
    raise_(manager, "well-2", None, T0 + 40)
    incident = manager.incidents.get(a.incident)
    assert (incident.level, incident.active, incident.closed_event_time) == (None, False, T0 + 40)
    assert manager.incidents.list(active=True) == []


def test_a_closed_incident_reopens_within_the_window_only(manager):
    first = raise_(manager, "well-1")
    raise_(manager, "well-1", None, T0 + 10)
    again = raise_(manager, "well-2", t=T0 + 10 + 600)  # inside the 600 s window
    assert again.incident == first.incident
    assert manager.incidents.get(first.incident).active
    raise_(manager, "well-2", None, T0 + 700)
    later = raise_(manager, "well-1", t=T0 + 700 + 601)
    assert later.incident != first.incident


def test_incidents_and_site_levels_over_the_api(tmp_path):
    for db in open_backend("sqlite", tmp_path):
        central = build_central(db, ASSETS, anonymous_role="viewer")
        raise_(central.warnings, "well-1", "yellow")
        message = raise_(central.warnings, "well-2", "red", T0 + 5)
        raise_(central.warnings, "pump-1", "blue", T0 + 5)
        sites = {s["id"]: s for s in central.client.get("/api/v1/sites").json()}
        assert sites["east"]["level"] == "red"  # the highest of its assets
        assert sites["west"]["level"] == "blue"
        assert sites["tower"]["level"] is None
        assert sites["east"]["incidents"] == [message.incident]
        listed = central.client.get("/api/v1/incidents?active=true&site=east").json()
        assert [i["id"] for i in listed] == [message.incident]
        detail = central.client.get(f"/api/v1/incidents/{message.incident}").json()
        assert detail["level"] == "red"
        assert [(m["asset"], m["level"]) for m in detail["members"]] == [
            ("well-1", "yellow"),
            ("well-2", "red"),
        ]
        warning = central.client.get("/api/v1/warnings?asset=well-2").json()[0]
        assert warning["incident"] == message.incident
        assert central.client.get("/api/v1/incidents/INC-nope").status_code == 404
