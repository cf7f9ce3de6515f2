/**
 * Item-to-item co-visitation, updated per event.
 *
 * Definition: each item event of weight w > 0 (RecsOptions.eventWeights:
 * view 1, add_to_cart 3, purchase 5, ...) links its item to the same user's
 * previous counted item, when the two differ and are at most sessionGapMs
 * apart in event time. The link adds w to score(a, b) and to score(b, a),
 * multiplied by 2^(-(T - t) / halfLifeMs) when read at time T (t = event time).
 *
 * Lazy decay, as the profile's affinities (src/actors/user-profile.ts): all
 * scores are stored at one reference time; an event at t adds
 * w x 2^((t - ref) / halfLife) instead of decaying every score, and a query
 * at T scales by 2^(-(T - ref) / halfLife). When t runs 32 half-lives past the
 * reference, every stored score is rescaled once (O(stored links), once per
 * 32 half-lives: 32 days with the default 24 h).
 *
 * Bounds: at most maxNeighbours links per item; when a new neighbour arrives
 * at a full list it replaces the weakest link only if its own weight is
 * larger (so a burst of one-off pairs cannot flush strong links), and the
 * weakest links have decayed the most. At most maxItems items and maxUsers
 * users' last items (least recently touched dropped, see TouchOrder; also by
 * the recs byte bound, src/recs/recs-bytes.ts). Work
 * per event: two hash lookups and two scans of at most maxNeighbours links.
 *
 * Layout: columnar, by item slot (src/recs/interner.ts), no object per item
 * or link. Each item's links are a block of a shared pool (neighbour slot,
 * neighbour generation, score: two Int32Arrays and a Float64Array), of a
 * capacity class 1, 2, 4, ... up to maxNeighbours; a list that outgrows its
 * block moves to one of the next class, and freed blocks are reused by class.
 * An item's generation (by slot) changes when it is dropped, so a link names
 * the item as it was when linked: a link whose generation is not its slot's
 * is to a dropped item (ignored and replaced first, as the dead nodes of the
 * object layout were), even when the slot was reused since. Each user's last
 * item is a slot and a generation the same way. The byte estimate still
 * counts the object layout (an object and two lists per item): it errs high.
 */
import type { EventType } from "../wire/proto.js";
import type { CompiledCovisitationOptions } from "./recs-options.js";
import { DecayClock } from "./decay.js";
import { arrayBytes, type Evictable, MAP_ENTRY_BYTES, objectBytes, pushBytes, RecsBytes, stringBytes, TABLE } from "./recs-bytes.js";
import { Interner } from "./interner.js";
import { lengthened, TouchOrder } from "./touch-order.js";
import type { ScoredItem } from "./types.js";

/** The fields of an item event co-visitation reads. */
export interface CovisitEvent {
  userId: string;
  itemId: string;
  type: EventType;
  timestampMs: number;
}

/** Estimated heap of an item node with `links` links (neighbour pointers and score doubles, as the object layout was). */
const nodeBytes = (id: string, links: number) => MAP_ENTRY_BYTES + objectBytes(5) + stringBytes(id) + 2 * arrayBytes(links);
const userBytes = (userId: string) => MAP_ENTRY_BYTES + objectBytes(3) + stringBytes(userId);

export class Covisitation {
  /** The items held (the value is unused: the columns below hold the links). */
  private readonly items: TouchOrder<true>;
  /** Each user's last counted item slot (its generation in #userGen, its event time in #lastMs, by user slot). */
  private readonly users: TouchOrder<number>;
  private lastMs = new Float64Array(0);
  private userGen = new Int32Array(0);
  /** By item slot: the generation (changes when the item is dropped), its block's offset, link count and capacity class. */
  private gen = new Int32Array(0);
  private off = new Int32Array(0);
  private len = new Int32Array(0);
  private cls = new Int32Array(0);
  /** The link pool: neighbour slot and generation, score at the reference time. */
  private pSlot = new Int32Array(0);
  private pGen = new Int32Array(0);
  private pScore = new Float64Array(0);
  /** Pool entries ever handed out (blocks are taken from the end when their class has none free). */
  private top = 0;
  /** Capacity of each class (1, 2, 4, ... maxNeighbours) and its freed blocks' offsets. */
  private readonly caps: number[] = [];
  private readonly free: number[][] = [];
  private readonly clock: DecayClock;
  private readonly rescale = (f: number): void => {
    for (let s = 0; s < this.gen.length; s++) {
      if (this.items.get(s) === undefined) continue;
      for (let i = this.off[s]!, end = i + this.len[s]!; i < end; i++) this.pScore[i]! *= f;
    }
  };

  constructor(
    private readonly options: CompiledCovisitationOptions,
    /** Weight per EventType number (CompiledRecsOptions.eventWeights). */
    private readonly weights: readonly number[],
    /** The memory estimate and clock shared with the other recs tables. */
    private readonly acct = new RecsBytes(),
    /** The item ids' and the user ids' interners, shared with the other recs tables. */
    itemIds = new Interner(),
    userIds = new Interner(),
  ) {
    this.clock = new DecayClock(options.halfLifeMs);
    const max = Math.max(1, options.maxNeighbours);
    for (let c = 1; ; c *= 2) {
      this.caps.push(Math.min(c, max));
      this.free.push([]);
      if (c >= max) break;
    }
    this.items = new TouchOrder<true>(options.maxItems, (id, _, slot) => {
      const n = this.len[slot]!;
      acct.add(TABLE.covisitation, -nodeBytes(id, n));
      this.release(slot);
      this.gen[slot]!++;
    }, acct, itemIds);
    this.users = new TouchOrder<number>(options.maxUsers, (userId) => acct.add(TABLE.covisitation_users, -userBytes(userId)), acct, userIds);
  }

  /** The tables the recs byte bound evicts from. */
  get evictables(): readonly Evictable[] {
    return [this.items, this.users];
  }

  /** Items tracked. */
  get size(): number {
    return this.items.size;
  }

  /** Users whose last item is remembered. */
  get userCount(): number {
    return this.users.size;
  }

  /**
   * Counts an event. `itemSlot` and `userSlot`: the event's ids in the item and user interners, when the caller has
   * them (observeItemEvent; looked up when not given).
   */
  observe(e: CovisitEvent, itemSlot?: number, userSlot?: number): void {
    this.observeFields(e.type, e.timestampMs, e.itemId, e.userId, itemSlot, userSlot);
  }

  /** `observe` with the event's fields as arguments (observeItemEvent: no event object per table). */
  observeFields(type: EventType, t: number, itemId: string, userId: string, itemSlot?: number, userSlot?: number): void {
    const w = this.weights[type] ?? 0;
    if (w <= 0 || !itemId) return;
    const node = this.node(itemId, itemSlot ?? this.items.ids.slot(itemId));
    const u = userSlot ?? this.users.ids.slot(userId);
    const prev = this.users.get(u);
    if (prev === undefined) {
      this.users.insert(u, node);
      if (u >= this.lastMs.length) {
        const n = Math.max(u + 1, this.users.ids.capacity, 2 * this.lastMs.length, 64);
        this.lastMs = lengthened(this.lastMs, n);
        this.userGen = lengthened(this.userGen, n);
      }
      this.lastMs[u] = t;
      this.userGen[u] = this.gen[node]!;
      this.acct.add(TABLE.covisitation_users, userBytes(userId));
      return;
    }
    this.users.touch(u);
    // The previous item is live when its slot's generation is the one recorded (it was not dropped since).
    if (prev !== node && this.gen[prev] === this.userGen[u] && Math.abs(t - this.lastMs[u]!) <= this.options.sessionGapMs) {
      const sw = w * this.clock.weight(t, this.rescale);
      this.link(prev, node, sw);
      this.link(node, prev, sw);
    }
    this.users.set(u, node);
    this.userGen[u] = this.gen[node]!;
    this.lastMs[u] = t;
  }

  /**
   * Drops the user's last item (the only per-user trace kept here; the links
   * are item-to-item sums). Returns whether one was kept.
   */
  forgetUser(userId: string): boolean {
    if (!this.users.delete(this.users.ids.find(userId))) return false;
    this.acct.add(TABLE.covisitation_users, -userBytes(userId));
    return true;
  }

  /** The item's strongest neighbours at `nowMs`, best first (ties by item id), at most k. */
  neighbours(itemId: string, k: number, nowMs: number): ScoredItem[] {
    const s = this.items.ids.find(itemId);
    if (this.items.get(s) === undefined || k <= 0) return [];
    const f = this.clock.factor(nowMs);
    const out: ScoredItem[] = [];
    for (let i = this.off[s]!, end = i + this.len[s]!; i < end; i++) {
      const m = this.pSlot[i]!;
      if (this.gen[m] === this.pGen[i]) out.push({ itemId: this.items.ids.name(m), score: this.pScore[i]! * f });
    }
    out.sort((a, b) => b.score - a.score || (a.itemId < b.itemId ? -1 : a.itemId > b.itemId ? 1 : 0));
    if (out.length > k) out.length = k;
    return out;
  }

  /** The item's slot, its entry added when new. */
  private node(id: string, slot: number): number {
    if (this.items.get(slot) !== undefined) {
      this.items.touch(slot);
      return slot;
    }
    if (slot >= this.gen.length) {
      const n = Math.max(slot + 1, this.items.ids.capacity, 2 * this.gen.length, 64);
      this.gen = lengthened(this.gen, n);
      this.off = lengthened(this.off, n);
      this.len = lengthened(this.len, n);
      const cls = new Int32Array(n).fill(-1);
      cls.set(this.cls);
      this.cls = cls;
    }
    this.len[slot] = 0;
    this.cls[slot] = -1;
    this.items.insert(slot, true);
    this.acct.add(TABLE.covisitation, nodeBytes(id, 0));
    return slot;
  }

  /** Frees the item's block (its links are gone). */
  private release(slot: number): void {
    const c = this.cls[slot]!;
    if (c >= 0) this.free[c]!.push(this.off[slot]!);
    this.cls[slot] = -1;
    this.len[slot] = 0;
  }

  /** A block of class `c`: a freed one, else a new one at the end of the pool (grown by doubling). */
  private block(c: number): number {
    const o = this.free[c]!.pop();
    if (o !== undefined) return o;
    const at = this.top;
    this.top += this.caps[c]!;
    if (this.top > this.pSlot.length) {
      const n = Math.max(this.top, 2 * this.pSlot.length, 1024);
      this.pSlot = lengthened(this.pSlot, n);
      this.pGen = lengthened(this.pGen, n);
      this.pScore = lengthened(this.pScore, n);
    }
    return at;
  }

  /** Strengthens the link a -> b (item slots, both held) by w. */
  private link(a: number, b: number, w: number): void {
    const o = this.off[a]!;
    const n = this.len[a]!;
    const g = this.gen[b]!;
    for (let i = o; i < o + n; i++) {
      if (this.pSlot[i] === b && this.pGen[i] === g) {
        this.pScore[i]! += w;
        return;
      }
    }
    if (n < this.options.maxNeighbours) {
      let c = this.cls[a]!;
      let at = o;
      if (c < 0 || n === this.caps[c]!) {
        // Full block (or none): the next class's, the links copied over.
        const next = c + 1;
        at = this.block(next);
        if (n > 0) {
          this.pSlot.copyWithin(at, o, o + n);
          this.pGen.copyWithin(at, o, o + n);
          this.pScore.copyWithin(at, o, o + n);
        }
        if (c >= 0) this.free[c]!.push(o);
        c = next;
        this.cls[a] = c;
        this.off[a] = at;
      }
      this.pSlot[at + n] = b;
      this.pGen[at + n] = g;
      this.pScore[at + n] = w;
      this.len[a] = n + 1;
      this.acct.add(TABLE.covisitation, 2 * pushBytes(n + 1));
      return;
    }
    let min = -1;
    let minScore = Infinity;
    for (let j = o; j < o + n; j++) {
      if (this.gen[this.pSlot[j]!] !== this.pGen[j]) {
        min = j;
        minScore = -Infinity;
        break;
      }
      if (this.pScore[j]! < minScore) {
        minScore = this.pScore[j]!;
        min = j;
      }
    }
    if (min >= 0 && w > minScore) {
      this.pSlot[min] = b;
      this.pGen[min] = g;
      this.pScore[min] = w;
    }
  }
}
