/**
 * Crash and signal behaviour, tested by killing real engine processes
 * (`portrait start` in a child process) and checking every count afterwards.
 */
import { describe, expect, it } from "vitest";
import { PortraitClient } from "../src/client/portrait-client.js";
import { countByUser, expectExactCounts, interleavedViews, spawnEngine, uniquePrefix, waitForEngine, type ChildEngine } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { waitFor } from "./helpers/nats.js";

const fx = useEngineFixture();
const children: ChildEngine[] = [];
fx.onCleanup(async () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
  await Promise.all(children.map((c) => c.exited));
});

function engineArgs(prefix: string, dataDir: string, extra: string[] = []): string[] {
  return [
    "--nats", fx.nats.url, "--embedded-nats", "never", "--data-dir", dataDir, "--prefix", prefix,
    "--partitions", "4", "--workers", "2", "--http-port", "-1", "--log-level", "warn", ...extra,
  ];
}

function start(prefix: string, dataDir: string, extra: string[] = []): ChildEngine {
  const c = spawnEngine(engineArgs(prefix, dataDir, extra));
  children.push(c);
  return c;
}

/** A scenario's own prefix, data dir (removed after the file) and client. */
async function scenario(name: string): Promise<{ prefix: string; dataDir: string; c: PortraitClient }> {
  const prefix = uniquePrefix(name);
  const dataDir = fx.tmpDir(`portrait-${name}`);
  const c = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: 4 });
  return { prefix, dataDir, c };
}

// Child engines under a loaded 2-core CI machine: generous liveness bounds (they never judge speed).
describe("crash - exactly-once effect", { timeout: 240_000 }, () => {
  it("crash - SIGKILL after a commit but before its ack: after a restart each event is applied exactly once", async () => {
    const { prefix, dataDir, c } = await scenario("kill");
    try {
      const first = start(prefix, dataDir, ["--max-batch", "20", "--fault-kill-before-ack", "5"]);
      await waitForEngine(c, first);
      const events = interleavedViews(prefix, 30, 40);
      await c.publishMany(events);
      const exit = await first.exited;
      expect(exit.signal, first.output()).toBe("SIGKILL");

      const second = start(prefix, dataDir);
      await waitForEngine(c, second);
      await expectExactCounts(c, countByUser(events));
      for (let u = 0; u < 30; u += 7) {
        const p = await c.getProfile(`${prefix}-u${u}`);
        expect(p.counts.view).toBe(40);
        expect(p.recentItems[0]).toBe("i39");
      }
      second.proc.kill("SIGTERM");
      expect((await second.exited).code).toBe(0);
    } finally {
      await c.close();
    }
  });

  it("crash - SIGKILL mid-stream at an arbitrary moment, three times: no event lost or applied twice", async () => {
    const { prefix, dataDir, c } = await scenario("chaos");
    try {
      const events = interleavedViews(prefix, 200, 50);
      let engine = start(prefix, dataDir, ["--max-batch", "64"]);
      await waitForEngine(c, engine);
      const jsm = await c.nc.jetstreamManager();
      const consumers = () => Promise.all([0, 1, 2, 3].map((p) => jsm.consumers.info(c.subjects.eventStream, c.subjects.consumer(p))));
      let published = false;
      const publishing = c.publishMany(events).then(() => {
        published = true;
      });
      for (let k = 0; k < 3; k++) {
        // Kill once this engine has applied something since it started: each start re-creates the partition
        // consumers, so an acknowledged consumer sequence is this engine's own progress.
        await waitFor(async () => (await consumers()).some((ci) => ci.ack_floor.consumer_seq > 0), { timeoutMs: 90_000, message: `engine ${k + 1} applied nothing` });
        // ...while events are still flowing: unpublished, or published and not yet acknowledged.
        const left = (await consumers()).reduce((n, ci) => n + ci.num_pending + ci.num_ack_pending, 0);
        expect(!published || left > 0, `kill ${k + 1}: every event was published and ${left} were left to apply`).toBe(true);
        engine.proc.kill("SIGKILL");
        expect((await engine.exited).signal).toBe("SIGKILL");
        engine = start(prefix, dataDir, ["--max-batch", "64"]);
        await waitForEngine(c, engine);
      }
      await publishing;
      await expectExactCounts(c, countByUser(events));
      engine.proc.kill("SIGTERM");
      expect((await engine.exited).code).toBe(0);
    } finally {
      await c.close();
    }
  });
});

describe("crash - redelivery", { timeout: 240_000 }, () => {
  it("redelivery - a batch held past ackWait is delivered again and skipped; once nothing can come again the counts are still exact", async () => {
    const prefix = uniquePrefix("redeliver");
    const e = await fx.startEngine({ subjectPrefix: prefix, ackWaitMs: 1000, lstmModel: "off", deepfmModel: "off", churnModel: "off" });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: e.config.partitions });
    const events = interleavedViews(prefix, 20, 10);
    const expected = countByUser(events);
    // Both shards are held for 3 s, three times ackWait: JetStream delivers the unacknowledged batches again meanwhile.
    const stalls = Array.from({ length: e.config.workers }, (_, shard) => e.faultStallShard(shard, 3000));
    await client.publishMany(events);
    await Promise.all(stalls);
    await expectExactCounts(client, expected);

    // The copies delivered again were skipped (at or below the partition's applied sequence). Once no message is
    // pending or unacknowledged, nothing can be delivered again: check every count a second time.
    const jsm = await fx.nc.jetstreamManager();
    let deliveries = 0;
    await waitFor(async () => {
      const consumers = await Promise.all(Array.from({ length: e.config.partitions }, (_, p) => jsm.consumers.info(e.subjects.eventStream, e.subjects.consumer(p))));
      deliveries = consumers.reduce((n, ci) => n + ci.delivered.consumer_seq, 0);
      return consumers.every((ci) => ci.num_pending === 0 && ci.num_ack_pending === 0);
    }, { timeoutMs: 60_000, message: "messages still outstanding" });
    expect(deliveries).toBeGreaterThan(events.length);
    expect(await e.metrics.total(e.metrics.eventsSkipped)).toBeGreaterThan(0);
    expect(await e.metrics.total(e.metrics.eventsApplied)).toBe(events.length);
    await expectExactCounts(client, expected);

    // A count above the expected one fails at once, not at the end of the wait (600 s, longer than this test may run).
    await expect(expectExactCounts(client, new Map([[`${prefix}-u0`, 9]]), 600_000)).rejects.toThrow(/u0 has 10 events applied, expected 9: applied twice/);
  });
});

describe("lifecycle - signals", { timeout: 240_000 }, () => {
  it("lifecycle - SIGTERM drains and exits 0 with nothing lost", async () => {
    const { prefix, dataDir, c } = await scenario("term");
    try {
      const first = start(prefix, dataDir, ["--log-level", "info"]);
      await waitForEngine(c, first);
      const events = interleavedViews(prefix, 100, 30);
      await c.publishMany(events);
      first.proc.kill("SIGTERM");
      const exit = await first.exited;
      expect(exit, first.output()).toEqual({ code: 0, signal: null });
      expect(first.output()).toContain("engine closed");

      const second = start(prefix, dataDir);
      await waitForEngine(c, second);
      await expectExactCounts(c, countByUser(events));
      second.proc.kill("SIGTERM");
      expect((await second.exited).code).toBe(0);
    } finally {
      await c.close();
    }
  });
});
