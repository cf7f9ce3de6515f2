/**
 * `npm run bench:beyond-ingest`: what reviews, social ties and risk signals
 * together cost on ingest (issue 18's target: <= 10% of ingest throughput,
 * same run, with and without). A real nats-server (127.0.0.1, free port,
 * temp store) and an in-process engine; the LSTM, DeepFM, churn and
 * propensity models off, so the profile update is the largest share of the
 * work it can be (an upper bound of the share), the sentiment model on.
 *
 * Each run is a child process of its own (this file with --run on|off) with
 * its own nats-server and a fresh data dir, so no run inherits another's JIT,
 * heap, broker streams or LMDB files: in one process (before 2026-12-07) the
 * runs of one mode spread over 92-137 µs per event, more than the two modes
 * differed. A run publishes a VIEW per user and applies them with an engine
 * that is then stopped (every user has a profile, every follow target has
 * categories to answer with, and no actor is in memory), publishes the
 * shop's events, and starts an engine on that data dir, with
 * `profile.beyondClicks` true or false. Events/s = the shop's events / the
 * time from the engine being ready to as many messages applied (the drain
 * of the backlog: every shop event's own work, reviews, risk, the social
 * events and their outbox entries included). With the switch on, the
 * notices the social events cause (each FOLLOW two, FOLLOWED and the
 * INTERESTS answer; each SHARE with a target one; batched per committed
 * batch and recipients' partition, README "Social ties") are published
 * during the drain, so they queue behind the backlog in each partition and
 * are applied after it; the time to the last of them is reported too. In a
 * live stream they ride in the batches of the events around them.
 * Each run reports the CPU per shop event of its process (engine, to the
 * last notice) and of its nats-server, and of the process's threads by
 * group (Linux /proc/self/task): "main"; "V8" (the 4 threads with the ids
 * right after main's: V8's platform workers, where GC marking, sweeping and
 * scavenging helpers and concurrent compilation run); "recs" and "shards"
 * (the busy threads the measured engine started, in their order: the recs
 * worker, then the 2 shards); and "uv" (the rest: libuv's pool, where
 * lmdb-js commits). The recs worker does the same work in both modes (the
 * same item events): its on / off ratio is the run's control, how much the
 * machine alone moved the CPU per unit of work.
 * The runs go --rounds pairs in ABBA order (on, off, off, on, ...); the
 * table gives each mode's median, its spread ((max - min) / median) and the
 * cost from the ratio of the medians.
 *
 * Mix (seeded): 71.5% VIEW, 14% ADD_TO_CART, 10% PURCHASE, 2% REFUND (of the
 * user's last bought item when there is one), 1% REVIEW with the text of a real Amazon review
 * (../shared/data/amazon-reviews) and its stars, 1% FOLLOW, 0.5% SHARE with a
 * target, over --users users in 8 partitions on 2 shard workers.
 *
 *   node dist-bench/bench/beyond-ingest.js [--events N] [--users N] [--rounds R] [--datasets DIR] [--no-social] [--no-reviews] [--mix beyond|generator] [--models off|bundled] [--only on|off] [--no-record]
 *   (node options given to the parent, such as --cpu-prof, are passed to each run's process)
 */
import { connect } from "nats";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startNatsServer } from "../src/bus/nats-server-launcher.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { Engine } from "../src/engine.js";
import { EventType, pb, type Event, type IEvent } from "../src/wire/proto.js";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { stateRiskFlagBits } from "../src/actors/risk.js";
import { applyEvent, newUserState, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { analyseReviewEvent, SentimentModel } from "../src/models/sentiment-model.js";
import { appendResults, printTable } from "./report.js";
import { makeBeyondEvents, reviewTexts, type BeyondMix } from "./beyond-events.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "100000" },
    users: { type: "string", default: "20000" },
    rounds: { type: "string", default: "3" },
    datasets: { type: "string", default: "../shared/data" },
    "no-social": { type: "boolean", default: false },
    "no-reviews": { type: "boolean", default: false },
    "no-record": { type: "boolean", default: false },
    mix: { type: "string", default: "beyond" },
    models: { type: "string", default: "off" },
    only: { type: "string", default: "" },
    run: { type: "string", default: "" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (a.help) {
  process.stdout.write(`npm run bench:beyond-ingest -- [options]: ingest with and without reviews, social ties and risk (see the comment at the top of bench/beyond-ingest.ts)
  --events N     shop events per run (default 100000)
  --users N      users (default 20000)
  --rounds R     pairs in ABBA order (on, off, off, on, ...), each run a process of its own (default 3)
  --datasets DIR the public data sets, for the review texts (default ../shared/data)
  --no-social    FOLLOW and SHARE events become VIEWs (what the social notices cost)
  --no-reviews   REVIEW events become VIEWs (what the sentiment model costs)
  --mix M        beyond (default: 1% reviews, 1.5% social, 2% refunds) or generator (the max-ingest stream of
                 bench/generator.ts with a review after 10% of purchases: 0.23% reviews; bench/beyond-events.ts)
  --models M     off (default: only the sentiment model) or bundled (LSTM, DeepFM, churn, propensity as the
                 engine runs by default and max-ingest measures: the denominator of "ingest throughput")
  --no-record    print only; do not append to bench/RESULTS.md
  --only on|off  runs of one mode only (for a CPU profile of it: node --cpu-prof, passed to each run); implies --no-record
  --run on|off   (internal) one run in this process; prints its figures as one JSON line
`);
  process.exit(0);
}
const EVENTS = Number(a.events);
const USERS = Number(a.users);
const ROUNDS = Number(a.rounds);
if (a.mix !== "beyond" && a.mix !== "generator") throw new Error("--mix must be beyond or generator");
if (a.models !== "off" && a.models !== "bundled") throw new Error("--models must be off or bundled");
const MODELS_OFF = a.models === "off";
const PARTITIONS = 8;
const WORKERS = 2;
const ONLY = a.only === "" ? undefined : a.only === "on";
if (a.only !== "" && a.only !== "on" && a.only !== "off") throw new Error("--only must be on or off");
if (a.run !== "" && a.run !== "on" && a.run !== "off") throw new Error("--run must be on or off");

/**
 * The profile update alone, one thread, no bus: µs of CPU per shop event of
 * the same events (social ones left out: they have no applyEvent) through
 * applyEvent, with beyondClicks (the sentiment model on each review's text,
 * the risk flags before and after, as the shard does) and without; the best
 * of 3 passes each, alternating.
 */
function pureProfileCost(events: IEvent[]): [number, number] {
  const model = SentimentModel.load(resolveModel(BUNDLED_MODELS_DIR, "sentiment").dir);
  const evs = events.filter((e) => e.type !== EventType.FOLLOW && e.type !== EventType.SHARE).map((e) => pb.Event.create(e));
  const pass = (beyond: boolean): number => {
    const o = compileProfileOptions({ beyondClicks: beyond });
    const states = new Map<string, UserState>();
    const c0 = process.cpuUsage();
    for (const x of evs) {
      const e = pb.Event.create(x) as ProfileEvent & Event;
      let st = states.get(e.userId);
      if (st === undefined) states.set(e.userId, (st = newUserState()));
      if (beyond) {
        const review = analyseReviewEvent(model, e);
        if (review !== undefined) e.review = review;
        const before = stateRiskFlagBits(st);
        applyEvent(st, e, o);
        if ((stateRiskFlagBits(st) & ~before) < 0) throw new Error("unreachable");
      } else {
        applyEvent(st, e, o);
      }
    }
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / events.length;
  };
  const on: number[] = [];
  const off: number[] = [];
  for (let k = 0; k < 3; k++) {
    on.push(pass(true));
    off.push(pass(false));
  }
  return [Math.min(...on), Math.min(...off)];
}

/** CPU time (user + system) of a process so far, ms, from /proc (Linux; 0 elsewhere). */
function cpuMsOf(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}

async function applied(engine: Engine): Promise<number> {
  return (await engine.metrics.eventsApplied.get()).values[0]?.value ?? 0;
}

/** CPU ms of each thread of this process so far, by thread id (/proc/self/task; empty elsewhere). */
function threadCpuMs(): Map<number, number> {
  const out = new Map<number, number>();
  try {
    for (const t of readdirSync("/proc/self/task")) {
      try {
        const f = readFileSync(`/proc/self/task/${t}/stat`, "utf8");
        const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
        out.set(Number(t), ((Number(fields[11]) + Number(fields[12])) * 1000) / 100);
      } catch {
        // the thread ended
      }
    }
  } catch {
    // not Linux
  }
  return out;
}

/** V8's platform threads: node's --v8-pool-size, or 4 (the default on a machine with more than 4 cores is still 4). */
const V8_POOL_SIZE = Number(process.execArgv.find((x) => x.startsWith("--v8-pool-size="))?.split("=")[1] ?? 4);

/** Thread groups of a run's process (see the header). */
const GROUPS = ["main", "V8", "shards", "recs", "uv"] as const;
type Group = (typeof GROUPS)[number];

/** What one run (one process, one mode) measured. */
interface RunResult {
  on: boolean;
  /** Load average (1 min) when the engine started. */
  load: number;
  /** Shop events / s to the drain point and to the last notice. */
  rate: number;
  rateAll: number;
  /** CPU µs per shop event: the process (to the last notice and to the drain point) and its nats-server. */
  engineCpuUs: number;
  drainCpuUs: number;
  natsCpuUs: number;
  /** CPU µs per shop event by thread group, and the busy worker threads' own, in the order they started. */
  threads: Record<Group, number>;
  workers: number[];
  /** The same, per shop event of the second half of the drain (from half the shop's events applied to the end): without the start and the JIT's warm-up of the first. */
  second: { engineCpuUs: number; natsCpuUs: number; threads: Record<Group, number> };
  /**
   * The same for each quarter of the drain (from the engine's start to a quarter of the shop's events applied, to a
   * half, ...): a cost fixed per engine start (compilation, the JIT's warm-up) lands in the first ones, a cost per
   * event in all four.
   */
  quarters: { engineCpuUs: number; natsCpuUs: number; threads: Record<Group, number> }[];
  batches: number;
  drainBatches: number;
  sizes: string;
  mix: string;
}

/** Batches by size so far ("≤ le: count" of the histogram's buckets, not cumulative). */
async function batchSizes(engine: Engine): Promise<string> {
  const b = (await engine.metrics.batchSize.get()).values.filter((v) => v.metricName?.endsWith("_bucket"));
  let prev = 0;
  const out: string[] = [];
  for (const v of b) {
    if (v.value > prev) out.push(`≤${v.labels.le}: ${v.value - prev}`);
    prev = v.value;
  }
  return out.join(", ");
}

/** Batches the engine applied so far (the batch-size histogram's count). */
async function batches(engine: Engine): Promise<number> {
  return (await engine.metrics.batchSize.get()).values.find((v) => v.metricName?.endsWith("_count"))?.value ?? 0;
}

const mixOf: BeyondMix = { events: EVENTS, users: USERS, noSocial: a["no-social"], noReviews: a["no-reviews"], mix: a.mix as "beyond" | "generator" };

/** One run in this process (--run): its own nats-server and data dir; the result as one JSON line on stdout. */
async function runOne(on: boolean): Promise<void> {
  // V8's platform threads are the first ones after the main thread (--v8-pool-size, 4 by default); the libuv pool, started
  // by the module loader's reads, comes after them.
  const v8Threads = new Set([...threadCpuMs().keys()].filter((t) => t !== process.pid).sort((x, y) => x - y).slice(0, V8_POOL_SIZE));
  const texts = await reviewTexts(a.datasets!);
  const nats = await startNatsServer({ readyTimeoutMs: 20_000 });
  const nc = await connect({ servers: nats.url });
  const dataDir = mkdtempSync(join(tmpdir(), "portrait-bench-beyond-"));
  const prefix = `bb${on ? "on" : "off"}`;
  const start = (beyondClicks: boolean) => Engine.start({
    natsUrl: nats.url, embeddedNats: "never", partitions: PARTITIONS, workers: WORKERS, httpPort: -1, logLevel: "warn", dataDir, subjectPrefix: prefix,
    ...(MODELS_OFF ? { lstmModel: "off", churnModel: "off", deepfmModel: "off", propensityModel: "off" } : {}), modelRegistry: false, profile: { beyondClicks },
  });
  try {
    const t0 = Date.now() - 2 * 86_400_000;
    const client = new PortraitClient(nc, { partitions: PARTITIONS, subjectPrefix: prefix, requestTimeoutMs: 30_000 });
    const e0 = await start(on);
    await client.publishMany(Array.from({ length: USERS }, (_, u) => ({ eventId: `${prefix}-f${u}`, userId: `u${u}`, type: EventType.VIEW, timestampMs: t0, itemId: "i0", categoryId: `c${u % 30}` })));
    while ((await applied(e0)) < USERS) await new Promise((r) => setTimeout(r, 20));
    await e0.close();
    const { events, notices } = makeBeyondEvents(prefix, texts, t0, mixOf);
    const n = (t: EventType) => events.filter((e) => e.type === t).length;
    const mix = `${n(EventType.REVIEW)} reviews, ${n(EventType.FOLLOW)} follows, ${n(EventType.SHARE)} shares, ${n(EventType.REFUND)} refunds, ${n(EventType.PURCHASE)} purchase lines of ${events.length} events (${notices} notices with the switch on)`;
    await client.publishMany(events);
    const load = loadavg()[0]!;
    const threadsBefore = new Set(threadCpuMs().keys());
    const engine = await start(on);
    const started = performance.now();
    const cpu0 = process.cpuUsage();
    const threads0 = threadCpuMs();
    const nats0 = cpuMsOf(nats.pid);
    const want = EVENTS + (on ? notices : 0);
    let drainMs = 0;
    let drainCpuUs = 0;
    let drainBatches = 0;
    let k = 0;
    let half: { applied: number; cpu: NodeJS.CpuUsage; threads: Map<number, number>; natsMs: number } | undefined;
    type Snap = NonNullable<typeof half>;
    const marks: Snap[] = [{ applied: 0, cpu: cpu0, threads: threads0, natsMs: nats0 }];
    while ((k = await applied(engine)) < want) {
      if (marks.length < 4 && k >= (EVENTS * marks.length) / 4) {
        marks.push({ applied: k, cpu: process.cpuUsage(), threads: threadCpuMs(), natsMs: cpuMsOf(nats.pid) });
        if (marks.length === 3) half = marks[2];
      }
      if (drainMs === 0 && k >= EVENTS) {
        drainMs = performance.now() - started;
        const c = process.cpuUsage(cpu0);
        drainCpuUs = (c.user + c.system) / EVENTS;
        drainBatches = await batches(engine);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    const ms = performance.now() - started;
    const cpu = process.cpuUsage(cpu0);
    const threads1 = threadCpuMs();
    const natsCpuUs = ((cpuMsOf(nats.pid) - nats0) * 1000) / EVENTS;
    const engineCpuUs = (cpu.user + cpu.system) / EVENTS;
    const byGroup = (from: Map<number, number>, events: number) => {
      const threads: Record<Group, number> = { main: 0, V8: 0, shards: 0, recs: 0, uv: 0 };
      // The engine's busy new threads in the order they started (thread ids grow): the recs worker (started before the
      // shard pool), then the shards. The DeepFM inference pool's threads, idle without queries, stay below 0.5 µs.
      const workers: number[] = [];
      for (const tid of [...threads1.keys()].sort((x, y) => x - y)) {
        const us = ((threads1.get(tid)! - (from.get(tid) ?? 0)) * 1000) / events;
        if (tid === process.pid) threads.main += us;
        else if (v8Threads.has(tid)) threads.V8 += us;
        else if (threadsBefore.has(tid)) threads.uv += us;
        else if (us >= 0.5) {
          threads[workers.length === 0 ? "recs" : "shards"] += us;
          workers.push(us);
        }
      }
      return { threads, workers };
    };
    const { threads, workers } = byGroup(threads0, EVENTS);
    const h = half ?? { applied: 0, cpu: cpu0, threads: threads0, natsMs: nats0 };
    const secondEvents = EVENTS - h.applied;
    const cpuHalf = process.cpuUsage(h.cpu);
    const second = {
      engineCpuUs: (cpuHalf.user + cpuHalf.system) / secondEvents, natsCpuUs: ((cpuMsOf(nats.pid) - h.natsMs) * 1000) / secondEvents, threads: byGroup(h.threads, secondEvents).threads,
    };
    const quarters = marks.map((m, q) => {
      const next = q + 1 < marks.length ? marks[q + 1]! : undefined;
      const events = (next?.applied ?? EVENTS) - m.applied;
      const c = next === undefined ? process.cpuUsage(m.cpu) : { user: next.cpu.user - m.cpu.user, system: next.cpu.system - m.cpu.system };
      const natsMs = (next?.natsMs ?? cpuMsOf(nats.pid)) - m.natsMs;
      const upTo = next?.threads ?? threads1;
      const threads: Record<Group, number> = { main: 0, V8: 0, shards: 0, recs: 0, uv: 0 };
      const all = byGroup(m.threads, events);
      // byGroup measures to threads1; take the part up to the next mark.
      const toNext = byGroup(upTo, events);
      for (const g of GROUPS) threads[g] = next === undefined ? all.threads[g] : all.threads[g] - toNext.threads[g];
      return { engineCpuUs: (c.user + c.system) / events, natsCpuUs: (natsMs * 1000) / events, threads };
    });
    const allBatches = await batches(engine);
    const sizes = await batchSizes(engine);
    if (drainMs === 0) {
      drainMs = ms;
      drainCpuUs = engineCpuUs;
      drainBatches = allBatches;
    }
    await engine.close();
    const r: RunResult = {
      on, load, rate: EVENTS / (drainMs / 1000), rateAll: EVENTS / (ms / 1000), engineCpuUs, drainCpuUs, natsCpuUs, threads, workers,
      batches: allBatches, drainBatches, sizes, mix, second, quarters,
    };
    process.stdout.write(`${RESULT_TAG}${JSON.stringify(r)}\n`);
  } finally {
    await nc.close();
    await nats.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * How often a run asks the engine how many events it applied. Its CPU counts in the run's (the main thread's, and
 * the GC of what it allocates): at 5 ms, a run slowed down by the machine's load asked more often per event, so the
 * CPU per event grew with the wall time. A drain takes 10-60 s: 50 ms moves the drain point by at most 0.5%.
 */
const POLL_MS = 50;

/** The line prefix of a run's result on its stdout. */
const RESULT_TAG = "beyond-ingest-run ";

/** Runs one mode in a child process of this file (with this process's node options) and returns what it measured. */
function runChild(on: boolean): Promise<RunResult> {
  const args = process.argv.slice(2).filter((x, i, all) => x !== "--run" && all[i - 1] !== "--run" && !x.startsWith("--run="));
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...args, "--run", on ? "on" : "off"], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => {
      const line = out.split("\n").find((l) => l.startsWith(RESULT_TAG));
      if (code !== 0 || line === undefined) reject(new Error(`beyond-ingest: the ${on ? "on" : "off"} run exited ${code}:\n${out}`));
      else resolve(JSON.parse(line.slice(RESULT_TAG.length)) as RunResult);
    });
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** "median (min–max, spread %)" of a mode's runs. */
function spreadOf(xs: number[], digits: number): string {
  const m = median(xs);
  return `${m.toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}, spread ${(((Math.max(...xs) - Math.min(...xs)) / m) * 100).toFixed(0)}%)`;
}

async function main(): Promise<void> {
  if (a.run !== "") return runOne(a.run === "on");
  const load0 = loadavg().map((x) => x.toFixed(2)).join(" ");
  const texts = await reviewTexts(a.datasets!);
  const [pureOn, pureOff] = pureProfileCost(makeBeyondEvents("pure", texts, Date.now() - 2 * 86_400_000, mixOf).events);
  const order: boolean[] = [];
  for (let r = 0; r < ROUNDS; r++) order.push(...(r % 2 === 0 ? [true, false] : [false, true]));
  if (ONLY !== undefined) order.fill(ONLY);
  const runs: RunResult[] = [];
  const perRun: string[] = [];
  for (const [i, on] of order.entries()) {
    const r = await runChild(on);
    runs.push(r);
    const line = `run ${i + 1}, beyondClicks ${on ? "on " : "off"}: CPU per event ${r.engineCpuUs.toFixed(1)} µs engine + ${r.natsCpuUs.toFixed(1)} µs nats-server ` +
      `(threads: ${GROUPS.map((g) => `${g} ${r.threads[g].toFixed(1)}`).join(", ")}; the busy workers in start order ${r.workers.map((w) => w.toFixed(1)).join(", ")}); ` +
      `second half ${(r.second.engineCpuUs + r.second.natsCpuUs).toFixed(1)} µs (${GROUPS.map((g) => `${g} ${r.second.threads[g].toFixed(1)}`).join(", ")}); ` +
      `quarters of the drain ${r.quarters.map((x) => `${(x.engineCpuUs + x.natsCpuUs).toFixed(1)} (shards ${x.threads.shards.toFixed(1)}, V8 ${x.threads.V8.toFixed(1)})`).join(" / ")} µs; ` +
      `${r.rate.toFixed(0)} events/s to drain the shop's events, ${r.rateAll.toFixed(0)} to the last notice; ${r.batches} batches (${r.drainBatches} to the drain point; by size ${r.sizes}); load average ${r.load.toFixed(2)} at its start`;
    perRun.push(line);
    console.log(`- ${line}`);
  }
  const of = (on: boolean) => runs.filter((r) => r.on === on);
  const [onRuns, offRuns] = [of(true), of(false)];
  const rows: string[][] = [
    ["profile update alone, one thread (µs CPU per shop event): on / off", `${pureOn.toFixed(2)} / ${pureOff.toFixed(2)}`, `+${(pureOn - pureOff).toFixed(2)} µs: reviews' sentiment model and risk signals (best of 3 passes)`],
  ];
  if (onRuns.length > 0 && offRuns.length > 0) {
    // The whole drain, then its second half (no start, the JIT warm): each mode's median and spread, the cost from the
    // ratio of the medians, and the thread groups' medians.
    for (const [what, get] of [["whole drain", (r: RunResult) => r], ["second half of the drain", (r: RunResult) => r.second]] as const) {
      const cpu = (r: RunResult) => get(r).engineCpuUs + get(r).natsCpuUs;
      const [cOn, cOff] = [median(onRuns.map(cpu)), median(offRuns.map(cpu))];
      // Each ABBA pair's own cost: runs 2k and 2k+1 are one pair.
      const pairs: string[] = [];
      for (let p = 0; p + 1 < runs.length; p += 2) {
        const [x, y] = runs[p]!.on ? [runs[p]!, runs[p + 1]!] : [runs[p + 1]!, runs[p]!];
        pairs.push(`${((1 - cpu(y) / cpu(x)) * 100).toFixed(1)}%`);
      }
      rows.push(
        [`${what}: CPU per shop event, engine + nats-server (µs), on: median (min–max, spread)`, spreadOf(onRuns.map(cpu), 1), `runs: ${onRuns.map((r) => cpu(r).toFixed(1)).join(", ")}`],
        [`${what}: the same, off`, spreadOf(offRuns.map(cpu), 1), `runs: ${offRuns.map((r) => cpu(r).toFixed(1)).join(", ")}`],
        [`${what}: cost 1 − off / on of the medians`, `${((1 - cOff / cOn) * 100).toFixed(1)}%`, `target <= 10%; each ABBA pair: ${pairs.join(", ")}`],
        [`${what}: threads, on / off medians (µs per shop event)`, GROUPS.map((g) => `${g} ${median(onRuns.map((r) => get(r).threads[g])).toFixed(1)} / ${median(offRuns.map((r) => get(r).threads[g])).toFixed(1)}`).join("; "),
          `"recs" is the control (the same work in both modes): on / off ${(median(onRuns.map((r) => get(r).threads.recs)) / median(offRuns.map((r) => get(r).threads.recs))).toFixed(3)}`],
      );
    }
    const [rOn, rOff] = [median(onRuns.map((r) => r.rate)), median(offRuns.map((r) => r.rate))];
    rows.push(["ingest (events/s to drain the shop's events): on / off medians", `${rOn.toFixed(0)} / ${rOff.toFixed(0)}`, `cost 1 − on / off ${((1 - rOn / rOff) * 100).toFixed(1)}% (wall time: the load moves it more than CPU)`]);
  } else {
    const rs = onRuns.length > 0 ? onRuns : offRuns;
    const cpu = (r: RunResult) => r.engineCpuUs + r.natsCpuUs;
    rows.push([`CPU per shop event, engine + nats-server (µs), ${ONLY === true ? "on" : "off"}: median (min–max, spread)`, spreadOf(rs.map(cpu), 1), `runs: ${rs.map((r) => cpu(r).toFixed(1)).join(", ")}`]);
  }
  const notes = [
    `Mix: ${runs[0]?.mix ?? ""}; ${USERS} users, every one with a profile before (a VIEW each).`,
    `Each run a process of its own with its own nats-server and data dir; engine in-process (main thread shared with the publisher's acks), ${PARTITIONS} partitions, ${WORKERS} shard workers, ${MODELS_OFF ? "LSTM/DeepFM/churn/propensity off, sentiment model on" : "the bundled models (LSTM, DeepFM, churn, propensity, sentiment)"}; --mix ${a.mix}.`,
    ...perRun,
    `Load average (1, 5, 15 min) before: ${load0}; after: ${loadavg().map((x) => x.toFixed(2)).join(" ")} on ${cpus().length} cores (above ${cpus().length}, other processes compete for the CPU).`,
  ];
  const header = ["measure", "value", "note"];
  printTable("reviews, social and risk on ingest", header, rows);
  for (const n of notes) console.log(`- ${n}`);
  if (!a["no-record"] && ONLY === undefined) appendResults("Reviews, social and risk on ingest (issue 18)", `npm run bench:beyond-ingest -- --events ${EVENTS} --users ${USERS} --rounds ${ROUNDS}${a.mix === "beyond" ? "" : ` --mix ${a.mix}`}${MODELS_OFF ? "" : " --models bundled"}${a["no-social"] ? " --no-social" : ""}${a["no-reviews"] ? " --no-reviews" : ""}`, header, rows, notes.map((n) => `- ${n}`));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
