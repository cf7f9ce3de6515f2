/**
 * Audience transitions survive SIGKILL exactly once: real engine processes
 * (`portrait start`) killed while time-driven exits are being committed and
 * published, and in the middle of a backfill; after a restart the enter/exit
 * stream holds each transition once, with no gap.
 */
import { describe, expect, it } from "vitest";
import { PortraitClient } from "../src/client/portrait-client.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { readTransitions, replayTransitions } from "./helpers/audiences.js";
import { spawnEngine, uniquePrefix, waitForEngine, type ChildEngine } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { waitFor } from "./helpers/nats.js";

const fx = useEngineFixture();
const children: ChildEngine[] = [];
fx.onCleanup(async () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
  await Promise.all(children.map((c) => c.exited));
});

function start(prefix: string, dataDir: string, extra: string[] = []): ChildEngine {
  const c = spawnEngine([
    "--nats", fx.nats.url, "--embedded-nats", "never", "--data-dir", dataDir, "--prefix", prefix,
    "--partitions", "4", "--workers", "2", "--http-port", "-1", "--log-level", "warn", "--lstm", "off", "--churn", "off", "--deepfm", "off", ...extra,
  ]);
  children.push(c);
  return c;
}

describe("audiences - crash", { timeout: 120_000 }, () => {
  it("audiences - SIGKILL between committing time-driven exits and publishing them: after a restart each transition is on the stream once", async () => {
    const prefix = uniquePrefix("audk");
    const dataDir = fx.tmpDir("audk");
    const c = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: 4 });
    try {
      // Killed before publishing the transitions of its third tick that has any.
      const first = start(prefix, dataDir, ["--fault-kill-before-audience-publish", "2"]);
      await waitForEngine(c, first);
      // Seen within the last 4.3 s: every user enters on its event and leaves by time alone.
      await c.audienceCreate({ id: "fresh", rule: { field: "daysSinceSeen", op: "<", value: 0.00005 } });
      const users = 300;
      const base = Date.now() - 1000;
      const events: IEvent[] = Array.from({ length: users }, (_, i) => ({
        eventId: `${prefix}-e${i}`, userId: `${prefix}-u${i}`, type: EventType.VIEW, timestampMs: base + i * 10, itemId: "i1",
      }));
      await c.publishMany(events);
      const exit = await first.exited;
      expect(exit.signal, first.output()).toBe("SIGKILL");
      const before = await readTransitions(c.nc, `${prefix.toUpperCase()}_AUDIENCES`);
      expect(before.filter((t) => !t.entered).length).toBeLessThan(users);

      const second = start(prefix, dataDir);
      await waitForEngine(c, second);
      const stream = `${prefix.toUpperCase()}_AUDIENCES`;
      await waitFor(async () => (await readTransitions(c.nc, stream)).length >= 2 * users, { timeoutMs: 30_000 });
      await waitFor(async () => (await c.audienceCount("fresh")) === 0);
      const ts = await readTransitions(c.nc, stream);
      expect(ts.length).toBe(2 * users);
      const { members, problems } = replayTransitions(ts);
      expect(problems).toEqual([]);
      expect(members.get("fresh")?.size ?? 0).toBe(0);
      expect(ts.filter((t) => !t.entered).every((t) => t.reason === "time" && t.transition === 2)).toBe(true);
      second.proc.kill("SIGTERM");
      expect((await second.exited).code).toBe(0);
    } finally {
      await c.close();
    }
  });

  it("audiences - SIGKILL after time-driven exits moved the users' timers: after a restart the later exits fire once, from the index's earlier entries", async () => {
    const prefix = uniquePrefix("audm");
    const dataDir = fx.tmpDir("audm");
    const c = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: 4 });
    try {
      const first = start(prefix, dataDir);
      await waitForEngine(c, first);
      // Seen within 2 s, and within 8 s: each user leaves "short" first; its timer then moves later (in memory; the index
      // keeps its earlier entry, a lower bound) and it leaves "long" by time alone, which the restart must still fire.
      await c.audienceCreate({ id: "short", rule: { field: "daysSinceSeen", op: "<", value: 2 / 86_400 } });
      await c.audienceCreate({ id: "long", rule: { field: "daysSinceSeen", op: "<", value: 8 / 86_400 } });
      const users = 100;
      const base = Date.now();
      const events: IEvent[] = [];
      for (let i = 0; i < users; i++) {
        events.push({ eventId: `${prefix}-e${i}`, userId: `${prefix}-u${i}`, type: EventType.VIEW, timestampMs: base, itemId: "i1" });
        // Half of them are seen again 1 s later: their due moves later before it fires (no index write).
        if (i % 2 === 0) events.push({ eventId: `${prefix}-f${i}`, userId: `${prefix}-u${i}`, type: EventType.VIEW, timestampMs: base + 1000, itemId: "i1" });
      }
      await c.publishMany(events);
      const stream = `${prefix.toUpperCase()}_AUDIENCES`;
      await waitFor(async () => (await readTransitions(c.nc, stream)).filter((t) => t.audienceId === "short" && !t.entered).length === users, { timeoutMs: 30_000, intervalMs: 50 });
      first.proc.kill("SIGKILL");
      await first.exited;
      // The clock restarts from the stream's latest event time, even when one batch carried all the events: a clock
      // restored earlier (or at 0, not live) would let no time pass, and no timer fire, until a new event came.
      const store = new ProfileStore({ dataDir });
      try {
        expect(store.getClock()).toBe(base + 1000);
      } finally {
        await store.close();
      }

      const second = start(prefix, dataDir);
      await waitForEngine(c, second);
      await waitFor(async () => (await readTransitions(c.nc, stream)).length >= 4 * users, { timeoutMs: 30_000 });
      await waitFor(async () => (await c.audienceCount("long")) === 0 && (await c.audienceCount("short")) === 0);
      const ts = await readTransitions(c.nc, stream);
      expect(ts.length).toBe(4 * users);
      const { members, problems } = replayTransitions(ts);
      expect(problems).toEqual([]);
      expect(members.get("long")?.size ?? 0).toBe(0);
      for (const id of ["short", "long"]) {
        const exits = ts.filter((t) => t.audienceId === id && !t.entered);
        expect(new Set(exits.map((t) => t.userId)).size).toBe(users);
        expect(exits.every((t) => t.reason === "time" && t.transition === 2)).toBe(true);
      }
      second.proc.kill("SIGTERM");
      expect((await second.exited).code).toBe(0);
    } finally {
      await c.close();
    }
  });

  it("clock - after a single batch the stored clock (what a restart resumes from) is that batch's latest event time, and live", async () => {
    // The main thread moves the clock only after a batch returns; a shard that stored the clock it knew before its own
    // batch restarted at 0 here (not live: no audience timer fired until a new event came).
    const prefix = uniquePrefix("clk");
    const dataDir = fx.tmpDir("clk");
    const c = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: 4 });
    try {
      const first = start(prefix, dataDir);
      await waitForEngine(c, first);
      const at = Date.now() - 5000;
      await c.publishMany([{ eventId: `${prefix}-e1`, userId: `${prefix}-u1`, type: EventType.VIEW, timestampMs: at, itemId: "i1" }]);
      await waitFor(async () => (await c.getProfile(`${prefix}-u1`).catch(() => undefined)) !== undefined);
      // Opened anew for each look: another process writes it, and a fresh open reads its latest commit.
      await waitFor(async () => {
        const store = new ProfileStore({ dataDir });
        try {
          return store.getClock() === at && store.getClockLive();
        } finally {
          await store.close();
        }
      }, { message: "the stored clock never reached the event's time" });
    } finally {
      await c.close();
    }
  });

  it("audiences - SIGKILL in the middle of a backfill: after a restart every stored user entered once", async () => {
    const prefix = uniquePrefix("audb");
    const dataDir = fx.tmpDir("audb");
    const c = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: 4 });
    try {
      const first = start(prefix, dataDir, ["--audience-backfill-per-tick", "40"]);
      await waitForEngine(c, first);
      const users = 2000;
      const events: IEvent[] = Array.from({ length: users }, (_, i) => ({
        eventId: `${prefix}-e${i}`, userId: `${prefix}-u${i}`, type: EventType.VIEW, timestampMs: Date.now() - 60_000, itemId: "i1",
      }));
      await c.publishMany(events);
      await waitFor(async () => (await c.getProfile(`${prefix}-u${users - 1}`).catch(() => undefined)) !== undefined);
      await c.audienceCreate({ id: "viewers", rule: { field: "eventsTotal", op: ">=", value: 1 } });
      // Kill mid-backfill: some members counted, not all.
      await waitFor(async () => {
        const n = await c.audienceCount("viewers");
        return n >= 200 && n < users;
      }, { timeoutMs: 30_000, intervalMs: 20 });
      first.proc.kill("SIGKILL");
      await first.exited;

      const second = start(prefix, dataDir);
      await waitForEngine(c, second);
      await waitFor(async () => (await c.audienceCount("viewers")) === users && !(await c.audienceShow("viewers")).backfill.running, { timeoutMs: 30_000 });
      const stream = `${prefix.toUpperCase()}_AUDIENCES`;
      await waitFor(async () => (await readTransitions(c.nc, stream)).length === users, { timeoutMs: 10_000 });
      const ts = await readTransitions(c.nc, stream);
      expect(ts.length).toBe(users);
      const { members, problems } = replayTransitions(ts);
      expect(problems).toEqual([]);
      expect(members.get("viewers")?.size).toBe(users);
      expect(ts.every((t) => t.reason === "backfill" && t.transition === 1)).toBe(true);
      second.proc.kill("SIGTERM");
      expect((await second.exited).code).toBe(0);
    } finally {
      await c.close();
    }
  });
});
