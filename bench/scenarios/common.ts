/** Phases shared by the scenarios: loading state, measuring live capacity, freshness probes, query passes. */
import { headers } from "nats";
import { partitionOf } from "../../src/wire/partition.js";
import { EventType, pb } from "../../src/wire/proto.js";
import { sleep } from "../harness/ipc.js";
import { newHist, openLoop, pctMs, type Histogram, type PassResult } from "../harness/open-loop.js";
import { histDelta, type PromHist } from "../harness/prom.js";
import { cpuPerEvent, type CpuDelta } from "../harness/proc-stats.js";
import { seededRandom } from "../../src/models/seeded-random.js";
import type { EngineStart, ResourceSample, Rig } from "../harness/rig.js";
import type { EngineSnapshot, EventSource } from "../harness/roles.js";
import { rawPublish } from "../harness/baselines.js";
import { f2, num, type Flag, type ScenarioContext } from "./scenario.js";
import { resolveDataFile } from "../../src/data/datasets.js";
import { DATASET_FORMATS, type DatasetFormat } from "../../src/data/types.js";

/** Flags of the event source, shared by the scenarios that load events. */
export const sourceFlags: Record<string, Flag> = {
  source: { default: "generator", help: `"generator" (bench/generator.ts), or a data set replayed in rounds (new ids, later timestamps): ${DATASET_FORMATS.join(", ")}` },
  users: { default: "200000", smoke: "2000", help: "distinct users of the calibrated generator" },
  seed: { default: "7", help: "generator seed" },
  publishers: { default: "2", smoke: "1", help: "publisher processes" },
};

/** The source in words, for the notes. */
export function describeSource(ctx: ScenarioContext): string {
  const source = ctx.flags.source ?? "generator";
  return source === "generator" ? `the calibrated generator (bench/generator.ts), ${ctx.flags.users} users, seed ${ctx.flags.seed}` : `the ${source} data set, replayed in rounds`;
}

/** The source the flags name: the calibrated generator, or a public data set from --datasets. */
export function generatorSource(ctx: ScenarioContext): EventSource {
  const source = ctx.flags.source ?? "generator";
  if (source === "generator") return { kind: "generator", users: num(ctx, "users", 1, 1_000_000_000), seed: num(ctx, "seed", 0, 2 ** 31) };
  if (!(DATASET_FORMATS as readonly string[]).includes(source)) throw new Error(`bench: --source must be generator or one of ${DATASET_FORMATS.join(", ")}, got ${JSON.stringify(source)}`);
  return { kind: "dataset", format: source as DatasetFormat, file: resolveDataFile(ctx.datasets, source as DatasetFormat) };
}

export interface Loaded {
  events: number;
  users: number;
  /** JetStream publish rate of the preload (stored/s, no engine running). */
  publishPerSec: number;
  engine: EngineStart;
  /** Events/s the engine applied from a full stream after start (the cold apply rate). */
  applyPerSec: number;
  /** Engine resources and lag, each second while it applied the preload. */
  samples: ResourceSample[];
  /**
   * CPU µs per applied event over the apply (less sensitive to the machine's
   * load than the rate): the engine process, nats-server, and the engine's
   * threads using the most (by thread id; "main" is the process's first).
   */
  cpuPerEvent: { engine: number; natsServer: number; threads: Array<[string, number]> };
}


/**
 * Publishes the prepared events into the stream with no engine running (the
 * raw publish rate), runs `beforeEngine` (baselines that read the same
 * stream), then starts the engine and waits until it has applied them all.
 */
export async function loadState(rig: Rig, prep: { events: number; users: number }, timeoutMs: number, hooks: { beforeEngine?: () => Promise<void> } = {}): Promise<Loaded> {
  const pub = await rawPublish(rig, prep.events, timeoutMs);
  rig.log(`preloaded ${pub.events} events at ${pub.perSec.toFixed(0)}/s`);
  await hooks.beforeEngine?.();
  const engine = await rig.startEngine();
  const sampler = rig.sampleResources(1000);
  const t0 = performance.now();
  const cpu0 = rig.cpuSample();
  const done = await rig.waitProcessed(pub.events, timeoutMs);
  const cpu = cpuPerEvent(cpu0, rig.cpuSample(), rig.engine!.pid, pub.events - engine.processedAtReady);
  const samples = await sampler.stop();
  if (!done.reached) throw new Error(`the engine applied ${done.processed} of ${pub.events} events in ${timeoutMs} ms`);
  const applyPerSec = (pub.events - engine.processedAtReady) / ((performance.now() - t0) / 1000);
  rig.log(`engine ready in ${engine.startMs.toFixed(0)} ms (models ${engine.models.join(", ")}), applied ${pub.events} at ${applyPerSec.toFixed(0)}/s`);
  return {
    events: pub.events, users: prep.users, publishPerSec: pub.perSec, engine, applyPerSec, samples,
    cpuPerEvent: { engine: cpu.procs.engine ?? NaN, natsServer: cpu.procs["nats-server"] ?? NaN, threads: cpu.threads },
  };
}

/**
 * Live capacity: the publishers send a burst at full speed for `seconds`
 * while the engine applies; the burst's size over the time from its first
 * publish to its last event applied (publish and apply overlapping, as in
 * production). `expected` is the count applied before; returns the new one.
 */
export async function liveCapacity(rig: Rig, seconds: number, expected: number): Promise<{ perSec: number; published: number; expected: number }> {
  const t0 = performance.now();
  const before = await rig.streamMessages();
  await rig.startPublishing(0, Number.MAX_SAFE_INTEGER, seconds);
  const sent = await rig.haltPublishing(true);
  // What the server stored (a loaded one drops some unacknowledged publishes).
  const stored = (await rig.waitStored(before + sent.sent, 300_000)) - before;
  const total = expected + stored;
  const drained = await rig.waitProcessed(total, 300_000);
  if (!drained.reached) throw new Error(`capacity run: the engine applied ${drained.processed} of ${total}`);
  if (sent.sent === 0) throw new Error("capacity run: the publishers had no prepared events left");
  const perSec = stored / ((performance.now() - t0) / 1000);
  rig.log(`live capacity ${perSec.toFixed(0)} events/s (published ${sent.sent} in ${sent.seconds.toFixed(1)} s, ${stored} stored, all applied)`);
  return { perSec, published: stored, expected: total };
}

export interface ProbeResult {
  /** Publish -> change visible in the profile, µs. */
  freshness: Histogram;
  /** Profile polls per probe, mean. */
  pollsPerProbe: number;
  probes: number;
  failed: number;
}

/**
 * Freshness probes: `concurrency` probe users, each in a loop: note the time,
 * publish one event for the user, then ask for its profile back to back until
 * events_applied shows it; the time from publish to the reply that shows it.
 * The resolution is one profile round trip (the raw request-reply latency is
 * measured beside it). A pause of `gapMs` between a user's probes keeps the
 * probes' own query load small.
 */
export async function freshnessProbes(rig: Rig, seconds: number, o: { concurrency?: number; gapMs?: number; runId: string; timeoutMs?: number }): Promise<ProbeResult> {
  const freshness = newHist();
  const concurrency = o.concurrency ?? 8;
  const gapMs = o.gapMs ?? 40;
  const timeoutMs = o.timeoutMs ?? 10_000;
  const end = performance.now() + seconds * 1000;
  let probes = 0;
  let polls = 0;
  let failed = 0;
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    const userId = `probe-${o.runId}-${w}`;
    const subject = rig.s.events(partitionOf(userId, rig.partitions));
    let applied = 0;
    for (let n = 0; performance.now() < end; n++) {
      const eventId = `${userId}-${n}`;
      const h = headers();
      h.set("Nats-Msg-Id", eventId);
      const data = pb.Event.encode({ eventId, userId, type: EventType.VIEW, timestampMs: Date.now(), itemId: `probe-item-${n % 50}`, categoryId: "probe" }).finish();
      const t0 = performance.now();
      rig.nc.publish(subject, data, { headers: h });
      applied++;
      let seen = false;
      while (performance.now() - t0 < timeoutMs) {
        polls++;
        const p = await rig.client.getProfile(userId).catch(() => undefined);
        if (p !== undefined && p.eventsApplied >= applied) {
          seen = true;
          break;
        }
      }
      if (seen) {
        freshness.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)));
        probes++;
      } else failed++;
      await sleep(gapMs);
    }
  }));
  return { freshness, pollsPerProbe: polls / Math.max(1, probes + failed), probes, failed };
}

/**
 * Co-visitation and session freshness: each probe plants a pair on two new
 * items, user A views i then j, and user B views i; then it asks
 * `recommend(B, k)` back to back until j is among the items (co-visitation
 * i -> j, sequential rules i -> j, and session-kNN through A's session all
 * lead there). Latency from publishing the last of the three events to the
 * first reply that holds j.
 */
export async function covisitProbes(rig: Rig, seconds: number, o: { concurrency?: number; gapMs?: number; runId: string; timeoutMs?: number; k?: number }): Promise<ProbeResult & { polls: number; replies: number; errors: Record<string, number> }> {
  const freshness = newHist();
  const concurrency = o.concurrency ?? 2;
  const gapMs = o.gapMs ?? 100;
  const timeoutMs = o.timeoutMs ?? 10_000;
  const k = o.k ?? 50;
  const end = performance.now() + seconds * 1000;
  let probes = 0;
  let polls = 0;
  let failed = 0;
  let replies = 0;
  const errors = new Map<string, number>();
  const send = (eventId: string, userId: string, itemId: string, timestampMs: number) => {
    const h = headers();
    h.set("Nats-Msg-Id", eventId);
    rig.nc.publish(rig.s.events(partitionOf(userId, rig.partitions)), pb.Event.encode({ eventId, userId, type: EventType.VIEW, timestampMs, itemId, categoryId: "covisit-probe" }).finish(), { headers: h });
  };
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    for (let n = 0; performance.now() < end; n++) {
      const tag = `cvp-${o.runId}-${w}-${n}`;
      const [a, b, i, j] = [`${tag}-a`, `${tag}-b`, `${tag}-i`, `${tag}-j`];
      const now = Date.now();
      send(`${a}-1`, a, i, now);
      send(`${a}-2`, a, j, now + 1);
      send(`${b}-1`, b, i, now + 2);
      const t0 = performance.now();
      let seen = false;
      while (performance.now() - t0 < timeoutMs) {
        polls++;
        const r = await rig.client.recommend(b, { k }).catch((err: unknown) => {
          const code = (err as { code?: string }).code ?? (err as Error).name;
          errors.set(code, (errors.get(code) ?? 0) + 1);
          return undefined;
        });
        if (r !== undefined) replies++;
        if (r !== undefined && r.items.some((it) => it.itemId === j)) {
          seen = true;
          break;
        }
      }
      if (seen) {
        freshness.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)));
        probes++;
      } else failed++;
      await sleep(gapMs);
    }
  }));
  return { freshness, pollsPerProbe: polls / Math.max(1, probes + failed), probes, failed, polls, replies, errors: Object.fromEntries(errors) };
}

/** Latency percentiles of a histogram as table cells (ms). */
export const pcts = (h: Histogram, ps: number[] = [50, 99, 99.9]) => ps.map((p) => f2(pctMs(h, p)));

export interface QueryPass {
  pass: PassResult;
  /** Engine-side request time (receive to reply) over the pass. */
  server: PromHist;
  cpu: CpuDelta;
  /** Events applied per second during the pass. */
  appliedPerSec: number;
  before: EngineSnapshot;
  after: EngineSnapshot;
}

/** One open-loop pass of `send` at `rate` for `seconds`, with the engine's own view of it. */
export async function queryPass(rig: Rig, endpoint: "profile" | "recommend", rate: number, seconds: number, send: () => Promise<unknown>, timeoutMs = 2000): Promise<QueryPass> {
  const before = await rig.snapshot();
  const c0 = rig.cpuSample();
  const pass = await openLoop(rate, seconds, 1000, timeoutMs, send);
  const c1 = rig.cpuSample();
  const after = await rig.snapshot();
  return {
    pass, before, after, cpu: rig.cpuDelta(c0, c1),
    server: histDelta(before.api[endpoint]!, after.api[endpoint]!),
    appliedPerSec: (after.processed - before.processed) / ((c1.t - c0.t) / 1000),
  };
}

/** A seeded chooser of query users: known users uniformly, `unknownShare` of ids the engine never saw. */
export function userChooser(users: string[], unknownShare: number, seed: number): () => string {
  const rnd = seededRandom(seed);
  let nobody = 0;
  return () => (users.length === 0 || rnd() < unknownShare ? `bench-nobody-${nobody++ % 1000}` : users[Math.floor(rnd() * users.length)]!);
}

/** Up to `max` user ids the publishers have prepared events for. */
export async function knownUsers(rig: Rig, max: number): Promise<string[]> {
  const per = await Promise.all(rig.publishers.map((p) => p.call<string[]>("users", { max: Math.ceil(max / rig.publishers.length) }, 300_000)));
  return per.flat();
}
