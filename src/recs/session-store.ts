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
 * index (least recently touched dropped). Work per event: O(1) amortised
 * (an item's list is compacted when it reaches twice its cap).
 */
import type { CompiledSessionOptions } from "./recs-options.js";
import { TICK, TouchOrder } from "./touch-order.js";

export interface Session {
  /** Increasing with the session's start: a stable tie-break between sessions. */
  readonly id: number;
  readonly userId: string;
  /** Items in event order, repeats kept, the newest maxSessionItems. */
  readonly items: string[];
  /** The distinct items (at most maxSessionItems). */
  readonly distinct: Set<string>;
  /** Event time of the last event, Unix ms. */
  lastMs: number;
  /** Dropped from the store: ignored where an index list still names it. */
  dead: boolean;
}

/** Sees each event that continues a session, with the session's items before it (sequential rules). */
export interface SessionFollower {
  observe(before: readonly string[], length: number, itemId: string): void;
}

interface SessionEntry {
  [TICK]: number;
  session: Session;
  /** User entries only: the user's earlier sessions, newest first, at most maxUserSessions - 1. */
  past?: Session[];
}

interface ItemEntry {
  [TICK]: number;
  /** Sessions holding the item, oldest first (by when the item entered them). */
  sessions: Session[];
}

export class SessionStore {
  readonly #o: CompiledSessionOptions;
  /** Each user's current session, keyed by user id; bounded by maxSessions too (a user with no session here starts a new one). */
  readonly #current: TouchOrder<SessionEntry>;
  /** Every live session by its id, in the order they started (a Map iterates in insertion order). */
  readonly #sessions = new Map<number, Session>();
  readonly #items: TouchOrder<ItemEntry>;
  #nextId = 1;
  /** Reads the oldest live session without walking the deleted slots at the front of #sessions (see TouchOrder). */
  #oldest: IterableIterator<[number, Session]> | undefined;

  constructor(options: CompiledSessionOptions) {
    this.#o = options;
    this.#current = new TouchOrder<SessionEntry>(options.maxSessions);
    this.#items = new TouchOrder<ItemEntry>(options.maxItems);
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
    const s = this.#current.get(userId)?.session;
    if (s === undefined || s.dead) return undefined;
    if (nowMs !== undefined && Math.abs(nowMs - s.lastMs) > maxAgeMs) return undefined;
    return s;
  }

  /** The user's sessions kept, newest first (the current one included), at most maxUserSessions. */
  history(userId: string): Session[] {
    const e = this.#current.get(userId);
    if (e === undefined) return [];
    return [e.session, ...(e.past ?? [])].filter((s) => !s.dead);
  }

  /** The session a request at `nowMs` uses: the user's last one while at most lastSessionMaxAgeMs old. */
  forRequest(userId: string, nowMs: number): Session | undefined {
    return this.current(userId, nowMs, this.#o.lastSessionMaxAgeMs);
  }

  /**
   * Adds an event to its user's session (a new one after a gap) and returns
   * that session. When the event continues the session, `follower` first sees
   * the session's items before the event (what `current(userId, timestampMs)`
   * would have returned): one lookup of the user for both.
   */
  observe(userId: string, itemId: string, timestampMs: number, follower?: SessionFollower): Session {
    let cur = this.#current.get(userId);
    let s = cur?.session;
    if (s === undefined || s.dead || Math.abs(timestampMs - s.lastMs) > this.#o.sessionGapMs) {
      s = { id: this.#nextId++, userId, items: [], distinct: new Set(), lastMs: timestampMs, dead: false };
      this.#sessions.set(s.id, s);
      if (this.#sessions.size > this.#o.maxSessions) {
        let first = (this.#oldest ??= this.#sessions.entries()).next();
        if (first.done) first = (this.#oldest = this.#sessions.entries()).next();
        const [id, old] = first.value!;
        old.dead = true;
        this.#sessions.delete(id);
      }
      if (cur === undefined) {
        cur = { [TICK]: 0, session: s };
        this.#current.insert(userId, cur);
      } else {
        if (!cur.session.dead) {
          const past = (cur.past ??= []);
          past.unshift(cur.session);
          if (past.length >= this.#o.maxUserSessions) past.length = this.#o.maxUserSessions - 1;
        }
        cur.session = s;
        this.#current.touch(userId, cur);
      }
    } else {
      follower?.observe(s.items, s.items.length, itemId);
      this.#current.touch(userId, cur!);
    }
    s.items.push(itemId);
    if (s.items.length > this.#o.maxSessionItems) s.items.splice(0, s.items.length - this.#o.maxSessionItems);
    if (timestampMs > s.lastMs) s.lastMs = timestampMs;
    if (!s.distinct.has(itemId) && s.distinct.size < this.#o.maxSessionItems) {
      s.distinct.add(itemId);
      this.#index(itemId, s);
    }
    return s;
  }

  /** The live sessions holding `itemId`, oldest first (at most about 2 x maxSessionsPerItem; dead ones skipped). */
  sessionsOf(itemId: string): readonly Session[] {
    const e = this.#items.get(itemId);
    if (e === undefined) return [];
    return e.sessions;
  }

  /**
   * Forgets every session of the user (GDPR forget): they leave the index at
   * once. O(sessions kept); forgets are rare.
   */
  forgetUser(userId: string): boolean {
    this.#current.delete(userId);
    const gone: Session[] = [];
    for (const [key, session] of this.#sessions) {
      if (session.userId !== userId) continue;
      session.dead = true;
      gone.push(session);
      this.#sessions.delete(key);
    }
    for (const s of gone) {
      for (const id of s.distinct) {
        const e = this.#items.get(id);
        if (e !== undefined) e.sessions = e.sessions.filter((x) => x !== s);
      }
    }
    return gone.length > 0;
  }

  #index(itemId: string, s: Session): void {
    let e = this.#items.get(itemId);
    if (e === undefined) {
      e = { [TICK]: 0, sessions: [] };
      this.#items.insert(itemId, e);
    } else {
      this.#items.touch(itemId, e);
    }
    e.sessions.push(s);
    const cap = this.#o.maxSessionsPerItem;
    if (e.sessions.length >= 2 * cap) {
      const live = e.sessions.filter((x) => !x.dead);
      e.sessions = live.length > cap ? live.slice(live.length - cap) : live;
    }
  }
}
