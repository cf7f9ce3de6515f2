/**
 * Prequential evaluation on a tiny synthetic log of four days whose answers
 * are known: a fresh engine sees what the user did an hour ago, a daily
 * snapshot only what happened before today's UTC midnight, and no engine ever
 * sees a target (or anything at its timestamp) before it is scored.
 */
import { describe, expect, it } from "vitest";
import type { DatasetEvent } from "../src/data/types.js";
import { PortraitError } from "../src/errors.js";
import { PopularityCounter, runPrequential, type PrequentialTarget } from "../src/eval/prequential.js";
import { EventType } from "../src/wire/proto.js";
import { useEngineFixture } from "./helpers/fixture.js";

const DAY = 86_400_000;
const HOUR = 3_600_000;
const T0 = Date.UTC(2024, 4, 1);

const fx = useEngineFixture();

/** 20 background users view 100 catalogue items every morning (pop0 the most); the named users act later in the day. */
function syntheticLog(): DatasetEvent[] {
  const out: DatasetEvent[] = [];
  let n = 0;
  const ev = (userId: string, type: EventType, t: number, itemId: string, orderId = ""): void => {
    const cat = itemId.startsWith("pop") ? `c${Number(itemId.slice(3)) % 5}` : "c9";
    out.push({ eventId: `syn:${n++}`, userId, type, timestampMs: t, itemId, categoryId: cat, price: 10, quantity: 1, orderId });
  };
  for (let d = 0; d < 4; d++) {
    for (let u = 0; u < 20; u++) {
      const t = T0 + d * DAY + 8 * HOUR + u * 60_000;
      ev(`bg${u}`, EventType.VIEW, t, "pop0");
      for (let k = 1; k < 6; k++) ev(`bg${u}`, EventType.VIEW, t + k * 1000, `pop${(u * 3 + d * 7 + k * 11) % 100}`);
    }
  }
  // A: views a brand-new item and buys it within the hour on day 2.
  ev("a", EventType.VIEW, T0 + 2 * DAY + 10 * HOUR, "x-a");
  ev("a", EventType.VIEW, T0 + 2 * DAY + 10 * HOUR + 60_000, "pop5");
  ev("a", EventType.PURCHASE, T0 + 2 * DAY + 10 * HOUR + 300_000, "x-a", "oa");
  // B: views on day 1, buys on day 2: both engines have seen the view.
  ev("b", EventType.VIEW, T0 + 1 * DAY + 15 * HOUR, "y-b");
  ev("b", EventType.PURCHASE, T0 + 2 * DAY + 9 * HOUR, "y-b", "ob");
  // D: two lines of one invoice (one timestamp) on day 3, one of them viewed first.
  ev("d", EventType.VIEW, T0 + 3 * DAY + 11 * HOUR, "w-d");
  ev("d", EventType.PURCHASE, T0 + 3 * DAY + 11 * HOUR + 120_000, "w-d", "od");
  ev("d", EventType.PURCHASE, T0 + 3 * DAY + 11 * HOUR + 120_000, "pop0", "od");
  // Reversed: the harness must sort by time itself (stably, so pop0 now comes before w-d).
  return out.reverse();
}

describe("prequential", () => {
  it("prequential - fresh sees today's views, the daily snapshot lags by a day, and no target is visible before it is scored", async () => {
    const log = syntheticLog();
    const seen: PrequentialTarget[] = [];
    const table = await runPrequential(log, "synthetic", {
      natsUrl: fx.nats.url,
      engine: { logLevel: "silent" },
      onTarget: async (t, probe) => {
        seen.push(t);
        // Planted check, independent of the harness's own bookkeeping: the profiles
        // hold exactly the user's events strictly before the target's timestamp
        // (fresh) or before the target's UTC day (daily).
        const day0 = Math.floor(t.event.timestampMs / DAY) * DAY;
        const before = log.filter((e) => e.userId === t.event.userId && e.timestampMs < t.event.timestampMs).length;
        const beforeDay = log.filter((e) => e.userId === t.event.userId && e.timestampMs < day0).length;
        const applied = async (c: typeof probe.fresh) => {
          try {
            return (await c.getProfile(t.event.userId)).eventsApplied;
          } catch (err) {
            if (err instanceof PortraitError && err.code === "UNKNOWN_USER") return 0;
            throw err;
          }
        };
        expect(await applied(probe.fresh)).toBe(before);
        expect(await applied(probe.daily)).toBe(beforeDay);
        expect(t.published).toEqual({ fresh: before, daily: beforeDay });
      },
    });
    expect(seen.map((t) => t.event.userId)).toEqual(["b", "a", "d", "d"]);
    const [b, a, dp, dw] = seen as [PrequentialTarget, PrequentialTarget, PrequentialTarget, PrequentialTarget];
    // A's item first appeared an hour before: only the fresh engine can know it.
    expect(a.ranks.fresh).toBeDefined();
    expect(a.ranks["daily snapshot"]).toBeUndefined();
    expect(a.ranks.popularity).toBeUndefined();
    // B's item was viewed yesterday: the snapshot has it too.
    expect(b.ranks.fresh).toBeDefined();
    expect(b.ranks["daily snapshot"]).toBeDefined();
    // D's invoice: w-d was viewed today (fresh only); pop0 is the most popular item.
    expect(dw.ranks.fresh).toBeDefined();
    expect(dw.ranks["daily snapshot"]).toBeUndefined();
    expect(dp.ranks.popularity).toBe(1);

    const row = (v: string) => table.rows.find((r) => r.variant === v)!;
    expect(table.columns).toEqual(["variant", "HR@10", "MRR@10", "HR@20", "MRR@20", "targets", "query seconds"]);
    expect(row("fresh").targets).toBe(4);
    expect(row("fresh")["HR@20"]).toBeGreaterThan(row("daily snapshot")["HR@20"] as number);
    expect(row("popularity")["HR@20"]).toBe(0.25);
    expect(row("popularity")["MRR@20"]).toBe(0.25);
    expect(table.split).toContain("refreshed 3 times");
  }, 60_000);

  it("prequential - maxTargets scores targets evenly spaced in time; a log within one UTC day is flagged as never refreshing the snapshot", async () => {
    const log: DatasetEvent[] = [];
    for (let i = 0; i < 30; i++) {
      log.push({ eventId: `one:${i}`, userId: `u${i % 3}`, type: i % 2 ? EventType.PURCHASE : EventType.VIEW, timestampMs: T0 + 5 * HOUR + i * 1000, itemId: `i${i % 4}` });
    }
    const seen: number[] = [];
    const table = await runPrequential(log, "one day", {
      natsUrl: fx.nats.url, engine: { logLevel: "silent" }, maxTargets: 5, ks: [5],
      onTarget: (t) => void seen.push(t.index),
    });
    // 15 purchases at odd indexes, 5 evenly spaced: the 1st, 4th, 7th, 10th and 13th.
    expect(seen).toEqual([1, 7, 13, 19, 25]);
    expect(table.columns).toEqual(["variant", "HR@5", "MRR@5", "targets", "query seconds"]);
    expect(table.split).toContain("never refreshes");
    expect(table.split).toContain("5 of the 15 purchases scored (evenly spaced in time order)");
    const daily = table.rows.find((r) => r.variant === "daily snapshot")!;
    expect(daily["HR@5"]).toBe(0);
  }, 60_000);

  it("prequential - options are validated before anything starts", async () => {
    await expect(runPrequential([], "x", { maxTargets: 0 })).rejects.toThrow(/maxTargets/);
    await expect(runPrequential([], "x", { ks: [0] })).rejects.toThrow(/ks/);
    await expect(runPrequential([], "x", { targets: "views" as never })).rejects.toThrow(/targets/);
    await expect(runPrequential([], "x", { engine: { dataDir: "/tmp/x" } })).rejects.toThrow(/engine.dataDir/);
  });

  it("popularity - ranks by count, ties by item id, undefined below the cut-off or when unseen", () => {
    const p = new PopularityCounter();
    for (const id of ["b", "a", "c", "c", "d", "d", "d"]) p.add(id);
    expect(p.rank("d", 10)).toBe(1);
    expect(p.rank("c", 10)).toBe(2);
    expect(p.rank("a", 10)).toBe(3);
    expect(p.rank("b", 10)).toBe(4);
    expect(p.rank("b", 3)).toBeUndefined();
    expect(p.rank("a", 3)).toBe(3);
    expect(p.rank("zz", 10)).toBeUndefined();
  });
});
