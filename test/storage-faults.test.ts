/**
 * Storage faults: the engine's LMDB lives on a tmpfs that fills up. A failed
 * commit stops the engine with a clear STORAGE_FAILED error and without
 * acknowledging anything it did not commit; once space returns, a restart
 * applies every event exactly once. Needs root (it mounts a tmpfs), as on
 * the CI machine.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { T0, countByUser, expectExactCounts, spawnEngine, uniquePrefix, waitForEngine, type ChildEngine } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";

const fx = useEngineFixture();
let mnt: string;
let mounted = false;
const children: ChildEngine[] = [];
// Run last first: the engines are killed, then the tmpfs is unmounted.
fx.onCleanup(() => {
  if (mounted) execFileSync("umount", [mnt]);
  if (mnt) rmSync(mnt, { recursive: true, force: true });
});
fx.onCleanup(async () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
  await Promise.all(children.map((c) => c.exited));
});

beforeAll(async () => {
  mnt = mkdtempSync(join(tmpdir(), "portrait-tmpfs-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt]);
    mounted = true;
  } catch (err) {
    throw new Error(`the storage-fault test mounts a small tmpfs and needs root (mount -t tmpfs): ${(err as Error).message}`);
  }
});

describe("storage faults", { timeout: 240_000 }, () => {
  it("storage - a full disk stops the engine with STORAGE_FAILED and no lost ack; after space returns every event applies exactly once", async () => {
    const prefix = uniquePrefix("disk");
    const args = ["--nats", fx.nats.url, "--embedded-nats", "never", "--data-dir", join(mnt, "engine"), "--prefix", prefix,
      "--partitions", "2", "--workers", "1", "--http-port", "-1", "--log-level", "warn", "--lstm", "off", "--deepfm", "off"];
    const first = spawnEngine(args);
    children.push(first);
    const client = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: 2 });
    try {
      await waitForEngine(client, first);
      // Long user ids make profiles big: 3 MB fill up after a few thousand users.
      const events: IEvent[] = Array.from({ length: 20_000 }, (_, i) => ({
        eventId: `${prefix}-${i}`, userId: `${prefix}-user-${i % 8000}-${"x".repeat(120)}`, type: EventType.VIEW,
        timestampMs: T0 + i, itemId: `i${i % 500}`, categoryId: `c${i % 7}`,
      }));
      await client.publishMany(events);
      const exit = await first.exited;
      expect(exit.code, first.output()).toBe(1);
      // The fatal log line carries the error as the main thread got it: its code must have survived the thread boundary.
      const fatal = first.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { level: number; err?: { code?: string; message?: string } })
        .find((l) => l.level === 60);
      expect(fatal?.err, first.output()).toBeDefined();
      expect(fatal!.err!.code, fatal!.err!.message).toBe("STORAGE_FAILED");

      execFileSync("mount", ["-o", "remount,size=256m", mnt]);
      // No lost ack: with AckPolicy.All a partition's ack floor is the last event acknowledged, and it must not
      // pass the stream sequence LMDB committed for that partition (an acknowledged event past it would never
      // be delivered again, and no restart would apply it). And the fault hit traffic: something was committed
      // and acknowledged before it, and not everything was.
      const s = subjects(prefix);
      const jsm = await client.nc.jetstreamManager();
      const store = new ProfileStore({ dataDir: join(mnt, "engine") });
      const committed = [0, 1].map((p) => store.getAppliedSeq(p));
      await store.close();
      const consumers = await Promise.all([0, 1].map((p) => jsm.consumers.info(s.eventStream, s.consumer(p))));
      const acked = consumers.map((c) => c.ack_floor.stream_seq);
      const unacked = consumers.reduce((n, c) => n + c.num_pending + c.num_ack_pending, 0);
      const seen = `acknowledged ${acked.join("/")}, committed ${committed.join("/")}, ${unacked} not acknowledged`;
      for (const p of [0, 1]) expect(acked[p], seen).toBeLessThanOrEqual(committed[p]!);
      expect(Math.min(...acked), seen).toBeGreaterThan(0);
      expect(unacked, seen).toBeGreaterThan(0);

      const second = spawnEngine(args);
      children.push(second);
      await waitForEngine(client, second);
      await expectExactCounts(client, countByUser(events), 180_000);
    } finally {
      await client.close();
    }
  });
});
