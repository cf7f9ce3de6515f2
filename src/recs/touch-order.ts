/**
 * A table keyed by interned ids (slots of an Interner, src/recs/interner.ts),
 * bounded by an approximate least-recently-touched order, shared by the
 * catalog, co-visitation, trending, session and rule tables.
 *
 * The order is a doubly linked list through the slots (two Int32Arrays), the
 * values an array indexed by slot and each entry's clock value (the tick of its
 * last move) a Float64Array by slot, so values carry no field of the order's: a
 * lookup is an array read, a move to the
 * back relinks two neighbours, the oldest entry is the list's head. (It was a
 * string-keyed Map in insertion order, moved by a delete and a set and read
 * through a long-lived iterator: the same order, at several string hash
 * operations per event and table; bench/RESULTS.md.) Moving an entry on every
 * touch would give exact LRU; here an entry moves only when at least
 * capacity / 2 entries of its own table were inserted or moved since its last move.
 * Guarantee: an entry touched within the last capacity / 2 touches and
 * inserts of its table is never evicted (when it was touched, fewer than
 * capacity / 2 entries had gone behind it since its last move, and fewer than
 * capacity / 2 more have since, so entries remain ahead of it); among the
 * rest, the one moved longest ago goes first.
 *
 * The table retains a slot in its Interner while it holds an entry for it and
 * releases it when the entry leaves, so the interner is bounded with the tables.
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
import { Interner } from "./interner.js";

/** A copy of `a` lengthened to `n` (zeros after), for columns indexed by slot. */
export function lengthened<A extends Int32Array | Float64Array>(a: A, n: number): A {
  const b = new (a.constructor as new (n: number) => A)(n);
  b.set(a);
  return b;
}

/** The clock of a TouchOrder, shared by the tables under one memory bound. */
export interface TouchClock {
  tick: number;
}

/** Samples kept of (own count, shared tick), one per half / 16 own operations: 34 span more than twice the half capacity a move decision looks back. */
const SAMPLES = 34;

export class TouchOrder<V> {
  /** Values by slot (undefined where this table holds none). */
  private vals: (V | undefined)[] = [];
  /** Clock value of each held slot's last move to the back. */
  private ticks = new Float64Array(0);
  /** The order, oldest first: each held slot's neighbours (-1 at the ends). */
  private prev = new Int32Array(0);
  private next = new Int32Array(0);
  private head = -1;
  private tail = -1;
  private count = 0;
  private readonly half: number;
  /** This table's inserts and moves. */
  private own = 0;
  /** A sample every `sampleStep` own operations, in a ring: the own count after the operation and its shared tick. */
  private readonly sampleStep: number;
  private readonly sampleOwn = new Float64Array(SAMPLES);
  private readonly sampleTick = new Float64Array(SAMPLES).fill(Number.POSITIVE_INFINITY);
  /** Samples taken (the newest is at (taken - 1) % SAMPLES). */
  private taken = 0;

  /**
   * `onEvict` runs for each entry pushed out by `insert` or `evictOldest`, with its id and slot (released after).
   * `ids`: the interner whose slots key the table, shared by the tables keyed by the same ids.
   */
  constructor(
    readonly capacity: number,
    private readonly onEvict?: (key: string, value: V, slot: number) => void,
    private readonly clock: TouchClock = { tick: 0 },
    readonly ids: Interner = new Interner(),
  ) {
    this.half = Math.max(1, Math.floor(capacity / 2));
    this.sampleStep = Math.max(1, Math.floor(this.half / 16));
  }

  get size(): number {
    return this.count;
  }

  /** Looks up by slot (-1, from `ids.find` of an unknown id, finds nothing), without touching. */
  get(slot: number): V | undefined {
    return slot >= 0 && slot < this.vals.length ? this.vals[slot] : undefined;
  }

  /** Marks the entry at `slot` (held here) as just used. */
  touch(slot: number): void {
    // The shared clock runs at least as fast as this table's own count: below half on it, no sample is needed.
    const t = this.ticks[slot]!;
    if (this.clock.tick - t < this.half || this.own - this.ownAtOrBefore(t) < this.half) return;
    this.unlink(slot);
    this.append(slot);
    this.ticks[slot] = this.placed();
  }

  /** The clock value of the last move of the entry at `slot` (held here). */
  tickOf(slot: number): number {
    return this.ticks[slot]!;
  }

  /** Replaces the value of the entry at `slot` (held here), leaving its place in the order. */
  set(slot: number, value: V): void {
    this.vals[slot] = value;
  }

  /** Adds a new entry (the slot must not be held here), evicting beyond capacity. */
  insert(slot: number, value: V): void {
    if (slot >= this.vals.length) this.grow(slot);
    this.ticks[slot] = this.placed();
    this.vals[slot] = value;
    this.ids.retain(slot);
    this.append(slot);
    this.count++;
    while (this.count > this.capacity) if (!this.evictOldest()) break;
  }

  /** Sizes the slot arrays past `slot` (to the interner's capacity, doubling at least). */
  private grow(slot: number): void {
    const n = Math.max(slot + 1, this.ids.capacity, 2 * this.vals.length, 64);
    const vals = this.vals;
    // Pushed, not assigned past the end: a holey write would turn the array into a dictionary.
    while (vals.length < n) vals.push(undefined);
    this.prev = lengthened(this.prev, n);
    this.next = lengthened(this.next, n);
    this.ticks = lengthened(this.ticks, n);
  }

  private append(slot: number): void {
    this.prev[slot] = this.tail;
    this.next[slot] = -1;
    if (this.tail >= 0) this.next[this.tail] = slot;
    else this.head = slot;
    this.tail = slot;
  }

  private unlink(slot: number): void {
    const p = this.prev[slot]!;
    const n = this.next[slot]!;
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
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
    return this.head < 0 ? Number.POSITIVE_INFINITY : this.ticks[this.head]!;
  }

  /** Evicts the entry moved longest ago (onEvict runs, then its slot is released); false when empty. */
  evictOldest(): boolean {
    const slot = this.head;
    if (slot < 0) return false;
    const v = this.take(slot);
    this.onEvict?.(this.ids.name(slot), v, slot);
    this.ids.release(slot);
    return true;
  }

  /** Unlinks and clears a held slot, returning its value (the slot is still retained). */
  private take(slot: number): V {
    const v = this.vals[slot]!;
    this.unlink(slot);
    this.vals[slot] = undefined;
    this.count--;
    return v;
  }

  /** Removes the entry at `slot` (no onEvict); false when the table holds none there. */
  delete(slot: number): boolean {
    if (this.get(slot) === undefined) return false;
    this.take(slot);
    this.ids.release(slot);
    return true;
  }

  /** The values, oldest first (do not change the table while iterating). */
  *values(): IterableIterator<V> {
    for (let s = this.head; s >= 0; s = this.next[s]!) yield this.vals[s]!;
  }

  /** The ids and values, oldest first (do not change the table while iterating). */
  *entries(): IterableIterator<[string, V]> {
    for (let s = this.head; s >= 0; s = this.next[s]!) yield [this.ids.name(s), this.vals[s]!];
  }
}
