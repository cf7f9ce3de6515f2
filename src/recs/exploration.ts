/**
 * Exploration and propensities (README "The feedback loop").
 *
 * The policy: with probability `share` a reply explores, else it is the
 * ranker's top k (the greedy slate). An exploring reply is a uniformly random
 * ordered draw of k items from the exploration pool, the ranker's first
 * `pool` candidates (at least k). So the probability that item a is in slot j
 * (0-based) of a reply is, over the pool of M items with greedy order g:
 *
 *     p(a, j) = (1 - share) * [a = g_j] + share / M
 *
 * (a uniform random arrangement puts each pool item in a given slot with
 * probability 1 / M), and 0 for a candidate outside the pool. For each slot
 * these sum to 1 over the pool. This is the marginal probability of a
 * position-based click model: an off-policy estimate that weighs each logged
 * (slot, item) by 1 / p(a, j) is unbiased for any slate drawn from the same
 * pool (src/eval/offpolicy.ts).
 */

/** Exploration of the recommend replies (engine option `exploration`). */
export interface ExplorationOptions {
  /** Share of replies that explore, in [0, 1). 0 = off (the default): every reply is the greedy slate, propensity 1. */
  share: number;
  /** Exploration pool: the ranker's first `pool` candidates (at least k are used). Default 20. */
  pool: number;
}

export const EXPLORATION_DEFAULTS: ExplorationOptions = Object.freeze({ share: 0, pool: 20 });

/** The probability that `item` (its index in the greedy order) is in `slot`, for a pool of `poolSize` (see the file comment). */
export function slotPropensity(share: number, poolSize: number, index: number, slot: number): number {
  if (index >= poolSize) return 0;
  return (1 - share) * (index === slot ? 1 : 0) + share / poolSize;
}

export interface Slate {
  /** Indexes into the greedy order, one per slot. */
  order: number[];
  /** p(item, slot) of each shown item (slotPropensity). */
  propensities: number[];
  explored: boolean;
  /** The pool size M the propensities use (0 when there are no candidates). */
  poolSize: number;
}

/**
 * Draws the slate of one reply from `n` candidates in greedy order. `random`
 * returns uniform numbers in [0, 1) (Math.random in the engine; seeded in tests).
 */
export function drawSlate(n: number, k: number, o: ExplorationOptions, random: () => number = Math.random): Slate {
  const shown = Math.min(k, n);
  if (shown === 0) return { order: [], propensities: [], explored: false, poolSize: 0 };
  if (o.share <= 0) {
    const order = Array.from({ length: shown }, (_, i) => i);
    return { order, propensities: order.map(() => 1), explored: false, poolSize: Math.min(n, Math.max(shown, o.pool)) };
  }
  const M = Math.min(n, Math.max(shown, o.pool));
  const explored = random() < o.share;
  let order: number[];
  if (explored) {
    // A partial Fisher-Yates shuffle: the first `shown` places of a uniform random arrangement of the pool.
    const idx = Array.from({ length: M }, (_, i) => i);
    for (let j = 0; j < shown; j++) {
      const r = j + Math.floor(random() * (M - j));
      [idx[j], idx[r]] = [idx[r]!, idx[j]!];
    }
    order = idx.slice(0, shown);
  } else {
    order = Array.from({ length: shown }, (_, i) => i);
  }
  return { order, propensities: order.map((i, j) => slotPropensity(o.share, M, i, j)), explored, poolSize: M };
}
