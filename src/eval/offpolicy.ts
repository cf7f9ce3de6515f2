/**
 * Off-policy estimates of a ranking policy's click-through rate from the
 * training log (`portrait eval offpolicy`, README "The feedback loop").
 *
 * A logged impression is (reply i, slot j, item a, propensity mu(a, j) = the
 * probability that the logging policy put a in slot j, src/recs/exploration.ts,
 * click c). A target policy is evaluated on the same replies: its slate is
 * its own order of the reply's logged exploration pool, top k (an item outside
 * the pool cannot be estimated: the target is evaluated as a re-ranker of the
 * pool), over the slots that were logged. Every estimate is clicks per logged
 * impression.
 *
 * Slot level (assumes only that a slot's click depends on what is in it):
 * with w = [target puts a in slot j] / mu(a, j),
 * - IPS = sum c w / impressions: unbiased when exploration is on;
 * - SNIPS = sum c w / sum w: self-normalised, a little biased, less variance.
 * At 10% exploration over a pool of 10 a re-ranker is matched almost only
 * on exploring replies, at weight ~100: both are too noisy on 1,500 replies.
 *
 * Item level, under the position-based click model (src/eval/click-model.ts:
 * P(click | a, j) = theta_j attraction(a)): a click on a in any logged slot
 * is evidence for a wherever the target puts it. With t(a) the target's slot
 * of a and rho(a) = theta_t(a) / sum over logged slots s of mu(a, s) theta_s
 * (0 when the target does not show a), E[sum over logged (a, s) of c rho(a)] =
 * sum over the target's items of theta_t(a) attraction(a): the target's
 * expected clicks. The weights are ~5 x smaller and the items the target
 * shares with the logging policy are matched on every reply.
 * - PBM-IPS = sum c rho / impressions;
 * - PBM-SNIPS = sum c rho / sum rho theta_s / mean theta (the denominator's
 *   expectation is the impressions);
 * - DR (doubly robust) = [sum over the target's slots of theta_j f(a_j) +
 *   sum over logged (a, s) of rho(a) (c - theta_s f(a))] / impressions, with
 *   f the attraction of a reward model (fitClickModel) fitted on the other
 *   half of the replies (cross-fitting, so no reply is scored by a model that
 *   saw it): unbiased whatever f is; the better f, the less variance.
 * theta is estimated on the same replies (their exploring ones,
 * estimatePositionBias) unless given.
 *
 * Intervals: normal 95%, the replies as independent units (a ratio of sums:
 * Var ~ sum_i ((A_i - R B_i) / sum B)^2 n / (n - 1)), plus, for the item-level
 * estimates, each reply's influence through the estimated theta (the
 * estimate's numerical derivative in theta_j times theta_j's influence of
 * the reply), so the noise of theta is in the interval. `compareOffPolicy`
 * gives the paired difference of two policies' DR estimates on the same
 * replies, the promotion gate's test (src/train/train-ranker.ts).
 */
import type { ServedRecord } from "../recs/feedback-log.js";
import { isPolicyName, policyScore, type RankingPolicy } from "../recs/ranking-policy.js";
import { slotPropensity } from "../recs/exploration.js";
import type { CandidateSource } from "../recs/sources.js";
import { attraction, estimatePositionBias, fitClickModel, type ClickModel, type PositionBias } from "./click-model.js";
import type { LoggedRequest } from "./logged-feedback.js";

export { joinFeedback, readFeedbackLog, type LoggedRequest } from "./logged-feedback.js";

/** A policy to estimate: its slate (item ids, slot order) for a logged reply. */
export interface TargetPolicy {
  name: string;
  slate(record: ServedRecord): string[];
}

/** The logging policy's own greedy slate: the pool's first k (what the reply showed when it did not explore). */
export const LOGGED_GREEDY: TargetPolicy = Object.freeze({
  name: "logged-greedy",
  slate: (r: ServedRecord) => r.pool.slice(0, r.k).map((p) => p.itemId),
});

/** A ranking policy (src/recs/ranking-policy.ts) over the pool: score, then prior, then item id, as the recs worker orders. */
export function rankingTarget(name: string, policy: RankingPolicy): TargetPolicy {
  return {
    name,
    slate(r) {
      const s = r.pool.map((c) => policyScore(policy, c));
      return r.pool.map((_, i) => i)
        .sort((a, b) => s[b]! - s[a]! || r.pool[b]!.prior - r.pool[a]!.prior || (r.pool[a]!.itemId < r.pool[b]!.itemId ? -1 : 1))
        .slice(0, r.k).map((i) => r.pool[i]!.itemId);
    },
  };
}

/** The target of a feedback ranker's weights (served as "ranker@<version>"). */
export function weightsTarget(name: string, weights: Partial<Record<CandidateSource, number>>): TargetPolicy {
  return rankingTarget(name, { name: "blend", weights, from: name });
}

/** The target of a ranking policy name ("source:category", "prior"; "blend" needs weights). */
export function namedTarget(name: string): TargetPolicy | undefined {
  if (!isPolicyName(name) || name === "deepfm" || name === "blend") return undefined;
  return rankingTarget(name, { name, weights: {}, from: "option" });
}

export interface Interval {
  estimate: number;
  low: number;
  high: number;
}

export interface OffPolicyEstimate {
  policy: string;
  /** Replies and logged impressions used, and impressions where the target agrees with what was shown (same item, same slot). */
  requests: number;
  impressions: number;
  matched: number;
  /** Logged impressions of an item the target shows too, in any slot (what the item-level estimates use). */
  matchedItems: number;
  /** Clicks per logged impression as logged (the logging policy's own CTR, exploration included). */
  logged: number;
  /** Slot-level estimates: a logged impression counts only where the target puts the same item in the same slot. */
  ips: Interval;
  snips: Interval;
  /** Item-level estimates under the position-based click model (src/eval/click-model.ts): PBM-IPS, self-normalised, doubly robust. */
  pbm: Interval;
  pbmSn: Interval;
  dr: Interval;
}

/** z of a two-sided 95% normal interval. */
export const Z95 = 1.959964;

/** What every estimate on one log shares: the position bias and the cross-fitted reward models. */
export interface OffPolicyContext {
  requests: readonly LoggedRequest[];
  /** theta estimated on `requests` (its uncertainty enters the intervals through its influence per reply), or given with its standard errors. */
  bias: PositionBias | undefined;
  biasInSample: boolean;
  /** Why there are no item-level estimates on these replies, when there are none. */
  noItemLevel?: string;
  /** The reward model's attraction of each reply's pool items (by pool index): fitted on the other fold (cross-fitting), or given. */
  attractionOf: Float64Array[];
}

export interface OffPolicyOptions {
  /** Position bias estimated elsewhere (e.g. on a larger, older log); default: estimated on the requests themselves. */
  positionBias?: PositionBias;
  /** Reward model of the doubly robust estimate fitted elsewhere; default: cross-fitted on 2 folds of the requests. */
  clickModel?: ClickModel;
  /** L2 of the cross-fitted reward model. Default 1. */
  l2?: number;
}

/** Folds of the cross-fitted reward model. */
const FOLDS = 2;

/** The shared part of the estimates on `requests` (see OffPolicyContext). */
export function offPolicyContext(requests: readonly LoggedRequest[], o: OffPolicyOptions = {}): OffPolicyContext {
  const slots = requests.reduce((m, q) => Math.max(m, ...q.impressions.map((x) => x.slot + 1)), 0);
  // The item-level weights need the logging policy's probability of every pool item in every slot, which is
  // src/recs/exploration.ts's: a reply whose logged propensities are not that policy's was served by another one.
  const foreign = requests.find((q) => {
    const index = new Map(q.record.pool.map((p, k) => [p.itemId, k]));
    return q.impressions.some((m) => Math.abs(slotPropensity(q.record.share, q.record.pool.length, index.get(m.itemId) ?? Infinity, m.slot) - m.propensity) > 1e-9);
  });
  const noItemLevel = foreign !== undefined ? `reply ${foreign.record.requestId} logged propensities that are not the exploration policy's (src/recs/exploration.ts)` : undefined;
  const bias = noItemLevel !== undefined ? undefined : o.positionBias ?? estimatePositionBias(requests, slots);
  const why = noItemLevel ?? (bias === undefined ? "no position bias: the log has no exploring reply with a click in slot 0" : undefined);
  let modelOf: ClickModel[];
  if (o.clickModel !== undefined || requests.length < 2 * FOLDS) {
    const m = o.clickModel ?? (requests.length > 0 ? fitClickModel(requests, o.l2 ?? 1) : { weights: {}, slotIntercepts: [] });
    modelOf = requests.map(() => m);
  } else {
    const models = Array.from({ length: FOLDS }, (_, f) => fitClickModel(requests.filter((_, i) => i % FOLDS !== f), o.l2 ?? 1));
    modelOf = requests.map((_, i) => models[i % FOLDS]!);
  }
  const attractionOf = requests.map((q, i) => Float64Array.from(q.record.pool, (p) => attraction(modelOf[i]!, p)));
  return { requests, bias, biasInSample: o.positionBias === undefined, attractionOf, ...(why !== undefined ? { noItemLevel: why } : {}) };
}

/** Per reply: the numerators and denominators of every estimate, for a target's slates under position bias theta. */
interface PerReply {
  /** Logged impressions (the slots the estimate covers). */
  n: Float64Array;
  ipsA: Float64Array;
  snB: Float64Array;
  pbmA: Float64Array;
  pbmB: Float64Array;
  dr: Float64Array;
  matched: number;
  matchedItems: number;
}

function perReply(ctx: OffPolicyContext, slates: readonly string[][], theta: readonly number[] | undefined): PerReply {
  const N = ctx.requests.length;
  const r: PerReply = {
    n: new Float64Array(N), ipsA: new Float64Array(N), snB: new Float64Array(N), pbmA: new Float64Array(N), pbmB: new Float64Array(N), dr: new Float64Array(N),
    matched: 0, matchedItems: 0,
  };
  const th = (j: number) => (theta === undefined ? NaN : Math.max(theta[Math.min(j, theta.length - 1)] ?? NaN, 1e-6));
  ctx.requests.forEach((q, i) => {
    const slate = slates[i]!;
    const rec = q.record;
    const M = rec.pool.length;
    const index = new Map(rec.pool.map((p, k) => [p.itemId, k]));
    const slots = q.impressions.map((m) => m.slot);
    const slotSet = new Set(slots);
    // The target's slot of each of its items, over the logged slots only (an estimate covers what was logged).
    const targetSlot = new Map<string, number>();
    slate.forEach((it, j) => {
      if (slotSet.has(j)) targetSlot.set(it, j);
    });
    const f = ctx.attractionOf[i]!;
    let thetaSum = 0;
    for (const s of slots) thetaSum += th(s);
    const thetaMean = thetaSum / Math.max(1, slots.length);
    // rho(a) = theta_{target slot of a} / sum over logged slots s of mu(a, s) theta_s.
    const rho = (item: string): number => {
      const j = targetSlot.get(item);
      const k = index.get(item);
      if (j === undefined || k === undefined) return 0;
      let den = 0;
      for (const s of slots) den += slotPropensity(rec.share, M, k, s) * th(s);
      return den > 0 ? th(j) / den : 0;
    };
    r.n[i] = q.impressions.length;
    let dm = 0;
    for (const [item, j] of targetSlot) {
      const k = index.get(item);
      if (k !== undefined) dm += th(j) * f[k]!;
    }
    let corr = 0;
    for (const m of q.impressions) {
      const c = m.clicked ? 1 : 0;
      if (slate[m.slot] === m.itemId) {
        r.matched++;
        const w = 1 / m.propensity;
        r.snB[i]! += w;
        r.ipsA[i]! += c * w;
      }
      const p = rho(m.itemId);
      if (p === 0) continue;
      r.matchedItems++;
      const k = index.get(m.itemId)!;
      r.pbmA[i]! += c * p;
      r.pbmB[i]! += (p * th(m.slot)) / thetaMean;
      corr += p * (c - th(m.slot) * f[k]!);
    }
    r.dr[i] = dm + corr;
  });
  return r;
}

/** A ratio of sums over replies with its normal interval; `extra` adds each reply's influence through theta (already on the ratio's scale). */
function ratioInterval(a: Float64Array, b: Float64Array, z: number, extra?: Float64Array, extraVar = 0): Interval {
  const n = a.length;
  let sa = 0;
  let sb = 0;
  for (let i = 0; i < n; i++) {
    sa += a[i]!;
    sb += b[i]!;
  }
  if (n === 0 || sb <= 0 || !Number.isFinite(sa)) return { estimate: NaN, low: NaN, high: NaN };
  const r = sa / sb;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += ((a[i]! - r * b[i]!) / sb + (extra?.[i] ?? 0)) ** 2;
  const se = n > 1 ? Math.sqrt((ss * n) / (n - 1) + extraVar) : Infinity;
  return { estimate: r, low: r - z * se, high: r + z * se };
}

/**
 * Each reply's influence on estimates through the estimated theta: each
 * estimate's derivative in theta_j (numerical; `values` returns every
 * estimate at a theta) times theta_j's influence of the reply
 * (estimatePositionBias), summed over slots; plus the variance of a theta
 * given from elsewhere. One entry per estimate.
 */
function thetaInfluence(ctx: OffPolicyContext, values: (theta: number[]) => number[]): Array<{ extra: Float64Array; extraVar: number }> {
  const N = ctx.requests.length;
  const b = ctx.bias;
  if (b === undefined) return [];
  const v0 = values(b.theta);
  const out = v0.map(() => ({ extra: new Float64Array(N), extraVar: 0 }));
  // grads[j][e]: d estimate e / d theta_j.
  const grads = b.theta.map((t, j) => {
    if (j === 0) return v0.map(() => 0);
    const h = Math.max(1e-4, t * 1e-3);
    const up = [...b.theta];
    up[j] = t + h;
    return values(up).map((v, e) => (v - v0[e]!) / h);
  });
  if (!ctx.biasInSample) {
    out.forEach((o, e) => grads.forEach((g, j) => (o.extraVar += (g[e]! * (b.se[j] ?? 0)) ** 2)));
    return out;
  }
  // theta_j = (C_j / M_j) / (C_0 / M_0) over the exploring replies: reply i moves it by theta_j (c_ji/C_j - m_ji/M_j - c_0i/C_0 + m_0i/M_0).
  const K = b.theta.length;
  const count = (q: LoggedRequest) => {
    const c = new Float64Array(K);
    const m = new Float64Array(K);
    for (const x of q.impressions) {
      if (x.slot >= K) continue;
      m[x.slot]! += 1;
      if (x.clicked) c[x.slot]! += 1;
    }
    return { c, m };
  };
  const C = new Float64Array(K);
  const Mi = new Float64Array(K);
  for (const q of ctx.requests) {
    if (!q.record.explored) continue;
    const { c, m } = count(q);
    for (let j = 0; j < K; j++) {
      C[j]! += c[j]!;
      Mi[j]! += m[j]!;
    }
  }
  const rel = (x: number, total: number) => (total > 0 ? x / total : 0);
  ctx.requests.forEach((q, i) => {
    if (!q.record.explored) return;
    const { c, m } = count(q);
    const d0 = rel(c[0]!, C[0]!) - rel(m[0]!, Mi[0]!);
    for (let j = 1; j < K; j++) {
      const move = b.theta[j]! * (rel(c[j]!, C[j]!) - rel(m[j]!, Mi[j]!) - d0);
      out.forEach((o, e) => (o.extra[i]! += grads[j]![e]! * move));
    }
  });
  return out;
}

function sumRatio(a: Float64Array, b: Float64Array): number {
  let sa = 0;
  let sb = 0;
  for (let i = 0; i < a.length; i++) {
    sa += a[i]!;
    sb += b[i]!;
  }
  return sa / sb;
}

const NO_INTERVAL: Interval = Object.freeze({ estimate: NaN, low: NaN, high: NaN });

/** Every estimate of `target`'s clicks per impression on the context's replies (see the file comment). */
export function estimateOffPolicy(requests: readonly LoggedRequest[], target: TargetPolicy, ctx: OffPolicyContext = offPolicyContext(requests), z = Z95): OffPolicyEstimate {
  if (ctx.requests !== requests) throw new Error("estimateOffPolicy: the context was made for other requests");
  const slates = requests.map((q) => target.slate(q.record));
  const theta = ctx.bias?.theta;
  const v = perReply(ctx, slates, theta);
  let impressions = 0;
  let clicks = 0;
  for (const q of requests) {
    impressions += q.impressions.length;
    for (const m of q.impressions) if (m.clicked) clicks++;
  }
  // The item-level estimates, with theta's influence (one set of perturbed passes for the three).
  const itemLevel = (r: PerReply) => [[r.pbmA, r.n], [r.pbmA, r.pbmB], [r.dr, r.n]] as const;
  const infl = theta === undefined ? [] : thetaInfluence(ctx, (t) => itemLevel(perReply(ctx, slates, t)).map(([a, b]) => sumRatio(a, b)));
  const [pbm, pbmSn, dr] = itemLevel(v).map(([a, b], e) => (theta === undefined ? NO_INTERVAL : ratioInterval(a, b, z, infl[e]!.extra, infl[e]!.extraVar)));
  return {
    policy: target.name, requests: requests.length, impressions, matched: v.matched, matchedItems: v.matchedItems,
    logged: impressions > 0 ? clicks / impressions : NaN,
    ips: ratioInterval(v.ipsA, v.n, z), snips: ratioInterval(v.ipsA, v.snB, z),
    pbm: pbm!, pbmSn: pbmSn!, dr: dr!,
  };
}

/**
 * The doubly robust estimate of `challenger` minus `opponent` on the same
 * replies, with a paired interval: each reply's difference, so what both
 * policies show alike cancels reply by reply.
 */
export function compareOffPolicy(ctx: OffPolicyContext, challenger: TargetPolicy, opponent: TargetPolicy, z = Z95): Interval {
  const theta = ctx.bias?.theta;
  if (theta === undefined) return NO_INTERVAL;
  const sa = ctx.requests.map((q) => challenger.slate(q.record));
  const sb = ctx.requests.map((q) => opponent.slate(q.record));
  const diff = (t: readonly number[]) => {
    const a = perReply(ctx, sa, t);
    const b = perReply(ctx, sb, t);
    return { d: a.dr.map((x, i) => x - b.dr[i]!), n: a.n };
  };
  const { d, n } = diff(theta);
  const [{ extra, extraVar }] = thetaInfluence(ctx, (t) => {
    const x = diff(t);
    return [sumRatio(x.d, x.n)];
  }) as [{ extra: Float64Array; extraVar: number }];
  return ratioInterval(d, n, z, extra, extraVar);
}
