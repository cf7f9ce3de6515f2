/**
 * The ranking policy: which order of the candidates is served.
 *
 * - "source:<s>": one source's order (its normalised score; candidates it
 *   did not find follow, by prior). Needs no training and no evidence.
 * - "prior": the sum of the normalised source scores (every source weighs 1).
 * - "blend": the sum of weight x normalised score per source, the weights
 *   fit on the shop's own log (`portrait eval prequential --targets next-click --write-policy`).
 * - "deepfm": the DeepFM ranker's scores (the inference pool).
 *
 * A trained ranker ("blend", "deepfm") is served only where a policy file
 * shows it beat the best single source on a validation window
 * (`choosePolicy`). Without a policy file, "auto" serves DEFAULT_POLICY, a
 * single source's order, never DeepFM: the bundled DeepFM was trained on
 * another shop's log and halves the hit rate of its own candidates on
 * Yoochoose (issue 12).
 */
import { readFileSync } from "node:fs";
import { ConfigError } from "../errors.js";
import type { Candidate } from "./candidates.js";
import { isPolicyName, type CandidateSource, type RankingPolicyName } from "./sources.js";

export { isPolicyName, type RankingPolicyName };

/** What is served when no policy file says otherwise (see README "Recommendations": chosen on Yoochoose train_tr validation). */
export const DEFAULT_POLICY: RankingPolicyName = "source:sknn";

/** The policies that are trained (need evidence on this shop before they are served). */
const TRAINED: ReadonlySet<string> = new Set(["blend", "deepfm"]);

export interface RankingPolicy {
  readonly name: RankingPolicyName;
  /** Per-source weights of "blend" (missing = 0). */
  readonly weights: Readonly<Partial<Record<CandidateSource, number>>>;
  /** Where the policy came from: "default", "option" or the policy file's path. */
  readonly from: string;
}

/** Validation metrics of one policy, e.g. { "HR@20": 0.64, "MRR@20": 0.33 }. */
export type PolicyMetrics = Readonly<Record<string, number>>;

/** The policy file: what was chosen and on which numbers. */
export interface RankingPolicyFile {
  policy: RankingPolicyName;
  weights?: Partial<Record<CandidateSource, number>>;
  /** The metric the choice maximised, e.g. "MRR@20". */
  metric: string;
  /** What the numbers were measured on (data, window, targets). */
  validation: string;
  /** Every policy measured, by name. */
  results: Record<string, PolicyMetrics>;
}

/**
 * Chooses from measured results: the best single source ("source:*") by
 * `metric` (ties: the other @K metric of the same K, then name), replaced
 * by a trained or combined policy only when that one is strictly better on
 * `metric` and not worse on the other. A policy without results is never chosen.
 */
export function choosePolicy(results: Readonly<Record<string, PolicyMetrics>>, metric = "MRR@20"): RankingPolicyName {
  const m = /^(HR|MRR)@(\d+)$/.exec(metric);
  if (!m) throw new ConfigError(`metric must look like "MRR@20", got ${JSON.stringify(metric)}`);
  const other = `${m[1] === "HR" ? "MRR" : "HR"}@${m[2]}`;
  const names = Object.keys(results).filter(isPolicyName).sort();
  const value = (n: string, k: string) => results[n]?.[k] ?? -Infinity;
  const better = (a: string, b: string) => value(a, metric) - value(b, metric) || value(a, other) - value(b, other);
  const sources = names.filter((n) => n.startsWith("source:"));
  let best: string | undefined;
  for (const n of sources) if (best === undefined || better(n, best) > 0) best = n;
  for (const n of names) {
    if (n.startsWith("source:")) continue;
    if (best === undefined || (value(n, metric) > value(best, metric) && value(n, other) >= value(best, other))) best = n;
  }
  if (best === undefined) throw new ConfigError("no policy has validation results");
  return best as RankingPolicyName;
}

export function readPolicyFile(path: string): RankingPolicyFile {
  let f: RankingPolicyFile;
  try {
    f = JSON.parse(readFileSync(path, "utf8")) as RankingPolicyFile;
  } catch (err) {
    throw new ConfigError(`ranking policy file ${path}: ${(err as Error).message}`);
  }
  if (!isPolicyName(f.policy)) throw new ConfigError(`ranking policy file ${path}: unknown policy ${JSON.stringify(f.policy)}`);
  if (typeof f.results !== "object" || f.results === null) throw new ConfigError(`ranking policy file ${path}: no validation results`);
  // The file must not serve a trained ranker its own numbers do not support.
  const chosen = choosePolicy(f.results, f.metric);
  if (TRAINED.has(f.policy) && chosen !== f.policy) {
    throw new ConfigError(`ranking policy file ${path}: ${f.policy} is not the best on its own validation results (${chosen} is)`);
  }
  return f;
}

/**
 * The policy to serve: `policy` when given explicitly, else (auto) the
 * policy file's when a file is given, else DEFAULT_POLICY.
 */
export function resolvePolicy(o: { policy: "auto" | RankingPolicyName; policyFile: string; weights: Readonly<Partial<Record<CandidateSource, number>>> }): RankingPolicy {
  if (o.policy !== "auto") return Object.freeze({ name: o.policy, weights: o.weights, from: "option" });
  if (o.policyFile !== "") {
    const f = readPolicyFile(o.policyFile);
    return Object.freeze({ name: f.policy, weights: Object.freeze({ ...(f.weights ?? {}) }), from: o.policyFile });
  }
  return Object.freeze({ name: DEFAULT_POLICY, weights: Object.freeze({}), from: "default" });
}

/** The policy's score of a candidate (DeepFM: the prior; the pool scores it). */
export function policyScore(p: RankingPolicy, c: Pick<Candidate, "prior" | "scores">): number {
  if (p.name === "prior" || p.name === "deepfm") return c.prior;
  if (p.name === "blend") {
    let s = 0;
    for (const k in c.scores) s += (p.weights[k as CandidateSource] ?? 0) * c.scores[k as CandidateSource]!;
    return s;
  }
  return c.scores[p.name.slice(7) as CandidateSource] ?? 0;
}

/** The candidates in the policy's order, best first (ties: prior, then item id). Does not change `candidates`. */
export function orderCandidates<C extends Pick<Candidate, "itemId" | "prior" | "scores">>(p: RankingPolicy, candidates: readonly C[]): C[] {
  const s = candidates.map((c) => policyScore(p, c));
  return candidates
    .map((_, i) => i)
    .sort((a, b) => s[b]! - s[a]! || candidates[b]!.prior - candidates[a]!.prior || (candidates[a]!.itemId < candidates[b]!.itemId ? -1 : 1))
    .map((i) => candidates[i]!);
}
