/**
 * Hot swap in a running engine, through the registry on a real nats-server:
 * models promoted while requests are in flight are switched without a
 * restart, no request fails, and every reply was produced entirely by the
 * old versions or entirely by the new ones (the versions it names match its
 * numbers). The old and new versions are seeded, distinguishable models.
 */
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { PortraitClient } from "../src/client/portrait-client.js";
import { BUNDLED_MODELS_DIR, currentVersion, type ModelManifest } from "../src/models/artifacts.js";
import { ModelRegistry } from "../src/models/registry.js";
import type { DeepFmArchitecture } from "../src/models/deepfm-spec.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { writeDeepFmFixture } from "./helpers/deepfm-fixture.js";
import { T0, countByUser, expectExactCounts, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { writeLstmFixture } from "./helpers/models.js";
import { waitFor } from "./helpers/nats.js";

const fx = useEngineFixture();

/** 20 users browsing 30 items in 3 categories; each ends with a purchase. */
function shop(prefix: string): IEvent[] {
  const out: IEvent[] = [];
  let n = 0;
  for (let u = 0; u < 20; u++) {
    for (let k = 0; k < 6; k++) {
      const item = (u * 7 + k * 3) % 30;
      out.push({
        eventId: `${prefix}-${n++}`, userId: `${prefix}-u${u}`, type: k === 5 ? EventType.PURCHASE : k === 4 ? EventType.ADD_TO_CART : EventType.VIEW,
        timestampMs: T0 + u * 60_000 + k * 5_000, itemId: `it${item}`, categoryId: `cat${item % 3}`, brand: `b${item % 4}`, price: 5 + item,
        quantity: 1, orderId: k === 5 ? `o${u}` : "", currency: "EUR",
      });
    }
  }
  return out;
}

function copyBundled(root: string, name: string): string {
  const v = currentVersion(BUNDLED_MODELS_DIR, name)!;
  cpSync(join(BUNDLED_MODELS_DIR, name, v), join(root, name, v), { recursive: true });
  writeFileSync(join(root, name, "CURRENT"), v + "\n");
  return v;
}

interface Load { stop: () => Promise<void>; errors: unknown[] }

/** `workers` loops calling `call` until stopped; every outcome goes to `record`, every error to `errors`. */
function load(workers: number, call: (i: number) => Promise<void>): Load {
  let running = true;
  const errors: unknown[] = [];
  let i = 0;
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      try {
        await call(i++);
      } catch (err) {
        errors.push(err);
      }
    }
  });
  return { errors, stop: async () => { running = false; await Promise.all(loops); } };
}

describe("model swap - hot swap under concurrent requests", () => {
  it("swap - a DeepFM and a churn model promoted under load: no failure, each reply entirely old or entirely new", async () => {
    const prefix = uniquePrefix("swap");
    const modelsDir = fx.tmpDir("portrait-swap-models");
    const lstm = copyBundled(modelsDir, "lstm");
    const deepfm1 = copyBundled(modelsDir, "deepfm");
    const churn1 = copyBundled(modelsDir, "churn");
    // The new ranker: seeded weights of the bundled architecture and feature schema (same LSTM pairing), so its scores differ.
    const bundledDeepfm = JSON.parse(readFileSync(join(modelsDir, "deepfm", deepfm1, "manifest.json"), "utf8")) as ModelManifest;
    const dfDir = writeDeepFmFixture(fx.tmpDir("portrait-swap-new"), "fx.2", { arch: bundledDeepfm.architecture as unknown as DeepFmArchitecture, seed: 7 });
    const dfManifest = JSON.parse(readFileSync(join(dfDir, "manifest.json"), "utf8")) as ModelManifest;
    writeFileSync(join(dfDir, "manifest.json"), JSON.stringify({ ...dfManifest, features: bundledDeepfm.features }));
    // The new churn model: the bundled one with another bias.
    const churnDir = join(fx.tmpDir("portrait-swap-new"), "churn", "c.2");
    cpSync(join(modelsDir, "churn", churn1), churnDir, { recursive: true });
    const cm = JSON.parse(readFileSync(join(churnDir, "model.json"), "utf8")) as { bias: number };
    writeFileSync(join(churnDir, "model.json"), JSON.stringify({ ...cm, bias: cm.bias + 2 }));
    const cmf = JSON.parse(readFileSync(join(churnDir, "manifest.json"), "utf8")) as ModelManifest;
    writeFileSync(join(churnDir, "manifest.json"), JSON.stringify({ ...cmf, version: "c.2" }));

    const engine = await fx.startEngine({ subjectPrefix: prefix, modelsDir, modelRegistry: true, recs: { ranking: { policy: "deepfm" } } });
    expect(engine.models!.served.deepfm!.from).toBe("registry");
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const events = shop(prefix);
    await client.publishMany(events);
    await expectExactCounts(client, countByUser(events));
    await waitFor(async () => (await client.recommend(`${prefix}-nobody`, { k: 30, candidates: 100 })).items.length >= 20, { timeoutMs: 30_000, message: "recs index did not fill" });

    const users = Array.from({ length: 8 }, (_, u) => `${prefix}-u${u}`);
    const asOfMs = T0 + 86_400_000;
    type Rec = { user: string; version: string; lstm: string; items: string[]; scores: number[] };
    type Prof = { user: string; churnVersion: string; churnRisk: number };
    const recs: Rec[] = [];
    const profs: Prof[] = [];
    const callRec = async (user: string) => {
      const r = await client.recommend(user, { k: 5 });
      recs.push({ user, version: r.modelVersion, lstm: r.lstmVersion, items: r.items.map((x) => x.itemId), scores: r.items.map((x) => x.score) });
    };
    const callProf = async (user: string) => {
      const p = await client.getProfile(user, { asOfMs });
      profs.push({ user, churnVersion: p.predictions!.churnVersion, churnRisk: p.predictions!.churnRisk });
    };
    // References of the old versions.
    for (const u of users) {
      await callRec(u);
      await callProf(u);
    }
    const reg = await ModelRegistry.open(fx.nc, { prefix });
    await reg.push(dfDir);
    await reg.push(churnDir);

    const l = load(6, (i) => (i % 2 === 0 ? callRec(users[i % users.length]!) : callProf(users[(i >> 1) % users.length]!)));
    await waitFor(() => recs.length > 40, { message: "no load" });
    await reg.promote("deepfm", "fx.2", { force: true, reason: "test: swap under load" });
    await reg.promote("churn", "c.2", { force: true, reason: "test: swap under load" });
    await waitFor(() => engine.models!.served.deepfm?.version === "fx.2" && engine.models!.served.churn?.version === "c.2", { timeoutMs: 30_000, message: "the engine did not swap" });
    const after = recs.length;
    await waitFor(() => recs.length > after + 40, { message: "no load after the swap" });
    await l.stop();
    expect(l.errors).toEqual([]);
    // References of the new versions.
    for (const u of users) {
      await callRec(u);
      await callProf(u);
    }

    // Every reply names a version, and its numbers are that version's for that user.
    const refRec = new Map<string, Rec>();
    for (const r of recs) {
      expect([deepfm1, "fx.2"]).toContain(r.version);
      expect(r.lstm).toBe(lstm);
      const key = `${r.version} ${r.user}`;
      const ref = refRec.get(key);
      if (ref === undefined) refRec.set(key, r);
      else {
        expect(r.items, key).toEqual(ref.items);
        r.scores.forEach((s, i) => expect(Math.abs(s - ref.scores[i]!), key).toBeLessThan(1e-5));
      }
    }
    for (const u of users) {
      const a = refRec.get(`${deepfm1} ${u}`)!.scores;
      const b = refRec.get(`fx.2 ${u}`)!.scores;
      expect(Math.max(...a.map((s, i) => Math.abs(s - b[i]!))), "the two rankers are told apart by their scores").toBeGreaterThan(1e-3);
    }
    const refProf = new Map<string, number>();
    for (const p of profs) {
      expect([churn1, "c.2"]).toContain(p.churnVersion);
      const key = `${p.churnVersion} ${p.user}`;
      const ref = refProf.get(key);
      if (ref === undefined) refProf.set(key, p.churnRisk);
      else expect(p.churnRisk, key).toBe(ref);
    }
    for (const u of users) expect(refProf.get(`${churn1} ${u}`)).not.toBe(refProf.get(`c.2 ${u}`));
    // Both versions served during the run, and the last replies are the new ones.
    expect(new Set(recs.map((r) => r.version))).toEqual(new Set([deepfm1, "fx.2"]));
    expect(recs.at(-1)!.version).toBe("fx.2");

    // Rollback swaps back.
    await reg.rollback("deepfm");
    await waitFor(() => engine.models!.served.deepfm?.version === deepfm1, { timeoutMs: 30_000, message: "the engine did not roll back" });
    const back = await client.recommend(users[0]!, { k: 5 });
    expect(back.modelVersion).toBe(deepfm1);
    expect(back.items.map((x) => x.itemId)).toEqual(refRec.get(`${deepfm1} ${users[0]}`)!.items);
  }, 120_000);

  it("swap - a new LSTM: profiles switch whole, states re-encoded from the timeline, no failed request", async () => {
    const prefix = uniquePrefix("swapl");
    const modelsDir = fx.tmpDir("portrait-swap-lstm");
    await writeLstmFixture(modelsDir, "fixture.1", ["it0", "it3", "it7"], ["cat0", "cat1"], 1);
    const v2 = await writeLstmFixture(fx.tmpDir("portrait-swap-lstm2"), "fixture.2", ["it0", "it3", "it7"], ["cat0", "cat1"], 99);
    const engine = await fx.startEngine({ subjectPrefix: prefix, modelsDir, modelRegistry: true, deepfmModel: "off", churnModel: "off" });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const events = shop(prefix);
    await client.publishMany(events);
    await expectExactCounts(client, countByUser(events));
    const users = Array.from({ length: 8 }, (_, u) => `${prefix}-u${u}`);
    const seen: Array<{ user: string; version: string; p: number }> = [];
    const l = load(4, async (i) => {
      const user = users[i % users.length]!;
      const p = await client.getProfile(user);
      seen.push({ user, version: p.predictions!.lstmVersion, p: p.predictions!.purchasePropensity });
    });
    await waitFor(() => seen.length > 40, { message: "no load" });
    const reg = await ModelRegistry.open(fx.nc, { prefix });
    await reg.push(v2);
    await reg.promote("lstm", "fixture.2", { force: true });
    await waitFor(() => engine.models!.served.lstm?.version === "fixture.2", { timeoutMs: 30_000, message: "the engine did not swap" });
    const after = seen.length;
    await waitFor(() => seen.length > after + 40, { message: "no load after the swap" });
    await l.stop();
    expect(l.errors).toEqual([]);
    const ref = new Map<string, number>();
    for (const s of seen) {
      expect(["fixture.1", "fixture.2"]).toContain(s.version);
      const key = `${s.version} ${s.user}`;
      if (!ref.has(key)) ref.set(key, s.p);
      else expect(s.p, key).toBe(ref.get(key));
    }
    for (const u of users) expect(ref.get(`fixture.1 ${u}`)).not.toBe(ref.get(`fixture.2 ${u}`));
    // A new event steps the re-encoded state with the new version and stores it.
    const more: IEvent = { eventId: `${prefix}-more`, userId: users[0], type: EventType.VIEW, timestampMs: T0 + 3_600_000, itemId: "it3", categoryId: "cat0" };
    await client.publishMany([more]);
    await waitFor(async () => (await client.getProfile(users[0]!)).counts.view === 5, { message: "the event was not applied" });
    expect((await client.getProfile(users[0]!)).predictions!.lstmVersion).toBe("fixture.2");
  }, 90_000);
});
