/** The engine clock's rules (src/shard/engine-clock.ts), on hand-made batches. */
import { describe, expect, it } from "vitest";
import { ClockReader, EngineClock } from "../src/shard/engine-clock.js";

const DAY = 86_400_000;
const T2019 = Date.UTC(2019, 9, 1);
const WALL = Date.UTC(2026, 11, 6);
const o = { maxJumpMs: DAY, jumpQuorum: 3, liveWindowMs: 3_600_000 };

describe("engine clock", () => {
  it("clock - events move it forward within a day, never back; a replay of old data is not live", () => {
    const c = new EngineClock(o);
    c.observe({ inEraMs: T2019, ahead: [] }, WALL);
    c.observe({ inEraMs: T2019 + 3_600_000, ahead: [] }, WALL);
    c.observe({ inEraMs: T2019 - DAY, ahead: [] }, WALL);
    expect(c.clockMs).toBe(T2019 + 3_600_000);
    expect(c.now(WALL)).toBe(T2019 + 3_600_000);
  });

  it("clock - one out-of-era event does not move it; a quorum of users does, to the earliest of their times", () => {
    const c = new EngineClock(o);
    c.observe({ inEraMs: T2019, ahead: [] }, WALL);
    expect(c.inEra(WALL, WALL)).toBe(false);
    c.observe({ inEraMs: 0, ahead: [["u1", WALL]] }, WALL);
    c.observe({ inEraMs: 0, ahead: [["u1", WALL + 1000]] }, WALL);
    expect(c.clockMs).toBe(T2019);
    c.observe({ inEraMs: 0, ahead: [["u2", WALL + 2000]] }, WALL);
    expect(c.clockMs).toBe(T2019);
    c.observe({ inEraMs: 0, ahead: [["u3", WALL + 3000]] }, WALL);
    expect(c.clockMs).toBe(WALL);
    // Now within the live window of the wall clock: live, and time passes without events.
    expect(c.now(WALL + 5 * DAY)).toBe(WALL + 5 * DAY);
  });

  it("clock - shards read the same clock through shared memory", () => {
    const c = new EngineClock(o);
    const shard = new ClockReader(c.buffer, o);
    expect(shard.clockMs).toBe(0);
    expect(shard.inEra(T2019)).toBe(true);
    c.observe({ inEraMs: T2019, ahead: [] }, WALL);
    expect(shard.clockMs).toBe(T2019);
    expect(shard.inEra(T2019 + DAY - 1, WALL)).toBe(true);
    expect(shard.inEra(T2019 + DAY + 1, WALL)).toBe(false);
    // A restored clock starts where it was.
    expect(new EngineClock(o, T2019).clockMs).toBe(T2019);
  });

  it("clock - a restart resumes live when the engine was live, even after hours without events; a replay's clock does not", () => {
    const c = new EngineClock(o);
    const shard = new ClockReader(c.buffer, o);
    // What a shard stores with a batch the main thread has not taken yet: live once the clock reaches it.
    expect(shard.liveWith(T2019, WALL)).toBe(false);
    expect(shard.liveWith(WALL - 1000, WALL)).toBe(true);
    // Restarted 5 hours after the last event (beyond liveWindowMs): live only if it was.
    const later = WALL + 5 * 3_600_000;
    const wasLive = new EngineClock(o);
    wasLive.restore(WALL, true);
    expect(wasLive.now(later)).toBe(later);
    const notLive = new EngineClock(o);
    notLive.restore(WALL, false);
    expect(notLive.now(later)).toBe(WALL);
    // A flag without a clock does nothing.
    const empty = new EngineClock(o);
    empty.restore(0, true);
    expect(empty.now(later)).toBe(0);
  });
});
