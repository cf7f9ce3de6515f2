/**
 * The event path end to end, in process: a real nats-server, real LMDB in a
 * temp dir, real shard worker threads. Each test has its own subject prefix.
 */
import { describe, expect, it } from "vitest";
import { DLQ_HEADERS } from "../src/wire/headers.js";
import { partitionOf } from "../src/wire/partition.js";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { Engine } from "../src/engine.js";
import { PortraitError } from "../src/errors.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";
import { T0, countByUser, expectExactCounts, interleavedViews, uniquePrefix } from "./helpers/engine.js";
import { waitFor } from "./helpers/nats.js";
import { useEngineFixture } from "./helpers/fixture.js";

const fx = useEngineFixture();

async function setup(name: string, o: Parameters<typeof fx.startEngine>[0] = {}) {
  const prefix = uniquePrefix(name);
  const engine = await fx.startEngine({ subjectPrefix: prefix, ...o });
  const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
  return { prefix, engine, client };
}

async function metric(engine: Engine, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = engine.metrics.registry.getSingleMetric(name);
  if (!m) throw new Error(`no metric ${name}`);
  const { values } = await m.get();
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
}

describe("engine - ingest", () => {
  it("ingest - a user's events are applied in order though interleaved with other users' across partitions and workers", async () => {
    const { prefix, engine, client } = await setup("order", { maxBatchMessages: 7 });
    const events = interleavedViews(prefix, 40, 30);
    expect(new Set(events.map((e) => partitionOf(e.userId!, 4))).size).toBe(4);
    await client.publishMany(events);
    await expectExactCounts(client, countByUser(events));
    for (let u = 0; u < 40; u++) {
      const p = await client.getProfile(`${prefix}-u${u}`);
      // recentItems is order-sensitive: newest first, the last 20 of i0..i29.
      expect(p.recentItems).toEqual(Array.from({ length: 20 }, (_, k) => `i${29 - k}`));
      expect(p.lastSeenMs).toBe(T0 + 29_000);
    }
    expect(await metric(engine, "portrait_ingest_events_applied_total")).toBe(1200);
  });

  it("ingest - a duplicate publish (same event id) is applied once", async () => {
    const { prefix, client } = await setup("dup");
    const e: IEvent = { eventId: `${prefix}-e1`, userId: `${prefix}-u`, type: EventType.PURCHASE, timestampMs: T0, itemId: "x", price: 10, quantity: 2 };
    const first = await client.publish(e);
    const second = await client.publish(e);
    expect(first.duplicate).toBe(false);
    expect(second.duplicate).toBe(true);
    await client.publish({ ...e, eventId: `${prefix}-e2`, type: EventType.VIEW });
    await expectExactCounts(client, new Map([[`${prefix}-u`, 2]]));
    const p = await client.getProfile(`${prefix}-u`);
    expect(p.counts.purchase).toBe(1);
    expect(p.money.purchased).toBe(20);
  });

  it("ingest - bad events go to the dead-letter subject with a reason and the original bytes while good events apply", async () => {
    const { prefix, engine, client } = await setup("dlq");
    const s = subjects(prefix);
    const js = fx.nc.jetstream();
    const user = `${prefix}-good`;
    const part = partitionOf(user, 4);
    const enc = (e: IEvent) => pb.Event.encode(e).finish();
    const good = (i: number): IEvent => ({ eventId: `${prefix}-g${i}`, userId: user, type: EventType.VIEW, timestampMs: T0 + i, itemId: `i${i}` });
    const bad: [string, Uint8Array, number][] = [
      ["MALFORMED", new Uint8Array([0x0a, 0xff, 0xff, 0x01, 0x02]), part],
      ["MISSING_USER_ID", enc({ eventId: `${prefix}-b2`, type: EventType.VIEW, timestampMs: T0, itemId: "x" }), part],
      ["UNKNOWN_TYPE", enc({ eventId: `${prefix}-b3`, userId: user, type: 99 as EventType, timestampMs: T0, itemId: "x" }), part],
      ["BAD_PRICE", enc({ eventId: `${prefix}-b4`, userId: user, type: EventType.PURCHASE, timestampMs: T0, itemId: "x", price: -5 }), part],
      ["WRONG_PARTITION", enc({ ...good(99), eventId: `${prefix}-b5` }), (part + 1) % 4],
    ];
    await client.publish(good(0));
    for (const [i, [, bytes, p]] of bad.entries()) {
      await js.publish(s.events(p), bytes, { msgID: `${prefix}-raw-${i}` });
      await client.publish(good(i + 1));
    }
    await expectExactCounts(client, new Map([[user, bad.length + 1]]));

    const dlq = await js.consumers.get(s.dlqStream);
    const seen = new Map<string, { data: Uint8Array; detail: string; subject: string }>();
    await waitFor(async () => {
      const m = await dlq.next({ expires: 1000 });
      if (m) seen.set(m.headers!.get(DLQ_HEADERS.reason), { data: m.data, detail: m.headers!.get(DLQ_HEADERS.detail), subject: m.subject });
      return seen.size === bad.length;
    }, { message: "dead letters did not arrive" });
    for (const [reason, bytes] of bad) {
      const d = seen.get(reason);
      expect(d, reason).toBeDefined();
      expect(Buffer.from(d!.data).equals(Buffer.from(bytes))).toBe(true);
      expect(d!.subject).toBe(s.dlq(reason));
      expect(d!.detail.length).toBeGreaterThan(0);
      expect(await metric(engine, "portrait_ingest_dead_letters_total", { reason })).toBe(1);
    }
    expect((await client.getProfile(user)).counts.view).toBe(bad.length + 1);
  });

  it("ingest - state survives a restart on the same data dir, which resumes after the committed sequence", async () => {
    const { prefix, engine, client } = await setup("restart");
    const events = interleavedViews(prefix, 10, 5);
    await client.publishMany(events);
    await expectExactCounts(client, countByUser(events));
    const before = await client.getProfile(`${prefix}-u3`);
    await engine.close();

    const again = await fx.startEngine({ subjectPrefix: prefix, dataDir: engine.config.dataDir });
    expect(await client.getProfile(`${prefix}-u3`)).toEqual(before);
    const more = interleavedViews(prefix, 10, 7).slice(50);
    await client.publishMany(more);
    await expectExactCounts(client, countByUser([...events, ...more]));
    // Queries see a batch's profiles before its commit settles and the counter moves: wait for it, then check it exactly.
    await waitFor(async () => (await metric(again, "portrait_ingest_events_applied_total")) >= more.length, { message: "the applied counter did not reach the events published" });
    expect(await metric(again, "portrait_ingest_events_applied_total")).toBe(more.length);
    expect(await metric(again, "portrait_ingest_events_skipped_total")).toBe(0);
  });
});

describe("engine - queries", () => {
  it("api - an unknown user gets UNKNOWN_USER, a malformed query BAD_REQUEST, both as typed errors", async () => {
    const { prefix, client } = await setup("api");
    const err = await client.getProfile(`${prefix}-nobody`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PortraitError);
    expect((err as PortraitError).code).toBe("UNKNOWN_USER");

    const s = subjects(prefix);
    const bad = await fx.nc.request(s.profileGet, new Uint8Array([0x0a, 0x05, 0x61]), { timeout: 5000 });
    expect(bad.headers?.get("Portrait-Error-Code")).toBe("BAD_REQUEST");
    expect(bad.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect(pb.ErrorReply.decode(bad.data).code).toBe("BAD_REQUEST");

    const empty = await fx.nc.request(s.profileGet, new TextEncoder().encode('{"userId":""}'), { timeout: 5000 });
    expect(empty.headers?.get("Portrait-Error-Code")).toBe("BAD_REQUEST");
    expect(JSON.parse(new TextDecoder().decode(empty.data))).toMatchObject({ code: "BAD_REQUEST" });
  });

  it("api - a JSON query gets a JSON profile with counts keyed by event-type name", async () => {
    const { prefix, client } = await setup("json");
    const user = `${prefix}-u`;
    await client.publish({ eventId: `${prefix}-1`, userId: user, type: EventType.ADD_TO_CART, timestampMs: T0, itemId: "sku", price: 3 });
    await expectExactCounts(client, new Map([[user, 1]]));
    const r = await fx.nc.request(subjects(prefix).profileGet, new TextEncoder().encode(JSON.stringify({ userId: user })), { timeout: 5000 });
    const body = JSON.parse(new TextDecoder().decode(r.data)) as { profile: { counts: Record<string, number>; userId: string } };
    expect(body.profile.userId).toBe(user);
    expect(body.profile.counts.add_to_cart).toBe(1);
    expect(body.profile.counts.view).toBe(0);
  });

  it("api - a burst above the in-flight bound gets OVERLOADED replies and the engine recovers", async () => {
    const { prefix, client } = await setup("overload", { maxInflightQueries: 1 });
    const user = `${prefix}-u`;
    await client.publish({ eventId: `${prefix}-1`, userId: user, type: EventType.VIEW, timestampMs: T0, itemId: "a" });
    await expectExactCounts(client, new Map([[user, 1]]));
    const results = await Promise.allSettled(Array.from({ length: 200 }, () => client.getProfile(user)));
    const codes = results.map((r) => (r.status === "fulfilled" ? "OK" : (r.reason as PortraitError).code));
    expect(codes).toContain("OVERLOADED");
    expect(codes).toContain("OK");
    expect(codes.every((c) => c === "OK" || c === "OVERLOADED")).toBe(true);
    expect((await client.getProfile(user)).eventsApplied).toBe(1);
  });

  it("api - the service answers NATS services discovery", async () => {
    const { prefix } = await setup("srv");
    const r = await fx.nc.request(`$SRV.INFO.${prefix}`, undefined, { timeout: 5000 });
    const info = JSON.parse(new TextDecoder().decode(r.data)) as { name: string; endpoints: { subject: string }[] };
    expect(info.name).toBe(prefix);
    expect(info.endpoints.map((e) => e.subject)).toContain(subjects(prefix).profileGet);
  });
});

describe("engine - operations", () => {
  it("ops - /readyz and /healthz answer 200 while ready, /metrics exposes the ingest counters, and close stops the endpoint", async () => {
    const { prefix, engine, client } = await setup("ops", { httpPort: 0 });
    await client.publish({ eventId: `${prefix}-1`, userId: `${prefix}-u`, type: EventType.VIEW, timestampMs: T0, itemId: "a" });
    await expectExactCounts(client, new Map([[`${prefix}-u`, 1]]));
    const base = `http://127.0.0.1:${engine.httpPort}`;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    // The applied counter moves when the batch settles, after its profile is visible: wait for it.
    const text = await waitFor(async () => {
      const t = await (await fetch(`${base}/metrics`)).text();
      return /^portrait_ingest_events_applied_total 1$/m.test(t) ? t : undefined;
    });
    expect(text).toMatch(/^portrait_ingest_events_applied_total 1$/m);
    expect(text).toMatch(/^portrait_engine_ready 1$/m);
    expect(text).toContain("portrait_shard_actors_cached{shard=\"");
    expect(text).toMatch(/^portrait_ingest_event_time_watermark_seconds 1714521600$/m);
    // The one batch's way through the stages of the freshness path, each observed once.
    for (const stage of ["jetstream", "gather", "window", "post", "apply", "commit", "return", "settle", "total"]) {
      expect(text).toMatch(new RegExp(`^portrait_ingest_stage_seconds_count\\{stage="${stage}"\\} 1$`, "m"));
    }
    await engine.close();
    await expect(fetch(`${base}/readyz`)).rejects.toThrow();
  });
});

