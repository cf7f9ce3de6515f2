/**
 * Social ties (README "Social ties"): the pure social part on hand-made
 * sequences (degrees, the kept ids, friends' interests and their bounds), the
 * audience fields, and the engine end to end with 4 partitions on 2 shard
 * workers: a follow reaches the other user's actor through the bus (its
 * followers), its answer comes back (the follower's friends' interests), bad
 * social events are dead-lettered with their reason, a forgotten followed
 * user leaves no id in LMDB (followers keep hashes), the beyondClicks
 * switch turns reviews, social ties and risk off, and a batch's notices to
 * users on several partitions (one message per partition) are applied
 * exactly once across a SIGKILL between their commit and their publish and
 * a republish by hand; and, in a shard pool without a broker, a batch's
 * notice to an alias forwarded alone to its primary.
 */
import { describe, expect, it } from "vitest";
import { compileAudiences, parseDefinition } from "../src/actors/audience-rules.js";
import { evaluateAudiences } from "../src/actors/audience-state.js";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { follow, followedBy, friendsInterests, newSocialState, noteFriendInterests, SOCIAL, topCategoryShares, unfollow } from "../src/actors/social.js";
import { applyEvent, newUserState } from "../src/actors/user-profile.js";
import { packBatch } from "../src/bus/event-batch.js";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { ShardPool } from "../src/shard/shard-pool.js";
import { NoticeBatch, unbatchNotices } from "../src/shard/social.js";
import { MAX_NOTICES_PER_MESSAGE } from "../src/wire/event-validation.js";
import { DLQ_HEADERS } from "../src/wire/headers.js";
import { verifyInternal } from "../src/wire/internal-mac.js";
import { fnv1a32String, partitionOf } from "../src/wire/partition.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";
import { T0, removeDir, spawnEngine, uniquePrefix, waitForEngine, type ChildEngine } from "./helpers/engine.js";
import { scanLmdb } from "./helpers/lmdb-scan.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { tmpDir, waitFor } from "./helpers/nats.js";

describe("social - the profile's social part", () => {
  it("social - follow, follow again, unfollow: degrees, kept ids and the NOT_FOLLOWING verdict", () => {
    const s = newSocialState();
    expect(follow(s, "b")).toBe("new");
    expect(follow(s, "c")).toBe("new");
    expect(follow(s, "b")).toBe("again");
    expect([s.o, s.fo]).toEqual([2, [fnv1a32String("c"), fnv1a32String("b")]]);
    expect(unfollow(s, "d")).toBe(false);
    expect(s.o).toBe(2);
    expect(unfollow(s, "c")).toBe(true);
    expect([s.o, s.fo]).toEqual([1, [fnv1a32String("b")]]);
    // In-degree never goes below 0.
    followedBy(s, -1);
    followedBy(s, 1);
    expect(s.i).toBe(1);
    // Beyond the kept ids: the oldest are dropped, and an unfollow of one of them is trusted.
    const many = newSocialState();
    for (let k = 0; k < SOCIAL.followingKept + 2; k++) follow(many, `u${k}`);
    expect(many.o).toBe(SOCIAL.followingKept + 2);
    expect(many.fo.length).toBe(SOCIAL.followingKept);
    expect(many.fo[0]).toBe(fnv1a32String("u2"));
    expect(unfollow(many, "u0")).toBe(true);
    expect(unfollow(many, "u1")).toBe(true);
    // Now every followed id is kept: an unknown one is refused.
    expect(unfollow(many, "u0")).toBe(false);
    expect(many.o).toBe(SOCIAL.followingKept);
  });

  it("social - friends' interests: the mean share over the sample, bounded, snapshots of followed users only", () => {
    const s = newSocialState();
    follow(s, "b");
    follow(s, "c");
    noteFriendInterests(s, "b", ["x", "y"], [0.75, 0.25]);
    noteFriendInterests(s, "c", ["z"], [1]);
    // Not followed: ignored.
    noteFriendInterests(s, "stranger", ["w"], [1]);
    expect(friendsInterests(s)).toEqual([{ key: "z", score: 0.5 }, { key: "x", score: 0.375 }, { key: "y", score: 0.125 }]);
    unfollow(s, "c");
    expect(friendsInterests(s)).toEqual([{ key: "x", score: 0.75 }, { key: "y", score: 0.25 }]);
    // The sample keeps the most recent friendSample answers.
    for (let k = 0; k < SOCIAL.friendSample + 3; k++) {
      follow(s, `f${k}`);
      noteFriendInterests(s, `f${k}`, [`c${k}`, "shared", "a", "b"], [0.5, 0.3, 0.1, 0.1]);
    }
    expect(s.fr.length).toBe(SOCIAL.friendSample);
    expect(s.fr.every(([, cats]) => cats.length === SOCIAL.friendCategories)).toBe(true);
    expect(s.fr[0]![0]).toBe(fnv1a32String("f3"));
    // "shared" is in every friend's top 3 at 0.3; each c<k> in one friend's at 0.5.
    const view = friendsInterests(s, 100);
    expect(view[0]!.key).toBe("shared");
    expect(view[0]!.score).toBeCloseTo(0.3, 12);
    expect(view.find((x) => x.key === "c10")!.score).toBe(0.5 / SOCIAL.friendSample);
    expect(view.some((x) => x.key === "c2")).toBe(false);
    expect(friendsInterests(s).length).toBe(SOCIAL.friendsInterestsTop);
  });

  it("social - a user's answer is their top 3 categories as shares of the whole table", () => {
    expect(topCategoryShares({ keys: ["a", "b", "c", "d"], scores: [1, 5, 2, 2] })).toEqual({ categories: ["b", "c", "d"], shares: [0.5, 0.2, 0.2] });
    expect(topCategoryShares({ keys: [], scores: [] })).toEqual({ categories: [], shares: [] });
  });

  it("social - audience fields social.following and social.followers", () => {
    const o = compileProfileOptions();
    const u = newUserState();
    applyEvent(u, { type: EventType.VIEW, timestampMs: T0, itemId: "i", categoryId: "", brand: "", price: 0, quantity: 0, currency: "", sessionId: "", orderId: "" }, o);
    u.so = newSocialState();
    follow(u.so, "b");
    followedBy(u.so, 1);
    followedBy(u.so, 1);
    const set = compileAudiences([
      parseDefinition({ id: "popular", rule: { field: "social.followers", op: ">=", value: 2 } }),
      parseDefinition({ id: "follows-many", rule: { field: "social.following", op: ">=", value: 2 } }),
    ]);
    const entered = evaluateAudiences("u", u, set, T0 + 1000, { profile: o }, "event", 0).filter((t) => t.entered).map((t) => t.audience);
    expect(entered).toEqual(["popular"]);
  });

  it("social - beyondClicks must be a boolean", () => {
    expect(compileProfileOptions({ beyondClicks: false }).beyondClicks).toBe(false);
    expect(compileProfileOptions().beyondClicks).toBe(true);
    expect(() => compileProfileOptions({ beyondClicks: "no" as unknown as boolean })).toThrow(/beyondClicks must be a boolean/);
  });
});

describe("social - notice batches", () => {
  it("social - a batch's notices: one signed message per recipients' partition, chunked at 256 and by size, read back in order", () => {
    const s = subjects("nb");
    const key = new Uint8Array(32).fill(7);
    const b = new NoticeBatch();
    // 300 FOLLOWED to partition 2, one INTERESTS to partition 1 (in between), caused by events up to sequence 41 of partition 0.
    for (let i = 0; i < 300; i++) b.add({ to: [`u${i}`, 2], from: ["me", 0], kind: pb.SocialNotice.Kind.FOLLOWED }, 10 + (i % 30), T0 + i);
    b.add({ to: ["v", 1], from: ["me", 0], kind: pb.SocialNotice.Kind.INTERESTS, categories: ["c1", "c2"], shares: [0.6, 0.4] }, 41, T0);
    expect(b.size).toBe(301);
    const msgs = b.messages(s, key, 0, 65_536);
    expect(msgs.map((m) => [m.subject, m.msgId])).toEqual([
      [s.events(1), "nb:n:0:41:1:0"], [s.events(2), "nb:n:0:41:2:0"], [s.events(2), "nb:n:0:41:2:1"],
    ]);
    expect(msgs.every((m) => m.holdable === true && verifyInternal(key, m.data))).toBe(true);
    const read = msgs.map((m) => unbatchNotices(pb.Event.decode(m.data)));
    expect(read.map((xs) => xs.length)).toEqual([1, MAX_NOTICES_PER_MESSAGE, 300 - MAX_NOTICES_PER_MESSAGE]);
    expect(read[0]![0]!).toMatchObject({ userId: "v", type: EventType.SOCIAL_NOTICE, forwarded: true, socialNotice: { kind: pb.SocialNotice.Kind.INTERESTS, fromKey: "me", fromPartition: 0, categories: ["c1", "c2"], shares: [0.6, 0.4] } });
    expect([...read[1]!, ...read[2]!].map((e) => e.userId)).toEqual(Array.from({ length: 300 }, (_, i) => `u${i}`));
    // Under a smaller event size limit the same notices take more messages, each within it.
    const small = b.messages(s, key, 0, 4096);
    expect(small.length).toBeGreaterThan(3);
    expect(small.every((m) => m.data.byteLength <= 4096)).toBe(true);
    expect(small.flatMap((m) => unbatchNotices(pb.Event.decode(m.data)).map((e) => e.userId)).length).toBe(301);
  });
});

describe("social - notice batches in shard workers (no broker)", () => {
  it("social - a batch's notice to an alias is forwarded alone to its primary; the other notices of the batch are applied where they are", async () => {
    const P = 4;
    const internalKey = new Uint8Array(32).fill(7);
    const dataDir = tmpDir("portrait-social-alias");
    // One shard worker (the cheapest pool): the notices still go partition to partition through the outbound messages.
    const pool = await ShardPool.start(1, P, {
      dataDir, mapSizeBytes: 2 ** 26, profile: compileProfileOptions({}), maxActors: 1000, logLevel: "silent", models: { shopSource: "stream:TEST_EVENTS" },
      validation: { partitions: P, maxEventBytes: 65536, maxFutureSkewMs: 86_400_000, internalKey },
    }, () => undefined, undefined, { maxShardQueueEvents: 2048 });
    try {
      const seq = new Array<number>(P).fill(0);
      /** Applies messages to a partition as one batch; returns its outbound messages by recipients' partition. */
      const apply = async (p: number, msgs: Uint8Array[]) => {
        const r = await pool.applyBatch(packBatch(p, msgs, (b) => b, (_b, i) => seq[p]! + 1 + i));
        seq[p]! += msgs.length;
        expect(r.deadLetters).toEqual([]);
        const out = new Map<number, { msgId: string; data: Uint8Array }[]>();
        for (const m of r.outbound ?? []) {
          const to = Number(m.subject.slice(m.subject.lastIndexOf(".") + 1));
          out.set(to, [...(out.get(to) ?? []), m]);
        }
        return out;
      };
      const enc = (e: IEvent) => pb.Event.encode(e).finish();
      const alice = "alice";
      const bob = "bob";
      // dave shares bob's partition, carol (bob's primary) is on another one: one message carries both notices.
      const pb0 = partitionOf(bob, P);
      let dave = "";
      let carol = "";
      for (let i = 0; dave === "" || carol === ""; i++) {
        if (dave === "" && partitionOf(`dave${i}`, P) === pb0) dave = `dave${i}`;
        if (carol === "" && partitionOf(`carol${i}`, P) !== pb0) carol = `carol${i}`;
      }
      const pc = partitionOf(carol, P);
      const pa = partitionOf(alice, P);
      let n = 0;
      const ev = (e: IEvent): IEvent => ({ eventId: `e${n++}`, timestampMs: T0 + n * 1000, ...e });
      for (const u of [alice, bob, dave, carol]) await apply(partitionOf(u, P), [enc(ev({ userId: u, type: EventType.VIEW, itemId: "i", categoryId: `cat-${u}` }))]);
      // bob is merged into carol: the alias entry on bob's partition, the hand-over folded on carol's.
      const handover = await apply(pb0, [enc(ev({ userId: bob, type: EventType.IDENTIFY, primaryUserId: carol }))]);
      await apply(pc, handover.get(pc)!.map((m) => m.data));
      // alice follows bob (now an alias) and dave in one batch: one SOCIAL_NOTICE message to their partition, two notices.
      const follows = await apply(pa, [enc(ev({ userId: alice, type: EventType.FOLLOW, targetUserId: bob })), enc(ev({ userId: alice, type: EventType.FOLLOW, targetUserId: dave }))]);
      expect(follows.get(pb0)!.length).toBe(1);
      expect(verifyInternal(internalKey, follows.get(pb0)![0]!.data)).toBe(true);
      const batchMsg = pb.Event.decode(follows.get(pb0)![0]!.data);
      expect(batchMsg.socialNotices.map((x) => x.toKey)).toEqual([bob, dave]);
      const atBob = await apply(pb0, [follows.get(pb0)![0]!.data]);
      // bob's notice is forwarded alone to carol's partition (named after its index in the batch), dave's applied here and answered.
      const fwd = atBob.get(pc)!;
      expect(fwd.length).toBe(1);
      expect(fwd[0]!.msgId).toMatch(/:x:\d+:0$/);
      expect(verifyInternal(internalKey, fwd[0]!.data)).toBe(true);
      const forwarded = pb.Event.decode(fwd[0]!.data);
      expect(forwarded.userId).toBe(carol);
      expect(forwarded.socialNotices.length).toBe(0);
      expect(forwarded.socialNotice?.fromKey).toBe(alice);
      expect(forwarded.socialNotice?.followedKey).toBe(bob);
      const atCarol = await apply(pc, fwd.map((m) => m.data));
      // Both answers (dave's and carol's interests) go back to alice.
      await apply(pa, [...(atBob.get(pa) ?? []), ...(atCarol.get(pa) ?? [])].map((m) => m.data));
      const social = async (u: string) => {
        const r = await pool.getProfile(partitionOf(u, P), u, 0, "protobuf");
        if (!r.ok) throw new Error(r.error.code);
        return pb.ProfileReply.decode(r.body).profile!.social;
      };
      expect((await social(carol))?.followers).toBe(1);
      expect((await social(bob))?.followers).toBe(1); // the alias answers with its primary
      expect((await social(dave))?.followers).toBe(1);
      const a = await social(alice);
      expect(a?.following).toBe(2);
      // Both answers are in alice's friends' interests: dave's, and carol's, which answers as bob (the id alice followed).
      expect(a?.friendsSampled).toBe(2);
      expect((a?.friendsInterests ?? []).map((x) => x.key)).toEqual(expect.arrayContaining([`cat-${dave}`, `cat-${carol}`, `cat-${bob}`]));
    } finally {
      await pool.close();
      removeDir(dataDir);
    }
  });
});

describe("social - engine", () => {
  const fx = useEngineFixture();
  const P = 4;
  const W = 2;

  /** An id of `prefix` on shard `shard` (partition p is shard p % W's). */
  function idOnShard(prefix: string, name: string, shard: number): string {
    for (let i = 0; ; i++) {
      const id = `${prefix}-${name}${i}`;
      if (partitionOf(id, P) % W === shard) return id;
    }
  }

  it("social - follows reach the other user's actor through the bus; friends' interests come back; bad social events are dead-lettered", async () => {
    const prefix = uniquePrefix("social");
    const engine = await fx.startEngine({ subjectPrefix: prefix, partitions: P, workers: W, lstmModel: "off", churnModel: "off", propensityModel: "off", deepfmModel: "off", sentimentModel: "off" });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: P });
    const s = subjects(prefix);
    const dlq: { reason: string; user: string }[] = [];
    client.nc.subscribe(s.dlqWildcard, { callback: (_, m) => dlq.push({ reason: m.headers?.get(DLQ_HEADERS.reason) ?? "", user: pb.Event.decode(m.data).userId }) });
    await client.nc.flush();
    const A = idOnShard(prefix, "a", 0);
    const B = idOnShard(prefix, "b", 1);
    const C = idOnShard(prefix, "c", 1);
    let n = 0;
    const ev = (p: IEvent): IEvent => ({ eventId: `${prefix}-${n++}`, timestampMs: T0 + n * 1000, ...p });
    const social = (userId: string, type: EventType, target?: string, itemId?: string) => ev({ userId, type, ...(target !== undefined ? { targetUserId: target } : {}), ...(itemId !== undefined ? { itemId } : {}) });
    // B likes b1 (3 views) and b2 (1 view); C likes c1.
    await client.publishMany([
      ...["b1", "b1", "b1", "b2"].map((c, k) => ev({ userId: B, type: EventType.VIEW, itemId: `i${k}`, categoryId: c })),
      ev({ userId: C, type: EventType.VIEW, itemId: "j", categoryId: "c1" }),
      ev({ userId: A, type: EventType.VIEW, itemId: "k", categoryId: "a1" }),
    ]);
    await waitFor(async () => (await client.getProfile(B).catch(() => undefined))?.eventsApplied === 4, { message: "B's views not applied" });
    await waitFor(async () => (await client.getProfile(C).catch(() => undefined))?.eventsApplied === 1, { message: "C's view not applied" });
    await client.publishMany([social(A, EventType.FOLLOW, B), social(A, EventType.FOLLOW, C), social(C, EventType.FOLLOW, B)]);
    const b = await waitFor(async () => {
      const p = await client.getProfile(B);
      return p.social?.followers === 2 ? p : undefined;
    }, { message: "B's followers did not reach 2" });
    // Told, not done: B's own counts and events are untouched.
    expect(b!.eventsApplied).toBe(4);
    expect(b!.social!.following).toBe(0);
    const a = await waitFor(async () => {
      const p = await client.getProfile(A);
      return p.social?.friendsSampled === 2 ? p : undefined;
    }, { message: "A's friends' interests did not arrive" });
    expect(a!.social!.following).toBe(2);
    expect(a!.eventsApplied).toBe(1);
    const fi = Object.fromEntries(a!.social!.friendsInterests.map((x) => [x.key, x.score]));
    // Views 1 s apart decay a little: B's shares are about 3/4 and 1/4, C's 1; the mean over 2 friends.
    expect(fi.c1).toBeCloseTo(0.5, 9);
    expect(fi.b1).toBeCloseTo(0.375, 4);
    expect(fi.b2).toBeCloseTo(0.125, 4);
    expect((await client.getProfile(C)).social).toMatchObject({ following: 1, followers: 1 });

    // Follow again: no degree moves; a share with C; unfollow C.
    await client.publishMany([social(A, EventType.FOLLOW, B), social(A, EventType.SHARE, C, "k"), social(A, EventType.UNFOLLOW, C)]);
    await waitFor(async () => (await client.getProfile(C)).social?.followers === 0, { message: "C's follower not taken off" });
    await waitFor(async () => (await client.getProfile(C)).social?.sharesReceived === 1, { message: "C's share not received" });
    const a2 = await client.getProfile(A);
    expect(a2.social).toMatchObject({ following: 1, sharesSent: 1, friendsSampled: 1 });
    expect(a2.social!.friendsInterests.map((x) => x.key)).toEqual(["b1", "b2"]);
    expect((await client.getProfile(B)).social!.followers).toBe(2);

    // Bad social events: a self-follow, an unfollow of someone not followed, a follow without a target.
    await client.publishMany([social(A, EventType.FOLLOW, A), social(A, EventType.UNFOLLOW, C), social(A, EventType.FOLLOW)]);
    await waitFor(() => dlq.length >= 3, { message: "bad social events not dead-lettered" });
    expect(dlq.map((d) => d.reason).sort()).toEqual(["MISSING_TARGET", "NOT_FOLLOWING", "SELF_TARGET"]);
    // Nothing moved. A marker after them in A's partition: a share with B.
    await client.publish(social(A, EventType.SHARE, B, "k"));
    await waitFor(async () => (await client.getProfile(B)).social?.sharesReceived === 1, { message: "marker share not received" });
    expect((await client.getProfile(A)).social).toMatchObject({ following: 1, sharesSent: 2 });
    expect((await client.getProfile(C)).social).toMatchObject({ followers: 0, following: 1 });

    // Followers keep no id of whom they follow: once B is forgotten, LMDB holds no trace of B's id.
    await client.forget(B);
    const hits = scanLmdb(engine.config.dataDir, [B, A], ["profiles"]);
    expect(hits[B]).toBe(0);
    expect(hits[A]).toBeGreaterThan(0); // the scan does see ids
  });

  it("social - beyondClicks off: reviews, social ties and risk are acknowledged and change nothing beyond clicks", async () => {
    const prefix = uniquePrefix("social-off");
    const engine = await fx.startEngine({ subjectPrefix: prefix, lstmModel: "off", churnModel: "off", propensityModel: "off", deepfmModel: "off", profile: { beyondClicks: false } });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const u = `${prefix}-u`;
    const v = `${prefix}-v`;
    const burst: IEvent[] = Array.from({ length: 60 }, (_, k) => ({ eventId: `${prefix}-${k}`, userId: u, type: EventType.VIEW, timestampMs: T0 + k * 200, itemId: `i${k}` }));
    await client.publishMany([
      ...burst,
      { eventId: `${prefix}-r`, userId: u, type: EventType.REVIEW, timestampMs: T0 + 20_000, itemId: "i1", rating: 1, reviewText: "Broke after a day, awful." },
      { eventId: `${prefix}-f`, userId: u, type: EventType.FOLLOW, timestampMs: T0 + 21_000, targetUserId: v },
      { eventId: `${prefix}-v`, userId: v, type: EventType.VIEW, timestampMs: T0 + 22_000, itemId: "x" },
    ]);
    await waitFor(async () => (await engine.metrics.total(engine.metrics.eventsApplied)) === 63, { message: "events not applied" });
    const p = await client.getProfile(u);
    expect(p.eventsApplied).toBe(61);
    expect(p.counts.review).toBe(1);
    expect(p.reviews).toBeUndefined();
    expect(p.social).toBeUndefined();
    expect(p.risk!.velocity).toMatchObject({ score: 0, flagged: false });
    expect((await client.getProfile(v)).social).toBeUndefined();
  });
});

describe("social - notice batches under SIGKILL", { timeout: 180_000 }, () => {
  const fx = useEngineFixture();
  const P = 4;
  const children: ChildEngine[] = [];
  fx.onCleanup(async () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
    await Promise.all(children.map((c) => c.exited));
  });

  it("social - a batch's notices to users on 3 partitions: committed, SIGKILL before publish, republished at start and by hand, applied once", async () => {
    const prefix = uniquePrefix("social-crash");
    const dataDir = fx.tmpDir("portrait-social-crash");
    const s = subjects(prefix);
    const models = { lstmModel: "off", churnModel: "off", propensityModel: "off", deepfmModel: "off", sentimentModel: "off", modelRegistry: false } as const;
    const onPartition = (name: string, p: number, count: number): string[] => {
      const out: string[] = [];
      for (let i = 0; out.length < count; i++) if (partitionOf(`${prefix}-${name}${i}`, P) === p) out.push(`${prefix}-${name}${i}`);
      return out;
    };
    // Four followers on partition 0, three followed users on each of partitions 1, 2 and 3.
    const followers = onPartition("f", 0, 4);
    const targets = [1, 2, 3].flatMap((p) => onPartition(`t${p}-`, p, 3));
    let n = 0;
    const ev = (p: IEvent): IEvent => ({ eventId: `${prefix}-${n++}`, timestampMs: T0 + n * 1000, ...p });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: P });
    // Target j is followed by follower j % 4, and the even ones by follower (j + 1) % 4 too; follower 0 shares with targets 0 and 4.
    const expectFollowers = targets.map((_, j) => (j % 2 === 0 ? 2 : 1));
    const expectShares: number[] = targets.map((_, j) => (j === 0 || j === 4 ? 1 : 0));
    const burst: IEvent[] = [];
    targets.forEach((t, j) => {
      burst.push(ev({ userId: followers[j % 4]!, type: EventType.FOLLOW, targetUserId: t }));
      if (j % 2 === 0) burst.push(ev({ userId: followers[(j + 1) % 4]!, type: EventType.FOLLOW, targetUserId: t }));
    });
    burst.push(ev({ userId: followers[0]!, type: EventType.SHARE, itemId: "k", targetUserId: targets[0]! }), ev({ userId: followers[0]!, type: EventType.SHARE, itemId: "k", targetUserId: targets[4]! }));
    const expectFollowing = followers.map((f) => burst.filter((e) => e.userId === f && e.type === EventType.FOLLOW).length);

    // Every SOCIAL_NOTICE batch message that reaches the bus, whoever publishes it.
    const seen: { subject: string; data: Uint8Array; event: ReturnType<typeof pb.Event.decode> }[] = [];
    fx.nc.subscribe(s.eventsWildcard, { callback: (_, m) => {
      const e = pb.Event.decode(m.data);
      if (e.type === EventType.SOCIAL_NOTICE && e.socialNotices.length > 0) seen.push({ subject: m.subject, data: m.data, event: e });
    } });
    await fx.nc.flush();

    // An engine that SIGKILLs itself after 9 acknowledged batches, before the next acknowledgement. The 9: one view of each
    // followed user (a category to answer with), one at a time. The 10th: the follows' batch commits, its notices are in the
    // outbox, and the process dies before they can be confirmed published.
    const child = spawnEngine(["--nats", fx.nats.url, "--embedded-nats", "never", "--data-dir", dataDir, "--prefix", prefix,
      "--partitions", String(P), "--workers", "2", "--http-port", "-1", "--log-level", "warn",
      "--lstm", "off", "--churn", "off", "--propensity", "off", "--deepfm", "off", "--sentiment", "off", "--no-model-registry", "--fault-kill-before-ack", String(targets.length)]);
    children.push(child);
    await waitForEngine(client, child);
    for (const [k, t] of targets.entries()) {
      await client.publish(ev({ userId: t, type: EventType.VIEW, itemId: "i", categoryId: `c${k}` }));
      await waitFor(async () => (await client.getProfile(t).catch(() => undefined))?.eventsApplied === 1, { message: "a view not applied" });
    }
    await client.publishMany(burst);
    // Dies by its own hook; should it not, by ours (and the test fails below).
    const timer = setTimeout(() => child.proc.kill("SIGTERM"), 60_000);
    const exit = await child.exited;
    clearTimeout(timer);
    expect(exit.signal, child.output()).toBe("SIGKILL");
    // The notices were committed with their batch and never confirmed published: they are still in the outbox.
    expect(scanLmdb(dataDir, [`${prefix}:n:`], ["audiences"])[`${prefix}:n:`]).toBeGreaterThan(0);

    // A clean engine: the outbox is republished at start, the follows' batch is delivered again and skipped.
    await fx.startEngine({ subjectPrefix: prefix, partitions: P, workers: 2, dataDir, ...models });
    const settled = async () => {
      const ts = await Promise.all(targets.map((t) => client.getProfile(t)));
      const fs = await Promise.all(followers.map((f) => client.getProfile(f)));
      return ts.every((p, j) => p.social?.followers === expectFollowers[j] && (p.social?.sharesReceived ?? 0) === expectShares[j]) &&
        fs.every((p, i) => p.social?.following === expectFollowing[i] && p.social?.friendsSampled === expectFollowing[i]);
    };
    await waitFor(settled, { timeoutMs: 60_000, message: "the notices did not all arrive" });
    // One message per recipients' partition, several notices in each, to users of 3 partitions.
    expect(seen.some((m) => m.event.socialNotices.length >= 2)).toBe(true);
    expect(new Set(seen.filter((m) => m.event.socialNotices.some((x) => x.kind === pb.SocialNotice.Kind.FOLLOWED)).map((m) => m.subject)).size).toBe(3);

    // Republished by hand, as the outbox would after another crash: JetStream drops every copy by its message id.
    // (A copy of the list: the subscription sees these publishes too.)
    for (const m of [...seen]) {
      const ack = await fx.nc.jetstream().publish(m.subject, m.data, { msgID: m.event.eventId });
      expect(ack.duplicate).toBe(true);
    }
    // A marker on partition 0 and then partition 1 (a share with target 0): once it arrived, nothing else moved.
    await client.publish(ev({ userId: followers[0]!, type: EventType.SHARE, itemId: "k2", targetUserId: targets[0]! }));
    await waitFor(async () => (await client.getProfile(targets[0]!)).social?.sharesReceived === 2, { message: "marker share not received" });
    expectShares[0] = 2;
    expect(await settled()).toBe(true);
  });
});
