/**
 * A string-keyed map bounded by an approximate least-recently-touched order,
 * shared by the catalog, co-visitation and trending tables.
 *
 * A JS Map iterates in insertion order, so moving an entry to the end
 * (delete + set) on every touch gives exact LRU, at the price of two hash
 * operations per event. Here an entry moves only when its last move is at
 * least capacity / 2 touches old. Guarantee: an entry touched within the last
 * capacity / 2 touches is never evicted (at most capacity - 1 entries were
 * inserted or moved behind it since its last move, so entries remain ahead of
 * it); among the rest, the one moved longest ago goes first.
 *
 * Eviction reads the oldest entry through one long-lived iterator: a new
 * `map.entries().next()` would walk over every deleted slot at the front of
 * V8's table (up to a quarter of its capacity until the next rehash),
 * measured at 17 µs per eviction for 200,000 entries against 1.3 µs for a
 * delete and a set. Every entry before the iterator's position has been
 * evicted or moved behind it (inserts and moves go to the end), so what it
 * returns next is the oldest entry.
 *
 * Tables that share one memory bound (src/recs/recs-bytes.ts) share one
 * clock: their entries' ticks then compare across tables, so the byte bound
 * evicts the entry moved longest ago among the tables' oldest. The guarantee
 * above still holds per table (a shared clock runs at least as fast as the
 * table's own touches, so entries only move more often).
 */
/** Key of the clock field TouchOrder keeps in its values (a symbol, so it stays out of JSON and object spreads of catalog items). */
export const TICK: unique symbol = Symbol("touch-order tick");

export interface Touched {
  /** Clock value of the entry's last move to the back. Owned by TouchOrder. */
  [TICK]: number;
}

/** The clock of a TouchOrder, shared by the tables under one memory bound. */
export interface TouchClock {
  tick: number;
}

export class TouchOrder<V extends Touched> {
  private readonly map = new Map<string, V>();
  private readonly half: number;
  private cursor: IterableIterator<[string, V]> | undefined;
  /** The oldest entry read ahead by `oldestTick`, with its tick then (stale once the entry moved or left). */
  private peeked: [string, V, number] | undefined;

  /** `onEvict` runs for each entry pushed out by `insert` or `evictOldest`. */
  constructor(
    readonly capacity: number,
    private readonly onEvict?: (key: string, value: V) => void,
    private readonly clock: TouchClock = { tick: 0 },
  ) {
    this.half = Math.max(1, Math.floor(capacity / 2));
  }

  get size(): number {
    return this.map.size;
  }

  /** Looks up without touching. */
  get(key: string): V | undefined {
    return this.map.get(key);
  }

  /** Marks `value` (stored under `key`) as just used. */
  touch(key: string, value: V): void {
    const c = this.clock;
    if (c.tick - value[TICK] >= this.half) {
      this.map.delete(key);
      this.map.set(key, value);
      value[TICK] = c.tick;
    }
    c.tick++;
  }

  /** Adds a new entry (the key must not be present), evicting beyond capacity. */
  insert(key: string, value: V): void {
    value[TICK] = this.clock.tick++;
    this.map.set(key, value);
    while (this.map.size > this.capacity) if (!this.evictOldest()) break;
  }

  /** The tick of the entry moved longest ago (Infinity when empty), without evicting it. */
  oldestTick(): number {
    const p = this.peek();
    return p === undefined ? Number.POSITIVE_INFINITY : p[2];
  }

  /** Evicts the entry moved longest ago (onEvict runs); false when empty. */
  evictOldest(): boolean {
    const p = this.peek();
    if (p === undefined) return false;
    this.peeked = undefined;
    this.map.delete(p[0]);
    this.onEvict?.(p[0], p[1]);
    return true;
  }

  /**
   * The first entry in map order, read through the long-lived cursor (a finished iterator stays finished: then a
   * new one) and kept until it is evicted; an entry read ahead that moved since (to the back, where the cursor
   * meets it again) or left is skipped.
   */
  private peek(): [string, V, number] | undefined {
    const p = this.peeked;
    if (p !== undefined && this.map.get(p[0]) === p[1] && p[1][TICK] === p[2]) return p;
    this.peeked = undefined;
    for (let pass = 0; pass < 2; pass++) {
      this.cursor ??= this.map.entries();
      const r = this.cursor.next();
      if (!r.done) return (this.peeked = [r.value[0], r.value[1], r.value[1][TICK]]);
      this.cursor = undefined;
    }
    return undefined;
  }

  delete(key: string): boolean {
    return this.map.delete(key);
  }

  values(): IterableIterator<V> {
    return this.map.values();
  }

  entries(): IterableIterator<[string, V]> {
    return this.map.entries();
  }
}
