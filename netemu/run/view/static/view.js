// netemu's live view: an equirectangular world map (1440 × 720 user units, 4 units a
// degree) with the run's satellites, ground stations and links, fed over a WebSocket.
// No build step and nothing from outside: the server sends everything.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const X = (lon) => (lon + 180) * 4;
const Y = (lat) => (90 - lat) * 4;

// What tests and people can read: window.netemuView (positions, link changes, frame rate).
const view = {
  t_s: null, wall: null, time_scale: null, mode: null, epoch: null,  // wall: server's Unix time at t_s
  nodes: {},            // name -> {kind, lon, lat, el}
  links: {},            // id -> {a, b, state, el, ...}
  linkChanges: [],      // {id, state, wall_ms} each time a line changes state
  fps: null, ticks: 0, tickCostMs: [],
  selected: null,
};
window.netemuView = view;

const $ = (id) => document.getElementById(id);
const map = $("map");
let ws = null;

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

function drawGrid() {
  const g = $("grid");
  for (let lon = -180; lon <= 180; lon += 30) el("line", {x1: X(lon), y1: 0, x2: X(lon), y2: 720}, g);
  for (let lat = -90; lat <= 90; lat += 30) el("line", {x1: 0, y1: Y(lat), x2: 1440, y2: Y(lat)}, g);
}

async function drawLand() {
  const r = await fetch("/coastlines.json");
  if (!r.ok) return;
  const runs = await r.json();
  const parts = [];
  for (const run of runs) {
    parts.push("M" + run.map((p) => X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join("L"));
  }
  el("path", {d: parts.join("")}, $("land"));
  map.dataset.coastlines = String(runs.length);
}

// ------------------------------------------------------------------ nodes and links

function addNode(name, kind) {
  if (view.nodes[name]) return view.nodes[name];
  const n = {name, kind, lon: null, lat: null, el: null, label: null};
  if (kind === "ground") {
    n.el = el("path", {class: "gs", d: "M0 -6 L5 4 L-5 4 Z", "data-node": name}, $("stations"));
  } else {
    n.el = el("circle", {class: "sat", r: 3.2, "data-node": name}, $("sats"));
  }
  n.el.addEventListener("click", () => select(name));
  view.nodes[name] = n;
  return n;
}

function place(n, lon, lat) {
  n.lon = lon; n.lat = lat;
  const x = X(lon), y = Y(lat);
  if (n.kind === "ground") n.el.setAttribute("transform", `translate(${x.toFixed(2)} ${y.toFixed(2)})`);
  else { n.el.setAttribute("cx", x.toFixed(2)); n.el.setAttribute("cy", y.toFixed(2)); }
  n.el.dataset.lon = lon; n.el.dataset.lat = lat;
  if (n.label) { n.label.setAttribute("x", (x + 5).toFixed(1)); n.label.setAttribute("y", (y - 4).toFixed(1)); }
}

// a satellite's marker grows with the bundles its store holds
function showStored(stored) {
  for (const name in stored || {}) {
    const n = view.nodes[name], k = stored[name] || 0;
    if (!n || n.kind === "ground") continue;
    n.el.setAttribute("r", (3.2 + Math.min(6, Math.sqrt(k) * 0.6)).toFixed(2));
    n.el.dataset.stored = String(k);
  }
}

function linkColor(l) {
  if (l.state === "half") return "#f4a261";
  const load = l.load || 0;  // green (idle) to red (full)
  const r = Math.round(42 + load * (230 - 42)), g = Math.round(190 - load * 140);
  return `rgb(${r},${g},90)`;
}

function setLink(id, d) {
  let l = view.links[id];
  if (!l) {
    const [a, b] = id.split("|");
    l = view.links[id] = {a, b, state: null, el: el("line", {class: "link", "data-link": id}, $("links"))};
  }
  const changed = l.state !== d.state;
  Object.assign(l, d);
  if (changed) {
    l.el.dataset.state = d.state;
    view.linkChanges.push({id, state: d.state, wall_ms: Date.now()});
    if (view.linkChanges.length > 5000) view.linkChanges.splice(0, 1000);
  }
  l.el.setAttribute("stroke", linkColor(l));
  l.el.dataset.kind = d.kind || "";
  if (l.twin) paintTwin(l);
}

// bundles in flight: a dot moving along each hop a bundle was forwarded over, for
// FLIGHT_MS of wall time
const FLIGHT_MS = 1000;
const flights = [];

function addHops(hops) {
  for (const [a, b] of hops || []) {
    if (!view.nodes[a] || !view.nodes[b] || flights.length > 400) continue;
    const dot = el("circle", {class: "bundle", r: 2.4}, $("bundles"));
    flights.push({a, b, dot, t0: performance.now()});
  }
}

function animateFlights(now) {
  for (let i = flights.length - 1; i >= 0; i--) {
    const f = flights[i], a = view.nodes[f.a], b = view.nodes[f.b];
    const k = (now - f.t0) / FLIGHT_MS;
    if (k >= 1 || a.lon === null || b.lon === null) {
      f.dot.remove(); flights.splice(i, 1); continue;
    }
    // the shorter way, across the date line where that is shorter
    let lon = a.lon + k * (unwrap(a.lon, b.lon) - a.lon);
    if (lon > 180) lon -= 360; else if (lon < -180) lon += 360;
    f.dot.setAttribute("cx", X(lon).toFixed(1));
    f.dot.setAttribute("cy", (Y(a.lat) + k * (Y(b.lat) - Y(a.lat))).toFixed(1));
  }
}

// lonB moved by 360° where that brings it within 180° of lonA
function unwrap(lonA, lonB) {
  return lonB - lonA > 180 ? lonB - 360 : lonB - lonA < -180 ? lonB + 360 : lonB;
}

function setLine(e, [lon1, lat1, lon2, lat2]) {
  e.setAttribute("x1", X(lon1).toFixed(1)); e.setAttribute("y1", Y(lat1).toFixed(1));
  e.setAttribute("x2", X(lon2).toFixed(1)); e.setAttribute("y2", Y(lat2).toFixed(1));
}

function paintTwin(l) {  // the twin line shows what its link's line shows
  l.twin.dataset.state = l.el.dataset.state;
  l.twin.setAttribute("stroke", l.el.getAttribute("stroke"));
}

// A link's line on the map as [lonA, latA, lonB, latB] segments: one, or two where the
// shorter way between its ends crosses the date line (±180°): each end to the map's
// edge, meeting it at the latitude where the straight line crosses.
function linkSegments(lonA, latA, lonB, latB) {
  const lonB2 = unwrap(lonA, lonB);
  if (lonB2 === lonB) return [[lonA, latA, lonB, latB]];
  const edge = lonB2 > lonA ? 180 : -180;  // the edge on A's side
  const lat = latA + (latB - latA) * (edge - lonA) / (lonB2 - lonA);
  return [[lonA, latA, edge, lat], [-edge, lat, lonB, latB]];
}

function drawLinks() {
  for (const id in view.links) {
    const l = view.links[id];
    if (l.state === "down") continue;
    const a = view.nodes[l.a], b = view.nodes[l.b];
    if (!a || !b || a.lon === null || b.lon === null) continue;
    const segs = linkSegments(a.lon, a.lat, b.lon, b.lat);
    setLine(l.el, segs[0]);
    if (segs.length > 1) {  // across the date line: the second segment on a twin line
      if (!l.twin) { l.twin = el("line", {class: "link twin", "data-twin": id}, $("links")); paintTwin(l); }
      setLine(l.twin, segs[1]);
    } else if (l.twin) { l.twin.remove(); l.twin = null; }
  }
}

// ------------------------------------------------------------------ header

function fmt(v, digits) {
  if (v === null || v === undefined) return "–";
  return typeof v === "number" ? v.toLocaleString(undefined, {maximumFractionDigits: digits ?? 3}) : String(v);
}

function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %"; }

function showHeadline(h) {
  if (!h) return;
  const figs = [
    ["delivery ratio", pct(h.delivery_ratio), "delivery_ratio"],
    ["bundles delivered", fmt(h.bundles_delivered) + " / " + fmt(h.bundles_sent), "bundles"],
    ["stored", fmt(h.stored_bundles), "stored_bundles"],
    ["query latency p50", h.query_latency_p50_s === null ? "–" : fmt(h.query_latency_p50_s, 1) + " s", "query_latency"],
    ["downlink saved", pct(h.downlink_saved_fraction), "downlink_saved"],
    ["links up", fmt(h.links_up), "links_up"],
  ];
  $("headline").innerHTML = figs.map(([k, v, id]) =>
    `<span class="fig" data-fig="${id}">${k} <b>${v}</b></span>`).join("");
}

function showClock(t, scale, wall) {
  view.t_s = t; view.time_scale = scale; view.wall = wall;
  map.dataset.tS = t === null ? "" : String(t);
  if (t === null) { $("utc").textContent = "clock not started"; return; }
  if (view.epoch) {
    const d = new Date(Date.parse(view.epoch) + t * 1000);
    $("utc").textContent = d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
  $("tplus").textContent = `t+${t.toFixed(1)} s`;
  $("scale").textContent = scale === 0 ? "paused" : `×${fmt(scale, 2)}`;
}

// ------------------------------------------------------------------ panel

function select(name) {
  if (view.selected && view.nodes[view.selected]) view.nodes[view.selected].el.classList.remove("sel");
  view.selected = name;
  if (view.nodes[name]) view.nodes[name].el.classList.add("sel");
  ws && ws.readyState === 1 && ws.send(JSON.stringify({type: "node", name}));
}

function row(k, v) { return `<tr><th>${k}</th><td>${v}</td></tr>`; }

function showPanel(m) {
  if (m.name !== view.selected) return;
  $("panel").hidden = false;
  $("pname").textContent = `${m.name} (${m.kind || "?"})`;
  let h = "";
  const c = m.counters;
  h += "<h3>agent counters</h3>";
  if (c) {
    h += "<table>" + ["stored_bundles", "stored_bytes", "queued", "sessions_up", "received", "forwarded",
      "delivered", "sent", "expired", "deleted", "refused"].filter((k) => k in c)
      .map((k) => row(k.replace("_", " "), fmt(c[k]))).join("") + "</table>";
  } else h += "<p>no counters (no bundle agent here, or none published yet)</p>";
  h += "<h3>links up now</h3><p>" + (m.links_up.length ? m.links_up.join(", ") : "none") + "</p>";
  h += "<h3>contacts from this node (now and next)</h3><table>" +
    "<tr><th>to</th><th>start s</th><th>end s</th><th>rate</th></tr>" +
    m.contacts.map((x) => `<tr><td>${x.to}</td><td>${fmt(x.start_s, 0)}</td><td>${fmt(x.end_s, 0)}</td>` +
      `<td>${x.rate_bps ? fmt(x.rate_bps / 1e6, 1) + " Mb/s" : "–"}</td></tr>`).join("") + "</table>";
  const apps = Object.entries(m.apps || {});
  h += "<h3>apps</h3>" + (apps.length ? "<table>" + apps.map(([app, ev]) =>
    row(app, `${ev.event || "?"} at t=${fmt(ev.t_s, 0)} s`)).join("") + "</table>" : "<p>none</p>");
  $("pbody").innerHTML = h;
  $("panel").dataset.node = m.name;
}

$("close").addEventListener("click", () => {
  $("panel").hidden = true;
  if (view.selected && view.nodes[view.selected]) view.nodes[view.selected].el.classList.remove("sel");
  view.selected = null;
});

// ------------------------------------------------------------------ replay controls

function showReplay(r) {
  if (!r) return;
  if (view.mode === "live") {  // a live run: pause, resume and time scale, where the run allows
    if (!r.can_pause) return;
    $("replay").hidden = false;
    for (const id of ["slider", "rpos"]) $(id).hidden = true;
    $("play").textContent = r.playing ? "pause" : "play";
    showSpeed(r.speed);
    return;
  }
  if (view.mode !== "replay") return;
  $("replay").hidden = false;
  const s = $("slider");
  s.min = r.t_min_s; s.max = r.t_max_s;
  if (!s.matches(":active") && view.t_s !== null) s.value = view.t_s;
  $("play").textContent = r.playing ? "pause" : "play";
  showSpeed(r.speed);
  $("rpos").textContent = `${fmt(view.t_s, 0)} / ${fmt(r.t_max_s, 0)} s`;
}

function showSpeed(speed) {  // the scale the run goes at (while paused: resumes at)
  const sp = $("speed"), x = String(speed);
  if (speed === undefined || document.activeElement === sp || sp.value === x) return;
  if (![...sp.options].some((o) => o.value === x)) sp.add(new Option(x));
  sp.value = x;
}

$("slider").addEventListener("input", (e) => ws.send(JSON.stringify({type: "seek", t_s: Number(e.target.value)})));
$("play").addEventListener("click", () =>
  ws.send(JSON.stringify({type: $("play").textContent === "pause" ? "pause" : "play"})));
$("speed").addEventListener("change", (e) => ws.send(JSON.stringify({type: "speed", x: Number(e.target.value)})));

// ------------------------------------------------------------------ messages

function applyFrame(m) {
  const t0 = performance.now();
  for (const name in m.sats) {
    const p = m.sats[name];
    place(view.nodes[name] || addNode(name, "satellite"), p[0], p[1]);
  }
  if (m.all_links) {  // a replay went back: links it does not list are not up
    for (const id in view.links) if (!(id in m.links)) setLink(id, {state: "down", load: null});
  }
  for (const id in m.links) setLink(id, m.links[id]);
  drawLinks();
  addHops(m.hops);
  showStored(m.stored);
  showClock(m.t_s, m.time_scale, m.wall);
  showHeadline(m.headline);
  showReplay(m.replay);
  view.ticks += 1;
  view.tickCostMs.push(performance.now() - t0);
  if (view.tickCostMs.length > 200) view.tickCostMs.shift();
}

function onHello(m) {
  view.mode = m.mode; view.epoch = m.epoch_utc;
  $("title").textContent = `netemu ${m.mode === "replay" ? "replay" : "live"}: ${m.title}`;
  document.title = `netemu — ${m.title}`;
  const labels = m.nodes.length <= 60;
  for (const n of m.nodes) {
    const node = addNode(n.name, n.kind);
    if (labels && !node.label) {
      node.label = el("text", {class: "label"}, n.kind === "ground" ? $("stations") : $("sats"));
      node.label.textContent = n.name;
    }
    if (n.lat !== undefined) place(node, n.lon, n.lat);
  }
  applyFrame(m);
  document.body.dataset.ready = "1";
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${proto}://${location.host}/ws`);
  ws.onopen = () => { $("status").textContent = "connected"; };
  ws.onclose = () => {
    $("status").textContent = view.mode === "live"
      ? "disconnected: the run ended? (netemu view RUN_DIR replays it) retrying…" : "disconnected: retrying…";
    setTimeout(connect, 2000);
  };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "hello") onHello(m);
    else if (m.type === "tick") {
      applyFrame(m);
      if (view.selected && m.nodes.includes(view.selected) && view.ticks % 4 === 0) select(view.selected);
    } else if (m.type === "node") showPanel(m);
    else if (m.type === "error") $("status").textContent = m.message;
  };
}

// frames per second the browser achieves, over the last second
(function measure() {
  let frames = 0, since = performance.now();
  function frame(now) {
    frames += 1;
    animateFlights(now);
    if (now - since >= 1000) {
      view.fps = frames * 1000 / (now - since);
      document.body.dataset.fps = view.fps.toFixed(1);
      frames = 0; since = now;
    }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
})();

drawGrid();
drawLand();
connect();
