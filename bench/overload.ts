/**
 * Overload: keep the engine saturated for a bounded time and watch the engine
 * process (a child, so its RSS is its own): memory must stay bounded
 * (consumers pull only what the shards take), queries are answered or refused
 * with OVERLOADED, and the lag drains afterwards.
 *
 *   npx tsx bench/overload.ts [--seconds 40] [--users 50000] [--rate N] [--publishers 3] [--backlog N] [--no-record]
 *
 * Saturation needs publishers faster than the engine on the same two cores,
 * so every event is encoded before timing starts (bench/overload-publisher.ts,
 * one forked process per publisher, each with its own NATS connection and
 * share of the events) and published with core NATS publishes on an open-loop
 * schedule (no Nats-Msg-Id, no PubAck wait). `--backlog N` preloads N events
 * into the stream, as fast as the publishers go, right before the window, so
 * the engine starts the window far behind. The engine's capacity is measured
 * first with a burst (unless `--rate` is given); the window offers twice it.
 * Everything runs on 127.0.0.1; every wait has a deadline.
 */
import { fork, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { connect, type JetStreamManager } from "nats";
import { startNatsServer } from "../src/bus/nats-server-launcher.js";
import { freePort } from "../src/bus/server-process.js";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { PortraitError } from "../src/errors.js";
import type { FromPublisher, ToPublisher } from "./overload-publisher.js";
import { memMiB, slope } from "./harness/proc-stats.js";
import { appendResults, printTable, repoRoot } from "./report.js";

const { values: a } = parseArgs({
  options: {
    seconds: { type: "string", default: "40" },
    users: { type: "string", default: "50000" },
    /** Offered events/s in the window; default twice the measured capacity. */
    rate: { type: "string" },
    publishers: { type: "string", default: "3" },
    /** Events preloaded into the stream right before the window. */
    backlog: { type: "string", default: "0" },
    "no-record": { type: "boolean", default: false },
  },
});
const SECONDS = Number(a.seconds);
const USERS = Number(a.users);
const K = Number(a.publishers);
const BACKLOG = Number(a.backlog);
if (!(SECONDS > 0 && SECONDS <= 600 && USERS > 0 && K >= 1 && K <= 8 && BACKLOG >= 0 && BACKLOG <= 20_000_000)) {
  throw new Error("--seconds 1..600, --users > 0, --publishers 1..8, --backlog 0..20000000");
}
const P = 8;
/** The engine's default --max-ack-pending (per partition). */
const MAX_ACK_PENDING = 8192;
const BURST = 300_000;
const DRAIN_CAP_S = 300;
const prefix = "ovl";
const s = subjects(prefix);
const log = (m: string) => process.stderr.write(`[overload] ${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The engine's threads whose V8 heaps are sampled (portrait_thread_heap_bytes{thread}). */
const THREADS = ["main", "shard-0", "shard-1", "recs"] as const;
type ThreadHeaps = Record<string, { used: number; total: number; external: number }>;

/**
 * A few gauges from the engine's /metrics: the V8 heap of each thread (MiB),
 * actor caches of all shards, batches in flight to the shards, item events
 * queued for the recs worker.
 */
async function engineMetrics(port: number): Promise<{ heaps: ThreadHeaps; actors: number; inflightBatches: number; recsQueued: number } | undefined> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
    const one = (name: string) => Number(new RegExp(`^${name} ([0-9.e+]+)$`, "m").exec(text)?.[1] ?? NaN);
    const sum = (name: string) => [...text.matchAll(new RegExp(`^${name}\\{[^}]*\\} ([0-9.e+]+)$`, "gm"))].reduce((x, m) => x + Number(m[1]), 0);
    const heaps: ThreadHeaps = {};
    for (const t of THREADS) {
      const kind = (k: string) => Number(new RegExp(`^portrait_thread_heap_bytes\\{thread="${t}",kind="${k}"\\} ([0-9.e+]+)$`, "m").exec(text)?.[1] ?? NaN) / 2 ** 20;
      heaps[t] = { used: kind("used"), total: kind("total"), external: kind("external") };
    }
    return { heaps, actors: sum("portrait_shard_actors_cached"), inflightBatches: sum("portrait_ingest_inflight_batches"), recsQueued: one("portrait_recs_item_events_queued") };
  } catch {
    return undefined;
  }
}

/**
 * Events stored in the stream; waiting (not yet acknowledged, delivered or
 * not); and acknowledged since the engine created its consumers (the sum of
 * the consumers' ack floors in consumer sequence: one per delivery, exact
 * while nothing is redelivered, and each consumer's info is one snapshot).
 */
async function streamState(jsm: JetStreamManager): Promise<{ stored: number; backlog: number; acked: number; redelivered: number; parts: number[] } | undefined> {
  try {
    let backlog = 0, acked = 0, redelivered = 0;
    const parts: number[] = [];
    for (let p = 0; p < P; p++) {
      const ci = await jsm.consumers.info(s.eventStream, s.consumer(p));
      parts.push(ci.num_pending + ci.num_ack_pending);
      backlog += ci.num_pending + ci.num_ack_pending;
      acked += ci.ack_floor.consumer_seq;
      redelivered += ci.num_redelivered;
    }
    const stored = (await jsm.streams.info(s.eventStream)).state.last_seq;
    return { stored, backlog, acked, redelivered, parts };
  } catch {
    return undefined;
  }
}

const mean = (xs: number[]) => xs.reduce((u, v) => u + v, 0) / Math.max(1, xs.length);

class Publisher {
  readonly proc: ChildProcess;
  sent = 0;
  #waiters: Array<{ type: FromPublisher["type"]; resolve: (m: FromPublisher) => void }> = [];
  constructor(readonly index: number) {
    this.proc = fork(fileURLToPath(new URL("./overload-publisher.ts", import.meta.url)), [], {
      cwd: repoRoot(), execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.proc.on("message", (m: FromPublisher) => {
      if (m.type === "progress" || m.type === "done") this.sent = m.sent;
      const i = this.#waiters.findIndex((w) => w.type === m.type);
      if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(m);
    });
  }
  /** Sends a command and resolves with the next message of the awaited type (rejects after timeoutMs or if the process exits). */
  ask<T extends FromPublisher["type"]>(cmd: ToPublisher, type: T, timeoutMs: number): Promise<Extract<FromPublisher, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`publisher ${this.index}: no ${type} within ${timeoutMs} ms`)), timeoutMs);
      const onExit = (code: number | null) => reject(new Error(`publisher ${this.index} exited (${code}) before ${type}`));
      this.proc.once("exit", onExit);
      this.#waiters.push({ type, resolve: (m) => {
        clearTimeout(timer);
        this.proc.off("exit", onExit);
        resolve(m as Extract<FromPublisher, { type: T }>);
      } });
      if (cmd.type === "run") this.sent = 0;
      this.proc.send(cmd);
    });
  }
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), "portrait-overload-"));
  const server = await startNatsServer({ host: "127.0.0.1" });
  const nc = await connect({ servers: server.url });
  const httpPort = await freePort();
  const engine = spawn(process.execPath, ["--import", "tsx", join(repoRoot(), "src", "cli", "portrait.ts"), "start", "--nats", server.url,
    "--embedded-nats", "never", "--data-dir", join(work, "engine"), "--prefix", prefix, "--partitions", String(P),
    "--http-port", String(httpPort), "--max-ack-pending", String(MAX_ACK_PENDING), "--log-level", "warn"],
  { cwd: repoRoot(), stdio: ["ignore", "inherit", "inherit"] });
  const pubs = Array.from({ length: K }, (_, k) => new Publisher(k));
  const client = new PortraitClient(nc, { subjectPrefix: prefix, partitions: P, requestTimeoutMs: 2000 });
  const jsm = await nc.jetstreamManager();
  const all = <T>(f: (p: Publisher) => Promise<T>) => Promise.all(pubs.map(f));
  const init = (round: number, total: number) => all((p) => p.ask({
    type: "init", url: server.url, prefix, partitions: P, users: USERS, seed: 1000 * round + p.index + 1, count: Math.ceil(total / K),
  }, "ready", 300_000));
  const runAll = (n: number, rate: number, startAt: number, deadline: number) =>
    all((p) => p.ask({ type: "run", n: Math.ceil(n / K), rate: rate / K, startAt, deadline }, "done", deadline - Date.now() + 60_000));
  const waitFor = async (what: string, ok: () => Promise<boolean>, capMs: number): Promise<number> => {
    const t = Date.now();
    while (!(await ok())) {
      if (Date.now() - t > capMs) throw new Error(`${what}: not within ${capMs} ms`);
      await sleep(250);
    }
    return Date.now() - t;
  };
  try {
    await waitFor("engine ready", async () => (await streamState(jsm)) !== undefined && (await engineMetrics(httpPort)) !== undefined, 60_000);
    await sleep(1000);
    const idle = memMiB(engine.pid!);
    log(`engine ready; idle RSS ${idle.rss.toFixed(0)} MiB`);

    // Capacity: a pre-encoded burst published as fast as possible; the apply rate over 5 s while a backlog remains.
    let capacity = NaN;
    let capacityNote = "";
    if (a.rate === undefined) {
      await init(1, BURST);
      await runAll(BURST, 0, Date.now(), Date.now() + 120_000);
      const s0 = (await streamState(jsm))!;
      const c0 = Date.now();
      await sleep(5000);
      const s1 = (await streamState(jsm))!;
      capacity = (s1.acked - s0.acked) / ((Date.now() - c0) / 1000);
      capacityNote = s1.backlog > 0 ? "" : " (the burst drained within the 5 s: a lower bound)";
      await waitFor("burst drained", async () => (await streamState(jsm))?.backlog === 0, 180_000);
      log(`capacity ~${capacity.toFixed(0)} events/s${capacityNote}`);
    }
    const rate = a.rate !== undefined ? Number(a.rate) : 2 * capacity;
    if (!(rate > 0)) throw new Error(`bad rate ${rate}`);

    // Encode the backlog and the window's events (untimed; the engine is idle).
    const windowEvents = Math.ceil(rate * SECONDS * 1.02) + 1000;
    const ready = await init(2, BACKLOG + windowEvents);
    log(`encoded ${ready.reduce((x, r) => x + r.count, 0)} events (${(ready.reduce((x, r) => x + r.bytes, 0) / 2 ** 20).toFixed(0)} MiB) in ${Math.max(...ready.map((r) => r.encodeMs))} ms`);
    const before = (await streamState(jsm))!;
    let preloadS = 0;
    if (BACKLOG > 0) {
      const t = Date.now();
      await runAll(BACKLOG, 0, t, t + 300_000);
      const target = before.stored + Math.ceil(BACKLOG / K) * K;
      await waitFor("backlog stored", async () => ((await streamState(jsm))?.stored ?? 0) >= target, 60_000);
      preloadS = (Date.now() - t) / 1000;
      log(`preloaded ${BACKLOG} events in ${preloadS.toFixed(1)} s`);
    }

    // The window: open loop at `rate` for SECONDS; each second RSS, backlog, acknowledged, metrics, 10 queries.
    const start = Date.now() + 200;
    const end = start + SECONDS * 1000;
    const load0 = loadavg()[0]!;
    const publishing = runAll(windowEvents, rate, start, end);
    const w0 = (await streamState(jsm))!;
    type Sample = {
      t: number; rss: number; anon: number; file: number; backlog: number; acked: number; stored: number; redelivered: number; sent: number; parts: number[];
      heaps: ThreadHeaps | undefined; actors: number; inflightBatches: number; recsQueued: number;
    };
    const samples: Sample[] = [];
    const queries: Array<Promise<{ r: string; ms: number }>> = [];
    const ask = (u: string) => {
      const q0 = Date.now();
      return client.getProfile(u).then(() => "ok", (e: unknown) => (e instanceof PortraitError && e.code === "OVERLOADED" ? "overloaded" : `other:${(e as PortraitError)?.code ?? e}`))
        .then((r) => ({ r, ms: Date.now() - q0 }));
    };
    const sample = async (): Promise<Sample> => {
      const m = memMiB(engine.pid!);
      const [st, em] = await Promise.all([streamState(jsm), engineMetrics(httpPort)]);
      return {
        t: (Date.now() - start) / 1000, ...m, backlog: st?.backlog ?? NaN, acked: st?.acked ?? NaN, stored: st?.stored ?? NaN, redelivered: st?.redelivered ?? NaN, parts: st?.parts ?? [],
        sent: pubs.reduce((x, p) => x + p.sent, 0), heaps: em?.heaps, actors: em?.actors ?? NaN, inflightBatches: em?.inflightBatches ?? NaN, recsQueued: em?.recsQueued ?? NaN,
      };
    };
    await sleep(Math.max(0, start - Date.now()));
    for (let i = 1; i <= SECONDS; i++) {
      await sleep(Math.max(0, start + i * 1000 - Date.now()));
      for (let q = 1; q <= 10; q++) queries.push(ask(`u${q}`));
      const x = await sample();
      samples.push(x);
      if (i % 5 === 0) {
        const h = THREADS.map((t) => `${t} ${x.heaps?.[t]?.used.toFixed(0) ?? "?"}/${x.heaps?.[t]?.total.toFixed(0) ?? "?"}`).join(", ");
        log(`t=${i}s backlog ${x.backlog} acked ${x.acked - w0.acked} sent ${x.sent} RSS ${x.rss.toFixed(0)} MiB (anon ${x.anon.toFixed(0)}, file ${x.file.toFixed(0)}) actors ${x.actors} heaps used/total MiB: ${h}`);
      }
    }
    const done = await publishing;
    const load1 = loadavg()[0]!;
    const w1 = samples[samples.length - 1]!;
    const windowS = (Date.now() - start) / 1000;
    const sentWindow = done.reduce((x, d) => x + d.sent, 0);
    const answered = await Promise.all(queries);
    const answers = answered.map((x) => x.r);
    const count = (k: string) => answers.filter((x) => x === k).length;
    const others = answers.filter((x) => x.startsWith("other"));
    const latency = (k: string) => {
      const ms = answered.filter((x) => x.r === k).map((x) => x.ms).sort((u, v) => u - v);
      return ms.length === 0 ? "-" : `${ms[Math.floor(ms.length / 2)]} / ${ms[ms.length - 1]}`;
    };

    // Drain: until nothing waits, sampling RSS every second.
    const drain: Sample[] = [];
    const overloadEnd = Date.now();
    for (;;) {
      const x = await sample();
      drain.push(x);
      if (drain.length % 10 === 0) log(`drain t=${drain.length}s backlog per partition: ${x.parts.join(" ")}; batches handed to the shards, not yet acknowledged ${x.inflightBatches}`);
      if (x.backlog === 0 || Date.now() - overloadEnd > DRAIN_CAP_S * 1000) break;
      await sleep(1000);
    }
    const drainS = (Date.now() - overloadEnd) / 1000;
    // Idle after the drain: what of the memory stays.
    await sleep(10_000);
    const after = await sample();
    const lagEnd = drain[drain.length - 1]!.backlog;
    const applyRate = (w1.acked - w0.acked) / w1.t;
    const drainRate = (drain[drain.length - 1]!.acked - w1.acked) / Math.max(1, drainS);
    const half = samples.slice(Math.floor(samples.length / 2));
    const rssSlope = slope(half.map((x) => [x.t, x.rss]));
    const anonSlope = slope(half.map((x) => [x.t, x.anon]));
    const maxBacklog = Math.max(w0.backlog, ...samples.map((x) => x.backlog));
    const heapOf = (x: Sample, t: string, k: "used" | "total" | "external") => x.heaps?.[t]?.[k] ?? NaN;
    const finite = (xs: number[]) => xs.filter(Number.isFinite);
    const heapRow = (t: string): [string, string] => {
      const used = finite(samples.map((x) => heapOf(x, t, "used")));
      const total = finite(samples.map((x) => heapOf(x, t, "total")));
      const last = [...samples, ...drain].reverse().find((x) => Number.isFinite(heapOf(x, t, "total")));
      const f = (xs: number[], g: (u: number[]) => number) => (xs.length > 0 ? g(xs).toFixed(0) : "?");
      return [`V8 heap of ${t}, MiB: used max / total first / total max / total at the drain's end / external max`,
        `${f(used, (u) => Math.max(...u))} / ${f(total, (u) => u[0]!)} / ${f(total, (u) => Math.max(...u))} / ${last !== undefined ? heapOf(last, t, "total").toFixed(0) : "?"} / ${f(finite(samples.map((x) => heapOf(x, t, "external"))), (u) => Math.max(...u))}`];
    };
    const heapSum = (x: Sample) => THREADS.reduce((n, t) => n + heapOf(x, t, "total"), 0);
    const f0 = (x: number) => x.toFixed(0);
    const title = `overload, saturated: ${BACKLOG > 0 ? `backlog ${BACKLOG} + ` : ""}${a.rate !== undefined ? `${a.rate} events/s` : "2x capacity"} for ${SECONDS} s`;
    const rows = [
      ["engine apply capacity (pre-encoded burst, 5 s with a backlog)", a.rate !== undefined ? "not measured (--rate)" : `${f0(capacity)} events/s${capacityNote}`],
      ["preloaded backlog", BACKLOG > 0 ? `${BACKLOG} events in ${preloadS.toFixed(1)} s` : "none"],
      [`publish rate in the window, offered / achieved (${K} pre-encoded publisher processes, core NATS)`, `${f0(rate)} / ${f0(sentWindow / windowS)} events/s (${sentWindow} events)`],
      ["stored by the broker in the window", `${f0((w1.stored - w0.stored) / w1.t)} events/s`],
      ["engine apply rate in the window (acknowledged)", `${f0(applyRate)} events/s (${w1.acked - w0.acked} events)`],
      ["backlog: window start / max / window end", `${w0.backlog} / ${maxBacklog} / ${w1.backlog}`],
      ["engine RSS: idle / max / mean of the second half", `${f0(idle.rss)} / ${f0(Math.max(...samples.map((x) => x.rss)))} / ${f0(mean(half.map((x) => x.rss)))} MiB`],
      ["engine RSS slope over the second half: total / anonymous", `${rssSlope.toFixed(2)} / ${anonSlope.toFixed(2)} MiB/s`],
      ["engine RSS at the window end: anonymous / file-backed (LMDB map, code)", `${f0(w1.anon)} / ${f0(w1.file)} MiB`],
      ...THREADS.map(heapRow),
      ["sum of the V8 heaps (total) at the window end; RSS minus it", `${heapSum(w1).toFixed(0)} / ${(w1.rss - heapSum(w1)).toFixed(0)} MiB`],
      ["actors cached (all shards) at the window end", String(w1.actors)],
      ["profile queries answered / OVERLOADED / other errors", `${count("ok")} / ${count("overloaded")} / ${others.length}${others.length > 0 ? ` (${[...new Set(others)].join(", ")})` : ""}`],
      ["query time, ms, median / max: answered; OVERLOADED", `${latency("ok")}; ${latency("overloaded")}`],
      ["10 s after the drain: RSS / anonymous / sum of V8 heaps (total) / actors", `${f0(after.rss)} / ${f0(after.anon)} / ${f0(heapSum(after))} MiB / ${after.actors}`],
      ["lag after the window: drained in / left / drain apply rate", `${drainS.toFixed(0)} s / ${lagEnd} / ${f0(drainRate)} events/s`],
    ];
    printTable(title, ["measure", "value"], rows);
    const series = (name: string, xs: number[]) => `${name}: ${xs.map((x) => (Number.isFinite(x) ? x.toFixed(0) : "?")).join(" ")}`;
    const notes = [
      `Engine: ${P} partitions, 2 shard workers, --max-ack-pending ${MAX_ACK_PENDING} (at most ${P * MAX_ACK_PENDING} events in flight), ${USERS} users (Zipf), bundled models. Per second of the window:`,
      "",
      `- ${series("RSS (MiB)", samples.map((x) => x.rss))}`,
      `- ${series("RSS anonymous (MiB)", samples.map((x) => x.anon))}`,
      `- ${series("RSS file-backed (MiB)", samples.map((x) => x.file))}`,
      ...THREADS.map((t) => `- ${series(`V8 heap of ${t}, used (MiB)`, samples.map((x) => heapOf(x, t, "used")))}`),
      ...THREADS.map((t) => `- ${series(`V8 heap of ${t}, total (MiB)`, samples.map((x) => heapOf(x, t, "total")))}`),
      `- ${series("RSS minus the V8 heaps' totals (MiB)", samples.map((x) => x.rss - heapSum(x)))}`,
      `- ${series("batches handed to the shards, not yet acknowledged", samples.map((x) => x.inflightBatches))}`,
      `- ${series("item events queued for the recs worker", samples.map((x) => x.recsQueued))}`,
      `- ${series("backlog (events)", samples.map((x) => x.backlog))}`,
      `- ${series("acknowledged per second", samples.map((x, i) => x.acked - (i === 0 ? w0.acked : samples[i - 1]!.acked)))}`,
      `- ${series("actors cached", samples.map((x) => x.actors))}`,
      `- ${series("RSS while draining, every ~1 s (MiB)", drain.map((x) => x.rss))}`,
      `- ${series("RSS anonymous while draining (MiB)", drain.map((x) => x.anon))}`,
      ...THREADS.map((t) => `- ${series(`V8 heap of ${t} while draining, total (MiB)`, drain.map((x) => heapOf(x, t, "total")))}`),
      `- ${series("RSS minus the V8 heaps' totals while draining (MiB)", drain.map((x) => x.rss - heapSum(x)))}`,
      `- ${series("actors cached while draining", drain.map((x) => x.actors))}`,
      `- backlog per partition while draining, every 10 s: ${drain.filter((_, i) => (i + 1) % 10 === 0).map((x) => `[${x.parts.join(" ")}]`).join(" ")}`,
      `- ${series("backlog while draining (events)", drain.map((x) => x.backlog))}`,
      "",
      `Redelivered messages at the end: ${drain[drain.length - 1]!.redelivered}. Load average (1 min) at the start / end of the window: ${load0.toFixed(1)} / ${load1.toFixed(1)} (the 2 cores are shared with other work).`,
    ];
    if (!a["no-record"]) {
      appendResults(title, `npx tsx bench/overload.ts --seconds ${SECONDS} --users ${USERS} --publishers ${K} --backlog ${BACKLOG}${a.rate !== undefined ? ` --rate ${a.rate}` : ""}`,
        ["measure", "value"], rows, notes);
    } else {
      console.log(notes.join("\n"));
    }
  } finally {
    for (const p of pubs) if (p.proc.connected) p.proc.send({ type: "exit" } satisfies ToPublisher);
    await Promise.all(pubs.map((p) => (p.proc.exitCode !== null ? undefined : Promise.race([new Promise((r) => p.proc.once("exit", r)), sleep(5000).then(() => p.proc.kill("SIGKILL"))]))));
    engine.kill("SIGTERM");
    await Promise.race([new Promise((r) => engine.once("exit", r)), sleep(40_000).then(() => engine.kill("SIGKILL"))]);
    await nc.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
