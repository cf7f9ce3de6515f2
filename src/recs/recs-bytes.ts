/**
 * The recs worker's memory bound (recs option maxStateBytes): a running
 * estimate of each table's heap bytes, kept by the tables themselves as they
 * change (a few additions per event, no walk), and the clock their
 * TouchOrders share so that their entries' ages compare across tables.
 *
 * The estimate counts, per entry, its Map slot, its object, its key string
 * and its variable parts (strings, list slots): see the constants below,
 * sized from V8's layouts (x64, pointer compression off) and checked against
 * the heap after GC by `npm run bench:recs-memory` (bench/RESULTS.md). The
 * tables are keyed by interned slots (src/recs/interner.ts), not Maps of
 * their own: an entry's "Map slot" and key string now stand for its share of
 * the interner's Map entry and string and its table's slot arrays (value,
 * two links and a tick; the session store's ring of recent item slots, 4 B
 * per user slot and rule step). It does not count what is shared (an item id
 * held by several tables is counted in each: the estimate errs high there)
 * nor the shells of dropped sessions still named by an index list or a
 * user's earlier sessions (their items are cleared; since 2026-12-08 the
 * lists drop them once they are half of a list, so they stay below the live
 * entries, src/recs/session-store.ts). Lists created holding their first entry (sessions,
 * index lists, rules, co-visitation links) are counted at the size a push
 * from empty gives them (17 slots): the estimate errs high there too.
 * Co-visitation and the sequential rules are columnar since 2026-12-07 (a
 * pooled block per item, no object or lists per item; covisitation.ts,
 * sequential-rules.ts) and still counted as the object layout they replaced,
 * so that the byte bound evicts exactly as before: for them the estimate errs
 * high (recs-intake at the caps: 444.6 MiB estimated for 331 MiB of heap and
 * array buffers, 418 MiB before).
 */
import type { TouchClock } from "./touch-order.js";

/** The tables, in the order of `RecsBytes.bytes` (the metric's `table` label). */
export const RECS_TABLES = [
  "catalog", "covisitation", "covisitation_users", "trending", "trending_categories",
  "sessions", "session_users", "session_index", "rules",
] as const;
export type RecsTable = (typeof RECS_TABLES)[number];
export const TABLE = Object.freeze(Object.fromEntries(RECS_TABLES.map((t, i) => [t, i])) as Record<RecsTable, number>);

/** A Map slot: key, value and chain words plus a share of the buckets, at V8's load factors. */
export const MAP_ENTRY_BYTES = 40;
/** An object header with `fields` fields (in-object properties). */
export function objectBytes(fields: number): number {
  return 24 + 8 * fields;
}
/**
 * An array of n pointers or doubles grown by push: its header, and its backing store at the capacity V8 grows it
 * to (from 0: 16, then c + c / 2 + 16), which dominates short lists (one element takes 17 slots).
 */
export function arrayBytes(n: number): number {
  if (n <= 0) return 32;
  return n < ARRAY_BYTES.length ? ARRAY_BYTES[n]! : 48 + 8 * Math.ceil(n * 1.25);
}
/** The growth from n - 1 to n elements (what a push adds). */
export function pushBytes(n: number): number {
  return arrayBytes(n) - arrayBytes(n - 1);
}
const ARRAY_BYTES = new Float64Array(4096);
for (let n = 1, cap = 16; n < ARRAY_BYTES.length; n++) {
  while (cap < n) cap += (cap >> 1) + 16;
  ARRAY_BYTES[n] = 48 + 8 * cap;
}
/** A sequential one-byte string (V8 header 16 bytes, length rounded to 8); "" is shared. */
export function stringBytes(s: string): number {
  return s.length === 0 ? 0 : 16 + ((s.length + 7) & ~7);
}

export class RecsBytes implements TouchClock {
  /** The shared TouchOrder clock. */
  tick = 0;
  /** Estimated bytes per table, indexed as RECS_TABLES. */
  readonly bytes = new Float64Array(RECS_TABLES.length);
  total = 0;
  /** Entries evicted by the byte bound (shrinkTo). */
  evictions = 0;

  add(table: number, n: number): void {
    this.bytes[table]! += n;
    this.total += n;
  }

  byTable(): Record<RecsTable, number> {
    return Object.fromEntries(RECS_TABLES.map((t, i) => [t, Math.round(this.bytes[i]!)])) as Record<RecsTable, number>;
  }
}

/** What the byte bound evicts from: a table's oldest entry and its tick on the shared clock. */
export interface Evictable {
  /** Tick of the entry that goes next (Infinity when the table is empty). */
  oldestTick(): number;
  /** Evicts it (the table subtracts its bytes); false when empty. */
  evictOldest(): boolean;
}

/**
 * Evicts, while `acct.total` exceeds `max`, the entry with the lowest tick
 * among the tables' oldest, down to `low` (hysteresis: evictions come in
 * runs, not one per event). Returns the entries evicted.
 */
export function shrinkTo(acct: RecsBytes, tables: readonly Evictable[], max: number, low: number): number {
  if (acct.total <= max) return 0;
  let n = 0;
  while (acct.total > low) {
    let best: Evictable | undefined;
    let bestTick = Number.POSITIVE_INFINITY;
    for (const t of tables) {
      const k = t.oldestTick();
      if (k < bestTick) {
        bestTick = k;
        best = t;
      }
    }
    if (best === undefined || !best.evictOldest()) break;
    n++;
  }
  acct.evictions += n;
  return n;
}
