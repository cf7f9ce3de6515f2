/**
 * What reviews, risk signals and explanations cost (issue 18), in process,
 * on real logs and the bundled models:
 * - risk: applyEvent over the Taobao slice (every event observes the risk
 *   signals) beside observeRisk alone on the same events: the share of the
 *   profile update the signals take;
 * - reviews: the sentiment model's analyse() per Amazon review (text and title);
 * - explanations: the extra work of a profile query with `explain` (the
 *   bundled churn model's exact contributions and the bundled LSTM's
 *   occlusion over the timeline) for Online Retail / Taobao users, p50 and p99;
 * - size: stored bytes (the profile layout) of the risk and review parts of a profile.
 *
 *   npm run bench:beyond -- [--no-record]
 */
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { newRiskState, observeRisk, type RiskState } from "../src/actors/risk.js";
import { applyEvent, newUserState, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import type { DatasetEvent, DatasetFormat } from "../src/data/types.js";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { ChurnModel } from "../src/models/churn-model.js";
import { LstmRuntime } from "../src/models/lstm-runtime.js";
import { SentimentModel } from "../src/models/sentiment-model.js";
import { reencodeLstmState } from "../src/shard/lstm-steps.js";
import { encodeProfile } from "../src/store/profile-layout.js";
import { explainNextCategory } from "../src/shard/predictions.js";
import { appendResults, printTable, repoRoot } from "./report.js";

const { values: a } = parseArgs({
  options: {
    datasets: { type: "string", default: process.env.PORTRAIT_DATASETS ?? `${repoRoot()}/../shared/data` },
    "no-record": { type: "boolean", default: false },
  },
});

async function load(format: DatasetFormat): Promise<(ProfileEvent & { userId: string; reviewText?: string; title?: string })[]> {
  const out: (ProfileEvent & { userId: string; reviewText?: string; title?: string })[] = [];
  for await (const e of readDataset(format, resolveDataFile(a.datasets!, format)) as AsyncIterable<DatasetEvent>) {
    out.push({
      userId: e.userId, type: e.type, timestampMs: e.timestampMs, itemId: e.itemId ?? "", categoryId: e.categoryId ?? "", brand: e.brand ?? "",
      price: e.price ?? 0, quantity: e.quantity ?? 0, currency: e.currency ?? "", sessionId: e.sessionId ?? "", orderId: e.orderId ?? "",
      rating: e.rating ?? 0, reviewText: e.reviewText ?? "", title: e.attributes?.summary ?? "",
    });
  }
  return out.sort((x, y) => x.timestampMs - y.timestampMs);
}

function pct(xs: number[], q: number): number {
  const s = xs.slice().sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

const rows: string[][] = [];
const load0 = loadavg().map((x) => x.toFixed(1)).join(" ");

// Risk: share of the profile update.
const taobao = await load("taobao");
const best = (f: () => void, reps = 5) => {
  let m = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    f();
    m = Math.min(m, performance.now() - t0);
  }
  return m;
};
const full = best(() => {
  const states = new Map<string, UserState>();
  for (const e of taobao) {
    let s = states.get(e.userId);
    if (s === undefined) states.set(e.userId, (s = newUserState()));
    applyEvent(s, e, PROFILE_DEFAULTS);
  }
});
const riskOnly = best(() => {
  const states = new Map<string, RiskState>();
  for (const e of taobao) {
    let s = states.get(e.userId);
    if (s === undefined) states.set(e.userId, (s = newRiskState()));
    observeRisk(s, e, 0, PROFILE_DEFAULTS.sessionGapMs);
  }
});
rows.push(["risk: applyEvent over Taobao (with risk)", `${taobao.length} events`, `${(taobao.length / full * 1000).toFixed(0)} events/s`, `observeRisk alone ${(riskOnly / full * 100).toFixed(1)}% of it (upper bound: includes its own map lookups)`]);

// Reviews: analyse() per review.
const sentiment = SentimentModel.load(resolveModel(BUNDLED_MODELS_DIR, "sentiment").dir);
const reviews = (await load("amazon-reviews")).filter((e) => e.reviewText !== "");
const per: number[] = [];
for (let r = 0; r < 2; r++) {
  per.length = 0;
  for (const e of reviews) {
    const t0 = performance.now();
    sentiment.analyse(e.reviewText!, e.title);
    per.push((performance.now() - t0) * 1000);
  }
}
rows.push(["reviews: sentiment.analyse per review", `${reviews.length} reviews`, `p50 ${pct(per, 0.5).toFixed(0)} us, p99 ${pct(per, 0.99).toFixed(0)} us`, `mean ${(per.reduce((x, y) => x + y, 0) / per.length).toFixed(0)} us`]);

// Explanations: extra work per query.
const churn = ChurnModel.load(resolveModel(BUNDLED_MODELS_DIR, "churn").dir);
const lstm = LstmRuntime.load(resolveModel(BUNDLED_MODELS_DIR, "lstm").dir);
const users = new Map<string, UserState>();
for (const e of taobao) {
  let s = users.get(e.userId);
  if (s === undefined) users.set(e.userId, (s = newUserState()));
  applyEvent(s, e, PROFILE_DEFAULTS);
}
const sample = [...users.values()].filter((s) => (s.tl?.length ?? 0) >= 3).slice(0, 2000);
const asOf = Math.max(...taobao.map((e) => e.timestampMs));
const exChurn: number[] = [];
const exLstm: number[] = [];
const plain: number[] = [];
for (let r = 0; r < 2; r++) {
  exChurn.length = 0;
  exLstm.length = 0;
  plain.length = 0;
  for (const s of sample) {
    let t0 = performance.now();
    churn.predict(s, asOf);
    const top = lstm.predict(reencodeLstmState(s, lstm)).nextCategories[0]!;
    plain.push((performance.now() - t0) * 1000);
    t0 = performance.now();
    churn.explain(s, asOf);
    exChurn.push((performance.now() - t0) * 1000);
    t0 = performance.now();
    explainNextCategory(s, lstm, top.key);
    exLstm.push((performance.now() - t0) * 1000);
  }
}
const extra = exChurn.map((x, i) => x + exLstm[i]!);
const tl = sample.map((s) => s.tl!.length);
rows.push(["explain: churn (exact) + LSTM occlusion, extra per query", `${sample.length} Taobao users, timeline ${pct(tl, 0.5)}-${Math.max(...tl)} events`, `p50 ${pct(extra, 0.5).toFixed(0)} us, p99 ${pct(extra, 0.99).toFixed(0)} us`, `churn p50 ${pct(exChurn, 0.5).toFixed(1)} us; LSTM p50 ${pct(exLstm, 0.5).toFixed(0)} us; the same predictions without explain p50 ${pct(plain, 0.5).toFixed(0)} us`]);

// Size: the risk and review parts of a profile, as the store writes it (the profile layout, src/store/profile-layout.ts;
// the store puts it as one msgpack bin value, 2-3 bytes more).
const sizeOf = (s: UserState) => encodeProfile(s).length;
const withParts = [...users.values()].slice(0, 5000);
const riskBytes = withParts.map((s) => sizeOf(s) - sizeOf({ ...s, rk: undefined } as UserState));
const amazon = new Map<string, UserState>();
for (const e of await load("amazon-reviews")) {
  let s = amazon.get(e.userId);
  if (s === undefined) amazon.set(e.userId, (s = newUserState()));
  const x = e.reviewText ? sentiment.analyse(e.reviewText, e.title) : undefined;
  applyEvent(s, x ? { ...e, review: { sentiment: x.sentiment, aspects: x.aspects } } : e, PROFILE_DEFAULTS);
}
const rvBytes = [...amazon.values()].map((s) => sizeOf(s) - sizeOf({ ...s, rv: undefined } as UserState));
const total = [...amazon.values()].map(sizeOf);
rows.push(["size: stored bytes (profile layout)", "risk part (Taobao users) / review part (Amazon reviewers)", `risk p50 ${pct(riskBytes, 0.5)} B, max ${Math.max(...riskBytes)} B`, `reviews p50 ${pct(rvBytes, 0.5)} B, max ${Math.max(...rvBytes)} B; whole Amazon profile p50 ${pct(total, 0.5)} B`]);

const header = ["what", "on", "figure", "beside"];
printTable("beyond clicks: cost", header, rows);
const notes = [`Load average at start: ${load0}; at end: ${loadavg().map((x) => x.toFixed(1)).join(" ")} (2 cores shared with other sessions).`];
console.log(notes[0]);
if (!a["no-record"]) appendResults("Reviews, risk and explanations: cost (issue 18)", "npm run bench:beyond", header, rows, notes);
