/**
 * The recommendation index's memory caps under a long synthetic stream: every
 * bounded table reaches its cap and never passes it, per-item lists stay
 * within their bounds, and the index still answers from recent events.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { seededRandom } from "../src/models/seeded-random.js";
import { compileRecsOptions } from "../src/recs/recs-options.js";
import { createRecsIndex, observeItemEvent } from "../src/recs/recs-index.js";
import { EventType } from "../src/wire/proto.js";

describe("recs caps", () => {
  it("recs caps - a stream of 200k events over 60k items and 40k users keeps every table at or under its cap", () => {
    const caps = {
      catalog: { maxItems: 5_000 },
      covisitation: { maxItems: 3_000, maxUsers: 2_000, maxNeighbours: 10 },
      trending: { maxItems: 3_000, maxCategories: 50 },
      sessions: { maxSessions: 2_000, maxItems: 3_000, maxSessionsPerItem: 20, maxSessionItems: 10, maxUserSessions: 3 },
      sequentialRules: { maxItems: 3_000, maxSuccessors: 8 },
    };
    const index = createRecsIndex(compileRecsOptions(caps));
    const r = seededRandom(7);
    const t0 = Date.UTC(2024, 0, 1);
    /** [table, entries now, its cap]. */
    const tables = (): Array<[string, number, number]> => [
      ["catalog", index.catalog.size, caps.catalog.maxItems],
      ["covisitation items", index.covisitation.size, caps.covisitation.maxItems],
      ["covisitation users", index.covisitation.userCount, caps.covisitation.maxUsers],
      ["trending", index.trending.size, caps.trending.maxItems],
      ["sessions", index.sessions.size, caps.sessions.maxSessions],
      ["session-index items", index.sessions.itemCount, caps.sessions.maxItems],
      ["rules items", index.rules.size, caps.sequentialRules.maxItems],
    ];
    let maxPerItem = 0;
    let maxSuccessors = 0;
    for (let i = 0; i < 200_000; i++) {
      // Skewed items (a head of popular ones and a long tail), users revisiting within minutes.
      const item = r() < 0.5 ? Math.floor(r() * 200) : Math.floor(r() * 60_000);
      const user = Math.floor(r() * 40_000);
      observeItemEvent(index, {
        userId: `u${user}`, itemId: `i${item}`, type: r() < 0.9 ? EventType.VIEW : EventType.ADD_TO_CART,
        timestampMs: t0 + i * 200, categoryId: `c${item % 300}`, price: 1 + (item % 50),
      });
      if (i % 10_000 === 9_999) {
        for (const [table, size, cap] of tables()) expect(size, table).toBeLessThanOrEqual(cap);
        for (let h = 0; h < 200; h++) {
          maxPerItem = Math.max(maxPerItem, index.sessions.sessionsOf(`i${h}`).length);
          maxSuccessors = Math.max(maxSuccessors, index.rules.successors(`i${h}`, 1_000).length);
        }
      }
    }
    // The stream is long enough to fill every table: the caps were reached, not merely respected.
    for (const [table, size, cap] of tables()) if (table !== "trending") expect(size, table).toBe(cap);
    // Per-item lists: sessions per item below twice their cap (compacted back to the cap), successors at most the cap.
    expect(maxPerItem).toBeGreaterThan(0);
    expect(maxPerItem).toBeLessThan(2 * caps.sessions.maxSessionsPerItem);
    expect(maxSuccessors).toBe(caps.sequentialRules.maxSuccessors);
    // The popular head survives the churn of the tail: it is still in every table.
    expect(index.catalog.get("i0")).toBeDefined();
    expect(index.rules.successors("i0", 5).length).toBeGreaterThan(0);
    expect(index.sessions.sessionsOf("i0").length).toBeGreaterThan(0);
  });

  it("recs caps - dropped sessions are released: the store's session objects stay within twice maxSessions", async () => {
    // Short sessions (a 1-minute gap) of users who come back every few minutes: the sessions start and drop all the
    // time. Every session object the store ever made is watched through a WeakRef; after a full collection the ones
    // still reachable are the live sessions and the dropped ones some list still names. Before 2026-12-08 the item
    // lists and each user's earlier sessions named dropped sessions until the list reached twice its cap or the item
    // or user left: 8.6 times maxSessions here, 1.3 times since (a 30-minute soak's recs heap grew with them).
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const caps = { sessions: { sessionGapMs: 60_000, maxSessions: 1_000, maxItems: 3_000, maxSessionsPerItem: 20, maxSessionItems: 10, maxUserSessions: 10 } };
    const index = createRecsIndex(compileRecsOptions(caps));
    const r = seededRandom(9);
    const t0 = Date.UTC(2024, 0, 1);
    const made = new Map<number, WeakRef<object>>();
    for (let i = 0; i < 100_000; i++) {
      const item = r() < 0.5 ? Math.floor(r() * 100) : Math.floor(r() * 5_000);
      const userId = `u${Math.floor(r() * 3_000)}`;
      observeItemEvent(index, { userId, itemId: `i${item}`, type: EventType.VIEW, timestampMs: t0 + i * 200, categoryId: `c${item % 50}` });
      const s = index.sessions.current(userId);
      if (s !== undefined && !made.has(s.id)) made.set(s.id, new WeakRef(s));
    }
    expect(index.sessions.size).toBe(caps.sessions.maxSessions);
    expect(made.size).toBeGreaterThan(20 * caps.sessions.maxSessions);
    // WeakRefs hold their targets to the end of the job that made them: collect in a later one.
    await new Promise((res) => setImmediate(res));
    gc();
    let reachable = 0;
    for (const w of made.values()) if (w.deref() !== undefined) reachable++;
    expect(reachable).toBeLessThanOrEqual(2 * caps.sessions.maxSessions);
  });
});
