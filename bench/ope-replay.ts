/**
 * Development aid (not a scenario, records nothing): re-scores the
 * off-policy estimators on logs dumped by `feedback-loop.js --dump FILE`
 * against the simulator's truth, without an engine. Checks that the logged
 * propensities are the exploration policy's, prints the position bias of the
 * training log beside the simulator's, then per run every estimate and the
 * paired DR difference to the logged greedy, and their accuracy and coverage.
 * The challenger is refitted from the dump's training log as trainRanker does.
 *   node dist-bench/bench/ope-replay.js FILE [--theta-train | --theta-true] [--reward-train | --reward-none]
 * --theta-train: every run uses the training log's position bias (with its
 * standard errors) instead of estimating its own; --theta-true: the
 * simulator's own (what the estimated one costs in accuracy and bias).
 * --reward-train: DR's reward model fitted on the whole training log instead
 * of cross-fitted on each run; --reward-none: no reward model (f = 0), so
 * DR is PBM-IPS. Last line: DR's mean standard error against its realised
 * RMS error (how wide its intervals are for the errors they cover).
 */
import { readFileSync } from "node:fs";
import { estimateOffPolicy, offPolicyContext, weightsTarget, LOGGED_GREEDY, compareOffPolicy, type LoggedRequest } from "../src/eval/offpolicy.js";
import { estimatePositionBias, fitClickModel } from "../src/eval/click-model.js";
import { loggedArms, propensityOf } from "../src/recs/exploration.js";
import { SIM_DEFAULTS, makeWorld, truthOnLog, examine } from "./feedback-sim.js";

type L = LoggedRequest & { user: number };
const file = process.argv[2]!;
const mode = process.argv.includes("--theta-train") ? "train" : process.argv.includes("--theta-true") ? "true" : "run";
const reward = process.argv.includes("--reward-train") ? "train" : process.argv.includes("--reward-none") ? "none" : "cross";
const d = JSON.parse(readFileSync(file, "utf8")) as { seed: number; train: L[]; runs: L[][] };
const w = makeWorld("fb", { ...SIM_DEFAULTS, seed: d.seed });
const cut = Math.floor(d.train.length * 0.7);
const weights = fitClickModel(d.train.slice(0, cut), 1).weights;
const target = weightsTarget("ch", weights);
// Check propensities.
let bad = 0;
let tot = 0;
for (const q of d.train) {
  const arms = loggedArms(q.record);
  for (const m of q.impressions) {
    tot++;
    const a = arms.get(m.itemId);
    const p = a === undefined ? 0 : propensityOf(q.record.share, a.explore, a.index, m.slot);
    if (Math.abs(p - m.propensity) > 1e-9) bad++;
  }
}
console.log(`propensity mismatches ${bad}/${tot}; pool sizes ${[...new Set(d.train.map((q) => q.record.pool.length))]}; explored ${d.train.filter((q) => q.record.explored).length}`);
const tb = estimatePositionBias(d.train, 5)!;
console.log(`theta (train log) ${tb.theta.map((x) => x.toFixed(3))} se ${tb.se.map((x) => x.toFixed(3))}; true ${[0, 1, 2, 3, 4].map((j) => examine(j).toFixed(3))}`);
const truth = (log: L[], t: typeof target) => truthOnLog(w, log.map((q) => ({ user: q.user, impressions: q.impressions.length, slate: t.slate(q.record) })));
const names = ["ips", "snips", "pbm", "pbmSn", "dr"] as const;
const acc = Object.fromEntries(names.map((n) => [n, { err: [] as number[], signed: [] as number[], cov: 0, within: 0 }]));
const diffAcc = { cov: 0, pos: 0, n: 0 };
const trainModel = fitClickModel(d.train, 1);
const drSe: number[] = [];
for (const log of d.runs) {
  const trueBias = { theta: [0, 1, 2, 3, 4].map((j) => examine(j) / examine(0)), se: [0, 0, 0, 0, 0], replies: 0 };
  const clickModel = reward === "train" ? trainModel : reward === "none" ? { weights: {}, slotIntercepts: [-50] } : undefined;
  const ctx = offPolicyContext(log, { ...(mode === "train" ? { positionBias: tb } : mode === "true" ? { positionBias: trueBias } : {}), ...(clickModel !== undefined ? { clickModel } : {}) });
  const e = estimateOffPolicy(log, target, ctx);
  const t = truth(log, target);
  const line: string[] = [`truth ${t.toFixed(4)}`];
  for (const n of names) {
    const i = e[n];
    const err = (i.estimate - t) / t;
    acc[n]!.err.push(Math.abs(err));
    acc[n]!.signed.push(err);
    if (i.low <= t && t <= i.high) acc[n]!.cov++;
    if (Math.abs(err) <= 0.1) acc[n]!.within++;
    line.push(`${n} ${i.estimate.toFixed(4)} ±${((i.high - i.low) / 2).toFixed(4)}`);
    if (n === "dr") drSe.push((i.high - i.low) / 2 / 1.96 / t);
  }
  const dif = compareOffPolicy(ctx, target, LOGGED_GREEDY);
  const td = t - truth(log, LOGGED_GREEDY);
  diffAcc.n++;
  if (dif.low <= td && td <= dif.high) diffAcc.cov++;
  if (dif.low > 0) diffAcc.pos++;
  line.push(`diff ${dif.estimate.toFixed(4)} [${dif.low.toFixed(4)}, ${dif.high.toFixed(4)}] true ${td.toFixed(4)}`);
  console.log(line.join("; "));
}
const mean = (x: number[]) => x.reduce((a, b) => a + b, 0) / x.length;
for (const n of names) console.log(`${n}: mean abs err ${(mean(acc[n]!.err) * 100).toFixed(1)}% mean signed ${(mean(acc[n]!.signed) * 100).toFixed(1)}% within ${acc[n]!.within}/${d.runs.length} covers ${acc[n]!.cov}/${d.runs.length}`);
console.log(`diff vs greedy: covers ${diffAcc.cov}/${diffAcc.n}, lower bound > 0 in ${diffAcc.pos}`);
const rms = Math.sqrt(mean(acc.dr!.signed.map((x) => x * x)));
console.log(`dr: mean standard error ${(mean(drSe) * 100).toFixed(2)}% of the truth (half-width / 1.96) vs realised RMS error ${(rms * 100).toFixed(2)}%: ratio ${(mean(drSe) / rms).toFixed(2)}`);
// The gate on the training log's later 30%.
const test = d.train.slice(cut);
const ctxT = offPolicyContext(test);
const g = compareOffPolicy(ctxT, target, LOGGED_GREEDY);
console.log(`gate on test 30%: diff ${g.estimate.toFixed(4)} [${g.low.toFixed(4)}, ${g.high.toFixed(4)}] true ${(truth(test as L[], target) - truth(test as L[], LOGGED_GREEDY)).toFixed(4)}`);
