// Sentryline operators' dashboard: plain JavaScript, no libraries, nothing from outside.
// Data: the REST API with the operator's bearer token; live changes: server-sent events.
"use strict";

const TOKEN_KEY = "sentryline.token";
const LEVELS = ["blue", "yellow", "orange", "red"];
const ROLES = ["viewer", "operator", "admin"];
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  role: null,
  assets: [],
  warnings: new Map(),   // id -> warning
  gateways: new Map(),   // gateway -> {site, state, last_seen, outbox_depth}
  series: [],
  events: null,
};

const $ = (id) => document.getElementById(id);
const rank = (level) => LEVELS.indexOf(level) + 1;  // 0: none
const canAct = () => ROLES.indexOf(state.role) >= ROLES.indexOf("operator");

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG_NS, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;  // text, never HTML
  return node;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "—";
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers, { Authorization: `Bearer ${state.token}` });
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    signOut("The token was refused (invalid or revoked).");
    throw new Error("unauthorised");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// -- sign in / out -----------------------------------------------------------------------
function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  if (state.events) state.events.close();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("who").textContent = "";
  setLive(false);
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token").value = "";
  start();
});
$("logout").addEventListener("click", () => signOut());
$("show-cleared").addEventListener("change", renderWarnings);
$("series").addEventListener("change", renderChart);
$("range").addEventListener("change", renderChart);

async function start() {
  if (!state.token) return signOut();
  let session;
  try {
    session = await api("/api/v1/session");
  } catch (err) {
    return;
  }
  state.role = session.role;
  $("who").textContent = `${session.name} (${session.role})`;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  document.body.dataset.role = session.role;
  await reload();
  connect();
}

async function reload() {
  const [assets, warnings, stats, series] = await Promise.all([
    api("/api/v1/assets"),
    api("/api/v1/warnings"),
    api("/api/v1/stats"),
    api("/api/v1/series"),
  ]);
  state.assets = assets;
  state.warnings = new Map(warnings.map((w) => [w.id, w]));
  state.gateways = new Map(
    Object.entries(stats.gateways || {}).map(([id, g]) => [id, {
      gateway: id, site: g.site, state: g.state, last_seen: g.last_seen,
      outbox_depth: (g.status || {}).outbox_depth,
    }]),
  );
  state.series = series;
  renderPlan();
  renderWarnings();
  renderGateways();
  renderSeriesPicker();
  renderChart();
}

// -- live updates ------------------------------------------------------------------------
function setLive(on) {
  $("live").textContent = on ? "live" : "offline";
  $("live").className = `badge ${on ? "on" : "off"}`;
  document.body.dataset.live = on ? "1" : "0";
}

function connect() {
  if (state.events) state.events.close();
  // EventSource cannot send headers: the token goes in the query (GET only).
  const source = new EventSource(`/api/v1/events?access_token=${encodeURIComponent(state.token)}`);
  state.events = source;
  source.onopen = () => setLive(true);
  source.onerror = () => setLive(false);  // the browser reconnects with Last-Event-ID
  source.addEventListener("warning", (e) => {
    const w = JSON.parse(e.data);
    const known = state.warnings.get(w.id) || {};
    w.acknowledged = Boolean(w.acknowledged_at);
    state.warnings.set(w.id, Object.assign({}, known, w));
    renderWarnings();
    renderPlan();
  });
  source.addEventListener("gateway", (e) => {
    const g = JSON.parse(e.data);
    const known = state.gateways.get(g.gateway) || {};
    state.gateways.set(g.gateway, Object.assign({}, known, g));
    renderGateways();
  });
  source.addEventListener("alert", () => {
    if ($("series").value) renderChart();  // new readings came with it
  });
  source.addEventListener("reset", () => reload());
}

// -- site plan ---------------------------------------------------------------------------
function assetLevels() {
  const levels = new Map();
  for (const w of state.warnings.values()) {
    if (!w.active) continue;
    if (rank(w.level) > rank(levels.get(w.asset))) levels.set(w.asset, w.level);
  }
  return levels;
}

function position(asset) {
  if (asset.location) return [asset.location.lat, asset.location.lon];
  if (asset.geometry && asset.geometry.length) {
    const n = asset.geometry.length;
    return [asset.geometry.reduce((s, p) => s + p.lat, 0) / n,
            asset.geometry.reduce((s, p) => s + p.lon, 0) / n];
  }
  return null;
}

// Equirectangular projection around the assets' centre, fitted to the viewport: fine for a
// site a few kilometres across, and needs no map tiles.
function projector(points, width, height, pad) {
  const lats = points.map((p) => p[0]);
  const lons = points.map((p) => p[1]);
  const lat0 = (Math.min(...lats) + Math.max(...lats)) / 2;
  const k = Math.cos((lat0 * Math.PI) / 180);
  const xs = lons.map((lon) => lon * k);
  const minX = Math.min(...xs), maxX = Math.max(...xs);
  const minY = Math.min(...lats), maxY = Math.max(...lats);
  const spanX = Math.max(maxX - minX, 1e-6), spanY = Math.max(maxY - minY, 1e-6);
  const scale = Math.min((width - 2 * pad) / spanX, (height - 2 * pad) / spanY);
  const offX = (width - scale * spanX) / 2, offY = (height - scale * spanY) / 2;
  return (lat, lon) => [offX + (lon * k - minX) * scale, height - offY - (lat - minY) * scale];
}

function renderPlan() {
  const svg = $("plan");
  svg.replaceChildren();
  const placed = state.assets.map((a) => [a, position(a)]).filter(([, p]) => p);
  if (!placed.length) {
    svg.append(el("svg:text", { x: 20, y: 40, class: "label" }, "No asset has a position."));
    return;
  }
  const levels = assetLevels();
  const allPoints = placed.flatMap(([a, p]) =>
    a.geometry ? a.geometry.map((q) => [q.lat, q.lon]) : [p]);
  const project = projector(allPoints, 800, 480, 50);
  for (const [asset, [lat, lon]] of placed) {
    const level = levels.get(asset.id) || "none";
    const group = el("svg:g", { "data-asset": asset.id, "data-level": level });
    let shape;
    if (asset.geometry && asset.geometry.length >= 3) {
      const pts = asset.geometry.map((q) => project(q.lat, q.lon).map((v) => v.toFixed(1)).join(","));
      shape = el("svg:polygon", { points: pts.join(" ") });
    } else {
      const [x, y] = project(lat, lon);
      shape = el("svg:circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 14 });
    }
    shape.setAttribute("class", "asset");
    shape.setAttribute("fill", `var(--${level})`);
    const active = [...state.warnings.values()].filter((w) => w.active && w.asset === asset.id);
    const tip = [`${asset.name || asset.id} (${asset.type})`, `site: ${asset.site || "—"}`,
      active.length ? active.map((w) => `${w.level.toUpperCase()} ${w.type}`).join("\n")
        : "no active warning"];
    shape.append(el("svg:title", {}, tip.join("\n")));
    const [lx, ly] = project(lat, lon);
    group.append(shape, el("svg:text", { x: (lx + 18).toFixed(1), y: (ly + 4).toFixed(1),
      class: "label" }, asset.name || asset.id));
    group.addEventListener("click", () => selectAssetSeries(asset));
    svg.append(group);
  }
}

// -- warnings ----------------------------------------------------------------------------
function renderWarnings() {
  const list = $("warnings");
  const showCleared = $("show-cleared").checked;
  const rows = [...state.warnings.values()]
    .filter((w) => w.active || showCleared)
    .sort((a, b) => (b.active - a.active) || (rank(b.level) - rank(a.level))
      || (b.event_time - a.event_time));
  list.replaceChildren();
  const active = rows.filter((w) => w.active).length;
  $("warning-count").textContent = `(${active} active)`;
  for (const w of rows) {
    const item = el("li", { class: `level-${w.level}${w.active ? "" : " cleared"}`,
      "data-warning": w.id, "data-level": w.level });
    const asset = state.assets.find((a) => a.id === w.asset);
    const what = el("span", { class: "what" });
    what.append(el("strong", {}, w.level.toUpperCase()), ` ${w.type} at ${asset ? asset.name || asset.id : w.asset}`,
      el("br"), el("span", { class: "state" }, `since ${when(w.event_time)}${w.late ? " (late)" : ""}`));
    item.append(what);
    const status = el("span", { class: "state" });
    if (!w.active) status.textContent = `cleared ${when(w.cleared_event_time)}`;
    else if (w.acknowledged || w.acknowledged_at) status.textContent = `acknowledged by ${w.acknowledged_by}`;
    item.append(status);
    if (w.active && !(w.acknowledged || w.acknowledged_at) && canAct()) {
      const button = el("button", { type: "button", class: "ack" }, "Acknowledge");
      button.addEventListener("click", () => acknowledge(w.id, button));
      item.append(button);
    }
    list.append(item);
  }
}

async function acknowledge(id, button) {
  button.disabled = true;
  try {
    const updated = await api(`/api/v1/warnings/${encodeURIComponent(id)}/ack`, { method: "POST" });
    state.warnings.set(id, Object.assign({}, state.warnings.get(id), updated));
  } catch (err) {
    button.disabled = false;
    button.title = String(err);
  }
  renderWarnings();
}

// -- gateways ----------------------------------------------------------------------------
function renderGateways() {
  const body = $("gateways").querySelector("tbody");
  body.replaceChildren();
  for (const g of [...state.gateways.values()].sort((a, b) => a.gateway.localeCompare(b.gateway))) {
    const row = el("tr", { "data-gateway": g.gateway });
    row.append(el("td", {}, g.gateway), el("td", {}, g.site || "—"),
      el("td", { class: g.state }, g.state || "unknown"), el("td", {}, when(g.last_seen)),
      el("td", {}, g.outbox_depth === undefined || g.outbox_depth === null ? "—" : String(g.outbox_depth)));
    body.append(row);
  }
}

// -- charts ------------------------------------------------------------------------------
const seriesKey = (s) => `${s.gateway}/${s.device}/${s.quantity}`;

function renderSeriesPicker() {
  const select = $("series");
  const current = select.value;
  select.replaceChildren();
  for (const s of state.series.filter((x) => x.device !== "gateway")) {
    select.append(el("option", { value: seriesKey(s) }, seriesKey(s)));
  }
  if (current) select.value = current;
}

function selectAssetSeries(asset) {
  const refs = new Set(asset.devices || []);
  const match = state.series.find((s) => refs.has(`${s.gateway}/${s.device}`));
  if (match) {
    $("series").value = seriesKey(match);
    renderChart();
  }
}

async function renderChart() {
  const box = $("chart");
  const key = $("series").value;
  if (!key) {
    box.replaceChildren(el("p", { class: "muted" }, "No sensor data yet."));
    return;
  }
  const [gateway, device, quantity] = key.split("/");
  const end = Date.now() / 1000;
  const start = end - Number($("range").value);
  const q = new URLSearchParams({ gateway, device, quantity, start, end });
  let data;
  try {
    data = await api(`/api/v1/readings?${q}`);
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, String(err)));
    return;
  }
  if (key !== $("series").value) return;  // another series was picked meanwhile
  box.replaceChildren(drawChart(data));
}

function drawChart(data) {
  const W = 600, H = 220, L = 48, R = 10, T = 10, B = 28;
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `${data.device} ${data.quantity}`, "data-series": `${data.gateway}/${data.device}/${data.quantity}`,
    "data-points": String(data.buckets.length) });
  const b = data.buckets;
  svg.append(el("svg:line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }),
    el("svg:line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  if (!b.length) {
    svg.append(el("svg:text", { x: L + 10, y: H / 2 }, "no readings in this range"));
    return svg;
  }
  let lo = Math.min(...b.map((x) => x.min)), hi = Math.max(...b.map((x) => x.max));
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (t) => L + ((t - data.start) / (data.end - data.start)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const mid = (bucket) => bucket.start + data.step / 2;
  const upper = b.map((k) => `${x(mid(k)).toFixed(1)},${y(k.max).toFixed(1)}`);
  const lower = b.slice().reverse().map((k) => `${x(mid(k)).toFixed(1)},${y(k.min).toFixed(1)}`);
  svg.append(el("svg:polygon", { class: "band", points: upper.concat(lower).join(" ") }));
  svg.append(el("svg:polyline", { class: "line",
    points: b.map((k) => `${x(mid(k)).toFixed(1)},${y(k.avg).toFixed(1)}`).join(" ") }));
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));
  svg.append(el("svg:text", { x: 4, y: T + 10 }, fmt(hi)), el("svg:text", { x: 4, y: H - B }, fmt(lo)),
    el("svg:text", { x: L, y: H - 8 }, new Date(data.start * 1000).toLocaleTimeString()),
    el("svg:text", { x: W - R - 70, y: H - 8 }, new Date(data.end * 1000).toLocaleTimeString()));
  return svg;
}

start();
