/**
 * Forget and pseudonymisation: a forgotten user leaves no trace in LMDB (every
 * key and value of every database, read as raw bytes), queries treat them as
 * unknown, other users are untouched and a tombstone is stored in its stream
 * before the reply (or the reply is PUBLISH_FAILED); with
 * pseudonymisation on, neither LMDB nor any log line of a real engine process
 * (all threads, debug level) holds a raw user id, and another key is refused.
 */
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { scanLmdb } from "./helpers/lmdb-scan.js";
import { ensureStreams } from "../src/bus/streams.js";
import { subjects } from "../src/bus/subjects.js";
import { compileEngineOptions } from "../src/config/engine-options.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { PortraitError } from "../src/errors.js";
import { Covisitation } from "../src/recs/covisitation.js";
import { compileRecsOptions } from "../src/recs/recs-options.js";
import { pseudonym } from "../src/shard/pseudonym.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";
import { T0, countByUser, expectExactCounts, spawnEngine, uniquePrefix, waitForEngine, type ChildEngine } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { waitFor } from "./helpers/nats.js";

const fx = useEngineFixture();
const children: ChildEngine[] = [];
fx.onCleanup(async () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
  await Promise.all(children.map((c) => c.exited));
});

const CLI = fileURLToPath(new URL("../src/cli/portrait.ts", import.meta.url));

/** Events whose ids do not contain the user id (so a scan for the id finds profiles, not event ids). */
function views(prefix: string, users: string[], perUser: number): IEvent[] {
  const out: IEvent[] = [];
  let n = 0;
  for (let k = 0; k < perUser; k++) {
    for (const userId of users) {
      out.push({ eventId: `${prefix}-e${n++}`, userId, type: k === perUser - 1 ? EventType.ADD_TO_CART : EventType.VIEW, timestampMs: T0 + k * 1000, itemId: `i${k}`, categoryId: `c${k % 3}` });
    }
  }
  return out;
}

describe("forget - removes every trace of a user", { timeout: 60_000 }, () => {
  it("forget - the user is unknown afterwards, LMDB holds no byte of them, others are unchanged, a tombstone is published", async () => {
    const prefix = uniquePrefix("forget");
    const dataDir = fx.tmpDir("portrait-forget");
    const engine = await fx.startEngine({ subjectPrefix: prefix, dataDir });
    const client = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: 4 });
    const users = ["anna", "bruno", "chiara", "dario", "elena"].map((u) => `${prefix}-${u}`);
    try {
      const [anna, bruno, ...others] = users as [string, string, ...string[]];
      const events = views(prefix, users, 8);
      const tombstones: Uint8Array[] = [];
      const sub = client.nc.subscribe(subjects(prefix).tombstones, { callback: (_, m) => tombstones.push(m.data) });
      await client.nc.flush();
      await client.publishMany(events);
      await expectExactCounts(client, countByUser(events));

      const asOfMs = T0 + 3_600_000;
      const before = await Promise.all(others.map((u) => client.getProfile(u, { asOfMs })));
      expect((await client.recommend(anna)).knownUser).toBe(true);
      expect((await client.getProfile(anna)).predictions?.nextCategory.version ?? "").not.toBe("");

      const r = await client.forget(anna);
      expect(r.existed).toBe(true);
      expect(r.tombstoneEventId).toMatch(/^[0-9a-f-]{36}$/);

      // (a) unknown to every query
      await expect(client.getProfile(anna)).rejects.toMatchObject({ code: "UNKNOWN_USER" });
      expect((await client.recommend(anna)).knownUser).toBe(false);
      // (c) the others are exactly as before
      expect(await Promise.all(others.map((u) => client.getProfile(u, { asOfMs })))).toEqual(before);
      // (d) the tombstone, with the id as the request gave it: stored in the tombstone stream before the reply,
      // with its event id as Nats-Msg-Id, and seen by core subscribers too.
      const jsm = await client.nc.jetstreamManager();
      const s = subjects(prefix);
      const stored = await jsm.streams.getMessage(s.tombstoneStream, { last_by_subj: s.tombstones });
      expect(stored.seq).toBe(1);
      expect(stored.header.get("Nats-Msg-Id")).toBe(r.tombstoneEventId);
      const t = pb.Tombstone.decode(stored.data);
      expect(t.userId).toBe(anna);
      expect(t.tombstoneEventId).toBe(r.tombstoneEventId);
      expect(Math.abs(Number(t.forgottenMs) - Date.now())).toBeLessThan(60_000);
      await waitFor(() => tombstones.length === 1, { message: "no tombstone on the core subscription" });
      expect(Buffer.from(tombstones[0]!)).toEqual(Buffer.from(stored.data));
      // A retry of the same tombstone (same Nats-Msg-Id, as the engine retries after a lost PubAck) is stored once.
      const retry = await client.nc.jetstream().publish(s.tombstones, stored.data, { msgID: r.tombstoneEventId });
      expect(retry.duplicate).toBe(true);
      expect((await jsm.streams.info(s.tombstoneStream)).state.messages).toBe(1);
      // Idempotent, and each forget stores its own tombstone: a second forget of the (now absent) user stores a second one with a new id.
      const again = await client.forget(anna);
      expect(again.existed).toBe(false);
      expect(again.tombstoneEventId).not.toBe(r.tombstoneEventId);
      const info = await jsm.streams.info(s.tombstoneStream);
      expect(info.state.messages).toBe(2);
      expect(info.config.max_age).toBe(0); // kept forever by default
      const second = await jsm.streams.getMessage(s.tombstoneStream, { seq: 2 });
      expect(second.header.get("Nats-Msg-Id")).toBe(again.tombstoneEventId);
      expect(pb.Tombstone.decode(second.data)).toMatchObject({ userId: anna, tombstoneEventId: again.tombstoneEventId });
      // A core subscriber sees every publish, the retry too (only the stream drops duplicates): downstream should read the stream.
      await waitFor(() => tombstones.length === 3, { message: "no second tombstone on the core subscription" });
      expect(tombstones.map((b) => pb.Tombstone.decode(b).tombstoneEventId)).toEqual([r.tombstoneEventId, r.tombstoneEventId, again.tombstoneEventId]);

      // Events applied after a forget start a new profile.
      expect((await client.forget(bruno)).existed).toBe(true);
      await client.publish({ eventId: `${prefix}-late`, userId: bruno, type: EventType.VIEW, timestampMs: T0 + 99_000, itemId: "i99" });
      await waitFor(async () => (await client.getProfile(bruno).catch(() => undefined))?.eventsApplied === 1, { message: "bruno's new profile" });
      expect((await client.getProfile(bruno)).recentItems).toEqual(["i99"]);
      sub.unsubscribe();
    } finally {
      await client.close();
      await engine.close();
    }

    // (b) every key and value of every database: nothing of anna; the others (and bruno's new profile) are found.
    const hits = scanLmdb(dataDir, users);
    expect(hits[`${prefix}-anna`]).toBe(0);
    for (const u of users.slice(1)) expect(hits[u], u).toBeGreaterThan(0);
  });

  it("forget - a tombstone that cannot be stored is a PUBLISH_FAILED error reply; the user is forgotten, and a forget once the stream is back stores one", async () => {
    const prefix = uniquePrefix("forget-nostream");
    const dataDir = fx.tmpDir("portrait-forget-nostream");
    const engine = await fx.startEngine({ subjectPrefix: prefix, dataDir });
    const client = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: 4 });
    const s = subjects(prefix);
    try {
      const user = `${prefix}-fabio`;
      const events = views(prefix, [user], 3);
      await client.publishMany(events);
      await expectExactCounts(client, countByUser(events));
      const jsm = await client.nc.jetstreamManager();
      await jsm.streams.delete(s.tombstoneStream);
      await expect(client.forget(user)).rejects.toMatchObject({ code: "PUBLISH_FAILED", retryable: true, message: expect.stringMatching(/forgotten.*tombstone could not be stored/) });
      await expect(client.getProfile(user)).rejects.toMatchObject({ code: "UNKNOWN_USER" });
      // The engine re-creates its streams at start; here the same setup call does it.
      await ensureStreams(jsm, s, engine.config);
      const r = await client.forget(user);
      expect(r.existed).toBe(false);
      const stored = await jsm.streams.getMessage(s.tombstoneStream, { last_by_subj: s.tombstones });
      expect(pb.Tombstone.decode(stored.data)).toMatchObject({ userId: user, tombstoneEventId: r.tombstoneEventId });
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it("forget - tombstones are kept forever by default; a retention shorter than the events' is refused", () => {
    expect(compileEngineOptions({}).tombstoneRetentionMs).toBe(0);
    expect(compileEngineOptions({ tombstoneRetentionMs: 30 * 86_400_000 }).tombstoneRetentionMs).toBe(30 * 86_400_000);
    expect(() => compileEngineOptions({ tombstoneRetentionMs: 86_400_000 })).toThrow(/at least options.eventRetentionMs/);
    expect(() => compileEngineOptions({ eventRetentionMs: 0, tombstoneRetentionMs: 30 * 86_400_000 })).toThrow(expect.objectContaining({ code: "CONFIG" }));
  });

  it("forget - co-visitation drops the user's last item and keeps the item links", () => {
    const o = compileRecsOptions({});
    const c = new Covisitation(o.covisitation, o.eventWeights);
    c.observe({ userId: "u1", itemId: "a", type: EventType.VIEW, timestampMs: T0 });
    c.observe({ userId: "u1", itemId: "b", type: EventType.VIEW, timestampMs: T0 + 1000 });
    c.observe({ userId: "u2", itemId: "a", type: EventType.VIEW, timestampMs: T0 + 2000 });
    expect(c.userCount).toBe(2);
    expect(c.forgetUser("u1")).toBe(true);
    expect(c.forgetUser("u1")).toBe(false);
    expect(c.userCount).toBe(1);
    expect(c.neighbours("a", 5, T0 + 2000).map((x) => x.itemId)).toEqual(["b"]);
    // A later event of u1 starts from nothing: no link from its old last item.
    c.observe({ userId: "u1", itemId: "c", type: EventType.VIEW, timestampMs: T0 + 3000 });
    expect(c.neighbours("b", 5, T0 + 3000).map((x) => x.itemId)).toEqual(["a"]);
  });
});

describe("pseudonymisation - raw user ids reach neither LMDB nor logs", { timeout: 90_000 }, () => {
  it("pseudonymisation - a real engine process keeps and logs only pseudonyms, replies with the ids asked, and refuses another key", async () => {
    const prefix = uniquePrefix("pseudo");
    const dataDir = fx.tmpDir("portrait-pseudo");
    const keys = fx.tmpDir("portrait-pseudo-keys");
    const keyFile = join(keys, `${prefix}.key`);
    const otherKeyFile = join(keys, `${prefix}.other.key`);
    const key = Buffer.from("k3y-for-tests-only-0123456789abcdef", "utf8");
    writeFileSync(keyFile, Buffer.concat([key, Buffer.from("\n")]));
    writeFileSync(otherKeyFile, "another-key-for-tests-0123456789\n");

    const child = spawnEngine([
      "--nats", fx.nats.url, "--embedded-nats", "never", "--data-dir", dataDir, "--prefix", prefix,
      "--partitions", "4", "--workers", "2", "--http-port", "-1", "--log-level", "debug", "--pseudonym-key-file", keyFile,
    ]);
    children.push(child);
    const client = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: 4 });
    const users = ["Zoe.Example@mail.test", "yusuf-1984", "xavier 3"].map((u) => `${prefix}:${u}`);
    const [zoe, yusuf, xavier] = users as [string, string, string];
    try {
      await waitForEngine(client, child);
      const events = views(prefix, users, 6);
      await client.publishMany(events);
      await expectExactCounts(client, countByUser(events));
      const p = await client.getProfile(zoe);
      expect(p.userId).toBe(zoe);
      expect((await client.recommend(yusuf)).knownUser).toBe(true);
      // Through the CLI: `portrait forget <userId> --json`.
      const { stdout } = await promisify(execFile)(process.execPath, [
        "--import", "tsx", CLI, "forget", xavier, "--json", "--nats", fx.nats.url, "--prefix", prefix, "--partitions", "4",
      ]);
      expect(JSON.parse(stdout)).toMatchObject({ existed: true, tombstoneEventId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
      await expect(client.getProfile(xavier)).rejects.toMatchObject({ code: "UNKNOWN_USER" });
      await expect(client.getProfile("never-seen")).rejects.toBeInstanceOf(PortraitError);
    } finally {
      await client.close();
      child.proc.kill("SIGTERM");
    }
    const exit = await child.exited;
    expect(exit.code, child.output()).toBe(0);

    const pseudonyms = users.map((u) => pseudonym(key, u));
    const hits = scanLmdb(dataDir, [...users, ...pseudonyms]);
    for (const u of users) expect(hits[u], `raw id ${u} in LMDB`).toBe(0);
    expect(hits[pseudonym(key, zoe)]).toBeGreaterThan(0);
    expect(hits[pseudonym(key, yusuf)]).toBeGreaterThan(0);
    expect(hits[pseudonym(key, xavier)]).toBe(0);

    const logs = child.output();
    expect(logs).toContain("engine ready");
    expect(logs).toContain('"component":"shard"');
    for (const u of users) expect(logs.includes(u), `raw id ${u} in the logs`).toBe(false);
    expect(logs.includes(key.toString("utf8"))).toBe(false);

    // Another key, or none, would not find these profiles: refused.
    for (const o of [{ pseudonymKeyFile: otherKeyFile }, {}]) {
      await expect(fx.startEngine({ subjectPrefix: prefix, dataDir, ...o })).rejects.toMatchObject({ code: "CONFIG" });
    }
  });
});
