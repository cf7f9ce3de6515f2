/**
 * The recommendation index and candidate generation (src/recs): catalog
 * semantics, co-visitation and trending against brute-force definitions,
 * candidate filtering as a seeded property over random catalogs and requests,
 * and catalog loading from the real data sets (../shared/data, or
 * PORTRAIT_DATASETS).
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import type { DatasetFormat } from "../src/data/types.js";
import { ConfigError, BadRequestError } from "../src/errors.js";
import { generateCandidates, countSources, type CandidateContext } from "../src/recs/candidates.js";
import { Availability, Catalog, fromCatalogUpsertMessage } from "../src/recs/catalog.js";
import { loadCatalogFromDataset } from "../src/recs/catalog-loader.js";
import { Covisitation } from "../src/recs/covisitation.js";
import { compileRecsOptions, RECS_DEFAULTS, type RecsOptions } from "../src/recs/recs-options.js";
import { createRecsIndex, observeItemEvent, toItemEvent, type RecsIndex } from "../src/recs/recs-index.js";
import { TouchOrder } from "../src/recs/touch-order.js";
import { Trending } from "../src/recs/trending.js";
import type { ItemEvent } from "../src/recs/types.js";
import { EventType, pb, plainBytes } from "../src/wire/proto.js";
import { seededRandom } from "../src/models/seeded-random.js";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const DATA_DIR = process.env.PORTRAIT_DATASETS ?? resolve(REPO_ROOT, "../shared/data");

function dataFile(format: DatasetFormat): string {
  try {
    return resolveDataFile(DATA_DIR, format);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`missing test data: ${why} (tests look in ${DATA_DIR}; set PORTRAIT_DATASETS to override)`);
  }
}


const HOUR = 3_600_000;
const T0 = Date.UTC(2024, 0, 1);
const O = compileRecsOptions();
const W = O.eventWeights;

function ev(userId: string, itemId: string, type: EventType, timestampMs: number, more: Partial<ItemEvent> = {}): ItemEvent {
  return { userId, itemId, type, timestampMs, ...more };
}

describe("recs options", () => {
  it("defaults - documented values, frozen", () => {
    expect(O.candidates.count).toBe(200);
    expect(O.candidates.excludePurchased).toBe(true);
    expect(O.covisitation.halfLifeMs).toBe(24 * HOUR);
    expect(O.trending.halfLifeMs).toBe(HOUR);
    expect(W[EventType.VIEW]).toBe(1);
    expect(W[EventType.ADD_TO_CART]).toBe(3);
    expect(W[EventType.PURCHASE]).toBe(5);
    expect(W[EventType.REC_IMPRESSION]).toBe(0);
    expect(Object.isFrozen(O.candidates.quotas)).toBe(true);
    expect(O.maxQueuedItemEvents).toBe(50_000);
    expect(compileRecsOptions({ maxQueuedItemEvents: 10 }).maxQueuedItemEvents).toBe(10);
    expect(O.maxItemEventWaitMs).toBe(5_000);
    expect(compileRecsOptions({ maxItemEventWaitMs: 0 }).maxItemEventWaitMs).toBe(0);
  });

  it("options - given values replace defaults, per key", () => {
    const o = compileRecsOptions({ candidates: { count: 50, quotas: { covisit: 0.1 } }, eventWeights: { view: 2 } });
    expect(o.candidates.count).toBe(50);
    expect(o.candidates.quotas.covisit).toBe(0.1);
    expect(o.candidates.quotas.trending).toBe(RECS_DEFAULTS.candidates.quotas.trending);
    expect(o.eventWeights[EventType.VIEW]).toBe(2);
    expect(o.eventWeights[EventType.PURCHASE]).toBe(5);
  });

  it.each<[RecsOptions, RegExp]>([
    [{ candidates: { count: 0 } }, /candidates\.count must be a positive integer/],
    [{ candidates: { count: 2.5 } }, /candidates\.count must be a positive integer/],
    [{ candidates: { excludePurchased: "yes" as unknown as boolean } }, /excludePurchased must be a boolean/],
    [{ candidates: { quotas: { covisit: 1.5 } } }, /quotas\.covisit must be a number in \[0, 1\]/],
    [{ candidates: { quotas: { covisit: 0.9, trending: 0.9 } } }, /quotas must sum to at most 1/],
    [{ covisitation: { halfLifeMs: -1 } }, /covisitation\.halfLifeMs must be a positive number/],
    [{ trending: { globalListSize: Number.NaN } }, /trending\.globalListSize/],
    [{ eventWeights: { view: -1 } }, /eventWeights\.view must be a finite number >= 0/],
    [{ eventWeights: { teleport: 1 } as never }, /unknown recs option "eventWeights\.teleport"/],
    [{ catalog: { maxItem: 5 } } as never, /unknown recs option "catalog\.maxItem"/],
    [{ candidate: {} } as never, /unknown recs option "candidate"/],
    [{ maxQueuedItemEvents: 0 }, /maxQueuedItemEvents must be a positive integer/],
    [{ maxQueuedItemEvents: 2.5 }, /maxQueuedItemEvents must be a positive integer/],
    [{ maxQueuedItemEvents: 2e9 }, /maxQueuedItemEvents must be at most 1000000000/],
    [{ maxItemEventWaitMs: -1 }, /maxItemEventWaitMs must be an integer in \[0, 60000\]/],
    [{ maxItemEventWaitMs: 60_001 }, /maxItemEventWaitMs must be an integer in \[0, 60000\]/],
    [{ maxQueuedItemEvent: 10 } as never, /unknown recs option "maxQueuedItemEvent"/],
  ])("options - rejects %j", (o, message) => {
    expect(() => compileRecsOptions(o)).toThrow(ConfigError);
    expect(() => compileRecsOptions(o)).toThrow(message);
  });
});

describe("touch order", () => {
  it("touch order - never evicts an entry touched within the last capacity / 2 touches (random touches)", () => {
    const r = seededRandom(7);
    const cap = 64;
    const evicted: string[] = [];
    const t = new TouchOrder<object>(cap, (k) => evicted.push(k));
    const lastTouch = new Map<string, number>();
    for (let clock = 0; clock < 20_000; clock++) {
      const key = `k${Math.floor(Math.pow(r(), 2) * 400)}`;
      const v = t.get(t.ids.find(key));
      if (v) t.touch(t.ids.find(key));
      else t.insert(t.ids.slot(key), {});
      lastTouch.set(key, clock);
      expect(t.size).toBeLessThanOrEqual(cap);
      for (const k of evicted) expect(clock - lastTouch.get(k)!).toBeGreaterThanOrEqual(cap / 2);
      evicted.length = 0;
    }
  });

  it("touch order - keeps the guarantee per table when tables share a clock, however busy the others are", () => {
    const r = seededRandom(13);
    const cap = 64;
    const clock = { tick: 0 };
    const evicted: string[] = [];
    const t = new TouchOrder<object>(cap, (k) => evicted.push(k), clock);
    // A busier table on the same clock: its inserts and moves make the shared clock run 0-8 times faster than t's own.
    const other = new TouchOrder<object>(cap, undefined, clock);
    const lastTouch = new Map<string, number>();
    let moved = 0;
    for (let own = 0; own < 20_000; own++) {
      for (let i = Math.floor(r() * 9); i > 0; i--) {
        const k = `o${Math.floor(r() * 1000)}`;
        const v = other.get(other.ids.find(k));
        if (v) other.touch(other.ids.find(k));
        else other.insert(other.ids.slot(k), {});
      }
      const key = `k${Math.floor(Math.pow(r(), 2) * 400)}`;
      const v = t.get(t.ids.find(key));
      if (v) {
        const slot = t.ids.find(key);
        const before = t.tickOf(slot);
        t.touch(slot);
        if (t.tickOf(slot) !== before) moved++;
      } else t.insert(t.ids.slot(key), {});
      lastTouch.set(key, own);
      expect(t.size).toBeLessThanOrEqual(cap);
      for (const k of evicted) expect(own - lastTouch.get(k)!).toBeGreaterThanOrEqual(cap / 2);
      evicted.length = 0;
    }
    // Entries still move (the order is kept), but not on every touch.
    expect(moved).toBeGreaterThan(0);
  });

  it("touch order - evicts exactly the first entry in its order, through touches, deletes and refills, and its interner holds exactly the ids it holds", () => {
    const r = seededRandom(11);
    const cap = 50;
    const evicted: string[] = [];
    const t = new TouchOrder<object>(cap, (k) => evicted.push(k));
    for (let step = 0; step < 30_000; step++) {
      const key = `k${Math.floor(Math.pow(r(), 1.5) * 300)}`;
      const v = t.get(t.ids.find(key));
      if (v !== undefined && r() < 0.05) t.delete(t.ids.find(key));
      else if (v !== undefined) t.touch(t.ids.find(key));
      else {
        // Before the insert, the entry a fresh iterator sees first is the one that must go (when the insert overflows).
        const expected = t.size >= cap ? t.entries().next().value![0] : undefined;
        t.insert(t.ids.slot(key), {});
        expect(evicted).toEqual(expected === undefined ? [] : [expected]);
        evicted.length = 0;
      }
      // Now and then the table empties entirely, so a finished cursor must be replaced.
      if (step % 7_000 === 6_999) for (const [k] of [...t.entries()]) t.delete(t.ids.find(k));
      // Evicted and deleted ids leave the interner (their slots are reused): it stays bounded with the table.
      expect(t.ids.size).toBe(t.size);
      expect(t.ids.capacity).toBeLessThanOrEqual(cap + 1);
    }
  });
});

describe("catalog", () => {
  it("catalog - observe learns fields, an empty field never clears one, an older event only fills gaps", () => {
    const c = new Catalog();
    c.observe(ev("u", "i1", EventType.VIEW, T0 + 1000, { categoryId: "c1", brand: "Acme", price: 10, currency: "EUR" }));
    c.observe(ev("u", "i1", EventType.VIEW, T0 + 2000, { categoryId: "", brand: "", price: 0 }));
    let it = c.get("i1")!;
    expect(it).toMatchObject({ categoryId: "c1", brand: "Acme", price: 10, currency: "EUR", available: true });
    expect(it.firstSeenMs).toBe(T0 + 1000);
    expect(it.lastSeenMs).toBe(T0 + 2000);
    // Newer event: replaces.
    c.observe(ev("u", "i1", EventType.VIEW, T0 + 3000, { price: 12 }));
    expect(c.get("i1")!.price).toBe(12);
    // Older event: does not replace a known price, but fills the unknown title and category path.
    c.observe(ev("u", "i1", EventType.VIEW, T0 + 500, { price: 8, title: "Widget", categoryPath: "tools.widgets" }));
    it = c.get("i1")!;
    expect(it).toMatchObject({ price: 12, title: "Widget", categoryPath: "tools.widgets" });
    expect(it.firstSeenMs).toBe(T0 + 500);
    expect(it.lastSeenMs).toBe(T0 + 3000);
    // An event without an item is ignored.
    c.observe(ev("u", "", EventType.SEARCH, T0));
    expect(c.size).toBe(1);
    expect([...c].map((x) => x.itemId)).toEqual(["i1"]);
  });

  it("catalog - upsert sets what it gives, availability only when given, events never change availability", () => {
    const c = new Catalog();
    c.observe(ev("u", "i1", EventType.VIEW, T0, { categoryId: "c1", brand: "Acme", price: 10 }));
    c.upsert({ itemId: "i1", title: "Blue widget", price: 11, available: false, updatedMs: T0 + 5000 });
    expect(c.get("i1")).toMatchObject({ categoryId: "c1", brand: "Acme", price: 11, title: "Blue widget", available: false, lastSeenMs: T0 + 5000 });
    expect(c.isAvailable("i1")).toBe(false);
    c.observe(ev("u", "i1", EventType.PURCHASE, T0 + 6000, { price: 9 }));
    expect(c.isAvailable("i1")).toBe(false);
    c.upsert({ itemId: "i1", brand: "Acme Co" });
    expect(c.get("i1")).toMatchObject({ brand: "Acme Co", available: false, price: 9 });
    c.setAvailable("i1", true);
    expect(c.isAvailable("i1")).toBe(true);
    expect(c.isAvailable("nope")).toBe(false);
  });

  it("catalog - setAvailable on an unknown item holds when its events arrive", () => {
    const c = new Catalog();
    c.setAvailable("later", false);
    c.observe(ev("u", "later", EventType.VIEW, T0, { categoryId: "c9" }));
    expect(c.get("later")).toMatchObject({ available: false, categoryId: "c9", firstSeenMs: T0 });
  });

  it("catalog - a malformed upsert throws BAD_REQUEST and changes nothing", () => {
    const c = new Catalog();
    c.upsert({ itemId: "i1", price: 5 });
    expect(() => c.upsert({ itemId: "" })).toThrow(BadRequestError);
    expect(() => c.upsert({ itemId: "i1", price: -1, title: "x" })).toThrow(/price must be/);
    expect(() => c.upsert({ itemId: "i1", price: Number.POSITIVE_INFINITY })).toThrow(/price must be/);
    expect(() => c.upsert({ itemId: "x".repeat(257) })).toThrow(/itemId/);
    expect(c.get("i1")).toMatchObject({ price: 5, title: "" });
    expect(c.size).toBe(1);
  });

  it("catalog - bounded: least recently touched items go, unavailable ones stay unavailable when they come back", () => {
    const c = new Catalog(compileRecsOptions({ catalog: { maxItems: 10, maxUnavailableEvicted: 5 } }).catalog);
    c.upsert({ itemId: "gone", available: false });
    c.observe(ev("u", "hot", EventType.VIEW, T0));
    for (let i = 0; i < 100; i++) {
      c.observe(ev("u", `i${i}`, EventType.VIEW, T0 + i));
      c.observe(ev("u", "hot", EventType.VIEW, T0 + i));
      expect(c.size).toBeLessThanOrEqual(10);
    }
    expect(c.get("hot")).toBeDefined();
    expect(c.get("gone")).toBeUndefined();
    c.observe(ev("u", "gone", EventType.VIEW, T0 + 200));
    expect(c.get("gone")!.available).toBe(false);
  });

  it("catalog - the CatalogUpsert message: wire round trip, unspecified availability differs from unavailable", () => {
    expect(Availability).toEqual({
      UNSPECIFIED: pb.Availability.AVAILABILITY_UNSPECIFIED, AVAILABLE: pb.Availability.AVAILABLE, UNAVAILABLE: pb.Availability.UNAVAILABLE,
    });
    const roundTrip = (m: Parameters<typeof pb.CatalogUpsert.create>[0]) =>
      fromCatalogUpsertMessage(pb.CatalogUpsert.decode(plainBytes(pb.CatalogUpsert.encode(pb.CatalogUpsert.create(m)).finish())));
    const full = roundTrip({
      itemId: "i1", categoryId: "c1", categoryPath: "a.b", brand: "B", price: 2.5, currency: "GBP", title: "T",
      available: pb.Availability.UNAVAILABLE, updatedMs: T0,
    });
    expect(full).toEqual({
      itemId: "i1", categoryId: "c1", categoryPath: "a.b", brand: "B", price: 2.5, currency: "GBP", title: "T", available: false, updatedMs: T0,
    });
    expect(roundTrip({ itemId: "i1" }).available).toBeUndefined();
    expect(roundTrip({ itemId: "i1", available: pb.Availability.AVAILABLE }).available).toBe(true);
    const c = new Catalog();
    c.upsert(full);
    c.upsert(roundTrip({ itemId: "i1", brand: "B2" }));
    expect(c.get("i1")).toMatchObject({ brand: "B2", title: "T", price: 2.5, available: false });
    expect(() => fromCatalogUpsertMessage({ itemId: "i1", available: 7 })).toThrow(BadRequestError);
  });
});

/** Brute-force decayed sum: the definitions the lazy tables must reproduce. */
function decayed(entries: { w: number; t: number }[], nowMs: number, halfLifeMs: number): number {
  return entries.reduce((s, e) => s + e.w * Math.pow(2, -(nowMs - e.t) / halfLifeMs), 0);
}

describe("co-visitation", () => {
  const opts = (o: RecsOptions["covisitation"] = {}) => compileRecsOptions({ covisitation: o }).covisitation;

  it("co-visitation - consecutive items of a user, weighted by the later event's type, both directions", () => {
    const cv = new Covisitation(opts(), W);
    cv.observe(ev("u1", "a", EventType.VIEW, T0));
    cv.observe(ev("u1", "b", EventType.ADD_TO_CART, T0));
    cv.observe(ev("u1", "b", EventType.VIEW, T0)); // same item: no self-link
    cv.observe(ev("u2", "c", EventType.VIEW, T0)); // another user: no link to b
    cv.observe(ev("u1", "c", EventType.PURCHASE, T0));
    cv.observe(ev("u1", "d", EventType.REC_IMPRESSION, T0)); // weight 0: ignored, c stays u1's last item
    cv.observe(ev("u1", "e", EventType.VIEW, T0 + 31 * 60_000)); // beyond the session gap from c
    expect(cv.neighbours("a", 10, T0)).toEqual([{ itemId: "b", score: 3 }]);
    expect(cv.neighbours("b", 10, T0)).toEqual([{ itemId: "c", score: 5 }, { itemId: "a", score: 3 }]);
    expect(cv.neighbours("c", 10, T0)).toEqual([{ itemId: "b", score: 5 }]);
    expect(cv.neighbours("d", 10, T0)).toEqual([]);
    expect(cv.neighbours("e", 10, T0)).toEqual([]);
    expect(cv.neighbours("b", 1, T0)).toEqual([{ itemId: "c", score: 5 }]);
  });

  it("co-visitation - a link to a dropped item is not read as the new item that takes its slot", () => {
    const cv = new Covisitation(opts(), W);
    cv.observe(ev("u1", "a", EventType.VIEW, T0));
    cv.observe(ev("u1", "b", EventType.VIEW, T0));
    expect(cv.neighbours("b", 10, T0)).toEqual([{ itemId: "a", score: 1 }]);
    expect(cv.evictables[0]!.evictOldest()).toBe(true); // a, the oldest item
    expect(cv.size).toBe(1);
    expect(cv.neighbours("b", 10, T0)).toEqual([]);
    cv.observe(ev("u2", "e", EventType.VIEW, T0)); // a new item: a's freed slot
    expect(cv.neighbours("e", 10, T0)).toEqual([]);
    cv.observe(ev("u1", "e", EventType.VIEW, T0)); // u1's last item is b: links b and e, once
    expect(cv.neighbours("b", 10, T0)).toEqual([{ itemId: "e", score: 1 }]);
    expect(cv.neighbours("e", 10, T0)).toEqual([{ itemId: "b", score: 1 }]);
  });

  it("co-visitation - decays with event time: half at one half-life, and an old strong link falls behind a new weak one", () => {
    const cv = new Covisitation(opts({ halfLifeMs: HOUR }), W);
    cv.observe(ev("u1", "a", EventType.VIEW, T0));
    cv.observe(ev("u1", "b", EventType.PURCHASE, T0));
    expect(cv.neighbours("a", 5, T0 + HOUR)[0]!.score).toBeCloseTo(2.5, 12);
    cv.observe(ev("u2", "a", EventType.VIEW, T0 + 3 * HOUR));
    cv.observe(ev("u2", "c", EventType.VIEW, T0 + 3 * HOUR));
    const n = cv.neighbours("a", 5, T0 + 3 * HOUR);
    expect(n.map((x) => x.itemId)).toEqual(["c", "b"]);
    expect(n[0]!.score).toBeCloseTo(1, 12);
    expect(n[1]!.score).toBeCloseTo(5 / 8, 12);
  });

  it("co-visitation - matches the decayed sum across renormalisations (100 half-lives of events)", () => {
    const hl = 1000;
    const cv = new Covisitation(opts({ halfLifeMs: hl, sessionGapMs: 10 * hl }), W);
    const r = seededRandom(3);
    const links = new Map<string, { w: number; t: number }[]>();
    const types = [EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.FAVORITE];
    let t = T0;
    const last = new Map<string, string>();
    for (let i = 0; i < 3000; i++) {
      t += Math.floor(r() * 70);
      const u = `u${Math.floor(r() * 5)}`;
      const item = `i${Math.floor(r() * 6)}`;
      const type = types[Math.floor(r() * types.length)]!;
      cv.observe(ev(u, item, type, t));
      const p = last.get(u);
      if (p !== undefined && p !== item) {
        for (const k of [`${p}>${item}`, `${item}>${p}`]) links.set(k, [...(links.get(k) ?? []), { w: W[type]!, t }]);
      }
      last.set(u, item);
    }
    expect(t - T0).toBeGreaterThan(40 * hl);
    for (let a = 0; a < 6; a++) {
      for (const n of cv.neighbours(`i${a}`, 10, t)) {
        const want = decayed(links.get(`i${a}>${n.itemId}`)!, t, hl);
        expect(Math.abs(n.score - want) / want).toBeLessThan(1e-9);
      }
      const expected = [...links.keys()].filter((k) => k.startsWith(`i${a}>`)).length;
      expect(cv.neighbours(`i${a}`, 10, t).length).toBe(expected);
    }
  });

  it("co-visitation - bounded: at most maxNeighbours per item (weakest dropped), maxItems items, maxUsers users", () => {
    const cv = new Covisitation(opts({ maxNeighbours: 3, maxItems: 50, maxUsers: 20 }), W);
    // "hub" gets strong links to s0..s2 (purchases), then many one-off views.
    for (let i = 0; i < 3; i++) {
      cv.observe(ev(`b${i}`, "hub", EventType.VIEW, T0));
      cv.observe(ev(`b${i}`, `s${i}`, EventType.PURCHASE, T0));
    }
    for (let i = 0; i < 30; i++) {
      cv.observe(ev(`v${i}`, "hub", EventType.VIEW, T0));
      cv.observe(ev(`v${i}`, `x${i}`, EventType.VIEW, T0));
    }
    expect(cv.neighbours("hub", 10, T0).map((n) => n.itemId).sort()).toEqual(["s0", "s1", "s2"]);
    // A stronger new link replaces the weakest.
    cv.observe(ev("w", "hub", EventType.VIEW, T0));
    cv.observe(ev("w", "s0", EventType.PURCHASE, T0));
    cv.observe(ev("z", "hub", EventType.VIEW, T0 + 1));
    cv.observe(ev("z", "new", EventType.PURCHASE, T0 + 1));
    const n = cv.neighbours("hub", 10, T0 + 1);
    expect(n.length).toBe(3);
    expect(n[0]!.itemId).toBe("s0");
    expect(n.map((x) => x.itemId)).toContain("new");
    const r = seededRandom(11);
    for (let i = 0; i < 5000; i++) {
      cv.observe(ev(`u${Math.floor(r() * 100)}`, `i${Math.floor(r() * 500)}`, EventType.VIEW, T0 + i));
      expect(cv.size).toBeLessThanOrEqual(50);
      expect(cv.userCount).toBeLessThanOrEqual(20);
    }
    for (let i = 0; i < 500; i++) expect(cv.neighbours(`i${i}`, 100, T0 + 5000).length).toBeLessThanOrEqual(3);
  });
});

describe("trending", () => {
  const opts = (o: RecsOptions["trending"] = {}) => compileRecsOptions({ trending: o }).trending;

  it("trending - top lists equal a full sort of the decayed scores, globally and per category (random events)", () => {
    const hl = 10_000;
    const tr = new Trending(opts({ halfLifeMs: hl, globalListSize: 20, categoryListSize: 5 }), W);
    const r = seededRandom(5);
    const hist = new Map<string, { w: number; t: number }[]>();
    const catOf = (item: string) => `c${Number(item.slice(1)) % 7}`;
    const types = [EventType.VIEW, EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.SEARCH];
    let t = T0;
    for (let i = 0; i < 20_000; i++) {
      t += Math.floor(r() * 40);
      const item = `i${Math.floor(Math.pow(r(), 1.5) * 300)}`;
      const type = types[Math.floor(r() * types.length)]!;
      tr.observe({ itemId: item, type, timestampMs: t, categoryId: catOf(item) });
      if (W[type]! > 0) hist.set(item, [...(hist.get(item) ?? []), { w: W[type]!, t }]);
      if (i % 2000 !== 1999) continue;
      const now = t + Math.floor(r() * hl);
      const all = [...hist].map(([id, h]) => ({ itemId: id, score: decayed(h, now, hl) })).sort((a, b) => b.score - a.score);
      const got = tr.topGlobal(20, now);
      expect(got.map((x) => x.itemId)).toEqual(all.slice(0, 20).map((x) => x.itemId));
      for (let j = 0; j < got.length; j++) expect(got[j]!.score).toBeCloseTo(all[j]!.score, 6);
      for (let c = 0; c < 7; c++) {
        const want = all.filter((x) => catOf(x.itemId) === `c${c}`).slice(0, 5).map((x) => x.itemId);
        expect(tr.topInCategory(`c${c}`, 5, now).map((x) => x.itemId)).toEqual(want);
      }
    }
    expect(t - T0).toBeGreaterThan(32 * hl); // renormalised at least once
    expect(tr.topGlobal(3, t)).toHaveLength(3);
    expect(tr.topInCategory("nope", 3, t)).toEqual([]);
  });

  it("trending - recent activity beats older, larger activity after a few half-lives", () => {
    const tr = new Trending(opts(), W);
    for (let i = 0; i < 8; i++) tr.observe({ itemId: "old", type: EventType.VIEW, timestampMs: T0, categoryId: "c" });
    tr.observe({ itemId: "new", type: EventType.VIEW, timestampMs: T0 + 4 * HOUR, categoryId: "c" });
    tr.observe({ itemId: "new", type: EventType.VIEW, timestampMs: T0 + 4 * HOUR, categoryId: "c" });
    expect(tr.topGlobal(2, T0 + 4 * HOUR).map((x) => x.itemId)).toEqual(["new", "old"]);
    expect(tr.score("old", T0 + 4 * HOUR)).toBeCloseTo(0.5, 12);
    expect(tr.topGlobal(2, T0).map((x) => x.itemId)).toEqual(["new", "old"]); // order does not depend on nowMs
  });

  it("trending - an item moves to its new category; bounded items and categories", () => {
    const tr = new Trending(opts({ maxItems: 30, maxCategories: 4, categoryListSize: 3, globalListSize: 10 }), W);
    tr.observe({ itemId: "m", type: EventType.VIEW, timestampMs: T0, categoryId: "c1" });
    tr.observe({ itemId: "m", type: EventType.VIEW, timestampMs: T0, categoryId: "c2" });
    tr.observe({ itemId: "m", type: EventType.VIEW, timestampMs: T0 }); // no category: stays in c2
    expect(tr.topInCategory("c1", 3, T0)).toEqual([]);
    expect(tr.topInCategory("c2", 3, T0)).toEqual([{ itemId: "m", score: 3 }]);
    const r = seededRandom(9);
    for (let i = 0; i < 3000; i++) {
      tr.observe({ itemId: `i${Math.floor(r() * 200)}`, type: EventType.VIEW, timestampMs: T0 + i, categoryId: `c${Math.floor(r() * 20)}` });
      expect(tr.size).toBeLessThanOrEqual(30);
      expect(tr.categoryCount).toBeLessThanOrEqual(4);
      expect(tr.topGlobal(100, T0 + i).length).toBeLessThanOrEqual(10);
    }
    const g = tr.topGlobal(10, T0 + 3000);
    for (let j = 1; j < g.length; j++) expect(g[j - 1]!.score).toBeGreaterThanOrEqual(g[j]!.score);
  });
});

/** A small hand-made shop: two categories, known co-visits, one trending item. */
function handMade(): RecsIndex {
  const idx = createRecsIndex(O);
  const t = T0;
  const feed = (u: string, items: [string, string][], type = EventType.VIEW, dt = 0) => {
    for (const [item, cat] of items) observeItemEvent(idx, ev(u, item, type, t + dt, { categoryId: cat }));
  };
  // Shoes (s*) and hats (h*). Users view a then b: co-visits a<->b.
  feed("u1", [["sa", "shoes"], ["sb", "shoes"]]);
  feed("u2", [["sa", "shoes"], ["sb", "shoes"]]);
  feed("u3", [["sa", "shoes"], ["hx", "hats"]]);
  // Hats popularity: hy is the most popular hat; hz trending overall (many views).
  feed("u4", [["hy", "hats"]], EventType.PURCHASE);
  for (let i = 0; i < 10; i++) feed(`t${i}`, [["hz", "hats"]]);
  feed("u5", [["sc", "shoes"]], EventType.ADD_TO_CART);
  return idx;
}

function context(o: Partial<CandidateContext> = {}): CandidateContext {
  return {
    userId: "me", known: true, recentItems: [], topCategories: [], nextCategories: [],
    purchasedItems: [], exclude: [], nowMs: T0 + 60_000, ...o,
  };
}

describe("candidates", () => {
  it("candidates - sources and reasons on a hand-made example", () => {
    const idx = handMade();
    const cands = generateCandidates(context({
      recentItems: ["sa"], topCategories: [{ key: "shoes", score: 4 }], nextCategories: [{ key: "hats", score: 0.6 }],
    }), idx, O.candidates);
    const by = new Map(cands.map((c) => [c.itemId, c]));
    // sb: co-visited twice with sa, also top of shoes.
    expect(by.get("sb")!.sources).toEqual(["covisit", "category", "trending"]);
    expect(by.get("sb")!.reason).toBe("viewed together with sa");
    expect(by.get("hx")!.sources).toContain("covisit");
    expect(by.get("hz")!.sources).toEqual(["next-category", "trending"]);
    expect(by.get("hz")!.reason).toBe("top in predicted next category hats");
    expect(by.get("sa")!.sources).toContain("recent");
    expect(by.get("sc")!.sources).toContain("category");
    expect(by.get("sc")!.reason).toBe("top in category shoes");
    // Every item of the shop is a candidate (count 200 > 6 items); prior orders them.
    expect(cands.map((c) => c.itemId).sort()).toEqual(["hx", "hy", "hz", "sa", "sb", "sc"]);
    for (let j = 1; j < cands.length; j++) expect(cands[j - 1]!.prior).toBeGreaterThanOrEqual(cands[j]!.prior);
    expect(countSources(cands).covisit).toBe(2);
    // The same inputs give the same answer.
    expect(generateCandidates(context({
      recentItems: ["sa"], topCategories: [{ key: "shoes", score: 4 }], nextCategories: [{ key: "hats", score: 0.6 }],
    }), idx, O.candidates)).toEqual(cands);
  });

  it("candidates - quotas: a source fills at most its share in pass 1, the rest is backfilled", () => {
    const idx = createRecsIndex(O);
    for (let i = 0; i < 50; i++) {
      observeItemEvent(idx, ev("u", "seed", EventType.VIEW, T0 + 2 * i));
      observeItemEvent(idx, ev("u", `n${i}`, EventType.VIEW, T0 + 2 * i + 1));
      observeItemEvent(idx, ev(`p${i}`, `pop${i}`, EventType.PURCHASE, T0 + i));
    }
    const o = compileRecsOptions({ candidates: { count: 10, quotas: { sknn: 0, rules: 0, repeat: 0, covisit: 0.3, trending: 0.7, category: 0, nextCategory: 0, recent: 0 } } }).candidates;
    const cands = generateCandidates(context({ recentItems: ["seed"], nowMs: T0 + 200 }), idx, o);
    expect(cands).toHaveLength(10);
    expect(cands.filter((c) => c.itemId.startsWith("n")).length).toBe(3);
    // All slots to covisit.
    const only = compileRecsOptions({ candidates: { count: 10, quotas: { sknn: 0, rules: 0, repeat: 0, covisit: 1, trending: 0, category: 0, nextCategory: 0, recent: 0 } } }).candidates;
    const c2 = generateCandidates(context({ recentItems: ["seed"], nowMs: T0 + 200 }), idx, only);
    expect(c2.filter((c) => c.itemId.startsWith("n")).length).toBe(10);
    // Shares summing to less than 1: the rest is backfilled, one item per source in turn.
    const part = compileRecsOptions({ candidates: { count: 10, quotas: { sknn: 0, rules: 0, repeat: 0, covisit: 0.2, trending: 0.2, category: 0, nextCategory: 0, recent: 0 } } }).candidates;
    const c3 = generateCandidates(context({ recentItems: ["seed"], nowMs: T0 + 200 }), idx, part);
    expect(c3).toHaveLength(10);
    expect(c3.filter((c) => c.itemId.startsWith("n")).length).toBeGreaterThanOrEqual(4);
    expect(c3.filter((c) => c.itemId.startsWith("pop")).length).toBeGreaterThanOrEqual(3);
  });

  it("candidates - unknown user gets popular items with reason popular (page category first when given)", () => {
    const idx = handMade();
    const ctx = context({ known: false, recentItems: ["sa"], topCategories: [{ key: "shoes", score: 1 }] });
    const cands = generateCandidates(ctx, idx, O.candidates);
    expect(cands.length).toBe(6);
    for (const c of cands) {
      expect(c.sources).toEqual(["popular"]);
      expect(c.reason).toBe("popular");
    }
    expect(cands[0]!.itemId).toBe("hz");
    const withPage = generateCandidates({ ...ctx, category: "shoes" }, idx, O.candidates);
    const sb = withPage.find((c) => c.itemId === "sb")!;
    expect(sb.sources).toEqual(["category", "popular"]);
    expect(sb.reason).toBe("top in category shoes");
    // An empty index answers with nothing, not an error.
    expect(generateCandidates(ctx, createRecsIndex(O), O.candidates)).toEqual([]);
  });

  it("candidates - a request long after the last event still ranks by the (tiny) decayed scores", () => {
    const idx = handMade();
    const later = context({ known: false, nowMs: T0 + 100 * 24 * HOUR });
    const cands = generateCandidates(later, idx, O.candidates);
    expect(cands).toHaveLength(6);
    expect(cands[0]!.itemId).toBe("hz");
    expect(idx.trending.topGlobal(1, later.nowMs)[0]!.score).toBeGreaterThan(0);
    expect(generateCandidates(context({ recentItems: ["sa"], nowMs: T0 + 400 * 24 * HOUR }), idx, O.candidates)
      .find((c) => c.itemId === "sb")!.reason).toBe("viewed together with sa");
  });

  it("candidates - unavailable items disappear at once, and come back when available again", () => {
    const idx = handMade();
    const ctx = context({ recentItems: ["sa"], topCategories: [{ key: "shoes", score: 1 }] });
    idx.catalog.setAvailable("sb", false);
    expect(generateCandidates(ctx, idx, O.candidates).map((c) => c.itemId)).not.toContain("sb");
    idx.catalog.upsert({ itemId: "sb", available: true });
    expect(generateCandidates(ctx, idx, O.candidates).map((c) => c.itemId)).toContain("sb");
  });

  it("candidates - excludePurchased false lets bought items through; exclude always wins", () => {
    const idx = handMade();
    const ctx = context({ recentItems: ["sa"], purchasedItems: ["sb", "hy"], exclude: ["hy"] });
    const ids = (o = O.candidates) => generateCandidates(ctx, idx, o).map((c) => c.itemId);
    expect(ids()).not.toContain("sb");
    const keep = compileRecsOptions({ candidates: { excludePurchased: false } }).candidates;
    expect(ids(keep)).toContain("sb");
    expect(ids(keep)).not.toContain("hy");
  });

  it("candidates - property: never excluded, purchased, unavailable or unknown items; no duplicates; at most count; deterministic", () => {
    const r = seededRandom(2024);
    const types = [EventType.VIEW, EventType.VIEW, EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.FAVORITE];
    let checked = 0;
    for (let shop = 0; shop < 40; shop++) {
      const nItems = 5 + Math.floor(r() * 300);
      const nCats = 1 + Math.floor(r() * 12);
      const nUsers = 2 + Math.floor(r() * 60);
      const count = 1 + Math.floor(r() * 120);
      const opts = compileRecsOptions({
        candidates: { count, excludePurchased: r() < 0.8 },
        covisitation: { maxNeighbours: 2 + Math.floor(r() * 20) },
        trending: { globalListSize: 5 + Math.floor(r() * 200), categoryListSize: 2 + Math.floor(r() * 30) },
        catalog: { maxItems: 5 + Math.floor(r() * 400) },
      });
      const idx = createRecsIndex(opts);
      let t = T0;
      for (let i = 0; i < 2000; i++) {
        t += Math.floor(r() * 60_000);
        const item = `i${Math.floor(Math.pow(r(), 2) * nItems)}`;
        observeItemEvent(idx, ev(`u${Math.floor(r() * nUsers)}`, item, types[Math.floor(r() * types.length)]!, t, {
          categoryId: r() < 0.9 ? `c${Number(item.slice(1)) % nCats}` : "",
        }));
        if (r() < 0.02) idx.catalog.setAvailable(`i${Math.floor(r() * nItems)}`, r() < 0.3);
      }
      for (let q = 0; q < 25; q++) {
        const pick = (n: number) => Array.from({ length: n }, () => `i${Math.floor(r() * nItems)}`);
        const cats = (n: number) => Array.from({ length: n }, () => ({ key: `c${Math.floor(r() * (nCats + 2))}`, score: r() }));
        const ctx = context({
          known: r() < 0.85, recentItems: [...new Set(pick(Math.floor(r() * 20)))], topCategories: cats(Math.floor(r() * 6)),
          nextCategories: cats(Math.floor(r() * 4)), purchasedItems: pick(Math.floor(r() * 10)), exclude: pick(Math.floor(r() * 30)),
          category: r() < 0.3 ? `c${Math.floor(r() * nCats)}` : undefined, nowMs: t + Math.floor(r() * 3 * HOUR),
        });
        const cands = generateCandidates(ctx, idx, opts.candidates);
        expect(cands.length).toBeLessThanOrEqual(count);
        expect(new Set(cands.map((c) => c.itemId)).size).toBe(cands.length);
        const banned = new Set([...ctx.exclude, ...(opts.candidates.excludePurchased ? ctx.purchasedItems : [])]);
        for (const c of cands) {
          expect(banned.has(c.itemId)).toBe(false);
          expect(idx.catalog.isAvailable(c.itemId)).toBe(true);
          expect(c.sources.length).toBeGreaterThan(0);
          expect(c.reason).not.toBe("");
          expect(c.prior).toBeGreaterThan(0);
          if (!ctx.known) {
            expect(c.sources.every((s) => s === "popular" || s === "category")).toBe(true);
          } else {
            expect(c.sources).not.toContain("popular");
          }
        }
        // Fills `count` whenever the trending list alone has enough eligible items.
        const eligibleTrending = idx.trending.topGlobal(Infinity, ctx.nowMs).filter((x) => !banned.has(x.itemId) && idx.catalog.isAvailable(x.itemId));
        expect(cands.length).toBeGreaterThanOrEqual(Math.min(count, eligibleTrending.length));
        expect(generateCandidates(ctx, idx, opts.candidates)).toEqual(cands);
        checked += cands.length;
      }
    }
    expect(checked).toBeGreaterThan(10_000);
  });
});

describe("real data", () => {
  it("real data - REES46 gives items with categories, paths, brands and prices", async () => {
    const c = new Catalog();
    const res = await loadCatalogFromDataset(c, "rees46", dataFile("rees46"), { limit: 3000 });
    expect(res.events).toBe(3000);
    expect(c.size).toBeGreaterThan(1000);
    const items = [...c];
    const share = (f: (x: (typeof items)[number]) => boolean) => items.filter(f).length / items.length;
    expect(share((x) => x.categoryId !== "")).toBe(1);
    expect(share((x) => x.categoryPath.includes("."))).toBeGreaterThan(0.5);
    expect(share((x) => x.brand !== "")).toBeGreaterThan(0.6);
    expect(share((x) => x.price > 0)).toBeGreaterThan(0.95);
    expect(items.every((x) => x.available && x.firstSeenMs >= Date.UTC(2019, 9, 1) && x.lastSeenMs >= x.firstSeenMs)).toBe(true);
  });

  it("real data - Online Retail gives items with titles, prices in GBP", async () => {
    const c = new Catalog();
    await loadCatalogFromDataset(c, "online-retail", dataFile("online-retail"), { limit: 3000 });
    expect(c.size).toBeGreaterThan(500);
    // Line 2 of the file: 85123A,WHITE HANGING HEART T-LIGHT HOLDER, 2.55
    expect(c.get("85123A")).toMatchObject({ title: "WHITE HANGING HEART T-LIGHT HOLDER", currency: "GBP" });
    expect(c.get("85123A")!.price).toBeGreaterThan(0);
    const items = [...c];
    expect(items.filter((x) => x.title !== "").length / items.length).toBeGreaterThan(0.99);
    expect(items.filter((x) => x.categoryId !== "").length).toBe(0);
  });

  it("real data - Diginetica gives categories to event items and to the items of product-categories.csv.gz", async () => {
    const c = new Catalog();
    const res = await loadCatalogFromDataset(c, "diginetica", dataFile("diginetica"), { limit: 1000 });
    expect(res).toMatchObject({ events: 1000, sideItems: 1000 });
    expect(c.size).toBeGreaterThan(1000);
    expect([...c].every((x) => x.categoryId !== "")).toBe(true);
    expect(JSON.parse(JSON.stringify(c.get([...c][0]!.itemId)))).not.toHaveProperty("tick");
  });

  it("real data - Taobao: an index fed 20k events answers known users from co-visitation and their categories", async () => {
    const idx = createRecsIndex(O);
    const history = new Map<string, ItemEvent[]>();
    let last = 0;
    for await (const e of readDataset("taobao", dataFile("taobao"), { limit: 20_000 })) {
      const ie = toItemEvent(e)!;
      observeItemEvent(idx, ie);
      history.set(ie.userId, [...(history.get(ie.userId) ?? []), ie]);
      last = Math.max(last, ie.timestampMs);
    }
    expect(idx.catalog.size).toBeGreaterThan(10_000);
    const active = [...history].filter(([, h]) => new Set(h.map((x) => x.itemId)).size >= 5).slice(0, 50);
    expect(active.length).toBe(50);
    const total: Record<string, number> = {};
    for (const [userId, h] of active) {
      const recent = [...new Set(h.map((x) => x.itemId).reverse())];
      const catCount = new Map<string, number>();
      for (const x of h) catCount.set(x.categoryId!, (catCount.get(x.categoryId!) ?? 0) + 1);
      const cands = generateCandidates(context({
        userId, recentItems: recent, nowMs: last,
        topCategories: [...catCount].map(([key, score]) => ({ key, score })).sort((a, b) => b.score - a.score),
      }), idx, O.candidates);
      expect(cands).toHaveLength(200);
      for (const [s, n] of Object.entries(countSources(cands))) total[s] = (total[s] ?? 0) + n;
    }
    expect(total.covisit).toBeGreaterThan(50);
    expect(total.category).toBeGreaterThan(50 * 10);
    expect(total.recent).toBeGreaterThan(50 * 4);
    expect(total.trending).toBeGreaterThan(50 * 40);
  });
});
