/**
 * Purchase-propensity examples from an event log: profiles are built with the
 * engine's own `applyEvent` from the events strictly before each cut-off, and
 * featurised with `propensityFeatures(state, cut-off)`, the function the shard
 * calls at query time. The label of a user at cut-off c is 1 when they make a
 * purchase in [c, c + horizon). Every user with at least one event before c is
 * an example (the population the profile endpoint answers for).
 *
 * The split (`propensitySplit`) is strict in time: the cut-offs of the
 * training block have label windows that end by the first validation cut-off,
 * and the validation block's windows end by the first test cut-off, so no
 * label the model or its calibration learned from lies in the test window.
 */
import { BadRequestError } from "../errors.js";
import { propensityFeatures } from "../models/propensity-model.js";
import { anyIn, purchaseTimes, replayToCutoffs, type UserEvent } from "./cutoff-replay.js";

export interface PropensityExamples {
  cutoffMs: number;
  userIds: string[];
  x: Float64Array[];
  y: Uint8Array;
  /** The side scorer's score of each example, when one was given. */
  side?: number[];
}

/**
 * Another model that keeps its own per-user state over the same events (the
 * LSTM's purchase head, scored as the champion): told every event in the order
 * the profile gets it, asked for a user's score at each cut-off.
 */
export interface SideScorer {
  apply(e: UserEvent): void;
  /** The user's score at this cut-off (NaN where the caller needs none). */
  score(userId: string, cutoffMs: number): number;
}

export interface PropensitySplit {
  horizonMs: number;
  train: number[];
  validation: number[];
  test: number[];
}

/**
 * Cut-offs every `stepMs`, placed by the events' volume (a shop's log is rarely
 * uniform in time): the training block runs from the time of the 10% event
 * quantile to that of the 40% quantile, the validation block from a horizon
 * later to the 55% quantile (at least one step), and the test block from a
 * horizon after that to a horizon before the last event (the later ~40%). `eventTimesMs` is
 * sorted.
 */
export function propensitySplit(eventTimesMs: ArrayLike<number>, horizonMs: number, stepMs: number): PropensitySplit {
  const n = eventTimesMs.length;
  const q = (f: number) => eventTimesMs[Math.min(n - 1, Math.floor(f * n))]!;
  const iso = (t: number) => new Date(t).toISOString();
  const grid = (from: number, to: number) => {
    const out: number[] = [];
    for (let t = Math.ceil(from / stepMs) * stepMs; t <= to; t += stepMs) out.push(t);
    return out;
  };
  const trainEnd = q(0.4);
  const valStart = trainEnd + horizonMs;
  const valEnd = Math.max(q(0.55), valStart + stepMs);
  const split = { horizonMs, train: grid(q(0.1), trainEnd), validation: grid(valStart, valEnd), test: grid(valEnd + horizonMs, eventTimesMs[n - 1]! - horizonMs) };
  if (split.train.length === 0 || split.validation.length === 0 || split.test.length === 0) {
    throw new BadRequestError(`the events span ${iso(eventTimesMs[0]!)} .. ${iso(eventTimesMs[n - 1]!)} (half of them by ${iso(q(0.5))}): ` +
      `too short for a strict split with a ${horizonMs / 60_000}-minute horizon (three horizon-long gaps and cut-offs every ${stepMs / 60_000} minutes); ` +
      `use a shorter --horizon or more data`);
  }
  return split;
}

/**
 * The examples of every cut-off, in one pass over `events` (sorted by time;
 * equal times keep their order). Features see only events with timestampMs <
 * cut-off; labels only purchases in [cut-off, cut-off + horizon).
 * `keepNegative(userId, cutoffMs)` may drop negatives (training subsamples them;
 * validation and test keep all).
 */
export function buildPropensityExamples(
  events: readonly UserEvent[], cutoffsMs: readonly number[], horizonMs: number,
  keepNegative: (userId: string, cutoffMs: number) => boolean = () => true,
  side?: SideScorer,
): PropensityExamples[] {
  const purchases = purchaseTimes(events);
  const out: PropensityExamples[] = [];
  replayToCutoffs("buildPropensityExamples", events, cutoffsMs, (c, states) => {
    const ex: PropensityExamples = { cutoffMs: c, userIds: [], x: [], y: new Uint8Array(0), ...(side !== undefined ? { side: [] } : {}) };
    const labels: number[] = [];
    for (const [id, s] of states) {
      const bought = anyIn(purchases.get(id), c, c + horizonMs) ? 1 : 0;
      if (bought === 0 && !keepNegative(id, c)) continue;
      ex.userIds.push(id);
      ex.x.push(propensityFeatures(s, c));
      labels.push(bought);
      ex.side?.push(side!.score(id, c));
    }
    ex.y = Uint8Array.from(labels);
    out.push(ex);
  }, side === undefined ? undefined : (e) => side.apply(e));
  return out;
}
