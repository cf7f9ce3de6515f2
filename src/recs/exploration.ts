/**
 * Exploration and propensities (README "The feedback loop").
 *
 * The policy: with probability `share` a reply explores, else it is the
 * ranker's top k (the greedy slate). An exploring reply is ε-greedy over arms:
 *
 * - the ranker's arm, with probability 1 - sourceShare: the exploration pool
 *   R, the ranker's first `pool` candidates (at least k);
 * - a candidate source's arm, with probability sourceShare, the source chosen
 *   uniformly among the sources that found at least k of this request's
 *   candidates (S of them): that source's first `pool` candidates by its own
 *   normalised score (ties in the ranker's order). With no such source the
 *   ranker's arm takes the whole exploring share.
 *
 * The reply is then a uniformly random ordered draw of k items from the
 * chosen arm's pool. A uniform arrangement of an arm of size |A| puts each of
 * its items in a given slot with probability 1 / |A|, so an exploring reply
 * puts item a in any given slot with probability
 *
 *     e(a) = sum over arms A of P(A) [a in A] / |A|
 *
 * (the same for every slot), and the probability that a is in slot j (0-based)
 * of a reply, over the ranker's order g, is exactly
 *
 *     p(a, j) = (1 - share) [a = g_j] + share e(a)
 *
 * and 0 for a candidate in no arm. For each slot these sum to 1 over the union
 * of the arms. With sourceShare 0 (the default), e(a) = 1 / |R| on R: the
 * ranker's pool only. This is the marginal probability a position-based click
 * model needs: an off-policy estimate that weighs each logged (slot, item) by
 * 1 / p(a, j) is unbiased for any slate drawn from the arms' union
 * (src/eval/offpolicy.ts). Everything here is a function of the request's
 * candidates, so the propensity of what a reply shows is computed, never sampled.
 */
import { CANDIDATE_SOURCES, type CandidateSource } from "./sources.js";

/** Exploration of the recommend replies (engine options `explorationShare`, `explorationPool`, `explorationSourceShare`). */
export interface ExplorationOptions {
  /** Share of replies that explore, in [0, 1). 0 = off (the default): every reply is the greedy slate, propensity 1. */
  share: number;
  /** Size of each arm's pool: the ranker's (or a source's) first `pool` candidates (at least k are used). Default 20. */
  pool: number;
  /** Share of the exploring replies drawn from one candidate source's arm instead of the ranker's, in [0, 1]. Default 0 (the ranker's pool only). */
  sourceShare: number;
}

export const EXPLORATION_DEFAULTS: ExplorationOptions = Object.freeze({ share: 0, pool: 20, sourceShare: 0 });

/** p(a, j) of an item at index `index` of the ranker's order whose per-slot probability in an exploring reply is `explore` (see the file comment). */
export function propensityOf(share: number, explore: number, index: number, slot: number): number {
  return (1 - share) * (index === slot ? 1 : 0) + share * explore;
}

/** p(a, j) with the ranker's pool only (sourceShare 0): e(a) = 1 / poolSize on the pool, 0 outside it. */
export function slotPropensity(share: number, poolSize: number, index: number, slot: number): number {
  if (index >= poolSize) return 0;
  return propensityOf(share, 1 / poolSize, index, slot);
}

/** What exploration reads of a candidate: the sources that found it and their normalised scores. */
export interface ExplorableCandidate {
  sources: readonly CandidateSource[];
  scores: Partial<Record<CandidateSource, number>>;
}

/** The arms of one request (see the file comment); indexes are into the ranker's order. */
export interface ExplorationPlan {
  /** Items shown: min(k, candidates). */
  shown: number;
  /** The ranker's pool R: indexes 0..poolSize-1. */
  poolSize: number;
  /** Each arm's pool (the ranker's first) and its probability given that the reply explores. */
  arms: Array<{ source: CandidateSource | "ranker"; items: number[]; weight: number }>;
  /** e(a) of every index in an arm (absent: 0). */
  explore: Map<number, number>;
}

/** The arms of a request whose candidates are `ranked` in the ranker's order. */
export function explorationPlan(ranked: readonly ExplorableCandidate[], k: number, o: ExplorationOptions): ExplorationPlan {
  const n = ranked.length;
  const shown = Math.min(k, n);
  const poolSize = Math.min(n, Math.max(shown, o.pool));
  const arms: ExplorationPlan["arms"] = [{ source: "ranker", items: Array.from({ length: poolSize }, (_, i) => i), weight: 1 }];
  if (o.sourceShare > 0 && shown > 0) {
    const sourceArms: ExplorationPlan["arms"] = [];
    for (const s of CANDIDATE_SOURCES) {
      const found: number[] = [];
      ranked.forEach((c, i) => {
        if (c.sources.includes(s)) found.push(i);
      });
      if (found.length < shown) continue;
      // Stable sort: equal scores stay in the ranker's order.
      found.sort((a, b) => (ranked[b]!.scores[s] ?? 0) - (ranked[a]!.scores[s] ?? 0));
      sourceArms.push({ source: s, items: found.slice(0, Math.max(shown, o.pool)), weight: o.sourceShare });
    }
    if (sourceArms.length > 0) {
      arms[0]!.weight = 1 - o.sourceShare;
      for (const a of sourceArms) a.weight /= sourceArms.length;
      arms.push(...sourceArms);
    }
  }
  const explore = new Map<number, number>();
  for (const a of arms) for (const i of a.items) explore.set(i, (explore.get(i) ?? 0) + a.weight / a.items.length);
  return { shown, poolSize, arms, explore };
}

export interface Slate {
  /** Indexes into the ranker's order, one per slot. */
  order: number[];
  /** p(item, slot) of each shown item (propensityOf). */
  propensities: number[];
  explored: boolean;
  /** The arm an exploring reply drew from ("ranker" for a greedy reply). */
  arm: CandidateSource | "ranker";
  /** The ranker's pool size |R| (0 when there are no candidates). */
  poolSize: number;
}

/**
 * Draws the slate of one reply from a plan (explorationPlan). `random`
 * returns uniform numbers in [0, 1) (Math.random in the engine; seeded in tests).
 */
export function drawPlannedSlate(plan: ExplorationPlan, o: ExplorationOptions, random: () => number = Math.random): Slate {
  const { shown, poolSize } = plan;
  if (shown === 0) return { order: [], propensities: [], explored: false, arm: "ranker", poolSize: 0 };
  const greedy = Array.from({ length: shown }, (_, i) => i);
  if (o.share <= 0) return { order: greedy, propensities: greedy.map(() => 1), explored: false, arm: "ranker", poolSize };
  const explored = random() < o.share;
  let order = greedy;
  let arm: Slate["arm"] = "ranker";
  if (explored) {
    let chosen = plan.arms[0]!;
    if (plan.arms.length > 1) {
      let x = random();
      for (const a of plan.arms) {
        chosen = a;
        if ((x -= a.weight) < 0) break;
      }
    }
    arm = chosen.source;
    // A partial Fisher-Yates shuffle: the first `shown` places of a uniform random arrangement of the arm.
    const idx = [...chosen.items];
    for (let j = 0; j < shown; j++) {
      const r = j + Math.floor(random() * (idx.length - j));
      [idx[j], idx[r]] = [idx[r]!, idx[j]!];
    }
    order = idx.slice(0, shown);
  }
  return { order, propensities: order.map((i, j) => propensityOf(o.share, plan.explore.get(i) ?? 0, i, j)), explored, arm, poolSize };
}

/** The slate of one reply from `n` candidates in the ranker's order, exploring the ranker's pool only (sourceShare ignored). */
export function drawSlate(n: number, k: number, o: Omit<ExplorationOptions, "sourceShare"> & { sourceShare?: number }, random: () => number = Math.random): Slate {
  const none: ExplorableCandidate = { sources: [], scores: {} };
  const opts = { ...o, sourceShare: 0 };
  return drawPlannedSlate(explorationPlan(Array.from({ length: n }, () => none), k, opts), opts, random);
}

/** What a logged reply says of the items its policy could show (a ServedRecord, src/recs/feedback-log.ts). */
export interface LoggedArms {
  share: number;
  pool: ReadonlyArray<{ itemId: string; explore?: number }>;
  extra?: ReadonlyArray<{ itemId: string; explore?: number }>;
}

/**
 * Each item a logged reply could show, by id: its index in the ranker's order
 * (the extras after the pool) and e(a), so that its propensity in slot j is
 * propensityOf(share, explore, index, j). A record without e(a) explored the
 * ranker's pool only: 1 / pool size.
 */
export function loggedArms(r: LoggedArms): Map<string, { index: number; explore: number }> {
  const out = new Map<string, { index: number; explore: number }>();
  const M = r.pool.length;
  r.pool.forEach((p, i) => out.set(p.itemId, { index: i, explore: p.explore ?? 1 / M }));
  r.extra?.forEach((p, i) => out.set(p.itemId, { index: M + i, explore: p.explore ?? 0 }));
  return out;
}
