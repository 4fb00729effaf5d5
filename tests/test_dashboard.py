"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright) against
the real central service fed over a real Mosquitto broker.

Screenshots go to test-artifacts/dashboard/. Skipped only when no chromium binary exists.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import aiomqtt
import httpx
import pytest

from central.config import CentralConfig
from central.service import CentralService
from cloud_bridge.mqtt import state_topic, telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack
from tests.test_delivery_support import ASSETS

pytestmark = pytest.mark.slow

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).exists()),
    None,
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"
COLOURS = {"yellow": "var(--yellow)", "orange": "var(--orange)", "none": "var(--none)"}


class Feeder:
    """A gateway's uplink as central sees it: SenML packs and state on the broker."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seq = 0
        self.clock = time.time() - 40

    async def online(self) -> None:
        body = {"state": "online", "epoch": 1, "devices": []}
        await self.client.publish(state_topic("site-north", "gw-1"), json.dumps(body), qos=1)

    async def readings(self, device: str, values: list[float]) -> None:
        for value in values:
            self.seq += 1
            self.clock += 1.0
            # ut: the sensor reports again within 10 minutes (no sensor_offline warning here)
            records = (Record(f"{device}/ch4_lel", self.clock, value, "/", 600.0),)
            pack = Pack("gw-1", 1, self.seq, records)
            await self.client.publish(
                telemetry_topic("site-north", "gw-1"), encode_pack(pack), qos=1
            )

    async def status(self, depth: int) -> None:
        self.seq += 1
        pack = Pack(
            "gw-1",
            1,
            self.seq,
            (Record("gateway/outbox_depth", time.time(), float(depth), "count"),),
        )
        await self.client.publish(telemetry_topic("site-north", "gw-1"), encode_pack(pack), qos=1)


async def until(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
async def test_dashboard_shows_plan_live_warnings_ack_and_charts(tmp_path, mosquitto):
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    config = CentralConfig.model_validate(
        {
            "broker": {"url": mosquitto.url},
            "storage": {"url": f"sqlite:///{tmp_path / 'central.db'}"},
            "http": {"port": 0},
            "client_id": "central-dashboard-test",
            "assets": ASSETS,
        }
    )
    central = CentralService(config)
    _, operator = central.auth.tokens.create("op-anna", "operator")
    _, viewer = central.auth.tokens.create("view-ben", "viewer")
    stop = asyncio.Event()
    service = asyncio.create_task(central.run(stop))
    try:
        await asyncio.wait_for(central.ready.wait(), 15)
        base = f"http://127.0.0.1:{central.http_port}"
        api = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {operator}"})
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as mqtt:
            feed = Feeder(mqtt)
            await feed.online()
            await feed.status(42)
            # History: quiet readings everywhere, and a yellow gas warning on tunnel-a3.
            await feed.readings("gas-2", [0.02, 0.03, 0.02, 0.04])
            await feed.readings("gas-3", [0.01, 0.01])
            await feed.readings("gas-1", [0.05, 0.12, 0.3, 0.31, 0.32])

            async def yellow_stored() -> bool:
                warnings = (await api.get("/api/v1/warnings")).json()
                return [(w["asset"], w["level"]) for w in warnings] == [("tunnel-a3", "yellow")]

            try:
                await until(yellow_stored, 15, "the yellow warning in the API")
            except AssertionError:
                print((await api.get("/api/v1/warnings")).json())
                print((await api.get("/api/v1/stats")).json())
                raise

            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
                )
                try:
                    page = await browser.new_page(viewport={"width": 1280, "height": 900})
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    outside: list[str] = []
                    page.on(
                        "request",
                        lambda r: None if r.url.startswith(base) else outside.append(r.url),
                    )
                    await page.goto(f"{base}/dashboard")
                    await page.fill("#token", operator)
                    await page.click("#login-form button[type=submit]")
                    await page.wait_for_selector("body[data-live='1']", timeout=10_000)
                    await page.wait_for_selector("#plan g[data-asset]", timeout=10_000)

                    # The site plan: every asset placed, coloured by its current level.
                    plan = await plan_state(page)
                    assert plan == {
                        "tunnel-a3": ("yellow", COLOURS["yellow"]),
                        "pump-7": ("none", COLOURS["none"]),
                        "bridge-2": ("none", COLOURS["none"]),
                    }
                    positions = await page.eval_on_selector_all(
                        "#plan circle",
                        "cs => cs.map(c => [c.closest('g').dataset.asset,"
                        " +c.getAttribute('cx'), +c.getAttribute('cy')])",
                    )
                    where = {a: (x, y) for a, x, y in positions}
                    # North is up, east is right (bridge-2 is the south-east one).
                    assert where["bridge-2"][0] > where["tunnel-a3"][0]
                    assert where["bridge-2"][1] > where["pump-7"][1]
                    tip = await page.text_content("g[data-asset='tunnel-a3'] title")
                    assert "Tunnel A3" in tip and "YELLOW gas_leak" in tip
                    gw_row = await page.text_content("#gateways tr[data-gateway='gw-1']")
                    assert "online" in gw_row and "42" in gw_row

                    # A chart of the clicked asset's sensor, from the readings query.
                    assert await page.is_hidden("#login")
                    await page.select_option("#range", "900")
                    await page.click("g[data-asset='pump-7'] circle")
                    await page.wait_for_selector(
                        "#chart svg[data-series='gw-1/gas-2/ch4_lel'] polyline", timeout=10_000
                    )
                    points = (await page.get_attribute("#chart polyline", "points")).split()
                    buckets = await page.get_attribute("#chart svg", "data-points")
                    assert len(points) == int(buckets) >= 2  # one vertex per bucket
                    series = {"gateway": "gw-1", "device": "gas-2", "quantity": "ch4_lel"}
                    readings = (await api.get("/api/v1/readings", params=series)).json()
                    assert sum(b["count"] for b in readings["buckets"]) == 4
                    await page.screenshot(
                        path=str(ARTIFACTS / "1-plan-and-chart.png"), full_page=True
                    )

                    # A new warning arrives live (no reload): orange on pump-7.
                    assert await page.locator("#warnings li").count() == 1
                    await feed.readings("gas-2", [0.55, 0.56])
                    orange = page.locator("#warnings li[data-level='orange']")
                    await orange.wait_for(timeout=10_000)
                    assert "Pump station 7" in await orange.text_content()
                    await page.wait_for_selector(
                        "g[data-asset='pump-7'][data-level='orange']", timeout=5_000
                    )
                    await page.screenshot(
                        path=str(ARTIFACTS / "2-live-warning.png"), full_page=True
                    )

                    # Acknowledge it with the button: the API says so, the row changes.
                    [pump] = [
                        w
                        for w in (await api.get("/api/v1/warnings")).json()
                        if w["asset"] == "pump-7"
                    ]
                    assert pump["acknowledged"] is False
                    await orange.locator("button.ack").click()
                    row = page.locator(f"#warnings li[data-warning='{pump['id']}']")
                    await row.locator("text=acknowledged by op-anna").wait_for(timeout=5_000)
                    after = (await api.get(f"/api/v1/warnings/{pump['id']}")).json()
                    assert after["acknowledged"] is True and after["acknowledged_by"] == "op-anna"
                    assert await orange.locator("button.ack").count() == 0
                    await page.screenshot(
                        path=str(ARTIFACTS / "3-acknowledged.png"), full_page=True
                    )

                    # The token is asked once per tab: a reload goes straight back in.
                    await page.reload()
                    await page.wait_for_selector("body[data-live='1']", timeout=10_000)
                    assert await page.is_hidden("#login")
                    assert await page.locator("#warnings li").count() == 2

                    # A viewer sees the same warnings but no acknowledge buttons.
                    viewer_page = await browser.new_page(viewport={"width": 1280, "height": 900})
                    await viewer_page.goto(f"{base}/dashboard/")
                    await viewer_page.fill("#token", viewer)
                    await viewer_page.click("#login-form button[type=submit]")
                    await viewer_page.wait_for_selector("#warnings li[data-level='yellow']")
                    assert await viewer_page.locator("#warnings li").count() == 2
                    assert await viewer_page.locator("button.ack").count() == 0
                    assert await page.locator("button.ack").count() == 1  # yellow, operator
                    await viewer_page.screenshot(
                        path=str(ARTIFACTS / "4-viewer.png"), full_page=True
                    )

                    # A bad token is refused and asked for again.
                    bad = await browser.new_page()
                    await bad.goto(f"{base}/dashboard/")
                    await bad.fill("#token", "slt_not-a-token")
                    await bad.click("#login-form button[type=submit]")
                    await bad.wait_for_selector("#login-error:has-text('refused')")
                    assert errors == [] and outside == []

                    # Stopping central with pages still streaming events is prompt: the
                    # streams end with the service instead of holding the HTTP server.
                    assert await page.evaluate("document.body.dataset.live") == "1"
                    began = time.monotonic()
                    stop.set()
                    await asyncio.wait_for(service, 15)
                    assert time.monotonic() - began < 10
                finally:
                    await browser.close()
        await api.aclose()
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)
    assert (ARTIFACTS / "2-live-warning.png").stat().st_size > 10_000


async def plan_state(page) -> dict[str, tuple[str, str]]:
    rows = await page.eval_on_selector_all(
        "#plan g[data-asset]",
        "gs => gs.map(g => [g.dataset.asset, g.dataset.level,"
        " g.querySelector('.asset').getAttribute('fill')])",
    )
    return {asset: (level, fill) for asset, level, fill in rows}
