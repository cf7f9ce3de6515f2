/**
 * `npm run bench:beyond-ingest`: what reviews, social ties and risk signals
 * together cost on ingest (issue 18's target: <= 10% of ingest throughput,
 * same run, with and without). A real nats-server (127.0.0.1, free port,
 * temp store) and an in-process engine; the LSTM, DeepFM, churn and
 * propensity models off, so the profile update is the largest share of the
 * work it can be (an upper bound of the share), the sentiment model on.
 *
 * The same events are published to a fresh stream prefix for each run, then
 * an engine starts on a data dir where every user already has a profile (one
 * VIEW with a category each, applied by an engine that is then stopped: every
 * follow target has categories to answer with, and no actor is in memory),
 * once with `profile.beyondClicks` true and once false. Events/s = the shop's
 * events / the time from the engine being ready to as many messages applied
 * (the drain of the backlog: every shop event's own work, reviews, risk, the
 * social events and their outbox entries included). With the switch on, the
 * notices the social events cause (each FOLLOW two, FOLLOWED and the
 * INTERESTS answer; each SHARE with a target one; batched per committed
 * batch and recipients' partition, README "Social ties") are published
 * during the drain, so they queue behind the backlog in each partition and
 * are applied after it, in small batches where a partition has caught up
 * while others still drain; the time to the last of them is reported too.
 * In a live stream they ride in the batches of the events around them.
 * Each run also prints its batches (and by size), the engine's CPU to the
 * drain point, and the CPU of each thread of the process (Linux
 * /proc/self/task; per-run worker threads have new ids, the main thread is
 * "main"; the four ids right after it are V8's platform threads, where GC and
 * compilation run; libuv's pool, where lmdb-js commits, gets four later ids
 * at the first LMDB open).
 * The pair runs --rounds times in ABBA order (on, off, off, on, ...) against
 * the drift of a shared machine, after two warm-up runs (on, off) that are not counted;
 * each run and the mean are reported.
 *
 * Mix (seeded): 71.5% VIEW, 14% ADD_TO_CART, 10% PURCHASE, 2% REFUND (of the
 * user's last bought item when there is one), 1% REVIEW with the text of a real Amazon review
 * (../shared/data/amazon-reviews) and its stars, 1% FOLLOW, 0.5% SHARE with a
 * target, over --users users in 8 partitions on 2 shard workers.
 *
 *   node dist-bench/bench/beyond-ingest.js [--events N] [--users N] [--rounds R] [--datasets DIR] [--no-social] [--no-reviews] [--mix beyond|generator] [--models off|bundled] [--only on|off] [--no-record]
 */
import { connect, type NatsConnection } from "nats";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
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
    rounds: { type: "string", default: "2" },
    datasets: { type: "string", default: "../shared/data" },
    "no-social": { type: "boolean", default: false },
    "no-reviews": { type: "boolean", default: false },
    "no-record": { type: "boolean", default: false },
    mix: { type: "string", default: "beyond" },
    models: { type: "string", default: "off" },
    only: { type: "string", default: "" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (a.help) {
  process.stdout.write(`npm run bench:beyond-ingest -- [options]: ingest with and without reviews, social ties and risk (see the comment at the top of bench/beyond-ingest.ts)
  --events N     shop events per run (default 100000)
  --users N      users (default 20000)
  --rounds R     pairs in ABBA order (on, off, off, on, ...) (default 2)
  --datasets DIR the public data sets, for the review texts (default ../shared/data)
  --no-social    FOLLOW and SHARE events become VIEWs (what the social notices cost)
  --no-reviews   REVIEW events become VIEWs (what the sentiment model costs)
  --mix M        beyond (default: 1% reviews, 1.5% social, 2% refunds) or generator (the max-ingest stream of
                 bench/generator.ts with a review after 10% of purchases: 0.23% reviews; bench/beyond-events.ts)
  --models M     off (default: only the sentiment model) or bundled (LSTM, DeepFM, churn, propensity as the
                 engine runs by default and max-ingest measures: the denominator of "ingest throughput")
  --no-record    print only; do not append to bench/RESULTS.md
  --only on|off  runs of one mode only (for a CPU profile of it: node --cpu-prof); implies --no-record
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

/** CPU ms of each thread of this process so far, by thread id, with its name (/proc/self/task; empty elsewhere). */
function threadCpuMs(): Map<number, [string, number]> {
  const out = new Map<number, [string, number]>();
  try {
    for (const t of readdirSync("/proc/self/task")) {
      try {
        const f = readFileSync(`/proc/self/task/${t}/stat`, "utf8");
        const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
        const name = f.slice(f.indexOf("(") + 1, f.lastIndexOf(")"));
        out.set(Number(t), [name, ((Number(fields[11]) + Number(fields[12])) * 1000) / 100]);
      } catch {
        // the thread ended
      }
    }
  } catch {
    // not Linux
  }
  return out;
}

/** CPU µs per event of the threads that used the most between two snapshots, by name ("main" for the process's first thread). */
function threadCpuBreakdown(before: Map<number, [string, number]>, after: Map<number, [string, number]>, events: number): string {
  const rows: [string, number][] = [];
  for (const [tid, [name, ms]] of after) {
    const d = ms - (before.get(tid)?.[1] ?? 0);
    if (d > 0) rows.push([tid === process.pid ? "main" : `${name}#${tid}`, d]);
  }
  return rows.sort((x, y) => y[1] - x[1]).filter(([, ms]) => (ms * 1000) / events >= 0.5).map(([n, ms]) => `${n} ${((ms * 1000) / events).toFixed(1)}`).join(", ");
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

async function main(): Promise<void> {
  const load0 = loadavg().map((x) => x.toFixed(2)).join(" ");
  const texts = await reviewTexts(a.datasets!);
  const mixOf: BeyondMix = { events: EVENTS, users: USERS, noSocial: a["no-social"], noReviews: a["no-reviews"], mix: a.mix as "beyond" | "generator" };
  const nats = await startNatsServer({ readyTimeoutMs: 20_000 });
  const nc: NatsConnection = await connect({ servers: nats.url });
  const dirs: string[] = [];
  const start = (prefix: string, dataDir: string, beyondClicks: boolean) => Engine.start({
    natsUrl: nats.url, embeddedNats: "never", partitions: PARTITIONS, workers: WORKERS, httpPort: -1, logLevel: "warn", dataDir, subjectPrefix: prefix,
    ...(MODELS_OFF ? { lstmModel: "off", churnModel: "off", deepfmModel: "off", propensityModel: "off" } : {}), modelRegistry: false, profile: { beyondClicks },
  });
  const [pureOn, pureOff] = pureProfileCost(makeBeyondEvents("pure", texts, Date.now() - 2 * 86_400_000, mixOf).events);
  const rates: [number[], number[]] = [[], []];
  const ratesAll: [number[], number[]] = [[], []];
  /** CPU per shop event, µs, of the engine's process and of nats-server, to the last notice. */
  const cpuPer: [[number, number][], [number, number][]] = [[], []];
  const perRun: string[] = [];
  let mix = "";
  try {
    const t0 = Date.now() - 2 * 86_400_000;
    const order: boolean[] = [];
    // Two first runs, one of each mode, not counted, warm the JIT and the page cache. With one warm-up run the first
    // counted run was still 12-44 µs per event above the others in every run on a quiet machine (2026-12-07: 137 µs
    // against 92-94 for the three after it), and ABBA order made it always an "on" run, so it inflated the cost.
    order.push(true, false);
    for (let r = 0; r < ROUNDS; r++) order.push(...(r % 2 === 0 ? [true, false] : [false, true]));
    const WARMUP_RUNS = 2;
    if (ONLY !== undefined) order.splice(0, order.length, ...order.map(() => ONLY));
    for (const [run, on] of order.entries()) {
      const prefix = `bb${on ? "on" : "off"}${run}`;
      const dataDir = mkdtempSync(join(tmpdir(), "portrait-bench-beyond-"));
      dirs.push(dataDir);
      const client = new PortraitClient(nc, { partitions: PARTITIONS, subjectPrefix: prefix, requestTimeoutMs: 30_000 });
      const e0 = await start(prefix, dataDir, on);
      await client.publishMany(Array.from({ length: USERS }, (_, u) => ({ eventId: `${prefix}-f${u}`, userId: `u${u}`, type: EventType.VIEW, timestampMs: t0, itemId: "i0", categoryId: `c${u % 30}` })));
      while ((await applied(e0)) < USERS) await new Promise((r) => setTimeout(r, 20));
      await e0.close();
      const { events, notices } = makeBeyondEvents(prefix, texts, t0, mixOf);
      if (mix === "") {
        const n = (t: EventType) => events.filter((e) => e.type === t).length;
        mix = `${n(EventType.REVIEW)} reviews, ${n(EventType.FOLLOW)} follows, ${n(EventType.SHARE)} shares, ${n(EventType.REFUND)} refunds, ${n(EventType.PURCHASE)} purchase lines of ${events.length} events (${notices} notices with the switch on)`;
      }
      await client.publishMany(events);
      const load = loadavg()[0]!.toFixed(2);
      const engine = await start(prefix, dataDir, on);
      const started = performance.now();
      const cpu0 = process.cpuUsage();
      const threads0 = threadCpuMs();
      const nats0 = cpuMsOf(nats.pid);
      const want = EVENTS + (on ? notices : 0);
      let drainMs = 0;
      let drainCpuUs = 0;
      let drainBatches = 0;
      let n = 0;
      while ((n = await applied(engine)) < want) {
        if (drainMs === 0 && n >= EVENTS) {
          drainMs = performance.now() - started;
          const c = process.cpuUsage(cpu0);
          drainCpuUs = (c.user + c.system) / EVENTS;
          drainBatches = await batches(engine);
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      const ms = performance.now() - started;
      const cpu = process.cpuUsage(cpu0);
      const threads = threadCpuBreakdown(threads0, threadCpuMs(), EVENTS);
      const engineCpuUs = (cpu.user + cpu.system) / EVENTS;
      const natsCpuUs = ((cpuMsOf(nats.pid) - nats0) * 1000) / EVENTS;
      if (run >= WARMUP_RUNS) cpuPer[on ? 0 : 1].push([engineCpuUs, natsCpuUs]);
      const allBatches = await batches(engine);
      const sizes = await batchSizes(engine);
      if (drainMs === 0) {
        drainMs = ms;
        drainCpuUs = engineCpuUs;
        drainBatches = allBatches;
      }
      const rate = EVENTS / (drainMs / 1000);
      const rateAll = EVENTS / (ms / 1000);
      await engine.close();
      if (run < WARMUP_RUNS) {
        console.log(`- warm-up run (not counted), beyondClicks ${on ? "on" : "off"}: ${rate.toFixed(0)} events/s, CPU per event ${engineCpuUs.toFixed(0)} + ${natsCpuUs.toFixed(0)} µs`);
        continue;
      }
      rates[on ? 0 : 1].push(rate);
      ratesAll[on ? 0 : 1].push(rateAll);
      const line = `run ${run + 1}, beyondClicks ${on ? "on " : "off"}: ${rate.toFixed(0)} events/s to drain the shop's events (${(drainMs / 1000).toFixed(1)} s), ` +
        `${rateAll.toFixed(0)} events/s to the last notice (${(ms / 1000).toFixed(1)} s); CPU per event ${engineCpuUs.toFixed(0)} µs engine + ${natsCpuUs.toFixed(0)} µs nats-server (load average ${load} at its start); ` +
        `engine CPU to the drain point ${drainCpuUs.toFixed(0)} µs per event; ${allBatches} batches (${drainBatches} to the drain point; by size ${sizes}); threads (µs per event): ${threads}`;
      perRun.push(line);
      console.log(`- ${line}`);
    }
  } finally {
    await nc.close();
    await nats.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
  const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
  const [on, off] = [mean(rates[0]), mean(rates[1])];
  const [onAll, offAll] = [mean(ratesAll[0]), mean(ratesAll[1])];
  const cpuOn = mean(cpuPer[0].map(([e, n]) => e + n));
  const cpuOff = mean(cpuPer[1].map(([e, n]) => e + n));
  const engOn = mean(cpuPer[0].map(([e]) => e));
  const engOff = mean(cpuPer[1].map(([e]) => e));
  const rows = [
    ["profile update alone, one thread (µs CPU per shop event): on / off", `${pureOn.toFixed(2)} / ${pureOff.toFixed(2)}`,
      `+${(pureOn - pureOff).toFixed(2)} µs: reviews' sentiment model and risk signals; ${(((pureOn - pureOff) / cpuOff) * 100).toFixed(1)}% of the off runs' CPU per event below`],
    ["CPU per shop event, engine + nats-server (µs): on / off", `${cpuOn.toFixed(1)} / ${cpuOff.toFixed(1)}`,
      `cost 1 - off / on = ${((1 - cpuOff / cpuOn) * 100).toFixed(1)}% of CPU-bound throughput (engine alone ${engOn.toFixed(1)} / ${engOff.toFixed(1)}: ${((1 - engOff / engOn) * 100).toFixed(1)}%); target <= 10%`],
    ["ingest, reviews + social + risk on (events/s, drain)", on.toFixed(0), `runs: ${rates[0].map((r) => r.toFixed(0)).join(", ")}`],
    ["ingest, beyondClicks off (events/s, drain)", off.toFixed(0), `runs: ${rates[1].map((r) => r.toFixed(0)).join(", ")}`],
    ["cost: 1 - on / off (drain)", `${((1 - on / off) * 100).toFixed(1)}%`, `target <= 10%; same run, ${ROUNDS} pair(s) in ABBA order`],
    ["to the last notice: on / off (events/s)", `${onAll.toFixed(0)} / ${offAll.toFixed(0)}`, `cost ${((1 - onAll / offAll) * 100).toFixed(1)}%: the notices of a backlog queue behind it and are applied in small batches at its end`],
  ];
  const notes = [
    `Mix: ${mix}; ${USERS} users, every one with a profile before (a VIEW each).`,
    `Engine in-process (main thread shared with the publisher's acks), ${PARTITIONS} partitions, ${WORKERS} shard workers, ${MODELS_OFF ? "LSTM/DeepFM/churn/propensity off, sentiment model on" : "the bundled models (LSTM, DeepFM, churn, propensity, sentiment)"}; --mix ${a.mix}.`,
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
