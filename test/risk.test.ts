/**
 * Risk signals: each detector on a hand-made sequence (flagged, and a
 * near-miss that is not), the planting code's labels, and the engine end to
 * end (the profile reply carries the scores with reasons; the metric counts
 * a newly flagged user once).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { open, type DatabaseOptions } from "lmdb";
import { describe, expect, it } from "vitest";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { packRisk, RISK, riskRecord, riskView } from "../src/actors/risk.js";
import { applyEvent, newUserState, profileView, type ProfileEvent } from "../src/actors/user-profile.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { plantBots, plantRefundAbusers, plantSharedAccounts, scoreReplay } from "../src/eval/risk-eval.js";
import { decodeProfile, encodeProfile } from "../src/store/profile-layout.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { T0, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { waitFor } from "./helpers/nats.js";

const o = compileProfileOptions();
const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

function ev(p: Partial<ProfileEvent> & { type: EventType; timestampMs: number }): ProfileEvent & { userId: string } {
  return { userId: "u", itemId: "i", categoryId: "", brand: "", price: 0, quantity: 0, currency: "", sessionId: "", orderId: "", ...p };
}

function run(events: ProfileEvent[]) {
  const s = newUserState();
  for (const e of events) applyEvent(s, e, o);
  return profileView("u", s, events.at(-1)!.timestampMs, o).risk!;
}

describe("risk - detectors on hand-made sequences", () => {
  it("risk - velocity: 5 views a second for 10 s is flagged; a view every 2 s all day is not; a user's own fast habit raises their bar", () => {
    const bot = Array.from({ length: 50 }, (_, k) => ev({ type: EventType.VIEW, timestampMs: T0 + k * 200 }));
    const r = run(bot);
    expect(r.velocity.flagged).toBe(true);
    expect(r.velocity.score).toBe(1);
    expect(r.velocity.reason).toMatch(/fast actions/);
    const human = Array.from({ length: 2000 }, (_, k) => ev({ type: EventType.VIEW, timestampMs: T0 + k * 2000 }));
    expect(run(human).velocity).toMatchObject({ score: 0, flagged: false });
    // Order lines share a time: 60 purchase lines in one second are not velocity.
    const order = Array.from({ length: 60 }, (_, k) => ev({ type: EventType.PURCHASE, timestampMs: T0 + 1000, itemId: `i${k}`, orderId: "o1", price: 1 }));
    expect(run(order).velocity.score).toBe(0);
    // Same burst twice, a day apart: the second session is compared with the first (2x its peak), so it adds no fast actions.
    const twice = [...bot, ...bot.map((e) => ({ ...e, timestampMs: e.timestampMs + 24 * HOUR }))];
    const s = newUserState();
    for (const e of twice) applyEvent(s, e, o);
    const first = newUserState();
    for (const e of bot) applyEvent(first, e, o);
    expect(riskRecord(s.rk!).f).toBe(riskRecord(first.rk!).f);
    expect(riskRecord(s.rk!).pp).toBeCloseTo(riskRecord(first.rk!).sp, 9);
  });

  it("risk - refund abuse: most lines refunded within hours is flagged; old cancellations alone, one cancelled order or few refunds are not", () => {
    const buys = Array.from({ length: 10 }, (_, k) => ev({ type: EventType.PURCHASE, timestampMs: T0 + k * 24 * HOUR, itemId: `i${k}`, orderId: `o${k}`, price: 10 }));
    const quick = buys.slice(0, 6).map((b) => ev({ type: EventType.REFUND, timestampMs: b.timestampMs + 3 * HOUR, itemId: b.itemId, price: 10 }));
    const all = [...buys, ...quick].sort((a, b) => a.timestampMs - b.timestampMs);
    const r = run(all);
    expect(r.refundAbuse.flagged).toBe(true);
    expect(r.refundAbuse.reason).toMatch(/6 refund lines \/ 10 purchase lines = 0\.6/);
    // The same refunds 10 days after each purchase: many, but not soon after buying.
    const late = buys.slice(0, 6).map((b) => ev({ type: EventType.REFUND, timestampMs: b.timestampMs + 10 * 24 * HOUR + HOUR, itemId: b.itemId, price: 10 }));
    const rl = run([...buys, ...late].sort((a, b) => a.timestampMs - b.timestampMs));
    expect(rl.refundAbuse.flagged).toBe(false);
    // One order of 8 lines cancelled within hours of placing it: many refunds, quick, but in one order (not a habit).
    const big = Array.from({ length: 8 }, (_, k) => ev({ type: EventType.PURCHASE, timestampMs: T0, itemId: `b${k}`, orderId: "big", price: 10 }));
    const cancel = big.slice(0, 6).map((b) => ev({ type: EventType.REFUND, timestampMs: T0 + 2 * HOUR, itemId: b.itemId, orderId: "Cbig", price: 10 }));
    const one = run([...big, ...cancel]);
    expect(one.refundAbuse.flagged).toBe(false);
    expect(one.refundAbuse.reason).toMatch(/in 1 of 1 orders/);
    // The same order cancelled twice, as two separate refund orders: a habit of 2 of 2 orders.
    const again = big.map((b) => ({ ...b, timestampMs: T0 + 24 * HOUR, orderId: "big2" }));
    const cancel2 = again.slice(0, 6).map((b) => ev({ type: EventType.REFUND, timestampMs: T0 + 26 * HOUR, itemId: b.itemId, orderId: "Cbig2", price: 10 }));
    expect(run([...big, ...cancel, ...again, ...cancel2]).refundAbuse.flagged).toBe(true);
    // Quick, but only 3 refunds (below refundMinLines).
    expect(RISK.refundMinLines).toBe(4);
    expect(run([...buys, ...quick.slice(0, 3)].sort((a, b) => a.timestampMs - b.timestampMs)).refundAbuse.score).toBe(0);
  });

  it("risk - account sharing: three sessions used in turn at once is flagged; three sessions one after another is not; devices count too", () => {
    const turns = Array.from({ length: 30 }, (_, k) => ev({ type: EventType.VIEW, timestampMs: T0 + k * MIN, sessionId: `s${k % 3}` }));
    const r = run(turns);
    expect(r.accountSharing.flagged).toBe(true);
    expect(r.accountSharing.reason).toMatch(/peak 3 session or device ids/);
    const sequential = Array.from({ length: 30 }, (_, k) => ev({ type: EventType.VIEW, timestampMs: T0 + k * MIN, sessionId: `s${Math.floor(k / 10)}` }));
    expect(run(sequential).accountSharing.flagged).toBe(false);
    const devices = Array.from({ length: 30 }, (_, k) => ev({ type: EventType.VIEW, timestampMs: T0 + k * MIN, attributes: { device_id: `d${k % 4}` } }));
    expect(run(devices).accountSharing.flagged).toBe(true);
    // Three devices used in turn, but each 2 hours apart (never active at once).
    const apart = Array.from({ length: 30 }, (_, k) => ev({ type: EventType.VIEW, timestampMs: T0 + k * 2 * HOUR, attributes: { device_id: `d${k % 3}` } }));
    expect(run(apart).accountSharing.score).toBe(0);
  });

  it("risk - ids past the session gap before the newest are dropped: a new session keeps one id, and sharing reads the same", () => {
    const s = newUserState();
    const evs = [
      ev({ type: EventType.VIEW, timestampMs: T0, sessionId: "s1", attributes: { device_id: "d1" } }),
      ev({ type: EventType.VIEW, timestampMs: T0 + 700, sessionId: "s2", attributes: { device_id: "d2" } }),
      ev({ type: EventType.VIEW, timestampMs: T0 + 1500, sessionId: "s1", attributes: { device_id: "d1" } }),
    ];
    for (const e of evs) applyEvent(s, e, o);
    expect(riskRecord(s.rk!).ids.length).toBe(4);
    // Two hours later: the four ids are past the gap (30 min) and dropped; the peak of 2 at once stays.
    applyEvent(s, ev({ type: EventType.VIEW, timestampMs: T0 + 2 * HOUR, sessionId: "s3" }), o);
    const r = riskRecord(s.rk!);
    expect(r.ids.map(([, t]) => t)).toEqual([T0 + 2 * HOUR]);
    expect(r.cp).toBe(2);
    // An id within the gap of the newest stays, whatever its kind.
    applyEvent(s, ev({ type: EventType.VIEW, timestampMs: T0 + 2 * HOUR + 20 * MIN, sessionId: "s4", attributes: { device_id: "d3" } }), o);
    expect(riskRecord(s.rk!).ids.length).toBe(3);
    // Sessions one after another, each past the gap: one id kept at a time.
    const apart = Array.from({ length: 12 }, (_, k) => ev({ type: EventType.VIEW, timestampMs: T0 + k * HOUR, sessionId: `a${k}` }));
    const t = newUserState();
    for (const e of apart) applyEvent(t, e, o);
    expect(riskRecord(t.rk!).ids.length).toBe(1);
  });

  it("risk - an empty state scores 0 with reasons", () => {
    const v = riskView(undefined, { refunds: 0, purchases: 0, orders: 0 });
    expect([v.velocity.score, v.refundAbuse.score, v.accountSharing.score]).toEqual([0, 0, 0]);
    expect(v.velocity.reason).not.toBe("");
  });
});

describe("risk - stored form", () => {
  it("risk - the store writes the risk state as one flat array that reads back equal, and a profile stored with the record before still loads and scores the same", async () => {
    // A state with every part used: a burst over two sessions and a device, quick refunds of one order.
    const s = newUserState();
    const evs: ProfileEvent[] = [];
    for (let k = 0; k < 30; k++) evs.push(ev({ type: EventType.VIEW, timestampMs: T0 + k * 150, sessionId: `s${k % 2}`, attributes: { device_id: k % 3 === 0 ? "d1" : "d2" } }));
    for (let k = 0; k < 5; k++) {
      evs.push(ev({ type: EventType.PURCHASE, timestampMs: T0 + 5000 + k * HOUR, itemId: `i${k}`, orderId: `o${k}`, price: 10 }));
      if (k < 4) evs.push(ev({ type: EventType.REFUND, timestampMs: T0 + 5000 + k * HOUR + MIN, itemId: `i${k}`, orderId: `o${k}`, price: 10 }));
    }
    for (const e of evs) applyEvent(s, e, o);
    const r = riskRecord(s.rk!);
    expect(r.ids.length).toBeGreaterThan(2);
    expect(r.qo).toBeGreaterThan(0);
    const view = profileView("u", s, T0 + DAY, o).risk;
    const dir = mkdtempSync(join(tmpdir(), "portrait-risk-store-"));
    try {
      const store = new ProfileStore({ dataDir: dir });
      await store.commitBatch(0, 1, [["new", s]]);
      expect(store.getState("new")!.rk).toEqual(s.rk);
      await store.close();
      const env = open({ path: join(dir, "lmdb"), compression: false });
      const profiles = env.openDB({ name: "profiles", encoding: "msgpack", sharedStructuresKey: Symbol.for("structures"), useRecords: (x: object) => Object.getPrototypeOf(x) !== null, mapsAsObjects: true } as DatabaseOptions & { name: string });
      // Stored in the profile layout (src/store/profile-layout.ts), whose risk part has a compact form of its own.
      const bytes = profiles.get("new") as Uint8Array;
      expect(bytes).toBeInstanceOf(Uint8Array);
      expect(Buffer.from(bytes).equals(Buffer.from(encodeProfile(s)))).toBe(true);
      expect(decodeProfile(bytes).rk).toEqual(s.rk);
      // The flat form stored before (layout version 1, msgpack profiles): the ids' times relative to bt.
      const stored = packRisk(s.rk!).slice();
      expect(stored.slice(0, 11)).toEqual([r.b, r.bt, r.sp, r.pp, r.f, r.pk, r.q, r.qo, r.qk, r.cp, r.rt]);
      expect(stored.slice(11)).toEqual(r.ids.flatMap(([id, t]) => [id, r.bt - t]));
      // As written before this form: the record (and one stored before qo and qk existed).
      await profiles.put("old", { ...s, rk: r });
      const { qo: _qo, qk: _qk, ...record } = r;
      await profiles.put("older", { ...s, rk: record });
      await env.close();
      const again = new ProfileStore({ dataDir: dir });
      const old = again.getState("old")!;
      expect(profileView("u", old, T0 + DAY, o).risk).toEqual(view);
      // Its next event and write: the flat form from then on, the same as the state that never left memory.
      const next = ev({ type: EventType.VIEW, timestampMs: T0 + 2 * DAY, sessionId: "s9" });
      applyEvent(old, next, o);
      applyEvent(s, next, o);
      await again.commitBatch(0, 2, [["old", old]]);
      expect(again.getState("old")!.rk).toEqual(s.rk);
      // Absent qo and qk meant 0 and -1 (none).
      expect(riskRecord(again.getState("older")!.rk!)).toEqual({ ...record, qo: 0, qk: -1 });
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("risk - planting", () => {
  it("risk - planted users are labelled and scored: bots, refund abusers, shared accounts on a small synthetic log", () => {
    const base: (ProfileEvent & { userId: string })[] = [];
    for (let u = 0; u < 30; u++) {
      for (let k = 0; k < 6; k++) {
        const t = T0 + u * 7 * MIN + k * 50 * MIN;
        base.push({ ...ev({ type: EventType.VIEW, timestampMs: t, itemId: `i${k}`, sessionId: `u${u}-s` }), userId: `u${u}` });
        base.push({ ...ev({ type: EventType.PURCHASE, timestampMs: t + MIN, itemId: `i${k}`, orderId: `u${u}-o${k}`, price: 5, sessionId: `u${u}-s` }), userId: `u${u}` });
      }
    }
    const bots = plantBots(base, 5, 1);
    expect(bots.planted.size).toBe(5);
    expect(scoreReplay(bots.events, bots.planted, "velocity", "synthetic").truePositives).toBeGreaterThan(0);
    const refunds = plantRefundAbusers(base, 5, 1);
    expect(refunds.events.filter((e) => e.type === EventType.REFUND).every((e) => refunds.planted.has(e.userId))).toBe(true);
    const r = scoreReplay(refunds.events, refunds.planted, "refundAbuse", "synthetic");
    expect(r.precision).toBe(1);
    const shared = plantSharedAccounts(base, 3, 1);
    expect(shared.planted.size).toBeGreaterThan(0);
    // Merged users leave the log under their own ids.
    expect(new Set(shared.events.map((e) => e.userId)).size).toBeLessThan(30);
  });
});

describe("risk - engine", () => {
  const fx = useEngineFixture();

  it("risk - a bot burst comes back flagged with its reason, and portrait_risk_flags_total counts the user once", async () => {
    const prefix = uniquePrefix("risk");
    const engine = await fx.startEngine({ subjectPrefix: prefix, lstmModel: "off", churnModel: "off", propensityModel: "off", deepfmModel: "off", sentimentModel: "off", maxBatchMessages: 7 });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const u = `${prefix}-bot`;
    const events: IEvent[] = Array.from({ length: 60 }, (_, k) => ({ eventId: `${prefix}-${k}`, userId: u, type: EventType.VIEW, timestampMs: T0 + k * 200, itemId: `i${k}` }));
    await client.publishMany(events);
    await waitFor(async () => (await client.getProfile(u).catch(() => undefined))?.eventsApplied === 60, { message: "burst not applied" });
    const p = await client.getProfile(u);
    expect(p.risk!.velocity.flagged).toBe(true);
    expect(p.risk!.velocity.reason).toMatch(/fast actions/);
    expect(p.risk!.refundAbuse.flagged).toBe(false);
    // The counter moves when a batch settles (after its commit), which can be after its profile is visible: wait until every batch settled.
    await waitFor(async () => (await engine.metrics.total(engine.metrics.eventsApplied)) === 60, { message: "batches not settled" });
    const m = engine.metrics.registry.getSingleMetric("portrait_risk_flags_total")!;
    const values = (await m.get()).values;
    expect(values.filter((v) => v.labels.signal === "velocity").reduce((a, v) => a + v.value, 0)).toBe(1);
    expect(values.filter((v) => v.labels.signal !== "velocity").reduce((a, v) => a + v.value, 0)).toBe(0);
  });
});
