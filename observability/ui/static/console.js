// polyd web console: reads the board from the sidecar (server-sent events over fetch, so the
// token travels as a bearer header, never in a URL or a cookie) and sends the controls.
// Everything shown is set with textContent: a market's name is data, never markup.
"use strict";

const TOKEN_KEY = "polyd.console.token";
const RETRY_MS = 3000;
const $ = (id) => document.getElementById(id);
let stream = null;  // the AbortController of the open stream
let lastTrade = null;  // the newest trade id seen, to mark fresh rows
let charts = {};

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

function message(text) {
  const el = $("message");
  el.textContent = text || "";
  el.hidden = !text;
}

function setLive(on, text) {
  const el = $("live");
  el.textContent = text || (on ? "live" : "offline");
  el.className = "badge " + (on ? "on" : "off");
}

// -- numbers ----------------------------------------------------------------------------------
function num(v) { return v === null || v === undefined || v === "" ? null : Number(v); }
function money(v) {
  const n = num(v);
  return n === null ? "—" : n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}
function price(v) { const n = num(v); return n === null ? "—" : n.toFixed(3); }
function size(v) { const n = num(v); return n === null ? "—" : String(+n.toFixed(4)); }
function signClass(v) { const n = num(v); return n === null || n === 0 ? "" : n > 0 ? "good" : "bad"; }
function time(iso) {
  const d = new Date(iso);
  return isNaN(d) ? (iso || "") : d.toISOString().replace("T", " ").slice(0, 19);
}

// -- tables -----------------------------------------------------------------------------------
function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}
function fillTable(id, rows, make, empty) {
  const body = $(id).tBodies[0];
  const out = [];
  for (const r of rows) out.push(make(r));
  if (!out.length) {
    const tr = document.createElement("tr");
    const td = cell(empty, "empty");
    td.colSpan = $(id).tHead.rows[0].cells.length;
    tr.appendChild(td);
    out.push(tr);
  }
  body.replaceChildren(...out);
}
function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c);
  return tr;
}
function marketName(r) { return r.market || "token …" + String(r.token_id).slice(-8); }

// -- the board --------------------------------------------------------------------------------
function render(b) {
  if (b.error) message("The console cannot read the database: " + b.error); else message("");
  const s = b.status || {};
  // A shared venue account's halt (ACCOUNT_SHARED) stops every daemon on it: shown over the
  // daemon's own state, with who halted it, when and why.
  const halt = (s.shared_accounts || []).find((a) => a.halted_by);
  const state = halt ? "HALTED" : (s.trading_state || "—");
  $("state").textContent = state;
  $("state").className = "badge " + state;
  $("reason").textContent = halt ? `account …${String(halt.account).slice(-6)} halted by daemon ` +
    `${halt.halted_by} at ${time(halt.halted_at)} UTC: ${halt.halt_reason}` : (s.state_reason || "");
  renderMoney(s);
  renderHealth(b.health || {});
  const checks = (b.health || {}).checks || {};
  fillTable("strategies", s.strategies || [], (r) => {
    const c = checks["strategy:" + r.name];
    const st = c ? (c.ok ? "running" : "failed") : (r.name === "unattributed" ? "—" : "stopped");
    return row([cell(r.name), cell(st, c && !c.ok ? "bad" : ""), cell(String(r.positions), "num"),
      cell(money(r.cost_basis), "num"), cell(money(r.realized_pnl), "num " + signClass(r.realized_pnl)),
      cell(money(r.unrealized_pnl), "num " + signClass(r.unrealized_pnl)),
      cell(money(r.exposure), "num"), cell(money(r.fees_paid), "num")]);
  }, "no strategy yet");
  const open = (b.positions || []).filter((p) => num(p.size) !== 0);
  fillTable("positions", open, (p) => row([cell(p.strategy), cell(marketName(p), "market"),
    cell(p.outcome || "—"), cell(size(p.size), "num"), cell(price(p.avg_cost), "num"),
    cell(money(p.cost_basis), "num"), cell(price(p.mark), "num"),
    cell(money(p.pnl), "num " + signClass(p.pnl))]), "no open position");
  fillTable("orders", b.orders || [], (o) => row([cell(time(o.created_at)), cell(o.strategy),
    cell(marketName(o), "market"), cell(o.outcome || "—"), cell(o.side), cell(price(o.price), "num"),
    cell(size(o.size), "num"), cell(size(o.size_matched), "num"), cell(o.status)]), "no open order");
  const trades = b.trades || [];
  const seen = lastTrade;
  let fresh = seen !== null;
  fillTable("trades", trades, (t) => {
    if (t.trade_id === seen) fresh = false;
    const tr = row([cell(time(t.at)), cell(t.strategy), cell(marketName(t), "market"),
      cell(t.outcome || "—"), cell(t.side), cell(price(t.price), "num"), cell(size(t.size), "num"),
      cell(money(t.fee), "num"), cell(t.pnl === null ? "failed" : money(t.pnl), "num " + signClass(t.pnl))]);
    tr.dataset.tradeId = t.trade_id;
    if (fresh) tr.className = "fresh";
    return tr;
  }, "no fill yet");
  lastTrade = trades.length ? trades[0].trade_id : lastTrade;
  renderCharts(b.pnl_today || [], b.pnl_days || []);
  const age = s.snapshot_age_s === null || s.snapshot_age_s === undefined ? "" :
    ` · daemon snapshot ${Math.round(s.snapshot_age_s)} s old`;
  $("updated").textContent = "updated " + time(b.at) + " UTC" + age;
}

function renderMoney(s) {
  // On a shared venue account the day's PnL is the account's: the sum over its daemons the
  // daily loss limit reads, with each daemon's part.
  const account = (s.shared_accounts || [])[0];
  const pnl = account ? account.daily_pnl : s.pnl_today;
  const today = num(pnl);
  const limit = num(s.daily_loss_limit);
  $("pnl-today").textContent = money(pnl);
  $("pnl-today").className = "big " + signClass(pnl);
  $("pnl-parts").textContent = account ? "account, every daemon: " +
    (Object.entries(account.pnl_by_daemon || {}).map(([d, v]) => `${d} ${money(v)}`)
      .join(" · ") || "no daemon wrote one yet") : "";
  const used = today !== null && limit ? Math.max(0, -today) / limit : 0;
  const bar = $("limit-bar");
  bar.style.width = Math.min(100, used * 100).toFixed(1) + "%";
  bar.className = "bar" + (used >= 1 ? " bad" : used >= 0.8 ? " warn" : "");
  $("limit-text").textContent = limit === null ? "daily loss limit —" :
    `daily loss limit ${money(limit)} · ${(used * 100).toFixed(0)}% used`;
  $("pnl-split").textContent = money(s.realized_pnl) + " / " + money(s.unrealized_pnl);
  $("fees").textContent = `fees paid ${money(s.fees_paid)} · ${s.fills ?? 0} fills · ` +
    `redeemable ${money(s.redeemable)}`;
  $("exposure").textContent = money(s.exposure);
  $("balance").textContent = `balance ${money(s.balance)} pUSD · ${s.open_orders ?? 0} open orders`;
}

function renderHealth(h) {
  $("health").textContent = h.status || "—";
  $("health").className = "big " + (h.status === "ok" ? "good" : "bad");
  const items = [];
  for (const [name, c] of Object.entries(h.checks || {})) {
    const li = document.createElement("li");
    li.textContent = name;
    if (!c.ok) li.className = "fail";
    items.push(li);
  }
  $("checks").replaceChildren(...items);
}

// -- charts (uPlot, vendored) -----------------------------------------------------------------
function chartOpts(el, bars) {
  const axis = { stroke: "#8b949e", grid: { stroke: "#2d3440" }, ticks: { stroke: "#2d3440" } };
  const series = { label: "realized PnL", stroke: "#58a6ff", width: 2, fill: "rgba(88,166,255,0.15)" };
  if (bars) series.paths = uPlot.paths.bars({ size: [0.6, 60] });
  return {
    width: Math.max(300, el.clientWidth - 4), height: 200, legend: { show: false },
    scales: { x: { time: true } }, axes: [axis, Object.assign({}, axis, { size: 60 })],
    series: [{}, series],
  };
}
function draw(id, data, bars) {
  const el = $(id);
  if (typeof uPlot === "undefined") return;
  if (!charts[id]) {
    el.replaceChildren();
    charts[id] = new uPlot(chartOpts(el, bars), data, el);
  } else {
    charts[id].setData(data);
  }
}
function renderCharts(today, days) {
  const xs = [], ys = [];
  const midnight = new Date(); midnight.setUTCHours(0, 0, 0, 0);
  xs.push(midnight.getTime() / 1000); ys.push(0);
  for (const p of today) {
    const t = Date.parse(p.at) / 1000;
    if (!isNaN(t)) { xs.push(Math.max(t, xs[xs.length - 1])); ys.push(Number(p.pnl)); }
  }
  xs.push(Math.max(Date.now() / 1000, xs[xs.length - 1])); ys.push(ys[ys.length - 1]);
  draw("chart-today", [xs, ys], false);
  draw("chart-days", [days.map((d) => Date.parse(d.day + "T12:00:00Z") / 1000),
    days.map((d) => Number(d.pnl))], true);
}

// -- the stream -------------------------------------------------------------------------------
let access = null;  // {public_read, token}: asked once, before any data

async function connect() {
  if (stream) stream.abort();
  const ctrl = stream = new AbortController();
  $("forget").hidden = !token();
  $("token-form").hidden = !!token();
  try {
    if (access === null) access = await (await fetch("/ui/api/access", { cache: "no-store" })).json();
    if (!access.token && !access.public_read) {
      setLive(false, "locked");
      message("The console needs CONTROL_TOKEN set on the daemon.");
      return;
    }
    if (!token() && !access.public_read) {
      setLive(false, "locked");
      message("Enter the control token to connect.");
      return;
    }
    const resp = await fetch("/ui/api/events", { headers: headers(), cache: "no-store", signal: ctrl.signal });
    if (resp.status === 401 || resp.status === 403) {
      const body = await resp.json().catch(() => ({}));
      setLive(false, "locked");
      message((body.error || "refused") + (resp.status === 401 ? ": enter the control token" : ""));
      return;
    }
    if (!resp.ok || !resp.body) throw new Error("the sidecar answered " + resp.status);
    setLive(true);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (data) render(JSON.parse(data));
      }
    }
    throw new Error("the stream ended");
  } catch (e) {
    if (ctrl.signal.aborted) return;
    setLive(false, "reconnecting");
    setTimeout(() => { if (stream === ctrl) connect(); }, RETRY_MS);
  }
}

// -- controls ---------------------------------------------------------------------------------
const LABELS = { halt: "Halt trading (no new orders)?", reduce: "Switch to reduce-only?",
  resume: "Resume trading?", "cancel-all": "Cancel every resting order?" };

function confirmThen(action) {
  const dlg = $("confirm");
  $("confirm-text").textContent = LABELS[action] || action;
  dlg.returnValue = "";
  dlg.onclose = () => { if (dlg.returnValue === "yes") control(action); };
  dlg.showModal();
}

async function control(action) {
  const out = $("control-result");
  out.textContent = action + "…";
  try {
    const reason = $("reason-input").value.trim();
    const resp = await fetch("/ui/api/control/" + action, {
      method: "POST", cache: "no-store",
      headers: Object.assign({ "Content-Type": "application/json" }, headers()),
      body: JSON.stringify(reason ? { reason } : {}),
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) { out.textContent = action + " refused: " + (body.error || resp.status); return; }
    out.textContent = action + ": " + (body.trading_state ? "trading state " + body.trading_state :
      body.canceled !== undefined ? body.canceled + " canceled" : "done");
  } catch (e) {
    out.textContent = action + " failed: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    $("token").value = "";
    connect();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    if (stream) stream.abort();
    setLive(false, "locked");
    $("forget").hidden = true;
    $("token-form").hidden = false;
  });
  for (const b of document.querySelectorAll("button.control")) {
    b.addEventListener("click", () => confirmThen(b.dataset.action));
  }
  window.addEventListener("resize", () => {
    for (const [id, c] of Object.entries(charts)) c.setSize({ width: Math.max(300, $(id).clientWidth - 4), height: 200 });
  });
  connect();
});
