/**
 * The session data sets' next-click preparation (no engine): views as
 * anonymous sessions (the log's session id, else 30-minute idle gaps per
 * user) and the strict time split of sessions.
 */
import { describe, expect, it } from "vitest";
import type { DatasetEvent } from "../src/data/types.js";
import { clickSessions, SESSION_GAP_MS, splitSessionsByTime } from "../src/eval/next-click.js";
import { EventType } from "../src/wire/proto.js";

const T0 = Date.UTC(2024, 4, 1);
const MIN = 60_000;
let n = 0;
const ev = (userId: string, itemId: string, t: number, type: EventType = EventType.VIEW, sessionId?: string): DatasetEvent =>
  ({ eventId: `s:${n++}`, userId, type, timestampMs: T0 + t, itemId, ...(sessionId !== undefined ? { sessionId } : {}) });

describe("clickSessions", () => {
  it("keeps views and clicks, keys them by session id, else splits a user's views at idle gaps longer than 30 minutes", () => {
    const log = [
      ev("u1", "a", 0), ev("u1", "b", 10 * MIN), ev("u1", "z", 11 * MIN, EventType.PURCHASE),
      ev("u1", "c", 10 * MIN + SESSION_GAP_MS), // exactly the gap: same session
      ev("u1", "d", 11 * MIN + 2 * SESSION_GAP_MS), // more than the gap after c: a new session
      ev("u2", "a", 5 * MIN, EventType.CLICK),
      ev("u3", "x", 1 * MIN, EventType.VIEW, "S9"), ev("u3", "y", 500 * MIN, EventType.VIEW, "S9"),
    ];
    const out = clickSessions(log);
    expect(out.map((e) => [e.userId, e.itemId])).toEqual([
      ["s-u1-0", "a"], ["s-S9", "x"], ["s-u2-0", "a"], ["s-u1-0", "b"], ["s-u1-0", "c"], ["s-u1-1", "d"], ["s-S9", "y"],
    ]);
    expect(log[0]!.userId).toBe("u1"); // the input is not changed
  });
});

describe("splitSessionsByTime", () => {
  it("puts every session that ends at or after the split time in the test part, whole", () => {
    // 10 events; the threshold is the time of the 9th in time order (testShare 0.2).
    const log = [
      ev("A", "a", 0), ev("A", "b", 1), ev("B", "a", 2), ev("B", "c", 3), ev("C", "a", 4),
      ev("C", "b", 5), ev("D", "d", 6), ev("E", "e", 7), ev("D", "e", 8), ev("F", "f", 9),
    ];
    const { train, test } = splitSessionsByTime(log, 0.2);
    expect([...new Set(test.map((e) => e.userId))].sort()).toEqual(["D", "F"]);
    expect(test.map((e) => e.itemId)).toEqual(["d", "e", "f"]);
    expect(Math.max(...train.map((e) => e.timestampMs))).toBeLessThan(T0 + 8);
    expect(train.length + test.length).toBe(log.length);
    expect(() => splitSessionsByTime(log, 1)).toThrow(/testShare/);
  });
});
