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
 */
import type { EventType } from "../wire/proto.js";
import type { CompiledCovisitationOptions } from "./recs-options.js";
import { DecayClock } from "./decay.js";
import { arrayBytes, type Evictable, MAP_ENTRY_BYTES, objectBytes, pushBytes, RecsBytes, stringBytes, TABLE } from "./recs-bytes.js";
import { Interner } from "./interner.js";
import { lengthened, TouchOrder } from "./touch-order.js";
import type { ScoredItem } from "./types.js";

interface Node {
  readonly id: string;
  /** Dropped from the table: links to it are ignored and replaced first. */
  dead: boolean;
  /** Neighbour nodes and their scores at the reference time, parallel arrays. */
  nbr: Node[];
  score: number[];
}

/** The fields of an item event co-visitation reads. */
export interface CovisitEvent {
  userId: string;
  itemId: string;
  type: EventType;
  timestampMs: number;
}

/** The lists of a node without links, shared (never pushed to: a first link replaces them, see `link`). */
const NO_NODES: Node[] = [];
const NO_SCORES: number[] = [];

/** Estimated heap of an item node with `links` links (neighbour pointers and score doubles). */
const nodeBytes = (id: string, links: number) => MAP_ENTRY_BYTES + objectBytes(5) + stringBytes(id) + 2 * arrayBytes(links);
const userBytes = (userId: string) => MAP_ENTRY_BYTES + objectBytes(3) + stringBytes(userId);

export class Covisitation {
  private readonly items: TouchOrder<Node>;
  /** Each user's last counted item (its event time in #lastMs, by user slot). */
  private readonly users: TouchOrder<Node>;
  private lastMs = new Float64Array(0);
  private readonly clock: DecayClock;

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
    this.items = new TouchOrder<Node>(options.maxItems, (_, n) => {
      acct.add(TABLE.covisitation, -nodeBytes(n.id, n.nbr.length));
      n.dead = true;
      n.nbr = NO_NODES;
      n.score = NO_SCORES;
    }, acct, itemIds);
    this.users = new TouchOrder<Node>(options.maxUsers, (userId) => acct.add(TABLE.covisitation_users, -userBytes(userId)), acct, userIds);
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
      if (u >= this.lastMs.length) this.lastMs = lengthened(this.lastMs, Math.max(u + 1, this.users.ids.capacity, 2 * this.lastMs.length, 64));
      this.lastMs[u] = t;
      this.acct.add(TABLE.covisitation_users, userBytes(userId));
      return;
    }
    this.users.touch(u);
    if (prev !== node && !prev.dead && Math.abs(t - this.lastMs[u]!) <= this.options.sessionGapMs) {
      const sw = w * this.scale(t);
      this.link(prev, node, sw);
      this.link(node, prev, sw);
    }
    this.users.set(u, node);
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
    const n = this.items.get(this.items.ids.find(itemId));
    if (n === undefined || k <= 0) return [];
    const f = this.clock.factor(nowMs);
    const out: ScoredItem[] = [];
    for (let i = 0; i < n.nbr.length; i++) {
      const m = n.nbr[i]!;
      if (!m.dead) out.push({ itemId: m.id, score: n.score[i]! * f });
    }
    out.sort((a, b) => b.score - a.score || (a.itemId < b.itemId ? -1 : a.itemId > b.itemId ? 1 : 0));
    if (out.length > k) out.length = k;
    return out;
  }

  private node(id: string, slot: number): Node {
    let n = this.items.get(slot);
    if (n !== undefined) {
      this.items.touch(slot);
      return n;
    }
    n = { id, dead: false, nbr: NO_NODES, score: NO_SCORES };
    this.items.insert(slot, n);
    this.acct.add(TABLE.covisitation, nodeBytes(id, 0));
    return n;
  }

  /** 2^((t - ref) / halfLife) for a weight added at t, renormalising every stored score first when that grows too large. */
  private scale(t: number): number {
    return this.clock.weight(t, (f) => {
      for (const n of this.items.values()) for (let i = 0; i < n.score.length; i++) n.score[i]! *= f;
    });
  }

  private link(a: Node, b: Node, w: number): void {
    const i = a.nbr.indexOf(b);
    if (i >= 0) {
      a.score[i]! += w;
      return;
    }
    if (a.nbr.length === 0) {
      // A first link replaces the empty lists with lists of one (by push, room for 17): most items get few links.
      a.nbr = [b];
      a.score = [w];
      this.acct.add(TABLE.covisitation, 2 * pushBytes(1));
      return;
    }
    if (a.nbr.length < this.options.maxNeighbours) {
      a.nbr.push(b);
      a.score.push(w);
      this.acct.add(TABLE.covisitation, 2 * pushBytes(a.nbr.length));
      return;
    }
    let min = -1;
    let minScore = Infinity;
    for (let j = 0; j < a.nbr.length; j++) {
      if (a.nbr[j]!.dead) {
        min = j;
        minScore = -Infinity;
        break;
      }
      if (a.score[j]! < minScore) {
        minScore = a.score[j]!;
        min = j;
      }
    }
    if (min >= 0 && w > minScore) {
      a.nbr[min] = b;
      a.score[min] = w;
    }
  }
}
