import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { approxBytes } from "../src/actors/state-bytes.js";
import { applyEvent, newUserState, type ProfileEvent } from "../src/actors/user-profile.js";
import { compileEngineOptions, defaultActorBytesPerShard } from "../src/config/engine-options.js";
import { ActorCache, actorBytes } from "../src/shard/actor-cache.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { EventType } from "../src/wire/proto.js";

const o = compileProfileOptions();
const t0 = Date.UTC(2024, 0, 1);

function view(i: number): ProfileEvent {
  return { type: EventType.VIEW, timestampMs: t0 + i * 60_000, itemId: `item-${i}`, categoryId: `c${i}`, brand: `b${i}`, price: 1 + i, quantity: 0, currency: "", sessionId: "", orderId: "" };
}

/** Applies `n` views of distinct items, categories and brands from `from` (the state's lists and tables grow to their caps). */
function grow(c: ActorCache, key: string, from: number, n: number, batchNo: number): void {
  const a = c.actor(key);
  for (let i = from; i < from + n; i++) applyEvent(a.state, view(i), o);
  a.lastBatch = batchNo;
}

describe("actor cache - byte bound", () => {
  let dir: string;
  let store: ProfileStore;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "portrait-actor-cache-"));
    store = new ProfileStore({ dataDir: dir, mapSizeBytes: 2 ** 26 });
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("actor cache - a state's estimate grows with its history", () => {
    const s = newUserState();
    const empty = approxBytes(s);
    applyEvent(s, view(0), o);
    const one = approxBytes(s);
    for (let i = 1; i < 40; i++) applyEvent(s, view(i), o);
    expect(one).toBeGreaterThan(empty);
    expect(approxBytes(s)).toBeGreaterThan(one + 2000);
  });

  it("actor cache - actors whose states grow are dropped to stay under the byte bound, though the count bound is far", () => {
    const small = actorBytes("user-0", { state: newUserState(), lastBatch: 0, batchTypes: 0, referenced: false, lstm: undefined, bytes: 0, bytesAtN: 0 });
    const maxBytes = 40 * small * 3;
    const c = new ActorCache(store, 1_000_000, maxBytes);
    const keys = Array.from({ length: 40 }, (_, i) => `user-${i}`);
    // 40 users with one event each: under the bound.
    for (const k of keys) grow(c, k, 0, 1, 1);
    c.changed(keys.map((k) => [k, c.actor(k)] as const));
    c.evict(1);
    expect(c.size).toBe(40);
    // The same 40 users, each with a long history now: the count is unchanged, the bytes are not.
    for (const k of keys) grow(c, k, 1, 40, 2);
    const dirty = keys.map((k) => [k, c.actor(k)] as const);
    c.changed(dirty);
    expect(c.bytes).toBeGreaterThan(maxBytes);
    c.evict(2);
    expect(c.bytes).toBeLessThanOrEqual(maxBytes);
    expect(c.size).toBeLessThan(40);
    expect(c.size).toBeGreaterThan(0);
    // The count equals the sum of what is left.
    let sum = 0;
    for (const k of keys) if (c.cached(k)) sum += c.actor(k).bytes;
    expect(c.bytes).toBe(sum);
  });

  it("actor cache - an actor whose change is not committed stays, whatever its bytes", () => {
    const c = new ActorCache(store, 1_000_000, 1 << 20);
    for (const k of ["a", "b", "c"]) grow(c, k, 0, 40, 5);
    c.changed(["a", "b", "c"].map((k) => [k, c.actor(k)] as const));
    const tiny = new ActorCache(store, 1_000_000, 1);
    for (const k of ["a", "b", "c"]) grow(tiny, k, 0, 40, 5);
    tiny.changed(["a", "b", "c"].map((k) => [k, tiny.actor(k)] as const));
    tiny.evict(4);
    expect(tiny.size).toBe(3);
    tiny.evict(5);
    expect(tiny.size).toBe(0);
    expect(tiny.bytes).toBe(0);
  });

  it("actor cache - dropped and erased actors leave the byte count", async () => {
    const c = new ActorCache(store, 1_000_000);
    grow(c, "a", 0, 10, 1);
    grow(c, "b", 0, 10, 1);
    c.changed([["a", c.actor("a")], ["b", c.actor("b")]]);
    const b = c.actor("b").bytes;
    c.drop("a");
    expect(c.bytes).toBe(b);
    await c.erase("b", () => Promise.resolve());
    expect(c.bytes).toBe(0);
  });

  it("actor cache - a backfill's borrowed state is not cached, stays the user's one state until given back, and an ingest's actor takes it over", async () => {
    const c = new ActorCache(store, 1_000_000);
    const s = newUserState();
    applyEvent(s, view(0), o);
    await store.commitBatch(0, 1, [["a", s], ["b", s], ["c", s]]);
    expect(c.borrow("none")).toBeUndefined();
    // Lent: not cached, not counted; the same object while lent (a second borrow, state, has).
    const a = c.borrow("a")!;
    expect(a.state.n).toBe(1);
    expect(c.size).toBe(0);
    expect(c.bytes).toBe(0);
    expect(c.lent).toBe(1);
    expect(c.borrow("a")).toBe(a);
    a.state.n = 99; // a change whose commit is pending: LMDB still holds the state before
    expect(c.state("a")).toBe(a.state);
    expect(c.has("a")).toBe(true);
    // An event for the user while the backfill's commit is pending: the lent actor goes into the cache, counted, not a copy from LMDB.
    expect(c.actor("a")).toBe(a);
    expect(c.size).toBe(1);
    expect(c.bytes).toBe(a.bytes);
    expect(a.bytes).toBeGreaterThan(0);
    c.giveBack([["a", a]]);
    expect(c.actor("a")).toBe(a);
    // Given back without an event: gone from memory, read from LMDB again next time.
    const b = c.borrow("b")!;
    b.state.n = 99;
    c.giveBack([["b", b]]);
    expect(c.lent).toBe(0);
    expect(c.state("b")!.n).toBe(1);
    // A cached actor is borrowed as it is, and giving it back leaves it cached.
    expect(c.borrow("a")).toBe(a);
    c.giveBack([["a", a]]);
    expect(c.cached("a")).toBe(true);
    // Erased while lent: no state in memory, and none while the removal runs.
    const x = c.borrow("c")!;
    expect(x).toBeDefined();
    await c.erase("c", async () => {
      expect(c.state("c")).toBeUndefined();
      expect(c.borrow("c")).toBeUndefined();
      await store.removeState("c");
    });
    expect(c.lent).toBe(0);
    expect(c.has("c")).toBe(false);
  });

  it("actor cache - the default byte bound is a quarter of the memory over the shards; the option overrides it", () => {
    expect(compileEngineOptions({ workers: 2 }).maxActorBytesPerShard).toBe(defaultActorBytesPerShard(2));
    expect(defaultActorBytesPerShard(4)).toBeLessThan(defaultActorBytesPerShard(2));
    expect(compileEngineOptions({ maxActorBytesPerShard: 64 << 20 }).maxActorBytesPerShard).toBe(64 << 20);
    expect(() => compileEngineOptions({ maxActorBytesPerShard: 1000 })).toThrow(/maxActorBytesPerShard/);
  });
});
