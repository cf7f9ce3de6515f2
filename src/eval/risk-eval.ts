/**
 * Risk signals against planted anomalies: each detector is scored on a real
 * log into which this code plants users of a known kind, replayed in time
 * order through the profile's own `applyEvent` (the function every shard
 * runs), and judged per user at the end of the log: precision and recall of
 * "flagged" against "planted". Real users count as negatives: a real user the
 * detector flags is a false positive (some may really be anomalous; we cannot
 * know, so they count against us).
 *
 * Plants (seeded, so a run is repeatable):
 * - bots into the Taobao slice: new users that browse real items and
 *   categories at 2-12 events per second (exponential gaps) for 40-200
 *   events, starting at a random time of the window, some in two bursts; times
 *   rounded to whole seconds like the log's;
 * - refund abusers into Online Retail: real customers (chosen at random) who,
 *   from a random point of their history on, refund 60-100% of the lines of
 *   each order 1-40 hours after it, at the order's price;
 * - shared accounts into REES46: for each, 3-4 real users whose sessions
 *   overlap in time are merged into one new account id (their events keep
 *   their own session ids), and left out of the log under their own ids.
 */
import { applyEvent, newUserState, type ProfileEvent, type UserState } from "../actors/user-profile.js";
import { compileProfileOptions } from "../actors/profile-options.js";
import { riskCounts, riskRecord, riskScores } from "../actors/risk.js";
import { readDataset, resolveDataFile } from "../data/datasets.js";
import type { DatasetEvent, DatasetFormat } from "../data/types.js";
import { seededRandom } from "../models/seeded-random.js";
import { EventType } from "../wire/proto.js";

export interface RiskEvalOptions {
  dataDir: string;
  seed?: number;
  /** Planted users per scenario. Default 50. */
  plants?: number;
}

export interface RiskScenarioResult {
  signal: "velocity" | "refundAbuse" | "accountSharing";
  log: string;
  users: number;
  planted: number;
  flagged: number;
  truePositives: number;
  precision: number;
  recall: number;
  /** Real users flagged (false positives), up to 5, with their score reasons' numbers. */
  falsePositiveExamples: string[];
  seconds: number;
}

/** A data set event as the profile reads it, with its user. */
export type Ev = ProfileEvent & { userId: string; eventId?: string };

function toEv(e: DatasetEvent): Ev {
  return {
    userId: e.userId, type: e.type, timestampMs: e.timestampMs, itemId: e.itemId ?? "", categoryId: e.categoryId ?? "", brand: e.brand ?? "",
    price: e.price ?? 0, quantity: e.quantity ?? 0, currency: e.currency ?? "", sessionId: e.sessionId ?? "", orderId: e.orderId ?? "",
  };
}

/** Every event of a data set file, in file order, as the profile reads them. */
export async function loadProfileEvents(dataDir: string, format: DatasetFormat): Promise<Ev[]> {
  const out: Ev[] = [];
  for await (const e of readDataset(format, resolveDataFile(dataDir, format))) out.push(toEv(e));
  return out;
}

const SIGNAL_INDEX = { velocity: 0, refundAbuse: 1, accountSharing: 2 } as const;

/** Replays `events` (sorted here, stable) through applyEvent and scores the signal per user against `planted`. */
export function scoreReplay(events: Ev[], planted: ReadonlySet<string>, signal: RiskScenarioResult["signal"], log: string): Omit<RiskScenarioResult, "seconds"> {
  const o = compileProfileOptions();
  const sorted = events.map((e, i) => [e, i] as const).sort((a, b) => a[0].timestampMs - b[0].timestampMs || a[1] - b[1]).map(([e]) => e);
  const states = new Map<string, UserState>();
  for (const e of sorted) {
    let s = states.get(e.userId);
    if (s === undefined) states.set(e.userId, (s = newUserState()));
    applyEvent(s, e, o);
  }
  let flagged = 0;
  let tp = 0;
  const fps: string[] = [];
  for (const [user, s] of states) {
    const score = riskScores(s.rk, riskCounts(s))[SIGNAL_INDEX[signal]];
    if (score < 1) continue;
    flagged++;
    if (planted.has(user)) tp++;
    const rk = s.rk === undefined ? undefined : riskRecord(s.rk);
    if (!planted.has(user) && fps.length < 5) fps.push(`${user}: ${s.n} events, refunds ${s.counts[EventType.REFUND]}, purchases ${s.counts[EventType.PURCHASE]}, fast ${rk?.f}, peak ${rk?.pk.toFixed(2)}/s, concurrent ${rk?.cp}, quick ${rk?.q} in ${rk?.qo ?? 0} of ${s.orders} orders`);
  }
  return {
    signal, log, users: states.size, planted: planted.size, flagged, truePositives: tp,
    precision: flagged > 0 ? tp / flagged : 0, recall: planted.size > 0 ? tp / planted.size : 0, falsePositiveExamples: fps,
  };
}

/** Bots planted into a browsing log (see the header). */
export function plantBots(events: Ev[], n: number, seed: number): { events: Ev[]; planted: Set<string> } {
  const rand = seededRandom(seed);
  const real = events.filter((e) => e.itemId !== "");
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const e of events) {
    if (e.timestampMs < t0) t0 = e.timestampMs;
    if (e.timestampMs > t1) t1 = e.timestampMs;
  }
  const out = events.slice();
  const planted = new Set<string>();
  for (let b = 0; b < n; b++) {
    const user = `planted-bot-${b}`;
    planted.add(user);
    const count = 40 + Math.floor(rand() * 161);
    const rate = 2 + rand() * 10;
    const bursts = rand() < 0.3 ? 2 : 1;
    let t = t0 + rand() * (t1 - t0) * 0.8;
    for (let k = 0; k < count; k++) {
      if (bursts === 2 && k === Math.floor(count / 2)) t += 600_000;
      t += (-Math.log(1 - rand()) / rate) * 1000;
      const src = real[Math.floor(rand() * real.length)]!;
      out.push({ ...src, userId: user, type: rand() < 0.9 ? EventType.VIEW : EventType.ADD_TO_CART, timestampMs: Math.floor(t / 1000) * 1000, sessionId: "" });
    }
  }
  return { events: out, planted };
}

/** Refund abusers made of real customers (see the header). */
export function plantRefundAbusers(events: Ev[], n: number, seed: number): { events: Ev[]; planted: Set<string> } {
  const rand = seededRandom(seed);
  const byUser = new Map<string, Ev[]>();
  for (const e of events) if (e.type === EventType.PURCHASE) (byUser.get(e.userId) ?? byUser.set(e.userId, []).get(e.userId)!).push(e);
  // Customers with at least 2 orders, in a seeded order.
  const candidates = [...byUser].filter(([, p]) => new Set(p.map((e) => e.orderId)).size >= 2).map(([u]) => u).sort();
  for (let i = candidates.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [candidates[i], candidates[j]] = [candidates[j]!, candidates[i]!];
  }
  const out = events.slice();
  const planted = new Set<string>();
  for (const user of candidates.slice(0, n)) {
    planted.add(user);
    const lines = byUser.get(user)!.slice().sort((a, b) => a.timestampMs - b.timestampMs);
    const orders = [...new Set(lines.map((e) => e.orderId))];
    const from = Math.floor(rand() * Math.max(1, orders.length - 1));
    const share = 0.6 + rand() * 0.4;
    for (const order of orders.slice(from)) {
      const delay = (1 + rand() * 39) * 3_600_000;
      for (const e of lines.filter((x) => x.orderId === order)) {
        if (rand() < share) out.push({ ...e, type: EventType.REFUND, timestampMs: e.timestampMs + delay, orderId: `C${order}` });
      }
    }
  }
  return { events: out, planted };
}

/** Shared accounts merged from real users with overlapping sessions (see the header). */
export function plantSharedAccounts(events: Ev[], n: number, seed: number): { events: Ev[]; planted: Set<string> } {
  const rand = seededRandom(seed);
  const spans = new Map<string, [number, number]>();
  for (const e of events) {
    if (e.sessionId === "") continue;
    const s = spans.get(e.userId);
    if (s === undefined) spans.set(e.userId, [e.timestampMs, e.timestampMs]);
    else {
      if (e.timestampMs < s[0]) s[0] = e.timestampMs;
      if (e.timestampMs > s[1]) s[1] = e.timestampMs;
    }
  }
  // Users active for at least 2 minutes, by start time.
  const users = [...spans].filter(([, [a, b]]) => b - a >= 120_000).sort((x, y) => x[1][0] - y[1][0] || (x[0] < y[0] ? -1 : 1));
  const taken = new Set<string>();
  const merge = new Map<string, string>();
  const planted = new Set<string>();
  for (let k = 0; k < n && users.length > 0; k++) {
    const want = 3 + (rand() < 0.5 ? 1 : 0);
    // A random free user, then the next free users whose activity overlaps theirs.
    const start = Math.floor(rand() * users.length);
    const group: string[] = [];
    for (let i = 0; i < users.length && group.length < want; i++) {
      const [u, [a, b]] = users[(start + i) % users.length]!;
      if (taken.has(u)) continue;
      if (group.length > 0) {
        const [a0, b0] = spans.get(group[0]!)!;
        if (a > b0 || b < a0) continue;
      }
      group.push(u);
      void a;
      void b;
    }
    if (group.length < 3) continue;
    const account = `planted-shared-${k}`;
    planted.add(account);
    for (const u of group) {
      taken.add(u);
      merge.set(u, account);
    }
  }
  return { events: events.map((e) => (merge.has(e.userId) ? { ...e, userId: merge.get(e.userId)! } : e)), planted };
}

export async function evalRisk(o: RiskEvalOptions): Promise<RiskScenarioResult[]> {
  const seed = o.seed ?? 42;
  const n = o.plants ?? 50;
  const out: RiskScenarioResult[] = [];
  const run = async (format: DatasetFormat, signal: RiskScenarioResult["signal"], plant: typeof plantBots) => {
    const t0 = performance.now();
    const base = await loadProfileEvents(o.dataDir, format);
    const { events, planted } = plant(base, n, seed);
    out.push({ ...scoreReplay(events, planted, signal, format), seconds: (performance.now() - t0) / 1000 });
  };
  await run("taobao", "velocity", plantBots);
  await run("online-retail", "refundAbuse", plantRefundAbusers);
  await run("rees46", "accountSharing", plantSharedAccounts);
  return out;
}
