/**
 * Identity (README "Identity"), against a real nats-server and a real engine
 * (4 partitions, 2 shard workers): an IDENTIFY merges a secondary id into a
 * primary that lives in another shard, through the bus; the merged profile is
 * compared with a reference computed here from the input events by separate
 * code; a duplicate IDENTIFY and a redelivered hand-over change nothing; a
 * chain A -> B -> C routes A's late events to C; queries by any id answer
 * the merged profile and name the primary; bad identifies are dead-lettered
 * with their reason; forget of a merged user erases every id (LMDB scanned as
 * raw bytes) and stores a tombstone for each.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { scanLmdb } from "./helpers/lmdb-scan.js";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { DLQ_HEADERS } from "../src/wire/headers.js";
import { partitionOf } from "../src/wire/partition.js";
import { pseudonym } from "../src/shard/pseudonym.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";
import type { ProfileView } from "../src/actors/user-profile.js";
import { T0, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { unlessOverloaded, waitFor } from "./helpers/nats.js";

const fx = useEngineFixture();
const P = 4;
const W = 2;
const HALF_LIFE_MS = 7 * 86_400_000;
/** The documented affinity weights (README "Profile"), written out here on purpose: the reference is separate code. */
const WEIGHT: Record<number, number> = { [EventType.VIEW]: 1, [EventType.ADD_TO_CART]: 3, [EventType.PURCHASE]: 5 };
const NAME: Record<number, string> = { [EventType.VIEW]: "view", [EventType.ADD_TO_CART]: "add_to_cart", [EventType.PURCHASE]: "purchase" };
/** The documented price bands of the prices used here (42 and 82). */
const band = (price: number) => (price >= 50 ? "50-100" : "20-50");

/** An id of `prefix` whose partition belongs to shard `shard` (partition p is shard p % W's). */
function idOnShard(prefix: string, name: string, shard: number): string {
  for (let i = 0; ; i++) {
    const id = `${prefix}-${name}${i}`;
    if (partitionOf(id, P) % W === shard) return id;
  }
}

/** `n` events of a user, one session (a minute apart from `start`), items `<tag>-i<k>`. */
function activity(prefix: string, user: string, tag: string, start: number, n: number): IEvent[] {
  const out: IEvent[] = [];
  for (let k = 0; k < n; k++) {
    const type = k % 4 === 3 ? EventType.PURCHASE : k % 4 === 2 ? EventType.ADD_TO_CART : EventType.VIEW;
    out.push({
      eventId: `${prefix}-${tag}-e${k}`, userId: user, type, timestampMs: start + k * 60_000, itemId: `${tag}-i${k % 5}`,
      categoryId: `c${k % 3}`, brand: k % 2 === 0 ? "Acme" : `brand-${tag}`, price: k % 4 === 3 ? 12 + k * 10 : 0, quantity: 1,
      currency: k % 4 === 3 ? "GBP" : "", sessionId: "",
    });
  }
  return out;
}

/**
 * The profile of a person who did all `events` (the documented merge rules,
 * computed from the events themselves): counts and money add, affinities are
 * the decayed sums over every event, recent items and the timeline are the
 * events in time order, sessions add.
 */
function reference(events: IEvent[], asOfMs: number, sessions: number) {
  const counts: Record<string, number> = {};
  let purchased = 0;
  const aff = { cat: new Map<string, number>(), brand: new Map<string, number>(), band: new Map<string, number>() };
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  for (const e of events) {
    counts[NAME[e.type!]!] = (counts[NAME[e.type!]!] ?? 0) + 1;
    if (e.type === EventType.PURCHASE) purchased += e.price! * (e.quantity || 1);
    const w = WEIGHT[e.type!]! * Math.pow(2, -(asOfMs - e.timestampMs!) / HALF_LIFE_MS);
    add(aff.cat, e.categoryId!, w);
    add(aff.brand, e.brand!.toLowerCase(), w);
    if (e.price! > 0) add(aff.band, band(e.price!), w);
  }
  const byTime = [...events].sort((a, b) => b.timestampMs! - a.timestampMs!);
  const recent: string[] = [];
  for (const e of byTime) if (!recent.includes(e.itemId!)) recent.push(e.itemId!);
  const table = (m: Map<string, number>) => [...m].map(([key, score]) => ({ key, score })).sort((a, b) => b.score - a.score);
  return {
    counts, purchased, recentItems: recent, categories: table(aff.cat), brands: table(aff.brand), priceBands: table(aff.band),
    recentEvents: byTime.slice(0, 10).map((e) => ({ type: NAME[e.type!], timestampMs: e.timestampMs, itemId: e.itemId })),
    firstSeenMs: Math.min(...events.map((e) => e.timestampMs!)), lastSeenMs: Math.max(...events.map((e) => e.timestampMs!)),
    eventsApplied: events.length, sessions,
  };
}

function expectProfile(p: ProfileView, ref: ReturnType<typeof reference>): void {
  for (const [k, v] of Object.entries(ref.counts)) expect(p.counts[k], k).toBe(v);
  expect(p.eventsApplied).toBe(ref.eventsApplied);
  expect(p.money.purchased).toBeCloseTo(ref.purchased, 9);
  expect(p.recentItems).toEqual(ref.recentItems);
  expect(p.recentEvents).toEqual(ref.recentEvents);
  expect(p.firstSeenMs).toBe(ref.firstSeenMs);
  expect(p.lastSeenMs).toBe(ref.lastSeenMs);
  expect(p.sessions.count).toBe(ref.sessions);
  for (const dim of ["categories", "brands", "priceBands"] as const) {
    const got = p[dim].map(({ key, score }) => ({ key, score }));
    expect(got.map((a) => a.key).sort(), dim).toEqual(ref[dim].map((a) => a.key).sort());
    for (const r of ref[dim]) expect(got.find((a) => a.key === r.key)!.score, `${dim} ${r.key}`).toBeCloseTo(r.score, 9);
  }
}

describe("identity - one person under several ids", { timeout: 90_000 }, () => {
  it("merges across shards exactly once, routes aliases, follows chains, dead-letters bad identifies, forgets every id", async () => {
    const prefix = uniquePrefix("ident");
    const s = subjects(prefix);
    const dataDir = fx.tmpDir("portrait-identity");
    const engine = await fx.startEngine({ subjectPrefix: prefix, dataDir, partitions: P, workers: W });
    const identityCount = async (kind: string) => (await engine.metrics.identity.get()).values.find((v) => v.labels.kind === kind)?.value ?? 0;
    const client = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: P });
    fx.onCleanup(() => client.close());
    // A on one shard, B and C on the other; a bystander next to A.
    const A = idOnShard(prefix, "anon", 0);
    const B = idOnShard(prefix, "login", 1);
    const C = idOnShard(prefix, "account", 0);
    let bystander = "";
    for (let i = 0; partitionOf(bystander, P) !== partitionOf(A, P) || bystander === ""; i++) bystander = `${prefix}-other${i}`;
    expect(partitionOf(A, P) % W).not.toBe(partitionOf(B, P) % W);

    const dlq: { reason: string; user: string }[] = [];
    const handovers: { subject: string; data: Uint8Array }[] = [];
    client.nc.subscribe(s.dlqWildcard, { callback: (_, m) => dlq.push({ reason: m.headers?.get(DLQ_HEADERS.reason) ?? "", user: pb.Event.decode(m.data).userId }) });
    client.nc.subscribe(s.eventsWildcard, {
      callback: (_, m) => {
        if (pb.Event.decode(m.data).type === EventType.IDENTITY_HANDOVER) handovers.push({ subject: m.subject, data: m.data });
      },
    });
    await client.nc.flush();

    // Interleaved in time: A browses anonymously on one device, B on another (sessions apart).
    const evA = activity(prefix, A, "a", T0, 8);
    const evB = activity(prefix, B, "b", T0 + 3 * 60_000 + 30_000, 7);
    const evX = activity(prefix, bystander, "x", T0, 5);
    await client.publishMany([...evA, ...evB, ...evX]);
    await waitFor(async () => (await client.getProfile(A)).eventsApplied === 8 && (await client.getProfile(B)).eventsApplied === 7 &&
      (await client.getProfile(bystander)).eventsApplied === 5, { message: "events not applied" });
    const bystanderBefore = await client.getProfile(bystander, { asOfMs: T0 + 86_400_000 });

    // 1. The merge: A -> B, across shards.
    const identify = (id: string, user: string, primary: string, t: number): IEvent =>
      ({ eventId: `${prefix}-${id}`, userId: user, type: EventType.IDENTIFY, primaryUserId: primary, timestampMs: t });
    await client.publish(identify("idAB", A, B, T0 + 20 * 60_000));
    const asOfMs = T0 + 86_400_000;
    const merged = await waitFor(async () => {
      const p = await client.getProfile(B, { asOfMs });
      return p.eventsApplied === 15 ? p : undefined;
    }, { message: "the merge did not arrive" }) as ProfileView;
    expect(merged.primaryUserId).toBe(B);
    expect(merged.aliases).toBe(1);
    // Two devices, two sessions (the A events are 1 minute apart, B's too; they overlap in time but are not joined).
    expectProfile(merged, reference([...evA, ...evB], asOfMs, 2));
    // A query by the secondary answers the merged profile and names the primary.
    const viaA = await client.getProfile(A, { asOfMs });
    expect({ ...viaA, userId: B }).toEqual(merged);
    expect(viaA.userId).toBe(A);
    expect(handovers).toHaveLength(1);
    expect(handovers[0]!.subject).toBe(s.events(partitionOf(B, P)));

    // 2. A duplicate IDENTIFY (another event id), and the hand-over published again (as a republish after the duplicate window would be): nothing changes.
    await client.publish(identify("idAB-again", A, B, T0 + 21 * 60_000));
    await client.nc.jetstream().publish(handovers[0]!.subject, handovers[0]!.data, { msgID: `${prefix}-handover-again` });
    // A marker event of the bystander after both, on A's partition: once it is applied, the duplicate identify was too.
    await client.publish({ ...evX[0]!, eventId: `${prefix}-marker`, timestampMs: T0 + 30 * 60_000, itemId: "marker" });
    await waitFor(async () => (await client.getProfile(bystander)).eventsApplied === 6, { message: "marker not applied" });
    // The re-published hand-over is on B's partition: a later event of B is applied after it.
    await client.publish({ ...evB[0]!, eventId: `${prefix}-b-late`, timestampMs: T0 + 40 * 60_000, itemId: "b-late" });
    const afterDup = await waitFor(async () => {
      const p = await client.getProfile(B, { asOfMs });
      return p.eventsApplied === 16 ? p : undefined;
    }, { message: "B's late event not applied" }) as ProfileView;
    expectProfile(afterDup, reference([...evA, ...evB, { ...evB[0]!, timestampMs: T0 + 40 * 60_000, itemId: "b-late" }], asOfMs, 3));
    expect(handovers).toHaveLength(2); // the one republished by hand; the duplicate identify sent none
    expect([await identityCount("identifies"), await identityCount("merges"), await identityCount("duplicate_merges")]).toEqual([1, 1, 1]);

    // 3. Late events of A reach B; then a chain B -> C: A's and B's later events reach C.
    const lateA = { ...evA[0]!, eventId: `${prefix}-a-late`, timestampMs: T0 + 50 * 60_000, itemId: "a-late" };
    await client.publish(lateA);
    await waitFor(async () => (await client.getProfile(B)).eventsApplied === 17, { message: "A's late event did not reach B" });
    expect((await client.getProfile(B)).recentItems[0]).toBe("a-late");
    const evC = activity(prefix, C, "c", T0 + 2 * 3_600_000, 3);
    await client.publishMany(evC);
    await waitFor(async () => (await client.getProfile(C)).eventsApplied === 3, { message: "C's events not applied" });
    await client.publish(identify("idBC", B, C, T0 + 3 * 3_600_000));
    await waitFor(async () => (await client.getProfile(C)).eventsApplied === 20, { message: "the chained merge did not arrive" });
    const lateA2 = { ...evA[1]!, eventId: `${prefix}-a-late2`, timestampMs: T0 + 4 * 3_600_000, itemId: "a-late2" };
    await client.publish(lateA2);
    const chained = await waitFor(async () => {
      const p = await client.getProfile(C, { asOfMs });
      return p.eventsApplied === 21 ? p : undefined;
    }, { message: "A's event after the chain did not reach C" }) as ProfileView;
    expect(chained.primaryUserId).toBe(C);
    expect(chained.aliases).toBe(2);
    expect(chained.recentItems[0]).toBe("a-late2");
    for (const id of [A, B]) expect({ ...(await client.getProfile(id, { asOfMs })), userId: C }).toEqual(chained);
    // An identify of an alias to its own root changes nothing (A is C's already, through B).
    await client.publish(identify("idAC", A, C, T0 + 5 * 3_600_000));

    // 4. Bad identifies: one id, the same id twice, a cycle (C -> A while A is C's alias).
    await client.publish({ eventId: `${prefix}-bad1`, userId: bystander, type: EventType.IDENTIFY, timestampMs: T0 });
    await client.publish(identify("bad2", bystander, bystander, T0));
    await client.publish(identify("bad3", C, A, T0 + 6 * 3_600_000));
    // Forgeries by a publisher: a real hand-over re-encoded for the bystander with its state changed (the signature no longer
    // matches), and a VIEW marked forwarded without a signature. Only the engine signs these (the internal key in KV).
    const real = pb.Event.decode(handovers[0]!.data);
    const forged = pb.Event.encode({ ...real, eventId: `${prefix}-forged-h`, mergeId: `${prefix}-forged-m`, userId: bystander,
      handoverState: new TextEncoder().encode(JSON.stringify({ k: "x", p: 0, s: JSON.parse(new TextDecoder().decode(real.handoverState)).s })) }).finish();
    await client.nc.jetstream().publish(s.events(partitionOf(bystander, P)), forged);
    await client.nc.jetstream().publish(s.events(partitionOf(bystander, P)),
      pb.Event.encode({ ...evX[0]!, eventId: `${prefix}-forged-f`, forwarded: true }).finish());
    await waitFor(() => dlq.length >= 5, { message: "bad identifies and forgeries not dead-lettered" });
    expect(dlq.map((d) => d.reason).sort()).toEqual(["FORGED_INTERNAL", "FORGED_INTERNAL", "IDENTIFY_CYCLE", "IDENTIFY_MISSING_PRIMARY", "IDENTIFY_SAME_ID"]);
    // Nothing moved: C is as it was, the bystander too.
    await client.publish({ ...evC[0]!, eventId: `${prefix}-c-late`, timestampMs: T0 + 7 * 3_600_000, itemId: "c-late" });
    await waitFor(async () => (await client.getProfile(C)).eventsApplied === 22, { message: "C's marker not applied" });
    expect((await client.getProfile(C)).aliases).toBe(2);
    const bystanderAfter = await client.getProfile(bystander, { asOfMs: T0 + 86_400_000 });
    expect(bystanderAfter.eventsApplied).toBe(bystanderBefore.eventsApplied + 1);

    // 5. Forget by the oldest alias: every id goes, each with a tombstone.
    const tombstones: { userId: string; mergedWith: string }[] = [];
    client.nc.subscribe(s.tombstones, { callback: (_, m) => {
      const t = pb.Tombstone.decode(m.data);
      tombstones.push({ userId: t.userId, mergedWith: t.mergedWithUserId });
    } });
    await client.nc.flush();
    const r = await client.forget(A);
    expect(r.existed).toBe(true);
    for (const id of [A, B, C]) await expect(client.getProfile(id)).rejects.toMatchObject({ code: "UNKNOWN_USER" });
    await waitFor(() => tombstones.length >= 3, { message: "tombstones not published" });
    expect(tombstones.sort((x, y) => (x.userId < y.userId ? -1 : 1))).toEqual(
      [{ userId: A, mergedWith: "" }, { userId: B, mergedWith: A }, { userId: C, mergedWith: A }].sort((x, y) => (x.userId < y.userId ? -1 : 1)));
    // A new event of A after the forget starts a new profile under A (no alias left to route it).
    await client.publish({ ...evA[2]!, eventId: `${prefix}-a-new` });
    await waitFor(async () => (await client.getProfile(A).catch(() => undefined))?.eventsApplied === 1, { message: "A's new event not applied" });
    const p = await client.getProfile(A);
    expect(p.primaryUserId).toBe(A);
    await client.forget(A);
    // The engine stays up: LMDB is read while it runs (committed data only).
    const hits = scanLmdb(dataDir, [A, B, C, bystander], ["profiles", "aliases"]);
    expect({ A: hits[A], B: hits[B], C: hits[C] }).toEqual({ A: 0, B: 0, C: 0 });
    expect(hits[bystander]).toBeGreaterThan(0); // the scan does see ids
  });

  it("forget overtaking a hand-over in flight - by the primary or by the secondary, the person stays erased when the hand-over arrives", async () => {
    const prefix = uniquePrefix("identrace");
    const dataDir = fx.tmpDir("portrait-identity-race");
    const o = { subjectPrefix: prefix, dataDir, partitions: P, workers: W };
    let engine = await fx.startEngine(o);
    const client = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: P });
    fx.onCleanup(() => client.close());
    // Primaries on one partition (behind a backlog, so their hand-overs wait in the stream), secondaries on the other shard.
    const P1 = idOnShard(prefix, "p1-", 0);
    const part = partitionOf(P1, P);
    const onPart = (name: string) => { for (let i = 0; ; i++) if (partitionOf(`${prefix}-${name}${i}`, P) === part) return `${prefix}-${name}${i}`; };
    const P2 = onPart("p2-");
    const S1 = idOnShard(prefix, "s1-", 1);
    const S2 = idOnShard(prefix, "s2-", 1);
    await client.publishMany([...activity(prefix, P1, "p1", T0, 3), ...activity(prefix, P2, "p2", T0, 3),
      ...activity(prefix, S1, "s1", T0, 4), ...activity(prefix, S2, "s2", T0, 4)]);
    await waitFor(async () => {
      const n = await Promise.all([P1, P2, S1, S2].map(async (u) => (await client.getProfile(u).catch(() => undefined))?.eventsApplied ?? 0));
      return n.join() === "3,3,4,4";
    }, { message: "events not applied" });
    await engine.close();

    // While the engine is down: a backlog on the primaries' partition, then the identifies (on the other shard's partitions).
    const backlog: IEvent[] = [];
    const users: string[] = [];
    for (let i = 0; users.length < 1_500; i++) if (partitionOf(`${prefix}-bl${i}`, P) === part) users.push(`${prefix}-bl${i}`);
    for (let k = 0; k < 10; k++) {
      for (const u of users) backlog.push({ eventId: `${u}-${k}`, userId: u, type: EventType.VIEW, timestampMs: T0 + k * 1000, itemId: `i${k}`, categoryId: "c1" });
    }
    await client.publishMany(backlog);
    const identify = (user: string, primary: string): IEvent =>
      ({ eventId: `${prefix}-id-${user}`, userId: user, type: EventType.IDENTIFY, primaryUserId: primary, timestampMs: T0 + 3_600_000 });
    await client.publishMany([identify(S1, P1), identify(S2, P2)]);

    engine = await fx.startEngine(o);
    // Each identify applied (the secondary answers as its primary) while its hand-over still waits behind the backlog (the primary lists no alias).
    for (const [sec, pri] of [[S1, P1], [S2, P2]] as const) {
      await waitFor(async () => (await client.getProfile(sec).catch(() => undefined))?.primaryUserId === pri, { message: `${sec}'s identify not applied` });
    }
    expect((await unlessOverloaded(() => client.getProfile(P1))).aliases, "the hand-over was folded before the forget: make the backlog larger").toBe(0);
    expect((await unlessOverloaded(() => client.getProfile(P2))).aliases, "the hand-over was folded before the forget: make the backlog larger").toBe(0);
    // Forget the primary of one, the secondary of the other: each erases both ids (shed while the backlog drains: sent again).
    expect(await unlessOverloaded(() => client.forget(P1))).toMatchObject({ existed: true, mergedIdsErased: 1 });
    expect(await unlessOverloaded(() => client.forget(S2))).toMatchObject({ existed: true, mergedIdsErased: 1 });
    // The backlog drains; the hand-overs arrive after the forgets and are dropped.
    await waitFor(async () => (await client.getProfile(users.at(-1)!).catch(() => undefined))?.eventsApplied === 10, { timeoutMs: 120_000, message: "backlog not applied" });
    const dropped = async () => (await engine.metrics.identity.get()).values.find((v) => v.labels.kind === "forgotten_handovers")?.value ?? 0;
    await waitFor(async () => (await dropped()) === 2, { message: "the two hand-overs were not dropped" });
    for (const id of [P1, S1, P2, S2]) await expect(client.getProfile(id), id).rejects.toMatchObject({ code: "UNKNOWN_USER" });
    const hits = scanLmdb(dataDir, [P1, S1, P2, S2], ["profiles", "aliases", "merging"]);
    expect(hits).toMatchObject({ [P1]: 0, [S1]: 0, [P2]: 0, [S2]: 0 });
  }, 240_000);

  it("identity with pseudonymisation - keys travel between partitions, the primary is named by its pseudonym, LMDB holds no raw id", async () => {
    const prefix = uniquePrefix("identps");
    const dataDir = fx.tmpDir("portrait-identity-ps");
    const keyFile = join(fx.tmpDir("portrait-identity-key"), "key");
    const key = Buffer.from("identity-test-key-0123456789abcdef");
    writeFileSync(keyFile, key);
    await fx.startEngine({ subjectPrefix: prefix, dataDir, partitions: P, workers: W, pseudonymKeyFile: keyFile });
    const client = await PortraitClient.connect({ natsUrl: fx.nats.url, subjectPrefix: prefix, partitions: P });
    fx.onCleanup(() => client.close());
    const A = idOnShard(prefix, "anon", 0);
    const B = idOnShard(prefix, "login", 1);
    const evA = activity(prefix, A, "a", T0, 4);
    const evB = activity(prefix, B, "b", T0 + 3_600_000, 4);
    await client.publishMany([...evA, ...evB]);
    await waitFor(async () => (await client.getProfile(A)).eventsApplied === 4 && (await client.getProfile(B)).eventsApplied === 4);
    await client.publish({ eventId: `${prefix}-id`, userId: A, type: EventType.IDENTIFY, primaryUserId: B, timestampMs: T0 + 7_200_000 });
    await waitFor(async () => (await client.getProfile(B)).eventsApplied === 8, { message: "the merge did not arrive" });
    await client.publish({ ...evA[0]!, eventId: `${prefix}-a-late`, timestampMs: T0 + 8_000_000, itemId: "a-late" });
    await waitFor(async () => (await client.getProfile(B)).eventsApplied === 9, { message: "A's late event did not reach B" });
    const viaA = await client.getProfile(A);
    expect(viaA.userId).toBe(A);
    expect(viaA.primaryUserId).toBe(pseudonym(key, B));
    expect(viaA.aliases).toBe(1);
    expect(viaA.recentItems[0]).toBe("a-late");
    expect((await client.getProfile(B)).primaryUserId).toBe(B);
    const hits = scanLmdb(dataDir, [A, B, pseudonym(key, A), pseudonym(key, B)], ["profiles", "aliases"]);
    expect([hits[A], hits[B]]).toEqual([0, 0]);
    expect(hits[pseudonym(key, A)]).toBeGreaterThan(0); // the alias entry, under A's pseudonym
    expect(hits[pseudonym(key, B)]).toBeGreaterThan(0);
  });
});
