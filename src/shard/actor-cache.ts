/**
 * A shard's actors in memory: at most `maxActors` beyond those whose last
 * change is not committed yet, loaded from LMDB on a miss, dropped oldest
 * first with a second chance for the recently used (CLOCK). A user being
 * forgotten has no state here until the removal committed (LMDB still holds
 * the old one until then).
 */
import type { Actor } from "../actors/actor.js";
import { newUserState, type UserState } from "../actors/user-profile.js";
import type { ProfileStore } from "../store/profile-store.js";

export class ActorCache {
  readonly #store: ProfileStore;
  readonly #maxActors: number;
  readonly #actors = new Map<string, Actor>();
  /** Keys whose removal is not committed yet (-> erasures pending). */
  readonly #erasing = new Map<string, number>();

  constructor(store: ProfileStore, maxActors: number) {
    this.#store = store;
    this.#maxActors = maxActors;
  }

  get size(): number {
    return this.#actors.size;
  }

  /** The user's actor: cached, else loaded from LMDB, else new. */
  actor(key: string): Actor {
    let a = this.#actors.get(key);
    if (a !== undefined) {
      a.referenced = true;
      return a;
    }
    const stored = this.#erasing.has(key) ? undefined : this.#store.getState(key);
    a = { state: stored ?? newUserState(), lastBatch: 0, referenced: false, lstm: undefined };
    this.#actors.set(key, a);
    return a;
  }

  /** Whether the user has an actor in memory (then it is no alias: README "Identity"). */
  cached(key: string): boolean {
    return this.#actors.has(key);
  }

  /** Drops the user's actor (an id merged into another: its stored state is removed by the same batch's commit). */
  drop(key: string): void {
    this.#actors.delete(key);
  }

  /** The user's current state without making an actor, or undefined. */
  state(key: string): UserState | undefined {
    return this.#actors.get(key)?.state ?? (this.#erasing.has(key) ? undefined : this.#store.getState(key));
  }

  has(key: string): boolean {
    return this.#actors.has(key) || (!this.#erasing.has(key) && this.#store.hasState(key));
  }

  /** Drops the user's actor and hides its stored state while `removal` runs (it removes the state from LMDB). */
  async erase<T>(key: string, removal: () => Promise<T>): Promise<T> {
    this.#actors.delete(key);
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
   * Drops actors beyond maxActors, oldest first, CLOCK-style: a recently used
   * actor gets a second chance (moved to the back), and an actor whose last
   * change is not committed yet (`lastBatch > committedBatch`) is never
   * dropped (LMDB would return stale state).
   */
  evict(committedBatch: number): void {
    let excess = this.#actors.size - this.#maxActors;
    let budget = this.#actors.size;
    for (const [id, a] of this.#actors) {
      if (excess <= 0 || budget-- <= 0) break;
      if (a.lastBatch > committedBatch) continue;
      this.#actors.delete(id);
      if (a.referenced) {
        a.referenced = false;
        this.#actors.set(id, a);
      } else {
        excess--;
      }
    }
  }
}
