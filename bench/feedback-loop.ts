/**
 * `npm run bench:feedback`: one explore -> log -> train -> promote cycle of
 * the feedback loop against a live engine (in-process, real nats-server on
 * 127.0.0.1, registry on), driven by the seeded click simulator
 * (bench/feedback-sim.ts) through the typed client. README "The feedback loop".
 *
 * 1. History: every simulated user's views; the engine serves its configured
 *    policy (source:sknn) with exploration at --share (default 0.1).
 * 2. Logging phase (--requests replies, k = --k): impressions and clicks
 *    published with rec_request_id and rec_propensity. Measured: the true CTR
 *    of every reply, of the greedy ones and of the exploring ones (the cost
 *    of exploration = 1 - all / greedy, same run).
 * 3. Train: `trainRanker` on the training log (what `portrait train ranker
 *    --from-feedback` runs).
 * 4. Off-policy accuracy: --runs seeded logging runs of --ope-requests
 *    replies each (still served by the initial policy); on each run's log,
 *    the challenger's estimates (slot-level IPS, SNIPS; item-level PBM-IPS,
 *    PBM-SNIPS, doubly robust; src/eval/offpolicy.ts) and their 95% intervals
 *    against its simulated truth on the same replies, and the paired
 *    challenger - logged greedy difference against the true difference. The
 *    runs are independent: each has its own seeded users and click draws, the
 *    engine's own exploration draws, and its own log (the training log is
 *    purged after each phase is read).
 * 5. Promote through the registry (refused unless the paired lower bound wins),
 *    wait for the hot swap, and serve --requests more replies: the promoted
 *    ranker's true CTR (greedy replies) against the initial policy's (step 2).
 *
 *   node dist-bench/bench/feedback-loop.js [--seed N] [--requests N] [--ope-requests N] [--runs N] [--share X] [--pool N] [--source-share X] [--k N] [--force] [--no-record] [--dump FILE]
 *
 * --dump FILE writes the training log and every run's log (with the simulated
 * user of each reply) as JSON, for bench/ope-replay.ts to re-score estimators
 * on without an engine.
 */
import { connect } from "nats";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startNatsServer } from "../src/bus/nats-server-launcher.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { Engine } from "../src/engine.js";
import { compareOffPolicy, estimateOffPolicy, LOGGED_GREEDY, offPolicyContext, readFeedbackLog, weightsTarget, type LoggedRequest } from "../src/eval/offpolicy.js";
import { ModelRegistry } from "../src/models/registry.js";
import { TRAIN_SHARE, trainRanker } from "../src/train/train-ranker.js";
import { SIM_DEFAULTS, historyEvents, makeWorld, runPhase, truthOnLog, userId, type PhaseResult, type SimWorld } from "./feedback-sim.js";
import { appendResults, printTable } from "./report.js";

const { values: a } = parseArgs({
  options: {
    seed: { type: "string", default: "1" },
    requests: { type: "string", default: "3000" },
    "ope-requests": { type: "string", default: "1500" },
    runs: { type: "string", default: "20" },
    share: { type: "string", default: "0.1" },
    pool: { type: "string", default: "20" },
    "source-share": { type: "string", default: "0" },
    k: { type: "string", default: "5" },
    "no-record": { type: "boolean", default: false },
    force: { type: "boolean", default: false },
    dump: { type: "string" },
  },
});
const SEED = Number(a.seed);
const REQUESTS = Number(a.requests);
const OPE_REQUESTS = Number(a["ope-requests"]);
const RUNS = Number(a.runs);
const SHARE = Number(a.share);
const POOL = Number(a.pool);
const SOURCE_SHARE = Number(a["source-share"]);
const K = Number(a.k);

async function waitFor(what: string, f: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function counter(c: { get(): Promise<{ values: Array<{ value: number }> }> }): Promise<number> {
  return (await c.get()).values.reduce((s, v) => s + v.value, 0);
}

/** The logged replies of one phase, with the user each was served to. */
function ofPhase(log: readonly LoggedRequest[], phase: PhaseResult): Array<LoggedRequest & { user: number }> {
  const user = new Map(phase.replies.map((r) => [r.reply.requestId, r.user]));
  return log.filter((q) => user.has(q.record.requestId)).map((q) => ({ ...q, user: user.get(q.record.requestId)! }));
}

function truth(w: SimWorld, logged: Array<LoggedRequest & { user: number }>, slate: (q: LoggedRequest) => string[]): number {
  return truthOnLog(w, logged.map((q) => ({ user: q.user, impressions: q.impressions.length, slate: slate(q) })));
}

async function main(): Promise<void> {
  const load0 = loadavg().map((x) => x.toFixed(2)).join(" ");
  const nats = await startNatsServer({ readyTimeoutMs: 20_000 });
  const nc = await connect({ servers: nats.url });
  const dataDir = mkdtempSync(join(tmpdir(), "portrait-bench-fb-"));
  const modelsDir = mkdtempSync(join(tmpdir(), "portrait-bench-fb-models-"));
  const prefix = "fb";
  const engine = await Engine.start({
    natsUrl: nats.url, embeddedNats: "never", partitions: 2, workers: 2, httpPort: -1, logLevel: "warn", dataDir, subjectPrefix: prefix,
    modelsDir, lstmModel: "off", churnModel: "off", propensityModel: "off", deepfmModel: "off", rankerModel: "current", modelRegistry: true,
    explorationShare: SHARE, explorationPool: POOL, explorationSourceShare: SOURCE_SHARE,
  });
  const client = new PortraitClient(nc, { subjectPrefix: prefix, partitions: 2, requestTimeoutMs: 30_000 });
  const js = nc.jetstream();
  const jsm = await nc.jetstreamManager();
  const rows: string[][] = [];
  const notes: string[] = [];
  try {
    const w = makeWorld(prefix, { ...SIM_DEFAULTS, seed: SEED });
    const t0 = Date.now() - 2 * 86_400_000;
    const history = historyEvents(w, t0);
    await client.publishMany(history);
    await waitFor("history applied", async () => (await counter(engine.metrics.eventsApplied)) >= history.length);
    await waitFor("recs index", async () => (await client.recommend(userId(w, 0), { k: K })).items.length >= K);
    const now = Date.now() - 3_600_000;
    const logged = async (n: number) => waitFor("training log", async () => (await counter(engine.metrics.feedbackLogged)) >= n, 300_000);
    let expected = 0;

    // 2. Logging phase under the initial policy.
    const A = await runPhase(client, w, { requests: REQUESTS, seed: SEED * 1000 + 1, k: K, timeMs: now });
    expected += A.published;
    await logged(expected);
    const cost = 1 - A.ctrAll / A.ctrGreedy;
    console.log(`logging: ${REQUESTS} replies in ${A.seconds.toFixed(1)} s, ${A.explored} explored; true CTR all ${A.ctrAll.toFixed(4)}, greedy ${A.ctrGreedy.toFixed(4)}, explored ${A.ctrExplored.toFixed(4)}`);
    const initialPolicy = A.replies.find((r) => !r.reply.explored)?.reply.modelVersion ?? "";

    // 3. Train on the training log.
    // Each phase reads its own records: the bench owns this deployment, so the training log is purged once a phase's is read
    // (reading the whole, growing log once per run made the runs ever slower).
    const readPhase = async (phase: PhaseResult) => {
      const log = ofPhase(await readFeedbackLog(js, jsm, engine.subjects), phase);
      await jsm.streams.purge(engine.subjects.feedbackStream);
      return log;
    };
    const logA = await readPhase(A);
    const dumped: { seed: number; train: unknown; runs: unknown[] } = { seed: SEED, train: logA, runs: [] };
    const trained = trainRanker(logA, { modelsDir, source: `stream:${engine.subjects.feedbackStream}` });
    const target = weightsTarget(`ranker@${trained.manifest.version}`, trained.weights);
    console.log(`trained ${trained.manifest.version}: weights ${JSON.stringify(trained.weights)}; evaluation ${JSON.stringify(trained.manifest.evaluation)}`);
    const truthChallengerA = truth(w, logA, (q) => target.slate(q.record));
    const truthGreedyA = truth(w, logA, (q) => LOGGED_GREEDY.slate(q.record));
    // The gate's evaluation window: the later replies trainRanker scored on.
    const testA = [...logA].sort((x, y) => x.record.servedAtMs - y.record.servedAtMs).slice(Math.floor(logA.length * TRAIN_SHARE));
    const gateTruth = truth(w, testA, (q) => target.slate(q.record)) - truth(w, testA, (q) => LOGGED_GREEDY.slate(q.record));

    // 4. Off-policy accuracy over seeded runs (logged by the initial policy).
    const ESTIMATORS = [["ips", "IPS"], ["snips", "SNIPS"], ["pbm", "PBM-IPS"], ["pbmSn", "PBM-SNIPS"], ["dr", "DR"]] as const;
    const acc = ESTIMATORS.map(() => ({ errs: [] as number[], signed: [] as number[], halfWidth: [] as number[], within: 0, covered: 0 }));
    const diffAcc = { covered: 0, positive: 0, truths: [] as number[] };
    for (let run = 1; run <= RUNS; run++) {
      const P = await runPhase(client, w, { requests: OPE_REQUESTS, seed: SEED * 1000 + 100 + run, k: K, timeMs: now });
      expected += P.published;
      await logged(expected);
      const log = await readPhase(P);
      dumped.runs.push(log);
      const ctx = offPolicyContext(log);
      const e = estimateOffPolicy(log, target, ctx);
      const t = truth(w, log, (q) => target.slate(q.record));
      const parts: string[] = [];
      ESTIMATORS.forEach(([key, label], x) => {
        const i = e[key];
        const err = (i.estimate - t) / t;
        acc[x]!.errs.push(Math.abs(err));
        acc[x]!.signed.push(err);
        acc[x]!.halfWidth.push((i.high - i.low) / 2 / t);
        if (Math.abs(err) <= 0.1) acc[x]!.within++;
        if (i.low <= t && t <= i.high) acc[x]!.covered++;
        parts.push(`${label} ${i.estimate.toFixed(4)} [${i.low.toFixed(4)}, ${i.high.toFixed(4)}] ${(err * 100).toFixed(1)}%`);
      });
      const d = compareOffPolicy(ctx, target, LOGGED_GREEDY);
      const td = t - truth(w, log, (q) => LOGGED_GREEDY.slate(q.record));
      diffAcc.truths.push(td);
      if (d.low <= td && td <= d.high) diffAcc.covered++;
      if (d.low > 0) diffAcc.positive++;
      console.log(`ope run ${run}: truth ${t.toFixed(4)}; ${parts.join("; ")}; DR challenger - greedy ${d.estimate.toFixed(4)} [${d.low.toFixed(4)}, ${d.high.toFixed(4)}] vs true ${td.toFixed(4)}; ` +
        `theta ${ctx.bias?.theta.map((x) => x.toFixed(2)).join(" ")}; ${e.matched} impressions agree in slot, ${e.matchedItems} in item`);
    }

    if (a.dump !== undefined) writeFileSync(a.dump, JSON.stringify(dumped));

    // 5. Promote (the registry decides on the evaluation), wait for the swap, serve.
    const reg = await ModelRegistry.open(nc, { prefix });
    await reg.push(trained.dir);
    let decision: string;
    try {
      decision = `promoted: ${(await reg.promote("ranker", trained.manifest.version)).reason}`;
    } catch (err) {
      decision = `refused: ${(err as Error).message}`;
      // --force: measure the refused challenger live anyway (recorded as forced, in the registry and in the table).
      if (a.force) {
        await reg.promote("ranker", trained.manifest.version, { force: true, reason: "bench --force: measuring a refused challenger" });
        decision = `forced after ${decision}`;
      }
    }
    console.log(decision);
    const promoted = decision.startsWith("promoted") || decision.startsWith("forced");
    let B: PhaseResult | undefined;
    if (promoted) {
      await waitFor("hot swap", async () => (await client.recommend(userId(w, 1), { k: K })).modelVersion === `ranking ranker@${trained.manifest.version}`);
      B = await runPhase(client, w, { requests: REQUESTS, seed: SEED * 1000 + 2, k: K, timeMs: now });
      expected += B.published;
    }

    const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    rows.push(["initial policy (" + initialPolicy + "): true CTR of its greedy replies", A.ctrGreedy.toFixed(4), `${REQUESTS} replies, ${A.explored} of them explored`]);
    rows.push(["exploration cost while it runs (share " + SHARE + ", pool " + POOL + ", source share " + SOURCE_SHARE + ")", pct(cost), `all replies ${A.ctrAll.toFixed(4)} vs greedy ${A.ctrGreedy.toFixed(4)}, explored ${A.ctrExplored.toFixed(4)}; target <= 5%`]);
    rows.push(["promotion of the feedback-trained ranker", decision.startsWith("forced") ? "refused, then forced (--force)" : promoted ? "promoted" : "refused", decision.replace(/\|/g, "/")]);
    if (B !== undefined) {
      rows.push(["promoted ranker: true CTR of its greedy replies", B.ctrGreedy.toFixed(4), `ratio to the initial policy ${(B.ctrGreedy / A.ctrGreedy).toFixed(2)}x; target >= 1.2x`]);
    }
    const g = trained.test.vsLoggedGreedy;
    rows.push(["the gate: paired DR difference challenger - logged greedy on the evaluation window", `${g.estimate.toFixed(4)} [${g.low.toFixed(4)}, ${g.high.toFixed(4)}]`,
      `${testA.length} later replies of the log; true difference ${gateTruth.toFixed(4)}; promoted only when the lower bound is > 0`]);
    rows.push(["same logged replies, simulated truth: challenger vs logged greedy", `${truthChallengerA.toFixed(4)} vs ${truthGreedyA.toFixed(4)}`, `ratio ${(truthChallengerA / truthGreedyA).toFixed(2)}x (the challenger re-ranks each reply's pool)`]);
    ESTIMATORS.forEach(([, label], x) => {
      const r = acc[x]!;
      rows.push([`off-policy ${label} of the challenger, ${RUNS} seeded runs of ${OPE_REQUESTS} replies`, `mean abs error ${pct(mean(r.errs))}`,
        `within 10%: ${r.within}/${RUNS}; 95% interval covers the truth: ${r.covered}/${RUNS}; mean signed error ${pct(mean(r.signed))}; mean half-width ${pct(mean(r.halfWidth))} of the truth`]);
    });
    rows.push([`paired DR difference challenger - logged greedy, same runs`, `covers the true difference ${diffAcc.covered}/${RUNS}`,
      `true difference ${mean(diffAcc.truths).toFixed(4)} on average; lower bound > 0 in ${diffAcc.positive}/${RUNS} runs`]);
    // Replies an estimate needs for a 95% half-width of 10% of the truth (half-width ~ 1 / sqrt(replies)).
    const needed = ESTIMATORS.map(([, label], x) => `${label} ${Math.ceil(OPE_REQUESTS * (mean(acc[x]!.halfWidth) / 0.1) ** 2)}`).join(", ");
    notes.push(`Logged replies an estimate needs for a 95% half-width of 10% of the truth, from the mean half-width at ${OPE_REQUESTS} (scaling as 1/sqrt(replies)): ${needed}.`);
    notes.push(`World: seed ${SEED}, ${w.o.users} users, ${w.o.items} items in ${w.o.categories} categories, ${w.o.liked} liked categories per user, ${w.o.history} history views each; k ${K}. True CTR = expected clicks per shown item from the simulator's known probabilities.`);
    notes.push(`Load average (1, 5, 15 min) before: ${load0}; after: ${loadavg().map((x) => x.toFixed(2)).join(" ")} on ${cpus().length} cores.`);
    printTable("feedback loop", ["measure", "value", "notes"], rows);
    if (!a["no-record"]) {
      appendResults("feedback loop", `npm run bench:feedback -- --seed ${SEED} --requests ${REQUESTS} --ope-requests ${OPE_REQUESTS} --runs ${RUNS} --share ${SHARE} --pool ${POOL} --source-share ${SOURCE_SHARE} --k ${K}${a.force ? " --force" : ""}`,
        ["measure", "value", "notes"], rows, notes.map((n) => `- ${n}`));
    }
  } finally {
    await engine.close();
    await nc.close();
    await nats.stop();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(modelsDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
