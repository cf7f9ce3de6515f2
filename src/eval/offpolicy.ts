/**
 * Off-policy estimates of a ranking policy's click-through rate from the
 * training log (`portrait eval offpolicy`, README "The feedback loop").
 *
 * Model: a position-based click model. A logged impression is (reply i,
 * slot j, item a, propensity p = the probability that the logging policy put
 * a in slot j, src/recs/exploration.ts, click r). A target policy is
 * evaluated on the same replies: its slate is its own order of the reply's
 * logged exploration pool, top k (an item outside the pool cannot be
 * estimated: the target is evaluated as a re-ranker of the pool). With
 * w = [target puts a in slot j] / p:
 *
 * - IPS:  sum r w / number of logged impressions — unbiased for the target's
 *   clicks per impression when every pool item has p > 0 in every slot
 *   (exploration on);
 * - SNIPS: sum r w / sum w — self-normalised: a little biased, much less
 *   variance.
 * Each has a normal 95% interval from the replies as independent units (a
 * ratio estimator: Var ~ Var(A_i - R B_i) / (n mean(B)^2), with A_i, B_i the
 * reply's sums of the numerator and the denominator).
 */
import type { JetStreamClient, JetStreamManager } from "nats";
import { readWholeStream } from "../bus/stream-reader.js";
import type { Subjects } from "../bus/subjects.js";
import type { FeedbackRecord, ServedRecord } from "../recs/feedback-log.js";
import { isPolicyName, policyScore, type RankingPolicy } from "../recs/ranking-policy.js";
import type { CandidateSource } from "../recs/sources.js";

/** A reply of the training log with its logged impressions and their outcomes. */
export interface LoggedRequest {
  record: ServedRecord;
  impressions: Array<{ slot: number; itemId: string; propensity: number; clicked: boolean }>;
}

/** Joins served replies, impressions and clicks by request and item; replies without a logged impression are left out. Oldest reply first. */
export function joinFeedback(served: readonly ServedRecord[], impressions: readonly FeedbackRecord[], clicks: readonly FeedbackRecord[]): LoggedRequest[] {
  const clicked = new Set(clicks.map((c) => `${c.requestId}\u0000${c.itemId}`));
  const by = new Map<string, LoggedRequest>();
  for (const r of served) by.set(r.requestId, { record: r, impressions: [] });
  const seen = new Set<string>();
  for (const m of impressions) {
    const key = `${m.requestId}\u0000${m.itemId}`;
    const req = by.get(m.requestId);
    if (req === undefined || seen.has(key)) continue;
    seen.add(key);
    req.impressions.push({ slot: m.slot, itemId: m.itemId, propensity: m.propensity, clicked: clicked.has(key) });
  }
  return [...by.values()].filter((r) => r.impressions.length > 0).sort((a, b) => a.record.servedAtMs - b.record.servedAtMs);
}

/** Reads the whole training log (stream <PREFIX>_FEEDBACK) and joins it. */
export async function readFeedbackLog(js: JetStreamClient, jsm: JetStreamManager, s: Subjects): Promise<LoggedRequest[]> {
  const served: ServedRecord[] = [];
  const impressions: FeedbackRecord[] = [];
  const clicks: FeedbackRecord[] = [];
  const dec = new TextDecoder();
  await readWholeStream(js, jsm, s.feedbackStream, (subject, data) => {
    const body = JSON.parse(dec.decode(data)) as unknown;
    if (subject === s.feedback("served")) served.push(body as ServedRecord);
    else if (subject === s.feedback("impression")) impressions.push(body as FeedbackRecord);
    else if (subject === s.feedback("click")) clicks.push(body as FeedbackRecord);
  });
  return joinFeedback(served, impressions, clicks);
}

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
  /** Replies and logged impressions used, and impressions where the target agrees with what was shown. */
  requests: number;
  impressions: number;
  matched: number;
  /** Clicks per logged impression as logged (the logging policy's own CTR, exploration included). */
  logged: number;
  ips: Interval;
  snips: Interval;
}

/** z of a two-sided 95% normal interval. */
export const Z95 = 1.959964;

function ratio(a: Float64Array, b: Float64Array, z: number): Interval {
  const n = a.length;
  let sa = 0;
  let sb = 0;
  for (let i = 0; i < n; i++) {
    sa += a[i]!;
    sb += b[i]!;
  }
  if (n === 0 || sb <= 0) return { estimate: NaN, low: NaN, high: NaN };
  const r = sa / sb;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (a[i]! - r * b[i]!) ** 2;
  const meanB = sb / n;
  const se = n > 1 ? Math.sqrt(ss / (n - 1) / n) / meanB : Infinity;
  return { estimate: r, low: r - z * se, high: r + z * se };
}

/** IPS and SNIPS estimates of `target`'s clicks per impression on `requests` (see the file comment). */
export function estimateOffPolicy(requests: readonly LoggedRequest[], target: TargetPolicy, z = Z95): OffPolicyEstimate {
  const n = requests.length;
  const ipsA = new Float64Array(n);
  const ipsB = new Float64Array(n);
  const snB = new Float64Array(n);
  let impressions = 0;
  let matched = 0;
  let clicks = 0;
  requests.forEach((q, i) => {
    const slate = target.slate(q.record);
    for (const m of q.impressions) {
      impressions++;
      if (m.clicked) clicks++;
      ipsB[i]! += 1;
      if (slate[m.slot] !== m.itemId) continue;
      matched++;
      const w = 1 / m.propensity;
      snB[i]! += w;
      if (m.clicked) ipsA[i]! += w;
    }
  });
  return {
    policy: target.name, requests: n, impressions, matched, logged: impressions > 0 ? clicks / impressions : NaN,
    ips: ratio(ipsA, ipsB, z), snips: ratio(ipsA, snB, z),
  };
}
