/**
 * The recommendation index's memory caps under a long synthetic stream: every
 * bounded table reaches its cap and never passes it, per-item lists stay
 * within their bounds, and the index still answers from recent events.
 */
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
});
