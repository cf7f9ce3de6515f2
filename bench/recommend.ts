/**
 * Recommendation latency benchmark (issue 4): open-loop request-reply load on
 * a running engine, with and without concurrent ingest at half its capacity,
 * next to a raw NATS request-reply baseline at the same rates.
 *
 *   npx tsx bench/recommend.ts [--rates 250,500,1000,2000] [--seconds 5] [--no-record]
 *                              [--ingest-fraction 0.5] [--unknown-share 0.05] [--k 10] [--candidates 200]
 *                              [--max-outstanding 1000] [--timeout-ms 2000] [--datasets ../shared/data]
 *                              [--passes off,on]         (which ingest conditions to run per rate)
 *                              [--engine-cpu-prof DIR]   (V8 profiles of every engine thread, written at exit;
 *                                                         the per-pass lines give each pass's window on their clock)
 *
 * Processes (all on 127.0.0.1): this one generates the requests; the engine
 * runs in a child process (this file with PORTRAIT_BENCH_ROLE=engine: an
 * in-process Engine with the default bundled models), the ingest publisher
 * and the baseline's trivial responder in two more. In one process the load
 * generator's timers and reply decoding would share the engine's main thread
 * (the thread that answers every request), and the sender would be late
 * exactly when the engine is busy; separate processes are what a deployment
 * looks like, and the engine's own metrics come back over IPC.
 *
 * 1. A private nats-server on a free port; Taobao's UserBehavior_timeslice
 *    (110k events, 66k users, 85k items) preloaded into the event stream with
 *    core publish; the engine starts and applies it (the "cold" ingest rate),
 *    so profiles, catalog, co-visitation and trending are realistic.
 * 2. Ingest capacity, warm: the same slice again (new event ids, timestamps
 *    moved past the slice's end) published as fast as possible; events/s from
 *    the first publish to the last applied. The concurrent ingest then
 *    replays the slice the same way, open-loop, at --ingest-fraction of it.
 * 3. Requests: users drawn uniformly (seeded) from the slice's users, and
 *    --unknown-share of requests for users the engine has never seen; k 10,
 *    200 candidates, the engine's event-time clock.
 * 4. Per rate, without then with ingest: the raw baseline (the same request
 *    bytes to a responder that answers with as many bytes as a mean
 *    recommendation reply), then recommendations. Open loop: request i is due
 *    at start + i / rate whatever happened before; latency is measured from
 *    that intended time to the reply (so queueing behind a slow request, and
 *    the sender's own lateness, count: no coordinated omission). At most
 *    --max-outstanding requests are in flight; a request due while the limit
 *    is reached is not sent and counts as CLIENT_LIMIT. Percentiles are over
 *    the replies that succeeded; errors are counted by code.
 * 5. The engine's own view per pass: `portrait_api_request_seconds{endpoint=
 *    "recommend"}` (receive to reply inside the engine), the inference pool's
 *    queue/run/batch-rows histograms, the main thread's event-loop delay, and
 *    the CPU of every process (and of each engine thread) from /proc.
 *
 * Bounded: every pass sends rate x seconds requests at most and lasts at most
 * seconds + timeout + 5 s; every wait has a deadline.
 */
import { fork, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as hdr from "hdr-histogram-js";
import { connect, type Msg, type NatsConnection } from "nats";
import type { Registry } from "prom-client";
import { startNatsServer } from "../src/bus/nats-server-launcher.js";
import { partitionOf } from "../src/bus/partition.js";
import { ensureStreams } from "../src/bus/streams.js";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import { Engine } from "../src/engine.js";
import { compileInferenceOptions } from "../src/inference/inference-options.js";
import { PortraitError } from "../src/errors.js";
import { pb, type IEvent } from "../src/wire/proto.js";
import { appendResults, printTable, repoRoot } from "./report.js";
import { seededRandom } from "../src/models/seeded-random.js";

const PREFIX = "benchrec";
const PARTITIONS = 16;
const ECHO_SUBJECT = `${PREFIX}.bench.echo`;
const log = (s: string) => process.stderr.write(`${s}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- IPC between the processes

type Handlers = Record<string, (args: never) => unknown>;
interface Call { id: number; cmd: string; args: unknown }
interface Reply { id: number; ok: boolean; result?: unknown; error?: string }

/** Serves `handlers` to the parent over the IPC channel; exits when the parent goes away. */
function serve(handlers: Handlers): void {
  process.on("disconnect", () => process.exit(0));
  process.on("message", (m: Call) => {
    void (async () => {
      let reply: Reply;
      try {
        const h = handlers[m.cmd];
        if (h === undefined) throw new Error(`unknown command ${m.cmd}`);
        reply = { id: m.id, ok: true, result: await h(m.args as never) };
      } catch (err) {
        reply = { id: m.id, ok: false, error: (err as Error)?.stack ?? String(err) };
      }
      process.send!(reply);
    })();
  });
  process.send!({ id: 0, ok: true, result: "up" } satisfies Reply);
}

class Child {
  readonly proc: ChildProcess;
  readonly up: Promise<void>;
  #next = 1;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(readonly role: string, execArgv: string[] = []) {
    // process.execArgv carries tsx's loader when run with tsx; nothing when compiled.
    this.proc = fork(fileURLToPath(import.meta.url), [], {
      env: { ...process.env, PORTRAIT_BENCH_ROLE: role },
      execArgv: [...process.execArgv, ...execArgv],
      stdio: ["ignore", process.stderr, process.stderr, "ipc"],
    });
    let upResolve!: () => void;
    this.up = new Promise((r) => (upResolve = r));
    this.proc.on("message", (m: Reply) => {
      if (m.id === 0) return upResolve();
      const p = this.#pending.get(m.id);
      if (p === undefined) return;
      this.#pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`${role}: ${m.error}`));
    });
    this.proc.on("exit", (code, signal) => {
      for (const p of this.#pending.values()) p.reject(new Error(`${role} process exited (${code ?? signal})`));
      this.#pending.clear();
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  async call<T>(cmd: string, args: unknown = {}, timeoutMs = 120_000): Promise<T> {
    await this.up;
    const id = this.#next++;
    let timer: NodeJS.Timeout | undefined;
    try {
      return await new Promise<T>((resolve, reject) => {
        this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        timer = setTimeout(() => {
          this.#pending.delete(id);
          reject(new Error(`${this.role}: ${cmd} took more than ${timeoutMs} ms`));
        }, timeoutMs);
        this.proc.send({ id, cmd, args } satisfies Call);
      });
    } finally {
      clearTimeout(timer);
    }
  }

  /** Asks the child to stop, then kills it (this child only) if it has not exited in time. */
  async stop(timeoutMs = 20_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.proc.once("exit", () => r()));
    await this.call("stop", {}, timeoutMs).catch(() => undefined);
    await Promise.race([exited, sleep(timeoutMs)]);
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
  }
}

// ---------------------------------------------------------------- engine process

interface PromHist { buckets: Array<[number, number]>; sum: number; count: number }

async function promHist(reg: Registry, name: string, labels: Record<string, string> = {}): Promise<PromHist> {
  const out: PromHist = { buckets: [], sum: 0, count: 0 };
  const m = reg.getSingleMetric(name);
  if (m === undefined) return out;
  const { values } = await m.get();
  for (const v of values) {
    if (!Object.entries(labels).every(([k, x]) => String(v.labels[k]) === x)) continue;
    const n = (v as { metricName?: string }).metricName ?? "";
    if (n.endsWith("_bucket")) out.buckets.push([v.labels.le === "+Inf" ? Infinity : Number(v.labels.le), v.value]);
    else if (n.endsWith("_sum")) out.sum = v.value;
    else if (n.endsWith("_count")) out.count = v.value;
  }
  out.buckets.sort((a, b) => a[0] - b[0]);
  return out;
}

async function promCounter(reg: Registry, name: string): Promise<Record<string, number>> {
  const m = reg.getSingleMetric(name);
  const out: Record<string, number> = {};
  if (m === undefined) return out;
  for (const v of (await m.get()).values) out[Object.values(v.labels).join("/") || "total"] = v.value;
  return out;
}

interface EngineSnapshot {
  processed: number;
  api: PromHist;
  apiCodes: Record<string, number>;
  batchRows: PromHist;
  queue: PromHist;
  run: PromHist;
  request: PromHist;
  rejected: Record<string, number>;
  /** Main thread event-loop delay since the previous snapshot, ms. */
  loop: { p50: number; p99: number; max: number };
  /** process.hrtime in µs (CLOCK_MONOTONIC, the clock of V8's CPU profiles: slices --engine-cpu-prof output to a pass). */
  hrtimeUs: number;
}

function engineRole(): void {
  let engine: Engine | undefined;
  let tReady = 0;
  const loop = monitorEventLoopDelay({ resolution: 2 });
  const processed = async () => {
    const m = engine!.metrics;
    return (await m.total(m.eventsApplied)) + (await m.total(m.deadLetters));
  };
  serve({
    async start(a: { natsUrl: string; dataDir: string }) {
      engine = await Engine.start({
        natsUrl: a.natsUrl, embeddedNats: "never", subjectPrefix: PREFIX, partitions: PARTITIONS, dataDir: a.dataDir, httpPort: -1, logLevel: "warn",
      });
      tReady = performance.now();
      loop.enable();
      return {
        processedAtReady: await processed(), workers: engine.config.workers,
        models: (await engine.metrics.modelInfo.get()).values.map((v) => `${v.labels.model}@${v.labels.version}`),
        inference: compileInferenceOptions(engine.config.inference),
      };
    },
    /** Waits until `n` events are applied or dead-lettered; ms since ready. */
    async waitProcessed(a: { n: number; timeoutMs: number }) {
      const deadline = performance.now() + a.timeoutMs;
      let n = await processed();
      while (n < a.n && performance.now() < deadline) {
        await sleep(5);
        n = await processed();
      }
      return { processed: n, msSinceReady: performance.now() - tReady, reached: n >= a.n };
    },
    /** Recommendation requests answered so far (any code). */
    async answered() {
      const c = await promCounter(engine!.metrics.registry, "portrait_api_requests_total");
      return Object.entries(c).filter(([k]) => k.startsWith("recommend/")).reduce((x, [, v]) => x + v, 0);
    },
    async snapshot(): Promise<EngineSnapshot> {
      const reg = engine!.metrics.registry;
      const s: EngineSnapshot = {
        processed: await processed(),
        api: await promHist(reg, "portrait_api_request_seconds", { endpoint: "recommend" }),
        apiCodes: await promCounter(reg, "portrait_api_requests_total"),
        batchRows: await promHist(reg, "portrait_inference_batch_rows"),
        queue: await promHist(reg, "portrait_inference_queue_seconds"),
        run: await promHist(reg, "portrait_inference_run_seconds"),
        request: await promHist(reg, "portrait_inference_request_seconds"),
        rejected: await promCounter(reg, "portrait_inference_rejected_total"),
        loop: { p50: loop.percentile(50) / 1e6, p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 },
        hrtimeUs: Number(process.hrtime.bigint() / 1000n),
      };
      loop.reset();
      return s;
    },
    async stop() {
      await engine?.close();
      setImmediate(() => process.exit(0));
      return true;
    },
  });
}

// ---------------------------------------------------------------- ingest process

function ingestRole(): void {
  let nc: NatsConnection | undefined;
  const events: IEvent[] = [];
  let shiftMs = 0;
  let seq = 0;
  let run: { stop: boolean; sent: number; t0: number; done: Promise<void> } | undefined;
  const s = subjects(PREFIX);
  /** The slice again, round after round: new ids, timestamps moved past the previous round. */
  const publishNext = () => {
    const round = Math.floor(seq / events.length);
    const e = events[seq % events.length]!;
    const ev: IEvent = { ...e, eventId: `bench-r${round}-${seq % events.length}`, timestampMs: (e.timestampMs as number) + (round + 1) * shiftMs };
    nc!.publish(s.events(partitionOf(e.userId!, PARTITIONS)), pb.Event.encode(ev).finish());
    seq++;
  };
  serve({
    async init(a: { natsUrl: string; file: string }) {
      nc = await connect({ servers: a.natsUrl, name: "bench-ingest", noAsyncTraces: true });
      let lo = Infinity;
      let hi = -Infinity;
      for await (const e of readDataset("taobao", a.file)) {
        events.push(e);
        lo = Math.min(lo, e.timestampMs);
        hi = Math.max(hi, e.timestampMs);
      }
      shiftMs = hi - lo + 60_000;
      return { events: events.length };
    },
    /** Publishes `count` events open-loop at `rate`/s (0 = as fast as possible), for at most maxSeconds. */
    start(a: { rate: number; count: number; maxSeconds: number }) {
      if (run !== undefined) throw new Error("already publishing");
      const r = { stop: false, sent: 0, t0: performance.now(), done: Promise.resolve() };
      r.done = (async () => {
        let flushed = 0;
        while (!r.stop && r.sent < a.count && performance.now() - r.t0 < a.maxSeconds * 1000) {
          const due = a.rate === 0 ? a.count : Math.min(a.count, Math.floor(((performance.now() - r.t0) * a.rate) / 1000));
          const upTo = Math.min(due, r.sent + 5000);
          while (r.sent < upTo) {
            publishNext();
            r.sent++;
          }
          if (r.sent - flushed >= 20_000) {
            flushed = r.sent;
            await nc!.flush();
          }
          if (a.rate === 0) await new Promise((res) => setImmediate(res));
          else await sleep(1);
        }
        await nc!.flush();
      })();
      run = r;
      return true;
    },
    /** Stops publishing (or waits for the run to end by itself with `wait`); what was sent. */
    async halt(a: { wait?: boolean }) {
      if (run === undefined) return { sent: 0, seconds: 0 };
      if (a.wait !== true) run.stop = true;
      await run.done;
      const r = { sent: run.sent, seconds: (performance.now() - run.t0) / 1000 };
      run = undefined;
      return r;
    },
    async stop() {
      if (run !== undefined) run.stop = true;
      await run?.done;
      await nc?.close();
      setImmediate(() => process.exit(0));
      return true;
    },
  });
}

// ---------------------------------------------------------------- baseline responder process

function echoRole(): void {
  let nc: NatsConnection | undefined;
  let payload = new Uint8Array(0);
  serve({
    async start(a: { natsUrl: string }) {
      nc = await connect({ servers: a.natsUrl, name: "bench-echo", noAsyncTraces: true });
      nc.subscribe(ECHO_SUBJECT, { callback: (err, m: Msg) => (err ? undefined : m.respond(payload)) });
      await nc.flush();
      return true;
    },
    setPayload(a: { bytes: number }) {
      payload = new Uint8Array(a.bytes).fill(0x61);
      return true;
    },
    async stop() {
      await nc?.close();
      setImmediate(() => process.exit(0));
      return true;
    },
  });
}

// ---------------------------------------------------------------- CPU from /proc

const CLK_TCK = 100;

function procTicks(pid: number, tid?: number): number {
  try {
    const st = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, "utf8");
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]); // utime + stime (fields 14 and 15)
  } catch {
    return 0;
  }
}

function threadTicks(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) out.set(Number(t), procTicks(pid, Number(t)));
  } catch {
    // gone
  }
  return out;
}

/** Machine-wide busy and steal ticks (all cores). */
function machineTicks(): { busy: number; steal: number; total: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((x, y) => x + y, 0);
  return { busy: total - f[3]! - f[4]!, steal: f[7] ?? 0, total };
}

interface CpuSample {
  t: number;
  pids: Record<string, number>;
  threads: Map<number, number>;
  machine: ReturnType<typeof machineTicks>;
}

function cpuSample(pids: Record<string, number>, enginePid: number): CpuSample {
  return {
    t: performance.now(),
    pids: Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, procTicks(p)])),
    threads: threadTicks(enginePid),
    machine: machineTicks(),
  };
}

/** Cores used by each process, the busiest engine threads, the machine, between two samples. */
function cpuDelta(a: CpuSample, b: CpuSample, enginePid: number) {
  const s = (b.t - a.t) / 1000;
  const cores = (ticks: number) => ticks / CLK_TCK / s;
  const procs = Object.fromEntries(Object.keys(b.pids).map((k) => [k, cores(b.pids[k]! - (a.pids[k] ?? 0))]));
  const threads = [...b.threads].map(([tid, t]) => ({ tid, main: tid === enginePid, cores: cores(t - (a.threads.get(tid) ?? 0)) }))
    .filter((x) => x.cores >= 0.03).sort((x, y) => y.cores - x.cores);
  const machine = cores(b.machine.busy - a.machine.busy);
  const steal = cores(b.machine.steal - a.machine.steal);
  const ours = Object.values(procs).reduce((x, y) => x + y, 0);
  return { procs, threads, machine, steal, others: Math.max(0, machine - ours) };
}

// ---------------------------------------------------------------- histograms

function histDelta(a: PromHist, b: PromHist): PromHist {
  return {
    buckets: b.buckets.map(([le, c], i) => [le, c - (a.buckets[i]?.[1] ?? 0)]),
    sum: b.sum - a.sum,
    count: b.count - a.count,
  };
}

const mean = (h: PromHist) => (h.count > 0 ? h.sum / h.count : NaN);

/** A quantile from cumulative Prometheus buckets, interpolated linearly inside its bucket. */
function bucketQuantile(h: PromHist, q: number): number {
  if (h.count === 0) return NaN;
  const rank = q * h.count;
  let prevLe = 0;
  let prevC = 0;
  for (const [le, c] of h.buckets) {
    if (c >= rank) {
      if (!Number.isFinite(le)) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevC)) / Math.max(1e-9, c - prevC);
    }
    prevLe = le;
    prevC = c;
  }
  return prevLe;
}

const newHist = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });

// ---------------------------------------------------------------- open-loop load

interface PassResult {
  rate: number;
  scheduled: number;
  ok: number;
  errors: Record<string, number>;
  /** OK replies per second, over the schedule (or until the last reply if later). */
  achieved: number;
  /** Intended send time to reply, µs. */
  lat: hdr.Histogram;
  /** Actual send time to reply, µs (the difference is the sender's own lateness). */
  service: hdr.Histogram;
  /** Largest lateness of a send behind its intended time, ms. */
  maxSendLagMs: number;
}

/**
 * Sends rate x seconds requests on a fixed schedule (request i due at start +
 * i / rate), checking every ~1 ms (Node timers) and sending all that are due.
 */
async function openLoop(rate: number, seconds: number, maxOutstanding: number, timeoutMs: number, send: (i: number) => Promise<unknown>): Promise<PassResult> {
  const scheduled = Math.max(1, Math.round(rate * seconds));
  const lat = newHist();
  const service = newHist();
  const errors: Record<string, number> = {};
  let ok = 0;
  let outstanding = 0;
  let i = 0;
  let lastReply = 0;
  let maxSendLagMs = 0;
  const start = performance.now() + 2;
  const interval = 1000 / rate;
  const fail = (code: string) => (errors[code] = (errors[code] ?? 0) + 1);
  let allSent!: () => void;
  const sent = new Promise<void>((r) => (allSent = r));
  const tick = () => {
    const now = performance.now();
    while (i < scheduled && start + i * interval <= now) {
      const intended = start + i * interval;
      const k = i++;
      if (outstanding >= maxOutstanding) {
        fail("CLIENT_LIMIT");
        continue;
      }
      outstanding++;
      const t = performance.now();
      maxSendLagMs = Math.max(maxSendLagMs, t - intended);
      send(k).then(
        () => {
          const done = performance.now();
          lat.recordValue(Math.max(1, Math.round((done - intended) * 1000)));
          service.recordValue(Math.max(1, Math.round((done - t) * 1000)));
          lastReply = Math.max(lastReply, done);
          ok++;
        },
        (err: unknown) => fail(err instanceof PortraitError ? err.code : String((err as { code?: string })?.code ?? "OTHER")),
      ).finally(() => outstanding--);
    }
    if (i < scheduled) setTimeout(tick, Math.max(0, start + i * interval - performance.now() - 0.2));
    else allSent();
  };
  setTimeout(tick, 2);
  await sent;
  const deadline = performance.now() + timeoutMs + 5000;
  while (outstanding > 0 && performance.now() < deadline) await sleep(2);
  if (outstanding > 0) errors.UNSETTLED = outstanding;
  const end = Math.max(start + seconds * 1000, lastReply);
  return { rate, scheduled, ok, errors, achieved: ok / ((end - start) / 1000), lat, service, maxSendLagMs };
}

// ---------------------------------------------------------------- main

const ms = (us: number) => (us / 1000).toFixed(2);
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "-");
const errText = (e: Record<string, number>) => Object.entries(e).map(([k, v]) => `${k} ${v}`).join(", ") || "0";

async function main(): Promise<void> {
  const { values: a } = parseArgs({
    options: {
      rates: { type: "string", default: "250,500,1000,2000" },
      seconds: { type: "string", default: "5" },
      "ingest-fraction": { type: "string", default: "0.5" },
      "unknown-share": { type: "string", default: "0.05" },
      k: { type: "string", default: "10" },
      candidates: { type: "string", default: "200" },
      "max-outstanding": { type: "string", default: "1000" },
      "timeout-ms": { type: "string", default: "2000" },
      datasets: { type: "string", default: process.env.PORTRAIT_DATASETS ?? join(repoRoot(), "..", "shared", "data") },
      "engine-cpu-prof": { type: "string" },
      passes: { type: "string", default: "off,on" },
      "no-record": { type: "boolean", default: false },
    },
  });
  const PASSES = a.passes.split(",").map((x) => x.trim());
  const RATES = a.rates.split(",").map(Number);
  const SECONDS = Number(a.seconds);
  const FRACTION = Number(a["ingest-fraction"]);
  const UNKNOWN = Number(a["unknown-share"]);
  const K = Number(a.k);
  const CANDIDATES = Number(a.candidates);
  const MAX_OUT = Number(a["max-outstanding"]);
  const TIMEOUT = Number(a["timeout-ms"]);
  for (const [name, v, ok] of [
    ["--rates", RATES, RATES.length > 0 && RATES.every((r) => Number.isFinite(r) && r > 0 && r <= 20_000)],
    ["--seconds", SECONDS, SECONDS > 0 && SECONDS <= 60],
    ["--ingest-fraction", FRACTION, FRACTION > 0 && FRACTION <= 2],
    ["--unknown-share", UNKNOWN, UNKNOWN >= 0 && UNKNOWN <= 1],
    ["--k", K, Number.isInteger(K) && K >= 1 && K <= 100],
    ["--candidates", CANDIDATES, Number.isInteger(CANDIDATES) && CANDIDATES >= 1 && CANDIDATES <= 2000],
    ["--max-outstanding", MAX_OUT, Number.isInteger(MAX_OUT) && MAX_OUT >= 1],
    ["--timeout-ms", TIMEOUT, TIMEOUT >= 10 && TIMEOUT <= 60_000],
    ["--passes", PASSES, PASSES.length > 0 && PASSES.every((x) => x === "off" || x === "on")],
  ] as const) {
    if (!ok) throw new Error(`bench: bad ${name} ${JSON.stringify(v)}`);
  }
  const file = resolveDataFile(a.datasets, "taobao");
  const loadBefore = loadavg().map((x) => x.toFixed(2)).join(" ");

  const work = mkdtempSync(join(tmpdir(), "portrait-bench-rec-"));
  const server = await startNatsServer({ storeDir: join(work, "nats") });
  const nc = await connect({ servers: server.url, name: "bench-requests", noAsyncTraces: true });
  const children: Child[] = [];
  try {
    const s = subjects(PREFIX);
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, s, { eventRetentionMs: 0, duplicateWindowMs: 120_000, dlqRetentionMs: 86_400_000 });

    // 1. Preload the slice; the engine applies it.
    log(`preloading ${file} ...`);
    const userSet = new Set<string>();
    let N = 0;
    for await (const e of readDataset("taobao", file)) {
      userSet.add(e.userId);
      nc.publish(s.events(partitionOf(e.userId, PARTITIONS)), pb.Event.encode(e).finish());
      if (++N % 20_000 === 0) await nc.flush();
    }
    await nc.flush();
    for (const deadline = Date.now() + 60_000; (await jsm.streams.info(s.eventStream)).state.messages < N;) {
      if (Date.now() > deadline) throw new Error("the stream did not receive every preloaded event");
      await sleep(50);
    }
    const users = [...userSet];
    const profDir = a["engine-cpu-prof"];
    const engine = new Child("engine", profDir !== undefined ? ["--cpu-prof", "--cpu-prof-dir", profDir] : []);
    children.push(engine);
    log(`${N} events of ${users.length} users preloaded; starting the engine...`);
    const started = await engine.call<{ processedAtReady: number; workers: number; models: string[]; inference: Record<string, unknown> }>("start", { natsUrl: server.url, dataDir: join(work, "engine") });
    const cold = await engine.call<{ processed: number; msSinceReady: number; reached: boolean }>("waitProcessed", { n: N, timeoutMs: 180_000 }, 200_000);
    if (!cold.reached) throw new Error(`the engine applied only ${cold.processed} of ${N} events in time`);
    const coldRate = (N - started.processedAtReady) / (cold.msSinceReady / 1000);
    log(`engine: models ${started.models.join(", ")}; ${started.workers} shard workers; cold apply ${coldRate.toFixed(0)} events/s`);

    // 2. Warm ingest capacity: the slice again, as fast as possible.
    const ingest = new Child("ingest");
    const echo = new Child("echo");
    children.push(ingest, echo);
    await ingest.call("init", { natsUrl: server.url, file });
    await echo.call("start", { natsUrl: server.url });
    let expected = N;
    const t0 = performance.now();
    await ingest.call("start", { rate: 0, count: N, maxSeconds: 60 });
    expected += N;
    const warm = await engine.call<{ processed: number; reached: boolean }>("waitProcessed", { n: expected, timeoutMs: 120_000 }, 150_000);
    const capacity = N / ((performance.now() - t0) / 1000);
    await ingest.call("halt", { wait: true });
    if (!warm.reached) throw new Error(`capacity run: the engine applied only ${warm.processed} of ${expected} events in time`);
    const ingestRate = Math.round(capacity * FRACTION);
    log(`warm ingest capacity ${capacity.toFixed(0)} events/s (publisher and engine together); concurrent ingest at ${ingestRate}/s`);

    // 3. Requests: wait until the recs worker has learned the items, then size the baseline reply.
    const client = new PortraitClient(nc, { subjectPrefix: PREFIX, partitions: PARTITIONS, requestTimeoutMs: TIMEOUT });
    for (const deadline = Date.now() + 60_000; ;) {
      const r = await client.recommend("bench-nobody", { k: 100, candidates: CANDIDATES }).catch(() => undefined);
      if (r !== undefined && r.items.length === 100) break;
      if (Date.now() > deadline) throw new Error("the recs index did not fill");
      await sleep(200);
    }
    const rnd = seededRandom(11);
    let nobody = 0;
    const userOf = () => (rnd() < UNKNOWN ? `bench-nobody-${nobody++ % 1000}` : users[Math.floor(rnd() * users.length)]!);
    const reqBytes = (u: string) => pb.RecommendRequest.encode({ userId: u, k: K, candidates: CANDIDATES }).finish();
    let replyBytes = 0;
    let known = 0;
    for (let i = 0; i < 200; i++) {
      const u = userOf();
      const m = await nc.request(s.recommend, reqBytes(u), { timeout: TIMEOUT });
      replyBytes += m.data.length;
      known += pb.RecommendReply.decode(m.data).knownUser ? 1 : 0;
    }
    replyBytes = Math.round(replyBytes / 200);
    await echo.call("setPayload", { bytes: replyBytes });
    log(`mean reply ${replyBytes} B; ${known}/200 sampled requests for known users`);

    /** Waits (at most 15 s) until the engine answers no more requests: timed-out requests still queued inside it are done. */
    const settle = async () => {
      let last = -1;
      for (const deadline = Date.now() + 15_000; Date.now() < deadline;) {
        const n = await engine.call<number>("answered");
        if (n === last) return;
        last = n;
        await sleep(300);
      }
    };
    const recSend = () => client.recommend(userOf(), { k: K, candidates: CANDIDATES });
    const rawSend = () => nc.request(ECHO_SUBJECT, reqBytes(userOf()), { timeout: TIMEOUT });
    // Warm-up (not recorded): JIT, connection buffers, the pool's first batches.
    const warmRate = Math.min(250, ...RATES);
    await openLoop(warmRate, 2, MAX_OUT, TIMEOUT, recSend);
    await openLoop(warmRate, 1, MAX_OUT, TIMEOUT, rawSend);
    await settle();

    const pids = { engine: engine.pid, "nats-server": server.pid, requests: process.pid, ingest: ingest.pid, echo: echo.pid };
    const header = [
      "req/s", "ingest", "achieved", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "raw p99 ms", "p99 / raw",
      "server mean ms", "server p99 ~ms", "pool queue / run ms", "batch rows", "engine CPU ms/req", "engine cores", "other procs cores", "applied ev/s",
    ];
    const rows: string[][] = [];
    const details: string[] = [];
    for (const rate of RATES) {
      for (const withIngest of PASSES.map((x) => x === "on")) {
        let ingestRun: { sent: number; seconds: number } | undefined;
        if (withIngest) {
          const maxSeconds = 2 * SECONDS + 20;
          await ingest.call("start", { rate: ingestRate, count: Math.round(ingestRate * maxSeconds), maxSeconds });
          await sleep(1000);
        }
        const raw = await openLoop(rate, SECONDS, MAX_OUT, TIMEOUT, rawSend);
        const e0 = await engine.call<EngineSnapshot>("snapshot");
        const c0 = cpuSample(pids, engine.pid);
        const rec = await openLoop(rate, SECONDS, MAX_OUT, TIMEOUT, recSend);
        const c1 = cpuSample(pids, engine.pid);
        const e1 = await engine.call<EngineSnapshot>("snapshot");
        if (withIngest) {
          ingestRun = await ingest.call<{ sent: number; seconds: number }>("halt", {});
          expected += ingestRun.sent;
        }
        await settle();
        const caught = await engine.call<{ processed: number; reached: boolean }>("waitProcessed", { n: expected, timeoutMs: 60_000 }, 90_000);
        const lag = expected - caught.processed;
        const cpu = cpuDelta(c0, c1, engine.pid);
        const wall = (c1.t - c0.t) / 1000;
        const api = histDelta(e0.api, e1.api);
        const rowsH = histDelta(e0.batchRows, e1.batchRows);
        const queue = histDelta(e0.queue, e1.queue);
        const run = histDelta(e0.run, e1.run);
        const req = histDelta(e0.request, e1.request);
        const p = (h: hdr.Histogram, q: number) => (h.totalCount > 0 ? ms(h.getValueAtPercentile(q)) : "-");
        const rawP99 = raw.lat.totalCount > 0 ? raw.lat.getValueAtPercentile(99) : NaN;
        const recP99 = rec.lat.totalCount > 0 ? rec.lat.getValueAtPercentile(99) : NaN;
        const applied = (e1.processed - e0.processed) / wall;
        rows.push([
          String(rate), withIngest ? `${ingestRate}/s` : "off", rec.achieved.toFixed(0), p(rec.lat, 50), p(rec.lat, 99), p(rec.lat, 99.9),
          rec.lat.totalCount > 0 ? ms(rec.lat.maxValue) : "-", errText(rec.errors) + (withIngest && lag > 0 ? ` (ingest lag ${lag})` : ""),
          Number.isFinite(rawP99) ? ms(rawP99) : "-", f1(recP99 / rawP99),
          f2(mean(api) * 1000), f1(bucketQuantile(api, 0.99) * 1000), `${f2(mean(queue) * 1000)} / ${f2(mean(run) * 1000)}`,
          f1(mean(rowsH)), withIngest ? "-" : f2((((cpu.procs.engine ?? 0) * wall) / Math.max(1, api.count)) * 1000), f2(cpu.procs.engine ?? NaN), f2(cpu.others), withIngest ? applied.toFixed(0) : "-",
        ]);
        const line = [
          `rate ${rate}/s ingest ${withIngest ? `${ingestRate}/s` : "off"}: rec p50/p99/p99.9/max ${p(rec.lat, 50)}/${p(rec.lat, 99)}/${p(rec.lat, 99.9)}/${ms(rec.lat.maxValue)} ms`,
          `(send->reply p99 ${p(rec.service, 99)} ms, max send lag ${rec.maxSendLagMs.toFixed(1)} ms), ok ${rec.ok}/${rec.scheduled}, errors ${errText(rec.errors)};`,
          `raw p50/p99/p99.9 ${p(raw.lat, 50)}/${p(raw.lat, 99)}/${p(raw.lat, 99.9)} ms errors ${errText(raw.errors)};`,
          `server mean ${f2(mean(api) * 1000)} ms, p50~${f2(bucketQuantile(api, 0.5) * 1000)} p99~${f1(bucketQuantile(api, 0.99) * 1000)} ms;`,
          `pool: request mean ${f2(mean(req) * 1000)} ms (queue ${f2(mean(queue) * 1000)}, p99~${f2(bucketQuantile(queue, 0.99) * 1000)}; run ${f2(mean(run) * 1000)} per batch of ${f1(mean(rowsH))} rows, ${run.count} batches);`,
          `main loop delay p50/p99/max ${f2(e1.loop.p50)}/${f2(e1.loop.p99)}/${f2(e1.loop.max)} ms;`,
          `cores: ${Object.entries(cpu.procs).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")}, other processes ${cpu.others.toFixed(2)}, steal ${cpu.steal.toFixed(2)};`,
          `engine threads: ${cpu.threads.slice(0, 8).map((t) => `${t.main ? "main" : t.tid} ${t.cores.toFixed(2)}`).join(", ")};`,
          `engine CPU per answered request ${((((cpu.procs.engine ?? 0) * wall) / Math.max(1, api.count)) * 1000).toFixed(2)} ms`,
          `(threads: ${cpu.threads.slice(0, 4).map((t) => `${t.main ? "main" : t.tid} ${(((t.cores * wall) / Math.max(1, api.count)) * 1000).toFixed(2)}`).join(", ")})`,
          withIngest ? `; ingest published ${ingestRun!.sent} in ${ingestRun!.seconds.toFixed(1)} s, applied ${applied.toFixed(0)}/s during the pass, lag after it ${lag}` : "",
          `; inference rejected ${JSON.stringify(e1.rejected)}`,
          profDir !== undefined ? `; profile window (hrtime µs) ${e0.hrtimeUs}..${e1.hrtimeUs}` : "",
        ].join(" ");
        log(line);
        details.push(line);
      }
    }

    const title = `Recommendation latency, open loop, ${CANDIDATES} candidates, k ${K}`;
    printTable(title, header, rows);
    const notes = [
      `Engine in its own process with the bundled models (${started.models.join(", ")}), ${started.workers} shard workers, inference ${JSON.stringify(started.inference)}; 16 partitions; NATS, the engine, the request generator, the ingest publisher and the baseline responder are separate processes on 127.0.0.1.`,
      `Warm state: Taobao UserBehavior_timeslice (${N} events, ${users.length} users) applied at ${coldRate.toFixed(0)} events/s cold, then the slice again at ${capacity.toFixed(0)} events/s warm (publish + apply: the ingest capacity); concurrent ingest = the slice replayed open-loop at ${ingestRate} events/s (${FRACTION} x capacity), new ids, later timestamps.`,
      `Requests: users uniform over the slice's users, ${(UNKNOWN * 100).toFixed(0)} % unknown users; open loop, ${SECONDS} s per pass, latency from the intended send time to the reply (hdr-histogram), percentiles over successful replies; at most ${MAX_OUT} outstanding (CLIENT_LIMIT beyond), timeout ${TIMEOUT} ms. Mean reply ${replyBytes} B.`,
      `Raw: the same request bytes to a trivial responder (own process) answering ${replyBytes} B, same connection, same rate and ingest condition, measured just before the recommendation pass.`,
      "Server columns (engine metrics over the recommendation pass): portrait_api_request_seconds{endpoint=recommend} mean and bucket-interpolated p99 (receive to reply, not counting time before the handler runs); inference pool mean queue wait per request / run time per batch; mean rows per inference batch; engine process CPU (all threads) per answered request (without ingest only) and in cores; CPU of processes outside the benchmark (other users of the machine) in cores; events applied/s during the pass.",
      `Load average (1, 5, 15 min) before: ${loadBefore}; after: ${loadavg().map((x) => x.toFixed(2)).join(" ")} (2 cores).`,
    ];
    console.log(`\n${notes.map((n) => `- ${n}`).join("\n")}`);
    if (!a["no-record"]) {
      const args = `--rates ${RATES.join(",")} --seconds ${SECONDS}${PASSES.join(",") !== "off,on" ? ` --passes ${PASSES.join(",")}` : ""}`;
      const cmd = import.meta.url.endsWith(".ts") ? `npx tsx bench/recommend.ts ${args}` : `npm run bench:recommend -- ${args}`;
      appendResults(title, cmd, header, rows, [...notes.map((n) => `- ${n}`), "", "<details><summary>per pass</summary>", "", ...details.map((d) => `- ${d}`), "", "</details>"]);
    }
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    await nc.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

const role = process.env.PORTRAIT_BENCH_ROLE;
if (role === "engine") engineRole();
else if (role === "ingest") ingestRole();
else if (role === "echo") echoRole();
else {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
