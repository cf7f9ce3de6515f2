/**
 * The audience sub-structure of a user's state (`UserState.aud`) and the
 * transitions it produces; the logic is in audience-state.ts. Kept apart so
 * that user-profile.ts can name the type without importing the logic.
 */

export interface AudienceState {
  /** The user's partition (the shard needs it for timers and backfills of pseudonymised ids). */
  p: number;
  /** Day buckets, flattened: [day, events, carts, purchases, cents] x n, oldest first. */
  d: number[];
  /** Time of the last add-to-cart, ms (0 = none). */
  cart: number;
  /** The current session's categories and their event counts; scS = the profile's session number they belong to. */
  sc: string[];
  scn: number[];
  scS: number;
  /**
   * Memberships: audience id -> [since ms (0 = out), transitions, holdout (0/1)].
   * A dictionary with a null prototype (newMemberships; ProfileStore.getState
   * restores it on load): an id such as "constructor" must not find Object's,
   * and the store writes it as a msgpack map rather than a record (a user's set
   * of ids is a new record structure at almost every transition).
   */
  m: Record<string, [number, number, number]>;
  /** Next time-driven evaluation, ms (0 = none). */
  due: number;
  /**
   * 1 once every audience of the set was evaluated for the user (absent in
   * states from before it existed: their next evaluation is a whole one).
   * Until then an event's evaluation cannot skip an audience (audience-state.ts
   * evaluateAudiences).
   */
  w?: 1;
  /**
   * No longer written or read (states stored before the timers moved to
   * memory carry it): the time of the user's entry in the timer index, which
   * the shard now keeps itself (src/shard/audience-timers.ts).
   */
  tm?: number;
  /**
   * Percentile cohorts: the bin (1-based; 0 = none) of the user's prediction
   * counted in the shard's sketch, [churnRisk, purchasePropensity] (absent
   * until a percentile rule evaluated the user): audience-state.ts CohortSketches.
   */
  q?: [number, number];
}

/** One enter or exit: published once on the audience stream. */
export interface Transition {
  audience: string;
  /** The user id as the engine keeps it (the pseudonym when pseudonymisation is on). */
  user: string;
  /** The transition number (1 = first enter, 2 = its exit, ...). */
  n: number;
  entered: boolean;
  atMs: number;
  /** "event" | "time" | "backfill" | "deleted" | "forgotten". */
  reason: string;
  /** A holdout member: recorded, but not to be contacted. */
  holdout: boolean;
  /** When the membership began (an enter: atMs; an exit: the time of its enter). Not on the stream (the enter carries it). */
  sinceMs?: number;
}

