/**
 * Evaluating only the audiences an event can change (evaluateAudiences with
 * the event types) gives the same transitions as evaluating every audience
 * each time: two copies of each user, one evaluated in whole, one with the
 * types, on random events and with their own timers (pure: no broker, no store).
 */
import { describe, expect, it } from "vitest";
import { AudienceError, compileAudiences, eventBit, parseDefinition, type AudienceDefinition } from "../src/actors/audience-rules.js";
import { CohortSketches, evaluateAudiences, newAudienceState, observeAudienceEvent, DAY_MS, type Transition } from "../src/actors/audience-state.js";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { applyEvent, newUserState, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import { EventType, pb } from "../src/wire/proto.js";
import { encodeTransition } from "../src/shard/audience-runner.js";
import { membershipBytes } from "../src/store/profile-store.js";
import { pack, unpack } from "msgpackr";

const DEFS: AudienceDefinition[] = [
  { id: "buyers-30d", rule: { field: "purchases.30d", op: ">=", value: 1 } },
  { id: "big-90d", rule: { field: "revenue.90d", op: ">=", value: 300 } },
  { id: "active-7d", rule: { field: "events.7d", op: ">=", value: 3 } },
  { id: "carts-1d", rule: { field: "carts.1d", op: ">=", value: 2 } },
  { id: "lapsed-10", rule: { all: [{ field: "orders", op: ">=", value: 1 }, { field: "daysSincePurchase", op: ">=", value: 10 }] } },
  { id: "dormant-5", rule: { field: "daysSinceSeen", op: ">=", value: 5 } },
  { id: "champ", rule: { all: [{ field: "rfm.r", op: ">=", value: 4 }, { field: "rfm.f", op: ">=", value: 2 }, { field: "rfm.m", op: ">=", value: 2 }] } },
  { id: "net-100", rule: { field: "net", op: ">", value: 100 } },
  { id: "abandon", rule: { cartAbandoned: { afterMinutes: 60 } } },
  { id: "lover-c1", rule: { affinity: { dimension: "category", key: "c1", topN: 1 } } },
  { id: "interest-c2", rule: { affinity: { dimension: "category", key: "c2", minScore: 3 } } },
  { id: "browsing-c3", rule: { session: { category: "c3", topN: 1 } } },
  { id: "buyer-not-lover", rule: { all: [{ inAudience: "buyers-30d" }, { not: { inAudience: "lover-c1" } }] } },
  { id: "never-bought", rule: { not: { field: "orders", op: ">=", value: 1 } } },
];

describe("audience evaluation by event type", () => {
  it("skipping the audiences an event cannot change gives the transitions of evaluating all", () => {
    const set = compileAudiences(DEFS);
    const env = { profile: PROFILE_DEFAULTS };
    let seed = 11;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const types = [EventType.VIEW, EventType.VIEW, EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.REFUND, EventType.CLICK];
    let skipped = 0;
    let compared = 0;
    for (let user = 0; user < 120; user++) {
      const whole: UserState = newUserState();
      const part: UserState = newUserState();
      const outWhole: Transition[] = [];
      const outPart: Transition[] = [];
      const id = `u${user}`;
      // Time-driven evaluations up to `t`, at each due (as the shard's timers do).
      const timers = (u: UserState, out: Transition[], t: number) => {
        while (u.aud !== undefined && u.aud.due > 0 && u.aud.due <= t) out.push(...evaluateAudiences(id, u, set, u.aud.due, env, "time", 0));
      };
      let t = Date.UTC(2026, 0, 1) + Math.floor(rnd() * DAY_MS);
      for (let k = 0; k < 60; k++) {
        const gap = rnd();
        t += gap < 0.5 ? Math.floor(rnd() * 20 * 60_000) : gap < 0.85 ? Math.floor(rnd() * 6 * 3_600_000) : Math.floor(rnd() * 12 * DAY_MS);
        const type = types[Math.floor(rnd() * types.length)]!;
        const e: ProfileEvent = {
          type, timestampMs: t, itemId: `i${Math.floor(rnd() * 50)}`, categoryId: `c${Math.floor(rnd() * 5)}`, brand: "", price: 5 + Math.floor(rnd() * 100),
          quantity: 1, currency: "", sessionId: "", orderId: type === EventType.PURCHASE ? `o${user}-${k}` : "",
        };
        for (const [u, out, events] of [[whole, outWhole, undefined], [part, outPart, eventBit(type)]] as const) {
          timers(u, out, t);
          applyEvent(u, e, PROFILE_DEFAULTS);
          observeAudienceEvent(u, e, 0);
          out.push(...evaluateAudiences(id, u, set, t, env, "event", 0, events));
        }
        if (type !== EventType.PURCHASE && type !== EventType.ADD_TO_CART) skipped++;
        const members = (u: UserState) => Object.entries(u.aud!.m).filter(([, m]) => m[0] > 0).map(([a, m]) => `${a}@${m[0]}`).sort();
        expect(members(part)).toEqual(members(whole));
        compared++;
      }
      const end = t + 120 * DAY_MS;
      timers(whole, outWhole, end);
      timers(part, outPart, end);
      const view = (ts: Transition[]) => ts.map((x) => `${x.audience}:${x.n}:${x.entered ? "in" : "out"}@${x.atMs}:${x.reason}`);
      expect(view(outPart)).toEqual(view(outWhole));
    }
    expect(compared).toBe(120 * 60);
    expect(skipped).toBeGreaterThan(600);
  });

  it("event masks: purchase-only rules are not touched by views; references carry their masks", () => {
    const set = compileAudiences(DEFS);
    const mask = (id: string) => set.masks[set.defs.findIndex((d) => d.id === id)]!;
    expect(mask("buyers-30d") & eventBit(EventType.VIEW)).toBe(0);
    expect(mask("buyers-30d") & eventBit(EventType.PURCHASE)).not.toBe(0);
    expect(mask("net-100") & eventBit(EventType.REFUND)).not.toBe(0);
    expect(mask("abandon") & eventBit(EventType.ADD_TO_CART)).not.toBe(0);
    expect(mask("abandon") & eventBit(EventType.VIEW)).toBe(0);
    expect(mask("active-7d") & eventBit(EventType.VIEW)).not.toBe(0);
    // buyer-not-lover reads an affinity through its reference: every event type.
    expect(mask("buyer-not-lover") & eventBit(EventType.VIEW)).not.toBe(0);
  });

  it("percentile cohorts: the top 10% of churn risk, boundaries following the predictions as they move", () => {
    for (const bad of [{ field: "prediction.churnRisk", top: 0 }, { field: "prediction.churnRisk", top: 100 }, { field: "orders", top: 10 }]) {
      expect(() => parseDefinition({ id: "p", rule: { percentile: bad } })).toThrow(AudienceError);
    }
    const set = compileAudiences([parseDefinition({ id: "top-churn", rule: { percentile: { field: "prediction.churnRisk", top: 10 } } })]);
    const cohorts = new CohortSketches();
    let seed = 5;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const users = Array.from({ length: 3000 }, () => ({ u: newUserState(), risk: rnd() ** 2 }));
    const t0 = Date.UTC(2026, 0, 1);
    const passOver = (t: number) => {
      for (const [i, x] of users.entries()) {
        evaluateAudiences(`u${i}`, x.u, set, t, { profile: PROFILE_DEFAULTS, cohorts, predict: () => x.risk }, "time", 0);
      }
      const member = (x: (typeof users)[number]) => (x.u.aud!.m["top-churn"]?.[0] ?? 0) > 0;
      const inside = users.filter(member);
      const outside = users.filter((x) => !member(x));
      return { share: inside.length / users.length, minIn: Math.min(...inside.map((x) => x.risk)), maxOut: Math.max(...outside.map((x) => x.risk)) };
    };
    passOver(t0); // the first pass builds the sketch while it evaluates
    let r = passOver(t0 + 1000);
    expect(r.share).toBeGreaterThan(0.095);
    expect(r.share).toBeLessThan(0.11);
    expect(r.minIn).toBeGreaterThanOrEqual(r.maxOut - 1 / 1000); // the cohort is the top of the distribution (to one bin)
    // The predictions shift (every user's risk moves towards 1 - risk): the boundary follows, the share stays.
    for (const x of users) x.risk = 1 - x.risk;
    passOver(t0 + 2000);
    r = passOver(t0 + 3000);
    expect(r.share).toBeGreaterThan(0.095);
    expect(r.share).toBeLessThan(0.11);
    expect(r.minIn).toBeGreaterThanOrEqual(r.maxOut - 1 / 1000);
    // Users are counted once however often they are evaluated, and a dropped user is no longer counted.
    expect(cohorts.counts.churnRisk.reduce((a, b) => a + b, 0)).toBe(3000);
    cohorts.drop(users[0]!.u.aud);
    expect(cohorts.counts.churnRisk.reduce((a, b) => a + b, 0)).toBe(2999);
  });

  it("short-term interest: the session's top category follows a change of interest inside the session within a few events", () => {
    const set = compileAudiences([
      { id: "now-c1", rule: { session: { category: "c1", topN: 1 } } },
      { id: "now-c2", rule: { session: { category: "c2", topN: 1 } } },
    ]);
    const u = newUserState();
    let t = Date.UTC(2026, 0, 1);
    const tops: string[] = [];
    for (const cat of ["c1", "c1", "c1", "c1", "c1", "c1", "c2", "c2", "c2", "c2"]) {
      t += 60_000; // one session: a minute apart
      const e: ProfileEvent = { type: EventType.VIEW, timestampMs: t, itemId: "i", categoryId: cat, brand: "", price: 1, quantity: 1, currency: "", sessionId: "", orderId: "" };
      applyEvent(u, e, PROFILE_DEFAULTS);
      observeAudienceEvent(u, e, 0);
      evaluateAudiences("u", u, set, t, { profile: PROFILE_DEFAULTS }, "event", 0);
      tops.push(Object.entries(u.aud!.m).filter(([, m]) => m[0] > 0).map(([id]) => id).join(","));
    }
    expect(u.sCount).toBe(1);
    // Six views of c1, then c2: plain counts would keep c1 on top until the seventh c2; decayed ones switch at the third.
    expect(tops).toEqual(["now-c1", "now-c1", "now-c1", "now-c1", "now-c1", "now-c1", "now-c1", "now-c1", "now-c2", "now-c2"]);
  });

  it("memberships records: the direct encoder writes msgpack that decodes to the record msgpackr packed", () => {
    let seed = 9;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const nums = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Date.UTC(2026, 0, 1) + 123, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), 0.5, -2.25, 2 ** 53 - 1];
    const pick = () => (rnd() < 0.5 ? nums[Math.floor(rnd() * nums.length)]! : Math.floor(rnd() * 2 ** (1 + Math.floor(rnd() * 50))));
    const ids = ["a", "category-lovers-c12", "x".repeat(64), "ü-客户", "y".repeat(40)];
    for (let k = 0; k < 300; k++) {
      const known = new Map<string, number>([["a", 1], ["category-lovers-c12", 200 + k], ["y".repeat(40), 70000]]);
      const numbers = { of: (id: string) => known.get(id) ?? id };
      const a = newAudienceState(0);
      a.due = k % 4 === 0 ? 0 : pick();
      if (k % 3 === 0) a.w = 1;
      if (k % 5 === 1) a.q = [Math.floor(rnd() * 1001), Math.floor(rnd() * 1001)];
      const entries = k % 7 === 0 ? 0 : k % 11 === 0 ? 20 : Math.floor(rnd() * 5);
      for (let i = 0; i < entries; i++) a.m[i < ids.length ? ids[i]! : `id-${i}`] = [pick(), pick(), rnd() < 0.5 ? 1 : 0];
      const want: (number | string)[] = [a.due, a.w ?? 0, a.q?.[0] ?? 0, a.q?.[1] ?? 0];
      for (const id in a.m) want.push(numbers.of(id), ...a.m[id]!);
      const got = membershipBytes(a, numbers);
      if (want.length === 4 && want[0] === 0 && want[2] === 0 && want[3] === 0) {
        expect(got).toBeUndefined();
        continue;
      }
      expect(unpack(got!)).toEqual(want);
      // The same bytes as msgpackr's own packing where it picks the same forms.
      if (want.every((x) => typeof x === "string" || (Number.isInteger(x) && Math.abs(x) < 2 ** 31))) expect(Buffer.from(got!).toString("hex")).toBe(Buffer.from(pack(want)).toString("hex"));
    }
  });

  it("transition messages: the direct encoder writes the bytes of the protobuf encoder", () => {
    let seed = 5;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const ids = ["a", "category-lovers-c12", "x".repeat(200), "ü-客户-🙂", "", "u".repeat(130)];
    for (let k = 0; k < 500; k++) {
      const t: Transition = {
        audience: ids[Math.floor(rnd() * ids.length)]!, user: `${ids[Math.floor(rnd() * ids.length)]}${k}`, n: k % 3 === 0 ? 1 + Math.floor(rnd() * 300) : Math.floor(rnd() * 2 ** 40),
        entered: rnd() < 0.5, atMs: k % 5 === 0 ? 0 : Date.UTC(2026, 0, 1) + Math.floor(rnd() * 1e10) * (k % 7 === 0 ? 1000 : 1), reason: ["event", "time", "backfill", "forgotten", ""][k % 5]!, holdout: rnd() < 0.3,
      };
      const want = pb.AudienceTransition.encode({ audienceId: t.audience, userId: t.user, transition: t.n, entered: t.entered, atMs: t.atMs, reason: t.reason, holdout: t.holdout }).finish();
      expect(Buffer.from(encodeTransition(t)).toString("hex")).toBe(Buffer.from(want).toString("hex"));
    }
  });
});
