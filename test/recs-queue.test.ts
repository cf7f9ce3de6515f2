/**
 * The bounded item-event queue of the recs worker (recs option
 * maxQueuedItemEvents): one count shared by every shard and the worker; a
 * shard whose batch does not fit waits for room (maxItemEventWaitMs; its
 * batch result waits with it) and drops that batch's item events only when
 * the wait runs out (with 0: at once, drop-newest), counting them, while the
 * batch's profiles are committed as always. The recs worker is blocked by a
 * test-only hook, so what is queued does not depend on the machine's speed.
 */
import { afterEach, describe, expect, it } from "vitest";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { partitionOf } from "../src/wire/partition.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { RecsHost } from "../src/recs/recs-host.js";
import { compileRecsOptions } from "../src/recs/recs-options.js";
import { ENGINE_DEFAULTS } from "../src/config/engine-options.js";
import { ShardPool } from "../src/shard/shard-pool.js";
import { packBatch, type EventBatch } from "../src/bus/event-batch.js";
import type { ShardStats } from "../src/obs/metrics.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";
import { T0, countByUser, expectExactCounts, removeDir, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { tmpDir, waitFor } from "./helpers/nats.js";

const P = 4;
const W = 2;
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function batch(partition: number, events: IEvent[], firstSeq: number): EventBatch {
  return packBatch(partition, events.map((e) => pb.Event.encode(e).finish()), (b) => b, (_, i) => firstSeq + i);
}

/** A user id whose partition belongs to shard `shard`. */
function userOnShard(prefix: string, shard: number): string {
  for (let i = 0; ; i++) if (partitionOf(`${prefix}${i}`, P) % W === shard) return `${prefix}${i}`;
}

function views(user: string, n: number, from = 0): IEvent[] {
  return Array.from({ length: n }, (_, i) => ({
    eventId: `${user}-e${from + i}`, userId: user, type: EventType.VIEW, timestampMs: T0 + (from + i) * 1000, itemId: `i${(from + i) % 7}`, categoryId: "c1",
  }));
}

const byShard = (stats: ShardStats[]) => Object.fromEntries(stats.map((s) => [s.shard, [s.itemEventsPosted, s.itemEventsDropped]]));

async function startPool(maxItemEventWaitMs: number) {
  const dataDir = tmpDir("portrait-recs-queue");
  cleanups.push(() => removeDir(dataDir));
  const { host, itemEvents } = await RecsHost.start({ recs: compileRecsOptions({ maxQueuedItemEvents: 10, maxItemEventWaitMs }), logLevel: "silent" }, W, () => undefined);
  cleanups.push(() => host.close());
  const pool = await ShardPool.start(W, P, {
    dataDir, mapSizeBytes: 2 ** 26, profile: PROFILE_DEFAULTS, maxActors: 1000, logLevel: "silent", models: { shopSource: "stream:TEST_EVENTS" },
    validation: { partitions: P, maxEventBytes: 65536, maxFutureSkewMs: 86_400_000 },
  }, () => undefined, itemEvents, { maxShardQueueEvents: ENGINE_DEFAULTS.maxShardQueueEvents });
  cleanups.push(() => pool.close());
  const seq = new Map<number, number>();
  const apply = (user: string, events: IEvent[]) => {
    const p = partitionOf(user, P);
    const first = (seq.get(p) ?? 0) + 1;
    seq.set(p, first + events.length - 1);
    return pool.applyBatch(batch(p, events, first));
  };
  return { host, itemEvents, pool, apply };
}

describe("recs queue - shards and the recs worker on LMDB", () => {
  it("recs queue - back-pressure: a batch that does not fit waits for room (its result with it), in order with the shard's later batches and forgets, and nothing is dropped", { timeout: 60_000 }, async () => {
    const { host, pool, apply } = await startPool(20_000);
    const alice = userOnShard("alice", 0);
    const bob = userOnShard("bob", 1);
    const stalled = host.faultStall(2000);
    await new Promise((r) => setTimeout(r, 300));
    expect((await apply(alice, views(alice, 8))).applied).toBe(8); // fits
    let settled = 0;
    const late = [apply(alice, views(alice, 5, 8)), apply(bob, views(bob, 5))].map((p) => p.then((r) => { settled++; return r; }));
    const forgot = pool.forget(partitionOf(alice, P), alice);
    await new Promise((r) => setTimeout(r, 500));
    // The recs worker is still stalled: both batches wait (their profiles are committed already), nothing is dropped.
    expect(settled).toBe(0);
    expect(host.itemEventsQueued()).toBe(8);
    const r = await pool.getProfile(partitionOf(bob, P), bob, 0, "protobuf");
    if (!r.ok) throw new Error(r.error.code);
    expect(pb.ProfileReply.decode(r.body).profile!.eventsApplied).toBe(5);
    await stalled;
    for (const res of await Promise.all(late)) expect(res.applied).toBe(5);
    expect(await forgot).toEqual({ ok: true, existed: true, outbound: [], key: alice });
    await waitFor(async () => host.itemEventsQueued() === 0 && (await host.stats()).itemEvents === 18, { timeoutMs: 10_000, message: "recs did not observe" });
    const stats = await pool.stats();
    expect(byShard(stats)).toEqual({ 0: [13, 0], 1: [5, 0] });
    expect(stats.map((s) => s.itemEventsWaited).reduce((a, b) => a + b)).toBeGreaterThanOrEqual(5);
    // The forget reached the worker after alice's batches: none of her sessions is left.
    expect((await host.stats()).sessions).toBe(1);
  });

  it("recs queue - back-pressure: a batch that waited maxItemEventWaitMs (a stuck worker) is dropped and counted; ingest goes on", { timeout: 60_000 }, async () => {
    const { host, pool, apply } = await startPool(400);
    const alice = userOnShard("alice", 0);
    const stalled = host.faultStall(3000);
    await new Promise((r) => setTimeout(r, 300));
    expect((await apply(alice, views(alice, 8))).applied).toBe(8);
    const t0 = Date.now();
    expect((await apply(alice, views(alice, 5, 8))).applied).toBe(5);
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(350);
    expect(waited).toBeLessThan(2500);
    expect(byShard(await pool.stats())[0]).toEqual([8, 5]);
    await stalled;
    await waitFor(async () => host.itemEventsQueued() === 0, { timeoutMs: 10_000, message: "queue did not drain" });
  });

  it("recs queue - a batch that does not fit the shared bound is dropped and counted (maxItemEventWaitMs 0), one that fits is posted; the count returns to 0; profiles are exact", { timeout: 60_000 }, async () => {
    const dataDir = tmpDir("portrait-recs-queue");
    cleanups.push(() => removeDir(dataDir));
    const { host, itemEvents } = await RecsHost.start({ recs: compileRecsOptions({ maxQueuedItemEvents: 10, maxItemEventWaitMs: 0 }), logLevel: "silent" }, W, () => undefined);
    cleanups.push(() => host.close());
    expect(itemEvents.maxQueued).toBe(10);
    const pool = await ShardPool.start(W, P, {
      dataDir, mapSizeBytes: 2 ** 26, profile: PROFILE_DEFAULTS, maxActors: 1000, logLevel: "silent", models: { shopSource: "stream:TEST_EVENTS" },
      validation: { partitions: P, maxEventBytes: 65536, maxFutureSkewMs: 86_400_000 },
    }, () => undefined, itemEvents, { maxShardQueueEvents: ENGINE_DEFAULTS.maxShardQueueEvents });
    cleanups.push(() => pool.close());
    const alice = userOnShard("alice", 0);
    const bob = userOnShard("bob", 1);
    const seq = new Map<number, number>();
    const apply = async (user: string, events: IEvent[]) => {
      const p = partitionOf(user, P);
      const first = (seq.get(p) ?? 0) + 1;
      seq.set(p, first + events.length - 1);
      const r = await pool.applyBatch(batch(p, events, first));
      expect(r.applied).toBe(events.length);
    };

    // The worker is idle: a batch that fits is posted and observed.
    await apply(alice, views(alice, 3));
    await waitFor(async () => (await host.stats()).itemEvents === 3 && host.itemEventsQueued() === 0, { timeoutMs: 10_000, message: "recs did not observe" });

    // The worker is busy for 3 s: what the shards post stays queued, and the bound is shared by both shards.
    const stalled = host.faultStall(3000);
    await new Promise((r) => setTimeout(r, 300));
    await apply(alice, views(alice, 6, 3)); // 0 + 6 <= 10: posted
    expect(host.itemEventsQueued()).toBe(6);
    await apply(bob, views(bob, 6)); // 6 + 6 > 10: dropped (by the other shard's queued events)
    expect(host.itemEventsQueued()).toBe(6);
    await apply(bob, views(bob, 4, 6)); // 6 + 4 <= 10: posted
    expect(host.itemEventsQueued()).toBe(10);
    await apply(alice, views(alice, 1, 9)); // full: dropped
    await apply(bob, views(bob, 20, 10)); // more than the bound: dropped
    // A forget is always posted and not counted.
    const forgot = await pool.forget(partitionOf("carol", P), "carol");
    expect(forgot).toEqual({ ok: true, existed: false, outbound: [], key: "carol" });
    expect(host.itemEventsQueued()).toBe(10);
    expect(byShard(await pool.stats())).toEqual({ 0: [9, 1], 1: [4, 26] });

    // The worker catches up: the count returns to 0 and it observed exactly what was posted.
    await stalled;
    await waitFor(async () => host.itemEventsQueued() === 0, { timeoutMs: 10_000, message: "queue did not drain" });
    expect((await host.stats()).itemEvents).toBe(3 + 6 + 4);

    // Profiles have every event, dropped item events or not.
    for (const [user, n] of [[alice, 10], [bob, 30]] as const) {
      const r = await pool.getProfile(partitionOf(user, P), user, 0, "protobuf");
      if (!r.ok) throw new Error(r.error.code);
      expect(pb.ProfileReply.decode(r.body).profile!.eventsApplied, user).toBe(n);
    }

    // Below the bound again: posted.
    await apply(bob, views(bob, 5, 30));
    await waitFor(async () => (await host.stats()).itemEvents === 18 && host.itemEventsQueued() === 0, { timeoutMs: 10_000, message: "recs did not observe" });
    expect(byShard(await pool.stats())).toEqual({ 0: [9, 1], 1: [9, 26] });
  });
});

describe("recs queue - engine", () => {
  const fx = useEngineFixture();

  const sample = (text: string, name: string) => {
    const m = new RegExp(`^${name} ([0-9.e+-]+)$`, "m").exec(text);
    return m === null ? undefined : Number(m[1]);
  };

  it("recs queue - metrics: the queued gauge is the shared count (at most maxQueuedItemEvents) and returns to 0, drops are counted; profiles are exact; recommendations answered", { timeout: 120_000 }, async () => {
    const prefix = uniquePrefix("recsq");
    const e = await fx.startEngine({
      subjectPrefix: prefix, recs: { maxQueuedItemEvents: 10, maxItemEventWaitMs: 0 }, lstmModel: "off", deepfmModel: "off", churnModel: "off",
    });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: e.config.partitions, requestTimeoutMs: 5000 });
    const first = views(`${prefix}-u0`, 5);
    await client.publishMany(first);
    await waitFor(async () => (await e.metrics.total(e.metrics.eventsApplied)) >= 5, { timeoutMs: 60_000, message: "events not applied" });
    await waitFor(async () => sample(await e.metrics.registry.metrics(), "portrait_recs_item_events_queued") === 0, { timeoutMs: 10_000, message: "recs queue" });
    expect(sample(await e.metrics.registry.metrics(), "portrait_recs_item_events_dropped_total")).toBe(0);

    // The recs worker is busy: at most 10 of the next 40 item events can be queued, the rest are dropped.
    const stalled = e.faultStallRecs(4000);
    await new Promise((r) => setTimeout(r, 300));
    const more = Array.from({ length: 4 }, (_, u) => views(`${prefix}-u${u + 1}`, 10)).flat();
    await client.publishMany(more);
    await waitFor(async () => (await e.metrics.total(e.metrics.eventsApplied)) >= 45, { timeoutMs: 60_000, message: "events not applied" });
    const during = await e.metrics.registry.metrics();
    const queued = sample(during, "portrait_recs_item_events_queued")!;
    const dropped = sample(during, "portrait_recs_item_events_dropped_total")!;
    expect(queued).toBeLessThanOrEqual(10);
    expect(dropped).toBeGreaterThanOrEqual(30);
    expect(queued + dropped).toBe(40);
    await stalled;

    await waitFor(async () => sample(await e.metrics.registry.metrics(), "portrait_recs_item_events_queued") === 0, { timeoutMs: 10_000, message: "recs queue did not drain" });
    expect(sample(await e.metrics.registry.metrics(), "portrait_recs_item_events_dropped_total")).toBe(dropped);
    await expectExactCounts(client, countByUser([...first, ...more]), 30_000);
    expect((await client.recommend(`${prefix}-u1`)).knownUser).toBe(true);
  });
});
