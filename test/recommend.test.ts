/**
 * Recommendations over request-reply, end to end: shards give the user's
 * context, the recs worker the candidates and their DeepFM rows, the
 * inference pool the scores (the bundled DeepFM on the best backend here).
 */
import { describe, expect, it } from "vitest";
import { PortraitClient } from "../src/client/portrait-client.js";
import { PortraitError } from "../src/errors.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";
import { T0, countByUser, expectExactCounts, uniquePrefix } from "./helpers/engine.js";
import { waitFor } from "./helpers/nats.js";
import { useEngineFixture } from "./helpers/fixture.js";

const fx = useEngineFixture();

/** A small shop: 40 users browsing 30 items in 3 categories, in sessions of consecutive items. */
function shop(prefix: string): IEvent[] {
  const out: IEvent[] = [];
  let n = 0;
  for (let u = 0; u < 40; u++) {
    for (let k = 0; k < 6; k++) {
      const item = (u * 7 + k * 3) % 30;
      out.push({
        eventId: `${prefix}-${n++}`, userId: `${prefix}-u${u}`, type: k === 5 ? EventType.PURCHASE : k === 4 ? EventType.ADD_TO_CART : EventType.VIEW,
        timestampMs: T0 + u * 60_000 + k * 5_000, itemId: `it${item}`, categoryId: `cat${item % 3}`, brand: `b${item % 4}`, price: 5 + item,
        quantity: 1, orderId: k === 5 ? `o${u}` : "",
      });
    }
  }
  return out;
}

async function setup(name: string, o: Parameters<typeof fx.startEngine>[0] = {}) {
  const prefix = uniquePrefix(name);
  const engine = await fx.startEngine({ subjectPrefix: prefix, ...o });
  const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
  const events = shop(prefix);
  await client.publishMany(events);
  await expectExactCounts(client, countByUser(events));
  // The recs worker learns from committed batches asynchronously: wait until it knows every item.
  await waitFor(async () => (await client.recommend(`${prefix}-nobody`, { k: 30, candidates: 100 })).items.length >= 20, { timeoutMs: 30_000, message: "recs index did not fill" });
  return { prefix, engine, client, events };
}

describe("recommend", () => {
  it("recommend - with the deepfm policy a known user gets DeepFM-ranked items with reasons; an unknown user gets popular items, not an error", async () => {
    const { prefix, client } = await setup("rec", { recs: { ranking: { policy: "deepfm" } } });
    const r = await client.recommend(`${prefix}-u3`, { k: 5 });
    expect(r.knownUser).toBe(true);
    expect(r.items.length).toBe(5);
    expect(r.modelVersion).not.toBe("");
    expect(r.backend).toBe("onnxruntime");
    expect(r.requestId).toMatch(/^[0-9a-f-]{36}$/);
    for (let i = 1; i < r.items.length; i++) expect(r.items[i - 1]!.score).toBeGreaterThanOrEqual(r.items[i]!.score);
    for (const it of r.items) {
      expect(it.reason).not.toBe("");
      expect(it.sources.length).toBeGreaterThan(0);
      expect(it.score).toBeGreaterThan(0);
      expect(it.score).toBeLessThan(1);
    }
    expect(Object.values(r.candidateSources).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(r.candidates);
    const unknown = await client.recommend(`${prefix}-nobody`, { k: 5 });
    expect(unknown.knownUser).toBe(false);
    expect(unknown.items.length).toBe(5);
    expect(unknown.items.every((it) => it.reason === "popular" || it.sources.includes("trending"))).toBe(true);
  });

  it("recommend - by default (no policy file) the bundled DeepFM is loaded but not served: the reply names the source order", async () => {
    const { prefix, client } = await setup("recp");
    const r = await client.recommend(`${prefix}-u3`, { k: 5 });
    expect(r.knownUser).toBe(true);
    expect(r.modelVersion).toBe("ranking source:sknn");
    expect(r.backend).toBe("none");
    for (let i = 1; i < r.items.length; i++) expect(r.items[i - 1]!.score).toBeGreaterThanOrEqual(r.items[i]!.score);
    expect(r.items.length).toBe(5);
  });

  it("recommend - excluded, unavailable and just-bought items never appear; availability survives a restart", async () => {
    const { prefix, engine, client, events } = await setup("recx");
    const user = `${prefix}-u5`;
    const bought = events.find((e) => e.userId === user && e.type === EventType.PURCHASE)!.itemId!;
    const all = await client.recommend(user, { k: 30, candidates: 100 });
    const [a, b] = all.items.map((i) => i.itemId).filter((id) => id !== bought);
    await client.upsertCatalog({ itemId: a!, available: pb.Availability.UNAVAILABLE });
    const check = async () => {
      const r = await client.recommend(user, { k: 30, candidates: 100, exclude: [b!] });
      const ids = r.items.map((i) => i.itemId);
      expect(ids).not.toContain(a);
      expect(ids).not.toContain(b);
      expect(ids).not.toContain(bought);
      expect(ids.length).toBeGreaterThan(5);
    };
    await check();
    // A restart on the same data dir and stream replays the catalog: the item stays unavailable.
    await engine.close();
    await fx.startEngine({ subjectPrefix: prefix, dataDir: engine.config.dataDir });
    await client.publishMany(shop(prefix).map((e) => ({ ...e, eventId: `${e.eventId}-again`, timestampMs: (e.timestampMs as number) + 3_600_000 })));
    await waitFor(async () => (await client.recommend(user, { k: 30, candidates: 100 })).items.length > 5, { timeoutMs: 30_000, message: "no items after restart" });
    await check();
  });

  it("recommend - session sources are rebuilt from the live stream after a restart: empty at first (the documented difference), back with new sessions", async () => {
    const { prefix, engine, client } = await setup("recr");
    const user = `${prefix}-u39`;
    // u39's session is the newest (within the 30-minute gap of the event clock): session-kNN and the rules find candidates.
    const before = await client.recommend(user, { k: 10, candidates: 100 });
    expect(before.candidateSources.sknn ?? 0).toBeGreaterThan(0);
    await engine.close();
    await fx.startEngine({ subjectPrefix: prefix, dataDir: engine.config.dataDir });
    const after = await client.recommend(user, { k: 10, candidates: 100 });
    expect(after.knownUser).toBe(true);
    expect(after.candidateSources.sknn).toBeUndefined();
    expect(after.candidateSources.rules).toBeUndefined();
    // New sessions an hour later rebuild them.
    const events = shop(prefix).map((e) => ({ ...e, eventId: `${e.eventId}-r`, timestampMs: (e.timestampMs as number) + 3_600_000 }));
    await client.publishMany(events);
    await waitFor(async () => ((await client.recommend(user, { k: 10, candidates: 100 })).candidateSources.sknn ?? 0) > 0, {
      timeoutMs: 30_000, message: "session-kNN found nothing after new sessions",
    });
  });

  it("recommend - concurrent requests (micro-batched) get the same scores as requests one at a time", async () => {
    const { prefix, client } = await setup("recb", { recs: { ranking: { policy: "deepfm" } } });
    const users = Array.from({ length: 24 }, (_, u) => `${prefix}-u${u}`);
    const asOfMs = T0 + 3_600_000;
    const alone: Awaited<ReturnType<typeof client.recommend>>[] = [];
    for (const u of users) alone.push(await client.recommend(u, { k: 10, asOfMs }));
    const together = await Promise.all(users.map((u) => client.recommend(u, { k: 10, asOfMs })));
    together.forEach((r, i) => {
      expect(r.items.map((x) => x.itemId)).toEqual(alone[i]!.items.map((x) => x.itemId));
      r.items.forEach((x, j) => expect(x.score).toBeCloseTo(alone[i]!.items[j]!.score, 6));
    });
  });

  it("recommend - under concurrent ingest no reply holds an excluded, an unavailable or an already bought item", async () => {
    const { prefix, client } = await setup("recx");
    await client.upsertCatalog({ itemId: "it1", available: pb.Availability.UNAVAILABLE });
    await client.upsertCatalog({ itemId: "it2", available: pb.Availability.UNAVAILABLE });
    const excluded = ["it3", "it4"];
    const never = new Set(["it1", "it2", ...excluded]);
    // More browsing and buying while the requests run, the unavailable items among the viewed ones.
    const more: IEvent[] = [];
    for (let n = 0; n < 1_500; n++) {
      const u = n % 40;
      const item = (n * 11) % 30;
      more.push({
        eventId: `${prefix}-more-${n}`, userId: `${prefix}-u${u}`, type: n % 10 === 9 ? EventType.PURCHASE : EventType.VIEW,
        timestampMs: T0 + 3_600_000 + n * 1_000, itemId: `it${item}`, categoryId: `cat${item % 3}`, price: 5 + item, quantity: 1,
      });
    }
    const ingest = client.publishMany(more);
    let replies = 0;
    let served = 0;
    for (let round = 0; round < 3; round++) {
      await Promise.all(Array.from({ length: 40 }, async (_, u) => {
        const bought = `it${(u * 7 + 15) % 30}`; // the user's purchase in shop(): excludePurchased is on by default
        const r = await client.recommend(`${prefix}-u${u}`, { k: 20, exclude: excluded });
        replies++;
        served += r.items.length;
        for (const it of r.items) {
          expect(never.has(it.itemId), `${it.itemId} served to u${u}`).toBe(false);
          expect(it.itemId, `u${u} is served the item it bought`).not.toBe(bought);
        }
      }));
    }
    await ingest;
    expect(replies).toBe(120);
    // Real lists were checked: 30 items less the 4 never served and the one bought leave 20 for most users.
    expect(served).toBeGreaterThan(120 * 10);
  });

  it("recommend - a burst larger than the inference queue gets OVERLOADED replies, and the engine recovers", async () => {
    // A partial batch waits up to 500 ms for more rows (maxDelayMs) while under maxBatchRows = maxQueuedRows: the burst's
    // first requests stay queued, so the third one overflows however fast the worker scores (at maxDelayMs 0 a fast worker
    // could empty the queue between the burst's arrivals, and the burst then got no OVERLOADED).
    const { prefix, client } = await setup("reco", { inference: { maxQueuedRows: 256, maxBatchRows: 256, maxDelayMs: 500 }, recs: { ranking: { policy: "deepfm" } } });
    const results = await Promise.allSettled(Array.from({ length: 60 }, (_, i) => client.recommend(`${prefix}-u${i % 40}`, { k: 5, candidates: 100 })));
    const rejected = results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason as PortraitError);
    expect(rejected.length).toBeGreaterThan(0);
    expect(rejected.every((e) => e instanceof PortraitError && e.code === "OVERLOADED")).toBe(true);
    expect(results.some((r) => r.status === "fulfilled")).toBe(true);
    const after = await client.recommend(`${prefix}-u1`, { k: 5, candidates: 100 });
    expect(after.items.length).toBe(5);
  });

  it("recommend - beyond the in-flight bound for recommendations, requests get OVERLOADED at once; profiles still answer", async () => {
    const { prefix, client } = await setup("recin", { maxInflightRecommends: 2 });
    const results = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => client.recommend(`${prefix}-u${i % 40}`, { k: 5 })));
    const rejected = results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason as PortraitError);
    expect(rejected.length).toBeGreaterThan(0);
    expect(rejected.every((e) => e.code === "OVERLOADED" && /recommendations in flight/.test(e.message))).toBe(true);
    expect((await client.getProfile(`${prefix}-u1`)).eventsApplied).toBe(6);
    expect((await client.recommend(`${prefix}-u1`, { k: 5 })).items.length).toBe(5);
  });

  it("recommend - bad requests get BAD_REQUEST; a bad catalog upsert is refused", async () => {
    const { client } = await setup("recbad");
    await expect(client.recommend("", {})).rejects.toMatchObject({ code: "BAD_REQUEST" });
    await expect(client.recommend("u", { k: 1000 })).rejects.toMatchObject({ code: "BAD_REQUEST" });
    const reply = await fx.nc.request(client.subjects.recommend, new TextEncoder().encode('{"userId": 5}'));
    expect(reply.headers?.get("Portrait-Error-Code")).toBe("BAD_REQUEST");
    await expect(client.upsertCatalog({ itemId: "" })).rejects.toMatchObject({ code: "BAD_REQUEST" });
    await expect(client.upsertCatalog({ itemId: "x", price: -3 })).rejects.toMatchObject({ code: "BAD_REQUEST" });
  });

  it("feedback - rec_impression and rec_click events change the online CTR of their model version", async () => {
    const { prefix, engine, client } = await setup("recfb");
    const r = await client.recommend(`${prefix}-u2`, { k: 4 });
    const fb: IEvent[] = r.items.map((it, i) => ({
      eventId: `${prefix}-imp${i}`, userId: `${prefix}-u2`, type: EventType.REC_IMPRESSION, timestampMs: T0 + 7_200_000 + i,
      itemId: it.itemId, recRequestId: r.requestId, modelVersion: r.modelVersion,
    }));
    fb.push({ eventId: `${prefix}-clk`, userId: `${prefix}-u2`, type: EventType.REC_CLICK, timestampMs: T0 + 7_200_100, itemId: r.items[0]!.itemId, recRequestId: r.requestId, modelVersion: r.modelVersion });
    await client.publishMany(fb);
    await waitFor(async () => {
      const m = (await engine.metrics.recCtr.get()).values.find((v) => v.labels.model_version === r.modelVersion);
      return m !== undefined && Math.abs(m.value - 1 / 4) < 1e-9;
    }, { timeoutMs: 30_000, message: "CTR metric did not reach 1/4" });
  });
});
