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
      const publishing = c.publishMany(events);
      for (let k = 0; k < 3; k++) {
        // Kill once this engine has applied something, while events are still flowing.
        await waitFor(async () => (await c.getProfile(`${prefix}-u${k}`).then(() => true, () => false)), { timeoutMs: 90_000, message: "nothing applied" });
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
