/**
 * The names of the candidate sources and of the ranking policies: a leaf
 * module, so that the options (recs-options.ts), candidate generation and the
 * ranking policy can all name them without importing one another.
 */

/** Where a candidate came from (see src/recs/candidates.ts). */
export type CandidateSource = "sknn" | "rules" | "covisit" | "next-category" | "category" | "recent" | "repeat" | "trending" | "popular";

export const CANDIDATE_SOURCES: readonly CandidateSource[] = Object.freeze([
  "sknn", "rules", "covisit", "next-category", "category", "recent", "repeat", "trending", "popular",
]);

/** A ranking policy (src/recs/ranking-policy.ts). */
export type RankingPolicyName = "prior" | "blend" | "deepfm" | `source:${CandidateSource}`;

export function isPolicyName(v: unknown): v is RankingPolicyName {
  if (v === "prior" || v === "blend" || v === "deepfm") return true;
  return typeof v === "string" && v.startsWith("source:") && (CANDIDATE_SOURCES as readonly string[]).includes(v.slice(7));
}
