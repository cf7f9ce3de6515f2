/**
 * Chooses the ranking policy on a validation window of the shop's own log
 * (`portrait eval prequential --targets next-click --write-policy <file>`).
 *
 * The recs worker's own code runs in process: the recommendation index
 * (src/recs/recs-index.ts) takes in the earlier part of the log, then the
 * validation part is replayed in time order; before each next click of a
 * session (a target) is observed, the candidates are generated exactly as
 * the worker generates them (src/recs/candidates.ts; the profile's recent
 * items are the session's distinct items, newest first, as the profile keeps
 * them) and the target's rank is read under every policy:
 * each single source's order, "prior", and "blend" whose weights are fit by
 * a grid search on the first half of the targets (time order). Every policy
 * is compared on the second half only, and `choosePolicy` serves the blend
 * only when it beats the best single source there.
 */
import { writeFileSync } from "node:fs";
import type { DatasetEvent } from "../data/types.js";
import { BadRequestError } from "../errors.js";
import { generateCandidates, type Candidate, type CandidateSource } from "../recs/candidates.js";
import { choosePolicy, policyScore, type RankingPolicy, type RankingPolicyFile, type RankingPolicyName } from "../recs/ranking-policy.js";
import { createRecsIndex, observeItemEvent } from "../recs/recs-index.js";
import { compileRecsOptions, type RecsOptions } from "../recs/recs-options.js";
import { RankingAccumulator } from "../metrics/ranking.js";

export interface SelectPolicyOptions {
  recs?: RecsOptions;
  /** Most targets (evenly spaced in time order). Default 4000. */
  maxTargets?: number;
  /** The cut-off of the metrics. Default 20. */
  k?: number;
  /** The metric maximised. Default "MRR@20". */
  metric?: string;
  onProgress?: (done: number, total: number, note: string) => void;
}

const BLEND_SOURCES: readonly CandidateSource[] = ["sknn", "rules", "recent", "covisit", "trending"];
const GRID: Record<string, readonly number[]> = { sknn: [1], rules: [0, 0.25, 0.5, 1], recent: [0, 0.1, 0.25, 0.5, 1], covisit: [0, 0.25, 0.5], trending: [0, 0.1] };

function blendGrid(): Array<Partial<Record<CandidateSource, number>>> {
  let out: Array<Partial<Record<CandidateSource, number>>> = [{}];
  for (const s of BLEND_SOURCES) out = out.flatMap((w) => GRID[s]!.map((v) => ({ ...w, [s]: v })));
  return out;
}

/** 1-based rank of `target` under `score` (ties pessimistic: every other candidate scored >= it ranks above), undefined when absent. */
function rankUnder(cands: readonly Candidate[], target: string, score: (c: Candidate) => number): number | undefined {
  const t = cands.find((c) => c.itemId === target);
  if (t === undefined) return undefined;
  const st = score(t);
  let above = 1;
  for (const c of cands) if (c !== t && score(c) >= st) above++;
  return above;
}

/** The validation results of every policy and the chosen one, as the policy file holds them. */
export function selectPolicy(earlier: readonly DatasetEvent[], validation: readonly DatasetEvent[], description: string, o: SelectPolicyOptions = {}): RankingPolicyFile {
  const k = o.k ?? 20;
  const metric = o.metric ?? `MRR@${k}`;
  const maxTargets = o.maxTargets ?? 4000;
  if (!Number.isInteger(maxTargets) || maxTargets < 2) throw new BadRequestError("options.maxTargets must be an integer >= 2");
  const recs = compileRecsOptions(o.recs ?? {});
  const index = createRecsIndex(recs);
  const byTime = (l: readonly DatasetEvent[]) => l.filter((e) => e.itemId).map((e, i) => ({ e, i })).sort((a, b) => a.e.timestampMs - b.e.timestampMs || a.i - b.i).map((x) => x.e);
  const observe = (e: DatasetEvent) => observeItemEvent(index, {
    userId: e.userId, itemId: e.itemId!, type: e.type, timestampMs: e.timestampMs, categoryId: e.categoryId ?? "", brand: e.brand ?? "", price: e.price ?? 0,
  });
  for (const e of byTime(earlier)) observe(e);
  const log = byTime(validation);
  const seen = new Map<string, string[]>();
  const isTarget = log.map((e) => {
    const l = seen.get(e.userId);
    if (l === undefined) seen.set(e.userId, [e.itemId!]);
    else l.push(e.itemId!);
    return l !== undefined;
  });
  const targetIdx = log.map((_, i) => i).filter((i) => isTarget[i]);
  const chosen = new Set<number>();
  if (targetIdx.length <= maxTargets) targetIdx.forEach((i) => chosen.add(i));
  else for (let j = 0; j < maxTargets; j++) chosen.add(targetIdx[Math.floor((j * targetIdx.length) / maxTargets)]!);

  const recent = new Map<string, string[]>();
  const samples: Array<{ cands: Candidate[]; target: string }> = [];
  log.forEach((e, i) => {
    if (chosen.has(i)) {
      const r = recent.get(e.userId) ?? [];
      const session = index.sessions.forRequest(e.userId, e.timestampMs);
      const cands = generateCandidates({
        userId: e.userId, known: r.length > 0, recentItems: r, topCategories: [], nextCategories: [], purchasedItems: [], exclude: [],
        nowMs: e.timestampMs, ...(session !== undefined ? { session } : {}),
      }, index, recs.candidates);
      samples.push({ cands, target: e.itemId! });
      if (samples.length % 500 === 0) o.onProgress?.(samples.length, chosen.size, "validation targets ranked");
    }
    observe(e);
    const r = (recent.get(e.userId) ?? []).filter((x) => x !== e.itemId);
    r.unshift(e.itemId!);
    recent.set(e.userId, r.slice(0, 20));
  });

  const half = Math.floor(samples.length / 2);
  const fitPart = samples.slice(0, half);
  const testPart = samples.slice(half);
  const measure = (part: typeof samples, p: RankingPolicy) => {
    const acc = new RankingAccumulator([10, k]);
    for (const s of part) {
      const r = rankUnder(s.cands, s.target, (c) => policyScore(p, c));
      acc.add(r !== undefined && r <= k ? r : undefined);
    }
    const res = acc.result();
    return { [`HR@${k}`]: res[`HR@${k}`]!, [`MRR@${k}`]: res[`MRR@${k}`]!, "HR@10": res["HR@10"]!, "MRR@10": res["MRR@10"]!, targets: res.n! };
  };
  let bestWeights: Partial<Record<CandidateSource, number>> = {};
  let bestValue = -Infinity;
  for (const weights of blendGrid()) {
    const v = measure(fitPart, { name: "blend", weights, from: "grid" })[metric]!;
    if (v > bestValue) {
      bestValue = v;
      bestWeights = weights;
    }
  }
  const results: Record<string, Record<string, number>> = {};
  const sources = new Set<CandidateSource>();
  for (const s of samples) for (const c of s.cands) for (const src of c.sources) sources.add(src);
  for (const src of [...sources].sort()) results[`source:${src}`] = measure(testPart, { name: `source:${src}` as RankingPolicyName, weights: {}, from: "" });
  results.prior = measure(testPart, { name: "prior", weights: {}, from: "" });
  results.blend = measure(testPart, { name: "blend", weights: bestWeights, from: "" });
  const policy = choosePolicy(results, metric);
  return {
    policy,
    ...(policy === "blend" ? { weights: bestWeights } : {}),
    metric,
    validation: `${description}; ${samples.length} validation targets, blend weights ${JSON.stringify(bestWeights)} fit on the first ${half} (time order), every policy measured on the last ${testPart.length}`,
    results,
  };
}

export function writePolicyFile(path: string, f: RankingPolicyFile): void {
  writeFileSync(path, `${JSON.stringify(f, null, 2)}\n`);
}
