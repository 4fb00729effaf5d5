"""Webhook administration over HTTP (real uvicorn, real token check)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from central.delivery import Delivery, EventHub, RetryPolicy, webhooks_router
from central.delivery.signing import verify
from tests.test_delivery_support import Central, auth_for, eventually, receiver, serve


async def test_admin_manages_subscriptions_and_sees_dead_letters(tmp_path):
    central = Central.open(tmp_path / "c.db")
    policy = RetryPolicy(max_attempts=2, base_delay_s=0.05, jitter=0.0, timeout_s=2)
    delivery = Delivery(central.store.db, EventHub(), central.asset_site, policy)
    app = FastAPI()
    token = auth_for(app, central.store.db)
    app.include_router(webhooks_router(delivery))
    admin = {"Authorization": f"Bearer {token('admin')}"}
    operator = {"Authorization": f"Bearer {token('operator')}"}

    stop = asyncio.Event()
    worker = asyncio.create_task(delivery.run(stop))
    async with (
        receiver(lambda n: 500) as rx,
        serve(app) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        assert (await http.get("/api/v1/webhooks", headers=operator)).status_code == 403
        assert (await http.get("/api/v1/webhooks")).status_code == 401
        bad = await http.post("/api/v1/webhooks", json={"url": "ftp://x/y"}, headers=admin)
        assert bad.status_code == 422
        short = await http.post(
            "/api/v1/webhooks", json={"url": rx.url, "secret": "short"}, headers=admin
        )
        assert short.status_code == 422
        created = await http.post(
            "/api/v1/webhooks", json={"url": rx.url, "levels": ["yellow"]}, headers=admin
        )
        assert created.status_code == 201
        sub = created.json()
        assert len(sub["secret"]) >= 32 and sub["levels"] == ["yellow"]
        listed = (await http.get("/api/v1/webhooks", headers=admin)).json()
        assert [s["id"] for s in listed] == [sub["id"]]
        assert "secret" not in listed[0] and sub["secret"] not in str(listed)

        delivery.on_issued(central.gas("gas-1", [0.3, 0.3, 0.3]))
        await eventually(
            lambda: delivery.webhooks.stats()["deliveries"]["dead"] == 1, 10, "dead letter"
        )
        dead = (await http.get("/api/v1/webhooks/deliveries?state=dead", headers=admin)).json()
        assert len(dead) == 1 and dead[0]["attempts"] == 2
        assert all(
            verify(sub["secret"], r.headers["x-sentryline-signature"], r.body) for r in rx.requests
        )
        stats = (await http.get("/api/v1/webhooks/stats", headers=admin)).json()
        assert stats["webhooks"]["deliveries"]["dead"] == 1
        assert stats["webhooks"]["subscriptions"] == 1

        again = await http.post(f"/api/v1/webhooks/deliveries/{dead[0]['id']}/retry", headers=admin)
        assert again.status_code == 202
        await eventually(lambda: len(rx.requests) == 4, 10, "two more attempts")
        missing = await http.post("/api/v1/webhooks/deliveries/d-nope/retry", headers=admin)
        assert missing.status_code == 404

        assert (
            await http.delete(f"/api/v1/webhooks/{sub['id']}", headers=admin)
        ).status_code == 204
        assert (
            await http.delete(f"/api/v1/webhooks/{sub['id']}", headers=admin)
        ).status_code == 404
        delivery.on_issued(central.gas("gas-1", [0.6]))  # after removal: nothing queued
        listed = (await http.get("/api/v1/webhooks", headers=admin)).json()
        assert listed[0]["active"] is False
    stop.set()
    await asyncio.wait_for(worker, 10)
    assert len(delivery.webhooks.deliveries()) == 1
    central.store.close()
