import { describe, expect, it } from "vitest";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { applyEvent, newUserState, priceBand, profileView, type ProfileEvent } from "../src/actors/user-profile.js";
import { EventType } from "../src/wire/proto.js";

const MIN = 60_000;
const HOUR = 60 * MIN;
const t0 = Date.UTC(2024, 0, 1);
const o = compileProfileOptions({ halfLifeMs: HOUR, sessionGapMs: 30 * MIN });

function ev(p: Partial<ProfileEvent> & { type: EventType; timestampMs: number }): ProfileEvent {
  return { itemId: "", categoryId: "", brand: "", price: 0, quantity: 0, currency: "", sessionId: "", orderId: "", ...p };
}

/** Hand formula: the sum of weight x 2^(-(asOf - t) / half-life) over contributing events. */
const decayed = (asOf: number, parts: [number, number][]) => parts.reduce((s, [w, t]) => s + w * Math.pow(2, -(asOf - t) / HOUR), 0);

describe("profile - pure update", () => {
  it("profile - a scripted sequence gives the hand-computed profile", () => {
    const s = newUserState();
    const seq: ProfileEvent[] = [
      ev({ type: EventType.VIEW, timestampMs: t0, itemId: "A", categoryId: "C1", brand: "Acme", price: 12 }),
      ev({ type: EventType.ADD_TO_CART, timestampMs: t0 + 10 * MIN, itemId: "A", categoryId: "C1", brand: "Acme", price: 12, quantity: 2 }),
      ev({ type: EventType.PURCHASE, timestampMs: t0 + 20 * MIN, itemId: "A", categoryId: "C1", brand: "ACME", price: 12, quantity: 2, currency: "GBP", orderId: "O1" }),
      ev({ type: EventType.PURCHASE, timestampMs: t0 + 21 * MIN, itemId: "B", categoryId: "C2", brand: "Other", price: 60, currency: "GBP", orderId: "O1" }),
      ev({ type: EventType.REFUND, timestampMs: t0 + 2 * HOUR, itemId: "A", categoryId: "C1", price: 12, quantity: 1, currency: "GBP" }),
      ev({ type: EventType.VIEW, timestampMs: t0 + 2 * HOUR + 5 * MIN, itemId: "C", categoryId: "C3" }),
      ev({ type: EventType.SEARCH, timestampMs: t0 + 2 * HOUR + 6 * MIN }),
    ];
    for (const e of seq) applyEvent(s, e, o);
    const asOf = t0 + 3 * HOUR;
    const p = profileView("u1", s, asOf, o);

    expect(p.counts).toEqual({
      view: 2, click: 0, search: 1, add_to_cart: 1, remove_from_cart: 0, favorite: 0,
      purchase: 2, refund: 1, review: 0, rec_impression: 0, rec_click: 0,
    });
    expect(p.eventsApplied).toBe(7);
    expect(p.money).toEqual({ purchased: 84, refunded: 12, net: 72, currency: "GBP" });
    expect(p.rfm.frequency).toBe(1); // two lines of order O1
    expect(p.rfm.monetary).toBe(72);
    expect(p.rfm.lastPurchaseMs).toBe(t0 + 21 * MIN);
    expect(p.rfm.recencyDays).toBeCloseTo((180 - 21) / (24 * 60), 12);
    expect([p.rfm.rScore, p.rfm.fScore, p.rfm.mScore]).toEqual([5, 1, 2]);

    const c1 = decayed(asOf, [[1, t0], [3, t0 + 10 * MIN], [5, t0 + 20 * MIN]]);
    const c2 = decayed(asOf, [[5, t0 + 21 * MIN]]);
    const c3 = decayed(asOf, [[1, t0 + 2 * HOUR + 5 * MIN]]);
    expect(p.categories.map((a) => a.key)).toEqual(["C1", "C2", "C3"]);
    expect(p.categories[0]!.score).toBeCloseTo(c1, 10);
    expect(p.categories[1]!.score).toBeCloseTo(c2, 10);
    expect(p.categories[2]!.score).toBeCloseTo(c3, 10);
    expect(p.brands.map((a) => a.key)).toEqual(["acme", "other"]);
    expect(p.brands[0]!.score).toBeCloseTo(c1, 10);
    expect(p.priceBands.map((a) => a.key)).toEqual(["10-20", "50-100"]);
    expect(p.priceBands[1]!.score).toBeCloseTo(c2, 10);

    expect(p.sessions).toEqual({
      count: 2, avgEvents: 3.5, avgDurationMs: 13.5 * MIN,
      currentStartMs: t0 + 2 * HOUR, currentEvents: 3, currentSessionId: "",
    });
    expect(p.funnel).toEqual({ views: 2, carts: 1, purchases: 2, viewToCart: 0.5, cartToPurchase: 2, viewToPurchase: 1 });
    expect(p.recentItems).toEqual(["C", "A", "B"]);
    expect(p.firstSeenMs).toBe(t0);
    expect(p.lastSeenMs).toBe(t0 + 2 * HOUR + 6 * MIN);
    expect(p.asOfMs).toBe(asOf);
  });

  it("profile - an event older than the latest adds its own decayed weight", () => {
    const s = newUserState();
    applyEvent(s, ev({ type: EventType.VIEW, timestampMs: t0 + HOUR, itemId: "x", categoryId: "K" }), o);
    applyEvent(s, ev({ type: EventType.ADD_TO_CART, timestampMs: t0, itemId: "y", categoryId: "K" }), o);
    const asOf = t0 + 2 * HOUR;
    const p = profileView("u", s, asOf, o);
    expect(p.categories[0]!.score).toBeCloseTo(decayed(asOf, [[1, t0 + HOUR], [3, t0]]), 10);
    expect(p.firstSeenMs).toBe(t0);
    expect(p.lastSeenMs).toBe(t0 + HOUR);
  });

  it("profile - decayed scores stay exact across many half-lives (renormalisation)", () => {
    const s = newUserState();
    const times = [0, 10, 33, 34, 80, 81.5].map((h) => t0 + h * HOUR);
    for (const [i, t] of times.entries()) applyEvent(s, ev({ type: EventType.VIEW, timestampMs: t, itemId: `x${i}`, categoryId: "K" }), o);
    const asOf = t0 + 82 * HOUR;
    const got = profileView("u", s, asOf, o).categories[0]!.score;
    const want = decayed(asOf, times.map((t) => [1, t] as [number, number]));
    expect(Math.abs(got - want) / want).toBeLessThan(1e-12);
  });

  it("profile - a full affinity table drops its weakest key", () => {
    const small = compileProfileOptions({ halfLifeMs: HOUR, affinityTopK: 2 });
    const s = newUserState();
    applyEvent(s, ev({ type: EventType.PURCHASE, timestampMs: t0, itemId: "1", categoryId: "strong", price: 1 }), small);
    applyEvent(s, ev({ type: EventType.VIEW, timestampMs: t0, itemId: "2", categoryId: "weak" }), small);
    applyEvent(s, ev({ type: EventType.ADD_TO_CART, timestampMs: t0, itemId: "3", categoryId: "new" }), small);
    expect(profileView("u", s, t0, small).categories).toEqual([{ key: "strong", score: 5 }, { key: "new", score: 3 }]);
  });

  it("profile - session ids split sessions when present, the gap when not", () => {
    const s = newUserState();
    applyEvent(s, ev({ type: EventType.VIEW, timestampMs: t0, itemId: "a", sessionId: "s1" }), o);
    applyEvent(s, ev({ type: EventType.VIEW, timestampMs: t0 + 5 * HOUR, itemId: "a", sessionId: "s1" }), o);
    applyEvent(s, ev({ type: EventType.VIEW, timestampMs: t0 + 5 * HOUR + MIN, itemId: "a", sessionId: "s2" }), o);
    expect(profileView("u", s, t0, o).sessions.count).toBe(2);
    const g = newUserState();
    applyEvent(g, ev({ type: EventType.VIEW, timestampMs: t0, itemId: "a" }), o);
    applyEvent(g, ev({ type: EventType.VIEW, timestampMs: t0 + 29 * MIN, itemId: "a" }), o);
    applyEvent(g, ev({ type: EventType.VIEW, timestampMs: t0 + 60 * MIN, itemId: "a" }), o);
    expect(profileView("u", g, t0, o).sessions.count).toBe(2);
  });

  it("profile - a user who never bought has no RFM scores", () => {
    const s = newUserState();
    applyEvent(s, ev({ type: EventType.VIEW, timestampMs: t0, itemId: "a" }), o);
    const p = profileView("u", s, t0, o);
    expect(p.rfm).toEqual({ recencyDays: -1, frequency: 0, monetary: 0, rScore: 0, fScore: 0, mScore: 0, lastPurchaseMs: 0 });
  });

  it("profile - price bands follow the documented bounds", () => {
    expect([0.5, 5, 9.99, 10, 49, 50, 199, 200, 999, 1000, 2000, 1e6].map(priceBand)).toEqual([
      "0-5", "5-10", "5-10", "10-20", "20-50", "50-100", "100-200", "200-500", "500-1000", "1000-2000", "2000+", "2000+",
    ]);
  });

  it("profile - options are validated at construction", () => {
    expect(() => compileProfileOptions({ halfLifeMs: -1 })).toThrow(/options.halfLifeMs must be a positive number/);
    expect(() => compileProfileOptions({ recentItems: 1.5 })).toThrow(/options.recentItems must be a positive integer/);
    expect(() => compileProfileOptions({ nope: 1 } as never)).toThrow(/unknown profile option "nope"/);
  });
});
