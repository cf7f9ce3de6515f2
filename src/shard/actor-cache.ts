/**
 * A shard's actors in memory: at most `maxActors` and at most `maxBytes`
 * (estimated, actorBytes) beyond those whose last change is not committed
 * yet, loaded from LMDB on a miss, dropped oldest first with a second chance
 * for the recently used (CLOCK). A user being forgotten has no state here
 * until the removal committed (LMDB still holds the old one until then).
 *
 * The byte bound: a user's state grows with its history (recent items,
 * timeline, day buckets, affinity tables) up to its own caps, so a count
 * bound alone lets the cache grow for as long as the cached users' histories
 * do. Each actor's estimate is taken when it enters the cache and again after
 * each change (`changed`, from the batch that made it).
 */
import type { Actor } from "../actors/actor.js";
import { approxBytes, TYPED_ARRAY_BYTES } from "../actors/state-bytes.js";
import { newUserState, type UserState } from "../actors/user-profile.js";
import type { ProfileStore } from "../store/profile-store.js";

/** The cache's own cost per actor beside its state: the Map entry and the Actor object. */
const ENTRY_BYTES = 120;
/**
 * A changed actor is counted again once its state took this many events since it was last counted: an estimate
 * costs a few µs, and a state's size moves by a few hundred bytes over so many events.
 */
export const RECOUNT_EVENTS = 8;

/** Estimated memory of one cached actor and its key, bytes (`stateBytes`: approxBytes(a.state) when known). */
export function actorBytes(key: string, a: Actor, stateBytes = approxBytes(a.state)): number {
  return ENTRY_BYTES + approxBytes(key) + stateBytes + (a.lstm !== undefined ? TYPED_ARRAY_BYTES : 0);
}

/** approxBytes of a new user's state (newUserState's shape never varies): not walked again for every new user. */
const NEW_STATE_BYTES = approxBytes(newUserState());

export class ActorCache {
  readonly #store: ProfileStore;
  readonly #maxActors: number;
  readonly #maxBytes: number;
  readonly #actors = new Map<string, Actor>();
  /** Keys whose removal is not committed yet (-> erasures pending). */
  readonly #erasing = new Map<string, number>();
  /**
   * Actors lent to a backfill (borrow): loaded from LMDB for one evaluation and its commit, neither counted nor cached
   * (a backfill passes every stored profile once; caching them would cost a byte estimate each and push the users of
   * the live traffic out). Until given back they are the user's one state in memory: `actor` takes one into the cache.
   */
  readonly #lent = new Map<string, Actor>();
  /** Sum of the cached actors' `bytes`. */
  #bytes = 0;

  constructor(store: ProfileStore, maxActors: number, maxBytes = Number.POSITIVE_INFINITY) {
    this.#store = store;
    this.#maxActors = maxActors;
    this.#maxBytes = maxBytes;
  }

  get size(): number {
    return this.#actors.size;
  }

  /** Estimated bytes of the cached actors (actorBytes, as last counted). */
  get bytes(): number {
    return this.#bytes;
  }

  /** The user's actor: cached, else loaded from LMDB, else new. */
  actor(key: string): Actor {
    let a = this.#actors.get(key);
    if (a !== undefined) {
      a.referenced = true;
      return a;
    }
    a = this.#lent.get(key);
    if (a !== undefined) {
      // Lent to a backfill whose commit is pending: the same state goes on here (a copy from LMDB would miss its change).
      this.#lent.delete(key);
      a.referenced = true;
      this.#actors.set(key, a);
      this.#count(key, a);
      return a;
    }
    const stored = this.#erasing.has(key) ? undefined : this.#store.getState(key);
    a = { state: stored ?? newUserState(), lastBatch: 0, batchTypes: 0, referenced: false, lstm: undefined, bytes: 0, bytesAtN: 0 };
    this.#actors.set(key, a);
    this.#count(key, a, stored === undefined ? NEW_STATE_BYTES : undefined);
    return a;
  }

  /**
   * The user's actor for a backfill's evaluation: the cached one, else its stored state lent without caching it (undefined
   * when it has none, or is being forgotten). Give it back (giveBack) once the commit that wrote it settled.
   */
  borrow(key: string): Actor | undefined {
    const a = this.#actors.get(key) ?? this.#lent.get(key);
    if (a !== undefined) return a;
    if (this.#erasing.has(key)) return undefined;
    const stored = this.#store.getState(key);
    if (stored === undefined) return undefined;
    const lent: Actor = { state: stored, lastBatch: 0, batchTypes: 0, referenced: false, lstm: undefined, bytes: 0, bytesAtN: 0 };
    this.#lent.set(key, lent);
    return lent;
  }

  /** Ends the loans of these users' actors (their commit settled); an actor taken into the cache meanwhile stays there. */
  giveBack(actors: Iterable<readonly [string, Actor, ...unknown[]]>): void {
    for (const [key, a] of actors) if (this.#lent.get(key) === a) this.#lent.delete(key);
  }

  /** Actors lent to a backfill and not given back. */
  get lent(): number {
    return this.#lent.size;
  }

  /**
   * Counts the actors again after a change (their states grow with their histories), each once it took
   * RECOUNT_EVENTS events since it was last counted; those no longer cached are skipped.
   */
  changed(actors: Map<string, Actor> | Iterable<readonly [string, Actor, ...unknown[]]>): void {
    // A batch's Map by forEach: its entries' iterator made an array per entry.
    if (actors instanceof Map) actors.forEach((a, key) => this.#recount(key, a));
    else for (const [key, a] of actors) this.#recount(key, a);
  }

  #recount(key: string, a: Actor): void {
    if (a.state.n - a.bytesAtN >= RECOUNT_EVENTS && this.#actors.get(key) === a) this.#count(key, a);
  }

  #count(key: string, a: Actor, stateBytes?: number): void {
    const b = actorBytes(key, a, stateBytes);
    this.#bytes += b - a.bytes;
    a.bytes = b;
    a.bytesAtN = a.state.n;
  }

  #remove(key: string): void {
    this.#lent.delete(key);
    const a = this.#actors.get(key);
    if (a === undefined) return;
    this.#actors.delete(key);
    this.#bytes -= a.bytes;
  }

  /** Whether the user has an actor in memory (then it is no alias: README "Identity"). */
  cached(key: string): boolean {
    return this.#actors.has(key) || this.#lent.has(key);
  }

  /** Drops the user's actor (an id merged into another: its stored state is removed by the same batch's commit). */
  drop(key: string): void {
    this.#remove(key);
  }

  /** Drops every cached actor whose key matches (a partition given up or restored from its changelog). */
  dropWhere(match: (key: string) => boolean): void {
    for (const key of [...this.#actors.keys(), ...this.#lent.keys()]) if (match(key)) this.#remove(key);
  }

  /** The user's current state without making an actor, or undefined. */
  state(key: string): UserState | undefined {
    return this.#actors.get(key)?.state ?? this.#lent.get(key)?.state ?? (this.#erasing.has(key) ? undefined : this.#store.getState(key));
  }

  has(key: string): boolean {
    return this.#actors.has(key) || this.#lent.has(key) || (!this.#erasing.has(key) && this.#store.hasState(key));
  }

  /** Drops the user's actor and hides its stored state while `removal` runs (it removes the state from LMDB). */
  async erase<T>(key: string, removal: () => Promise<T>): Promise<T> {
    this.#remove(key);
    this.#erasing.set(key, (this.#erasing.get(key) ?? 0) + 1);
    try {
      return await removal();
    } finally {
      const n = this.#erasing.get(key)! - 1;
      if (n === 0) this.#erasing.delete(key);
      else this.#erasing.set(key, n);
    }
  }

  /**
   * Drops actors beyond maxActors or maxBytes, oldest first, CLOCK-style: a
   * recently used actor gets a second chance (moved to the back, and dropped
   * when the sweep comes round to it again still unused), and an
   * actor whose last change is not committed yet (`lastBatch >
   * committedBatch`) is never dropped (LMDB would return stale state).
   */
  evict(committedBatch: number): void {
    let excess = this.#actors.size - this.#maxActors;
    let excessBytes = this.#bytes - this.#maxBytes;
    // Two passes at most: the first may only clear the second-chance marks (every actor used since the last sweep).
    let budget = 2 * this.#actors.size;
    for (const [id, a] of this.#actors) {
      if ((excess <= 0 && excessBytes <= 0) || budget-- <= 0) break;
      if (a.lastBatch > committedBatch) continue;
      this.#actors.delete(id);
      if (a.referenced) {
        a.referenced = false;
        this.#actors.set(id, a);
      } else {
        excess--;
        excessBytes -= a.bytes;
        this.#bytes -= a.bytes;
      }
    }
  }
}
