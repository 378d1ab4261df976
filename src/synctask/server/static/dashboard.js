// synctask dashboard: live from the daemon's event stream (GET /api/events), controls over the API.
// Everything shown is set with textContent, never parsed as HTML. The daemon's token comes once in
// the address's fragment (#token=..., printed by `synctask serve`; a fragment is never sent to a
// server), is taken out of the address bar at once, lives in this tab's sessionStorage and goes
// only into the Authorization header.
"use strict";

const TOKEN_KEY = "synctask-token";
const MAX_EVENTS = 300;
const ACTIONS = {
  running: ["pause", "stop", "cancel"],
  paused: ["resume", "stop", "cancel"],
  stopped: ["start", "cancel"],
  idle: ["start"],
  completed: ["start"],
  cancelled: ["start"],
  failed: ["start"],
};

const view = { plans: [], scopes: [], workers: null, events: [], filter: "", failuresOf: null, clockSkew: 0 };
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
  if (answer.status === 401) {
    askToken();
    throw new Error("the daemon needs its token");
  }
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.error || `HTTP ${answer.status}`);
  return body;
}

function askToken() {
  const dialog = $("token-dialog");
  if (!dialog.open) dialog.showModal();
}

$("token-form").addEventListener("submit", () => {
  const input = $("token-input");
  sessionStorage.setItem(TOKEN_KEY, input.value);
  input.value = "";
  reconnect(0);
});

let streamAbort = null;
let retryTimer = null;

function setConn(kind, text) {
  const conn = $("conn");
  conn.className = `conn ${kind}`;
  conn.textContent = text;
}

function reconnect(delay) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(follow, delay);
}

async function follow() {
  if (streamAbort) streamAbort.abort();
  streamAbort = new AbortController();
  setConn("wait", "connecting…");
  let answer;
  try {
    answer = await fetch("/api/events", { headers: headers(), signal: streamAbort.signal });
  } catch (error) {
    setConn("down", "daemon unreachable, retrying");
    reconnect(2000);
    return;
  }
  if (answer.status === 401) {
    setConn("down", "token needed");
    askToken();
    return;
  }
  if (!answer.ok) {
    setConn("down", `daemon answered ${answer.status}`);
    reconnect(3000);
    return;
  }
  setConn("live", "live");
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
        }
      }
      render();
    }
  } catch (error) {
    if (error.name === "AbortError") return;
  }
  setConn("down", "stream ended, reconnecting");
  reconnect(1000);
}

// --- what the stream says -------------------------------------------------------------------
function take(event) {
  if (event.type === "progress") {
    view.plans = event.plans;
    view.scopes = event.scopes;
    view.workers = event.workers;
    view.clockSkew = event.at * 1000 - Date.now();
    return;
  }
  if (event.type === "skip" || event.type === "stream") return;
  if (event.type === "plan") {
    const plan = view.plans.find((p) => p.name === event.plan);
    if (plan && event.state !== "removed") plan.state = event.state;
    if (event.state === "removed") view.plans = view.plans.filter((p) => p.name !== event.plan);
  }
  view.events.push(event);
  if (view.events.length > MAX_EVENTS) view.events.splice(0, view.events.length - MAX_EVENTS);
  if (event.type === "task" && view.failuresOf === event.plan) showFailures(event.plan);
}

// --- drawing --------------------------------------------------------------------------------
const number = new Intl.NumberFormat();
const now = () => (Date.now() + view.clockSkew) / 1000;

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${String(seconds % 60).padStart(2, "0")}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${String(Math.floor(seconds / 60) % 60).padStart(2, "0")}m`;
  return `${Math.floor(seconds / 86400)}d ${Math.floor(seconds / 3600) % 24}h`;
}

function clock(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
}

function bar(done, total) {
  const fraction = total ? Math.min(1, done / total) : 0;
  const label = total === null || total === undefined ? number.format(done)
    : `${number.format(done)} / ${number.format(total)} (${(fraction * 100).toFixed(fraction < 0.1 ? 1 : 0)}%)`;
  const node = el("div", { class: `bar${total && done >= total ? " full" : ""}` }, el("span"), el("em", {}, label));
  node.firstChild.style.width = `${fraction * 100}%`;
  return node;
}

function act(name, action) {
  return el("button", {
    type: "button", class: action === "cancel" ? "danger" : "", data: { plan: name, action },
    onclick: async (e) => {
      e.target.disabled = true;
      try {
        const answer = await api("POST", `/api/plans/${encodeURIComponent(name)}/${action}`);
        const plan = view.plans.find((p) => p.name === name);
        if (plan) plan.state = answer.state;
        render();
      } catch (error) {
        note(`${name}: ${action}: ${error.message}`);
      } finally {
        e.target.disabled = false;
      }
    },
  }, action);
}

function note(message) {
  view.events.push({ type: "note", at: now(), plan: "", message });
  render();
}

function renderPlans() {
  const body = $("plans").tBodies[0];
  const rows = [];
  for (const p of view.plans) {
    const frozen = p.frozen_until && p.frozen_until > now();
    const actions = [...(ACTIONS[p.state] || [])];
    if (p.failed > 0 && ["completed", "cancelled", "failed", "idle"].includes(p.state)) actions.push("retry");
    const row = el("tr", { data: { plan: p.name, state: p.state } },
      el("td", { class: "name", "data-label": "plan" },
        el("button", { type: "button", class: "link", title: "show its failed tasks", onclick: () => showFailures(p.name) },
          p.name)),
      el("td", { "data-label": "state" }, el("span", { class: `state ${p.state}` }, p.state),
        p.next_due && p.state !== "running" ? el("div", { class: "muted" }, `next ${new Date(p.next_due).toLocaleString()}`) : null),
      el("td", { class: "progress", "data-label": "progress" }, bar(p.done + p.skipped, p.total)),
      el("td", { class: "num rows", "data-label": "rows" }, number.format(p.rows)),
      el("td", { class: "num", "data-label": "rate" }, p.state === "running" ? `${p.rate.toFixed(1)}/s` : "–"),
      el("td", { class: "num", "data-label": "ETA" }, p.state === "running" ? duration(p.eta_seconds) : "–"),
      el("td", { class: frozen ? "freeze" : "muted", "data-label": "freeze" }, frozen ? `frozen ${duration(p.frozen_until - now())}` : "–"),
      el("td", { class: "num", "data-label": "retries" }, number.format(p.retries)),
      el("td", { class: `num${p.failed ? " failed-count" : ""}`, "data-label": "failed" }, number.format(p.failed)),
      el("td", { class: "control" }, ...actions.map((a) => act(p.name, a))),
    );
    rows.push(row);
  }
  body.replaceChildren(...rows);
  $("no-plans").hidden = view.plans.length > 0;
  $("workers").textContent = view.workers === null ? "" : `${view.workers} workers`;
}

function renderVendors() {
  const byVendor = new Map();
  for (const scope of view.scopes) {
    const key = scope.vendor || "other";
    if (!byVendor.has(key)) byVendor.set(key, []);
    byVendor.get(key).push(scope);
  }
  const cards = [];
  for (const [vendor, scopes] of byVendor) {
    const card = el("div", { class: "vendor", data: { vendor } }, el("h3", {}, vendor));
    for (const scope of scopes) {
      const part = el("div", { class: "scope" },
        el("div", { class: "label" }, scope.node ? `node ${scope.node} (per-node limit)` : scope.scope));
      for (const limit of scope.limits) {
        const fraction = limit.capacity ? Math.min(1, limit.used / limit.capacity) : 0;
        const gauge = el("div", { class: `bar${fraction >= 1 ? " full" : fraction >= 0.8 ? " hot" : ""}` }, el("span"));
        gauge.firstChild.style.width = `${fraction * 100}%`;
        part.append(el("div", { class: "gauge", title: limit.limit }, gauge, el("span", { class: "text" }, limit.text)));
      }
      if (scope.frozen_until && scope.frozen_until > now()) {
        const ban = scope.freeze && scope.freeze.ban;
        part.append(el("div", { class: ban ? "ban" : "freeze" },
          `${ban ? "banned" : "frozen"} for ${duration(scope.frozen_until - now())} (until ${clock(scope.frozen_until)})`));
        if (scope.freeze && scope.freeze.message) part.append(el("div", { class: "muted" }, scope.freeze.message));
      }
      card.append(part);
    }
    cards.push(card);
  }
  $("vendors").replaceChildren(...(cards.length ? cards : [el("p", { class: "muted" }, "No limits configured.")]));
}

function describe(event) {
  if (event.type === "plan") return [event.state, event.message || (event.total !== null && event.total !== undefined ? `${number.format(event.total)} tasks` : "")];
  if (event.type === "task") return [event.kind, event.message || event.task_id];
  if (event.type === "freeze") return [event.message.includes("(HTTP 418)") || event.message.includes("(HTTP 403)") ? "ban" : "freeze", event.message];
  return [event.type, event.message || ""];
}

function renderEvents() {
  const select = $("event-filter");
  const names = view.plans.map((p) => p.name);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (names.join("\n") !== have.join("\n")) {
    select.replaceChildren(el("option", { value: "" }, "all plans"), ...names.map((n) => el("option", { value: n }, n)));
    select.value = names.includes(view.filter) ? view.filter : "";
  }
  const shown = view.events.filter((e) => !view.filter || e.plan === view.filter).slice(-120).reverse();
  $("events").replaceChildren(...shown.map((e) => {
    const [what, message] = describe(e);
    return el("li", { class: what, data: { plan: e.plan || "" } }, el("time", {}, clock(e.at)),
      el("span", { class: "what" }, `${e.plan ? e.plan + " " : ""}${what}`), el("span", { class: "msg" }, message));
  }));
}

async function showFailures(name) {
  view.failuresOf = name;
  let plan;
  try {
    plan = await api("GET", `/api/plans/${encodeURIComponent(name)}`);
  } catch (error) {
    note(`${name}: ${error.message}`);
    return;
  }
  $("failures-section").hidden = false;
  $("failures-plan").textContent = name;
  const items = plan.recent_failures.slice().reverse().map((f) => el("li", {},
    el("strong", {}, f.kind === "retry" ? "retried: " : "failed: "), f.message || "", " ",
    el("span", { class: "id" }, `${f.task_id} · try ${f.attempt} · ${clock(f.at)}`)));
  $("failures").replaceChildren(...items);
  $("no-failures").hidden = items.length > 0;
}

$("failures-close").addEventListener("click", () => {
  view.failuresOf = null;
  $("failures-section").hidden = true;
});
$("event-filter").addEventListener("change", (e) => {
  view.filter = e.target.value;
  renderEvents();
});

let drawn = 0;
function render() {
  // At most ten frames a second, however fast the stream talks.
  const t = performance.now();
  if (t - drawn < 100) {
    clearTimeout(render.timer);
    render.timer = setTimeout(render, 100);
    return;
  }
  drawn = t;
  renderPlans();
  renderVendors();
  renderEvents();
}

setInterval(render, 1000); // countdowns move even when nothing else does
takeTokenFromAddress();
follow();
