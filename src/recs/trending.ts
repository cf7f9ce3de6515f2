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
 * that qualifies, not at once.) An event costs O(positions moved); a query
 * copies the first k entries. No sort per request, no periodic recomputation.
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
import { TICK, TouchOrder } from "./touch-order.js";
import type { ScoredItem } from "./types.js";

interface Node {
  readonly id: string;
  [TICK]: number;
  dead: boolean;
  /** Score at the reference time. */
  score: number;
  /** Index in the global list, -1 when not in it. */
  gpos: number;
  /** The item's category ("" when none) and its list, and the index in that list (-1 when not in it). */
  catKey: string;
  cat: CategoryTop | undefined;
  cpos: number;
}

interface CategoryTop {
  readonly key: string;
  /** Its slot in the category interner. */
  readonly slot: number;
  [TICK]: number;
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
      if (n.gpos >= 0) this.remove(this.global, n, true);
      if (n.cat !== undefined && !n.cat.dead && n.cpos >= 0) this.remove(n.cat.list, n, false);
      n.dead = true;
      n.cat = undefined;
    }, acct, itemIds);
    this.cats = new TouchOrder<CategoryTop>(options.maxCategories, (_, c) => {
      acct.add(TABLE.trending_categories, -categoryBytes(c.key, c.list.length));
      for (const n of c.list) n.cpos = -1;
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
    const w = this.weights[e.type] ?? 0;
    if (w <= 0 || !e.itemId) return;
    const sw = w * this.scale(e.timestampMs);
    const n = this.node(e.itemId, itemSlot ?? this.items.ids.slot(e.itemId));
    n.score += sw;
    this.bump(this.global, n, this.options.globalListSize, true);
    const key = categoryId || n.catKey;
    if (key === "") return;
    let c = n.cat;
    if (c === undefined || c.dead || c.key !== key) {
      if (c !== undefined && !c.dead && n.cpos >= 0) this.remove(c.list, n, false);
      n.cpos = -1;
      c = this.category(key);
      n.catKey = key;
      n.cat = c;
    } else {
      this.cats.touch(c.slot, c);
    }
    this.bump(c.list, n, this.options.categoryListSize, false);
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
      this.items.touch(slot, n);
      return n;
    }
    n = { id, [TICK]: 0, dead: false, score: 0, gpos: -1, catKey: "", cat: undefined, cpos: -1 };
    this.items.insert(slot, n);
    this.acct.add(TABLE.trending, nodeBytes(id));
    return n;
  }

  private category(key: string): CategoryTop {
    const slot = this.cats.ids.slot(key);
    let c = this.cats.get(slot);
    if (c !== undefined) {
      this.cats.touch(slot, c);
      return c;
    }
    c = { key, slot, [TICK]: 0, dead: false, list: [] };
    this.cats.insert(slot, c);
    this.acct.add(TABLE.trending_categories, categoryBytes(key, 0));
    return c;
  }

  /** 2^((t - ref) / halfLife) for a weight added at t, renormalising every stored score first when that grows too large. */
  private scale(t: number): number {
    return this.clock.weight(t, (f) => {
      for (const n of this.items.values()) n.score *= f;
    });
  }

  /** Moves `n` (whose score just grew) up its list, entering it when it now beats the last entry. */
  private bump(list: Node[], n: Node, cap: number, global: boolean): void {
    let i = global ? n.gpos : n.cpos;
    if (i < 0) {
      if (list.length < cap) {
        list.push(n);
        if (!global) this.acct.add(TABLE.trending_categories, pushBytes(list.length));
        i = list.length - 1;
      } else {
        const last = list[cap - 1]!;
        if (n.score <= last.score) return;
        if (global) last.gpos = -1;
        else last.cpos = -1;
        list[cap - 1] = n;
        i = cap - 1;
      }
    }
    while (i > 0 && list[i - 1]!.score < n.score) {
      const up = list[i - 1]!;
      list[i] = up;
      if (global) up.gpos = i;
      else up.cpos = i;
      i--;
    }
    list[i] = n;
    if (global) n.gpos = i;
    else n.cpos = i;
  }

  private remove(list: Node[], n: Node, global: boolean): void {
    const i = global ? n.gpos : n.cpos;
    list.splice(i, 1);
    if (!global) this.acct.add(TABLE.trending_categories, -pushBytes(list.length + 1));
    for (let j = i; j < list.length; j++) {
      if (global) list[j]!.gpos = j;
      else list[j]!.cpos = j;
    }
    if (global) n.gpos = -1;
    else n.cpos = -1;
  }
}
