// Portrait dashboard: polls /api/overview once a second, draws the series with
// uPlot, and shows a user's profile and recommendations from /api/users/<id>.
// Everything from the engine is written with textContent (ids come from events).
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (x, d = 0) => (x === null || x === undefined || Number.isNaN(x) ? "-" : Number(x).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }));
const ms = (x) => (x === null || x === undefined ? "-" : x < 10 ? fmt(x, 2) : fmt(x, 0));
const iso = (t) => (t > 0 ? new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, "") : "-");

function fill(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (typeof c === "number") td.className = "num";
      td.textContent = typeof c === "number" ? fmt(c, Number.isInteger(c) ? 0 : 3) : String(c ?? "-");
      tr.append(td);
    }
    return tr;
  }));
}

const charts = {};
function chart(id, series, data) {
  const el = $(id);
  const width = Math.max(300, el.clientWidth || 420);
  if (!charts[id]) {
    charts[id] = new uPlot({
      width, height: 180,
      scales: { x: { time: true } },
      axes: [{}, { size: 60 }],
      series: [{}, ...series.map((s) => ({ label: s[0], stroke: s[1], width: 1.5, spanGaps: true }))],
    }, data, el);
  } else {
    charts[id].setData(data);
  }
}

async function refreshOverview() {
  let o;
  try {
    const r = await fetch("/api/overview", { cache: "no-store" });
    o = await r.json();
  } catch {
    $("status").textContent = "engine unreachable";
    $("status").className = "badge bad";
    return;
  }
  $("status").textContent = o.ready ? "ready" : "not ready";
  $("status").className = o.ready ? "badge ok" : "badge bad";
  $("version").textContent = `v${o.version}`;
  $("watermark").textContent = iso(o.eventTimeWatermarkMs);
  const last = o.series[o.series.length - 1];
  $("stat-events").textContent = fmt(o.eventsApplied);
  $("stat-rate").textContent = last ? fmt(last.ingestPerS) : "-";
  $("stat-lag").textContent = fmt(o.lagByPartition.reduce((a, p) => a + p.lag, 0));
  $("stat-freshness").textContent = `${ms(o.latency.freshness.p50Ms)} / ${ms(o.latency.freshness.p99Ms)} ms`;
  $("stat-profile").textContent = `${ms(o.latency.profile.p50Ms)} / ${ms(o.latency.profile.p99Ms)} ms`;
  $("stat-recommend").textContent = `${ms(o.latency.recommend.p50Ms)} / ${ms(o.latency.recommend.p99Ms)} ms`;
  $("stat-dlq").textContent = fmt(o.deadLetters.reduce((a, d) => a + d.count, 0));
  fill($("lag-table").tBodies[0], o.lagByPartition.map((p) => [p.partition, p.lag]));
  fill($("dlq-table").tBodies[0], o.deadLetters.length ? o.deadLetters.map((d) => [d.reason, d.count]) : [["none", 0]]);
  fill($("models-table").tBodies[0], o.models.map((m) => [m.name, m.version,
    m.metrics.slice(0, 1).map((x) => `${x.task}: ${Object.entries(x.values).slice(0, 2).map(([k, v]) => `${k} ${fmt(v, 3)}`).join(", ")}`).join("") || "-"]));
  $("backend").textContent = o.backend ?? "none (no DeepFM model)";
  fill($("ctr-table").tBodies[0], o.ctr.length ? o.ctr.map((c) => [c.modelVersion || "(none)", c.impressions, c.clicks, c.ctr === null ? "-" : fmt(c.ctr, 3)]) : [["no impressions yet", "-", "-", "-"]]);
  $("audiences").textContent = o.audiences === null ? "Not part of this version of the engine." : "";
  const t = o.series.map((s) => s.t / 1000);
  chart("chart-ingest", [["events/s", "#2f6fde"]], [t, o.series.map((s) => s.ingestPerS)]);
  chart("chart-latency", [["freshness p99", "#d9822b"], ["profile p99", "#2d8a4e"], ["recommend p99", "#8a3ab9"]],
    [t, o.series.map((s) => s.freshnessP99Ms), o.series.map((s) => s.profileP99Ms), o.series.map((s) => s.recommendP99Ms)]);
  chart("chart-lag", [["lag", "#c23b3b"]], [t, o.series.map((s) => s.lag)]);
}

async function showUser(userId) {
  $("overview").hidden = true;
  $("user").hidden = false;
  $("user-title").textContent = userId;
  $("user-input").value = userId;
  const err = $("user-error");
  let body;
  try {
    const r = await fetch(`/api/users/${encodeURIComponent(userId)}`, { cache: "no-store" });
    body = await r.json();
    if (!r.ok) throw new Error(`${body.code}: ${body.message}`);
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
    $("user-body").hidden = true;
    return;
  }
  err.hidden = true;
  $("user-body").hidden = false;
  const p = body.profile.profile;
  const f = p.funnel;
  const rate = (x, d) => (d > 0 ? fmt(x, 3) : "-");
  fill($("user-profile").tBodies[0], [
    ["events applied", p.eventsApplied],
    ["first / last seen", `${iso(p.firstSeenMs)} / ${iso(p.lastSeenMs)}`],
    ["as of", iso(p.asOfMs)],
    ["money (net)", `${fmt(p.money.net, 2)} ${p.money.currency}`],
    ["RFM", p.rfm.recencyDays < 0 ? "never bought" : `recency ${fmt(p.rfm.recencyDays, 1)} d, ${p.rfm.frequency} orders, R${p.rfm.rScore} F${p.rfm.fScore} M${p.rfm.mScore}`],
    ["funnel", `views ${f.views} → carts ${f.carts} → purchases ${f.purchases} (view→cart ${rate(f.viewToCart, f.views)}, cart→purchase ${rate(f.cartToPurchase, f.carts)})`],
    ["sessions", `${p.sessions.count}, avg ${fmt(p.sessions.avgEvents, 1)} events`],
  ]);
  const pr = p.predictions;
  // Each prediction with its evidence (model, holdout metric on this shop vs its baseline, calibration), or null with the reason.
  const pred = (label, x, shown) => {
    const who = x.model ? `${x.model} ${x.version}` : "no model";
    // The reason names the model itself.
    if (x.probability === null || x.probability === undefined) return [label, "null", x.reason];
    const e = x.evidence;
    return [`${label} (${x.definition})`, shown ?? fmt(x.probability, 3),
      e ? `${who}; holdout ${e.metric} ${fmt(e.holdout, 3)} vs ${e.baselineName} ${fmt(e.baseline, 3)} on ${e.source} (${e.testExamples} examples); ${e.calibration}` : who];
  };
  const preds = pr ? [
    pred("purchase", pr.purchasePropensity),
    pred("churn", pr.churnRisk),
    pred("next category", pr.nextCategory, (pr.nextCategories || []).slice(0, 3).map((c) => `${c.label || c.key} (${fmt(c.score, 2)})`).join(", ")),
  ] : [];
  fill($("user-predictions").tBodies[0], preds.length ? preds : [["none", "-", "no model runs in this engine"]]);
  fill($("user-categories").tBodies[0], p.categories.slice(0, 8).map((c) => [c.label ? `${c.label} (${c.key})` : c.key, c.score]));
  fill($("user-brands").tBodies[0], [...p.brands.slice(0, 5), ...p.priceBands.slice(0, 3)].map((c) => [c.key, c.score]));
  const recs = body.recommendations;
  if (recs.error) {
    fill($("user-recs").tBodies[0], [["-", recs.error.code, "-", recs.error.message, "-"]]);
    $("user-recs-meta").textContent = "";
  } else {
    fill($("user-recs").tBodies[0], recs.items.map((it, i) => [i + 1, it.itemId, it.score, it.reason, (it.sources || []).join(", ")]));
    // As describeOrder in src/recs/recommender.ts.
    const order = recs.modelVersion.startsWith("ranking ") ? recs.modelVersion : `DeepFM ${recs.modelVersion} on ${recs.backend}`;
    $("user-recs-meta").textContent = `order: ${order}; ${recs.candidates} candidates`;
  }
  fill($("user-timeline").tBodies[0], (p.recentEvents || []).map((e) => [iso(e.timestampMs), e.type, e.itemId]));
  $("user-audiences").textContent = "Not part of this version of the engine.";
}

function route() {
  const m = /^#\/user\/(.+)$/.exec(location.hash);
  if (m) {
    void showUser(decodeURIComponent(m[1]));
  } else {
    $("user").hidden = true;
    $("overview").hidden = false;
  }
}

$("user-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = $("user-input").value.trim();
  if (id) location.hash = `#/user/${encodeURIComponent(id)}`;
});
window.addEventListener("hashchange", route);
route();
void refreshOverview();
setInterval(() => void refreshOverview(), 1000);
