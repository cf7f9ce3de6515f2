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
 */
import type { CompiledSequentialRulesOptions } from "./recs-options.js";
import { arrayBytes, type Evictable, MAP_ENTRY_BYTES, objectBytes, pushBytes, RecsBytes, stringBytes, TABLE } from "./recs-bytes.js";
import { Interner } from "./interner.js";
import { TouchOrder } from "./touch-order.js";
import type { ScoredItem } from "./types.js";

interface Rules {
  next: string[];
  score: number[];
}

/** Estimated heap of an item's rules (its key, `n` successors: pointer and score double). */
const rulesBytes = (key: string, n: number) => MAP_ENTRY_BYTES + objectBytes(3) + stringBytes(key) + 2 * arrayBytes(n);

export class SequentialRules {
  readonly #o: CompiledSequentialRulesOptions;
  readonly #items: TouchOrder<Rules>;
  readonly #acct: RecsBytes;

  /** `acct`: the memory estimate and clock shared with the other recs tables; `itemIds`: the item ids' interner they share. */
  constructor(options: CompiledSequentialRulesOptions, acct = new RecsBytes(), itemIds = new Interner()) {
    this.#o = options;
    this.#acct = acct;
    this.#items = new TouchOrder<Rules>(options.maxItems, (key, r) => acct.add(TABLE.rules, -rulesBytes(key, r.next.length)), acct, itemIds);
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
      this.#add(a, slot >= 0 ? slot : this.#items.ids.slot(a), itemId, 1 / (length - p));
    }
  }

  /** The successors of `itemId`, best first (ties by item id), at most k. */
  successors(itemId: string, k: number): ScoredItem[] {
    const r = this.#items.get(this.#items.ids.find(itemId));
    if (r === undefined || k <= 0) return [];
    const out: ScoredItem[] = r.next.map((id, i) => ({ itemId: id, score: r.score[i]! }));
    out.sort((a, b) => b.score - a.score || (a.itemId < b.itemId ? -1 : a.itemId > b.itemId ? 1 : 0));
    if (out.length > k) out.length = k;
    return out;
  }

  /** Strengthens a -> b by w; `slot`: a's slot in the item interner. */
  #add(a: string, slot: number, b: string, w: number): void {
    let r = this.#items.get(slot);
    if (r === undefined) {
      // Created holding the rule (lists with room for one; by push from empty, 17: most items get one successor).
      r = { next: [b], score: [w] };
      this.#items.insert(slot, r);
      this.#acct.add(TABLE.rules, rulesBytes(a, 0) + 2 * pushBytes(1));
      return;
    }
    this.#items.touch(slot);
    const i = r.next.indexOf(b);
    if (i >= 0) {
      r.score[i]! += w;
      return;
    }
    if (r.next.length < this.#o.maxSuccessors) {
      r.next.push(b);
      r.score.push(w);
      this.#acct.add(TABLE.rules, 2 * pushBytes(r.next.length));
      return;
    }
    let min = 0;
    for (let j = 1; j < r.score.length; j++) if (r.score[j]! < r.score[min]!) min = j;
    if (w > r.score[min]!) {
      r.next[min] = b;
      r.score[min] = w;
    }
  }
}
