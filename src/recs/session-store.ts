/**
 * Recent sessions, updated per item event: each user's current session (its
 * items in order, repeats kept) and an inverted index item -> the recent
 * sessions that hold it. Sequential rules read a session's last items;
 * session-kNN reads the current session and its neighbours through the index.
 *
 * Definitions: an item event of weight > 0 (RecsOptions.eventWeights) extends
 * its user's current session when it is at most sessionGapMs after the
 * session's last event (event time), else it starts a new session; the old
 * one stays in the index as a past session.
 *
 * Bounds (all options, see SessionOptions): at most maxSessions sessions
 * (the oldest started dropped, its index entries ignored and swept lazily;
 * a dropped session still going makes its user's next event start a new
 * one), maxSessionItems events per session (the oldest dropped from the
 * ordered list; the distinct set keeps the first maxSessionItems items), the
 * maxSessionsPerItem newest sessions per item, and maxItems items in the
 * index (least recently touched dropped); the recs byte bound
 * (src/recs/recs-bytes.ts) drops the oldest sessions, users and index items
 * too. A dropped session's lists are emptied at once. Work per event: O(1) amortised
 * (an item's list is compacted when it reaches twice its cap).
 *
 * Dropped sessions leave the lists that name them, so that their shells do not
 * pile up: an item's index list loses its dropped sessions once they are half
 * of it (counted per item as sessions drop), and a user's earlier sessions
 * lose the dropped ones at the end (they drop oldest first) when a session
 * starts. Before (to 2026-12-08) a shell stayed until the item's list reached
 * twice its cap or the item or the user left, and the heap grew with them on
 * the soak's stream (bench/recs-soak-memory.ts). What a list serves is as before: the
 * entries removed this way still count toward the list's length for its
 * compaction at twice the cap (which keeps the newest maxSessionsPerItem live
 * sessions) and for the byte estimate, so that the index keeps, serves and
 * evicts exactly what it did (test/recs-identity.test.ts).
 */
import type { CompiledSessionOptions } from "./recs-options.js";
import { arrayBytes, type Evictable, MAP_ENTRY_BYTES, objectBytes, pushBytes, RecsBytes, stringBytes, TABLE } from "./recs-bytes.js";
import { Interner } from "./interner.js";
import { lengthened, TouchOrder } from "./touch-order.js";

export interface Session {
  /** Increasing with the session's start: a stable tie-break between sessions. */
  readonly id: number;
  readonly userId: string;
  /** Items in event order, repeats kept, the newest maxSessionItems (emptied when the session is dropped). */
  items: string[];
  /** The distinct items (at most maxSessionItems; emptied when the session is dropped). */
  distinct: Set<string>;
  /** The shared recs clock (RecsBytes.tick) when the session started: its age for the byte bound. */
  readonly tick: number;
  /** Event time of the last event, Unix ms. */
  lastMs: number;
  /** Dropped from the store: ignored where an index list still names it. */
  dead: boolean;
}

/** Sees each event that continues a session, with the session's items before it (sequential rules). */
export interface SessionFollower {
  /**
   * `slots`, when given: the item slot of `before[p]` for p in [slotsFrom, length) (the store's last `followSteps`),
   * -1 where it is not known; the follower looks the others up.
   */
  observe(before: readonly string[], length: number, itemId: string, slots?: Int32Array, slotsFrom?: number): void;
}



/** Estimated heap of a session without items (object, set header, the #sessions slot). */
const SESSION_BYTES = MAP_ENTRY_BYTES + objectBytes(7) + 96;
/** One more distinct item in a session's set. */
const DISTINCT_BYTES = 28;
/** A session: its list (the item id strings its events brought) and set. */
const sessionBytes = (s: Session) => {
  let b = SESSION_BYTES + arrayBytes(s.items.length) + DISTINCT_BYTES * s.distinct.size;
  for (const id of s.items) b += stringBytes(id);
  return b;
};
const userBytes = (userId: string, past: Session[] | undefined) => MAP_ENTRY_BYTES + objectBytes(3) + stringBytes(userId) + (past !== undefined ? arrayBytes(past.length) : 0);
const indexBytes = (itemId: string, n: number) => MAP_ENTRY_BYTES + objectBytes(2) + stringBytes(itemId) + arrayBytes(n);
/** What a dropped session holds: nothing (index lists and past lists may still name it until swept). */
const DROPPED_ITEMS: Set<string> = new Set();

export class SessionStore {
  readonly #o: CompiledSessionOptions;
  /** Each user's current session, keyed by user id; bounded by maxSessions too (a user with no session here starts a new one). */
  readonly #current: TouchOrder<Session>;
  /** Each user's earlier sessions, newest first, at most maxUserSessions - 1, by user slot (undefined: none yet). */
  readonly #past: (Session[] | undefined)[] = [];
  /** Every live session by its id, in the order they started (a Map iterates in insertion order). */
  readonly #sessions = new Map<number, Session>();
  /** The index: each item's sessions, oldest first (by when the item entered them). */
  readonly #items: TouchOrder<Session[]>;
  #nextId = 1;
  /** Reads the oldest live session without walking the deleted slots at the front of #sessions (see TouchOrder). */
  #oldest: IterableIterator<[number, Session]> | undefined;
  /** The oldest live session as last read through #oldest (stale once it left #sessions). */
  #head: Session | undefined;
  readonly #acct: RecsBytes;
  /**
   * The item slots of each current session's last `#follow` events, by user slot (a ring of #follow per user; the
   * session's event count in #pushed), so that the follower reads the entries of the session's earlier items by slot
   * instead of hashing their ids. Not held in the item interner: a slot whose id is no longer the session's item
   * there (freed, or reused for another id) is passed as -1. 4 B per user slot and step, outside the V8 heap.
   */
  readonly #follow: number;
  #ring = new Int32Array(0);
  #pushed = new Int32Array(0);
  readonly #scratch: Int32Array;
  readonly #itemIds: Interner;
  /**
   * By item slot, for the item's index list: sessions dropped since its last pruning (that the list may name), and the
   * dropped sessions pruned from it since its last compaction (its length as the compaction and the byte estimate count
   * it is the list's length plus these). Reset when the item enters the index.
   */
  #droppedIn = new Int32Array(0);
  #pruned = new Int32Array(0);
  /** By user slot: dropped sessions taken off the end of the user's earlier sessions (counted in their length as before). */
  #pastPruned = new Int32Array(0);

  /**
   * `acct`: the memory estimate and clock shared with the other recs tables; the item ids' and user ids' interners
   * they share; `followSteps`: how many of a session's last items the follower reads (the sequential rules' steps).
   */
  constructor(options: CompiledSessionOptions, acct = new RecsBytes(), itemIds = new Interner(), userIds = new Interner(), followSteps = 0) {
    this.#o = options;
    this.#acct = acct;
    this.#itemIds = itemIds;
    this.#follow = Math.max(0, Math.min(followSteps, options.maxSessionItems));
    this.#scratch = new Int32Array(this.#follow > 0 ? options.maxSessionItems : 0);
    this.#current = new TouchOrder<Session>(options.maxSessions, (k, _, u) => acct.add(TABLE.session_users, -this.#userBytes(k, u, this.#takePast(u))), acct, userIds);
    this.#items = new TouchOrder<Session[]>(options.maxItems, (k, list, slot) => acct.add(TABLE.session_index, -indexBytes(k, this.#length(slot, list))), acct, itemIds);
  }

  /** The tables the recs byte bound evicts from: the sessions (oldest started first), the users, the index. */
  get evictables(): readonly Evictable[] {
    return [{ oldestTick: () => this.#oldestSession()?.tick ?? Number.POSITIVE_INFINITY, evictOldest: () => this.#dropOldest() }, this.#current, this.#items];
  }

  /** The oldest live session, read through the long-lived #oldest iterator (see TouchOrder). */
  #oldestSession(): Session | undefined {
    const h = this.#head;
    if (h !== undefined && this.#sessions.get(h.id) === h) return h;
    let first = (this.#oldest ??= this.#sessions.entries()).next();
    if (first.done) first = (this.#oldest = this.#sessions.entries()).next();
    return (this.#head = first.done ? undefined : first.value[1]);
  }

  /** Drops the oldest session: it stays named by index and past lists until they are swept, but holds nothing. */
  #dropOldest(): boolean {
    const old = this.#oldestSession();
    if (old === undefined) return false;
    this.#head = undefined;
    this.#sessions.delete(old.id);
    this.#drop(old);
    return true;
  }

  #drop(s: Session): void {
    this.#acct.add(TABLE.sessions, -sessionBytes(s));
    s.dead = true;
    for (const id of s.distinct) this.#droppedFrom(this.#items.ids.find(id));
    s.items = [];
    s.distinct = DROPPED_ITEMS;
  }

  /** Live sessions kept. */
  get size(): number {
    return this.#sessions.size;
  }

  /** Items in the inverted index. */
  get itemCount(): number {
    return this.#items.size;
  }

  /**
   * The user's current session if its last event is at most `maxAgeMs`
   * (default sessionGapMs) from `nowMs` (or `nowMs` is not given), else undefined.
   */
  current(userId: string, nowMs?: number, maxAgeMs = this.#o.sessionGapMs): Session | undefined {
    const s = this.#current.get(this.#current.ids.find(userId));
    if (s === undefined || s.dead) return undefined;
    if (nowMs !== undefined && Math.abs(nowMs - s.lastMs) > maxAgeMs) return undefined;
    return s;
  }

  /** The user's sessions kept, newest first (the current one included), at most maxUserSessions. */
  history(userId: string): Session[] {
    const u = this.#current.ids.find(userId);
    const s = this.#current.get(u);
    if (s === undefined) return [];
    return [s, ...(this.#past[u] ?? [])].filter((x) => !x.dead);
  }

  /** The session a request at `nowMs` uses: the user's last one while at most lastSessionMaxAgeMs old. */
  forRequest(userId: string, nowMs: number): Session | undefined {
    return this.current(userId, nowMs, this.#o.lastSessionMaxAgeMs);
  }

  /**
   * Adds an event to its user's session (a new one after a gap) and returns
   * that session. When the event continues the session, `follower` first sees
   * the session's items before the event (what `current(userId, timestampMs)`
   * would have returned): one lookup of the user for both. `userSlot` and `itemSlot`: the ids' slots in the user
   * and item interners, when the caller has them (observeItemEvent; looked up when not given).
   */
  observe(userId: string, itemId: string, timestampMs: number, follower?: SessionFollower, userSlot?: number, itemSlot?: number): Session {
    const u = userSlot ?? this.#current.ids.slot(userId);
    const cur = this.#current.get(u);
    let s = cur;
    const R = this.#follow;
    if (R > 0 && u >= this.#pushed.length) this.#growRing(u);
    // A new session's list is created holding the event's item: a list built by push from empty gets room for 17,
    // and most sessions of a long-tail stream stay at one item (the estimate counts the pushed size: it errs high).
    const fresh = s === undefined || s.dead || Math.abs(timestampMs - s.lastMs) > this.#o.sessionGapMs;
    if (fresh) {
      if (R > 0) this.#pushed[u] = 0;
      s = { id: this.#nextId++, userId, items: [itemId], distinct: new Set(), lastMs: timestampMs, dead: false, tick: this.#acct.tick };
      this.#sessions.set(s.id, s);
      this.#acct.add(TABLE.sessions, SESSION_BYTES + arrayBytes(0));
      if (this.#sessions.size > this.#o.maxSessions) this.#dropOldest();
      if (cur === undefined) {
        this.#current.insert(u, s);
        while (this.#past.length <= u) this.#past.push(undefined);
        if (u < this.#pastPruned.length) this.#pastPruned[u] = 0;
        this.#acct.add(TABLE.session_users, userBytes(userId, undefined));
      } else {
        if (!cur.dead) {
          const b0 = this.#userBytes(userId, u, this.#past[u]);
          const past = (this.#past[u] ??= []);
          past.unshift(cur);
          this.#prunePast(u, past);
          this.#acct.add(TABLE.session_users, this.#userBytes(userId, u, past) - b0);
        }
        this.#current.set(u, s);
        this.#current.touch(u);
      }
    } else {
      const items = s!.items;
      if (follower !== undefined) {
        const n = items.length;
        if (R > 0) follower.observe(items, n, itemId, this.#recentSlots(items, u), Math.max(0, n - R));
        else follower.observe(items, n, itemId);
      }
      this.#current.touch(u);
      items.push(itemId);
    }
    if (R > 0) {
      // The caller's slot is held by the catalog; without one, the id's slot if interned (find creates none).
      this.#ring[u * R + (this.#pushed[u]! % R)] = itemSlot ?? this.#itemIds.find(itemId);
      this.#pushed[u]!++;
    }
    s = s!;
    let b = pushBytes(s.items.length) + stringBytes(itemId);
    if (s.items.length > this.#o.maxSessionItems) {
      const n = s.items.length;
      for (const gone of s.items.splice(0, n - this.#o.maxSessionItems)) b -= stringBytes(gone);
      b += arrayBytes(s.items.length) - arrayBytes(n);
    }
    if (timestampMs > s.lastMs) s.lastMs = timestampMs;
    if (!s.distinct.has(itemId) && s.distinct.size < this.#o.maxSessionItems) {
      s.distinct.add(itemId);
      b += DISTINCT_BYTES;
      this.#index(itemId, itemSlot ?? this.#items.ids.slot(itemId), s);
    }
    this.#acct.add(TABLE.sessions, b);
    return s;
  }

  /** Clears and returns the earlier sessions of user slot `u` (its entry leaves #current). */
  #takePast(u: number): Session[] | undefined {
    const past = this.#past[u];
    this.#past[u] = undefined;
    return past;
  }

  /** userBytes of user slot `u`, its earlier sessions counted with those pruned (as before pruning). */
  #userBytes(userId: string, u: number, past: Session[] | undefined): number {
    if (past === undefined) return userBytes(userId, undefined);
    return MAP_ENTRY_BYTES + objectBytes(3) + stringBytes(userId) + arrayBytes(past.length + (this.#pastPruned[u] ?? 0));
  }

  /**
   * Keeps user slot `u`'s earlier sessions (a session just put first) at maxUserSessions - 1 counting the pruned ones
   * (they were the last: the cut takes them first), then takes the dropped ones off the end.
   */
  #prunePast(u: number, past: Session[]): void {
    if (u >= this.#pastPruned.length) this.#pastPruned = lengthened(this.#pastPruned, Math.max(u + 1, this.#current.ids.capacity, 2 * this.#pastPruned.length, 64));
    const keep = this.#o.maxUserSessions - 1;
    let gone = this.#pastPruned[u]!;
    if (past.length + gone > keep) {
      const over = past.length + gone - keep;
      const fromGone = Math.min(gone, over);
      gone -= fromGone;
      if (over > fromGone) past.length -= over - fromGone;
    }
    while (past.length > 0 && past[past.length - 1]!.dead) {
      past.pop();
      gone++;
    }
    this.#pastPruned[u] = gone;
  }

  /** The length of the item's index list as the compaction and the estimate count it: with its pruned entries. */
  #length(slot: number, list: readonly Session[]): number {
    return list.length + (slot < this.#pruned.length ? this.#pruned[slot]! : 0);
  }

  /** A session the item's list may name was dropped: prunes the list's dropped sessions once they may be half of it. */
  #droppedFrom(slot: number): void {
    const list = this.#items.get(slot);
    if (list === undefined) return;
    const n = ++this.#droppedIn[slot]!;
    if (2 * n < list.length) return;
    let k = 0;
    for (let i = 0; i < list.length; i++) {
      const x = list[i]!;
      if (!x.dead) list[k++] = x;
    }
    this.#pruned[slot]! += list.length - k;
    list.length = k;
    this.#droppedIn[slot] = 0;
  }

  /** The slots of `items`' last #follow entries (the current session of user slot `u`) in #scratch, -1 where unknown. */
  #recentSlots(items: readonly string[], u: number): Int32Array {
    const R = this.#follow;
    const n = items.length;
    const pushed = this.#pushed[u]!;
    const out = this.#scratch;
    for (let p = Math.max(0, n - R); p < n; p++) {
      const slot = this.#ring[u * R + ((pushed - n + p) % R)]!;
      out[p] = slot >= 0 && this.#itemIds.name(slot) === items[p] ? slot : -1;
    }
    return out;
  }

  /** Sizes the ring past user slot `u` (to the user interner's capacity, doubling at least). */
  #growRing(u: number): void {
    const n = Math.max(u + 1, this.#current.ids.capacity, 2 * this.#pushed.length, 64);
    this.#pushed = lengthened(this.#pushed, n);
    this.#ring = lengthened(this.#ring, n * this.#follow);
  }

  /** The live sessions holding `itemId`, oldest first (at most about 2 x maxSessionsPerItem; dead ones skipped). */
  sessionsOf(itemId: string): readonly Session[] {
    return this.#items.get(this.#items.ids.find(itemId)) ?? [];
  }

  /**
   * Forgets every session of the user (GDPR forget): they leave the index at
   * once. O(sessions kept); forgets are rare.
   */
  forgetUser(userId: string): boolean {
    const u = this.#current.ids.find(userId);
    if (this.#current.delete(u)) this.#acct.add(TABLE.session_users, -this.#userBytes(userId, u, this.#takePast(u)));
    const gone: Session[] = [];
    for (const [key, session] of this.#sessions) {
      if (session.userId !== userId) continue;
      gone.push(session);
      this.#sessions.delete(key);
    }
    for (const s of gone) {
      for (const id of s.distinct) {
        const slot = this.#items.ids.find(id);
        const list = this.#items.get(slot);
        if (list === undefined) continue;
        const kept = list.filter((x) => x !== s);
        this.#items.set(slot, kept);
        this.#acct.add(TABLE.session_index, indexBytes(id, this.#length(slot, kept)) - indexBytes(id, this.#length(slot, list)));
      }
      this.#drop(s);
    }
    return gone.length > 0;
  }

  #index(itemId: string, slot: number, s: Session): void {
    let list = this.#items.get(slot);
    if (list === undefined) {
      if (slot >= this.#pruned.length) {
        const n = Math.max(slot + 1, this.#items.ids.capacity, 2 * this.#pruned.length, 64);
        this.#pruned = lengthened(this.#pruned, n);
        this.#droppedIn = lengthened(this.#droppedIn, n);
      }
      this.#pruned[slot] = 0;
      this.#droppedIn[slot] = 0;
      // Created holding the session (room for one; by push from empty, 17): most items of a long tail are in one.
      list = [s];
      this.#items.insert(slot, list);
      this.#acct.add(TABLE.session_index, indexBytes(itemId, 0));
    } else {
      this.#items.touch(slot);
      list.push(s);
    }
    const n = this.#length(slot, list);
    this.#acct.add(TABLE.session_index, pushBytes(n));
    const cap = this.#o.maxSessionsPerItem;
    if (n >= 2 * cap) {
      const live = list.filter((x) => !x.dead);
      const kept = live.length > cap ? live.slice(live.length - cap) : live;
      this.#items.set(slot, kept);
      this.#pruned[slot] = 0;
      this.#droppedIn[slot] = 0;
      this.#acct.add(TABLE.session_index, arrayBytes(kept.length) - arrayBytes(n));
    }
  }
}
