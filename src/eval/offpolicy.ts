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
 * impression. The pool is the ranker's (ServedRecord.pool): an impression of
 * an item only a candidate source's arm could show (ServedRecord.extra)
 * counts as an impression no re-ranker of the pool matches.
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
 * Intervals: the slot-level ones normal 95%, the replies as independent
 * units (a ratio of sums: Var ~ sum_i ((A_i - R B_i) / sum B)^2 n / (n - 1)).
 * The item-level ones, when theta is estimated on the same replies, by a
 * delete-a-group jackknife over the replies that re-estimates theta each
 * time: bias-corrected (the estimates are non-linear in theta) and with
 * theta's noise in the variance (thetaIntervals). `compareOffPolicy`
 * gives the paired difference of two policies' DR estimates on the same
 * replies, the promotion gate's test (src/train/train-ranker.ts).
 */
import type { ServedRecord } from "../recs/feedback-log.js";
import { isPolicyName, policyScore, type RankingPolicy } from "../recs/ranking-policy.js";
import { loggedArms, propensityOf } from "../recs/exploration.js";
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
    const arms = loggedArms(q.record);
    return q.impressions.some((m) => {
      const a = arms.get(m.itemId);
      return a === undefined || Math.abs(propensityOf(q.record.share, a.explore, a.index, m.slot) - m.propensity) > 1e-9;
    });
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

/** What perReply needs of one reply and a target's slate that does not depend on theta. */
interface PreparedReply {
  /** The logged slots. */
  slots: number[];
  /** The direct-method terms: (target slot, reward-model attraction) of each target item in the pool on a logged slot. */
  dm: Array<[number, number]>;
  /** Each logged impression: its slot, click, whether the target shows it there, its logged propensity, and, when the target shows it on a logged slot, that slot, its attraction and its propensity in every logged slot (rho's denominator). */
  imps: Array<{ slot: number; c: number; same: boolean; propensity: number; target: number; f: number; mu: number[] }>;
}

/** The theta-free part of perReply for a target's slates (computed once; perReply runs once per theta). */
function prepareReplies(ctx: OffPolicyContext, slates: readonly string[][]): PreparedReply[] {
  return ctx.requests.map((q, i) => {
    const slate = slates[i]!;
    const rec = q.record;
    const index = new Map(rec.pool.map((p, k) => [p.itemId, k]));
    const arms = loggedArms(rec);
    const slots = q.impressions.map((m) => m.slot);
    const slotSet = new Set(slots);
    // The target's slot of each of its items, over the logged slots only (an estimate covers what was logged).
    const targetSlot = new Map<string, number>();
    slate.forEach((it, j) => {
      if (slotSet.has(j)) targetSlot.set(it, j);
    });
    const f = ctx.attractionOf[i]!;
    const dm: Array<[number, number]> = [];
    for (const [item, j] of targetSlot) {
      const k = index.get(item);
      if (k !== undefined) dm.push([j, f[k]!]);
    }
    const imps = q.impressions.map((m) => {
      const j = targetSlot.get(m.itemId);
      const k = index.get(m.itemId);
      const a = arms.get(m.itemId);
      const shown = j !== undefined && k !== undefined && a !== undefined;
      return {
        slot: m.slot, c: m.clicked ? 1 : 0, same: slate[m.slot] === m.itemId, propensity: m.propensity,
        target: shown ? j : -1, f: shown ? f[k]! : 0, mu: shown ? slots.map((s) => propensityOf(rec.share, a.explore, a.index, s)) : [],
      };
    });
    return { slots, dm, imps };
  });
}

function perReply(prepared: readonly PreparedReply[], theta: readonly number[] | undefined): PerReply {
  const N = prepared.length;
  const r: PerReply = {
    n: new Float64Array(N), ipsA: new Float64Array(N), snB: new Float64Array(N), pbmA: new Float64Array(N), pbmB: new Float64Array(N), dr: new Float64Array(N),
    matched: 0, matchedItems: 0,
  };
  const th = (j: number) => (theta === undefined ? NaN : Math.max(theta[Math.min(j, theta.length - 1)] ?? NaN, 1e-6));
  prepared.forEach((q, i) => {
    let thetaSum = 0;
    for (const s of q.slots) thetaSum += th(s);
    const thetaMean = thetaSum / Math.max(1, q.slots.length);
    r.n[i] = q.imps.length;
    let dm = 0;
    for (const [j, f] of q.dm) dm += th(j) * f;
    let corr = 0;
    for (const m of q.imps) {
      if (m.same) {
        r.matched++;
        const w = 1 / m.propensity;
        r.snB[i]! += w;
        r.ipsA[i]! += m.c * w;
      }
      if (m.target < 0) continue;
      // rho(a) = theta_{target slot of a} / sum over logged slots s of mu(a, s) theta_s.
      let den = 0;
      m.mu.forEach((mu, x) => (den += mu * th(q.slots[x]!)));
      const p = den > 0 ? th(m.target) / den : 0;
      if (p === 0) continue;
      r.matchedItems++;
      r.pbmA[i]! += m.c * p;
      r.pbmB[i]! += (p * th(m.slot)) / thetaMean;
      corr += p * (m.c - th(m.slot) * m.f);
    }
    r.dr[i] = dm + corr;
  });
  return r;
}

/** A ratio of sums over replies with its normal interval; `extraVar` adds a variance on the ratio's scale (a given theta's). */
function ratioInterval(a: Float64Array, b: Float64Array, z: number, extraVar = 0): Interval {
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
  for (let i = 0; i < n; i++) ss += ((a[i]! - r * b[i]!) / sb) ** 2;
  const se = n > 1 ? Math.sqrt((ss * n) / (n - 1) + extraVar) : Infinity;
  return { estimate: r, low: r - z * se, high: r + z * se };
}

/** Groups of the delete-a-group jackknife of the item-level estimates (see thetaIntervals). */
export const JACKKNIFE_GROUPS = 50;

/**
 * The quantile of Student's t with `df` degrees of freedom at the normal
 * quantile z (Cornish-Fisher expansion; within 1e-3 from df 10 on).
 */
export function tQuantile(z: number, df: number): number {
  const z3 = z ** 3;
  const z5 = z ** 5;
  const z7 = z ** 7;
  return z + (z3 + z) / (4 * df) + (5 * z5 + 16 * z3 + 3 * z) / (96 * df ** 2) + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * df ** 3);
}

/**
 * The intervals of estimates that depend on the position bias theta, each a
 * ratio of sums over replies (`ratiosAt` returns their per-reply numerators
 * and denominators at a theta).
 *
 * theta estimated on the same replies: a delete-a-group jackknife over the
 * replies (G = JACKKNIFE_GROUPS groups, reply i in group i mod G). Leaving
 * out group g re-estimates theta without it and recomputes every sum without
 * it; the estimate is the jackknife's bias-corrected G R - (G - 1) mean(R_-g)
 * and its variance (G - 1) / G sum (R_-g - mean)^2, with Student's t at
 * G - 1 degrees of freedom. Why: the estimates are non-linear in theta
 * (rho divides by it), so theta's noise (~150 exploring replies in 1,500)
 * biased them upwards by 1-2.6%, which a linearised variance neither
 * removes nor covers (bench/RESULTS.md "feedback loop", seed 3); the
 * jackknife removes the O(1/n) bias and its variance takes theta's noise
 * and the replies' together.
 *
 * theta given from elsewhere: the replies as independent units plus the
 * variance through theta's standard errors (numerical derivative in each theta_j).
 */
function thetaIntervals(ctx: OffPolicyContext, ratiosAt: (theta: readonly number[]) => ReadonlyArray<readonly [Float64Array, Float64Array]>, z: number): Interval[] {
  const b = ctx.bias!;
  const at0 = ratiosAt(b.theta);
  if (!ctx.biasInSample) {
    const v0 = at0.map(([x, y]) => sumRatio(x, y));
    const extraVar = v0.map(() => 0);
    b.theta.forEach((t, j) => {
      if (j === 0) return;
      const h = Math.max(1e-4, t * 1e-3);
      const up = [...b.theta];
      up[j] = t + h;
      ratiosAt(up).forEach(([x, y], e) => (extraVar[e]! += (((sumRatio(x, y) - v0[e]!) / h) * (b.se[j] ?? 0)) ** 2));
    });
    return at0.map(([x, y], e) => ratioInterval(x, y, z, extraVar[e]!));
  }
  const N = ctx.requests.length;
  const G = Math.min(JACKKNIFE_GROUPS, N);
  if (G < 2) return at0.map(() => NO_INTERVAL);
  const full = at0.map(([x, y]) => sumRatio(x, y));
  const leftOut = Array.from({ length: G }, (_, g) => {
    const rest = ctx.requests.filter((_, i) => i % G !== g);
    const theta = estimatePositionBias(rest, b.theta.length)?.theta ?? b.theta;
    return ratiosAt(theta).map(([x, y]) => {
      let sx = 0;
      let sy = 0;
      for (let i = 0; i < N; i++) {
        if (i % G === g) continue;
        sx += x[i]!;
        sy += y[i]!;
      }
      return sx / sy;
    });
  });
  const t = tQuantile(z, G - 1);
  return full.map((r, e) => {
    const vals = leftOut.map((v) => v[e]!);
    if (!Number.isFinite(r) || vals.some((v) => !Number.isFinite(v))) return NO_INTERVAL;
    const mean = vals.reduce((a, v) => a + v, 0) / G;
    const estimate = G * r - (G - 1) * mean;
    const se = Math.sqrt(((G - 1) / G) * vals.reduce((a, v) => a + (v - mean) ** 2, 0));
    return { estimate, low: estimate - t * se, high: estimate + t * se };
  });
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
  const prepared = prepareReplies(ctx, slates);
  const v = perReply(prepared, theta);
  let impressions = 0;
  let clicks = 0;
  for (const q of requests) {
    impressions += q.impressions.length;
    for (const m of q.impressions) if (m.clicked) clicks++;
  }
  // The item-level estimates, with theta's influence (one set of perturbed passes for the three).
  const itemLevel = (r: PerReply) => [[r.pbmA, r.n], [r.pbmA, r.pbmB], [r.dr, r.n]] as const;
  const [pbm, pbmSn, dr] = theta === undefined ? [NO_INTERVAL, NO_INTERVAL, NO_INTERVAL] : thetaIntervals(ctx, (t) => itemLevel(perReply(prepared, t)), z);
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
  const pa = prepareReplies(ctx, ctx.requests.map((q) => challenger.slate(q.record)));
  const pb = prepareReplies(ctx, ctx.requests.map((q) => opponent.slate(q.record)));
  const diff = (t: readonly number[]) => {
    const a = perReply(pa, t);
    const b = perReply(pb, t);
    return [[a.dr.map((x, i) => x - b.dr[i]!), a.n] as const];
  };
  return thetaIntervals(ctx, diff, z)[0]!;
}
