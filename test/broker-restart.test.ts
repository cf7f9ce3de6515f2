/** The engine outlives a broker restart: it reconnects and applies what follows, exactly once. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PortraitClient } from "../src/client/portrait-client.js";
import type { Engine } from "../src/engine.js";
import { subjects } from "../src/bus/subjects.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { T0, countByUser, expectExactCounts, interleavedViews, removeDir, spawnEngine, waitForEngine } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { startTestNats, tmpDir, waitFor } from "./helpers/nats.js";

const fx = useEngineFixture();
let engine: Engine;
let client: PortraitClient;

beforeAll(async () => {
  engine = await fx.startEngine();
  client = await PortraitClient.connect({ natsUrl: fx.nats.url, partitions: 4 });
});

afterAll(async () => {
  await client?.close();
});

describe("bus - broker restart", () => {
  it("bus - after a nats-server restart the engine reconnects and every event is applied exactly once", async () => {
    const before = interleavedViews("br", 20, 10);
    await client.publishMany(before);
    await expectExactCounts(client, countByUser(before));

    await fx.nats.restart();
    // JetStream needs a moment after the restart; a publisher retries until it answers.
    await waitFor(() => client.publish({ eventId: "br-probe", userId: "br-probe", type: EventType.VIEW, timestampMs: T0, itemId: "x" }).then(() => true, () => false), {
      timeoutMs: 60_000,
      message: "JetStream did not come back",
    });
    const after = interleavedViews("br", 20, 20).slice(before.length);
    await client.publishMany(after);
    await expectExactCounts(client, countByUser([...before, ...after, { userId: "br-probe" }]));
  });
});

/**
 * Publishes in chunks, retrying a chunk until JetStream acknowledges it (event
 * ids make a retry a no-op duplicate). `before(i)` runs before the chunk that
 * starts at event i; `published` counts the events acknowledged so far.
 */
async function publishRetrying(c: PortraitClient, events: IEvent[], before: (i: number) => Promise<void> = async () => undefined, progress = { published: 0 }): Promise<void> {
  for (let i = 0; i < events.length; i += 200) {
    await before(i);
    const chunk = events.slice(i, i + 200);
    await waitFor(() => c.publishMany(chunk).then(() => true, () => false), { timeoutMs: 90_000, message: "publishing did not recover" });
    progress.published = i + chunk.length;
  }
}

/** A promise with its resolve function. */
function signal(): { promise: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const promise = new Promise<void>((r) => (fire = r));
  return { promise, fire };
}

describe("bus - lost deliveries", () => {
  it("bus - deliveries the engine never received are applied after all: the consumer repositions after what it handed over", async () => {
    // Another puller on the engine's own durable consumer takes some of partition 0's deliveries and never
    // acknowledges them: the engine sees its delivery sequence skip, as after a delivery lost across a broker
    // restart. Acknowledging the later messages (AckPolicy.All) would drop the taken ones unapplied.
    const s = subjects();
    const taken: number[] = [];
    const consumer = await fx.nc.jetstream().consumers.get(s.eventStream, s.consumer(0));
    const fetch = await consumer.fetch({ max_messages: 3, expires: 15_000 });
    const taking = (async () => {
      try {
        for await (const m of fetch) taken.push(m.seq);
      } catch (err) {
        // The engine saw the gap and recreated its durable consumer before this fetch had its 3 messages: the fetch ends there.
        if (!/consumer deleted/.test(String(err))) throw err;
      }
    })();
    const events = interleavedViews("lost", 16, 30);
    for (let i = 0; i < events.length; i += 8) await client.publishMany(events.slice(i, i + 8));
    await taking;
    expect(taken.length, "the other puller took none of the deliveries: the test did not exercise a gap").toBeGreaterThan(0);
    await expectExactCounts(client, countByUser(events));
    expect(await engine.metrics.total(engine.metrics.consumerRepositions)).toBeGreaterThan(0);
  });
});

describe("bus - broker faults", () => {
  it("bus - five nats-server restarts and a 4 s pause while events flow: every event applied exactly once, lag drains", { timeout: 240_000 }, async () => {
    const events = interleavedViews("bf", 40, 60);
    const appliedBefore = await engine.metrics.total(engine.metrics.eventsApplied);
    // Six faults (five restarts, then the pause), each while the publisher waits at a chunk boundary: fault k
    // comes once 200 × (2k + 1) events are published, and the next chunk goes out while it lasts. So every
    // fault hits traffic: events still to publish, and those published just before it still to apply.
    const FAULTS = 6;
    const at = Array.from({ length: FAULTS }, (_, k) => 200 * (2 * k + 1));
    const reached = at.map(() => signal());
    const started = at.map(() => signal());
    const progress = { published: 0 };
    const seen: Array<{ fault: string; published: number; applied: number }> = [];
    const faults = (async () => {
      for (let k = 0; k < FAULTS; k++) {
        await reached[k]!.promise;
        const applied = (await engine.metrics.total(engine.metrics.eventsApplied)) - appliedBefore;
        seen.push({ fault: k < 5 ? `restart ${k + 1}` : "pause", published: progress.published, applied });
        if (k < 5) {
          const restarting = fx.nats.restart();
          started[k]!.fire();
          await restarting;
        } else {
          fx.nats.signal("SIGSTOP");
          started[k]!.fire();
          await new Promise((r) => setTimeout(r, 4000));
          fx.nats.signal("SIGCONT");
        }
      }
    })();
    const gate = async (i: number) => {
      const k = at.indexOf(i);
      if (k < 0) return;
      reached[k]!.fire();
      await started[k]!.promise;
    };
    await Promise.all([publishRetrying(client, events, gate, progress), faults]);
    expect(seen.map((f) => f.fault)).toEqual(["restart 1", "restart 2", "restart 3", "restart 4", "restart 5", "pause"]);
    for (const f of seen) {
      expect(f.published < events.length || f.applied < events.length, JSON.stringify(f)).toBe(true);
    }
    expect(seen.map((f) => f.published)).toEqual(at);
    await expectExactCounts(client, countByUser([...interleavedViews("br", 20, 20), { userId: "br-probe" }, ...events]), 180_000);
    await waitFor(async () => (await engine.metrics.total(engine.metrics.lag)) === 0, { timeoutMs: 60_000, message: "lag did not drain" });
  });
});

describe("lifecycle - broker gone", () => {
  it("lifecycle - SIGTERM still drains and exits 0 after the broker died", async () => {
    const own = await startTestNats();
    const dataDir = tmpDir("portrait-gone");
    const child = spawnEngine([
      "--nats", own.url, "--embedded-nats", "never", "--data-dir", dataDir, "--partitions", "4",
      "--http-port", "-1", "--log-level", "info",
    ]);
    const c = await PortraitClient.connect({ natsUrl: own.url, partitions: 4 });
    try {
      await waitForEngine(c, child);
      const events = interleavedViews("gone", 10, 5);
      await c.publishMany(events);
      await expectExactCounts(c, countByUser(events));
      await c.close();
      own.signal("SIGKILL");
      await own.exited;
      await waitFor(() => child.output().includes('"event":"disconnect"'), { message: "the engine did not notice the broker going away" });
      child.proc.kill("SIGTERM");
      const exit = await Promise.race([child.exited, new Promise((r) => setTimeout(() => r("still running 60 s after SIGTERM"), 60_000))]);
      expect(exit, child.output()).toEqual({ code: 0, signal: null });
      expect(child.output()).toContain("engine closed");
    } finally {
      if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill("SIGKILL");
      await c.close();
      await own.stop();
      removeDir(dataDir);
    }
  });
});
