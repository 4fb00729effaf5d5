"""The CAP Atom feed, parsed as XML and checked against RFC 4287 and the CAP-feed habits."""

from __future__ import annotations

import re
from datetime import datetime

import httpx
from fastapi import FastAPI
from lxml import etree

from central.cap import CAP_NS, parse_cap
from central.delivery import Delivery, EventHub, feeds_router
from central.delivery.atom import ATOM_NS, entry_id, rfc3339
from tests.test_delivery_support import Central, auth_for, serve

NS = {"a": ATOM_NS, "cap": CAP_NS}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")


async def test_feed_lists_cap_messages_newest_first_each_linking_its_cap_document(tmp_path):
    central = Central.open(tmp_path / "c.db")
    delivery = Delivery(central.store.db, EventHub(), central.asset_site)
    issued = central.gas("gas-1", [0.3, 0.3, 0.6]) + central.gas("gas-3", [0.3, 0.3])
    assert [m.msg_type for m in issued] == ["Alert", "Update", "Alert"]
    app = FastAPI()
    token = auth_for(app, central.store.db)
    async with (
        serve(app := _with_router(app, delivery)) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token('viewer')}"}
        ) as client,
    ):
        response = await client.get("/api/v1/alerts.atom")
        limited = await client.get("/api/v1/alerts.atom", params={"limit": 1})
        anonymous = await client.get("/api/v1/alerts.atom", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    assert anonymous.status_code == 401
    feed = etree.fromstring(response.content)
    assert feed.tag == f"{{{ATOM_NS}}}feed"
    for required in ("a:id", "a:title", "a:updated", "a:author/a:name"):
        assert feed.find(required, NS) is not None, required
    assert feed.find("a:link[@rel='self']", NS).get("href") == f"{base}/api/v1/alerts.atom"
    entries = feed.findall("a:entry", NS)
    assert len(entries) == 3
    identifiers = [e.findtext("cap:identifier", namespaces=NS) for e in entries]
    assert identifiers == [m.identifier for m in reversed(issued)]  # newest first
    assert feed.findtext("a:updated", namespaces=NS) == entries[0].findtext(
        "a:updated", namespaces=NS
    )
    ids = set()
    for entry, message in zip(entries, reversed(issued), strict=True):
        xml = central.store.alert_xml(message.identifier)
        cap = parse_cap(xml)
        link = entry.find("a:link[@rel='alternate']", NS)
        assert link.get("type") == "application/cap+xml"
        assert link.get("href") == f"{base}/api/v1/alerts/{message.identifier}.xml"
        assert entry.findtext("a:title", namespaces=NS) == cap["headline"]
        for tag in ("a:published", "a:updated"):
            stamp = entry.findtext(tag, namespaces=NS)
            assert RFC3339.match(stamp), stamp
            assert datetime.fromisoformat(stamp) == datetime.fromisoformat(cap["sent"])
        assert entry.findtext("cap:msgType", namespaces=NS) == message.msg_type
        assert entry.findtext("cap:event", namespaces=NS) == cap["event"]
        assert entry.findtext("cap:severity", namespaces=NS) in {"Moderate", "Severe"}
        assert entry.findtext("cap:areaDesc", namespaces=NS) in {"Tunnel A3", "Bridge 2"}
        ids.add(entry.findtext("a:id", namespaces=NS))
    assert len(ids) == 3 and all(i.startswith("urn:uuid:") for i in ids)
    assert len(etree.fromstring(limited.content).findall("a:entry", NS)) == 1
    central.store.close()


def _with_router(app: FastAPI, delivery: Delivery) -> FastAPI:
    app.include_router(feeds_router(delivery))
    return app


async def test_an_empty_feed_is_still_a_valid_feed(tmp_path):
    central = Central.open(tmp_path / "c.db")
    delivery = Delivery(central.store.db, EventHub(), central.asset_site)
    app = FastAPI()
    token = auth_for(app, central.store.db)
    async with serve(_with_router(app, delivery)) as base, httpx.AsyncClient() as client:
        body = (
            await client.get(f"{base}/api/v1/alerts.atom?access_token={token('viewer')}")
        ).content
    feed = etree.fromstring(body)
    assert feed.findall("a:entry", NS) == []
    assert RFC3339.match(feed.findtext("a:updated", namespaces=NS))
    central.store.close()


def test_entry_ids_are_stable_and_cap_utc_becomes_rfc3339_utc():
    assert entry_id("s@x", "id-1") == entry_id("s@x", "id-1") != entry_id("s@x", "id-2")
    assert rfc3339("2026-11-21T10:00:00-00:00") == "2026-11-21T10:00:00+00:00"
    assert rfc3339("2026-11-21T18:00:00+08:00") == "2026-11-21T18:00:00+08:00"
