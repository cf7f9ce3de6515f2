/**
 * `npm run bench:beyond-shards`: the shard side of what reviews, social ties
 * and risk signals cost on ingest, without the broker (issue 18's cost
 * target; bench/beyond-ingest.ts measures the whole engine with a
 * nats-server). The events of bench/beyond-events.ts go, packed per partition
 * in batches of maxBatchMessages in stream order, straight to a ShardPool (2
 * shard workers, 8 partitions, real LMDB, the sentiment model on, no recs
 * worker), once with `profile.beyondClicks` on and once off, alternating
 * (ABBA) in one process, each on a fresh data dir where every user already has
 * a profile (a VIEW each, applied by a pool that is then closed: no actor in
 * memory). The SOCIAL_NOTICE messages a batch sends are delivered to their
 * partition as the engine's bus would, and their outbox entries confirmed
 * published (ShardPool.published):
 * - `--notices ride` (default): in the recipient partition's next batch, as in
 *   a live stream where notices arrive among the events around them;
 * - `--notices alone`: each as a batch of its own, as a partition that has
 *   caught up receives them while others still drain a backlog.
 * `--only on|off` runs one mode only (for a CPU profile: node --cpu-prof).
 * A partition with nothing to apply waits for the next batch to end (which
 * may have sent it notices) rather than polling a timer, so the bench's own
 * main thread stays out of the cost.
 * Reported per run: CPU of the whole process (every thread: the shards,
 * lmdb-js's commits, V8's GC helpers) per shop event, of which the main
 * thread's (packing batches and routing notices), and the batches.
 *
 *   node dist-bench/bench/beyond-shards.js [--events N] [--users N] [--rounds R] [--notices ride|alone] [--no-social] [--no-reviews] [--mix beyond|generator] [--datasets DIR] [--only on|off] [--no-record]
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { open } from "lmdb";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { packBatch } from "../src/bus/event-batch.js";
import { ENGINE_DEFAULTS } from "../src/config/engine-options.js";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { ShardPool } from "../src/shard/shard-pool.js";
import { partitionOf } from "../src/wire/partition.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";
import { makeBeyondEvents, reviewTexts, type BeyondMix } from "./beyond-events.js";
import { procTicks } from "./harness/proc-stats.js";
import { appendResults, printTable } from "./report.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "60000" },
    users: { type: "string", default: "12000" },
    rounds: { type: "string", default: "3" },
    notices: { type: "string", default: "ride" },
    datasets: { type: "string", default: "../shared/data" },
    "no-social": { type: "boolean", default: false },
    "no-reviews": { type: "boolean", default: false },
    "no-record": { type: "boolean", default: false },
    mix: { type: "string", default: "beyond" },
    only: { type: "string", default: "" },
  },
});
const EVENTS = Number(a.events);
const USERS = Number(a.users);
const ROUNDS = Number(a.rounds);
const PARTITIONS = 8;
const WORKERS = 2;
const BATCH = ENGINE_DEFAULTS.maxBatchMessages;
const ALONE = a.notices === "alone";
if (a.notices !== "ride" && a.notices !== "alone") throw new Error("--notices must be ride or alone");
if (a.mix !== "beyond" && a.mix !== "generator") throw new Error("--mix must be beyond or generator");
const INTERNAL_KEY = new Uint8Array(randomBytes(32));

function startPool(dataDir: string, beyondClicks: boolean): Promise<ShardPool> {
  return ShardPool.start(WORKERS, PARTITIONS, {
    dataDir, mapSizeBytes: 2 ** 30, profile: compileProfileOptions({ beyondClicks }), maxActors: 1_000_000, logLevel: "silent",
    models: { sentimentDir: resolveModel(BUNDLED_MODELS_DIR, "sentiment").dir, shopSource: "stream:BENCH_EVENTS" },
    validation: { partitions: PARTITIONS, maxEventBytes: ENGINE_DEFAULTS.maxEventBytes, maxFutureSkewMs: ENGINE_DEFAULTS.maxFutureSkewMs, internalKey: INTERNAL_KEY },
  }, (shard, err) => {
    console.error(`shard ${shard} exited`, err);
    process.exit(1);
  }, undefined, { maxShardQueueEvents: ENGINE_DEFAULTS.maxShardQueueEvents });
}

/** Mean bytes of a stored profile (its LMDB value, msgpack with shared structures). */
function storedBytes(dataDir: string): number {
  const env = open({ path: join(dataDir, "lmdb"), readOnly: true });
  try {
    const db = env.openDB({ name: "profiles", encoding: "binary" });
    let n = 0;
    let bytes = 0;
    for (const { key, value } of db.getRange({})) {
      if (typeof key !== "string") continue;
      n++;
      bytes += (value as Buffer).length;
    }
    return bytes / Math.max(1, n);
  } finally {
    void env.close();
  }
}

/** One run: the events applied per partition in stream order; returns [CPU µs per shop event, wall s, batches, mean stored profile bytes, the main thread's CPU µs per shop event]. */
async function run(beyond: boolean, events: IEvent[], t0: number): Promise<[number, number, number, number, number]> {
  const dataDir = mkdtempSync(join(tmpdir(), "portrait-bench-beyond-shards-"));
  try {
    const seq = new Array<number>(PARTITIONS).fill(0);
    const encoded = (e: IEvent) => pb.Event.encode(e).finish();
    const seed = await startPool(dataDir, beyond);
    const first: Uint8Array[][] = Array.from({ length: PARTITIONS }, () => []);
    for (let u = 0; u < USERS; u++) first[partitionOf(`u${u}`, PARTITIONS)]!.push(encoded({ eventId: `f${u}`, userId: `u${u}`, type: EventType.VIEW, timestampMs: t0, itemId: "i0", categoryId: `c${u % 30}` }));
    await Promise.all(first.map(async (xs, p) => {
      for (let i = 0; i < xs.length; i += BATCH) {
        const chunk = xs.slice(i, i + BATCH);
        const s0 = seq[p]!;
        seq[p] = s0 + chunk.length;
        await seed.applyBatch(packBatch(p, chunk, (b) => b, (_b, j) => s0 + 1 + j));
      }
    }));
    await seed.close();
    const byPartition: Uint8Array[][] = Array.from({ length: PARTITIONS }, () => []);
    for (const e of events) byPartition[partitionOf(e.userId!, PARTITIONS)]!.push(encoded(e));
    const pool = await startPool(dataDir, beyond);
    const inbox: Uint8Array[][] = Array.from({ length: PARTITIONS }, () => []);
    let batches = 0;
    const cpu0 = process.cpuUsage();
    const main0 = procTicks(process.pid, process.pid);
    const w0 = performance.now();
    const apply = async (p: number, msgs: Uint8Array[]) => {
      const s0 = seq[p]!;
      seq[p] = s0 + msgs.length;
      batches++;
      const r = await pool.applyBatch(packBatch(p, msgs, (b) => b, (_b, j) => s0 + 1 + j));
      if (r.deadLetters.length > 0) throw new Error(`dead letters: ${r.deadLetters.map((d) => d.reason).join(", ")}`);
      const out = r.outbound ?? [];
      for (const m of out) inbox[Number(m.subject.slice(m.subject.lastIndexOf(".") + 1))]!.push(m.data);
      if (out.length > 0) pool.published(p, out.map((m) => m.msgId));
    };
    let inflight = 0;
    const exhausted = new Array<boolean>(PARTITIONS).fill(false);
    // A partition with nothing to apply sleeps until a batch ends (it may have sent notices) or the run is done: no polling, whose timers would count as the shards' CPU.
    let sleepers: (() => void)[] = [];
    const wakeAll = () => {
      const xs = sleepers;
      sleepers = [];
      for (const w of xs) w();
    };
    await Promise.all(byPartition.map(async (xs, p) => {
      for (let i = 0; ; ) {
        if (i < xs.length || inbox[p]!.length > 0) {
          inflight++;
          try {
            if (ALONE) {
              for (const m of inbox[p]!.splice(0)) await apply(p, [m]);
              if (i < xs.length) await apply(p, xs.slice(i, (i += BATCH)));
            } else {
              const notes = inbox[p]!.splice(0, BATCH);
              await apply(p, [...notes, ...xs.slice(i, (i += BATCH - notes.length))]);
            }
          } finally {
            inflight--;
            wakeAll();
          }
          continue;
        }
        exhausted[p] = true;
        // Done when every partition is, and no batch in flight can still send a notice.
        if (inflight === 0 && exhausted.every(Boolean) && inbox.every((b) => b.length === 0)) {
          wakeAll();
          break;
        }
        await new Promise<void>((r) => sleepers.push(r));
      }
    }));
    const c = process.cpuUsage(cpu0);
    const mainUs = (procTicks(process.pid, process.pid) - main0) * 10_000;
    const wall = (performance.now() - w0) / 1000;
    await pool.close();
    return [(c.user + c.system) / EVENTS, wall, batches, storedBytes(dataDir), mainUs / EVENTS];
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const load0 = loadavg().map((x) => x.toFixed(2)).join(" ");
  const texts = await reviewTexts(a.datasets!);
  const mix: BeyondMix = { events: EVENTS, users: USERS, noSocial: a["no-social"], noReviews: a["no-reviews"], mix: a.mix as "beyond" | "generator" };
  const t0 = Date.now() - 2 * 86_400_000;
  const { events } = makeBeyondEvents("bs", texts, t0, mix);
  const order: boolean[] = [true];
  for (let r = 0; r < ROUNDS; r++) order.push(...(r % 2 === 0 ? [true, false] : [false, true]));
  // --only on|off: runs of one mode (for a CPU profile of it: node --cpu-prof); nothing recorded.
  if (a.only !== "") order.splice(0, order.length, ...order.map(() => a.only === "on"));
  const cpu: [number[], number[]] = [[], []];
  const lines: string[] = [];
  for (const [i, on] of order.entries()) {
    const load = loadavg()[0]!.toFixed(2);
    const [us, wall, batches, bytes, mainUs] = await run(on, events, t0);
    const line = `run ${i + 1}${i === 0 ? " (warm-up, not counted)" : ""}, beyondClicks ${on ? "on " : "off"}: ${us.toFixed(1)} µs CPU per shop event (main thread ${mainUs.toFixed(1)}), ${wall.toFixed(1)} s, ${batches} batches, ${bytes.toFixed(0)} B per stored profile (load average ${load} at its start)`;
    console.log(`- ${line}`);
    if (i === 0) continue;
    lines.push(line);
    cpu[on ? 0 : 1].push(us);
  }
  const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
  // Pairs in run order (ABBA): each pair's ratio, so drift between pairs does not enter one ratio.
  const ratios = cpu[0].map((x, i) => 1 - cpu[1][i]! / x);
  const rows = [
    ["CPU per shop event, whole process (µs): on / off", `${mean(cpu[0]).toFixed(1)} / ${mean(cpu[1]).toFixed(1)}`, `cost 1 - off / on = ${((1 - mean(cpu[1]) / mean(cpu[0])) * 100).toFixed(1)}%; target <= 10%`],
    ["cost per ABBA pair", ratios.map((r) => `${(r * 100).toFixed(1)}%`).join(", "), `min ${(Math.min(...ratios) * 100).toFixed(1)}%, max ${(Math.max(...ratios) * 100).toFixed(1)}%`],
  ];
  const notes = [
    `${EVENTS} events, ${USERS} users (each with a profile before), ${PARTITIONS} partitions, ${WORKERS} shard workers, batches of ${BATCH}; notices ${ALONE ? "each in a batch of its own" : "in the recipient's next batch"}${a["no-social"] ? "; --no-social" : ""}${a["no-reviews"] ? "; --no-reviews" : ""}; --mix ${a.mix} (bench/beyond-events.ts).`,
    ...lines,
    `Load average (1, 5, 15 min) before: ${load0}; after: ${loadavg().map((x) => x.toFixed(2)).join(" ")} on ${cpus().length} cores.`,
  ];
  const header = ["measure", "value", "note"];
  printTable("reviews, social and risk in the shards (no broker)", header, rows);
  for (const n of notes) console.log(`- ${n}`);
  if (!a["no-record"] && a.only === "") {
    const flags = `${a.mix === "beyond" ? "" : ` --mix ${a.mix}`}${ALONE ? " --notices alone" : ""}${a["no-social"] ? " --no-social" : ""}${a["no-reviews"] ? " --no-reviews" : ""}`;
    appendResults("Reviews, social and risk in the shards (issue 18)", `npm run bench:beyond-shards -- --events ${EVENTS} --users ${USERS} --rounds ${ROUNDS}${flags}`, header, rows, notes.map((n) => `- ${n}`));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
