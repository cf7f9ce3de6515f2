/**
 * Trending items: decayed popularity, globally and per category.
 *
 * Definition: an item's score at time T is the sum over its events of the
 * event type's weight (RecsOptions.eventWeights) x 2^(-(T - t) / halfLifeMs),
 * t being the event time. Stored lazily at one reference time as in
 * co-visitation (an event adds w x 2^((t - ref) / halfLife); rescaled once per
 * 32 half-lives).
 *
 * Fast top-k: because every stored score decays at the same rate, the order
 * of two items changes only when one of them gets an event, and then its
 * stored score only grows. So a sorted top list stays exact when, on each
 * event, the item moves up by adjacent swaps (or enters by replacing the last
 * entry when it now beats it): the global list (globalListSize) and its
 * category's list (categoryListSize) hold the true top items of the items
 * tracked. (One exception: when an item leaves a list, by a category change
 * or eviction, the freed last slot is filled at the next event of an item
 * that qualifies, not at once.) An event costs two binary searches and
 * O(positions moved) pointer shifts (the entries record no index, so only the
 * list is written); a query copies the first k entries. No sort per request,
 * no periodic recomputation.
 *
 * Bounds: at most maxItems scored items and maxCategories category lists
 * (least recently touched dropped, see TouchOrder; also by the recs byte
 * bound, src/recs/recs-bytes.ts). A dropped item leaves its
 * lists and starts again from 0 if it comes back; a dropped category's list
 * is rebuilt from the events that follow.
 * An item belongs to one category: the last non-empty one it was counted in.
 */
import type { EventType } from "../wire/proto.js";
import type { CompiledTrendingOptions } from "./recs-options.js";
import { DecayClock } from "./decay.js";
import { arrayBytes, type Evictable, MAP_ENTRY_BYTES, objectBytes, pushBytes, RecsBytes, stringBytes, TABLE } from "./recs-bytes.js";
import { Interner } from "./interner.js";
import { TouchOrder } from "./touch-order.js";
import type { ScoredItem } from "./types.js";

interface Node {
  readonly id: string;
  dead: boolean;
  /** Score at the reference time. */
  score: number;
  /** In the global list (at its score: found there by a binary search, see `position`). */
  inGlobal: boolean;
  /** The item's category ("" when none) and its list, and whether the item is in that list. */
  catKey: string;
  cat: CategoryTop | undefined;
  inCategory: boolean;
}

interface CategoryTop {
  readonly key: string;
  /** Its slot in the category interner. */
  readonly slot: number;
  dead: boolean;
  list: Node[];
}

/** The fields of an item event trending reads. */
export interface TrendingEvent {
  itemId: string;
  type: EventType;
  timestampMs: number;
  categoryId?: string;
}

/** Estimated heap of an item node, and of a category with `n` listed items. */
const nodeBytes = (id: string) => MAP_ENTRY_BYTES + objectBytes(9) + stringBytes(id);
const categoryBytes = (key: string, n: number) => MAP_ENTRY_BYTES + objectBytes(4) + stringBytes(key) + arrayBytes(n);

export class Trending {
  private readonly items: TouchOrder<Node>;
  private readonly cats: TouchOrder<CategoryTop>;
  private readonly global: Node[] = [];
  private readonly clock: DecayClock;

  constructor(
    private readonly options: CompiledTrendingOptions,
    /** Weight per EventType number (CompiledRecsOptions.eventWeights). */
    private readonly weights: readonly number[],
    /** The memory estimate and clock shared with the other recs tables. */
    private readonly acct = new RecsBytes(),
    /** The item ids' interner, shared with the other recs tables. */
    itemIds = new Interner(),
  ) {
    this.clock = new DecayClock(options.halfLifeMs);
    this.items = new TouchOrder<Node>(options.maxItems, (_, n) => {
      acct.add(TABLE.trending, -nodeBytes(n.id));
      if (n.inGlobal) this.remove(this.global, n, true);
      if (n.cat !== undefined && !n.cat.dead && n.inCategory) this.remove(n.cat.list, n, false);
      n.dead = true;
      n.cat = undefined;
    }, acct, itemIds);
    this.cats = new TouchOrder<CategoryTop>(options.maxCategories, (_, c) => {
      acct.add(TABLE.trending_categories, -categoryBytes(c.key, c.list.length));
      for (const n of c.list) n.inCategory = false;
      c.list = [];
      c.dead = true;
    }, acct);
  }

  /** The tables the recs byte bound evicts from. */
  get evictables(): readonly Evictable[] {
    return [this.items, this.cats];
  }

  /** Items scored. */
  get size(): number {
    return this.items.size;
  }

  /** Categories with a top list. */
  get categoryCount(): number {
    return this.cats.size;
  }

  /**
   * Counts an event. `categoryId` (default: the event's) is the item's
   * category; when empty, the category the item was last counted in is used. `itemSlot`: the item's slot in the
   * item interner, when the caller has it (observeItemEvent; looked up when not given).
   */
  observe(e: TrendingEvent, categoryId: string = e.categoryId ?? "", itemSlot?: number): void {
    this.observeFields(e.type, e.timestampMs, e.itemId, categoryId, itemSlot);
  }

  /** `observe` with the event's fields as arguments (observeItemEvent: no event object per table). */
  observeFields(type: EventType, t: number, itemId: string, categoryId: string, itemSlot?: number): void {
    const w = this.weights[type] ?? 0;
    if (w <= 0 || !itemId) return;
    const sw = w * this.scale(t);
    const n = this.node(itemId, itemSlot ?? this.items.ids.slot(itemId));
    // The lists find n at the score it is listed at: n.score changes after both moves.
    const score = n.score + sw;
    this.bump(this.global, n, score, this.options.globalListSize, true);
    const key = categoryId || n.catKey;
    if (key !== "") {
      let c = n.cat;
      if (c === undefined || c.dead || c.key !== key) {
        if (c !== undefined && !c.dead && n.inCategory) this.remove(c.list, n, false);
        n.inCategory = false;
        c = this.category(key);
        n.catKey = key;
        n.cat = c;
      } else {
        this.cats.touch(c.slot);
      }
      this.bump(c.list, n, score, this.options.categoryListSize, false);
    }
    n.score = score;
  }

  /** The k most popular items at `nowMs` (k is capped at globalListSize), best first. */
  topGlobal(k: number, nowMs: number): ScoredItem[] {
    return this.top(this.global, k, nowMs);
  }

  /** The k most popular items of a category at `nowMs` (k capped at categoryListSize); [] for an unknown category. */
  topInCategory(categoryId: string, k: number, nowMs: number): ScoredItem[] {
    const c = this.cats.get(this.cats.ids.find(categoryId));
    return c === undefined ? [] : this.top(c.list, k, nowMs);
  }

  /** An item's decayed score at `nowMs` (0 when not tracked). */
  score(itemId: string, nowMs: number): number {
    const n = this.items.get(this.items.ids.find(itemId));
    return n === undefined ? 0 : n.score * this.factor(nowMs);
  }

  private factor(nowMs: number): number {
    return this.clock.factor(nowMs);
  }

  private top(list: readonly Node[], k: number, nowMs: number): ScoredItem[] {
    const f = this.factor(nowMs);
    const m = Math.min(k, list.length);
    const out = new Array<ScoredItem>(Math.max(0, m));
    for (let i = 0; i < m; i++) out[i] = { itemId: list[i]!.id, score: list[i]!.score * f };
    return out;
  }

  private node(id: string, slot: number): Node {
    let n = this.items.get(slot);
    if (n !== undefined) {
      this.items.touch(slot);
      return n;
    }
    n = { id, dead: false, score: 0, inGlobal: false, catKey: "", cat: undefined, inCategory: false };
    this.items.insert(slot, n);
    this.acct.add(TABLE.trending, nodeBytes(id));
    return n;
  }

  private category(key: string): CategoryTop {
    const slot = this.cats.ids.slot(key);
    let c = this.cats.get(slot);
    if (c !== undefined) {
      this.cats.touch(slot);
      return c;
    }
    c = { key, slot, dead: false, list: [] };
    this.cats.insert(slot, c);
    this.acct.add(TABLE.trending_categories, categoryBytes(key, 0));
    return c;
  }

  /** 2^((t - ref) / halfLife) for a weight added at t, renormalising every stored score first when that grows too large. */
  private scale(t: number): number {
    return this.clock.weight(t, this.rescale);
  }

  /** Multiplies every stored score by f (one closure, not one per event). */
  private readonly rescale = (f: number): void => {
    for (const n of this.items.values()) n.score *= f;
  };

  /**
   * Moves `n` up its list to `score` (more than the score it is listed at), entering the list when it now beats the
   * last entry. It goes below the entries scoring at least as much (where adjacent swaps would stop): a binary search
   * finds the place, and the entries between shift down one; no entry records its index, so none is written to.
   */
  private bump(list: Node[], n: Node, score: number, cap: number, global: boolean): void {
    let i: number;
    if (global ? n.inGlobal : n.inCategory) {
      i = position(list, n);
    } else {
      if (list.length < cap) {
        list.push(n);
        if (!global) this.acct.add(TABLE.trending_categories, pushBytes(list.length));
        i = list.length - 1;
      } else {
        const last = list[cap - 1]!;
        if (score <= last.score) return;
        if (global) last.inGlobal = false;
        else last.inCategory = false;
        i = cap - 1;
      }
      if (global) n.inGlobal = true;
      else n.inCategory = true;
    }
    let lo = 0;
    let hi = i;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid]!.score < score) hi = mid;
      else lo = mid + 1;
    }
    for (let k = i; k > lo; k--) list[k] = list[k - 1]!;
    list[lo] = n;
  }

  private remove(list: Node[], n: Node, global: boolean): void {
    list.splice(position(list, n), 1);
    if (global) n.inGlobal = false;
    else n.inCategory = false;
    if (!global) this.acct.add(TABLE.trending_categories, -pushBytes(list.length + 1));
  }
}

/**
 * The index of `n` in `list` (which holds it, at n.score): the list is sorted by score, best first, so a binary
 * search finds the first entry at most n.score, and n is there or among the equal scores after it.
 */
function position(list: readonly Node[], n: Node): number {
  const s = n.score;
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid]!.score > s) lo = mid + 1;
    else hi = mid;
  }
  while (lo < list.length && list[lo] !== n) lo++;
  if (lo === list.length) throw new Error(`trending: item ${n.id} is not in its list at its score (the list order is broken)`);
  return lo;
}
