// The fastjobs dashboard: one page, views chosen by the URL's hash, data from api/ (relative
// URLs, so the dashboard works wherever it is mounted). DOM built with textContent only.
"use strict";

const state = { overview: null, timer: null, view: "" };
const TERMINAL = new Set(["completed", "failed", "cancelled", "unknown"]);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "className") el.className = v;
    else if (k === "style") Object.assign(el.style, v); // through the CSSOM: the CSP refuses style attributes
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fill(el, ...children) {
  el.replaceChildren(...children.flat(3).filter((c) => c !== null && c !== undefined && c !== false));
}

function enc(s) { return encodeURIComponent(s); }
function fmtTime(s) { return s ? new Date(s).toLocaleString() : "—"; }
function json(v) { return JSON.stringify(v, null, 2); }

async function api(path) {
  const r = await fetch("api/" + path, { credentials: "same-origin" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function act(path, confirmText) {
  if (confirmText && !window.confirm(confirmText)) return;
  const r = await fetch("api/" + path, { method: "POST", credentials: "same-origin", headers: { "x-fastjobs-dashboard": "1" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) notice(body.error || r.statusText); else notice("");
  await render();
}

function notice(text) {
  const n = document.getElementById("notice");
  n.textContent = text;
  n.hidden = !text;
}

function canAct() { return state.overview && state.overview.actions && state.overview.authenticated; }

function button(label, path, opts) {
  if (!canAct()) return null;
  const o = opts || {};
  return h("button", { className: o.danger ? "danger" : "", "data-action": o.name || label.toLowerCase(), onclick: () => act(path, o.confirm) }, label);
}

function renderAuth() {
  const box = document.getElementById("auth");
  box.replaceChildren();
  const o = state.overview;
  if (o.read_only) { box.append(h("span", { className: "badge", id: "read-only" }, "read-only")); return; }
  if (!o.actions) { box.append(h("span", { className: "badge" }, "actions off (no token)")); return; }
  if (o.authenticated) {
    box.append(h("button", { id: "logout", onclick: async () => { await fetch("logout", { method: "POST" }); await start(); } }, "Log out"));
    return;
  }
  const input = h("input", { type: "password", id: "token", placeholder: "token", autocomplete: "current-password" });
  const form = h("form", { id: "login", onsubmit: async (e) => {
    e.preventDefault();
    const r = await fetch("login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: input.value }) });
    if (!r.ok) notice("wrong token"); else { notice(""); await start(); }
  } }, input, h("button", { type: "submit" }, "Log in"));
  box.append(form);
}

// ---- views ----

async function viewQueues(main) {
  const { queues } = await api("queues");
  const cols = ["waiting", "delayed", "active", "failed", "completed", "retried", "stalled", "cancelled"];
  const rows = queues.map((q) => {
    const lim = q.limits;
    const limits = [lim.rate ? `${lim.rate} per ${lim.per}s` : null, lim.concurrency ? `${lim.concurrency} at once` : null].filter(Boolean).join(", ");
    return h("tr", { className: "queue-row", "data-queue": q.name },
      h("td", {}, h("a", { href: `#/queue/${enc(q.name)}` }, q.name)),
      cols.map((c) => h("td", { className: "num", "data-count": c }, q.counts[c].toLocaleString())),
      h("td", {}, q.paused ? h("span", { className: "badge paused" }, "paused") : h("span", { className: "muted" }, "running")),
      h("td", {}, limits || h("span", { className: "muted" }, "none")),
      h("td", {}, q.paused ? button("Resume", `queues/${enc(q.name)}/resume`) : button("Pause", `queues/${enc(q.name)}/pause`)));
  });
  fill(main, h("h1", {}, "Queues"),
    queues.length === 0 ? h("p", { className: "muted" }, "No queues yet: nothing was dispatched or consumed.") :
      h("table", { id: "queues" },
        h("thead", {}, h("tr", {}, h("th", {}, "queue"), cols.map((c) => h("th", { className: "num" }, c)), h("th", {}, "state"), h("th", {}, "limits"), h("th", {}, ""))),
        h("tbody", {}, rows)));
}

async function viewQueue(main, name) {
  const [q, failed] = await Promise.all([api(`queues/${enc(name)}`), api(`queues/${enc(name)}/failed`)]);
  const jobs = failed.jobs.map((j) => h("div", { className: "card failed-job", "data-job": j.id },
    h("h3", {}, h("a", { href: `#/job/${enc(name)}/${enc(j.id)}` }, j.id), " ", h("span", { className: "muted" }, j.name || ""),
      " ", h("span", { className: "muted" }, `failed ${fmtTime(j.failed_at)}, attempts ${j.attempts ?? "?"}`)),
    h("div", { className: "error" }, `${j.error.type || "error"}: ${j.error.message || ""}`),
    j.error.traceback ? h("pre", { className: "traceback" }, j.error.traceback) : null,
    h("div", { className: "toolbar" },
      button("Retry", `queues/${enc(name)}/jobs/${enc(j.id)}/retry`),
      button("Delete", `queues/${enc(name)}/jobs/${enc(j.id)}/delete`, { danger: true, confirm: `Delete job ${j.id}?` }))));
  fill(main, 
    h("h1", {}, "Queue ", q.name, " ", q.paused ? h("span", { className: "badge paused" }, "paused") : null),
    h("p", {}, Object.entries(q.counts).map(([k, v]) => h("span", { className: "badge", style: { marginRight: "6px" } }, `${k} ${v}`))),
    h("div", { className: "toolbar" },
      q.paused ? button("Resume", `queues/${enc(name)}/resume`) : button("Pause", `queues/${enc(name)}/pause`),
      failed.jobs.length ? button("Retry all", `queues/${enc(name)}/failed/retry`, { name: "retry-all" }) : null,
      failed.jobs.length ? button("Purge failed", `queues/${enc(name)}/failed/purge`, { name: "purge", danger: true, confirm: `Delete every failed job of ${name}?` }) : null),
    h("h2", {}, `Failed jobs (${failed.jobs.length})`),
    failed.jobs.length ? h("div", { id: "failed" }, jobs) : h("p", { className: "muted" }, "No failed jobs."));
}

function chart(title, points, series) {
  const W = 800, H = 180, P = 30;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const t0 = points.length ? points[0].t : 0, t1 = points.length ? points[points.length - 1].t : 1;
  let max = 0;
  for (const s of series) for (const p of points) { const v = s.get(p); if (v !== null && v !== undefined) max = Math.max(max, v); }
  max = max || 1;
  const x = (t) => P + (t1 > t0 ? (t - t0) / (t1 - t0) : 0) * (W - 2 * P);
  const y = (v) => H - P + 10 - (v / max) * (H - P - 10);
  const axis = document.createElementNS(svgNS, "path");
  axis.setAttribute("d", `M${P} 10 V${H - P + 10} H${W - P}`);
  axis.setAttribute("stroke", "#aab"); axis.setAttribute("fill", "none");
  svg.append(axis);
  const label = document.createElementNS(svgNS, "text");
  label.setAttribute("x", 2); label.setAttribute("y", 14); label.setAttribute("font-size", "11"); label.setAttribute("fill", "#667");
  label.textContent = max.toFixed(max < 10 ? 2 : 0);
  svg.append(label);
  for (const s of series) {
    const d = points.filter((p) => s.get(p) !== null && s.get(p) !== undefined).map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)} ${y(s.get(p)).toFixed(1)}`).join(" ");
    const path = document.createElementNS(svgNS, "path");
    path.setAttribute("d", d || "M0 0"); path.setAttribute("stroke", s.color); path.setAttribute("stroke-width", "2"); path.setAttribute("fill", "none");
    svg.append(path);
  }
  return h("div", { className: "chart" }, h("strong", {}, title), " ",
    h("span", { className: "legend" }, series.map((s) => h("span", { style: { color: s.color } }, "■ " + s.label))), svg);
}

async function viewThroughput(main) {
  const { every, points } = await api("series");
  const names = [...new Set(points.flatMap((p) => Object.keys(p.queues)))].sort();
  const colors = ["#3358d4", "#2a8a4a", "#c67a00", "#8a3fc6", "#c62f2f", "#1b8a8a"];
  const per = (key) => names.map((n, i) => ({ label: n, color: colors[i % colors.length], get: (p) => (p.queues[n] ? p.queues[n][key] : null) }));
  fill(main, h("h1", {}, "Throughput and latency"),
    h("p", { className: "muted" }, `Sampled every ${every}s by this dashboard, kept in its memory (${points.length} points).`),
    names.length === 0 ? h("p", { className: "muted", id: "no-series" }, "No samples yet.") : h("div", { id: "charts" },
      chart("Completed jobs per second", points, per("completed_per_s")),
      chart("Failed jobs per second", points, per("failed_per_s")),
      chart("Waiting jobs", points, per("waiting")),
      chart("Estimated wait, seconds (waiting ÷ completions per second)", points, per("wait_estimate_s"))));
}

async function viewSchedules(main) {
  const { schedules } = await api("schedules");
  fill(main, h("h1", {}, "Schedules"), schedules.length === 0 ? h("p", { className: "muted" }, "No schedules.") :
    h("table", { id: "schedules" }, h("thead", {}, h("tr", {}, ["key", "job", "queue", "timing", "next run", "runs", "last run", "origin"].map((c) => h("th", {}, c)))),
      h("tbody", {}, schedules.map((s) => h("tr", { className: "schedule-row", "data-key": s.key },
        h("td", {}, s.key), h("td", {}, s.job), h("td", {}, s.queue),
        h("td", {}, s.repeat.pattern ? `cron ${s.repeat.pattern} ${s.repeat.tz || ""}` : `every ${s.repeat.every} ms`),
        h("td", {}, fmtTime(s.next_run)), h("td", { className: "num" }, s.runs), h("td", {}, fmtTime(s.last_run)), h("td", {}, s.origin))))));
}

async function viewWorkers(main) {
  const w = await api("workers");
  if (!w.available) {
    fill(main, h("h1", {}, "Workers"), h("p", { className: "muted", id: "no-workers" }, "This fastjobs has no worker registry (fastjobs.workers())."));
    return;
  }
  const keys = w.workers.length ? Object.keys(w.workers[0]) : [];
  fill(main, h("h1", {}, "Workers"), h("table", { id: "workers" },
    h("thead", {}, h("tr", {}, keys.map((k) => h("th", {}, k)))),
    h("tbody", {}, w.workers.map((row) => h("tr", { className: "worker-row" }, keys.map((k) => h("td", {}, typeof row[k] === "object" ? JSON.stringify(row[k]) : row[k])))))));
}

async function viewJob(main, queue, id) {
  const { job, logs } = await api(`queues/${enc(queue)}/jobs/${enc(id)}`);
  const p = job.progress;
  const rows = [
    ["state", h("span", { className: `badge ${job.state}`, id: "job-state" }, job.state)],
    ["queue", h("a", { href: `#/queue/${enc(queue)}` }, queue)],
    ["name", job.name || "—"],
    ["attempt", job.attempt === null ? "—" : `${job.attempt} of ${job.max_attempts}`],
    ["priority", job.priority ?? "—"],
    ["enqueued", fmtTime(job.enqueued_at)],
    ["progress", p ? h("span", {}, h("span", { className: "progress" }, h("div", { style: { width: `${Math.round(p.value * 100)}%` } })), ` ${Math.round(p.value * 100)}%`) : "—"],
  ];
  fill(main, 
    h("h1", {}, "Job ", id),
    h("div", { className: "card grid" }, rows.flatMap(([k, v]) => [h("div", { className: "muted" }, k), h("div", {}, v)])),
    h("div", { className: "toolbar" },
      TERMINAL.has(job.state) ? null : button("Cancel", `queues/${enc(queue)}/jobs/${enc(id)}/cancel`, { danger: true, confirm: `Cancel job ${id}?` }),
      job.state === "failed" ? button("Retry", `queues/${enc(queue)}/jobs/${enc(id)}/retry`) : null,
      job.state !== "active" ? button("Delete", `queues/${enc(queue)}/jobs/${enc(id)}/delete`, { danger: true, confirm: `Delete job ${id}?` }) : null),
    h("h2", {}, "Payload"), job.payload === null && TERMINAL.has(job.state) && job.state !== "failed" ?
      h("p", { className: "muted" }, "Not kept once the job finished.") : h("pre", { id: "payload" }, json(job.payload)),
    Object.keys(job.options || {}).length ? [h("h2", {}, "Options and meta"), h("pre", { id: "options" }, json(job.options))] : null,
    job.state === "completed" ? [h("h2", {}, "Result"), h("pre", { id: "result" }, json(job.result))] : null,
    job.error ? [h("h2", {}, "Error"), h("div", { className: "error" }, `${job.error.type}: ${job.error.message}`),
      job.error.traceback ? h("pre", { className: "traceback" }, job.error.traceback) : null] : null,
    h("h2", {}, `Log (${logs.length})`),
    h("div", { className: "card", id: "logs" }, logs.length ? logs.map((l) => h("div", { className: "log-line" },
      `${fmtTime(l.at)}  ${l.level.padEnd(7)}  ${l.message}${l.data && Object.keys(l.data).length ? " " + JSON.stringify(l.data) : ""}`)) : h("span", { className: "muted" }, "No log lines.")));
  return TERMINAL.has(job.state) ? 0 : 1000; // live: poll while it may still change
}

const routes = [
  [/^#?\/?$/, "queues", viewQueues, 3000],
  [/^#\/queue\/([^/]+)$/, "queues", viewQueue, 3000],
  [/^#\/throughput$/, "throughput", viewThroughput, 5000],
  [/^#\/schedules$/, "schedules", viewSchedules, 10000],
  [/^#\/workers$/, "workers", viewWorkers, 5000],
  [/^#\/job\/([^/]+)\/([^/]+)$/, "queues", viewJob, 1000],
];

async function render() {
  clearTimeout(state.timer);
  const main = document.getElementById("main");
  const hash = location.hash || "#/";
  for (const [re, nav, view, every] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === nav));
    let next = every;
    try {
      const r = await view(main, ...m.slice(1).map(decodeURIComponent));
      if (typeof r === "number") next = r;
      document.body.dataset.ready = "1";
    } catch (e) {
      fill(main, h("p", { className: "error", id: "error" }, String(e.message || e)));
    }
    if (next) state.timer = setTimeout(render, next);
    return;
  }
  fill(main, h("p", { id: "error" }, "No such page."));
}

async function start() {
  state.overview = await api("overview");
  renderAuth();
  await render();
}

window.addEventListener("hashchange", () => { notice(""); render(); });
start().catch((e) => notice(String(e)));
