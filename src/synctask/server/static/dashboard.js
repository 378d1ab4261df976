// synctask dashboard: live from the daemon's event stream (GET /api/events), controls over the API.
// Everything shown is set with textContent, never parsed as HTML. Rows, buttons and event lines are
// made once and then changed in place (keyed by plan name and line id), so focus, a text selection,
// hover and a held click survive the updates. The daemon's token comes once in the address's
// fragment (#token=..., printed by `synctask serve`; a fragment is never sent to a server), is taken
// out of the address bar at once, lives in this tab's sessionStorage and goes only into the
// Authorization header.
"use strict";

const TOKEN_KEY = "synctask-token";
const MAX_EVENTS = 300;
const ACTIONS = ["start", "pause", "resume", "stop", "cancel", "retry"];
const SHOWN = {
  running: ["pause", "stop", "cancel"],
  paused: ["resume", "stop", "cancel"],
  stopped: ["start", "cancel"],
  idle: ["start"],
  completed: ["start"],
  cancelled: ["start"],
  failed: ["start"],
};
const ENDED = ["completed", "cancelled", "failed", "idle"];

const view = {
  plans: [], scopes: [], workers: null, snapshotAt: 0, clockSkew: 0, lastId: null, loaded: false,
  connected: false, asOf: null, detail: null, taskOffset: 0, lastStates: new Map(),
};
const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Change a node only when its value differs: an unchanged text node keeps its selection.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
function setAttr(node, key, value) {
  if (value === null || value === undefined) {
    if (node.hasAttribute(key)) node.removeAttribute(key);
  } else if (node.getAttribute(key) !== value) node.setAttribute(key, value);
}
function show(node, visible) {
  if (node.hidden === visible) node.hidden = !visible;
}

// --- times: one format (local time with its zone; ISO in the tooltip) -------------------------
const clockFormat = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZoneName: "short" });
const dateFormat = new Intl.DateTimeFormat([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false, timeZoneName: "short" });
const number = new Intl.NumberFormat();
const nowMs = () => Date.now() + view.clockSkew;

function said(iso) {
  if (!iso) return "–";
  const at = new Date(iso);
  return at.toDateString() === new Date(nowMs()).toDateString() ? clockFormat.format(at) : dateFormat.format(at);
}

function setTime(node, iso) {
  setText(node, said(iso));
  setAttr(node, "datetime", iso || null);
  setAttr(node, "title", iso || null);
}

function timeEl(iso) {
  const node = el("time");
  setTime(node, iso);
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${String(seconds % 60).padStart(2, "0")}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${String(Math.floor(seconds / 60) % 60).padStart(2, "0")}m`;
  return `${Math.floor(seconds / 86400)}d ${Math.floor(seconds / 3600) % 24}h`;
}

const secondsUntil = (iso) => (iso ? (Date.parse(iso) - nowMs()) / 1000 : null);

// --- talking to the daemon ------------------------------------------------------------------
function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function takeTokenFromAddress() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search);
}

async function api(method, path) {
  // A call that changes something says its body is JSON: the daemon refuses any other.
  const options = method === "GET" ? { method, headers: headers() }
    : { method, headers: { ...headers(), "Content-Type": "application/json" }, body: "{}" };
  const answer = await fetch(path, options);
  const body = await answer.json().catch(() => ({}));
  if (answer.status === 401) {
    askToken(body.error);
    throw new Error("the daemon needs its token");
  }
  if (!answer.ok) throw new Error(body.error || `HTTP ${answer.status}`);
  return body;
}

function askToken(refusal) {
  const sent = Boolean(sessionStorage.getItem(TOKEN_KEY));
  const error = $("token-error");
  setText(error, sent ? `The daemon refused this token: ${refusal || "it is not the daemon's token"}. Paste the token again.` : "");
  show(error, sent);
  offline("Not connected: the daemon needs its API token.", true);
  const dialog = $("token-dialog");
  if (!dialog.open && !askToken.declined) dialog.showModal();
}

$("token-form").addEventListener("submit", () => {
  const input = $("token-input");
  sessionStorage.setItem(TOKEN_KEY, input.value);
  input.value = "";
  askToken.declined = false;
  reconnect(0);
});
// Escape or "Not now": the dialog closes and the banner keeps a way back to it.
$("token-dialog").addEventListener("cancel", () => { askToken.declined = true; });
$("token-later").addEventListener("click", () => {
  askToken.declined = true;
  $("token-dialog").close();
});
$("offline-token").addEventListener("click", () => {
  askToken.declined = false;
  $("token-dialog").showModal();
});

let streamAbort = null;
let retryTimer = null;

function setConn(kind, text) {
  const conn = $("conn");
  setAttr(conn, "class", `conn ${kind}`);
  setText(conn, text);
}

// Not connected: say why in a banner, dim what is shown and say when it was true.
function offline(text, needsToken = false) {
  view.connected = false;
  setText($("offline-text"), text + (view.asOf ? ` What you see is as of ${said(view.asOf)}.` : ""));
  show($("offline"), true);
  show($("offline-token"), needsToken);
  $("main").classList.toggle("stale", view.loaded);
  renderEmpty();
}

function online() {
  view.connected = true;
  show($("offline"), false);
  $("main").classList.remove("stale");
}

function reconnect(delay) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(follow, delay);
}

async function follow() {
  if (streamAbort) streamAbort.abort();
  streamAbort = new AbortController();
  setConn("wait", "connecting…");
  const asked = headers();
  if (view.lastId !== null) asked["Last-Event-ID"] = String(view.lastId); // only what this page has not seen
  let answer;
  try {
    answer = await fetch("/api/events", { headers: asked, signal: streamAbort.signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    setConn("down", "unreachable");
    offline("The daemon is unreachable; trying again every 2 seconds.");
    reconnect(2000);
    return;
  }
  if (answer.status === 401) {
    setConn("down", "token needed");
    const body = await answer.json().catch(() => ({}));
    askToken(body.error);
    return;
  }
  if (!answer.ok) {
    setConn("down", `refused (${answer.status})`);
    offline(`The daemon answered ${answer.status}; trying again in 3 seconds.`);
    reconnect(3000);
    return;
  }
  setConn("live", "live");
  online();
  const reader = answer.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of block.split("\n")) {
          if (line.startsWith("data: ")) JSON.parse(line.slice(6)).forEach(take);
          else if (line.startsWith("id: ")) view.lastId = Number(line.slice(4));
        }
      }
      schedule();
    }
  } catch (error) {
    if (error.name === "AbortError") return;
  }
  setConn("down", "reconnecting");
  offline("The connection to the daemon ended; reconnecting.");
  reconnect(1000);
}

// --- what the stream says -------------------------------------------------------------------
function take(item) {
  if (item.type === "progress") {
    view.plans = item.plans;
    view.scopes = item.scopes;
    view.workers = item.workers;
    view.inFlight = item.in_flight;
    view.nodes = item.nodes;
    view.permits = item.permits;
    view.snapshotAt = Date.now();
    view.clockSkew = Date.parse(item.at) - Date.now();
    view.asOf = item.at;
    view.loaded = true;
    return;
  }
  if (item.type === "plan") {
    const plan = view.plans.find((p) => p.name === item.plan);
    if (plan && item.state !== "removed") plan.state = item.state;
    if (item.state === "removed") view.plans = view.plans.filter((p) => p.name !== item.plan);
  }
  drawEvent(item);
  if (view.detail === item.plan && (item.type === "task" || item.type === "plan")) loadDetail();
}

// --- plans: one row per plan, made once --------------------------------------------------------
const rows = new Map();

function makeRow(name) {
  const r = {};
  r.name = el("button", { type: "button", class: "link", "aria-label": `details of ${name}: runs and tasks`, onclick: () => openDetail(name) }, name);
  r.state = el("span", { class: "state" });
  r.why = el("div", { class: "why" });
  r.next = el("div", { class: "muted" });
  r.done = el("span", { class: "done" });
  r.failedBar = el("span", { class: "failed" });
  r.label = el("em");
  r.bar = el("div", { class: "bar", role: "progressbar", "aria-label": `progress of ${name}` }, r.done, r.failedBar, r.label);
  r.rows = el("td", { class: "num rows", "data-label": "rows" });
  r.rate = el("td", { class: "num", "data-label": "rate" });
  r.eta = el("td", { class: "num eta", "data-label": "ETA" });
  r.retries = el("td", { class: "num", "data-label": "retries" });
  r.failed = el("td", { class: "num", "data-label": "failed" });
  r.buttons = {};
  const control = el("td", { class: "control" });
  for (const action of ACTIONS) {
    const button = el("button", {
      type: "button", class: action === "cancel" ? "danger" : "", data: { plan: name, action },
      "aria-label": `${action} ${name}`, hidden: "",
    }, action);
    button.addEventListener("click", () => act(name, action, button));
    r.buttons[action] = button;
    control.append(button);
  }
  r.tr = el("tr", { data: { plan: name } },
    el("td", { class: "name", "data-label": "plan" }, r.name),
    el("td", { "data-label": "state" }, r.state, r.why, r.next),
    el("td", { class: "progress", "data-label": "progress" }, r.bar),
    r.rows, r.rate, r.eta, r.retries, r.failed, control);
  return r;
}

async function act(name, action, button) {
  if (button.getAttribute("aria-busy") === "true") return;
  if (action === "cancel" && !confirm(`Cancel plan ${name}? Its run ends now; finished tasks stay done.`)) return;
  button.setAttribute("aria-busy", "true");
  try {
    const answer = await api("POST", `/api/plans/${encodeURIComponent(name)}/${action}`);
    const plan = view.plans.find((p) => p.name === name);
    if (plan) plan.state = answer.state;
    if (answer.message) note(name, answer.message);
    announce(`${name}: ${answer.changed ? answer.state : answer.message || `already ${answer.state}`}`);
    schedule();
  } catch (error) {
    note(name, `${action}: ${error.message}`);
  } finally {
    button.removeAttribute("aria-busy");
  }
}

function announce(text) {
  setText($("announce"), text);
}

function whyOf(p) {
  const w = p.waiting;
  if (!w) return "";
  if (w.reason === "frozen") {
    const left = secondsUntil(p.frozen_until);
    return `frozen: ${w.text}${left > 0 ? `, ${duration(left)} left` : ""}`;
  }
  const room = secondsUntil(w.room_at);
  if (room !== null && room < 1.5 && p.rate > 0) return `paced by ${w.text}`;
  const when = w.room_at ? `room at ${said(w.room_at)}` : "room when an answer in flight arrives";
  return `waiting: ${w.text}, ${when}`;
}

function renderPlans() {
  const body = $("plans").tBodies[0];
  const names = new Set(view.plans.map((p) => p.name));
  for (const [name, r] of rows) {
    if (!names.has(name)) {
      r.tr.remove();
      rows.delete(name);
    }
  }
  const since = (Date.now() - view.snapshotAt) / 1000;
  let previous = null;
  for (const p of view.plans) {
    let r = rows.get(p.name);
    if (!r) {
      r = makeRow(p.name);
      rows.set(p.name, r);
    }
    const place = previous ? previous.nextSibling : body.firstChild;
    if (place !== r.tr) body.insertBefore(r.tr, place);
    previous = r.tr;
    const before = view.lastStates.get(p.name);
    if (before && before !== p.state) announce(`${p.name} ${p.state}`);
    view.lastStates.set(p.name, p.state);
    setAttr(r.tr, "data-state", p.state);
    setAttr(r.state, "class", `state ${p.state}`);
    setText(r.state, p.state);
    const why = p.state === "running" ? whyOf(p) : "";
    setText(r.why, why); // always one line, empty or not: rows never change height under a pointer
    setAttr(r.why, "title", why || null);
    const next = p.next_due && p.state !== "running" ? `next run ${said(p.next_due)}` : "";
    setText(r.next, next);
    show(r.next, Boolean(next));
    const done = p.done + p.skipped;
    const total = p.total;
    const part = (n) => (total ? `${Math.min(100, (n / total) * 100)}%` : "0%");
    if (r.done.style.width !== part(done)) r.done.style.width = part(done);
    if (r.failedBar.style.width !== part(p.failed)) r.failedBar.style.width = part(p.failed);
    const fraction = total ? Math.min(1, (done + p.failed) / total) : 0;
    const streaming = p.messages > 0 && p.state === "running";
    const label = streaming ? `streaming: ${number.format(p.messages)} messages`
      : total === null || total === undefined ? number.format(done)
      : `${number.format(done)} / ${number.format(total)} (${(fraction * 100).toFixed(fraction < 0.1 ? 1 : 0)}%)${p.failed ? `, ${number.format(p.failed)} failed` : ""}`;
    setText(r.label, label);
    setAttr(r.bar, "aria-valuenow", String(Math.round(fraction * 100)));
    r.bar.classList.toggle("full", Boolean(total) && done >= total);
    setText(r.rows, number.format(p.rows));
    const ended = ENDED.includes(p.state);
    setText(r.rate, p.state === "running" || (ended && p.rate > 0)
      ? `${p.rate.toFixed(1)}${streaming ? " msg" : ""}/s${ended ? " avg" : ""}` : "–");
    setText(r.eta, p.state === "running" && p.eta_seconds !== null ? duration(p.eta_seconds - since) : "–");
    setText(r.retries, number.format(p.retries));
    setText(r.failed, number.format(p.failed));
    r.failed.classList.toggle("failed-count", p.failed > 0);
    const shown = [...(SHOWN[p.state] || [])];
    if (p.failed > 0 && ENDED.includes(p.state)) shown.push("retry");
    for (const action of ACTIONS) show(r.buttons[action], shown.includes(action));
  }
  show($("no-plans"), view.connected && view.loaded && view.plans.length === 0);
  const nodes = Object.entries(view.nodes || {}).map(([node, n]) => `${node}: ${n}`).join(", ");
  const permits = view.permits || {};
  const lent = permits.out || permits.last_minute
    ? `; permits to other programs: ${number.format(permits.out)} out, ${number.format(permits.last_minute)} in the last minute`
    : "";
  setText($("workers"), view.workers === null ? ""
    : `${number.format(view.inFlight || 0)} of ${number.format(view.workers)} workers busy${nodes ? ` (${nodes})` : ""}${lent}`);
}

// --- vendors and limits -------------------------------------------------------------------------
function renderVendors() {
  const cards = [];
  const byVendor = new Map();
  for (const scope of view.scopes) {
    const key = scope.vendor || "other";
    if (!byVendor.has(key)) byVendor.set(key, []);
    byVendor.get(key).push(scope);
  }
  for (const [vendor, scopes] of byVendor) {
    const card = el("div", { class: "vendor", data: { vendor } }, el("h3", {}, vendor));
    for (const scope of scopes) {
      const part = el("div", { class: "scope" },
        el("div", { class: "label" }, scope.node ? `node ${scope.node} (per-node limit)` : scope.scope));
      if (scope.key_refused) part.append(el("div", { class: "ban" }, `key ${scope.key} was refused by the vendor: set aside, the other keys go on`));
      if (scope.learned) part.append(el("div", { class: "learned" }, scope.learned));
      for (const limit of scope.limits) {
        const fraction = limit.capacity ? Math.min(1, limit.used / limit.capacity) : 0;
        const gauge = el("div", { class: `bar${fraction >= 1 ? " full" : fraction >= 0.8 ? " hot" : ""}`, role: "meter",
          "aria-valuemin": "0", "aria-valuemax": String(limit.capacity), "aria-valuenow": String(limit.used), "aria-label": `${scope.scope} ${limit.limit}` }, el("span"));
        gauge.firstChild.style.width = `${fraction * 100}%`;
        part.append(el("div", { class: "gauge", title: limit.limit }, gauge, el("span", { class: "text" }, limit.text)));
      }
      const left = secondsUntil(scope.frozen_until);
      if (left > 0) {
        const ban = scope.freeze && scope.freeze.ban;
        part.append(el("div", { class: ban ? "ban" : "freeze" }, `${ban ? "banned" : "frozen"} for ${duration(left)} (until `, timeEl(scope.frozen_until), ")"));
        if (scope.freeze && scope.freeze.message) part.append(el("div", { class: "muted" }, scope.freeze.message));
      }
      card.append(part);
    }
    cards.push(card);
  }
  // Rebuilt only when what it says changed (text compared), so a selection in it survives.
  const key = JSON.stringify(cards.map((c) => c.textContent)) + JSON.stringify(view.scopes.map((s) => s.limits.map((l) => l.used)));
  if (renderVendors.key === key) return;
  renderVendors.key = key;
  const empty = view.loaded ? "No limits configured." : "Not connected yet.";
  $("vendors").replaceChildren(...(cards.length ? cards : [el("p", { class: "muted" }, empty)]));
}

function renderEmpty() {
  if (!view.loaded) {
    setText($("no-plans"), "Not connected yet: no plans to show.");
    show($("no-plans"), true);
  }
  renderVendors();
}

// --- events: one line each, changed in place --------------------------------------------------
const lines = new Map();

function kindOf(item) {
  if (item.type === "task") return item.kind === "failed" ? "failed" : item.kind;
  return item.type;
}

function describe(item) {
  switch (item.type) {
    case "plan": return [item.state, item.message || (item.total !== null && item.total !== undefined ? `${number.format(item.total)} tasks` : "")];
    case "task": return [item.kind, item.message || item.task_id];
    case "retries": return [`${number.format(item.count)} ${item.count === 1 ? "retry" : "retries"}`,
      `${item.count > 1 ? `since ${said(item.first_at)}, the last: ` : ""}${item.message || ""}`];
    case "freeze": return [item.ban ? "ban" : "freeze",
      `${item.message} (held back ${number.format(item.held)} ${item.held === 1 ? "answer" : "answers"}; until ${said(item.until)})`];
    case "key": return ["key refused", item.message || `key ${item.key} was refused and set aside`];
    default: return [item.type, item.message || ""];
  }
}

function drawEvent(item) {
  const key = item.line ?? `note-${drawEvent.notes = (drawEvent.notes || 0) + 1}`;
  let line = lines.get(key);
  const [what, message] = describe(item);
  if (!line) {
    line = { li: el("li"), time: el("time"), what: el("span", { class: "what" }), msg: el("span", { class: "msg" }) };
    line.li.append(line.time, line.what, line.msg);
    line.li.dataset.line = String(key);
    lines.set(key, line);
  }
  const list = $("events");
  setAttr(line.li, "class", item.type === "freeze" && item.ban ? "ban" : kindOf(item));
  line.li.dataset.plan = item.plan || "";
  line.li.dataset.kind = item.type === "task" ? (item.kind === "failed" ? "failed" : "task") : item.type;
  setTime(line.time, item.at);
  setText(line.what, `${item.plan ? item.plan + " " : ""}${what}`);
  setText(line.msg, message);
  if (list.firstChild !== line.li) list.prepend(line.li); // newest activity first
  filterLine(line.li);
  lines.delete(key); // the map's order: the line changed last, last
  lines.set(key, line);
  while (lines.size > MAX_EVENTS) {
    const [oldest, gone] = lines.entries().next().value;
    gone.li.remove();
    lines.delete(oldest);
  }
  show($("no-events"), false);
}

function note(plan, message) {
  drawEvent({ type: "note", at: new Date(nowMs()).toISOString(), plan, message });
}

function filterLine(li) {
  const plan = $("event-filter").value;
  const kind = $("event-kind").value;
  const text = $("event-search").value.trim().toLowerCase();
  const visible = (!plan || li.dataset.plan === plan)
    && (!kind || li.dataset.kind === kind || (kind === "freeze" && li.classList.contains("ban")))
    && (!text || li.textContent.toLowerCase().includes(text));
  show(li, visible);
}

function filterEvents() {
  let any = false;
  for (const { li } of lines.values()) {
    filterLine(li);
    any = any || !li.hidden;
  }
  show($("no-events"), !any);
}

function renderPlanFilter() {
  const select = $("event-filter");
  const names = view.plans.map((p) => p.name);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (names.join("\n") === have.join("\n")) return;
  const chosen = select.value;
  for (const option of [...select.options].slice(1)) if (!names.includes(option.value)) option.remove();
  for (const name of names) if (!have.includes(name)) select.append(el("option", { value: name }, name));
  select.value = names.includes(chosen) ? chosen : "";
}

$("event-filter").addEventListener("change", filterEvents);
$("event-kind").addEventListener("change", filterEvents);
$("event-search").addEventListener("input", filterEvents);

// --- one plan's runs and tasks -------------------------------------------------------------------
function openDetail(name) {
  view.detail = name;
  view.taskOffset = 0;
  setText($("failures-plan"), name);
  show($("failures-section"), true);
  loadDetail();
}

$("failures-close").addEventListener("click", () => {
  view.detail = null;
  show($("failures-section"), false);
});
$("task-state").addEventListener("change", () => { view.taskOffset = 0; loadDetail(); });
$("task-text").addEventListener("input", () => { view.taskOffset = 0; clearTimeout(loadDetail.typing); loadDetail.typing = setTimeout(loadDetail, 250); });
$("task-search").addEventListener("submit", (e) => e.preventDefault());
$("tasks-prev").addEventListener("click", () => { view.taskOffset = Math.max(0, view.taskOffset - PAGE); loadDetail(); });
$("tasks-next").addEventListener("click", () => { view.taskOffset += PAGE; loadDetail(); });
$("retry-all").addEventListener("click", (e) => { if (view.detail) act(view.detail, "retry", e.currentTarget).then(loadDetail); });

const PAGE = 20;

async function loadDetail() {
  const name = view.detail;
  if (!name) return;
  const now = Date.now();
  if (loadDetail.busy && now - loadDetail.busy < 3000) {
    loadDetail.again = true;
    return;
  }
  loadDetail.busy = now;
  try {
    const state = $("task-state").value;
    const text = $("task-text").value.trim();
    const query = new URLSearchParams({ plan: name, limit: String(PAGE), offset: String(view.taskOffset) });
    if (state) query.set("state", state);
    if (text) query.set("q", text);
    const [runs, found] = await Promise.all([
      api("GET", `/api/plans/${encodeURIComponent(name)}/runs?limit=10`), api("GET", `/api/tasks?${query}`)]);
    if (view.detail !== name) return;
    drawRuns(runs.runs);
    drawTasks(found);
  } catch (error) {
    note(name, error.message);
  } finally {
    loadDetail.busy = 0;
    if (loadDetail.again) {
      loadDetail.again = false;
      setTimeout(loadDetail, 500);
    }
  }
}

function drawRuns(runs) {
  const key = JSON.stringify(runs);
  if (drawRuns.key === key) return;
  drawRuns.key = key;
  $("runs").tBodies[0].replaceChildren(...runs.map((r) => {
    const took = r.ended_at ? (Date.parse(r.ended_at) - Date.parse(r.started_at)) / 1000 : null;
    return el("tr", { data: { run: r.run_id } }, el("td", {}, timeEl(r.started_at)),
      el("td", { title: r.message || "" }, el("span", { class: `state ${r.state}` }, r.state)),
      el("td", { class: "num" }, took === null ? "going" : duration(took)),
      el("td", { class: "num" }, number.format(r.done + r.skipped)),
      el("td", { class: `num${r.failed ? " failed-count" : ""}` }, number.format(r.failed)),
      el("td", { class: "num" }, number.format(r.rows)));
  }));
}

function params(task) {
  if (!task.params) return task.task_id;
  return Object.entries(task.params).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ");
}

async function retryOne(task, button) {
  button.disabled = true;
  try {
    await api("POST", `/api/plans/${encodeURIComponent(task.plan)}/tasks/${encodeURIComponent(task.task_id)}/retry`);
    announce(`${task.plan}: retrying ${params(task)}`);
    note(task.plan, `retrying ${params(task)} alone`);
  } catch (error) {
    note(task.plan, `retry ${params(task)}: ${error.message}`);
  }
  loadDetail();
}

function drawTasks(found) {
  const plan = view.plans.find((p) => p.name === view.detail);
  const ended = Boolean(plan) && ENDED.includes(plan.state);
  const key = JSON.stringify(found) + ended;
  if (drawTasks.key === key) return;
  drawTasks.key = key;
  const items = found.tasks.map((t) => {
    const tries = `${t.attempts} ${t.attempts === 1 ? "try" : "tries"}`;
    const head = t.state === "running" ? `in flight ${duration(t.seconds)}${t.node ? ` on ${t.node}` : ""} · try ${t.attempts + 1}`
      : `${t.state} after ${tries} · `;
    const retry = t.state === "failed" && ended ? el("button", { type: "button", class: "retry-one", "aria-label": `retry ${params(t)}`,
      onclick: (e) => retryOne(t, e.currentTarget) }, "retry") : null;
    return el("li", { class: t.state, data: { task: t.task_id } },
      el("strong", {}, params(t)), " ", retry, el("div", { class: "meta" }, head, t.state === "running" ? "" : timeEl(t.at)),
      t.message ? el("div", { class: "msg" }, t.message) : null);
  });
  $("failures").replaceChildren(...items);
  show($("no-failures"), items.length === 0);
  $("tasks-prev").disabled = view.taskOffset === 0;
  $("tasks-next").disabled = !found.more;
  $("retry-all").disabled = !plan || !(plan.failed > 0 && ENDED.includes(plan.state));
}

// --- graphs: the last hour, drawn as inline SVG -------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f5fa8", "#b03a1e", "#6b4aa0", "#0f7a5a", "#8a5a00", "#a0306e"];

function chart(title, series, unit, maxFloor) {
  const width = 360;
  const height = 64;
  const max = Math.max(maxFloor, ...series.flatMap((s) => s.values));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const latest = series.map((s) => `${s.name} ${format(s.values[s.values.length - 1], unit)}`).join(", ");
  svg.setAttribute("aria-label", `${title}, the last hour; now ${latest}; highest ${format(max, unit)}`);
  for (const s of series) {
    const line = document.createElementNS(SVG, "polyline");
    const step = width / Math.max(1, s.values.length - 1);
    line.setAttribute("points", s.values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", s.color);
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  }
  const legend = el("div", { class: "legend" }, ...series.map((s) => {
    const swatch = el("i");
    swatch.style.background = s.color; // CSSOM, which the page's CSP allows (a style attribute it does not)
    return el("span", {}, swatch, `${s.name} ${format(s.values[s.values.length - 1], unit)}`);
  }));
  return el("figure", { class: "chart" }, el("figcaption", {}, title, el("span", { class: "muted" }, ` (top ${format(max, unit)})`)), svg, legend);
}

function format(value, unit) {
  if (unit === "%") return `${Math.round(value * 100)}%`;
  if (unit === "/s") return `${value.toFixed(value < 10 ? 1 : 0)}/s`;
  return number.format(value);
}

async function loadSeries() {
  if (!view.connected) return;
  let s;
  try {
    s = await api("GET", "/api/series");
  } catch (error) {
    return;
  }
  const per = s.step_seconds;
  // From the daemon's start (within the hour): a young daemon's minutes fill the width.
  const skip = Math.max(0, Math.min(s.requests.length - 2, Math.floor((Date.parse(s.since) - Date.parse(s.start)) / 1000 / per)));
  for (const key of ["requests", "errors", "limited", "freezes"]) s[key] = s[key].slice(skip);
  for (const scope of Object.keys(s.usage)) s.usage[scope] = s.usage[scope].slice(skip);
  const span = duration(s.requests.length * per);
  const usage = Object.entries(s.usage).slice(0, PALETTE.length).map(([scope, values], i) => ({ name: scope, values, color: PALETTE[i] }));
  const charts = [
    chart(`Answers per second, the last ${span}`, [{ name: "answers", values: s.requests.map((n) => n / per), color: PALETTE[0] }], "/s", 1),
    chart(`Errors and rate-limited answers per ${per}s`, [
      { name: "errors", values: s.errors, color: PALETTE[1] }, { name: "rate-limited", values: s.limited, color: PALETTE[2] }], "", 1),
    chart(`Freezes per ${per}s`, [{ name: "freezes", values: s.freezes, color: PALETTE[3] }], "", 1),
    chart("Limit use (the fullest limit of each scope)", usage.length ? usage : [{ name: "no limits", values: [0], color: PALETTE[4] }], "%", 1),
  ];
  $("graphs").replaceChildren(...charts);
}

// --- drawing -----------------------------------------------------------------------------------
let drawn = 0;
function schedule() {
  // At most ten frames a second, however fast the stream talks.
  const t = performance.now();
  if (t - drawn < 100) {
    clearTimeout(schedule.timer);
    schedule.timer = setTimeout(schedule, 100 - (t - drawn));
    return;
  }
  drawn = t;
  render();
}

function render() {
  renderPlans();
  renderVendors();
  renderPlanFilter();
}

setInterval(() => { if (view.loaded) render(); }, 1000); // countdowns move between snapshots
setInterval(loadSeries, 10000);
setInterval(() => { if (view.detail && view.connected) loadDetail(); }, 5000);
setTimeout(loadSeries, 1500);
takeTokenFromAddress();
follow();
