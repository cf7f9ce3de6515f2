/** Human-readable rendering of a profile for `portrait profile` and the demo. */
import type { AffinityView, PredictionView, ProfileView, SentimentView } from "../actors/user-profile.js";

const iso = (ms: number) => (ms > 0 ? new Date(ms).toISOString() : "-");
const num = (x: number, d = 2) => (Number.isInteger(x) ? String(x) : x.toFixed(d));
/** A key with its name when it has one: "electronics.smartphone [2053013555631882655] (3.10)". */
const aff = (a: AffinityView[], n = 5) => (a.length === 0 ? "-" : a.slice(0, n).map((x) =>
  `${x.label ? `${x.label} [${x.key}]` : x.key} (${num(x.score)})`).join(", "));
/** Sentiments: "guitars [c1] +0.62 (w 1.80)". */
const sent = (a: SentimentView[], n = 5) => a.slice(0, n).map((x) =>
  `${x.label ? `${x.label} [${x.key}]` : x.key} ${x.sentiment >= 0 ? "+" : ""}${num(x.sentiment)} (w ${num(x.weight)})`).join(", ");

/** The review lines: overall sentiment, per category and brand, aspects. */
function reviewLines(p: ProfileView): string[] {
  const r = p.reviews;
  if (r === undefined) return ["reviews         -"];
  const lines = [`reviews         ${r.count} with a sentiment (${r.fromText} from text), mean ${r.sentiment >= 0 ? "+" : ""}${num(r.sentiment)}`];
  if (r.categories.length > 0) lines.push(`  by category   ${sent(r.categories)}`);
  if (r.brands.length > 0) lines.push(`  by brand      ${sent(r.brands)}`);
  lines.push(`  aspects       ${aff(r.aspects)}`);
  return lines;
}

/** The risk lines: score, flag and reason of each signal. */
function riskLines(p: ProfileView): string[] {
  const r = p.risk;
  if (r === undefined) return [];
  const one = (label: string, x: { score: number; flagged: boolean; reason: string }) =>
    `${label.padEnd(16)}${num(x.score, 2)}${x.flagged ? " FLAGGED" : ""}  ${x.reason}`;
  return [one("risk velocity", r.velocity), one("risk refunds", r.refundAbuse), one("risk sharing", r.accountSharing)];
}

/** The social line: degrees, shares and friends' interests. */
function socialLines(p: ProfileView): string[] {
  const x = p.social;
  if (x === undefined) return [];
  return [
    `social          following ${x.following}, followers ${x.followers}, shares sent ${x.sharesSent} / received ${x.sharesReceived}`,
    `  friends       ${aff(x.friendsInterests)} (of ${x.friendsSampled} followed users sampled)`,
  ];
}

/** A funnel rate, or "-" when its divisor is 0 (no carts: purchases made straight from views, or an order feed). */
const rate = (x: number, divisor: number) => (divisor > 0 ? num(x, 3) : "-");

export function formatProfile(p: ProfileView): string {
  const counts = Object.entries(p.counts).filter(([, c]) => c > 0).map(([k, c]) => `${k}=${c}`).join(" ") || "-";
  const m = p.money;
  const r = p.rfm;
  const s = p.sessions;
  const f = p.funnel;
  return [
    `user            ${p.userId}`,
    `events          ${p.eventsApplied} (${counts})`,
    `first / last    ${iso(p.firstSeenMs)} / ${iso(p.lastSeenMs)}   (as of ${iso(p.asOfMs)})`,
    `money           purchased ${num(m.purchased)} refunded ${num(m.refunded)} net ${num(m.net)} ${m.currency}`,
    `RFM             recency ${r.recencyDays < 0 ? "never bought" : `${num(r.recencyDays, 1)} d`}, frequency ${r.frequency}, monetary ${num(r.monetary)}` +
      `  scores R${r.rScore} F${r.fScore} M${r.mScore}`,
    `funnel          views ${f.views} -> carts ${f.carts} -> purchases ${f.purchases}` +
      `  (view->cart ${rate(f.viewToCart, f.views)}, cart->purchase ${rate(f.cartToPurchase, f.carts)})`,
    `sessions        ${s.count}, avg ${num(s.avgEvents, 1)} events, avg ${num(s.avgDurationMs / 60_000, 1)} min; current since ${iso(s.currentStartMs)} (${s.currentEvents} events)`,
    `categories      ${aff(p.categories)}`,
    `brands          ${aff(p.brands)}`,
    `price bands     ${aff(p.priceBands)}`,
    `recent items    ${p.recentItems.slice(0, 10).join(", ") || "-"}`,
    `last events     ${(p.recentEvents ?? []).slice(0, 5).map((e) => `${iso(e.timestampMs)} ${e.type} ${e.itemId}`).join("; ") || "-"}`,
    ...reviewLines(p),
    ...riskLines(p),
    ...socialLines(p),
    ...predictionLines(p),
  ].join("\n");
}

/** One prediction: the probability with its model and evidence, or "null" with the reason. */
function predictionLine(label: string, x: PredictionView, extra = ""): string {
  const who = x.model !== "" ? `[${x.model} ${x.version}]` : "";
  // The reason names the model itself.
  if (x.probability === null) return `${label.padEnd(16)}null   ${x.reason}`;
  const e = x.evidence;
  const ev = e === undefined ? "" : `; holdout ${e.metric} ${num(e.holdout, 3)} vs ${e.baselineName} ${num(e.baseline, 3)} ` +
    `on ${e.source} ${iso(e.testFromMs)}..${iso(e.testToMs)} (${e.testExamples} examples), ${e.calibration}`;
  const ex = x.explanation;
  const why = ex === undefined ? "" : `\n${" ".repeat(16)}why (${ex.unit}, ${ex.method}; base ${num(ex.base, 3)}):` +
    ex.contributions.map((c) => `\n${" ".repeat(18)}${c.contribution >= 0 ? "+" : ""}${num(c.contribution, 3)}  ${c.input} = ${num(c.value, 3)}`).join("");
  return `${label.padEnd(16)}${num(x.probability, 3)}  ${x.definition} ${who}${ev}${extra}${why}`;
}

export function predictionLines(p: ProfileView): string[] {
  const x = p.predictions;
  if (x === undefined) return ["predictions     - (no models running)"];
  return [
    predictionLine("purchase", x.purchasePropensity),
    predictionLine("churn", x.churnRisk),
    predictionLine("next category", x.nextCategory, x.nextCategories.length > 0 ? `\n${" ".repeat(16)}${aff(x.nextCategories, 3)}` : ""),
  ];
}

export function printProfile(p: ProfileView): void {
  console.log(formatProfile(p));
}
