/**
 * Identity merge: the pure fold of a secondary id's state into its primary's
 * (README "Identity", field by field). No I/O: the shard calls it when a
 * hand-over arrives on the primary's partition (batch-applier.ts), tests call
 * it directly.
 *
 * Rules (`into` is the primary's state, `from` the secondary's):
 * - counts, events applied, money (purchased, refunded), orders: add;
 *   order ids: union, the primary's first, the last 8 kept;
 * - currency: the primary's, or the secondary's when the primary has none;
 * - first seen: the earlier; last seen, last purchase: the later;
 * - affinities (category, brand, price band): both tables are brought to the
 *   later of their two reference times (each score x 2^(-(ref - own ref) /
 *   halfLife)), added key by key, and the affinityTopK strongest kept: the
 *   same sum of decayed event weights as if one id had done all the events;
 * - sessions: finished sessions add (count, events, duration); of the two
 *   current sessions the one with the later last event stays current and the
 *   other counts as finished (two devices' sessions are not joined);
 * - recent items, bought items, timeline: interleaved by time, newest first
 *   (an item's time is its latest event in its owner's timeline; an item
 *   older than its owner's timeline gets the time of that timeline's oldest
 *   event and keeps its place among its owner's items), distinct, trimmed to
 *   their lengths;
 * - LSTM state: dropped; the shard re-encodes it from the merged timeline
 *   (lstm-steps.ts, the rule of a model version change) on the next touch;
 * - audiences: day buckets add day by day (90 days up to the newer newest
 *   day), the later add-to-cart time, the current session's categories of the
 *   session kept current; memberships stay the primary's and are re-evaluated
 *   in whole after the fold (the secondary's exits are published when it
 *   hands over, reason "merged");
 * - reviews: counts add; the decayed sentiment sums overall, per category and
 *   per brand, and the aspect weights are brought to the later reference time
 *   (as the affinities) and added key by key, the REVIEW_TOP_K heaviest kept;
 * - social: degrees and shares add, followed ids and friend samples are joined
 *   (src/actors/social.ts);
 * - risk: fast events, quick refunds (lines and orders) and returns add, peaks take the larger,
 *   the burst state is the later one; the tracked session/device ids stay the
 *   primary's (two devices of one person are not account sharing);
 * - aliases: the secondary and its own aliases become the primary's; merge
 *   ids: the union (a merge id is folded once).
 */
import type { AffinityTable, ReviewState, SentimentTable, UserState } from "./user-profile.js";
import { BOUGHT_MEMORY, REVIEW_TOP_K, TIMELINE_MEMORY } from "./user-profile.js";
import { RISK_FIXED, RK, riskOf, type RiskRecord, type RiskState } from "./risk.js";
import { mergeSocial } from "./social.js";
import type { CompiledProfileOptions } from "./profile-options.js";
import { BUCKET_DAYS, newMemberships } from "./audience-state.js";

const ORDER_MEMORY = 8;
const STRIDE = 5;

function rescaled(t: AffinityTable, f: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i < t.keys.length; i++) m.set(t.keys[i]!, t.scores[i]! * f);
  return m;
}

function mergeTable(a: AffinityTable, fa: number, b: AffinityTable, fb: number, topK: number): AffinityTable {
  const m = rescaled(a, fa);
  for (const [k, v] of rescaled(b, fb)) m.set(k, (m.get(k) ?? 0) + v);
  // Strongest first; a tie keeps the primary's keys first (insertion order is stable under sort).
  const kept = [...m].sort((x, y) => y[1] - x[1]).slice(0, topK);
  return { keys: kept.map(([k]) => k), scores: kept.map(([, v]) => v) };
}

/** Each item of `list` (newest first) with a time: its latest event in `tl`, else the oldest time of `tl` (older than the timeline). */
function timed(list: readonly string[], tl: readonly [number, number, string][], types?: ReadonlySet<number>): [string, number][] {
  const latest = new Map<string, number>();
  let oldest = Infinity;
  for (const [type, t, item] of tl) {
    if (t < oldest) oldest = t;
    if (types !== undefined && !types.has(type)) continue;
    if (t > (latest.get(item) ?? -Infinity)) latest.set(item, t);
  }
  const floor = oldest === Infinity ? 0 : oldest;
  // Monotone in the list's own order: an item never gets a later time than the one before it.
  let cap = Infinity;
  return list.map((item) => {
    const t = Math.min(latest.get(item) ?? floor, cap);
    cap = t;
    return [item, t];
  });
}

/** Two newest-first timed lists interleaved by time (ties: the primary's first), distinct, at most `max`. */
function interleave(a: [string, number][], b: [string, number][], max: number): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  let i = 0;
  let j = 0;
  while (out.length < max && (i < a.length || j < b.length)) {
    const takeA = j >= b.length || (i < a.length && a[i]![1] >= b[j]![1]);
    const [item] = takeA ? a[i++]! : b[j++]!;
    if (!seen.has(item)) {
      seen.add(item);
      out.push(item);
    }
  }
  return out;
}

const PURCHASE_TYPE = new Set([7]);

/** Folds `from` (the secondary's state) into `into` (the primary's), in place. */
export function mergeStates(into: UserState, from: UserState, o: CompiledProfileOptions): void {
  const a = into;
  const b = from;
  const tlA = a.tl ?? [];
  const tlB = b.tl ?? [];
  const recent = interleave(timed(a.recent, tlA), timed(b.recent, tlB), o.recentItems);
  const bought = interleave(timed(a.bought ?? [], tlA, PURCHASE_TYPE), timed(b.bought ?? [], tlB, PURCHASE_TYPE), BOUGHT_MEMORY);
  const tl = [...tlA.map((e, i) => [e, 0, i] as const), ...tlB.map((e, i) => [e, 1, i] as const)]
    .sort((x, y) => y[0][1] - x[0][1] || x[1] - y[1] || x[2] - y[2]).slice(0, TIMELINE_MEMORY).map(([e]) => e);

  a.n += b.n;
  for (let i = 0; i < Math.max(a.counts.length, b.counts.length); i++) a.counts[i] = (a.counts[i] ?? 0) + (b.counts[i] ?? 0);
  a.purchased += b.purchased;
  a.refunded += b.refunded;
  if (a.currency === "") a.currency = b.currency;
  a.orders += b.orders;
  const orderIds = [...a.orderIds];
  for (const id of b.orderIds) if (!orderIds.includes(id)) orderIds.push(id);
  a.orderIds = orderIds.slice(-ORDER_MEMORY);
  a.lastPurchaseMs = Math.max(a.lastPurchaseMs, b.lastPurchaseMs);
  if (b.firstSeenMs > 0 && (a.firstSeenMs === 0 || b.firstSeenMs < a.firstSeenMs)) a.firstSeenMs = b.firstSeenMs;
  a.lastSeenMs = Math.max(a.lastSeenMs, b.lastSeenMs);

  if (b.affRefMs > 0) {
    const ref = Math.max(a.affRefMs, b.affRefMs);
    const fa = a.affRefMs > 0 ? Math.pow(2, -(ref - a.affRefMs) / o.halfLifeMs) : 1;
    const fb = Math.pow(2, -(ref - b.affRefMs) / o.halfLifeMs);
    a.cat = mergeTable(a.cat, fa, b.cat, fb, o.affinityTopK);
    a.brand = mergeTable(a.brand, fa, b.brand, fb, o.affinityTopK);
    a.band = mergeTable(a.band, fa, b.band, fb, o.affinityTopK);
    // Review sums share the affinities' reference time (user-profile.ts): brought to the same one, then added.
    if (b.rv !== undefined) a.rv = mergeReviews(a.rv, fa, b.rv, fb);
    a.affRefMs = ref;
  }
  if (b.rk !== undefined) a.rk = mergeRisk(a.rk, b.rk);
  if (b.so !== undefined) a.so = mergeSocial(a.so, b.so);

  if (b.sCount > 0) {
    if (a.sCount === 0) {
      [a.sId, a.sStartMs, a.sLastMs, a.sEvents] = [b.sId, b.sStartMs, b.sLastMs, b.sEvents];
    } else if (b.sLastMs > a.sLastMs) {
      // The secondary's session is the current one; the primary's current one is finished.
      a.sEventsDone += a.sEvents;
      a.sDurationDone += a.sLastMs - a.sStartMs;
      [a.sId, a.sStartMs, a.sLastMs, a.sEvents] = [b.sId, b.sStartMs, b.sLastMs, b.sEvents];
      if (a.aud !== undefined && b.aud !== undefined) {
        a.aud.sc = b.aud.sc.slice();
        a.aud.scn = b.aud.scn.slice();
      }
    } else {
      a.sEventsDone += b.sEvents;
      a.sDurationDone += b.sLastMs - b.sStartMs;
    }
    a.sCount += b.sCount;
    a.sEventsDone += b.sEventsDone;
    a.sDurationDone += b.sDurationDone;
    if (a.aud !== undefined) a.aud.scS = a.sCount;
  }

  a.recent = recent;
  a.bought = bought;
  a.tl = tl;
  delete a.lstm;
  delete a.lstmV;

  if (b.aud !== undefined) {
    if (a.aud === undefined) {
      a.aud = { ...structuredClone(b.aud), m: newMemberships(), due: 0, tm: 0 };
      a.aud.scS = a.sCount;
    } else {
      a.aud.d = mergeBuckets(a.aud.d, b.aud.d);
      a.aud.cart = Math.max(a.aud.cart, b.aud.cart);
    }
  }
  // The next evaluation is a whole one (every audience re-evaluated on the merged state).
  if (a.aud !== undefined) delete a.aud.w;

  const al = (a.al ??= []);
  for (const x of b.al ?? []) if (!al.some(([k]) => k === x[0])) al.push([x[0], x[1]]);
  const mg = (a.mg ??= []);
  for (const id of b.mg ?? []) if (!mg.includes(id)) mg.push(id);
}

/** Decayed sentiment tables added key by key (both at one reference time), the REVIEW_TOP_K heaviest kept. */
function mergeSentiment(x: SentimentTable, fx: number, y: SentimentTable, fy: number): SentimentTable {
  const m = new Map<string, [number, number]>();
  for (const [t, f] of [[x, fx], [y, fy]] as const) {
    for (let i = 0; i < t.keys.length; i++) {
      const cur = m.get(t.keys[i]!) ?? [0, 0];
      cur[0] += t.w[i]! * f;
      cur[1] += t.s[i]! * f;
      m.set(t.keys[i]!, cur);
    }
  }
  const kept = [...m].sort((p, q) => q[1][0] - p[1][0]).slice(0, REVIEW_TOP_K);
  return { keys: kept.map(([k]) => k), w: kept.map(([, v]) => v[0]), s: kept.map(([, v]) => v[1]) };
}

/** Two users' review states added: counts add, decayed sums (scaled by fa, fb to one reference time) add. */
function mergeReviews(a: ReviewState | undefined, fa: number, b: ReviewState, fb: number): ReviewState {
  const none: ReviewState = { n: 0, nText: 0, w: 0, s: 0, cat: { keys: [], w: [], s: [] }, brand: { keys: [], w: [], s: [] }, asp: { keys: [], scores: [] } };
  const x = a ?? none;
  return {
    n: x.n + b.n, nText: x.nText + b.nText, w: x.w * fa + b.w * fb, s: x.s * fa + b.s * fb,
    cat: mergeSentiment(x.cat, fa, b.cat, fb), brand: mergeSentiment(x.brand, fa, b.brand, fb),
    asp: mergeTable(x.asp, fa, b.asp, fb, REVIEW_TOP_K),
  };
}

/**
 * Risk counters of two ids of one person: fast events, quick refunds and
 * returns add, peaks take the larger, the burst state is the one with the
 * later event. The tracked session/device ids stay the primary's: one
 * person's phone and laptop are not account sharing, so the merge does not
 * put them side by side.
 */
/** `a` and `b` in memory form, or records of an earlier version (a hand-over written before the flat form). */
function mergeRisk(a0: RiskState | RiskRecord | undefined, b0: RiskState | RiskRecord): RiskState {
  const b = riskOf(b0);
  if (a0 === undefined) {
    // B's counters without its ids (the primary's sessions and devices are its own).
    const r = b.slice(0, RISK_FIXED);
    r[RK.cp] = 0;
    return r;
  }
  const a = riskOf(a0).slice();
  const later = b[RK.bt]! > a[RK.bt]! ? b : a;
  a[RK.b] = later[RK.b]!;
  a[RK.bt] = later[RK.bt]!;
  a[RK.sp] = later[RK.sp]!;
  a[RK.pp] = Math.max(a[RK.pp]!, b[RK.pp]!);
  a[RK.f] = a[RK.f]! + b[RK.f]!;
  a[RK.pk] = Math.max(a[RK.pk]!, b[RK.pk]!);
  a[RK.q] = a[RK.q]! + b[RK.q]!;
  a[RK.qo] = a[RK.qo]! + b[RK.qo]!;
  a[RK.rt] = a[RK.rt]! + b[RK.rt]!;
  return a;
}

/** Day buckets of two users added day by day, oldest first, the 90 days up to the newest kept. */
function mergeBuckets(x: number[], y: number[]): number[] {
  const days = new Map<number, number[]>();
  for (const d of [x, y]) {
    for (let i = 0; i < d.length; i += STRIDE) {
      const cur = days.get(d[i]!) ?? [d[i]!, 0, 0, 0, 0];
      for (let k = 1; k < STRIDE; k++) cur[k]! += d[i + k]!;
      days.set(d[i]!, cur);
    }
  }
  const sorted = [...days.keys()].sort((p, q) => p - q);
  const newest = sorted.length > 0 ? sorted[sorted.length - 1]! : 0;
  return sorted.filter((day) => day > newest - BUCKET_DAYS).flatMap((day) => days.get(day)!);
}
