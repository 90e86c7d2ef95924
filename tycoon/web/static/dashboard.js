// The Tycoon dashboard: every envelope is verified here (verify.js) before it is shown.
(function () {
  "use strict";
  const V = TycoonVerify;
  const FEEDS = ["tycoon.price.*", "tycoon.alloc.*", "tycoon.bank.settled", "tycoon.sls.snapshot", "tycoon.agent.>"];
  const HISTORY = 60, TAIL = 40;
  const $ = (id) => document.getElementById(id);
  const state = { verified: 0, refused: 0, history: 0, historyFrom: new Set(), hosts: new Map(), agents: new Map(), flow: 0n,
    transfers: [], tail: [], refusals: [], names: {}, budgets: {}, snapshot: null };
  window.tycoonDashboard = state;

  const credits = (micro) => (Number(micro) / 1e6).toLocaleString(undefined, { maximumFractionDigits: 4 });
  const rate = (micro) => (micro / 1e6).toPrecision(4);  // a float price, credits/s
  const esc = (t) => String(t).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const nameOf = (key) => state.names[key] || (key.length === 56 ? V.subjectId(key).slice(0, 8) : key);
  const num = (v) => (typeof v === "number" && Number.isFinite(v)) ? v : (typeof v === "bigint" ? Number(v) : null);

  function spark(values, fixed) {  // fixed: [lo, hi]; else the values' own range
    if (values.length < 2) return "";
    const w = 120, h = 24;
    let [lo, hi] = fixed ?? [Math.min(...values), Math.max(...values)];
    if (hi - lo < 1e-9 * Math.max(1, Math.abs(hi))) { lo -= 1; hi += 1; }  // flat: a middle line
    const pts = values.map((v, i) => `${(i * w / (values.length - 1)).toFixed(1)},${(h - 1 - ((v - lo) / (hi - lo)) * (h - 2)).toFixed(1)}`);
    return `<svg width="${w}" height="${h}" class="spark"><polyline points="${pts.join(" ")}"/></svg>`;
  }
  function host(id) {
    let h = state.hosts.get(id);
    if (!h) state.hosts.set(id, h = { id, name: "", points: [], resources: {}, accounts: {} });
    return h;
  }
  function agent(key) {
    let a = state.agents.get(key);
    if (!a) state.agents.set(key, a = { key, paid: 0n, refunded: 0n, last: "" });
    return a;
  }

  function point(msg, past) {  // a verified price's cpu point, or null
    const cpu = msg.body.resources && msg.body.resources.cpu;
    if (!cpu || num(cpu.price) === null) return null;
    return { ts: msg.ts_ns, price: num(cpu.price), util: num(cpu.utilization) ?? 0, past };
  }
  function take(msg) {  // a verified message into the state
    const b = msg.body, parts = msg.subject.split(".");
    if (msg.kind === "price") {
      const h = host(parts[2]), p = point(msg, false);
      h.name = typeof b.name === "string" ? b.name : h.name;
      h.resources = b.resources && typeof b.resources === "object" ? b.resources : {};
      h.live = true;
      if (p) { h.points.push(p); if (h.points.length > HISTORY) h.points.shift(); }
      if (!asked.has(parts[2])) loadHistory(parts[2]);  // a host the config did not list
    } else if (msg.kind === "alloc") {
      if (b.accounts && typeof b.accounts === "object") host(parts[2]).accounts = b.accounts;
    } else if (msg.kind === "bank.settled") {
      const [receipts, bad] = receiver.receipts(msg);
      state.refused += bad;
      for (const r of receipts) {
        const amount = BigInt(r.body.amount);
        state.flow += amount;
        state.transfers.unshift({ payer: r.body.payer, payee: r.body.payee, amount, memo: String(r.body.memo ?? "") });
        if (state.agents.has(r.body.payer) || r.body.payer in state.budgets) agent(r.body.payer).paid += amount;
        if (state.agents.has(r.body.payee) || r.body.payee in state.budgets) agent(r.body.payee).refunded += amount;
      }
      state.transfers.length = Math.min(state.transfers.length, 12);
    } else if (msg.kind === "sls.snapshot") {
      state.snapshot = b;
    } else if (msg.kind.startsWith("agent.")) {
      const a = agent(msg.sender);
      if (msg.kind === "agent.plan" && b.hosts && typeof b.hosts === "object") {
        a.held = Object.values(b.hosts).reduce((sum, h) => sum + (num(h && h.balance) ?? 0), 0);
        a.rate = num(b.spend_rate);
      }
      a.last = `${msg.kind.slice(6)} ${typeof b.summary === "string" ? b.summary : (typeof b.message === "string" ? b.message : "")}`;
    }
  }

  function render() {
    $("verified").textContent = state.verified; $("refused").textContent = state.refused;
    $("history").textContent = state.history;
    $("history-from").textContent = state.historyFrom.size ? `(from ${[...state.historyFrom].join(", ")})` : "";
    const rows = [...state.hosts.values()].sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
    $("hosts").innerHTML = rows.map((h) => {
      const cpu = h.resources.cpu || {}, price = num(cpu.price), util = num(cpu.utilization);
      const shares = Object.entries(h.accounts).map(([acct, v]) => [acct, num(v && v.cpu) ?? 0]).filter(([, s]) => s > 0);
      const bar = shares.map(([acct, s], i) => `<span class="share c${i % 6}" style="width:${(s * 100).toFixed(1)}%" title="${esc(nameOf(acct))} ${(s * 100).toFixed(1)}%"></span>`).join("");
      const legend = shares.map(([acct, s]) => `${esc(nameOf(acct))} ${(s * 100).toFixed(0)}%`).join(", ");
      return `<tr id="host-${esc(h.id)}"><td>${esc(h.name || "?")}</td><td class="mono">${esc(h.id.slice(0, 10))}</td>
        <td class="num price">${price === null ? "" : rate(price)}</td><td>${spark(h.points.map((p) => p.price))}</td>
        <td class="num">${util === null ? "" : (util * 100).toFixed(0) + "%"}</td><td>${spark(h.points.map((p) => p.util), [0, 1])}</td>
        <td><div class="bar">${bar}</div><div class="legend">${legend}</div></td></tr>`;
    }).join("");
    $("flow").textContent = credits(state.flow);
    $("transfers").innerHTML = state.transfers.map((t) => `<li>${esc(nameOf(t.payer))} → ${esc(nameOf(t.payee))}: <b>${credits(t.amount)}</b> <span class="dim">${esc(t.memo.slice(0, 40))}</span></li>`).join("");
    const keys = new Set([...Object.keys(state.budgets), ...state.agents.keys()]);
    $("agents").innerHTML = [...keys].map((k) => {
      const a = state.agents.get(k) || { paid: 0n, refunded: 0n, last: "" }, budget = state.budgets[k];
      const spent = a.paid - a.refunded, held = a.held ?? null;
      const pct = budget && held !== null ? Math.max(0, Math.min(100, held * 100 / budget)) : 0;
      return `<tr><td>${esc(nameOf(k))}</td><td class="num">${held === null ? "" : credits(held)}</td>
        <td class="num">${a.rate == null ? "" : rate(a.rate)}</td><td class="num">${credits(spent)}</td><td class="num">${budget ? credits(budget) : "?"}</td>
        <td><div class="bar"><span class="share c0" style="width:${pct.toFixed(1)}%"></span></div></td><td class="dim">${esc(a.last.slice(0, 60))}</td></tr>`;
    }).join("");
    $("tail").innerHTML = state.tail.map((e) => `<li><span class="dim">${e.time}</span> <b>${esc(e.kind)}</b> ${esc(e.subject)} <span class="dim">signed ${esc(e.signer)}</span></li>`).join("");
    $("refusals").innerHTML = state.refusals.map((e) => `<li class="refused"><span class="dim">${e.time}</span> <b>${esc(e.code)}</b> on ${esc(e.subject)}: ${esc(e.why)}</li>`).join("");
    const s = state.snapshot;
    $("sls").textContent = s ? `${num(s.hosts) ?? "?"} live hosts` : "";
  }

  let receiver = null, dirty = false;
  const asked = new Set();
  function refuse(time, code, subject, why) {
    state.refused += 1;
    state.refusals.unshift({ time, code, subject, why: why.slice(0, 120) });
    state.refusals.length = Math.min(state.refusals.length, 20);
  }
  // A host's stored price envelopes, from `tycoon web`'s /history (which fetched them from
  // the SLS or PRICES): each verified here like a live message, under the stored rule
  // (verify.js acceptStored); drawn before the host's live points, never after them.
  async function loadHistory(id) {
    asked.add(id);
    let reply;
    try {
      reply = await (await fetch("history?host=" + encodeURIComponent(id), { cache: "no-store" })).json();
    } catch (e) { return; }
    if (typeof reply.source === "string" && reply.source !== "none") state.historyFrom.add(reply.source.slice(0, 16));
    const time = new Date().toLocaleTimeString(), subject = "history of tycoon.price." + id;
    const now = BigInt(Date.now()) * 1000000n, past = [];
    let newest = null;
    for (const b64 of Array.isArray(reply.envelopes) ? reply.envelopes : []) {
      try {
        if (typeof b64 !== "string") throw new V.Refused("malformed", "not base64");
        let bin;
        try { bin = atob(b64); } catch (e) { throw new V.Refused("malformed", "not base64"); }
        const msg = receiver.acceptStored(Uint8Array.from(bin, (c) => c.charCodeAt(0)), id, now);
        state.history += 1; newest = msg;
        const p = point(msg, true);
        if (p) past.push(p);
      } catch (e) {
        if (!(e instanceof V.Refused)) throw e;
        refuse(time, e.code, subject, e.message);
      }
    }
    if (newest === null) { dirty = true; return; }
    const h = host(id), first = h.points.length ? h.points[0].ts : null;
    h.points = [...past.filter((p) => first === null || p.ts < first), ...h.points].slice(-HISTORY);
    if (!h.live) {  // no live update yet: show the newest stored one
      h.name = typeof newest.body.name === "string" ? newest.body.name : h.name;
      h.resources = newest.body.resources && typeof newest.body.resources === "object" ? newest.body.resources : {};
    }
    dirty = true;
  }

  function onMsg(subject, raw) {
    const time = new Date().toLocaleTimeString();
    try {
      const msg = receiver.accept(raw, subject, BigInt(Date.now()) * 1000000n);
      state.verified += 1;
      take(msg);
      state.tail.unshift({ time, kind: msg.kind, subject, signer: V.subjectIdOfRaw(msg.senderRaw) });
      state.tail.length = Math.min(state.tail.length, TAIL);
    } catch (e) {
      if (!(e instanceof V.Refused)) throw e;
      refuse(time, e.code, subject, e.message);
    }
    dirty = true;
  }

  async function start() {
    const cfg = await (await fetch("config.json", { cache: "no-store" })).json();
    const pinned = new URLSearchParams(location.hash.slice(1)).get("bank");  // #bank=U… pins it
    const bankKey = pinned || cfg.bank_key;
    receiver = new V.Receiver(bankKey);
    state.names = cfg.names || {}; state.budgets = cfg.budgets || {};
    $("bank").textContent = bankKey ? bankKey.slice(0, 12) + "…" + (pinned ? " (pinned by URL)" : "") : "unknown: settled flow refused";
    $("ws").textContent = cfg.ws_url;
    const keyPair = V.seedKeyPair(cfg.viewer_seed);
    const client = new NatsWS(cfg.ws_url, V.publicKeyFromRaw(keyPair.publicKey), keyPair,
      { status: (t) => { $("status").textContent = t; } });
    setInterval(() => { if (dirty) { dirty = false; render(); } }, 250);
    $("status").textContent = "loading history";
    await Promise.all((cfg.hosts || []).map(loadHistory));  // the past first, then live
    for (const feed of FEEDS) client.subscribe(feed, onMsg);
    client.connect();
  }
  start().catch((e) => { $("status").textContent = "error: " + e.message; });
})();
