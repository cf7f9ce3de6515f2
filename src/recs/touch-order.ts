/**
 * A string-keyed map bounded by an approximate least-recently-touched order,
 * shared by the catalog, co-visitation and trending tables.
 *
 * A JS Map iterates in insertion order, so moving an entry to the end
 * (delete + set) on every touch gives exact LRU, at the price of two hash
 * operations per event. Here an entry moves only when at least capacity / 2
 * entries of its own table were inserted or moved since its last move.
 * Guarantee: an entry touched within the last capacity / 2 touches and
 * inserts of its table is never evicted (when it was touched, fewer than
 * capacity / 2 entries had gone behind it since its last move, and fewer than
 * capacity / 2 more have since, so entries remain ahead of it); among the
 * rest, the one moved longest ago goes first.
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
 * clock, which counts their inserts and moves: their entries' ticks then
 * compare across tables, so the byte bound evicts the entry moved longest ago
 * among the tables' oldest. A table counts its own inserts and moves too, and
 * samples (own count, shared tick) every capacity / 32 of them, so that a
 * touch can bound how many of its own entries went behind the entry since
 * the shared tick of its last move (the latest sample at or before that tick
 * is at most one sample step behind it, so the entry may move up to that
 * many operations early, never late). Deciding on the shared clock alone
 * moved entries far more often than the guarantee needs: on the max-ingest
 * generator's mix (bench/recs-intake.ts), the nine tables together tick 8 to
 * 9 times per event, and 57 % of touches moved their entry (a delete and a
 * set each).
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

/** Samples kept of (own count, shared tick), one per half / 16 own operations: 34 span more than twice the half capacity a move decision looks back. */
const SAMPLES = 34;

export class TouchOrder<V extends Touched> {
  private readonly map = new Map<string, V>();
  private readonly half: number;
  /** This table's inserts and moves. */
  private own = 0;
  /** A sample every `sampleStep` own operations, in a ring: the own count after the operation and its shared tick. */
  private readonly sampleStep: number;
  private readonly sampleOwn = new Float64Array(SAMPLES);
  private readonly sampleTick = new Float64Array(SAMPLES).fill(Number.POSITIVE_INFINITY);
  /** Samples taken (the newest is at (taken - 1) % SAMPLES). */
  private taken = 0;
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
    this.sampleStep = Math.max(1, Math.floor(this.half / 16));
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
    // The shared clock runs at least as fast as this table's own count: below half on it, no sample is needed.
    const t = value[TICK];
    if (this.clock.tick - t < this.half || this.own - this.ownAtOrBefore(t) < this.half) return;
    this.map.delete(key);
    this.map.set(key, value);
    value[TICK] = this.placed();
  }

  /** Adds a new entry (the key must not be present), evicting beyond capacity. */
  insert(key: string, value: V): void {
    value[TICK] = this.placed();
    this.map.set(key, value);
    while (this.map.size > this.capacity) if (!this.evictOldest()) break;
  }

  /** Counts an insert or move on both clocks, sampling them now and then; returns its shared tick. */
  private placed(): number {
    const tick = this.clock.tick++;
    if (++this.own % this.sampleStep === 0) {
      const i = this.taken++ % SAMPLES;
      this.sampleOwn[i] = this.own;
      this.sampleTick[i] = tick;
    }
    return tick;
  }

  /**
   * The own count of the latest sample taken at or before shared tick `t` (at most the own count of the operation
   * that had tick t); -Infinity when every sample kept is later (then the entry is older than the samples reach).
   */
  private ownAtOrBefore(t: number): number {
    const n = Math.min(this.taken, SAMPLES);
    // Ring positions 0 .. n-1 from the oldest kept; ticks increase along them. Binary search for the last <= t.
    const first = this.taken - n;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sampleTick[(first + mid) % SAMPLES]! <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? (first === 0 ? 0 : Number.NEGATIVE_INFINITY) : this.sampleOwn[(first + lo - 1) % SAMPLES]!;
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
