/**
 * The partition changelog (src/bus/changelog.ts) on a real nats-server (one
 * node, R1): group commit, compaction with its purge, restore, and fencing
 * by the chain of expected ids. test/cluster.test.ts runs it under real
 * takeovers, where the states are too few for a compaction to run.
 */
import { randomBytes } from "node:crypto";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Changelog, FencedError, changelogStream, ensureChangelogs } from "../src/bus/changelog.js";
import type { NatsServerHandle } from "../src/bus/nats-server-launcher.js";
import { startTestNats, waitFor } from "./helpers/nats.js";

let server: NatsServerHandle;
let nc: NatsConnection;

beforeAll(async () => {
  server = await startTestNats();
  nc = await connect({ servers: server.url });
}, 30_000);

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

// Random filler: states that hardly compress (the compaction counts the writes' bytes as stored, compressed).
const state = (user: number, version: number) => new TextEncoder().encode(`${user}:${version}:${randomBytes(100).toString("hex")}`);

describe("changelog", () => {
  it("changelog - group commit and compaction: a restore gets every user's last state, the position of the last write, and the covered writes are purged", async () => {
    const prefix = "clog1";
    const jsm = await nc.jetstreamManager();
    const js = nc.jetstream();
    await ensureChangelogs(jsm, prefix, 1, 1);
    const owner = new Changelog(js, jsm, prefix, 0, { compactMinBytes: 8 * 1024 });
    await owner.mark("a", 1, await owner.read());
    const want = new Map<string, string>();
    const appended: Promise<unknown>[] = [];
    // 120 batches over 30 users, 5 users each, not awaited one by one: those appended during a write go out together.
    for (let b = 1; b <= 120; b++) {
      const changes: [string, Uint8Array | null][] = [];
      for (let k = 0; k < 5; k++) {
        const u = (b * 7 + k * 3) % 30;
        if (changes.some(([key]) => key === `u${u}`)) continue;
        const removed = b === 60 && k === 0;
        changes.push([`u${u}`, removed ? null : state(u, b)]);
        want.set(`u${u}`, removed ? "" : `${u}:${b}`);
      }
      appended.push(owner.append(b * 10, changes));
      if (b % 15 === 0) await Promise.all(appended);
    }
    const written = await Promise.all(appended);
    expect(owner.compactions).toBeGreaterThan(0);
    // Fewer records than changes: batches appended while a write was in flight shared it, each user once.
    const records = written.reduce((n: number, w) => n + (w as { records: number }).records, 0);
    expect(records).toBeLessThan(120 * 5);
    const r = await new Changelog(js, jsm, prefix, 0).read();
    expect(r.position).toBe(1200);
    const got = new Map([...r.users].map(([k, v]) => [k, v.state === null ? "" : new TextDecoder().decode(v.state).split(":").slice(0, 2).join(":")]));
    expect(got).toEqual(want);
    // The purge (not awaited by the writes) keeps the stream near the partition's state: far fewer messages than writes plus users.
    await waitFor(async () => (await jsm.streams.info(changelogStream(prefix, 0))).state.messages < 30 + 40, { timeoutMs: 10_000, message: "covered writes not purged" });
  });

  it("changelog - fencing: after a new owner's mark the old owner's writes are refused (FencedError), and a restore gets the new owner's states", async () => {
    const prefix = "clog2";
    const jsm = await nc.jetstreamManager();
    const js = nc.jetstream();
    await ensureChangelogs(jsm, prefix, 1, 1);
    const a = new Changelog(js, jsm, prefix, 0, { compactMinBytes: 1024 });
    await a.mark("a", 1, await a.read());
    for (let b = 1; b <= 20; b++) await a.append(b, [[`u${b % 4}`, state(b % 4, b)]]);
    const b = new Changelog(js, jsm, prefix, 0, { compactMinBytes: 1024 });
    const read = await b.read();
    expect(read.position).toBe(20);
    await b.mark("b", 2, read);
    await expect(a.append(21, [["u1", state(1, 21)]])).rejects.toBeInstanceOf(FencedError);
    // And everything after it: the chain is cut.
    await expect(a.append(22, [["u2", state(2, 22)]])).rejects.toBeInstanceOf(FencedError);
    for (let s = 23; s <= 40; s++) await b.append(s, [[`u${s % 4}`, state(s % 4, s)]]);
    const r = await new Changelog(js, jsm, prefix, 0).read();
    expect(r.position).toBe(40);
    expect(new TextDecoder().decode(r.users.get("u1")!.state!).split(":")[1]).toBe("37");
    expect([...r.users.keys()].sort()).toEqual(["u0", "u1", "u2", "u3"]);
  });
});
