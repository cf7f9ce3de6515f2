/**
 * Sequential rules, updated per item event (session-rec's SR, Ludewig &
 * Jannach 2018, made incremental and bounded).
 *
 * Definition: when an item j is added to a session whose items (in order,
 * repeats kept) end with ..., i_3, i_2, i_1, each of the last `steps` items
 * i_d (d = 1 is the newest) gets the rule i_d -> j strengthened by 1 / d.
 * Self-rules (i -> i) count too: in click logs the next click is often the
 * item just clicked. score(i, j) is the sum of those weights; no decay (old
 * rules lose their place only through the successor cap below).
 *
 * Bounds: at most maxSuccessors rules per item; a new successor at a full
 * list replaces the weakest rule only when its own weight is larger (so a
 * burst of one-off pairs cannot flush strong rules), at most maxItems items
 * with rules (least recently touched dropped, see TouchOrder; also by the recs
 * byte bound, src/recs/recs-bytes.ts). Work per
 * event: `steps` scans of at most maxSuccessors rules.
 *
 * Layout: columnar, by item slot, no object or lists per item: each item's
 * rules are a block of a shared pool (successor id in one array of strings,
 * score in a Float64Array), of a capacity class 1, 2, 4, ... up to
 * maxSuccessors; a list that outgrows its block moves to one of the next
 * class, and freed blocks are reused by class. The byte estimate still counts
 * the object layout (an object and two lists per item): it errs high.
 */
import type { CompiledSequentialRulesOptions } from "./recs-options.js";
import { arrayBytes, type Evictable, MAP_ENTRY_BYTES, objectBytes, pushBytes, RecsBytes, stringBytes, TABLE } from "./recs-bytes.js";
import { Interner } from "./interner.js";
import { lengthened, TouchOrder } from "./touch-order.js";
import type { ScoredItem } from "./types.js";

/** Estimated heap of an item's rules (its key, `n` successors: pointer and score double). */
const rulesBytes = (key: string, n: number) => MAP_ENTRY_BYTES + objectBytes(3) + stringBytes(key) + 2 * arrayBytes(n);

export class SequentialRules {
  readonly #o: CompiledSequentialRulesOptions;
  /** The items with rules (the value is unused: the columns below hold the rules). */
  readonly #items: TouchOrder<true>;
  readonly #acct: RecsBytes;
  /** By item slot: its block's offset, rule count and capacity class. */
  #off = new Int32Array(0);
  #len = new Int32Array(0);
  #cls = new Int32Array(0);
  /** The rule pool: successor id and score ("" and 0 where free). */
  readonly #next: string[] = [];
  #score = new Float64Array(0);
  /** Capacity of each class (1, 2, 4, ... maxSuccessors) and its freed blocks' offsets. */
  readonly #caps: number[] = [];
  readonly #free: number[][] = [];

  /** `acct`: the memory estimate and clock shared with the other recs tables; `itemIds`: the item ids' interner they share. */
  constructor(options: CompiledSequentialRulesOptions, acct = new RecsBytes(), itemIds = new Interner()) {
    this.#o = options;
    this.#acct = acct;
    const max = Math.max(1, options.maxSuccessors);
    for (let c = 1; ; c *= 2) {
      this.#caps.push(Math.min(c, max));
      this.#free.push([]);
      if (c >= max) break;
    }
    this.#items = new TouchOrder<true>(options.maxItems, (key, _, slot) => {
      acct.add(TABLE.rules, -rulesBytes(key, this.#len[slot]!));
      this.#release(slot);
    }, acct, itemIds);
  }

  /** The table the recs byte bound evicts from. */
  get evictable(): Evictable {
    return this.#items;
  }

  /** Items with rules. */
  get size(): number {
    return this.#items.size;
  }

  /** Maximum distance d counted (1 / d weights). */
  get steps(): number {
    return this.#o.steps;
  }

  /**
   * Adds the rules of `itemId` following `before[0 .. length)` (oldest first,
   * the newest at length - 1). `slots`: their item slots from `slotsFrom` on, -1 where not known (SessionFollower).
   */
  observe(before: readonly string[], length: number, itemId: string, slots?: Int32Array, slotsFrom = length): void {
    const from = Math.max(0, length - this.#o.steps);
    for (let p = length - 1; p >= from; p--) {
      const a = before[p]!;
      const slot = slots !== undefined && p >= slotsFrom ? slots[p]! : -1;
      this.#add(a, slot >= 0 ? slot : this.#items.ids.slot(a), itemId, length - p);
    }
  }

  /** The successors of `itemId`, best first (ties by item id), at most k. */
  successors(itemId: string, k: number): ScoredItem[] {
    const s = this.#items.ids.find(itemId);
    if (this.#items.get(s) === undefined || k <= 0) return [];
    const o = this.#off[s]!;
    const out: ScoredItem[] = [];
    for (let i = o, end = o + this.#len[s]!; i < end; i++) out.push({ itemId: this.#next[i]!, score: this.#score[i]! });
    out.sort((a, b) => b.score - a.score || (a.itemId < b.itemId ? -1 : a.itemId > b.itemId ? 1 : 0));
    if (out.length > k) out.length = k;
    return out;
  }

  /** Frees the item's block, dropping its successor ids. */
  #release(slot: number): void {
    const o = this.#off[slot]!;
    for (let i = o, end = o + this.#len[slot]!; i < end; i++) this.#next[i] = "";
    this.#free[this.#cls[slot]!]!.push(o);
    this.#len[slot] = 0;
  }

  /** A block of class `c`: a freed one, else a new one at the end of the pool. */
  #block(c: number): number {
    const o = this.#free[c]!.pop();
    if (o !== undefined) return o;
    const next = this.#next;
    const at = next.length;
    const end = at + this.#caps[c]!;
    // Pushed, not assigned past the end: a holey write would turn the array into a dictionary.
    while (next.length < end) next.push("");
    if (end > this.#score.length) this.#score = lengthened(this.#score, Math.max(end, 2 * this.#score.length, 1024));
    return at;
  }

  /** Strengthens a -> b by 1 / d (d, an integer: no boxed double per call); `slot`: a's slot in the item interner. */
  #add(a: string, slot: number, b: string, d: number): void {
    const w = 1 / d;
    if (this.#items.get(slot) === undefined) {
      // Created holding the rule (a block of one).
      if (slot >= this.#off.length) {
        const n = Math.max(slot + 1, this.#items.ids.capacity, 2 * this.#off.length, 64);
        this.#off = lengthened(this.#off, n);
        this.#len = lengthened(this.#len, n);
        this.#cls = lengthened(this.#cls, n);
      }
      const at = this.#block(0);
      this.#next[at] = b;
      this.#score[at] = w;
      this.#off[slot] = at;
      this.#len[slot] = 1;
      this.#cls[slot] = 0;
      this.#items.insert(slot, true);
      this.#acct.add(TABLE.rules, rulesBytes(a, 0) + 2 * pushBytes(1));
      return;
    }
    this.#items.touch(slot);
    const o = this.#off[slot]!;
    const n = this.#len[slot]!;
    const next = this.#next;
    for (let i = o; i < o + n; i++) {
      if (next[i] === b) {
        this.#score[i]! += w;
        return;
      }
    }
    if (n < this.#o.maxSuccessors) {
      let at = o;
      const c = this.#cls[slot]!;
      if (n === this.#caps[c]!) {
        // Full block: the next class's, the rules copied over.
        at = this.#block(c + 1);
        for (let i = 0; i < n; i++) {
          next[at + i] = next[o + i]!;
          next[o + i] = "";
        }
        this.#score.copyWithin(at, o, o + n);
        this.#free[c]!.push(o);
        this.#cls[slot] = c + 1;
        this.#off[slot] = at;
      }
      next[at + n] = b;
      this.#score[at + n] = w;
      this.#len[slot] = n + 1;
      this.#acct.add(TABLE.rules, 2 * pushBytes(n + 1));
      return;
    }
    let min = o;
    for (let j = o + 1; j < o + n; j++) if (this.#score[j]! < this.#score[min]!) min = j;
    if (w > this.#score[min]!) {
      next[min] = b;
      this.#score[min] = w;
    }
  }
}
