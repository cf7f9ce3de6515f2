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
