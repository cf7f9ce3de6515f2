/**
 * `npm run bench:identity`: what identity costs on ingest and how fast a merge
 * shows, on a real nats-server (127.0.0.1, free port, temp store) and an
 * in-process engine (models off, so identity's share of the work is the
 * largest it can be):
 *
 * 1. Ingest throughput of the same pre-published events with no merged user
 *    and with 10% of the users merged into another user (fresh engine, data
 *    dir and stream prefix each), same run. The merges are applied first, by
 *    an engine that is then stopped; the measured engine starts on that data
 *    dir with no actor in memory, so every user's first event reads the alias
 *    table, and every event of a merged id is forwarded to its primary's
 *    partition (applied twice: the forward, then the event).
 *    Events/s = the events published / the time from the engine being ready
 *    to the last one's effect applied.
 *    The pair runs --rounds times in ABBA order (none, merged, merged, none)
 *    against the drift of a shared machine; the mean of each is reported.
 * 2. Merge latency: pairs of fresh users with a few events each; from the
 *    publish of IDENTIFY to the primary's profile showing the alias (polled
 *    every millisecond), p50 / p99 / max.
 * 3. The alias lookup itself: LMDB reads of the alias table (lmdb-js, the
 *    shard's read) for user keys of which 10% are aliases, ns per read, on the
 *    merged run's data dir; a shard does one per event of a user without an
 *    actor in memory.
 *
 *   node dist-bench/bench/identity.js [--events N] [--users N] [--merges N] [--rounds R] [--no-record]
 */
import { connect, type NatsConnection } from "nats";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startNatsServer } from "../src/bus/nats-server-launcher.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { Engine } from "../src/engine.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { makeEvents } from "./audience-sets.js";
import { appendResults, printTable } from "./report.js";

import { ProfileStore } from "../src/store/profile-store.js";

const { values: a } = parseArgs({
  options: {
    events: { type: "string", default: "150000" },
    users: { type: "string", default: "20000" },
    merges: { type: "string", default: "200" },
    rounds: { type: "string", default: "2" },
    "no-record": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (a.help) {
  process.stdout.write(`npm run bench:identity -- [options]: alias lookup cost on ingest and merge latency (see the comment at the top of bench/identity.ts)
  --events N    events pre-published for the throughput pair (default 150000)
  --users N     users they belong to; 10% of them are merged in the second run (default 20000)
  --merges N    merges timed for the latency measure (default 200)
  --rounds R    throughput pairs, in ABBA order (none, merged, merged, none, ...) against drift of a shared machine (default 2)
  --no-record   print only; do not append to bench/RESULTS.md
`);
  process.exit(0);
}
const EVENTS = Number(a.events);
const USERS = Number(a.users);
const MERGES = Number(a.merges);
const ROUNDS = Number(a.rounds);
const PARTITIONS = 8;
const WORKERS = 2;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((x, y) => x - y);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}


/** The merged ids of the second run: every tenth user, into the next one. */
const isSecondary = (u: number) => u % 10 === 0 && u + 1 < USERS;

async function applied(engine: Engine): Promise<number> {
  return (await engine.metrics.eventsApplied.get()).values[0]?.value ?? 0;
}

async function main(): Promise<void> {
  const load0 = loadavg().map((x) => x.toFixed(2)).join(" ");
  const nats = await startNatsServer({ readyTimeoutMs: 20_000 });
  const nc: NatsConnection = await connect({ servers: nats.url });
  const dirs: string[] = [];
  const start = (prefix: string, dataDir: string) => Engine.start({
    natsUrl: nats.url, embeddedNats: "never", partitions: PARTITIONS, workers: WORKERS, httpPort: -1, logLevel: "warn", dataDir, subjectPrefix: prefix,
    lstmModel: "off", churnModel: "off", deepfmModel: "off", propensityModel: "off", modelRegistry: false,
  });
  const rows: string[][] = [];
  const latencyRows: string[][] = [];
  const notes: string[] = [];
  try {
    const t0 = Date.now() - 2 * 86_400_000;
    const rates: [number[], number[]] = [[], []];
    const order: boolean[] = [];
    for (let r = 0; r < ROUNDS; r++) order.push(...(r % 2 === 0 ? [false, true] : [true, false]));
    let mergedDir = "";
    let latencyDone = false;
    for (const [run, merged] of order.entries()) {
      const prefix = `${merged ? "bimerged" : "binone"}${run}`;
      const dataDir = mkdtempSync(join(tmpdir(), "portrait-bench-id-"));
      dirs.push(dataDir);
      const client = new PortraitClient(nc, { partitions: PARTITIONS, subjectPrefix: prefix, requestTimeoutMs: 30_000 });
      // The audience bench's shop mix over one day (purchases carry an order id).
      const events = makeEvents(prefix, EVENTS, USERS, t0, 86_400_000);
      // Every user known before: one event each (so "merged" merges real profiles), then the identifies.
      const e0 = await start(prefix, dataDir);
      const first: IEvent[] = Array.from({ length: USERS }, (_, u) => ({ eventId: `${prefix}-f${u}`, userId: `u${u}`, type: EventType.VIEW, timestampMs: t0, itemId: "i0" }));
      await client.publishMany(first);
      while ((await applied(e0)) < USERS) await new Promise((r) => setTimeout(r, 20));
      let merges = 0;
      if (merged) {
        const ids: IEvent[] = [];
        for (let u = 0; u < USERS; u++) if (isSecondary(u)) ids.push({ eventId: `${prefix}-id${u}`, userId: `u${u}`, type: EventType.IDENTIFY, primaryUserId: `u${u + 1}`, timestampMs: t0 + 1 });
        merges = ids.length;
        await client.publishMany(ids);
        // Each merge is applied twice: the IDENTIFY, then its hand-over.
        while ((await applied(e0)) < USERS + 2 * merges) await new Promise((r) => setTimeout(r, 20));
      }
      await e0.close();
      await client.publishMany(events);
      const forwards = merged ? events.filter((e) => isSecondary(Number(e.userId!.slice(1)))).length : 0;
      const engine = await start(prefix, dataDir);
      const started = performance.now();
      // A forwarded event is applied twice (the forward on the alias's partition, the event on the primary's).
      while ((await applied(engine)) < EVENTS + forwards) await new Promise((r) => setTimeout(r, 5));
      const rate = EVENTS / ((performance.now() - started) / 1000);
      rates[merged ? 1 : 0].push(rate);
      console.log(`- run ${run + 1}, ${merged ? `10% merged (${merges} aliases, ${forwards} events forwarded)` : "no merged user"}: ${rate.toFixed(0)} events/s`);
      if (merged && !latencyDone) {
        notes.push(`Merged runs: ${merges} aliases; ${forwards} of the events (${((forwards / EVENTS) * 100).toFixed(1)}%) were an alias's, forwarded to the primary's partition (applied twice).`);
        await mergeLatency(engine, client, latencyRows);
        latencyDone = true;
        mergedDir = dataDir;
      }
      await engine.close();
    }
    const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
    rows.push(["ingest, no merged user (events/s)", mean(rates[0]).toFixed(0), `runs: ${rates[0].map((r) => r.toFixed(0)).join(", ")}`]);
    rows.push(["ingest, 10% of users merged (events/s)", mean(rates[1]).toFixed(0), `runs: ${rates[1].map((r) => r.toFixed(0)).join(", ")}`]);
    rows.push(["throughput with 10% merged / without", `${(mean(rates[1]) / mean(rates[0])).toFixed(2)}x`, `same run, ${ROUNDS} pair(s) in ABBA order`]);
    rows.push(...latencyRows);
    rows.push(aliasLookup(mergedDir));
  } finally {
    await nc.close();
    await nats.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
  notes.push(`Engine in-process (main thread shared with the publisher), ${PARTITIONS} partitions, ${WORKERS} shard workers, models off; ${EVENTS} synthetic events over ${USERS} users (75% view, 17% cart, 8% purchase).`);
  notes.push(`Load average (1, 5, 15 min) before: ${load0}; after: ${loadavg().map((x) => x.toFixed(2)).join(" ")} on ${cpus().length} cores (above ${cpus().length}, other processes compete for the CPU).`);
  const header = ["measure", "value", "note"];
  printTable("identity", header, rows);
  for (const n of notes) console.log(`- ${n}`);
  if (!a["no-record"]) appendResults("identity", `npm run bench:identity -- --events ${EVENTS} --users ${USERS} --merges ${MERGES}`, header, rows, notes.map((n) => `- ${n}`));
}

/** ns per alias-table read, over user keys of which every tenth is an alias (the merged run's data dir, engine closed). */
function aliasLookup(dataDir: string): string[] {
  const store = new ProfileStore({ dataDir });
  try {
    const keys = Array.from({ length: USERS }, (_, u) => `u${u}`);
    let hits = 0;
    for (const k of keys) if (store.getAlias(k) !== undefined) hits++; // warm
    const n = 1_000_000;
    const t = performance.now();
    for (let i = 0; i < n; i++) if (store.getAlias(keys[i % USERS]!) !== undefined) hits++;
    const ns = ((performance.now() - t) * 1e6) / n;
    return ["alias-table read on ingest (LMDB, per event of a user without an actor in memory), ns", ns.toFixed(0),
      `${n} reads, ${(((hits / (n + USERS)) * 100)).toFixed(0)}% aliases; one read per event at 10k events/s takes ${(ns * 1e-9 * 1e4 * 100).toFixed(2)}% of a core`];
  } finally {
    void store.close();
  }
}

/** From the IDENTIFY's publish to the primary's profile showing the merge, for MERGES fresh pairs (one at a time, otherwise idle). */
async function mergeLatency(engine: Engine, client: PortraitClient, rows: string[][]): Promise<void> {
  const lat: number[] = [];
  const now = Date.now();
  const setup: IEvent[] = [];
  for (let i = 0; i < MERGES; i++) {
    for (const side of ["anon", "login"]) {
      for (let k = 0; k < 3; k++) setup.push({ eventId: `m${i}-${side}-${k}`, userId: `${side}${i}`, type: EventType.VIEW, timestampMs: now + k, itemId: `i${k}` });
    }
  }
  await client.publishMany(setup);
  for (let i = 0; i < MERGES; i++) while ((await client.getProfile(`login${i}`).catch(() => undefined))?.eventsApplied !== 3) await new Promise((r) => setTimeout(r, 5));
  let lost = 0;
  for (let i = 0; i < MERGES; i++) {
    const sentAt = performance.now();
    await client.publish({ eventId: `m${i}-id`, userId: `anon${i}`, type: EventType.IDENTIFY, primaryUserId: `login${i}`, timestampMs: now + 10 });
    const deadline = sentAt + 5000;
    let seen = false;
    while (performance.now() < deadline) {
      if ((await client.getProfile(`login${i}`)).aliases === 1) {
        seen = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    if (seen) lat.push(performance.now() - sentAt);
    else lost++;
  }
  rows.push(["merge visible: IDENTIFY publish to merged primary profile, p50 / p99 / max (ms)",
    `${pct(lat, 50).toFixed(1)} / ${pct(lat, 99).toFixed(1)} / ${Math.max(...lat).toFixed(1)}`,
    `${lat.length}/${MERGES} merges seen within 5 s${lost > 0 ? `, ${lost} not` : ""}; the hand-over crosses partitions and shards; polled every 1 ms; engine otherwise idle`]);
  void engine;
}

await main();
