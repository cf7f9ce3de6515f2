/**
 * Typed shedding of queries and per-thread memory metrics. A query that the
 * engine cannot answer within maxQueryWaitMs of its arrival (its shard is
 * busy) gets OVERLOADED instead of timing out in the client; once the shard
 * is free, queries are answered again. The shard is made busy by a
 * test-only hook that blocks its thread, so the outcome does not depend on
 * the machine's speed.
 */
import { describe, expect, it } from "vitest";
import { partitionOf } from "../src/wire/partition.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { PortraitError } from "../src/errors.js";
import { EventType } from "../src/wire/proto.js";
import { T0, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { waitFor } from "./helpers/nats.js";

const fx = useEngineFixture();

/** Value of one sample of the Prometheus text, or undefined. */
function sample(text: string, name: string, labels: string): number | undefined {
  const m = new RegExp(`^${name}\\{${labels}\\} ([0-9.e+-]+)$`, "m").exec(text);
  return m === null ? undefined : Number(m[1]);
}

describe("query shedding", () => {
  it("shedding - a query its busy shard cannot start within maxQueryWaitMs gets OVERLOADED (not TIMEOUT), and answers once it is free; per-thread heaps and the worker heap bounds are exported", { timeout: 120_000 }, async () => {
    const prefix = uniquePrefix("shed");
    const maxQueryWaitMs = 300;
    // Worker heap bounds below V8's default (GiBs here), and a semi-space of 8 MiB, so that the exported limits show they were applied.
    const MiB = 2 ** 20;
    const e = await fx.startEngine({ subjectPrefix: prefix, maxQueryWaitMs, lstmModel: "off", deepfmModel: "off", churnModel: "off", maxShardHeapBytes: 700 * MiB, recs: { maxHeapBytes: 800 * MiB },
      workerSemiSpaceBytes: 8 * MiB });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: e.config.partitions, requestTimeoutMs: 5000 });
    const user = `${prefix}-u0`;
    const shard = partitionOf(user, e.config.partitions) % e.config.workers;
    await client.publishMany(Array.from({ length: 5 }, (_, i) => ({
      eventId: `${prefix}-e${i}`, userId: user, type: EventType.VIEW, timestampMs: T0 + i * 1000, itemId: `i${i}`, categoryId: "c1",
    })));
    await waitFor(async () => (await e.metrics.total(e.metrics.eventsApplied)) >= 5, { timeoutMs: 60_000, message: "events not applied" });
    expect((await client.getProfile(user)).eventsApplied).toBe(5);

    // The shard is blocked for 4 s (longer than maxQueryWaitMs, shorter than the client's timeout).
    const stalled = e.faultStallShard(shard, 4000);
    const t0 = Date.now();
    const [profile, recommend] = await Promise.allSettled([client.getProfile(user), client.recommend(user)]);
    const answeredInMs = Date.now() - t0;
    for (const r of [profile, recommend]) {
      expect(r.status).toBe("rejected");
      const err = (r as PromiseRejectedResult).reason as PortraitError;
      expect(err).toBeInstanceOf(PortraitError);
      expect(err.code).toBe("OVERLOADED");
      expect(err.message).toMatch(/no answer within \d+ ms of the query's arrival \(maxQueryWaitMs 300\)/);
    }
    // Answered by the wait bound, not by the end of the stall.
    expect(answeredInMs).toBeLessThan(4000);
    await stalled;

    // The shard is free: answered again.
    expect((await client.getProfile(user)).eventsApplied).toBe(5);
    expect((await client.recommend(user)).knownUser).toBe(true);
    const overloaded = (await e.metrics.requests.get()).values.filter((v) => v.labels.code === "OVERLOADED");
    expect(Object.fromEntries(overloaded.map((v) => [v.labels.endpoint, v.value]))).toEqual({ "profile.get": 1, recommend: 1 });

    // Per-thread heaps (main, every shard, recs) with sane values, the actor caches and the recs worker's input queue.
    const text = await e.metrics.registry.metrics();
    for (const thread of ["main", "shard-0", "shard-1", "recs"]) {
      const used = sample(text, "portrait_thread_heap_bytes", `thread="${thread}",kind="used"`);
      const total = sample(text, "portrait_thread_heap_bytes", `thread="${thread}",kind="total"`);
      expect(used, thread).toBeGreaterThan(1e6);
      expect(total, thread).toBeGreaterThanOrEqual(used!);
      expect(total, thread).toBeLessThan(2 ** 32);
      expect(sample(text, "portrait_thread_heap_bytes", `thread="${thread}",kind="external"`), thread).toBeGreaterThan(0);
      // The limit is the old generation's bound plus the young generation's: 3 x the semi-space.
      const limit = sample(text, "portrait_thread_heap_bytes", `thread="${thread}",kind="limit"`);
      const bound = thread === "main" ? undefined : thread === "recs" ? 800 * MiB : 700 * MiB;
      if (bound === undefined) expect(limit, thread).toBeGreaterThan(1024 * MiB);
      else expect(limit, thread).toBe(bound + 3 * 8 * MiB);
    }
    expect(sample(text, "portrait_shard_actors_cached", `shard="${shard}"`)).toBe(1);
    await waitFor(async () => /^portrait_recs_item_events_queued 0$/m.test(await e.metrics.registry.metrics()), { timeoutMs: 10_000, message: "recs queue" });
    // The recs worker's state estimate (maxStateBytes), by table: the 5 items are in the catalog and the user's session.
    await waitFor(async () => {
      const t = await e.metrics.registry.metrics();
      return (sample(t, "portrait_recs_state_bytes", `table="catalog"`) ?? 0) > 5 * 100 && (sample(t, "portrait_recs_state_bytes", `table="sessions"`) ?? 0) > 0;
    }, { timeoutMs: 10_000, message: "recs state bytes" });
  });
});
