// segflow console: vanilla JS, no build step. Data is put into the page as text only.
"use strict";

const MAX_ROWS = 300;
const VIEWS = ["live", "pipeline", "dlq", "schema", "sources"];
const POLL_MS = { pipeline: 5000, dlq: 5000, schema: 30000, sources: 0 };
let stream = null;
let paused = false;
let pollTimer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c === null || c === undefined ? "" : String(c) === c ? c : c instanceof Node ? c : String(c));
  return node;
}

function fmtTime(ms) {
  if (ms === null || ms === undefined || ms < 0) return "";
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

function fmtNum(x, digits) {
  if (x === null || x === undefined) return "–";
  return Number(x).toFixed(digits === undefined ? 1 : digits);
}

async function getJSON(path) {
  const res = await fetch(path, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (res.status === 401) { window.location = "/login"; throw new Error("unauthorized"); }
  if (!res.ok) throw new Error(path + ": HTTP " + res.status);
  return res.json();
}

function setConn(text, cls) {
  const c = document.getElementById("conn");
  c.textContent = text;
  c.className = cls || "muted";
}

// ---------------------------------------------------------------- live events

function filterQuery() {
  const q = new URLSearchParams();
  for (const id of ["source", "type", "event"]) {
    const v = document.getElementById("f-" + id).value.trim();
    if (v) q.set(id, v);
  }
  return q.toString();
}

function addEvents(events) {
  if (paused) return;
  const body = document.getElementById("live-rows");
  for (const e of events) {
    const row = el("tr", { class: "event", "data-seq": e.seq },
      el("td", { class: "mono" }, fmtTime(e.timestamp_ms)),
      el("td", {}, e.source),
      el("td", {}, e.call_type),
      el("td", {}, e.event || ""),
      el("td", { class: "mono" }, e.message_id));
    row.addEventListener("click", () => toggleDetail(row, e.seq));
    body.prepend(row);
  }
  const rows = body.querySelectorAll("tr.event");
  for (let i = MAX_ROWS; i < rows.length; i++) {
    const next = rows[i].nextElementSibling;
    if (next && next.classList.contains("detail")) next.remove();
    rows[i].remove();
  }
  document.getElementById("live-count").textContent =
    Math.min(rows.length, MAX_ROWS) + " events shown (newest first)";
}

async function toggleDetail(row, seq) {
  const next = row.nextElementSibling;
  if (next && next.classList.contains("detail")) { next.remove(); return; }
  const pre = el("pre", {}, "loading…");
  row.after(el("tr", { class: "detail" }, el("td", { colspan: "5" }, pre)));
  try {
    const data = await getJSON("/api/events/" + seq);
    pre.textContent = JSON.stringify(data.record, null, 2);
  } catch (err) {
    pre.textContent = "The record is no longer in the console's buffer.";
  }
}

function openStream() {
  if (stream) stream.close();
  document.getElementById("live-rows").replaceChildren();
  const q = filterQuery();
  stream = new EventSource("/api/events/stream" + (q ? "?" + q : ""));
  stream.addEventListener("open", () => setConn("live", "live"));
  stream.addEventListener("error", () => setConn("reconnecting…", "down"));
  stream.addEventListener("events", (msg) => addEvents(JSON.parse(msg.data).events));
}

// ---------------------------------------------------------------- pipeline

function renderStatus(status) {
  const box = document.getElementById("status");
  const note = document.getElementById("status-note");
  box.replaceChildren();
  if (!status || (status.value === null && !status.error)) {
    note.textContent = "Lag, freshness and health: not read yet.";
    return;
  }
  note.textContent = (status.error ? "Last read failed: " + status.error + ". " : "") +
    (status.age_s !== null ? "Read " + status.age_s + " s ago." : "");
  const v = status.value || {};
  if (v.freshness) {
    box.append(el("p", {}, "Freshness p50 " + fmtNum(v.freshness.p50_s) + " s, p95 " +
      fmtNum(v.freshness.p95_s) + " s over " + v.freshness.tables + " tables"));
  }
  for (const [title, rows] of Object.entries(v.tables || {})) {
    if (!rows.length) continue;
    const cols = Object.keys(rows[0]);
    box.append(el("h3", {}, title));
    box.append(el("table", {}, el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", {}, c)))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...cols.map((c) => el("td", {}, r[c] === null ? "" : String(r[c]))))))));
  }
}

async function loadPipeline() {
  const data = await getJSON("/api/pipeline");
  document.getElementById("stages").replaceChildren(...data.stages.map((s) =>
    el("tr", { "data-stage": s.stage },
      el("td", {}, s.stage),
      el("td", { class: s.up ? "ok" : "bad" }, s.up ? "up" : "down " + (s.error || "")),
      el("td", {}, fmtNum(s.in_per_s)),
      el("td", {}, fmtNum(s.out_per_s)),
      el("td", {}, fmtNum(s.errors_per_s, 2)),
      el("td", {}, fmtNum(s.errors_total, 0)),
      el("td", {}, fmtNum(s.lag, 0)),
      el("td", {}, s.restarts + (s.outages ? " (" + s.outages + " outages)" : "")))));
  renderStatus(data.status);
}

// ---------------------------------------------------------------- DLQ

function copyButton(text) {
  const button = el("button", { type: "button" }, "Copy");
  button.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; }
    catch (err) { button.textContent = "Select and copy"; }
  });
  return button;
}

async function loadDlq() {
  const data = await getJSON("/api/dlq");
  document.getElementById("dlq-count").textContent = "(" + data.kept + " kept, newest first)";
  document.getElementById("replay").replaceChildren(...(data.replay.length ? data.replay.map((r) =>
    el("div", { class: "replay" },
      el("p", {}, r.entries + " record(s) from " + r.topic + " (partitions " + r.partitions.join(", ") +
        ", offsets " + r.first_offset + "–" + r.last_offset + "):"),
      el("pre", { class: "command" }, r.command), copyButton(r.command))) :
    [el("p", { class: "muted" }, "Nothing to re-drive.")]));
  document.getElementById("dlq-rows").replaceChildren(...data.entries.map((e) =>
    el("tr", { class: "dlq" },
      el("td", { class: "mono" }, fmtTime(e.timestamp_ms)),
      el("td", {}, e.code),
      el("td", { class: "reason" }, e.reason),
      el("td", { class: "mono" }, e.origin_topic ? e.origin_topic + "[" + e.origin_partition + "]@" + e.origin_offset : ""),
      el("td", {}, e.source))));
}

// ---------------------------------------------------------------- schema

async function loadSchema() {
  const data = await getJSON("/api/schema");
  const note = document.getElementById("schema-note");
  const rows = data.value || [];
  note.textContent = data.error ? "Last read failed: " + data.error :
    data.age_s === null ? "Not read yet." : rows.length + " change(s), read " + data.age_s + " s ago.";
  document.getElementById("schema-rows").replaceChildren(...rows.map((c) =>
    el("tr", { class: /misfit/.test(c.change) ? "bad" : "" },
      el("td", { class: "mono" }, (c.last_seen || "").replace("T", " ")),
      el("td", {}, c.schema + "." + c.table),
      el("td", {}, c.column),
      el("td", {}, c.change),
      el("td", {}, c.column_type || ""),
      el("td", {}, c.value_type || ""),
      el("td", {}, c.detected_by || ""),
      el("td", {}, c.occurrences))));
}

// ---------------------------------------------------------------- sources

let sourcesLoaded = false;
async function loadSources() {
  const data = await getJSON("/api/sources");
  sourcesLoaded = true;
  const select = document.getElementById("f-source");
  const current = select.value;
  select.replaceChildren(el("option", { value: "" }, "any"),
    ...data.sources.map((s) => el("option", { value: s.name }, s.name)));
  select.value = current;
  document.getElementById("source-list").replaceChildren(...data.sources.map((s) =>
    el("li", {}, el("strong", {}, s.name), " → schema " + s.schema + ", " + s.write_keys + " write key(s)" +
      (s.rate_limit_per_s ? ", " + s.rate_limit_per_s + " events/s at most" : ""))));
  document.getElementById("snippets").replaceChildren(...Object.entries(data.snippets).map(([name, text]) =>
    el("div", {}, el("h3", {}, name), el("pre", { class: "snippet" }, text), copyButton(text))));
}

// ---------------------------------------------------------------- views

const LOADERS = { pipeline: loadPipeline, dlq: loadDlq, schema: loadSchema, sources: loadSources };

function show(view) {
  if (!VIEWS.includes(view)) view = "live";
  for (const v of VIEWS) document.getElementById("view-" + v).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  const load = LOADERS[view];
  if (load) {
    load().catch((err) => setConn(String(err.message || err), "down"));
    if (POLL_MS[view]) pollTimer = setInterval(() => load().catch(() => {}), POLL_MS[view]);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["f-source", "f-type"]) document.getElementById(id).addEventListener("change", openStream);
  let typing = null;
  document.getElementById("f-event").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(openStream, 300);
  });
  document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); openStream(); });
  document.getElementById("pause").addEventListener("click", (e) => {
    paused = !paused;
    e.target.textContent = paused ? "Resume" : "Pause";
  });
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  show(location.hash.slice(1));
  openStream();
  if (!sourcesLoaded) loadSources().catch(() => {});
});
