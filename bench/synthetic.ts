/**
 * A seeded, deterministic stream of synthetic events for load: users drawn
 * from a Zipf-like distribution (a few heavy users, a long tail), items and
 * categories likewise, and the Taobao timeslice's behaviour mix
 * (pv 89.2 %, cart 5.5 %, fav 3.1 %, buy 2.3 %; ../shared/DATA.md).
 * The calibrated generator with sessions and drift is bench issue work; this
 * one gives the ingest benchmark realistic message sizes and key skew.
 */
import { EventType, type IEvent } from "../src/wire/proto.js";
import { seededRandom } from "../src/models/seeded-random.js";


/** Zipf-like rank in [0, n) with exponent ~1, by inverse transform of a log-uniform draw. */
function zipf(r: number, n: number): number {
  return Math.min(n - 1, Math.floor(Math.exp(r * Math.log(n + 1)) - 1));
}

export interface SyntheticOptions {
  users: number;
  items?: number;
  categories?: number;
  seed?: number;
  startMs?: number;
  /** Mean gap between consecutive events of the whole stream, ms. */
  gapMs?: number;
}

export function* syntheticEvents(count: number, o: SyntheticOptions): Generator<IEvent> {
  const rnd = seededRandom(o.seed ?? 42);
  const items = o.items ?? 100_000;
  const categories = o.categories ?? 4_000;
  let t = o.startMs ?? Date.UTC(2024, 0, 1);
  const gap = o.gapMs ?? 1;
  for (let i = 0; i < count; i++) {
    const u = zipf(rnd(), o.users);
    const item = zipf(rnd(), items);
    const x = rnd();
    const type = x < 0.892 ? EventType.VIEW : x < 0.947 ? EventType.ADD_TO_CART : x < 0.978 ? EventType.FAVORITE : EventType.PURCHASE;
    t += gap;
    yield {
      eventId: `s${o.seed ?? 42}-${i}`,
      userId: `u${u}`,
      type,
      timestampMs: t,
      itemId: `i${item}`,
      categoryId: `c${item % categories}`,
      price: type === EventType.PURCHASE || type === EventType.ADD_TO_CART ? 1 + (item % 500) : 0,
      quantity: type === EventType.PURCHASE ? 1 : 0,
    };
  }
}
