/**
 * The merge rules of src/actors/identity-merge.ts, field by field (README
 * "Identity"), on states built by the profile's own applyEvent: for the
 * additive and time-ordered fields, merging the states of two ids equals the
 * state of one id that did all the events; sessions, the LSTM state, aliases
 * and merge ids follow their own documented rules.
 */
import { describe, expect, it } from "vitest";
import { observeAudienceEvent } from "../src/actors/audience-state.js";
import { mergeStates } from "../src/actors/identity-merge.js";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { riskRecord, type RiskState } from "../src/actors/risk.js";
import { applyEvent, newUserState, profileView, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import { EventType } from "../src/wire/proto.js";

const o = compileProfileOptions({});
const T0 = Date.UTC(2024, 4, 1);
const DAY = 86_400_000;

function ev(t: number, type: EventType, item: string, cat: string, price = 0): ProfileEvent {
  return { type, timestampMs: t, itemId: item, categoryId: cat, brand: `B-${cat}`, price, quantity: 1, currency: price > 0 ? "GBP" : "", sessionId: "", orderId: price > 0 ? `o-${t}` : "" };
}

function stateOf(events: ProfileEvent[]): UserState {
  const s = newUserState();
  for (const e of events) {
    applyEvent(s, e, o);
    observeAudienceEvent(s, e, 0);
  }
  return s;
}

describe("identity merge rules", () => {
  // Two devices, days apart (each its own sessions), 4 and 5 events: every event is in its owner's timeline.
  const a = [ev(T0, EventType.VIEW, "x1", "c1"), ev(T0 + 60_000, EventType.ADD_TO_CART, "x1", "c1"), ev(T0 + 2 * DAY, EventType.PURCHASE, "x2", "c2", 30), ev(T0 + 9 * DAY, EventType.VIEW, "x3", "c3")];
  const b = [ev(T0 + DAY, EventType.VIEW, "y1", "c1"), ev(T0 + 3 * DAY, EventType.PURCHASE, "x1", "c1", 80), ev(T0 + 5 * DAY, EventType.VIEW, "y2", "c4"),
    ev(T0 + 5 * DAY + 60_000, EventType.VIEW, "x2", "c2"), ev(T0 + 20 * DAY, EventType.VIEW, "y3", "c1")];

  it("merge - counts, money, affinities, recent items, timeline, day buckets equal one id's state over all the events", () => {
    const merged = stateOf(b);
    mergeStates(merged, stateOf(a), o);
    const one = stateOf([...a, ...b].sort((x, y) => x.timestampMs - y.timestampMs));
    const asOf = T0 + 30 * DAY;
    const m = profileView("u", merged, asOf, o);
    const r = profileView("u", one, asOf, o);
    expect(m.counts).toEqual(r.counts);
    expect(m.money).toEqual(r.money);
    expect(m.rfm).toEqual(r.rfm);
    expect(m.recentItems).toEqual(r.recentItems);
    expect(m.recentEvents).toEqual(r.recentEvents);
    expect(merged.bought).toEqual(one.bought);
    expect([m.firstSeenMs, m.lastSeenMs, m.eventsApplied]).toEqual([r.firstSeenMs, r.lastSeenMs, r.eventsApplied]);
    for (const dim of ["categories", "brands", "priceBands"] as const) {
      expect(m[dim].map((x) => x.key)).toEqual(r[dim].map((x) => x.key));
      m[dim].forEach((x, i) => expect(x.score).toBeCloseTo(r[dim][i]!.score, 10));
    }
    expect(merged.aud!.d).toEqual(one.aud!.d);
    expect(merged.aud!.cart).toBe(one.aud!.cart);
  });

  it("merge - review sentiment (overall, per category and brand, aspects) equals one id's over all the reviews; risk counters add, devices stay the primary's", () => {
    const review = (t: number, cat: string, rating: number, sessionId: string, aspects: string[] = []): ProfileEvent => ({
      ...ev(t, EventType.REVIEW, `r-${t}`, cat), rating, sessionId, ...(aspects.length > 0 ? { review: { sentiment: (rating - 3) / 2, aspects } } : {}),
    });
    const ra = [review(T0, "c1", 5, "s-a", ["strings"]), review(T0 + 4 * DAY, "c2", 1, "s-a"), review(T0 + 9 * DAY, "c1", 4, "s-a", ["pegs", "strings"])];
    const rb = [review(T0 + 2 * DAY, "c1", 2, "s-b", ["case"]), review(T0 + 30 * DAY, "c3", 5, "s-b")];
    const merged = stateOf(rb);
    mergeStates(merged, stateOf(ra), o);
    const one = stateOf([...ra, ...rb].sort((x, y) => x.timestampMs - y.timestampMs));
    const asOf = T0 + 40 * DAY;
    const m = profileView("u", merged, asOf, o).reviews!;
    const r = profileView("u", one, asOf, o).reviews!;
    expect([m.count, m.fromText]).toEqual([r.count, r.fromText]);
    expect(m.count).toBe(5);
    expect(m.sentiment).toBeCloseTo(r.sentiment, 10);
    for (const dim of ["categories", "brands", "aspects"] as const) {
      expect(m[dim].map((x) => x.key).sort()).toEqual(r[dim].map((x) => x.key).sort());
    }
    for (const x of m.categories) expect(x.sentiment).toBeCloseTo(r.categories.find((y) => y.key === x.key)!.sentiment, 10);
    for (const x of m.aspects) expect(x.score).toBeCloseTo(r.aspects.find((y) => y.key === x.key)!.score, 10);
    // Risk: the primary keeps its own session ids only; counters are the sum of both.
    const rk = riskRecord(stateOf(rb).rk!);
    expect(riskRecord(merged.rk!).ids).toEqual(rk.ids);
    expect(riskRecord(merged.rk!).f).toBe(riskRecord(stateOf(ra).rk!).f + rk.f);
    // A hand-over of an earlier version carries the risk state as a record: the same merge.
    const fromRecord = stateOf(rb);
    mergeStates(fromRecord, { ...stateOf(ra), rk: riskRecord(stateOf(ra).rk!) as unknown as RiskState }, o);
    expect(fromRecord.rk).toEqual(merged.rk);
  });

  it("merge - sessions add; the later current session stays current; the LSTM state is dropped; aliases and merge ids are the union", () => {
    const sa = stateOf(a);
    const sb = stateOf(b);
    sb.lstm = new Uint8Array(8);
    sb.lstmV = "v1";
    sa.al = [["old", 3]];
    sa.mg = ["m-old"];
    const merged = structuredClone(sb);
    mergeStates(merged, sa, o);
    expect(merged.sCount).toBe(sa.sCount + sb.sCount);
    // B's last event is the later: B's current session stays current, A's counts as finished.
    expect([merged.sStartMs, merged.sEvents]).toEqual([sb.sStartMs, sb.sEvents]);
    expect(merged.sEventsDone + merged.sEvents).toBe(sa.sEventsDone + sa.sEvents + sb.sEventsDone + sb.sEvents);
    expect(merged.lstm).toBeUndefined();
    expect(merged.lstmV).toBeUndefined();
    expect(merged.al).toEqual([["old", 3]]);
    expect(merged.mg).toEqual(["m-old"]);
    // The merged audience state is evaluated in whole next time.
    expect(merged.aud!.w).toBeUndefined();
  });

  it("merge - an empty secondary changes nothing; merged into an empty primary, a state gives the secondary's profile", () => {
    const sb = stateOf(b);
    const merged = structuredClone(sb);
    mergeStates(merged, newUserState(), o);
    expect(profileView("u", merged, T0 + 30 * DAY, o)).toEqual(profileView("u", sb, T0 + 30 * DAY, o));
    const into = newUserState();
    mergeStates(into, structuredClone(sb), o);
    expect(profileView("u", into, T0 + 30 * DAY, o)).toEqual(profileView("u", sb, T0 + 30 * DAY, o));
  });
});
