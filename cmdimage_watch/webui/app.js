// The dashboard: the table from /api/images, the graph from /api/graph.svg, both fetched
// again when an event says an image changed; a row's log from /api/images/NAME/log, then
// its new lines from the event stream while it builds. No framework, no build step.
"use strict";

const rows = new Map(); // name -> the row of /api/images
let selected = null; // the image whose log is shown
let arriving = null; // while its log is fetched: the stream's events for it, to replay
let refreshTimer = null;
// seconds between full refreshes, for what no event tells of; ?poll=0 turns them off
const pollSeconds = Number(new URLSearchParams(location.search).get("poll") ?? 5);

const $ = (id) => document.getElementById(id);

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 59.95) return value.toFixed(1) + "s";
  const whole = Math.round(value);
  if (whole < 3600) return Math.floor(whole / 60) + "m" + String(whole % 60).padStart(2, "0") + "s";
  return Math.floor(whole / 3600) + "h" + String(Math.floor((whole % 3600) / 60)).padStart(2, "0") + "m";
}

function since(iso) {
  return iso ? (Date.now() - Date.parse(iso)) / 1000 : null;
}

function duration(r) {
  if (!r.startedAt) return null;
  const end = r.finishedAt ? Date.parse(r.finishedAt) : Date.now();
  return Math.max(0, (end - Date.parse(r.startedAt)) / 1000);
}

function age(r) {
  return r.finishedAt ? seconds(since(r.finishedAt)) + " ago" : "";
}

// Ages and running times grow: their cells are rewritten in place, so the rows under the
// pointer stay the same elements between refreshes (a click is never lost to a redraw).
function tick() {
  for (const tr of document.querySelectorAll("#images tbody tr")) {
    const r = rows.get(tr.dataset.name);
    if (!r) continue;
    tr.querySelector("td.age").textContent = age(r);
    tr.querySelector("td.time").textContent = seconds(duration(r));
  }
}

function render() {
  const body = document.querySelector("#images tbody");
  const list = [...rows.values()];
  body.replaceChildren();
  for (const r of list) {
    const tr = document.createElement("tr");
    tr.dataset.name = r.name;
    tr.dataset.state = r.state;
    if (r.name === selected) tr.className = "selected";
    cell(tr, r.name, "name");
    cell(tr, r.state, "state state-" + r.state);
    cell(tr, r.state === "invalid" ? "invalid spec" : r.reason, "cause");
    cell(tr, age(r), "age");
    cell(tr, seconds(duration(r)), "time");
    cell(tr, r.ref, "ref");
    const error = cell(tr, (r.error || "").split("\n")[0], "error");
    error.title = r.error || "";
    const td = cell(tr, "", "actions");
    const button = document.createElement("button");
    button.className = "trigger";
    button.textContent = "Trigger";
    button.title = "Build " + r.name + " now, up to date or not";
    button.addEventListener("click", (e) => { e.stopPropagation(); trigger(r.name); });
    td.appendChild(button);
    tr.addEventListener("click", () => showLog(r.name));
    body.appendChild(tr);
  }
  $("empty").hidden = list.length > 0;
  const counts = {};
  for (const r of list) counts[r.state] = (counts[r.state] || 0) + 1;
  $("summary").textContent = Object.keys(counts).sort().map((s) => counts[s] + " " + s).join(", ");
  if (selected && rows.has(selected)) {
    const state = rows.get(selected).state;
    $("log-state").textContent = "(" + state + ")";
    $("log-state").className = "state state-" + state;
  }
}

async function refresh() {
  refreshTimer = null;
  const [images, graph] = await Promise.all([fetch("/api/images"), fetch("/api/graph.svg")]);
  if (images.ok) {
    rows.clear();
    for (const r of await images.json()) rows.set(r.name, r);
    render();
  }
  if (graph.ok) $("graph").innerHTML = await graph.text(); // our own SVG, names escaped
}

function refreshSoon() {
  if (refreshTimer === null) refreshTimer = setTimeout(refresh, 50);
}

async function showLog(name) {
  selected = name;
  const mine = (arriving = []);
  $("log-section").hidden = false;
  $("log-name").textContent = name;
  render();
  const response = await fetch("/api/images/" + encodeURIComponent(name) + "/log");
  const text = response.ok ? await response.text() : "(" + response.status + ")";
  if (arriving !== mine) return; // another row was clicked meanwhile
  arriving = null;
  $("log").textContent = text;
  // what the stream brought while the log was read: only what came after the reading
  const readAt = response.headers.get("X-Read-At") || "";
  for (const event of mine) if (event.time > readAt) toLog(event);
  follow();
}

function toLog(event) {
  if (event.event === "build_started") $("log").textContent = "";
  else $("log").textContent += event.line + "\n";
}

function follow() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
}

async function trigger(name) {
  const response = await fetch("/api/images/" + encodeURIComponent(name) + "/trigger", { method: "POST" });
  if (!response.ok) alert("trigger " + name + ": " + (await response.text()));
}

function connect() {
  const source = new EventSource("/api/events");
  source.onopen = () => {
    $("connection").textContent = "live";
    $("connection").className = "online";
    refresh(); // what happened while we were away
  };
  source.onerror = () => {
    $("connection").textContent = "reconnecting…";
    $("connection").className = "offline";
  };
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    const forLog = event.event === "output" || event.event === "build_started";
    if (forLog && event.image === selected) {
      if (arriving) arriving.push(event);
      else {
        toLog(event);
        follow();
      }
    }
    if (event.event !== "output") refreshSoon();
  };
}

setInterval(tick, 1000);
if (pollSeconds > 0) setInterval(refreshSoon, pollSeconds * 1000); // a waiting image, a new spec file
connect();
