/**
 * Churn examples from an event stream: profiles are built with the engine's
 * own `applyEvent` from the events strictly before each cut-off, and the label
 * of a customer at cut-off c is 1 when they make no purchase in
 * [c, c + horizon). Only customers with a purchase before c are examples.
 */
import type { UserState } from "../actors/user-profile.js";
import { readDataset, resolveDataFile } from "../data/datasets.js";
import type { DatasetEvent } from "../data/types.js";
import { BadRequestError } from "../errors.js";
import { churnFeatures } from "../models/churn-model.js";
import { anyIn, purchaseTimes, replayToCutoffs, type UserEvent } from "./cutoff-replay.js";

export const MS_PER_DAY = 86_400_000;

/** The churn split: every time is ms since the epoch (UTC). */
export interface ChurnSplit {
  /** Label window length, ms. Default 90 days. */
  horizonMs: number;
  /** Training cut-offs, ascending; the last one is the validation cut-off used for model choice. */
  trainCutoffsMs: number[];
  /** Test cut-off; every training label window must end on or before it. */
  testCutoffMs: number;
}

/**
 * The default split of UCI Online Retail (data 2010-12-01 -> 2011-12-09):
 * test at 2011-09-10 00:00 UTC (its 90-day window ends 2011-12-09 00:00,
 * within the data); training cut-offs every 14 days from 2011-01-09 to
 * 2011-06-12, whose last label window, [06-12, 09-10), ends exactly at the
 * test cut-off. Validation is 2011-06-12, fitted on the cut-offs up to
 * 2011-03-06 (windows ending by 06-12).
 */
export const DEFAULT_CHURN_SPLIT: Readonly<ChurnSplit> = Object.freeze({
  horizonMs: 90 * MS_PER_DAY,
  trainCutoffsMs: Object.freeze(Array.from({ length: 12 }, (_, i) => Date.UTC(2011, 5, 12) - (11 - i) * 14 * MS_PER_DAY)) as number[],
  testCutoffMs: Date.UTC(2011, 8, 10),
});

/**
 * A split for any log long enough: the test cut-off a horizon before the last
 * event, and up to 12 training cut-offs every 14 days whose label windows end by
 * it (the first at least 30 days after the first event).
 */
export function deriveChurnSplit(firstMs: number, lastMs: number, horizonMs = 90 * MS_PER_DAY): ChurnSplit {
  const testCutoffMs = Math.floor((lastMs - horizonMs) / MS_PER_DAY) * MS_PER_DAY;
  const lastTrain = testCutoffMs - horizonMs;
  const trainCutoffsMs: number[] = [];
  for (let i = 11; i >= 0; i--) {
    const c = lastTrain - i * 14 * MS_PER_DAY;
    if (c >= firstMs + 30 * MS_PER_DAY) trainCutoffsMs.push(c);
  }
  if (trainCutoffsMs.length < 2) {
    throw new BadRequestError(`the events span ${new Date(firstMs).toISOString()} .. ${new Date(lastMs).toISOString()}: ` +
      `a churn split with a ${horizonMs / MS_PER_DAY}-day horizon needs at least 30 days + two horizons + 14 days of events`);
  }
  return { horizonMs, trainCutoffsMs, testCutoffMs };
}

export type { UserEvent };

export function toUserEvent(e: DatasetEvent): UserEvent {
  return {
    userId: e.userId,
    type: e.type,
    timestampMs: e.timestampMs,
    itemId: e.itemId ?? "",
    categoryId: e.categoryId ?? "",
    brand: e.brand ?? "",
    price: e.price ?? 0,
    quantity: e.quantity ?? 0,
    currency: e.currency ?? "",
    sessionId: e.sessionId ?? "",
    orderId: e.orderId ?? "",
  };
}

/**
 * Reads an Online Retail file (default: the data directory's default file)
 * and returns its events sorted by time (stable: file order within one time).
 */
export async function loadRetailEvents(
  dataDir: string, file?: string, limit?: number, onProgress?: (done: number, total: number, note: string) => void,
): Promise<{ path: string; events: UserEvent[] }> {
  const path = resolveDataFile(dataDir, "online-retail", file);
  const events: UserEvent[] = [];
  for await (const e of readDataset("online-retail", path, limit === undefined ? undefined : { limit })) {
    events.push(toUserEvent(e));
    if (events.length % 50_000 === 0) onProgress?.(events.length, 0, "reading events");
  }
  events.sort((a, b) => a.timestampMs - b.timestampMs);
  return { path, events };
}

/** Examples of one cut-off: row i is user `userIds[i]`, features `x[i]`, label `y[i]`. */
export interface ChurnExamples {
  cutoffMs: number;
  userIds: string[];
  x: Float64Array[];
  y: Uint8Array;
  /** The profiles the features came from (same order), for tests and inspection. */
  states: UserState[];
}

/** Keeps the columns `cols` (indices into each row) of `rows`. */
export function selectColumns(rows: readonly ArrayLike<number>[], cols: readonly number[]): Float64Array[] {
  return rows.map((r) => Float64Array.from(cols, (c) => r[c]!));
}

/** Checks a split against the data's time range; throws BadRequestError saying which rule fails. */
export function checkSplit(split: ChurnSplit, dataStartMs: number, dataEndMs: number): void {
  const iso = (t: number) => new Date(t).toISOString();
  if (!(split.horizonMs > 0)) throw new BadRequestError("split.horizonMs must be positive");
  if (split.trainCutoffsMs.length < 2) throw new BadRequestError("split.trainCutoffsMs needs at least two cut-offs (the last one validates)");
  split.trainCutoffsMs.forEach((c, i) => {
    if (i > 0 && c <= split.trainCutoffsMs[i - 1]!) throw new BadRequestError("split.trainCutoffsMs must be ascending");
    if (c <= dataStartMs) throw new BadRequestError(`training cut-off ${iso(c)} is not after the first event (${iso(dataStartMs)})`);
    if (c + split.horizonMs > split.testCutoffMs) {
      throw new BadRequestError(`training cut-off ${iso(c)}: its label window ends after the test cut-off ${iso(split.testCutoffMs)}`);
    }
  });
  if (split.testCutoffMs + split.horizonMs > dataEndMs) {
    throw new BadRequestError(
      `test label window [${iso(split.testCutoffMs)}, ${iso(split.testCutoffMs + split.horizonMs)}) ends after the data (${iso(dataEndMs)})`,
    );
  }
}

/**
 * Builds the examples of every cut-off in one pass over `events` (sorted by
 * time). Features see only events with timestampMs < cut-off; labels see only
 * purchases in [cut-off, cut-off + horizonMs).
 */
export function buildChurnExamples(events: readonly UserEvent[], cutoffsMs: readonly number[], horizonMs: number): ChurnExamples[] {
  const purchases = purchaseTimes(events);
  const out: ChurnExamples[] = [];
  replayToCutoffs("buildChurnExamples", events, cutoffsMs, (c, states) => {
    const ex: ChurnExamples = { cutoffMs: c, userIds: [], x: [], y: new Uint8Array(0), states: [] };
    const labels: number[] = [];
    for (const [id, s] of [...states].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
      if (s.lastPurchaseMs === 0) continue;
      ex.userIds.push(id);
      ex.x.push(churnFeatures(s, c));
      ex.states.push(structuredClone(s));
      labels.push(anyIn(purchases.get(id), c, c + horizonMs) ? 0 : 1);
    }
    ex.y = Uint8Array.from(labels);
    out.push(ex);
  });
  return out;
}
