/**
 * The recs worker's byte bound (recs option maxStateBytes): the tables'
 * running estimate stays under a small bound on a long stream while
 * recommendations still answer, the estimate does not drift (evicting every
 * entry brings each table back to exactly 0), and the shared clock makes
 * the eviction pick the entry touched longest ago across tables.
 * (The estimate against the measured heap: `npm run bench:recs-memory`.)
 */
import { describe, expect, it } from "vitest";
import { seededRandom } from "../src/models/seeded-random.js";
import { usableMemoryBytes } from "../src/obs/heap.js";
import { generateCandidates } from "../src/recs/candidates.js";
import { RECS_TABLES, RecsBytes } from "../src/recs/recs-bytes.js";
import { compileRecsOptions } from "../src/recs/recs-options.js";
import { createRecsIndex, observeItemEvent } from "../src/recs/recs-index.js";
import { TouchOrder } from "../src/recs/touch-order.js";
import { EventType } from "../src/wire/proto.js";

const MIB = 2 ** 20;
const T0 = Date.UTC(2024, 0, 1);

describe("recs byte bound", () => {
  it("recs bytes - with maxStateBytes 2 MiB the estimate stays under it, the tables evict, and recommendations answer", () => {
    const o = compileRecsOptions({ maxStateBytes: 2 * MIB });
    const index = createRecsIndex(o);
    const r = seededRandom(11);
    let peak = 0;
    const N = 60_000;
    for (let i = 0; i < N; i++) {
      const item = r() < 0.5 ? Math.floor(r() * 100) : Math.floor(r() * 30_000);
      const user = Math.floor(r() * 20_000);
      observeItemEvent(index, {
        userId: `u${user}`, itemId: `i${item}`, type: r() < 0.9 ? EventType.VIEW : EventType.ADD_TO_CART,
        timestampMs: T0 + i * 100, categoryId: `c${item % 200}`, price: 1 + (item % 50), title: i % 1000 === 0 ? "x".repeat(2000) : "",
      });
      peak = Math.max(peak, index.bytes.total);
    }
    expect(peak).toBeLessThanOrEqual(2 * MIB);
    // The bound acted (the same stream without it keeps far more), and evicted across tables.
    expect(index.bytes.evictions).toBeGreaterThan(10_000);
    const byTable = index.bytes.byTable();
    for (const t of ["catalog", "covisitation", "trending", "sessions", "session_index", "rules"] as const) expect(byTable[t], t).toBeGreaterThan(0);
    expect(Object.values(byTable).reduce((a, b) => a + b, 0)).toBeCloseTo(index.bytes.total, -1);
    // Recommendations still answer from recent events: a user who just viewed two head items.
    const nowMs = T0 + N * 100;
    for (const [k, item] of ["i1", "i2", "i1"].entries()) {
      observeItemEvent(index, { userId: "me", itemId: item, type: EventType.VIEW, timestampMs: nowMs + k * 1000, categoryId: "c1", price: 2 });
    }
    const session = index.sessions.forRequest("me", nowMs + 3000);
    expect(session?.items).toEqual(["i1", "i2", "i1"]);
    const cands = generateCandidates({
      userId: "me", known: true, recentItems: ["i1", "i2"], topCategories: [{ key: "c1", score: 1 }], nextCategories: [],
      purchasedItems: [], exclude: [], nowMs: nowMs + 3000, session: session!,
    }, index, o.candidates);
    const sources = new Set(cands.flatMap((c) => c.sources));
    expect(cands.length).toBeGreaterThan(50);
    for (const s of ["covisit", "trending", "sknn", "rules"]) expect(sources.has(s as never), s).toBe(true);
  });

  it("recs bytes - the running estimate does not drift: evicting every entry brings each table back to 0", () => {
    const index = createRecsIndex(compileRecsOptions({
      sessions: { maxSessions: 500, maxSessionItems: 8, maxSessionsPerItem: 10, maxUserSessions: 3 },
      covisitation: { maxNeighbours: 5 }, trending: { categoryListSize: 5 }, sequentialRules: { maxSuccessors: 4 },
    }));
    const r = seededRandom(3);
    for (let i = 0; i < 20_000; i++) {
      const item = Math.floor(r() ** 2 * 2_000);
      const user = Math.floor(r() * 1_500);
      observeItemEvent(index, {
        userId: `u${user}`, itemId: `i${item}`, type: EventType.VIEW, timestampMs: T0 + i * 1000,
        categoryId: `c${(item + i) % 40}`, brand: i % 7 === 0 ? `b${i}` : "", price: 1,
      });
      if (i % 997 === 0) {
        index.sessions.forgetUser(`u${user}`);
        index.covisitation.forgetUser(`u${user}`);
      }
    }
    expect(index.bytes.total).toBeGreaterThan(MIB);
    for (const t of index.evictables) while (t.evictOldest());
    expect(index.catalog.size + index.covisitation.size + index.trending.size + index.sessions.size + index.rules.size).toBe(0);
    expect(index.bytes.byTable()).toEqual(Object.fromEntries(RECS_TABLES.map((t) => [t, 0])));
  });

  it("recs bytes - tables sharing a clock evict the entry touched longest ago across them", () => {
    const clock = new RecsBytes();
    const evicted: string[] = [];
    const a = new TouchOrder<object>(4, (k) => evicted.push(k), clock);
    const b = new TouchOrder<object>(4, (k) => evicted.push(k), clock);
    const av = {};
    a.insert(a.ids.slot("a1"), av);
    b.insert(b.ids.slot("b1"), {});
    a.insert(a.ids.slot("a2"), {});
    b.insert(b.ids.slot("b2"), {});
    a.insert(a.ids.slot("a3"), {});
    b.insert(b.ids.slot("b3"), {});
    expect(a.oldestTick()).toBeLessThan(b.oldestTick());
    // A touch moves the entry to the back once 2 entries of its own table (half of capacity 4) went behind it since
    // its last move: b1, then a1, though a1 was a's oldest. The order across the tables is then that of
    // the shared clock: a2, b2, a3, b3, then the two touched.
    b.touch(b.ids.find("b1"));
    a.touch(a.ids.find("a1"));
    const order = [];
    while (a.size + b.size > 0) {
      const t = a.oldestTick() < b.oldestTick() ? a : b;
      t.evictOldest();
      order.push(evicted.at(-1));
    }
    expect(order).toEqual(["a2", "b2", "a3", "b3", "b1", "a1"]);
  });

  it("recs bytes - maxStateBytes defaults to an eighth of memory and refuses less than 1 MiB", () => {
    expect(compileRecsOptions().maxStateBytes).toBe(Math.max(MIB, Math.floor(usableMemoryBytes() / 8)));
    expect(compileRecsOptions({ maxStateBytes: 0 }).maxStateBytes).toBe(compileRecsOptions().maxStateBytes);
    expect(compileRecsOptions({ maxStateBytes: 64 * MIB }).maxStateBytes).toBe(64 * MIB);
    expect(() => compileRecsOptions({ maxStateBytes: MIB - 1 })).toThrow(/maxStateBytes/);
    expect(() => compileRecsOptions({ maxStateBytes: 1.5 * MIB + 0.5 })).toThrow(/maxStateBytes/);
  });
});
