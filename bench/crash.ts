/**
 * The crash harness (issue "Prove it"): replays real data sets plus the
 * synthetic generator through the engine while SIGKILLing it at random
 * moments (during start-up, while applying, after a commit and before its
 * ack) and restarting it, then checks every user's counters and money
 * against a reference computed here, independently of the engine, from the
 * input, and the LSTM state against an uninterrupted run on the same stream.
 *
 *   npx tsx bench/crash.ts [--synthetic 400000] [--kills 20] [--real] [--seed 1] [--no-record]
 *
 * Everything runs on 127.0.0.1; every loop is bounded in count and time.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { open } from "lmdb";
import { connect, headers, type NatsConnection } from "nats";
import { startNatsServer } from "../src/bus/nats-server-launcher.js";
import { partitionOf } from "../src/wire/partition.js";
import { ensureStreams } from "../src/bus/streams.js";
import { subjects } from "../src/bus/subjects.js";
import { compileEngineOptions } from "../src/config/engine-options.js";
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import type { DatasetFormat } from "../src/data/types.js";
import { decodeEvent } from "../src/wire/event-validation.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";
import { appendResults, printTable, repoRoot } from "./report.js";
import { syntheticEvents } from "./synthetic.js";
import { seededRandom } from "../src/models/seeded-random.js";

const { values: a } = parseArgs({
  options: {
    synthetic: { type: "string", default: "400000" },
    real: { type: "boolean", default: true },
    "no-real": { type: "boolean", default: false },
    kills: { type: "string", default: "20" },
    seed: { type: "string", default: "1" },
    partitions: { type: "string", default: "8" },
    workers: { type: "string", default: "2" },
    "timeout-s": { type: "string", default: "1500" },
    datasets: { type: "string", default: process.env.PORTRAIT_DATASETS ?? join(repoRoot(), "..", "shared", "data") },
    "no-record": { type: "boolean", default: false },
  },
});
const P = Number(a.partitions);
const KILLS = Number(a.kills);
const DEADLINE = Date.now() + Number(a["timeout-s"]) * 1000;
const log = (s: string) => process.stderr.write(`[crash ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const CLI = join(repoRoot(), "src", "cli", "portrait.ts");
const prefix = "crash";
const s = subjects(prefix);

/** What the engine must end with, per user: counts per type and money, computed from the input alone. */
interface Ref { counts: number[]; purchased: number; refunded: number }

function addRef(ref: Map<string, Ref>, e: IEvent): void {
  let r = ref.get(e.userId!);
  if (r === undefined) ref.set(e.userId!, (r = { counts: new Array<number>(12).fill(0), purchased: 0, refunded: 0 }));
  r.counts[e.type!]!++;
  const amount = (e.price ?? 0) * ((e.quantity ?? 0) > 0 ? e.quantity! : 1);
  if (e.type === EventType.PURCHASE) r.purchased += amount;
  if (e.type === EventType.REFUND) r.refunded += amount;
}

async function* inputs(): AsyncGenerator<IEvent> {
  if (a.real && !a["no-real"]) {
    const sources: Array<[DatasetFormat, string | undefined]> = [
      ["online-retail", undefined], ["taobao", undefined], ["rees46", undefined],
      ["yoochoose", "yoochoose-100k/yoochoose-clicks-100k_train_full.txt.gz"],
    ];
    for (const [format, file] of sources) {
      log(`reading ${format}`);
      for await (const e of readDataset(format, resolveDataFile(a.datasets!, format, file))) yield e;
    }
  }
  const n = Number(a.synthetic);
  if (n > 0) {
    log(`generating ${n} synthetic events`);
    yield* syntheticEvents(n, { users: 100_000, seed: Number(a.seed) + 7 });
  }
}

interface Encoded { subject: string; data: Uint8Array; id: string }

/** Reads and validates every input event once and computes the reference; nothing is published yet. */
async function prepare(): Promise<{ ref: Map<string, Ref>; encoded: Encoded[]; invalid: number }> {
  const ref = new Map<string, Ref>();
  const validation = { partitions: P, maxEventBytes: 65_536, maxFutureSkewMs: 86_400_000 };
  const encoded: Encoded[] = [];
  let invalid = 0;
  const seen = new Set<string>();
  for await (const e of inputs()) {
    // Event ids must be unique in the input (JetStream would drop a repeat inside its window).
    if (seen.has(e.eventId!)) continue;
    seen.add(e.eventId!);
    const data = pb.Event.encode(e).finish();
    const p = partitionOf(e.userId!, P);
    if (!decodeEvent(data, p, Date.now(), validation).ok) {
      invalid++;
      continue;
    }
    encoded.push({ subject: s.events(p), data, id: e.eventId! });
    addRef(ref, e);
  }
  return { ref, encoded, invalid };
}

/** Publishes events [from, to) (core publish with Nats-Msg-Id, flushed in chunks) and waits until the stream holds them. */
async function publishRange(nc: NatsConnection, ev: Encoded[], from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) {
    const h = headers();
    h.set("Nats-Msg-Id", ev[i]!.id);
    nc.publish(ev[i]!.subject, ev[i]!.data, { headers: h });
    if ((i - from) % 20_000 === 19_999) await nc.flush();
  }
  await nc.flush();
  const jsm = await nc.jetstreamManager();
  while ((await jsm.streams.info(s.eventStream)).state.messages < to) {
    if (Date.now() > DEADLINE) throw new Error("the stream did not receive every published event");
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Child { proc: ChildProcess; exited: Promise<{ code: number | null; signal: string | null }>; out: () => string }

function startEngine(natsUrl: string, dataDir: string, extra: string[] = []): Child {
  const proc = spawn(process.execPath, ["--import", "tsx", CLI, "start", "--nats", natsUrl, "--embedded-nats", "never",
    "--data-dir", dataDir, "--prefix", prefix, "--partitions", String(P), "--workers", a.workers!, "--http-port", "-1",
    "--log-level", "warn", ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  proc.stderr!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => proc.once("exit", (code, signal) => r({ code, signal })));
  return { proc, exited, out: () => out };
}

/** Messages the partition consumers still have to deliver or get acknowledged (0 when the engine caught up). */
async function outstanding(nc: NatsConnection, createdAfterMs = 0): Promise<number> {
  const jsm = await nc.jetstreamManager();
  let n = 0;
  for (let p = 0; p < P; p++) {
    try {
      const ci = await jsm.consumers.info(s.eventStream, s.consumer(p));
      // An engine re-creates its consumers at start: until then the old ones say nothing about it.
      if (Date.parse(ci.created) < createdAfterMs) return Number.POSITIVE_INFINITY;
      n += ci.num_pending + ci.num_ack_pending;
    } catch {
      return Number.POSITIVE_INFINITY; // not created yet
    }
  }
  return n;
}

/** Runs an engine until every event is applied and acknowledged, then stops it with SIGTERM (a clean drain). */
async function runToEnd(nc: NatsConnection, natsUrl: string, dataDir: string): Promise<number> {
  const t0 = performance.now();
  const startedMs = Date.now();
  const c = startEngine(natsUrl, dataDir);
  for (;;) {
    if (c.proc.exitCode !== null) throw new Error(`engine exited early:\n${c.out()}`);
    if ((await outstanding(nc, startedMs)) === 0) break;
    if (Date.now() > DEADLINE) throw new Error("timed out waiting for the engine to catch up");
    await new Promise((r) => setTimeout(r, 500));
  }
  c.proc.kill("SIGTERM");
  const exit = await c.exited;
  if (exit.code !== 0) throw new Error(`engine did not drain cleanly (${JSON.stringify(exit)}):\n${c.out()}`);
  return (performance.now() - t0) / 1000;
}

interface Stored { counts: number[]; purchased: number; refunded: number; lstm?: Uint8Array; lstmV?: string }

function readProfiles(dataDir: string): Map<string, Stored> {
  const root = open({ path: join(dataDir, "lmdb"), readOnly: true });
  const db = root.openDB<Stored, string>({ name: "profiles", encoding: "msgpack", sharedStructuresKey: Symbol.for("structures") });
  const out = new Map<string, Stored>();
  for (const { key, value } of db.getRange()) {
    if (typeof key !== "string") continue;
    out.set(key, { counts: value.counts, purchased: value.purchased, refunded: value.refunded, ...(value.lstm ? { lstm: Uint8Array.from(value.lstm) } : {}), lstmV: value.lstmV });
  }
  void root.close();
  return out;
}

async function main(): Promise<void> {
  const started = performance.now();
  const rnd = seededRandom(Number(a.seed));
  const work = mkdtempSync(join(tmpdir(), "portrait-crash-"));
  const server = await startNatsServer({ storeDir: join(work, "nats") });
  const nc = await connect({ servers: server.url });
  try {
    await ensureStreams(await nc.jetstreamManager(), s, compileEngineOptions({ partitions: P, eventRetentionMs: 0 }));
    const { ref, encoded, invalid } = await prepare();
    const published = encoded.length;
    // A third goes in before the first start; the rest arrives in slices while the engine is being killed.
    const head = Math.floor(published / 3);
    await publishRange(nc, encoded, 0, head);
    log(`${published} events of ${ref.size} users (${invalid} invalid inputs left out); ${head} preloaded`);
    const slice = Math.ceil((published - head) / KILLS);

    // Kill cycles: each start is killed after a random delay; some during start-up, some right after a commit.
    const crashDir = join(work, "crashed");
    const kinds = { startup: 0, running: 0, afterCommit: 0 };
    for (let k = 0; k < KILLS; k++) {
      if (Date.now() > DEADLINE) throw new Error("timed out during the kill cycles");
      const afterCommit = k % 5 === 4;
      const c = startEngine(server.url, crashDir, afterCommit ? ["--fault-kill-before-ack", String(1 + Math.floor(rnd() * 20))] : []);
      const publishing = publishRange(nc, encoded, Math.min(published, head + k * slice), Math.min(published, head + (k + 1) * slice));
      if (afterCommit) {
        // The engine kills itself after that many committed batches, before their ack.
        // (If that many batches never come, it is killed from here after 20 s and counted as "applying".)
        let fired = true;
        const timer = setTimeout(() => {
          fired = false;
          c.proc.kill("SIGKILL");
        }, 20_000);
        const exit = await c.exited;
        clearTimeout(timer);
        if (exit.signal !== "SIGKILL") throw new Error(`expected a fault kill, got ${JSON.stringify(exit)}:\n${c.out()}`);
        if (fired) kinds.afterCommit++;
        else kinds.running++;
      } else {
        const delayMs = k % 3 === 0 ? rnd() * 1500 : 4000 + rnd() * 8000;
        await new Promise((r) => setTimeout(r, delayMs));
        c.proc.kill("SIGKILL");
        await c.exited;
        if (delayMs < 1500) kinds.startup++;
        else kinds.running++;
      }
      await publishing;
      log(`kill ${k + 1}/${KILLS}: ${afterCommit ? "after a commit, before its ack" : "SIGKILL"}; outstanding ${await outstanding(nc)}`);
    }
    const finalSeconds = await runToEnd(nc, server.url, crashDir);
    log(`caught up after the kills in ${finalSeconds.toFixed(0)} s`);

    // The same stream through an engine that is never interrupted, for the LSTM state.
    const cleanDir = join(work, "clean");
    await runToEnd(nc, server.url, cleanDir);
    log("uninterrupted run done");

    const crashed = readProfiles(crashDir);
    const clean = readProfiles(cleanDir);
    let lost = 0, doubled = 0, moneyOff = 0, missing = 0, extra = 0, lstmDiff = 0, lstmCompared = 0;
    for (const [user, r] of ref) {
      const got = crashed.get(user);
      if (got === undefined) {
        missing++;
        lost += r.counts.reduce((x, y) => x + y, 0);
        continue;
      }
      for (let t = 1; t < r.counts.length; t++) {
        const g = got.counts[t] ?? 0;
        if (g < r.counts[t]!) lost += r.counts[t]! - g;
        if (g > r.counts[t]!) doubled += g - r.counts[t]!;
      }
      if (Math.abs(got.purchased - r.purchased) > 1e-6 * Math.max(1, r.purchased) || Math.abs(got.refunded - r.refunded) > 1e-6 * Math.max(1, r.refunded)) moneyOff++;
      const c = clean.get(user);
      if (got.lstm !== undefined || c?.lstm !== undefined) {
        lstmCompared++;
        if (got.lstm === undefined || c?.lstm === undefined || got.lstmV !== c.lstmV || Buffer.compare(Buffer.from(got.lstm), Buffer.from(c.lstm)) !== 0) lstmDiff++;
      }
    }
    for (const user of crashed.keys()) if (!ref.has(user)) extra++;
    const rows = [
      ["events published (valid inputs; real data sets + synthetic)", String(published)],
      ["users", String(ref.size)],
      ["SIGKILL cycles (< 1.5 s after start, in start-up / 4–12 s after start / by the engine after a commit, before its ack)", `${KILLS} (${kinds.startup} / ${kinds.running} / ${kinds.afterCommit})`],
      ["events lost", String(lost)],
      ["events applied twice", String(doubled)],
      ["users with money different from the reference", String(moneyOff)],
      ["users missing / unexpected", `${missing} / ${extra}`],
      ["users whose LSTM state differs from an uninterrupted run", `${lstmDiff} of ${lstmCompared}`],
      ["wall time", `${((performance.now() - started) / 1000).toFixed(0)} s`],
    ];
    printTable("crash harness", ["measure", "value"], rows);
    const ok = lost === 0 && doubled === 0 && moneyOff === 0 && missing === 0 && extra === 0 && lstmDiff === 0;
    if (!a["no-record"]) {
      appendResults("crash harness", `npx tsx bench/crash.ts --synthetic ${a.synthetic} --kills ${KILLS} --seed ${a.seed}`, ["measure", "value"], rows,
        [ok ? "Every count, every amount and every LSTM state matched." : "MISMATCH: see the rows above."]);
    }
    if (!ok) process.exitCode = 1;
  } finally {
    await nc.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
