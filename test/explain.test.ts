/**
 * Explanations: a linear model's explanation is its exact contributions
 * (bias + contributions = the logit); trees and the LSTM by occlusion; the
 * engine computes them only when a query asks (`explain`).
 */
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { applyEvent, newUserState, type UserState } from "../src/actors/user-profile.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { CHURN_FEATURE_NAMES, ChurnModel, churnFeatures, explainSpec, specContributions, specLogit, type ChurnModelSpec } from "../src/models/churn-model.js";
import { LstmRuntime } from "../src/models/lstm-runtime.js";
import { explainNextCategory } from "../src/shard/predictions.js";
import { parseProfileRequest } from "../src/api/profile-endpoint.js";
import { pb } from "../src/wire/proto.js";
import { reencodeLstmState } from "../src/shard/lstm-steps.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { T0, countByUser, expectExactCounts, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { evaluateOnStream, writeLstmFixture } from "./helpers/models.js";

const fx = useEngineFixture();
const DAY = 86_400_000;

function buyerState(): UserState {
  const s = newUserState();
  [0, 20, 45].forEach((d, i) => applyEvent(s, {
    type: EventType.PURCHASE, timestampMs: T0 + d * DAY, itemId: `sku${i}`, categoryId: "", brand: "", price: 12.5, quantity: 2 + i,
    currency: "GBP", sessionId: "", orderId: `o${i}`,
  }, PROFILE_DEFAULTS));
  return s;
}

describe("explain - request", () => {
  it("explain - ProfileRequest.explain parses from protobuf and JSON; a JSON explain that is not a boolean is BAD_REQUEST", () => {
    const enc = new TextEncoder();
    expect(parseProfileRequest(pb.ProfileRequest.encode({ userId: "u", explain: true }).finish(), "protobuf")).toEqual({ userId: "u", asOfMs: 0, explain: true });
    expect(parseProfileRequest(pb.ProfileRequest.encode({ userId: "u" }).finish(), "protobuf").explain).toBe(false);
    expect(parseProfileRequest(enc.encode(JSON.stringify({ userId: "u", explain: true })), "json").explain).toBe(true);
    expect(() => parseProfileRequest(enc.encode(JSON.stringify({ userId: "u", explain: "yes" })), "json")).toThrow(expect.objectContaining({ code: "BAD_REQUEST" }));
  });
});

describe("explain - models", () => {
  it("explain - a linear model's explanation is its exact contributions: bias + every contribution = the logit; the top 5 are the largest", () => {
    const model = ChurnModel.load(resolveModel(BUNDLED_MODELS_DIR, "churn").dir);
    expect(model.spec.kind).toBe("logistic");
    const asOf = T0 + 60 * DAY;
    const full = churnFeatures(buyerState(), asOf);
    const x = model.spec.features.map((f) => full[CHURN_FEATURE_NAMES.indexOf(f as never)]!);
    const c = specContributions(model.spec, x);
    expect(c.contributions).toHaveLength(model.spec.features.length);
    const sum = c.base + c.contributions.reduce((a, k) => a + k.contribution, 0);
    expect(sum).toBeCloseTo(model.logitFeatures(full), 12);
    // Each is w (x - mean) / std, by hand for one.
    const s = model.spec as Extract<ChurnModelSpec, { kind: "logistic" }>;
    expect(c.contributions[3]!.contribution).toBeCloseTo((s.weights[3]! * (x[3]! - s.mean[3]!)) / s.std[3]!, 12);
    const e = model.explain(buyerState(), asOf);
    expect(e.unit).toBe("logit");
    expect(e.method).toMatch(/^exact/);
    expect(e.contributions).toHaveLength(5);
    const sizes = c.contributions.map((k) => Math.abs(k.contribution)).sort((a, b) => b - a);
    expect(e.contributions.map((k) => Math.abs(k.contribution))).toEqual(sizes.slice(0, 5));
  });

  it("explain - boosted trees by occlusion: an input the trees never split on contributes 0", () => {
    const spec: ChurnModelSpec = {
      kind: "gbdt", features: ["a", "b"], base: 0.5, params: {},
      trees: [{ feature: [0, -1, -1], threshold: [1, 0, 0], left: [1, 0, 0], right: [2, 0, 0], value: [0, -1, 2] }],
    };
    const c = specContributions(spec, [3, 7]);
    expect(c.contributions).toEqual([{ input: "a", value: 3, contribution: 3 }, { input: "b", value: 7, contribution: 0 }]);
    expect(specLogit(spec, [3, 7])).toBe(2.5);
    expect(explainSpec(spec, [3, 7], 1).contributions.map((k) => k.input)).toEqual(["a"]);
  });
});

describe("explain - LSTM occlusion and the engine", () => {
  let modelsDir: string;
  let lstmDir: string;
  beforeAll(async () => {
    modelsDir = fx.tmpDir("portrait-models-explain");
    lstmDir = await writeLstmFixture(modelsDir, "fixture.1", ["i0", "i1", "i2", "i3"], ["c0", "c1", "c2"]);
    cpSync(join(BUNDLED_MODELS_DIR, "churn"), join(modelsDir, "churn"), { recursive: true });
  });

  it("explain - the LSTM's next category: each event's contribution is logit(all) - logit(without it), re-encoding the timeline", () => {
    const rt = LstmRuntime.load(lstmDir);
    const s = newUserState();
    ["i0", "i1", "i2", "i1", "i3"].forEach((item, k) => applyEvent(s, {
      type: k === 3 ? EventType.ADD_TO_CART : EventType.VIEW, timestampMs: T0 + k * 60_000, itemId: item, categoryId: "", brand: "", price: 0,
      quantity: 0, currency: "", sessionId: "", orderId: "",
    }, PROFILE_DEFAULTS));
    const top = rt.predict(reencodeLstmState(s, rt)).nextCategories[0]!;
    const e = explainNextCategory(s, rt, top.key);
    const v = rt.categories.indexOf(top.key);
    const logit = (u: UserState) => rt.categoryLogits(reencodeLstmState(u, rt))[v]!;
    expect(e.unit).toBe("category logit");
    expect(e.base).toBeCloseTo(logit(s), 5);
    expect(e.contributions).toHaveLength(5);
    // By hand for every event: the timeline without it, re-encoded from zero.
    for (const c of e.contributions) {
      const without: UserState = { ...s, tl: s.tl!.filter((_, i) => i !== c.value) };
      expect(c.contribution).toBeCloseTo(logit(s) - logit(without), 5);
    }
    expect(e.contributions.find((c) => c.value === 0)!.input).toMatch(/^view i3 at /);
    expect(e.contributions.find((c) => c.value === 1)!.input).toMatch(/^add_to_cart i1 at /);
  });

  it("explain - the engine explains served predictions only when asked; the CLI's printer shows them", async () => {
    const prefix = uniquePrefix("explain");
    const churnDir = resolveModel(modelsDir, "churn").dir;
    evaluateOnStream(churnDir, prefix, 0.81, 0.74);
    evaluateOnStream(lstmDir, prefix);
    const specFile = join(churnDir, "model.json");
    writeFileSync(specFile, JSON.stringify({ ...JSON.parse(readFileSync(specFile, "utf8")), calibration: { kind: "platt", a: 1, b: 0, rows: 10 } }));
    const engine = await fx.startEngine({ subjectPrefix: prefix, modelsDir, lstmModel: "current", churnModel: "current", propensityModel: "off", deepfmModel: "off", sentimentModel: "off" });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const buyer = `${prefix}-buyer`;
    const evs: IEvent[] = [0, 20, 45].map((d, i) => ({
      eventId: `${prefix}-p${i}`, userId: buyer, type: EventType.PURCHASE, timestampMs: T0 + d * DAY, itemId: `i${i}`, price: 12.5, quantity: 2 + i, orderId: `o${i}`, currency: "GBP",
    }));
    await client.publishMany(evs);
    await expectExactCounts(client, countByUser(evs));
    const asOfMs = T0 + 60 * DAY;
    const plain = await client.getProfile(buyer, { asOfMs });
    expect(plain.predictions!.churnRisk.probability).not.toBeNull();
    expect(plain.predictions!.churnRisk.explanation).toBeUndefined();
    expect(plain.predictions!.nextCategory.explanation).toBeUndefined();
    const p = await client.getProfile(buyer, { asOfMs, explain: true });
    const want = ChurnModel.load(churnDir).explain(buyerState(), asOfMs);
    expect(p.predictions!.churnRisk.explanation!.contributions.map((c) => c.input)).toEqual(want.contributions.map((c) => c.input));
    p.predictions!.churnRisk.explanation!.contributions.forEach((c, i) => expect(c.contribution).toBeCloseTo(want.contributions[i]!.contribution, 9));
    expect(p.predictions!.churnRisk.explanation!.base).toBeCloseTo(want.base, 12);
    const nc = p.predictions!.nextCategory.explanation!;
    expect(nc.contributions).toHaveLength(3);
    expect(nc.method).toMatch(/^occlusion over the last 3 events/);
    // The printer lists them under the prediction.
    const { formatProfile } = await import("../src/cli/print-profile.js");
    expect(formatProfile(p)).toMatch(/why \(logit, exact/);
    // JSON requests can ask too.
    const raw = await fx.nc.request(`${prefix}.api.profile.get`, new TextEncoder().encode(JSON.stringify({ userId: buyer, asOfMs, explain: true })));
    const j = JSON.parse(new TextDecoder().decode(raw.data)) as { profile: { predictions: { churnRisk: { explanation?: unknown } } } };
    expect(j.profile.predictions.churnRisk.explanation).toBeDefined();
  });
});
