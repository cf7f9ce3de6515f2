/**
 * The engine runs the models: every applied event steps the user's LSTM once
 * (batched in waves), the state is committed to LMDB with the profile, and
 * profile replies carry the predictions and the model version.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { PortraitClient } from "../src/client/portrait-client.js";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { applyEvent, newUserState } from "../src/actors/user-profile.js";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { ChurnModel } from "../src/models/churn-model.js";
import { LstmRuntime } from "../src/models/lstm-runtime.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { T0, countByUser, expectExactCounts, removeDir, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { evaluateOnStream, writeLstmFixture } from "./helpers/models.js";

const fx = useEngineFixture();
let modelsDir: string;
let lstmDir: string;

beforeAll(async () => {
  modelsDir = fx.tmpDir("portrait-models");
  lstmDir = await writeLstmFixture(modelsDir, "fixture.1", ["i0", "i1", "i2", "i3"], ["c0", "c1", "c2"]);
}, 60_000);

/** Users with several events each in one publish burst, so a batch holds several waves per user. */
function events(prefix: string, users: number, perUser: number, from = 0): IEvent[] {
  const out: IEvent[] = [];
  for (let k = from; k < from + perUser; k++) {
    for (let u = 0; u < users; u++) {
      out.push({
        eventId: `${prefix}-u${u}-e${k}`, userId: `${prefix}-u${u}`,
        type: k % 5 === 4 ? EventType.ADD_TO_CART : EventType.VIEW,
        timestampMs: T0 + k * 7_000 + u * 13, itemId: `i${(k + u) % 5}`, categoryId: `c${(k * u) % 4}`, price: 3 + k,
      });
    }
  }
  return out;
}

/** The reference: the runtime stepped offline over one user's events, one at a time, as the engine steps (stepHalf: each state rounded to what a profile stores). */
function offline(rt: LstmRuntime, evs: IEvent[]) {
  const s = rt.initialState();
  let prev = 0;
  for (const e of evs) {
    rt.stepHalf([s], [{ type: e.type!, timestampMs: e.timestampMs as number, itemId: e.itemId ?? "", categoryId: e.categoryId ?? "", price: e.price ?? 0 }], [prev]);
    prev = Math.max(prev, e.timestampMs as number);
  }
  return rt.predict(s);
}

describe("engine - models", () => {
  it("lstm - live predictions equal stepping each user's events offline, and the state survives a restart", async () => {
    const prefix = uniquePrefix("lstm");
    const dataDir = fx.tmpDir("portrait-engine");
    const opts = { subjectPrefix: prefix, dataDir, modelsDir, lstmModel: "current", churnModel: "off" };
    evaluateOnStream(lstmDir, prefix);
    let engine = await fx.startEngine(opts);
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const first = events(prefix, 6, 8);
    await client.publishMany(first);
    await expectExactCounts(client, countByUser(first));
    const rt = LstmRuntime.load(lstmDir);
    const check = async (all: IEvent[]) => {
      for (let u = 0; u < 6; u++) {
        const user = `${prefix}-u${u}`;
        const p = await client.getProfile(user);
        const want = offline(rt, all.filter((e) => e.userId === user));
        expect(p.predictions?.nextCategory).toMatchObject({ model: "lstm", version: "fixture.1", reason: "" });
        expect(p.predictions?.nextCategory.probability).toBeCloseTo(want.nextCategories[0]!.score, 12);
        expect(p.predictions?.nextCategories.map((c) => c.key)).toEqual(want.nextCategories.map((c) => c.key));
        expect(p.predictions?.nextCategories.map((c) => c.score)).toEqual(want.nextCategories.map((c) => expect.closeTo(c.score, 12)));
      }
    };
    await check(first);
    const steps = (await engine.metrics.lstmSteps.get()).values[0]?.value;
    expect(steps).toBe(first.length);
    expect((await engine.metrics.modelInfo.get()).values).toEqual([expect.objectContaining({ labels: { model: "lstm", version: "fixture.1" }, value: 1 })]);
    await engine.close();

    // A new engine on the same data dir continues each user's state from LMDB.
    engine = await fx.startEngine(opts);
    const more = events(prefix, 6, 3, 8);
    await client.publishMany(more);
    const all = [...first, ...more];
    await expectExactCounts(client, countByUser(all));
    await check(all);
  });

  it("lstm - a state stored under another model version is re-encoded from the profile's timeline on first touch", async () => {
    const prefix = uniquePrefix("lstmv");
    const dataDir = fx.tmpDir("portrait-engine");
    const v2 = await writeLstmFixture(modelsDir, "fixture.2", ["i0", "i1", "i2", "i3"], ["c0", "c1", "c2"], 99);
    evaluateOnStream(v2, prefix);
    let engine = await fx.startEngine({ subjectPrefix: prefix, dataDir, modelsDir, lstmModel: "fixture.1", churnModel: "off" });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const first = events(prefix, 2, 4);
    await client.publishMany(first);
    await expectExactCounts(client, countByUser(first));
    await engine.close();
    engine = await fx.startEngine({ subjectPrefix: prefix, dataDir, modelsDir, lstmModel: "fixture.2", churnModel: "off" });
    const more = events(prefix, 2, 2, 4);
    await client.publishMany(more);
    await expectExactCounts(client, countByUser([...first, ...more]));
    const p = await client.getProfile(`${prefix}-u1`);
    const rt2 = LstmRuntime.load(v2);
    // fixture.2 first re-encodes the events before the switch from the timeline (type, time, item: no category or price there),
    // then steps the events after it as usual; the gap of each is measured from the event before.
    const s = rt2.initialState();
    const u1 = [...first, ...more].filter((e) => e.userId === `${prefix}-u1`);
    for (let i = 0; i < u1.length; i++) {
      const e = u1[i]!;
      const kept = i < 4 ? { categoryId: "", price: 0 } : { categoryId: e.categoryId ?? "", price: e.price ?? 0 };
      rt2.stepHalf([s], [{ type: e.type!, timestampMs: e.timestampMs as number, itemId: e.itemId ?? "", ...kept }], [i === 0 ? 0 : u1[i - 1]!.timestampMs as number]);
    }
    expect(p.predictions?.nextCategory.version).toBe("fixture.2");
    expect(p.predictions?.nextCategory.probability).toBeCloseTo(rt2.predict(s).nextCategories[0]!.score, 12);
  });

  it("churn - the bundled churn model (no evaluation on this shop) is served as null with the reason; evaluated here and calibrated, it is the model on the live profile; a user who never bought has none", async () => {
    const prefix = uniquePrefix("churn");
    const dir = fx.tmpDir("portrait-models-churn");
    const dataDir = fx.tmpDir("portrait-engine");
    cpSync(join(BUNDLED_MODELS_DIR, "churn"), join(dir, "churn"), { recursive: true });
    let engine = await fx.startEngine({ subjectPrefix: prefix, dataDir, modelsDir: dir, lstmModel: "off" });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const buyer = `${prefix}-buyer`;
    const evs: IEvent[] = [0, 20, 45].map((d, i) => ({
      eventId: `${prefix}-p${i}`, userId: buyer, type: EventType.PURCHASE, timestampMs: T0 + d * 86_400_000,
      itemId: `sku${i}`, price: 12.5, quantity: 2 + i, orderId: `o${i}`, currency: "GBP",
    }));
    evs.push({ eventId: `${prefix}-v`, userId: `${prefix}-viewer`, type: EventType.VIEW, timestampMs: T0, itemId: "sku0" });
    await client.publishMany(evs);
    await expectExactCounts(client, countByUser(evs));
    const asOfMs = T0 + 60 * 86_400_000;
    const modelDir = resolveModel(dir, "churn").dir;
    const bundled = ChurnModel.load(modelDir);
    const unearned = (await client.getProfile(buyer, { asOfMs })).predictions!;
    expect(unearned.churnRisk).toMatchObject({ model: "churn", version: bundled.version, probability: null });
    expect(unearned.churnRisk.reason).toMatch(/has no evaluation on this shop's data/);
    expect(unearned.churnRisk.evidence).toBeUndefined();
    expect(unearned.purchasePropensity).toMatchObject({ probability: null, reason: "no propensity model runs in this engine" });
    await engine.close();

    // Evaluated on this stream, beating its baseline, with a calibration: served, with its evidence.
    evaluateOnStream(modelDir, prefix, 0.81, 0.74);
    const specFile = join(modelDir, "model.json");
    writeFileSync(specFile, JSON.stringify({ ...JSON.parse(readFileSync(specFile, "utf8")), calibration: { kind: "platt", a: 0.8, b: -0.3, rows: 77 } }));
    engine = await fx.startEngine({ subjectPrefix: prefix, dataDir, modelsDir: dir, lstmModel: "off" });
    const p = await client.getProfile(buyer, { asOfMs });
    const state = newUserState();
    for (const e of evs.slice(0, 3)) applyEvent(state, { categoryId: "", brand: "", sessionId: "", ...e } as never, PROFILE_DEFAULTS);
    const model = ChurnModel.load(modelDir);
    expect(p.predictions?.churnRisk).toMatchObject({
      model: "churn", version: model.version, reason: "", definition: "no purchase in the next 90 days",
      evidence: { metric: "AUC", holdout: 0.81, baselineName: "popularity", baseline: 0.74, calibration: "platt on 77 validation rows" },
    });
    expect(p.predictions?.churnRisk.probability).toBeCloseTo(model.predict(state, asOfMs), 12);
    expect(model.predict(state, asOfMs)).not.toBeCloseTo(bundled.predict(state, asOfMs), 3);
    expect(p.predictions?.nextCategory.reason).toBe("no lstm model runs in this engine");
    const viewer = await client.getProfile(`${prefix}-viewer`, { asOfMs });
    expect(viewer.predictions?.churnRisk).toMatchObject({ probability: null, reason: expect.stringMatching(/this user has not/) });
    removeDir(dir);
  });

  it("config - a model version that does not exist is a CONFIG error naming what exists", async () => {
    await expect(fx.startEngine({ subjectPrefix: uniquePrefix("nomodel"), modelsDir, lstmModel: "2020-01-01.9" }))
      .rejects.toMatchObject({ code: "CONFIG", message: expect.stringContaining("fixture.1") });
  });

  it("config - a DeepFM that reads an LSTM state refuses to run beside another LSTM or none", async () => {
    await expect(fx.startEngine({ subjectPrefix: uniquePrefix("pair"), lstmModel: "off" }))
      .rejects.toMatchObject({ code: "CONFIG", message: expect.stringContaining("reads the state of LSTM") });
  });

  it("config - with no models at all the engine runs without predictions", async () => {
    const prefix = uniquePrefix("nomodels");
    const engine = await fx.startEngine({ subjectPrefix: prefix, modelsDir: fx.tmpDir("empty-models") });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const evs = events(prefix, 1, 2);
    await client.publishMany(evs);
    await expectExactCounts(client, countByUser(evs));
    expect((await client.getProfile(`${prefix}-u0`)).predictions).toBeUndefined();
  });
});
