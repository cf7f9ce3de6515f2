/**
 * `npm run bench:audience-backfill`: a backfill over many stored profiles (1M by
 * default) while ingest goes on, measured, not extrapolated (issue 15: "≤ 60 s
 * per 1M stored profiles while ingest continues").
 *
 * 1. Seed: --profiles users written through the store's own code (applyEvent,
 *    the audience day buckets, an evaluation against the empty set, commitBatch
 *    per partition), 3 events each within the last day; each shard's runner
 *    records the empty set as backfilled first, as an engine that never had an
 *    audience has. Kept in --seed-dir and copied for each run when given (a
 *    backfill writes every profile's memberships record).
 * 2. An in-process engine (2 shards, 8 partitions, models off) on a real
 *    nats-server (127.0.0.1, free port, temp store) starts on the copy.
 * 3. Background ingest at --ingest-rate events/s (bounded: at most that rate
 *    for at most --max-seconds), to seeded and new users, for the whole measure.
 * 4. `audience create` of an audience every seeded profile enters
 *    (events.90d >= 1); timed from the request until the engine reports the
 *    backfill done; then the count is checked (every seeded user a member).
 *
 *   node dist-bench/bench/audience-backfill.js [--profiles N] [--ingest-rate R] [--max-seconds S] [--seed-dir DIR] [--no-record]
 */
import { connect } from "nats";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { observeAudienceEvent } from "../src/actors/audience-state.js";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { applyEvent, newUserState, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import { startNatsServer } from "../src/bus/nats-server-launcher.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { Engine } from "../src/engine.js";
import { ActorCache } from "../src/shard/actor-cache.js";
import { AudienceRunner } from "../src/shard/audience-runner.js";
import { ProfileStore, type SideWrites } from "../src/store/profile-store.js";
import { partitionOf } from "../src/wire/partition.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { appendResults, printTable } from "./report.js";

const { values: a } = parseArgs({
  options: {
    profiles: { type: "string", default: "1000000" },
    "ingest-rate": { type: "string", default: "1000" },
    "max-seconds": { type: "string", default: "300" },
    "seed-dir": { type: "string" },
    "per-tick": { type: "string" },
    "no-record": { type: "boolean", default: false },
  },
});
const PROFILES = Number(a.profiles);
const INGEST_RATE = Number(a["ingest-rate"]);
const MAX_SECONDS = Number(a["max-seconds"]);
const PARTITIONS = 8;
const WORKERS = 2;
/** A seed dir of another size or layout is not reused. */
const SEED_MARK = `seeded-${PROFILES}-v1`;

const TYPES = [EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE] as const;

/** Seeds PROFILES users into `dir` through the store's code; returns the seconds it took. */
async function seed(dir: string, now: number): Promise<number> {
  const t0 = performance.now();
  const store = new ProfileStore({ dataDir: dir, mapSizeBytes: 2 ** 32 });
  // Each shard's runner takes the empty set and finishes its backfill over the empty store (its ["b", shard] record).
  for (let s = 0; s < WORKERS; s++) {
    const partitions = Array.from({ length: PARTITIONS }, (_, p) => p).filter((p) => p % WORKERS === s);
    const actors = new ActorCache(store, 1000);
    const runner = new AudienceRunner({ shard: s, partitions, partitionCount: PARTITIONS, store, actors, profile: PROFILE_DEFAULTS, subjectPrefix: "bench", pseudonymised: false, backfillChunk: 5000 });
    runner.set([]);
    await Promise.resolve();
    while (runner.backfillKeys() !== undefined);
  }
  await store.audienceWrite({ puts: [], removes: [] });
  const evaluator = new AudienceRunner({
    shard: 0, partitions: Array.from({ length: PARTITIONS }, (_, p) => p), partitionCount: PARTITIONS, store, actors: new ActorCache(store, 1000),
    profile: PROFILE_DEFAULTS, subjectPrefix: "bench", pseudonymised: false, backfillChunk: 5000,
  });
  let seedRnd = 3;
  const rnd = () => ((seedRnd = (seedRnd * 1103515245 + 12345) % 2147483648) / 2147483648);
  const CHUNK = 20_000;
  for (let from = 0; from < PROFILES; from += CHUNK) {
    const byP = new Map<number, [string, UserState][]>();
    for (let i = from; i < Math.min(PROFILES, from + CHUNK); i++) {
      const user = `u${i}`;
      const p = partitionOf(user, PARTITIONS);
      const u = newUserState();
      for (let j = 0; j < 3; j++) {
        const r = rnd();
        const type = TYPES[r < 0.75 ? 0 : r < 0.92 ? 1 : 2];
        const e: ProfileEvent = {
          type, timestampMs: now - 86_400_000 + Math.floor(rnd() * 86_000_000), itemId: `i${Math.floor(rnd() * 5000)}`, categoryId: `c${Math.floor(rnd() * 30)}`,
          brand: "", price: 1 + Math.floor(rnd() * 200), quantity: 1, currency: "", sessionId: "", orderId: type === EventType.PURCHASE ? `o${i}-${j}` : "",
        };
        applyEvent(u, e, PROFILE_DEFAULTS);
        observeAudienceEvent(u, e, p);
      }
      let list = byP.get(p);
      if (list === undefined) byP.set(p, (list = []));
      list.push([user, u]);
    }
    const commits: Promise<void>[] = [];
    for (const [p, list] of byP) {
      const side: SideWrites = { puts: [], removes: [] };
      // Evaluated against the empty set, as the engine evaluates every user it writes.
      evaluator.evaluate(p, list.map(([id, u]) => [id, { state: u, lastBatch: 0, batchTypes: 0, referenced: false, lstm: undefined, bytes: 0, bytesAtN: 0 }, "event"] as const), now, side, []);
      commits.push(store.commitBatch(p, 0, list, side));
    }
    await Promise.all(commits);
    if (from % 200_000 === 0) process.stdout.write(`seeded ${from}/${PROFILES}\n`);
  }
  await store.close();
  return (performance.now() - t0) / 1000;
}

/** CPU seconds of each thread of this process (Linux /proc; empty elsewhere), by thread id, with its name. */
function threadCpu(): Map<string, [string, number]> {
  const out = new Map<string, [string, number]>();
  try {
    for (const t of readdirSync("/proc/self/task")) {
      const stat = readFileSync(`/proc/self/task/${t}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(t, [name, (Number(f[11]) + Number(f[12])) / 100]);
    }
  } catch {
    // Not Linux: no per-thread figures.
  }
  return out;
}

async function main(): Promise<void> {
  const load0 = loadavg().map((x) => x.toFixed(2)).join(" ");
  const now = Date.now() - 60_000;
  let seedSecs = 0;
  let seedDir = a["seed-dir"];
  const tmpSeed = seedDir === undefined;
  seedDir ??= mkdtempSync(join(tmpdir(), "portrait-bench-audbfseed-"));
  if (!existsSync(join(seedDir, SEED_MARK))) {
    rmSync(seedDir, { recursive: true, force: true });
    mkdirSync(seedDir, { recursive: true });
    seedSecs = await seed(seedDir, now);
    writeFileSync(join(seedDir, SEED_MARK), "");
  }
  const dataDir = tmpSeed ? seedDir : mkdtempSync(join(tmpdir(), "portrait-bench-audbf-"));
  if (!tmpSeed) cpSync(join(seedDir, "lmdb"), join(dataDir, "lmdb"), { recursive: true });
  const nats = await startNatsServer({ readyTimeoutMs: 20_000 });
  const nc = await connect({ servers: nats.url, noAsyncTraces: true });
  const prefix = "abf";
  const rows: string[][] = [];
  const notes: string[] = [];
  let engine: Engine | undefined;
  try {
    const t1 = performance.now();
    engine = await Engine.start({
      natsUrl: nats.url, embeddedNats: "never", partitions: PARTITIONS, workers: WORKERS, httpPort: -1, logLevel: "warn", dataDir, subjectPrefix: prefix,
      lstmModel: "off", churnModel: "off", deepfmModel: "off", mapSizeBytes: 2 ** 32,
      ...(a["per-tick"] !== undefined ? { audienceBackfillPerTick: Number(a["per-tick"]) } : {}),
    });
    const startSecs = (performance.now() - t1) / 1000;
    const client = new PortraitClient(nc, { partitions: PARTITIONS, subjectPrefix: prefix, requestTimeoutMs: 30_000 });
    const applied = async () => (await engine!.metrics.eventsApplied.get()).values[0]?.value ?? 0;

    // Background ingest: INGEST_RATE events/s in 100 ms slices, half to seeded users, half to new ones, until stopped.
    let stop = false;
    let sent = 0;
    let rnd = 5;
    const next = () => ((rnd = (rnd * 1103515245 + 12345) % 2147483648) / 2147483648);
    const bg = (async () => {
      const began = performance.now();
      while (!stop && performance.now() - began < MAX_SECONDS * 1000) {
        const due = Math.floor(((performance.now() - began) / 1000) * INGEST_RATE);
        const evs: IEvent[] = [];
        for (; sent < due; sent++) {
          const user = next() < 0.5 ? `u${Math.floor(next() * PROFILES)}` : `n${sent}`;
          evs.push({ eventId: `bg-${sent}`, userId: user, type: EventType.VIEW, timestampMs: Date.now(), itemId: `i${Math.floor(next() * 5000)}`, categoryId: `c${Math.floor(next() * 30)}`, price: 10, quantity: 1 });
        }
        if (evs.length > 0) await client.publishMany(evs).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    await new Promise((r) => setTimeout(r, 2000));
    const applied0 = await applied();
    const cpu0 = process.cpuUsage();
    const threads0 = threadCpu();
    const b0 = performance.now();
    await client.audienceCreate({ id: "backfilled", rule: { field: "events.90d", op: ">=", value: 1 } });
    let total = 0;
    let firstSeen = 0;
    let timedOut = false;
    for (;;) {
      const shown = await client.audienceShow("backfilled").catch(() => undefined);
      if (performance.now() - b0 > MAX_SECONDS * 1000) {
        timedOut = true;
        break;
      }
      if (shown !== undefined) {
        const b = shown.backfill;
        if (b.running) {
          total = Math.max(total, b.total);
          if (firstSeen === 0) firstSeen = performance.now();
        } else if (total > 0) break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const secs = (performance.now() - b0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const threads = [...threadCpu()].map(([t, [name, s]]) => [name, s - (threads0.get(t)?.[1] ?? 0)] as const).filter(([, s]) => s >= 0.5).sort((x, y) => y[1] - x[1]);
    const ingested = (await applied()) - applied0;
    stop = true;
    await bg;
    // Every seeded user has events in the last 90 days: each is a member once the backfill committed.
    const count = await client.audienceCount("backfilled");
    const scanSecs = (performance.now() - (firstSeen || b0)) / 1000;
    rows.push([`backfill of a new audience over ${PROFILES} stored profiles, ingest ${INGEST_RATE} events/s beside it`,
      timedOut ? `not done in ${MAX_SECONDS} s` : `${secs.toFixed(1)} s`, `${(PROFILES / secs).toFixed(0)} profiles/s from the create request (${scanSecs.toFixed(1)} s from the first progress report); members counted ${count} (${count >= PROFILES ? "every seeded user" : "MISSING MEMBERS"})`]);
    rows.push(["per 1M profiles at that rate (s)", (1e6 * secs / PROFILES).toFixed(1), "target <= 60 s"]);
    rows.push(["ingest applied during the backfill (events/s)", (ingested / secs).toFixed(0), `asked ${INGEST_RATE}/s; ${sent} sent in all`]);
    rows.push(["process CPU during the backfill (s, all threads)", ((cpu.user + cpu.system) / 1e6).toFixed(1), `${((cpu.user + cpu.system) / PROFILES).toFixed(1)} µs per profile (engine, shards, in-process client); threads with >= 0.5 s: ${threads.map(([n, s]) => `${n} ${s.toFixed(1)}`).join(", ")}`]);
    notes.push(`Seed: ${PROFILES} profiles, 3 events each in the last day, ${seedSecs > 0 ? `written in ${seedSecs.toFixed(1)} s` : `copied from ${seedDir}`}; engine start on them ${startSecs.toFixed(1)} s; backfill bound ${engine.config.audienceBackfillPerTick} profiles per 100 ms tick per shard.`);
  } finally {
    await engine?.close();
    await nc.close();
    await nats.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
  const load1 = loadavg().map((x) => x.toFixed(2)).join(" ");
  notes.push(`Load average (1, 5, 15 min) before: ${load0}; after: ${load1} on ${cpus().length} cores.`);
  const header = ["measure", "value", "notes"];
  printTable("audience backfill at scale", header, rows);
  for (const n of notes) process.stdout.write(`- ${n}\n`);
  if (!a["no-record"]) appendResults("audience backfill at scale", `node dist-bench/bench/audience-backfill.js --profiles ${PROFILES} --ingest-rate ${INGEST_RATE}`, header, rows, notes.map((n) => `- ${n}`));
}

await main();
