/**
 * The Redis baseline of the bench harness: fed from a real JetStream stream
 * into a private redis-server, every user's hash must equal a reference
 * computed here from the published event list.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "nats";
import { Redis } from "ioredis";
import { partitionOf } from "../src/wire/partition.js";
import { ensureStreams } from "../src/bus/streams.js";
import { subjects } from "../src/bus/subjects.js";
import { EVENT_TYPE_NAMES, EventType, pb, type IEvent } from "../src/wire/proto.js";
import { syntheticEvents } from "../bench/synthetic.js";
import { measureRedisRaw, measureRedisServerRaw, runRedisBaseline, type RedisBaselineResult } from "../bench/harness/redis-baseline.js";
import { findRedisServerBinary, pingRedis, RedisServerNotFoundError, startRedisServer, type RedisServerHandle } from "../bench/harness/redis-server.js";
import { useEngineFixture } from "./helpers/fixture.js";

const PREFIX = "rbase";
const P = 4;
const USERS = 150;

const fx = useEngineFixture({ natsConnect: { noAsyncTraces: true } });
let redisServer: RedisServerHandle;
let nc: NatsConnection;
let redis: Redis;
let events: IEvent[];
/** Messages published: the events plus one that does not decode. */
let published: number;

/** The event list: synthetic events, with some multi-unit purchases at fractional prices, refunds, and events that arrive out of event-time order. */
function buildEvents(): IEvent[] {
  const out: IEvent[] = [];
  let i = 0;
  for (const e of syntheticEvents(3000, { users: USERS, seed: 11 })) {
    i++;
    if (e.type === EventType.PURCHASE && i % 3 === 0) {
      out.push({ ...e, price: 19.99, quantity: 3 });
      // A partial refund of that purchase a little later.
      out.push({ ...e, eventId: `${e.eventId}-r`, type: EventType.REFUND, price: 19.99, quantity: 2, timestampMs: (e.timestampMs as number) + 1 });
    } else if (i % 97 === 0) {
      // Out of event-time order: 10 s in the past.
      out.push({ ...e, timestampMs: (e.timestampMs as number) - 10_000 });
    } else if (i % 89 === 0) {
      // Quantity 0 means 1.
      out.push({ ...e, type: EventType.REFUND, price: 7.25, quantity: 0 });
    } else {
      out.push(e);
    }
  }
  // Late arrivals: the last event of a few users is older than their newest one.
  const tail = out.slice(-40).filter((e) => e.type === EventType.VIEW).slice(0, 5);
  for (const e of tail) out.push({ ...e, eventId: `${e.eventId}-late`, timestampMs: (e.timestampMs as number) - 5_000 });
  return out;
}

interface Ref {
  counts: Map<string, number>;
  n: number;
  purchased: number;
  refunded: number;
  hasPurchase: boolean;
  hasRefund: boolean;
  firstArrived: number;
  lastArrived: number;
  minTs: number;
  maxTs: number;
}

/** The expected hash of each user, computed from the event list independently of the baseline. */
function reference(list: IEvent[]): Map<string, Ref> {
  const refs = new Map<string, Ref>();
  for (const e of list) {
    const ts = e.timestampMs as number;
    let r = refs.get(e.userId!);
    if (!r) {
      r = { counts: new Map(), n: 0, purchased: 0, refunded: 0, hasPurchase: false, hasRefund: false, firstArrived: ts, lastArrived: ts, minTs: ts, maxTs: ts };
      refs.set(e.userId!, r);
    }
    const name = EVENT_TYPE_NAMES[e.type as number]!;
    r.counts.set(name, (r.counts.get(name) ?? 0) + 1);
    r.n++;
    r.lastArrived = ts;
    r.minTs = Math.min(r.minTs, ts);
    r.maxTs = Math.max(r.maxTs, ts);
    const units = e.quantity ? e.quantity : 1;
    if (e.type === EventType.PURCHASE) {
      r.purchased += (e.price ?? 0) * units;
      r.hasPurchase = true;
    } else if (e.type === EventType.REFUND) {
      r.refunded += (e.price ?? 0) * units;
      r.hasRefund = true;
    }
  }
  return refs;
}

/** Differences between Redis and the reference, as readable lines (empty when equal). */
async function mismatches(keyPrefix: string, refs: Map<string, Ref>, seen: "arrival" | "minmax"): Promise<string[]> {
  const out: string[] = [];
  const p = redis.pipeline();
  const users = [...refs.keys()];
  for (const u of users) p.hgetall(`${keyPrefix}:u:${u}`);
  const replies = (await p.exec())!;
  for (let i = 0; i < users.length; i++) {
    const u = users[i]!;
    const r = refs.get(u)!;
    const h = replies[i]![1] as Record<string, string>;
    const want: Record<string, number> = { events_applied: r.n };
    for (const [name, c] of r.counts) want[name] = c;
    want["first_seen"] = seen === "arrival" ? r.firstArrived : r.minTs;
    want["last_seen"] = seen === "arrival" ? r.lastArrived : r.maxTs;
    if (r.hasPurchase) want["money_purchased"] = r.purchased;
    if (r.hasRefund) want["money_refunded"] = r.refunded;
    const fields = new Set([...Object.keys(h), ...Object.keys(want)]);
    for (const f of fields) {
      const got = h[f] === undefined ? undefined : Number(h[f]);
      const exp = want[f];
      const ok = got !== undefined && exp !== undefined && (f.startsWith("money_") ? Math.abs(got - exp) <= 1e-6 : got === exp);
      if (!ok) out.push(`${u}.${f}: redis ${h[f] ?? "(missing)"}, expected ${exp ?? "(no field)"}`);
    }
  }
  // No hash for a user who is not in the list.
  let cursor = "0";
  const keys = new Set<string>();
  for (let round = 0; round < 1000; round++) {
    const [next, page] = await redis.scan(cursor, "MATCH", `${keyPrefix}:u:*`, "COUNT", 1000);
    for (const k of page) keys.add(k);
    cursor = next;
    if (cursor === "0") break;
  }
  for (const k of keys) if (!refs.has(k.slice(`${keyPrefix}:u:`.length))) out.push(`unexpected key ${k}`);
  return out;
}

beforeAll(async () => {
  try {
    redisServer = await startRedisServer({ readyTimeoutMs: 20_000 });
  } catch (err) {
    if (err instanceof RedisServerNotFoundError) throw new Error(`These tests need a real redis-server binary: ${err.message}`, { cause: err });
    throw err;
  }
  nc = fx.nc;
  redis = new Redis(redisServer.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  await redis.connect();
  const s = subjects(PREFIX);
  await ensureStreams(await nc.jetstreamManager(), s, { eventRetentionMs: 0, duplicateWindowMs: 120_000, dlqRetentionMs: 86_400_000 });

  events = buildEvents();
  for (const e of events) nc.publish(s.events(partitionOf(e.userId!, P)), pb.Event.encode(e).finish());
  // One message that is not an Event: counted as invalid and acked, never applied.
  nc.publish(s.events(0), new Uint8Array([0xff, 0xff, 0xff]));
  published = events.length + 1;
  await nc.flush();
  const jsm = await nc.jetstreamManager();
  const deadline = Date.now() + 20_000;
  while ((await jsm.streams.info(s.eventStream)).state.messages < published) {
    if (Date.now() > deadline) throw new Error("the stream did not receive every published message");
    await new Promise((r) => setTimeout(r, 20));
  }
});

afterAll(async () => {
  redis?.disconnect();
  await redisServer?.stop();
});

describe("redis baseline", () => {
  it("redis baseline - the event list has purchases, refunds and out-of-order events", () => {
    const types = new Set(events.map((e) => e.type));
    expect(types.has(EventType.PURCHASE) && types.has(EventType.REFUND) && types.has(EventType.VIEW)).toBe(true);
    expect(events.filter((e) => e.type === EventType.REFUND).length).toBeGreaterThan(5);
    const refs = reference(events);
    expect([...refs.values()].some((r) => r.firstArrived !== r.minTs)).toBe(true);
    expect([...refs.values()].some((r) => r.lastArrived !== r.maxTs)).toBe(true);
  });

  for (const mode of ["pipeline", "lua"] as const) {
    it(`redis baseline - ${mode}: every user's hash equals the reference`, async () => {
      const keyPrefix = `t-${mode}`;
      const res: RedisBaselineResult = await runRedisBaseline({
        natsUrl: fx.nats.url, prefix: PREFIX, partitions: P, expected: published, redisUrl: redisServer.url, mode,
        maxBatch: 128, timeoutMs: 60_000, keyPrefix, consumerPrefix: `rb-${mode}`, keepKeys: true,
      });
      const refs = reference(events);
      expect(res.mode).toBe(mode);
      expect(res.events).toBe(published);
      expect(res.invalid).toBe(1);
      expect(res.redeliveries).toBe(0);
      expect(res.users).toBe(refs.size);
      expect(res.eventsPerSec).toBeGreaterThan(0);
      expect(res.batches).toBeGreaterThanOrEqual(Math.ceil(published / 128));
      expect(res.redisUsedMemoryBytes).toBeGreaterThan(res.redisUsedMemoryBeforeBytes);
      // Lua: one EVALSHA per batch (none for a batch holding only the invalid message).
      if (mode === "lua") expect(res.redisCommands).toBeGreaterThanOrEqual(res.batches - 1);
      if (mode === "lua") expect(res.redisCommands).toBeLessThanOrEqual(res.batches);
      else expect(res.redisCommands).toBe(events.length * 4 + events.filter((e) => e.type === EventType.PURCHASE || e.type === EventType.REFUND).length);
      // Pipeline mode keeps first/last seen in arrival order; the script keeps a true min/max of event time.
      expect(await mismatches(keyPrefix, refs, mode === "pipeline" ? "arrival" : "minmax")).toEqual([]);
      // Its consumers are gone afterwards.
      const jsm = await nc.jetstreamManager();
      const left = await jsm.consumers.list(subjects(PREFIX).eventStream).next();
      expect(left.map((c) => c.name)).toEqual([]);
    });
  }

  it("redis baseline - a second run starts from a clean key space and gives the same hashes", async () => {
    const keyPrefix = "t-pipeline";
    await runRedisBaseline({
      natsUrl: fx.nats.url, prefix: PREFIX, partitions: P, expected: published, redisUrl: redisServer.url, mode: "pipeline",
      maxBatch: 1024, timeoutMs: 60_000, keyPrefix, consumerPrefix: "rb-again", keepKeys: true,
    });
    expect(await mismatches(keyPrefix, reference(events), "arrival")).toEqual([]);
  });

  it("redis baseline - the check catches a wrong count, a wrong amount and a missing user", async () => {
    const keyPrefix = "t-broken";
    await runRedisBaseline({
      natsUrl: fx.nats.url, prefix: PREFIX, partitions: P, expected: published, redisUrl: redisServer.url, mode: "lua",
      timeoutMs: 60_000, keyPrefix, consumerPrefix: "rb-broken", keepKeys: true,
    });
    const refs = reference(events);
    expect(await mismatches(keyPrefix, refs, "minmax")).toEqual([]);
    const buyer = [...refs.entries()].find(([, r]) => r.hasRefund)![0];
    const [someone, other] = [...refs.keys()].filter((u) => u !== buyer);
    await redis.hincrby(`${keyPrefix}:u:${someone}`, "view", 1);
    await redis.hincrbyfloat(`${keyPrefix}:u:${buyer}`, "money_refunded", "0.01");
    await redis.del(`${keyPrefix}:u:${other}`);
    const bad = await mismatches(keyPrefix, refs, "minmax");
    expect(bad.some((l) => l.startsWith(`${someone}.view:`))).toBe(true);
    expect(bad.some((l) => l.startsWith(`${buyer}.money_refunded:`))).toBe(true);
    expect(bad.some((l) => l.startsWith(`${other}.events_applied: redis (missing)`))).toBe(true);
  });

  it("redis baseline - without keepKeys its hashes are deleted after the run (the shared Redis keeps nothing)", async () => {
    const res = await runRedisBaseline({
      natsUrl: fx.nats.url, prefix: PREFIX, partitions: P, expected: published, redisUrl: redisServer.url, mode: "lua",
      timeoutMs: 60_000, keyPrefix: "t-gone", consumerPrefix: "rb-gone",
    });
    expect(res.users).toBe(reference(events).size);
    const [, left] = await redis.scan("0", "MATCH", "t-gone:*", "COUNT", 100_000);
    expect(left).toEqual([]);
  });

  it("redis baseline - fails within its time bound when the stream holds fewer events than expected", async () => {
    await expect(runRedisBaseline({
      natsUrl: fx.nats.url, prefix: PREFIX, partitions: P, expected: published + 10, redisUrl: redisServer.url, mode: "pipeline",
      timeoutMs: 1500, keyPrefix: "t-short", consumerPrefix: "rb-short",
    })).rejects.toThrow(/events applied within 1500 ms/);
    const left = await (await nc.jetstreamManager()).consumers.list(subjects(PREFIX).eventStream).next();
    expect(left.map((c) => c.name)).toEqual([]);
  });

  it("redis baseline - measureRedisRaw reports a rate and leaves no keys", async () => {
    const perSec = await measureRedisRaw(redisServer.url, 20_000, { keyPrefix: "t-raw", users: 500 });
    expect(perSec).toBeGreaterThan(0);
    expect(Number.isFinite(perSec)).toBe(true);
    const [, left] = await redis.scan("0", "MATCH", "t-raw:*", "COUNT", 10_000);
    expect(left).toEqual([]);
  });

  it("redis baseline - measureRedisServerRaw sends exactly n HINCRBYs (raw RESP) and leaves no keys", async () => {
    const perSec = await measureRedisServerRaw(redisServer.url, 5_000, { keyPrefix: "t-sraw", users: 7, batch: 300, inFlight: 3 });
    expect(perSec).toBeGreaterThan(0);
    const [, left] = await redis.scan("0", "MATCH", "t-sraw:*", "COUNT", 10_000);
    expect(left).toEqual([]);
    // Exactly n were sent and answered: kept keys sum to n.
    await measureRedisServerRaw(redisServer.url, 5_000, { keyPrefix: "t-sraw2", users: 7, batch: 300, inFlight: 3, keepKeys: true });
    let sum = 0;
    for (let i = 0; i < 7; i++) sum += Number(await redis.hget(`t-sraw2:raw:${i}`, "f"));
    expect(sum).toBe(5_000);
  });

  it("redis baseline - redis-server launcher: clear error without the binary; stop() ends the server", async () => {
    expect(() => findRedisServerBinary("/nonexistent/redis-server")).toThrow(RedisServerNotFoundError);
    expect(() => findRedisServerBinary("/nonexistent/redis-server")).toThrow(/apt-get install redis-server/);
    const extra = await startRedisServer();
    expect(extra.url).toBe(`redis://127.0.0.1:${extra.port}`);
    expect(extra.port).not.toBe(redisServer.port);
    expect(await pingRedis(extra.port)).toBe(true);
    await extra.stop();
    await extra.stop(); // idempotent
    expect(await pingRedis(extra.port)).toBe(false);
  });
});
