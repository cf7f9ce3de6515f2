/**
 * Lazy exponential decay, shared by co-visitation and trending (the same
 * trick as the profile's affinities in src/actors/user-profile.ts): scores
 * are stored at a reference time; an event at t adds w x 2^((t - ref) / halfLife)
 * and a query at T multiplies by 2^(-(T - ref) / halfLife).
 */

/** Rescale stored scores to a new reference once an event is this many half-lives past it (2^32 keeps full double precision). */
export const RENORMALISE_HALVINGS = 32;

/** Queries further than this many half-lives from the reference time are read at this distance. */
const MAX_QUERY_HALVINGS = 900;

/**
 * 2^(-elapsedMs / halfLifeMs), the factor that turns scores stored at a
 * reference time into scores `elapsedMs` later, with the exponent clamped to
 * +-900: a query ~1,000 half-lives after the last event (43 days at a 1 h
 * half-life) would otherwise read every score as 0 (or Infinity before the
 * reference) and lose their order, which is what callers rank by.
 */
export function decayFactor(elapsedMs: number, halfLifeMs: number): number {
  const h = elapsedMs / halfLifeMs;
  return Math.pow(2, -(h > MAX_QUERY_HALVINGS ? MAX_QUERY_HALVINGS : h < -MAX_QUERY_HALVINGS ? -MAX_QUERY_HALVINGS : h));
}

/**
 * The reference time of one table of lazily decayed scores. `weight(t, rescale)`
 * is the multiplier for a weight added at event time t, and moves the
 * reference (calling `rescale(f)` to multiply every stored score by f) once t
 * is RENORMALISE_HALVINGS past it; `factor(now)` reads stored scores at now.
 */
export class DecayClock {
  #refMs = 0;
  readonly #halfLifeMs: number;

  constructor(halfLifeMs: number) {
    this.#halfLifeMs = halfLifeMs;
  }

  weight(t: number, rescale: (f: number) => void): number {
    if (this.#refMs === 0) this.#refMs = t;
    const halvings = (t - this.#refMs) / this.#halfLifeMs;
    if (halvings <= RENORMALISE_HALVINGS) return Math.pow(2, halvings);
    rescale(Math.pow(2, -halvings));
    this.#refMs = t;
    return 1;
  }

  factor(nowMs: number): number {
    return this.#refMs === 0 ? 1 : decayFactor(nowMs - this.#refMs, this.#halfLifeMs);
  }
}
