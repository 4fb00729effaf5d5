"""The HTTP API over a real store: registry CRUD, warning actions, readings downsampling,
audit; and an OpenAPI document with a model for every request and response."""

from __future__ import annotations

import random

import pytest

from central.cap import parse_cap
from central.config import AssetConfig
from central.rules.base import Transition
from tests.opsdb import BACKENDS, build_central, open_backend

T0 = 1_795_000_000.0


@pytest.fixture(params=BACKENDS)
def central(request, tmp_path):
    assets = [AssetConfig(id="tunnel-a3", site="east", devices=["gw-1/gas-1"])]
    for db in open_backend(request.param, tmp_path):
        yield build_central(db, assets, anonymous_role="viewer")


def test_registry_crud_with_audit(central):
    c, admin = central.client, central.as_role("admin")
    site = c.put(
        "/api/v1/sites/tower-1", json={"name": "Tower 1", "meta": {"floors": 30}}, headers=admin
    )
    assert site.status_code == 200
    assert site.json() == {
        "id": "tower-1",
        "name": "Tower 1",
        "meta": {"floors": 30},
        "assets": [],
        "level": None,
        "incidents": [],
    }
    body = {
        "name": "Lift 2",
        "type": "elevator",
        "site": "tower-1",
        "meta": {"rated_speed_mps": 1.75},
        "location": {"lat": 31.8, "lon": 117.2},
        "devices": ["gw-2/lift-2"],
    }
    put = c.put("/api/v1/assets/lift-2", json=body, headers=admin)
    assert put.status_code == 200, put.text
    got = c.get("/api/v1/assets/lift-2").json()
    assert got["devices"] == ["gw-2/lift-2"] and got["meta"] == {"rated_speed_mps": 1.75}
    assert central.registry.asset_for("gw-2", "lift-2") == "lift-2"  # ingest sees it at once
    assert central.registry.info("lift-2").meta == {"rated_speed_mps": 1.75}
    assert [a["id"] for a in c.get("/api/v1/assets?site=tower-1").json()] == ["lift-2"]
    assert c.get("/api/v1/sites/tower-1").json()["assets"] == ["lift-2"]

    moved = c.put("/api/v1/bindings/gw-1/gas-1", json={"asset": "lift-2"}, headers=admin)
    assert moved.status_code == 200
    assert {(b["gateway"], b["device"]) for b in c.get("/api/v1/bindings?asset=lift-2").json()} == {
        ("gw-1", "gas-1"),
        ("gw-2", "lift-2"),
    }
    unknown = c.put("/api/v1/bindings/gw-1/gas-1", json={"asset": "nope"}, headers=admin)
    assert unknown.status_code == 409
    assert c.delete("/api/v1/bindings/gw-1/gas-1", headers=admin).status_code == 200
    assert c.delete("/api/v1/bindings/gw-1/gas-1", headers=admin).status_code == 404
    assert c.delete("/api/v1/sites/tower-1", headers=admin).status_code == 409  # has assets
    assert c.delete("/api/v1/assets/lift-2", headers=admin).status_code == 200
    assert c.get("/api/v1/assets/lift-2").status_code == 404
    assert c.delete("/api/v1/sites/tower-1", headers=admin).status_code == 200

    audit = c.get("/api/v1/audit", headers=admin).json()
    assert [e["action"] for e in reversed(audit)] == [
        "site.put",
        "asset.put",
        "binding.put",
        "binding.delete",
        "asset.delete",
        "site.delete",
    ]
    asset_put = audit[-2]
    assert asset_put["actor"] == "admin-1" and asset_put["before"] is None
    assert asset_put["after"]["meta"] == {"rated_speed_mps": 1.75}
    assert audit[-3]["before"] == {"asset": "tunnel-a3"} and audit[-3]["after"] == {
        "asset": "lift-2"
    }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/assets/Bad Id", {}),
        ("/api/v1/assets/a1", {"location": {"lat": 91, "lon": 0}}),
        ("/api/v1/assets/a1", {"devices": ["no-slash"]}),
        ("/api/v1/assets/a1", {"colour": "red"}),
        ("/api/v1/assets/a1", {"geometry": [{"lat": 1, "lon": 2}]}),
        ("/api/v1/assets/a1", {"geometry": [{"lat": 1, "lon": 2}] * 3}),  # not 3 distinct
        ("/api/v1/sites/s1", {"meta": "not a mapping"}),
    ],
)
def test_bad_registry_input_is_a_clear_422(central, path, body):
    response = central.client.put(path, json=body, headers=central.as_role("admin"))
    assert response.status_code == 422
    assert central.client.get("/api/v1/audit", headers=central.as_role("admin")).json() == []


def test_warning_endpoints(central, assert_valid_cap):
    c, operator = central.client, central.as_role("operator")
    tr = Transition("tunnel-a3", "gas_leak", "orange", T0, "gas.ch4", {"CH4_LEL_RATIO": "0.52"})
    alert = central.warnings.apply(tr)
    assert alert is not None
    [warning] = c.get("/api/v1/warnings?active=true&asset=tunnel-a3&level=orange").json()
    assert c.get("/api/v1/warnings?level=red").json() == []
    assert (warning["type"], warning["event_time"], warning["cleared_event_time"]) == (
        "gas_leak",
        T0,
        None,
    )
    assert warning["incident"] == alert.incident and warning["acknowledged"] is False
    wid = warning["id"]
    assert c.get(f"/api/v1/warnings/{wid}").json() == warning
    assert c.get("/api/v1/warnings/w-nope").status_code == 404

    acked = c.post(f"/api/v1/warnings/{wid}/ack", headers=operator).json()
    assert (acked["acknowledged"], acked["acknowledged_by"]) == (True, "operator-1")
    assigned = c.post(
        f"/api/v1/warnings/{wid}/assign", json={"assignee": "crew-3"}, headers=operator
    )
    assert assigned.json()["assignee"] == "crew-3"
    cleared = c.post(f"/api/v1/warnings/{wid}/clear", json={"reason": "vented"}, headers=operator)
    assert cleared.status_code == 200
    body = cleared.json()
    assert body["warning"]["active"] is False and body["warning"]["cleared_by"] == "operator-1"
    xml = c.get(f"/api/v1/alerts/{body['cap_identifier']}.xml").content
    assert_valid_cap(xml)
    cap = parse_cap(xml)
    assert (cap["msgType"], cap["incidents"]) == ("Cancel", alert.incident)
    assert c.post(f"/api/v1/warnings/{wid}/clear", json={}, headers=operator).status_code == 409
    assert c.post("/api/v1/warnings/w-nope/ack", headers=operator).status_code == 404
    alerts = c.get("/api/v1/alerts").json()
    assert [a["msgType"] for a in alerts] == ["Alert", "Cancel"]


def insert_readings(db, rows):
    db.executemany(
        "INSERT INTO readings (gateway, device, quantity, t, v, vs, vb, unit, ut, q, epoch, seq)"
        " VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, 1, ?)",
        rows,
    )


def test_readings_are_downsampled_per_bucket(central):
    rng = random.Random(7)
    series = [(T0 + i * 7.3, rng.uniform(0, 1)) for i in range(400)]  # ~2,920 s of data
    insert_readings(
        central.store.db,
        [("gw-1", "gas-1", "ch4_lel", t, v, i) for i, (t, v) in enumerate(series)]
        + [("gw-1", "gas-2", "ch4_lel", T0 + 1, 99.0, 0), ("gw-1", "gas-1", "o2", T0 + 1, 99.0, 1)],
    )
    start, end, step = T0 + 100, T0 + 2500, 60.0
    got = central.client.get(
        "/api/v1/readings",
        params={
            "gateway": "gw-1",
            "device": "gas-1",
            "quantity": "ch4_lel",
            "start": start,
            "end": end,
            "step": step,
        },
    )
    assert got.status_code == 200, got.text
    body = got.json()
    expected: dict[int, list[float]] = {}
    for t, v in series:
        if start <= t < end:
            expected.setdefault(int((t - start) // step), []).append(v)
    assert [b["start"] for b in body["buckets"]] == [start + k * step for k in sorted(expected)]
    for bucket, k in zip(body["buckets"], sorted(expected), strict=True):
        values = expected[k]
        assert bucket["count"] == len(values)
        assert bucket["min"] == pytest.approx(min(values))
        assert bucket["max"] == pytest.approx(max(values))
        assert bucket["avg"] == pytest.approx(sum(values) / len(values))
    assert (body["start"], body["end"], body["step"]) == (start, end, step)


@pytest.mark.parametrize(
    "params",
    [
        {"start": 10, "end": 5},
        {"start": 0, "end": 1_000_000, "step": 1},  # a million buckets
        {"start": 0, "end": 10, "step": 0},
    ],
)
def test_readings_bad_ranges_are_422(central, params):
    query = {"gateway": "g", "device": "d", "quantity": "q", **params}
    assert central.client.get("/api/v1/readings", params=query).status_code == 422


def test_openapi_has_a_model_for_every_operation(central):
    spec = central.client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/v1/sites",
        "/api/v1/assets/{asset_id}",
        "/api/v1/bindings/{gateway}/{device}",
        "/api/v1/readings",
        "/api/v1/warnings/{warning_id}/ack",
        "/api/v1/warnings/{warning_id}/assign",
        "/api/v1/warnings/{warning_id}/clear",
        "/api/v1/incidents/{incident_id}",
        "/api/v1/audit",
        "/api/v1/tokens",
    ):
        assert path in paths, path
    untyped = []
    for path, operations in paths.items():
        for method, op in operations.items():
            ok = op["responses"].get("200") or op["responses"].get("201")
            content = (ok or {}).get("content", {})
            schema = next(iter(content.values()), {}).get("schema")
            if path.endswith(".xml") or path in ("/healthz", "/api/v1/stats"):
                continue
            if not schema or schema == {}:
                untyped.append(f"{method} {path}")
    assert untyped == []
    assert {"HTTPBearer", "APIKeyQuery"} <= set(spec["components"]["securitySchemes"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/v1/incidents?site=%00", None),
        ("get", "/api/v1/warnings/w-%00", None),
        ("put", "/api/v1/sites/s1", {"name": "a\x00b"}),
        ("post", "/api/v1/tokens", {"name": "x\x00", "role": "viewer"}),
        ("post", "/api/v1/tokens", {"name": "   ", "role": "viewer"}),  # blank name
    ],
)
def test_nul_and_blank_text_are_422_not_500(central, method, path, body):
    """Found by the schemathesis run on PostgreSQL (its text type cannot hold NUL)."""
    response = central.client.request(method, path, json=body, headers=central.as_role("admin"))
    assert response.status_code == 422, response.text


def test_readings_reach_back_into_the_retained_aggregates(central):
    """Raw rows expire into readings_1m and readings_1h (central/retention.py): the query
    serves each period from what is left of it, counting every reading once."""
    db, series = central.store.db, ("gw-1", "gas-1", "ch4_lel")
    hour = 3600.0
    base = 1_795_000_000.0 // hour * hour
    # Hours 0-1: only hourly aggregates are left. Hour 2: minutes (and its hour, which
    # must not count twice). Hour 3: raw readings.
    db.executemany(
        "INSERT INTO readings_1h (gateway, device, quantity, bucket, n, vmin, vmax, vsum)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (*series, base, 60, 0.1, 0.3, 12.0),
            (*series, base + hour, 60, 0.2, 0.4, 18.0),
            (*series, base + 2 * hour, 2, 0.5, 0.7, 1.2),  # duplicate of the minutes below
        ],
    )
    db.executemany(
        "INSERT INTO readings_1m (gateway, device, quantity, bucket, n, vmin, vmax, vsum)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (*series, base + 2 * hour, 1, 0.5, 0.5, 0.5),
            (*series, base + 2 * hour + 60, 1, 0.7, 0.7, 0.7),
        ],
    )
    insert_readings(
        db, [(*series, base + 3 * hour + 5, 0.9, 0), (*series, base + 3 * hour + 9, 1.1, 1)]
    )
    query = dict(zip(("gateway", "device", "quantity"), series, strict=True))
    body = central.client.get(
        "/api/v1/readings", params=query | {"start": base, "end": base + 4 * hour, "step": hour}
    ).json()
    got = [
        (b["start"] - base, b["count"], b["min"], b["max"], round(b["avg"], 6))
        for b in body["buckets"]
    ]
    assert got == [
        (0.0, 60, 0.1, 0.3, 0.2),
        (hour, 60, 0.2, 0.4, 0.3),
        (2 * hour, 2, 0.5, 0.7, 0.6),
        (3 * hour, 2, 0.9, 1.1, 1.0),
    ]


def test_readings_answer_the_same_before_and_after_retention(central):
    """The real retention folds expired raw rows into the aggregates: the same query gives
    the same buckets (aligned to the aggregate widths) before and after."""
    from central.config import RetentionConfig
    from central.retention import Retention

    db, hour = central.store.db, 3600.0
    base = 1_795_000_000.0 // hour * hour
    rng = random.Random(11)
    insert_readings(
        db,
        [
            ("gw-1", "gas-1", "ch4_lel", base + rng.uniform(0, 3 * hour), rng.random(), i)
            for i in range(600)
        ],
    )

    def buckets(step: float) -> list[float]:
        query = {"gateway": "gw-1", "device": "gas-1", "quantity": "ch4_lel"}
        body = central.client.get(
            "/api/v1/readings", params=query | {"start": base, "end": base + 3 * hour, "step": step}
        ).json()
        # Flat, for pytest.approx: sums folded in another order differ in the last bits.
        fields = ("start", "count", "min", "max", "avg")
        return [float(b[f]) for b in body["buckets"] for f in fields]

    raw_10min, raw_hourly = buckets(600), buckets(hour)
    assert sum(raw_hourly[1::5]) == 600
    now = base + 10 * 86_400  # ten days later
    Retention(db, RetentionConfig(raw_days=1, minute_days=400), clock=lambda: now).run()
    assert db.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0
    assert buckets(600) == pytest.approx(raw_10min, rel=1e-12)  # from the 1-minute aggregates
    Retention(db, RetentionConfig(raw_days=1, minute_days=5), clock=lambda: now).run()
    assert db.execute("SELECT COUNT(*) FROM readings_1m").fetchone()[0] == 0
    assert buckets(hour) == pytest.approx(raw_hourly, rel=1e-12)  # from the 1-hour aggregates
