/**
 * Ingest benchmark: preload N events into a fresh stream on a private
 * nats-server, then consume the same messages twice:
 *   1. raw: a bare pull consumer per partition that only acknowledges (AckAll
 *      per batch): the machine's JetStream consume limit;
 *   2. engine: Portrait applies them (decode, validate, profile update, LMDB
 *      commit, ack).
 * Prints both rates and their ratio and appends them to bench/RESULTS.md.
 *
 *   npm run bench:ingest -- [--events N] [--users N] [--partitions P] [--workers W] [--max-batch N] [--no-record]
 *                           [--cpu-profile FILE]   (a V8 CPU profile of the main thread during the engine phase)
 */
import { execSync } from "node:child_process";
import { appendFileSync, existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { cpus, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { mkdtempSync } from "node:fs";
import { AckPolicy, DeliverPolicy, connect, type NatsConnection } from "nats";
import { partitionOf } from "../src/bus/partition.js";
import { startNatsServer } from "../src/bus/nats-server-launcher.js";
import { ensureStreams } from "../src/bus/streams.js";
import { subjects } from "../src/bus/subjects.js";
import { defaultWorkers } from "../src/config/engine-options.js";
import { Engine } from "../src/engine.js";
import { pb } from "../src/wire/proto.js";
import { syntheticEvents } from "./synthetic.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "1000000" },
    users: { type: "string", default: "200000" },
    partitions: { type: "string", default: "16" },
    workers: { type: "string" },
    "max-batch": { type: "string", default: "1024" },
    "timeout-s": { type: "string", default: "900" },
    "no-record": { type: "boolean", default: false },
    "cpu-profile": { type: "string" },
  },
});
const N = Number(a.events);
const USERS = Number(a.users);
const P = Number(a.partitions);
const W = a.workers ? Number(a.workers) : defaultWorkers();
const MAX_BATCH = Number(a["max-batch"]);
const TIMEOUT_MS = Number(a["timeout-s"]) * 1000;
const log = (s: string) => process.stderr.write(`${s}\n`);

/** The repository root (this file runs from bench/ under tsx or from dist-bench/bench/ compiled). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("bench: cannot find the repository root");
    dir = up;
  }
  return dir;
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const f of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, f.name);
    total += f.isDirectory() ? dirBytes(p) : statSync(p).size;
  }
  return total;
}

async function preload(nc: NatsConnection, prefix: string): Promise<number> {
  const s = subjects(prefix);
  let bytes = 0;
  let i = 0;
  for (const e of syntheticEvents(N, { users: USERS, seed: 7 })) {
    const data = pb.Event.encode(e).finish();
    bytes += data.length;
    nc.publish(s.events(partitionOf(e.userId!, P)), data);
    if (++i % 20_000 === 0) {
      await nc.flush();
      if (i % 200_000 === 0) log(`preload: ${i}/${N}`);
    }
  }
  await nc.flush();
  const jsm = await nc.jetstreamManager();
  const deadline = Date.now() + 60_000;
  while ((await jsm.streams.info(s.eventStream)).state.messages < N) {
    if (Date.now() > deadline) throw new Error("the stream did not receive every preloaded message");
    await new Promise((r) => setTimeout(r, 50));
  }
  return bytes / N;
}

/** A bare consumer per partition, same pull + AckAll-per-batch pattern as the engine, doing no work. */
async function rawConsume(nc: NatsConnection, prefix: string): Promise<number> {
  const s = subjects(prefix);
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();
  let received = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const t0 = performance.now();
  const running = [];
  for (let p = 0; p < P; p++) {
    const name = `raw-${p}`;
    await jsm.consumers.add(s.eventStream, {
      durable_name: name, filter_subject: s.events(p), ack_policy: AckPolicy.All, deliver_policy: DeliverPolicy.All, max_ack_pending: 8192,
    });
    const c = await js.consumers.get(s.eventStream, name);
    let last: { ack(): void } | undefined;
    let scheduled = false;
    running.push(await c.consume({
      max_messages: Math.min(8192, MAX_BATCH * 2),
      callback: (m) => {
        last = m;
        if (++received === N) done();
        if (!scheduled) {
          scheduled = true;
          setImmediate(() => {
            scheduled = false;
            last?.ack();
          });
        }
      },
    }));
  }
  await Promise.race([all, new Promise((_, rej) => setTimeout(() => rej(new Error("raw consume timed out")), TIMEOUT_MS))]);
  const seconds = (performance.now() - t0) / 1000;
  for (const r of running) r.stop();
  return N / seconds;
}

/** Profiles the main thread while `f` runs, writing a .cpuprofile (open it in Chrome DevTools). */
async function profiled<T>(file: string | undefined, f: () => Promise<T>): Promise<T> {
  if (!file) return f();
  const { Session } = await import("node:inspector/promises");
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  try {
    return await f();
  } finally {
    const { profile } = await session.post("Profiler.stop");
    const { writeFileSync } = await import("node:fs");
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
    log(`main-thread CPU profile written to ${file}`);
  }
}

async function engineConsume(natsUrl: string, prefix: string, dataDir: string): Promise<{ rate: number; engine: Engine; batchMean: number }> {
  const t0 = performance.now();
  const engine = await Engine.start({
    natsUrl, embeddedNats: "never", subjectPrefix: prefix, partitions: P, workers: W, dataDir, httpPort: -1,
    logLevel: "warn", maxBatchMessages: MAX_BATCH,
  });
  const applied = () => engine.metrics.total(engine.metrics.eventsApplied);
  let last = 0;
  let lastLog = performance.now();
  for (;;) {
    const n = await applied();
    if (n >= N) break;
    if (performance.now() - t0 > TIMEOUT_MS) throw new Error(`engine applied only ${n} of ${N} events in time`);
    if (performance.now() - lastLog > 5000) {
      log(`engine: ${n}/${N} applied (${Math.round((n - last) / ((performance.now() - lastLog) / 1000))}/s)`);
      last = n;
      lastLog = performance.now();
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  const seconds = (performance.now() - t0) / 1000;
  const h = (await engine.metrics.batchSize.get()).values;
  const sum = h.find((v) => v.metricName?.endsWith("_sum"))?.value ?? 0;
  const count = h.find((v) => v.metricName?.endsWith("_count"))?.value ?? 1;
  return { rate: N / seconds, engine, batchMean: sum / count };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), "portrait-bench-"));
  const server = await startNatsServer({ storeDir: join(work, "nats") });
  const nc = await connect({ servers: server.url, noAsyncTraces: true });
  const prefix = "bench";
  try {
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, subjects(prefix), { eventRetentionMs: 0, duplicateWindowMs: 120_000, dlqRetentionMs: 86_400_000 });
    log(`preloading ${N} events (${USERS} users, ${P} partitions)...`);
    const meanBytes = await preload(nc, prefix);
    log("raw JetStream consume...");
    const raw = await rawConsume(nc, prefix);
    log(`raw: ${raw.toFixed(0)} msg/s; engine...`);
    const dataDir = join(work, "engine");
    const { rate, engine, batchMean } = await profiled(a["cpu-profile"], () => engineConsume(server.url, prefix, dataDir));
    await engine.close();
    const lmdbBytes = dirBytes(join(dataDir, "lmdb"));
    const users = new Set<string>();
    for (const e of syntheticEvents(N, { users: USERS, seed: 7 })) users.add(e.userId!);

    const commit = (() => {
      try {
        return execSync("git rev-parse --short HEAD", { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
      } catch {
        return "unknown";
      }
    })();
    const rows: [string, string][] = [
      ["events", String(N)],
      ["distinct users", String(users.size)],
      ["mean event size", `${meanBytes.toFixed(0)} B`],
      ["partitions / shard workers", `${P} / ${W}`],
      ["raw JetStream consume (bare consumer, AckAll per batch)", `${raw.toFixed(0)} msg/s`],
      ["Portrait apply (decode, validate, profile, LMDB commit, ack)", `${rate.toFixed(0)} events/s`],
      ["ratio Portrait / raw", (rate / raw).toFixed(2)],
      ["mean batch size", batchMean.toFixed(0)],
      ["LMDB on disk / per user", `${(lmdbBytes / 2 ** 20).toFixed(1)} MiB / ${(lmdbBytes / users.size).toFixed(0)} B`],
    ];
    const width = Math.max(...rows.map(([k]) => k.length));
    console.log(`\ningest benchmark (${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, commit ${commit})`);
    for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
    if (!a["no-record"]) {
      const cmd = `npm run bench:ingest -- --events ${N} --users ${USERS} --partitions ${P} --workers ${W} --max-batch ${MAX_BATCH}`;
      const md = [
        "",
        `### ingest — ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC, commit ${commit}`,
        "",
        `Machine: ${cpus().length} × ${cpus()[0]?.model.trim() ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}. Command: \`${cmd}\``,
        "",
        "| measure | value |",
        "|---|---|",
        ...rows.map(([k, v]) => `| ${k} | ${v} |`),
        "",
      ].join("\n");
      appendFileSync(join(repoRoot(), "bench", "RESULTS.md"), md);
      log("appended to bench/RESULTS.md");
    }
  } finally {
    await nc.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
