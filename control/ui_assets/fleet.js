// The Ringleader fleet page: polls this control node's JSON API once a second and
// redraws. Read-only. Everything shown comes from the API as text (textContent), never
// as markup: backend names, reasons and evidence are data.
"use strict";

const POLL_MS = 1000;
const EVENT_LIMIT = 50;
const SVG = "http://www.w3.org/2000/svg";
const RING_RADIUS = 92;
const OWNER_RADIUS = 74;
// Calm, distinct colours for telling backends apart on the inner ring and in the tables.
const IDENTITY = ["#8ab4f8", "#f2c57c", "#c3a6e6", "#8fd0d8", "#e8b4b0", "#a9c98f", "#e7a1b8", "#b8c4d2"];
// Neighbouring arcs of one state differ in shade, so each backend's arcs stand apart.
const SHADES = ["1", "0.82", "0.66"];

// Paths are relative to this page (/ui/), so the page also works behind a path prefix.
const api = (path) => new URL("../" + path, document.baseURI).toString();

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A network failure or an error answer: shown on the page, not thrown to the console.
async function getJSON(path) {
  let response;
  try {
    response = await fetch(api(path), { cache: "no-store", headers: { accept: "application/json" } });
  } catch (exc) {
    throw new HttpError(0, "unreachable");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (exc) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.message ? body.message : `HTTP ${response.status}`;
    throw new HttpError(response.status, message);
  }
  return body;
}

// -- small DOM helpers ------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.dataset[key.slice(5).replace(/-(\w)/g, (_, c) => c.toUpperCase())] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function chip(text, kind, title) {
  return el("span", { class: `chip ${kind || text}`, title }, text);
}

function swatch(colour) {
  const node = el("span", { class: "swatch" });
  node.style.background = colour; // CSSOM, allowed by the page's CSP (inline style attributes are not)
  return node;
}

function fill(tbody, rows, columns, emptyText) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns }, emptyText))]));
}

function ago(unixSeconds) {
  if (!unixSeconds) return "—";
  const seconds = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

function stamp(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toLocaleString() : "";
}

function percent(share) {
  return `${(share * 100).toFixed(1)} %`;
}

// A backend URL as shown: without any password in it.
function shownURL(url) {
  return url.replace(/\/\/[^/@]*@/, "//").replace(/([?&]password=)[^&]*/g, "$1***");
}

// -- state ------------------------------------------------------------------------------

const pools = new Map(); // pool name -> {section, svg, arcs, identity}
let lastSuccess = 0;
let lastError = "";
let polls = 0;

// A backend's state on the page. `flushing`: marked down, but most proxies that report
// see it up again; the detector flushes it and marks it up once that holds long enough.
function stateOf(backend, reporting) {
  if (backend.admin === "draining") return "draining";
  if (backend.health !== "down") return "active";
  const seen = reporting.map((p) => p.verdicts[backend.name]).filter(Boolean);
  const up = seen.filter((v) => v === "up").length;
  return seen.length && up * 2 > seen.length ? "flushing" : "down";
}

// -- the ring ---------------------------------------------------------------------------

function point(fraction, radius) {
  const angle = fraction * 2 * Math.PI - Math.PI / 2; // hash 0 at the top, clockwise
  return `${(radius * Math.cos(angle)).toFixed(3)} ${(radius * Math.sin(angle)).toFixed(3)}`;
}

function arcPath(arcs, circle, radius) {
  const parts = [];
  for (const [lo, hi] of arcs) {
    // An arc over half the circle is drawn in two, so a whole circle draws too.
    const cuts = hi - lo > circle / 2 ? [lo, lo + (hi - lo) / 2, hi] : [lo, hi];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const a = cuts[i] / circle;
      const b = cuts[i + 1] / circle;
      parts.push(`M${point(a, radius)}A${radius} ${radius} 0 0 1 ${point(b, radius)}`);
    }
  }
  return parts.join("");
}

function drawRing(entry, arcs) {
  const svg = entry.svg;
  svg.replaceChildren();
  svg.append(svgEl("circle", { class: "track", r: RING_RADIUS }));
  arcs.backends.forEach((backend, index) => {
    const colour = entry.identity(backend.name);
    const group = svgEl("g", { class: "arc-group", "data-backend": backend.name, "data-state": "active" });
    const title = svgEl("title");
    title.textContent = `${backend.name}: ${backend.points} points, ${percent(backend.share)} of the circle`;
    group.append(
      title,
      svgEl("path", { class: "state", d: arcPath(backend.arcs, arcs.circle, RING_RADIUS), "stroke-opacity": SHADES[index % SHADES.length] }),
      svgEl("path", { class: "owner", d: arcPath(backend.arcs, arcs.circle, OWNER_RADIUS), stroke: colour }),
    );
    group.addEventListener("mouseenter", () => focus(entry, backend.name));
    group.addEventListener("mouseleave", () => focus(entry, null));
    svg.append(group);
  });
  const epoch = svgEl("text", { class: "epoch", y: "6" });
  const caption = svgEl("text", { class: "caption", y: "24" });
  svg.append(epoch, caption);
  entry.arcs = arcs;
}

function focus(entry, name) {
  entry.ring.classList.toggle("focus", name !== null);
  for (const node of entry.section.querySelectorAll("[data-backend]")) {
    node.classList.toggle("focused", node.dataset.backend === name);
  }
}

// The arcs change only with the set of registered backends (and the epoch), not with
// their health: fetched again only then.
function arcsCurrent(entry, epoch, names) {
  const arcs = entry.arcs;
  return arcs && arcs.epoch === epoch && arcs.backends.map((b) => b.name).join("\n") === names.join("\n");
}

// -- one pool ---------------------------------------------------------------------------

function poolEntry(name) {
  let entry = pools.get(name);
  if (entry) return entry;
  const ring = el("figure", { class: "ring" });
  const svg = svgEl("svg", { viewBox: "-120 -120 240 240", role: "img" });
  svg.setAttribute("aria-label", `ring of pool ${name}`);
  ring.append(svg);
  const meta = el("span", { class: "muted" });
  const backends = el("tbody");
  const proxies = el("tbody");
  const section = el("section", { class: "panel pool", "data-pool": name },
    el("div", { class: "pool-head" }, el("h2", {}, `pool ${name}`), meta),
    el("div", { class: "pool-body" }, ring,
      el("div", { class: "pool-tables" },
        el("div", { class: "scroll" }, el("table", { class: "backends" },
          el("thead", {}, el("tr", {},
            el("th", {}, "backend"), el("th", {}, "state"), el("th", { class: "num" }, "keys"),
            el("th", { class: "num" }, "weight"), el("th", {}, "admin"), el("th", {}, "health"),
            el("th", {}, "since"), el("th", { class: "wide" }, "url"))),
          backends)),
        el("h3", {}, "Proxies reporting"),
        el("div", { class: "scroll" }, el("table", { class: "proxies" },
          el("thead", {}, el("tr", {},
            el("th", {}, "proxy"), el("th", {}, "last seen"), el("th", { class: "num" }, "epoch"),
            el("th", {}, "verdicts"))),
          proxies)))));
  const colours = new Map();
  const identity = (backend) => {
    if (!colours.has(backend)) colours.set(backend, IDENTITY[colours.size % IDENTITY.length]);
    return colours.get(backend);
  };
  entry = { name, section, ring, svg, meta, backends, proxies, arcs: null, identity };
  pools.set(name, entry);
  document.getElementById("pools").append(section);
  return entry;
}

async function proxiesOf(pool) {
  try {
    return { doc: await getJSON(`v1/pools/${encodeURIComponent(pool)}/proxies`), why: "" };
  } catch (exc) {
    if (!(exc instanceof HttpError)) throw exc;
    return { doc: null, why: exc.status === 404 ? "not served by this node" : exc.message };
  }
}

async function refreshPool(name) {
  const entry = poolEntry(name);
  const path = `v1/pools/${encodeURIComponent(name)}`;
  const [listing, proxies] = await Promise.all([getJSON(`${path}/backends?stale=1`), proxiesOf(name)]);
  const backends = listing.backends.filter((b) => b.admin !== "removed");
  const names = backends.map((b) => b.name);
  if (!arcsCurrent(entry, listing.epoch, names)) {
    drawRing(entry, await getJSON(`ui/api/pools/${encodeURIComponent(name)}/arcs`));
  }
  const all = proxies.doc ? proxies.doc.proxies : [];
  const reporting = all.filter((p) => p.age_seconds <= proxies.doc.window_seconds);
  const shares = new Map(entry.arcs.backends.map((b) => [b.name, b]));
  const states = new Map(backends.map((b) => [b.name, stateOf(b, reporting)]));

  const labels = entry.svg.querySelector(".epoch");
  for (const group of entry.svg.querySelectorAll(".arc-group")) {
    const state = states.get(group.dataset.backend) || "down";
    if (group.dataset.state === state) continue;
    group.dataset.state = state;
    if (state !== "active") entry.svg.insertBefore(group, labels); // drawn on top
  }
  const inRing = backends.filter((b) => b.in_ring).length;
  entry.svg.querySelector(".epoch").textContent = String(listing.epoch);
  entry.svg.querySelector(".caption").textContent = `epoch · ${inRing}/${backends.length} in ring`;
  entry.meta.textContent = `epoch ${listing.epoch} · ${entry.arcs.hash} · ${entry.arcs.distribution} · ` +
    `${inRing} of ${backends.length} backends in the ring · ${reporting.length} proxies reporting`;

  fill(entry.backends, backends.map((b) => backendRow(entry, b, states.get(b.name), shares.get(b.name))), 8, "no backends: add one with ringleader backend add");
  fill(entry.proxies, all.map((p) => proxyRow(entry, p, listing.epoch, proxies.doc.window_seconds)), 4,
    proxies.doc ? "no proxy reports" : `no proxy reports (${proxies.why})`);
  return backends.filter((b) => states.get(b.name) !== "active").length;
}

function backendRow(entry, b, state, arcs) {
  const row = el("tr", { "data-backend": b.name, "data-state": state },
    el("td", { class: "name" }, swatch(entry.identity(b.name)), b.name),
    el("td", {}, chip(state)),
    el("td", { class: "num", title: arcs ? `${arcs.points} ketama points; ${percent(arcs.share)} of the circle drawn` : "" },
      percent(arcs ? arcs.serving_share : 0)),
    el("td", { class: "num" }, b.weight),
    el("td", {}, b.admin),
    el("td", {}, chip(b.health, b.health)),
    el("td", { title: [stamp(b.health_since), b.health_reason].filter(Boolean).join(" — ") }, ago(b.health_since)),
    el("td", { class: "wide" }, el("code", {}, shownURL(b.url))));
  row.addEventListener("mouseenter", () => focus(entry, b.name));
  row.addEventListener("mouseleave", () => focus(entry, null));
  return row;
}

function proxyRow(entry, p, epoch, window) {
  const silent = p.age_seconds > window;
  const verdicts = Object.entries(p.verdicts).sort(([a], [b]) => a.localeCompare(b))
    .map(([backend, verdict]) => chip(`${backend} ${verdict}`, verdict));
  const behind = p.epoch !== null && p.epoch < epoch;
  return el("tr", { class: silent ? "silent" : "", "data-proxy": p.proxy },
    el("td", {}, el("code", {}, p.proxy)),
    el("td", { title: stamp(p.last_seen) }, silent ? chip(`silent ${ago(p.last_seen)}`, "silent") : ago(p.last_seen)),
    el("td", { class: "num" }, p.epoch === null ? "—" : behind ? chip(`${p.epoch} behind`, "behind") : p.epoch),
    el("td", {}, el("div", { class: "verdicts" }, verdicts)));
}

// -- the cluster and the events --------------------------------------------------------

async function refreshPools() {
  const listing = await getJSON("v1/pools?stale=1");
  const names = listing.pools.map((p) => p.pool);
  for (const [name, entry] of pools) {
    if (!names.includes(name)) {
      entry.section.remove();
      pools.delete(name);
    }
  }
  const troubled = await Promise.all(names.map(refreshPool));
  const count = troubled.reduce((a, b) => a + b, 0);
  document.title = count ? `(${count}) Ringleader fleet` : "Ringleader fleet";
}

async function refreshNode() {
  const s = await getJSON("v1/status");
  const node = document.getElementById("node");
  node.replaceChildren(
    "node ", el("strong", {}, s.id), " · ", chip(s.role), " · leader ", el("strong", {}, s.leader ?? "none"),
    ` · term ${s.term} · commit ${s.commit_index} · applied ${s.applied_index}`);
}

async function refreshNodes() {
  const { nodes } = await getJSON("ui/api/nodes");
  fill(document.querySelector("#nodes tbody"), nodes.map((n) => {
    const s = n.status || {};
    return el("tr", { "data-node": n.id },
      el("td", { class: "name" }, String(n.id), n.self ? el("span", { class: "muted" }, " (this node)") : null),
      el("td", {}, n.status ? chip(s.role) : "—"),
      el("td", { class: "num" }, s.term ?? "—"),
      el("td", {}, s.leader ?? "—"),
      el("td", { class: "num" }, s.commit_index ?? "—"),
      el("td", { class: "num" }, s.applied_index ?? "—"),
      el("td", { title: n.error || "" }, n.reachable
        ? chip(n.self ? "yes" : `yes · ${(n.rtt_seconds * 1000).toFixed(0)} ms`, "yes")
        : chip("no", "no", n.error)),
      el("td", {}, el("code", {}, n.url)));
  }), 8, "no nodes");
}

function evidenceOf(evidence) {
  if (evidence === null || evidence === undefined) return "";
  const entries = typeof evidence === "object" ? Object.entries(evidence) : [];
  if (entries.length && entries.every(([, v]) => v && typeof v === "object" && "state" in v)) {
    return el("ul", { class: "evidence" }, entries.map(([proxy, seen]) =>
      el("li", {}, `${proxy}: ${seen.state}${seen.error ? ` (${seen.error})` : ""}`)));
  }
  return el("code", {}, JSON.stringify(evidence));
}

async function refreshEvents() {
  const { events } = await getJSON(`v1/events?limit=${EVENT_LIMIT}&stale=1`);
  fill(document.querySelector("#events tbody"), events.slice().reverse().map((e) =>
    el("tr", { "data-kind": e.kind },
      el("td", { title: stamp(e.time) }, ago(e.time)),
      el("td", {}, e.pool),
      el("td", { class: "num" }, e.epoch),
      el("td", {}, chip(e.kind.replace("_", " "), { mark_down: "down", mark_up: "up", drain: "draining", activate: "active" }[e.kind] || "unknown")),
      el("td", {}, e.backend || "—"),
      el("td", {}, e.who),
      el("td", { class: "wrap" }, e.why || "—"),
      el("td", { class: "wrap" }, evidenceOf(e.evidence)))), 8, "no events yet");
}

// -- the poll ---------------------------------------------------------------------------

function showLiveness() {
  const live = document.getElementById("live");
  const text = document.getElementById("live-text");
  if (lastError) {
    live.dataset.live = "stale";
    text.textContent = lastSuccess
      ? `stale: last full update ${ago(lastSuccess / 1000)} (${lastError})`
      : `no answer yet (${lastError})`;
  } else {
    live.dataset.live = "ok";
    text.textContent = `live · updated ${new Date(lastSuccess).toLocaleTimeString()}`;
  }
}

async function poll() {
  const started = Date.now();
  const errors = [];
  const parts = [refreshNode(), refreshPools(), refreshEvents(), refreshNodes()];
  try {
    for (const outcome of await Promise.allSettled(parts)) {
      if (outcome.status === "fulfilled") continue;
      if (!(outcome.reason instanceof HttpError)) throw outcome.reason; // a bug: let it show
      errors.push(outcome.reason.message);
    }
  } finally {
    lastError = [...new Set(errors)].join("; ");
    if (!lastError) lastSuccess = Date.now();
    polls += 1;
    document.body.dataset.polls = String(polls);
    showLiveness();
    setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
  }
}

poll();
