/**
 * Review sentiment and aspects: the bundled sentiment model on hand-written
 * reviews, the profile's decayed review tables by hand formula, the audience
 * rules over them, and the engine end to end (text in, sentiment and aspects
 * in the profile reply; a review over the text limit dead-lettered).
 */
import { describe, expect, it, onTestFinished } from "vitest";
import { compileAudiences, parseDefinition } from "../src/actors/audience-rules.js";
import { evaluateAudiences } from "../src/actors/audience-state.js";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { applyEvent, newUserState, profileView, type ProfileEvent } from "../src/actors/user-profile.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { calibrate } from "../src/models/calibration.js";
import { extractAspects, SentimentModel, sentimentFeatures, sentimentLogit } from "../src/models/sentiment-model.js";
import { resolveDataFile } from "../src/data/datasets.js";
import { loadSentimentExamples, splitSentiment, trainSentiment, SENTIMENT_DATA_FILE } from "../src/train/train-sentiment.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { EventType } from "../src/wire/proto.js";
import { T0, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { waitFor } from "./helpers/nats.js";

const HOUR = 3_600_000;
const o = compileProfileOptions({ halfLifeMs: HOUR });
const model = SentimentModel.load(resolveModel(BUNDLED_MODELS_DIR, "sentiment").dir);

function ev(p: Partial<ProfileEvent> & { type: EventType; timestampMs: number }): ProfileEvent {
  return { itemId: "i", categoryId: "", brand: "", price: 0, quantity: 0, currency: "", sessionId: "", orderId: "", ...p };
}

const POSITIVE = [
  ["Love it", "These strings sound great, bright and warm. They stay in tune and feel smooth. Highly recommend."],
  ["Excellent tuner", "Accurate, fast and easy to read on a dark stage. Worth every penny."],
  ["Perfect", "Exactly what I needed. The cable is solid and quiet, no hum at all."],
];
const NEGATIVE = [
  ["Junk", "Cheap cable, broke after two weeks. The jack came loose and it crackles. Returned it."],
  ["Disappointed", "The pedal is noisy and the switch stopped working. Would not buy again, waste of money."],
  ["Terrible", "Strings went dead in a day and would not stay in tune. Awful."],
];

describe("reviews - sentiment model", () => {
  it("reviews - hand-written positive reviews score above zero and negative ones below, every positive above every negative", () => {
    const pos = POSITIVE.map(([t, x]) => model.analyse(x!, t!).sentiment);
    const neg = NEGATIVE.map(([t, x]) => model.analyse(x!, t!).sentiment);
    for (const s of pos) expect(s).toBeGreaterThan(0);
    for (const s of neg) expect(s).toBeLessThan(0);
    expect(Math.min(...pos)).toBeGreaterThan(Math.max(...neg));
    for (const s of [...pos, ...neg]) expect(Math.abs(s)).toBeLessThanOrEqual(1);
  });

  it("reviews - negation makes its own features, and a title adds prefixed ones", () => {
    expect(sentimentFeatures("not good at all. good")).toEqual(["not", "not good", "!good", "good at", "!at", "at all", "!all", "good"]);
    expect(sentimentFeatures("fine", "Great")).toEqual(["fine", "great", "s:great"]);
  });

  it("reviews - the served analysis (features hashed without building their strings) equals the training path's logit and aspects", () => {
    const texts = [
      ...POSITIVE, ...NEGATIVE,
      ["", "Don't buy it: not good, naïve café strings. Not bad at all; the tuning pegs hold (über stable) 😀 and the tuning peg's finish is fine."],
      ["Ünïcode títle, not great", "It isn't the worst capo — the strings buzz. String, strings; tuning pegs."],
    ];
    for (const [title, text] of texts) {
      for (const t of [title!, ""]) {
        const a = model.analyse(text!, t);
        expect(a.probability).toBe(calibrate(model.spec.calibration, sentimentLogit(model.weights, text!, t)));
        expect(a.aspects).toEqual(extractAspects(t.trim() === "" ? text! : `${t}.\n${text}`, model.spec.aspects));
      }
    }
  });

  it("reviews - aspects are vocabulary terms ranked by tf x idf; a pair hides its nouns; plurals fall back to the singular", () => {
    const vocab = { cable: 1, jack: 2, "tuning peg": 3, peg: 1.5, tone: 0.5 };
    expect(extractAspects("The cables buzz, the cable is thin; the jack and the tone.", vocab)).toEqual(["cable", "jack", "tone"]);
    expect(extractAspects("Tuning pegs slip. The peg is loose.", vocab, 3)).toEqual(["tuning peg"]);
    expect(extractAspects("nothing known here", vocab)).toEqual([]);
    // The bundled vocabulary finds product parts in a real-looking review.
    expect(model.analyse("The cable is solid, but the jack came loose.").aspects).toEqual(expect.arrayContaining(["cable", "jack"]));
  });
});

const DATA_DIR = process.env.PORTRAIT_DATASETS ?? resolve(dirname(fileURLToPath(import.meta.url)), "../../shared/data");

/** The reviews file, or an error naming where the data sets are expected. */
function reviewsFile(): string {
  try {
    return resolveDataFile(DATA_DIR, "amazon-reviews");
  } catch (err) {
    throw new Error(`missing test data: ${(err as Error).message} (tests look in ${DATA_DIR}; set PORTRAIT_DATASETS to override)`);
  }
}

describe("reviews - training", () => {
  it("reviews - the split is strictly by time with 3-star reviews only in training; a trained model is a loadable versioned artifact", async () => {
    const ex = await loadSentimentExamples(reviewsFile(), 1500);
    const sp = splitSentiment(ex);
    expect(sp.train.at(-1)!.timestampMs).toBeLessThan(sp.validation[0]!.timestampMs);
    expect(sp.validation.at(-1)!.timestampMs).toBeLessThan(sp.test[0]!.timestampMs);
    expect(sp.train.some((e) => e.rating === 3)).toBe(true);
    expect([...sp.validation, ...sp.test].some((e) => e.rating === 3)).toBe(false);
    const models = mkdtempSync(join(tmpdir(), "portrait-models-sentiment-"));
    onTestFinished(() => rmSync(models, { recursive: true, force: true }));
    const r = await trainSentiment({ dataDir: DATA_DIR, file: SENTIMENT_DATA_FILE, modelsDir: models, limit: 1500, makeCurrent: true });
    expect(r.manifest).toMatchObject({ name: "sentiment", format: "json", files: { model: "model.json", weights: "weights.bin" } });
    expect(r.test.n).toBe(sp.test.length);
    const loaded = SentimentModel.load(resolveModel(models, "sentiment").dir);
    expect(loaded.version).toBe(r.manifest.version);
    expect(loaded.probability(sp.test[0]!.text, sp.test[0]!.title)).toBeGreaterThan(0);
    expect(Object.keys(loaded.spec.aspects).length).toBeGreaterThan(10);
  });
});

describe("reviews - profile", () => {
  it("reviews - decayed mean sentiment overall, per category and per brand, by hand formula; rating when there is no text", () => {
    const s = newUserState();
    applyEvent(s, ev({ type: EventType.REVIEW, timestampMs: T0, categoryId: "C1", brand: "Acme", review: { sentiment: 0.8, aspects: ["strings", "tone"] } }), o);
    applyEvent(s, ev({ type: EventType.REVIEW, timestampMs: T0 + HOUR, categoryId: "C1", brand: "ACME", review: { sentiment: -0.4, aspects: ["strings"] } }), o);
    applyEvent(s, ev({ type: EventType.REVIEW, timestampMs: T0 + 2 * HOUR, categoryId: "C2", rating: 1 }), o);
    applyEvent(s, ev({ type: EventType.REVIEW, timestampMs: T0 + 2 * HOUR, categoryId: "C2" }), o); // neither text nor rating: no sentiment
    applyEvent(s, ev({ type: EventType.VIEW, timestampMs: T0 + 3 * HOUR, categoryId: "C1" }), o);
    const asOf = T0 + 4 * HOUR;
    const p = profileView("u", s, asOf, o);
    const d = (t: number) => Math.pow(2, -(asOf - t) / HOUR);
    const r = p.reviews!;
    expect(r.count).toBe(3);
    expect(r.fromText).toBe(2);
    const overall = (d(T0) * 0.8 + d(T0 + HOUR) * -0.4 + d(T0 + 2 * HOUR) * -1) / (d(T0) + d(T0 + HOUR) + d(T0 + 2 * HOUR));
    expect(r.sentiment).toBeCloseTo(overall, 12);
    const c1 = (d(T0) * 0.8 + d(T0 + HOUR) * -0.4) / (d(T0) + d(T0 + HOUR));
    expect(r.categories.map((c) => c.key)).toEqual(["C2", "C1"]);
    expect(r.categories[1]!.sentiment).toBeCloseTo(c1, 12);
    expect(r.categories[1]!.weight).toBeCloseTo(d(T0) + d(T0 + HOUR), 12);
    expect(r.categories[0]).toMatchObject({ key: "C2", sentiment: -1 });
    expect(r.brands).toHaveLength(1);
    expect(r.brands[0]!.key).toBe("acme");
    expect(r.brands[0]!.sentiment).toBeCloseTo(c1, 12);
    expect(r.aspects.map((a) => a.key)).toEqual(["strings", "tone"]);
    expect(r.aspects[0]!.score).toBeCloseTo(d(T0) + d(T0 + HOUR), 12);
    // A user without reviews has no reviews block.
    const v = newUserState();
    applyEvent(v, ev({ type: EventType.VIEW, timestampMs: T0 }), o);
    expect(profileView("v", v, T0, o).reviews).toBeUndefined();
  });

  it("reviews - audience rules: review.sentiment, reviewSentiment per brand, reviewAspect", () => {
    const s = newUserState();
    applyEvent(s, ev({ type: EventType.REVIEW, timestampMs: T0, brand: "Acme", review: { sentiment: -0.6, aspects: ["cable", "jack"] } }), o);
    applyEvent(s, ev({ type: EventType.REVIEW, timestampMs: T0 + 1000, brand: "Other", review: { sentiment: 0.9, aspects: ["tone"] } }), o);
    const set = compileAudiences([
      parseDefinition({ id: "unhappy-acme", rule: { reviewSentiment: { dimension: "brand", key: "ACME", op: "<", value: 0 } } }),
      parseDefinition({ id: "happy-other", rule: { reviewSentiment: { dimension: "brand", key: "other", op: ">", value: 0.5 } } }),
      parseDefinition({ id: "mixed", rule: { all: [{ field: "review.sentiment", op: ">", value: 0 }, { field: "review.count", op: ">=", value: 2 }] } }),
      parseDefinition({ id: "cable-talk", rule: { reviewAspect: { key: "cable", topN: 2 } } }),
      parseDefinition({ id: "tone-top1", rule: { reviewAspect: { key: "tone", topN: 1 } } }),
      parseDefinition({ id: "jack-top2", rule: { reviewAspect: { key: "jack", topN: 2 } } }),
      parseDefinition({ id: "heavy-acme", rule: { reviewSentiment: { dimension: "brand", key: "acme", op: "<", value: 0, minWeight: 2 } } }),
    ]);
    const entered = evaluateAudiences("u", s, set, T0 + 2000, { profile: o }, "event", 0).filter((t) => t.entered).map((t) => t.audience).sort();
    // mean = (-0.6 d0 + 0.9 d1) / (d0 + d1) > 0; tone (the later review) is first, cable ties jack and wins on its key; acme's weight is 1 < 2.
    expect(entered).toEqual(["cable-talk", "happy-other", "mixed", "tone-top1", "unhappy-acme"]);
    expect(() => parseDefinition({ id: "bad", rule: { reviewSentiment: { dimension: "brand", key: "a", op: "<", value: 3 } } })).toThrow(/BAD_AUDIENCE|value/);
  });
});

describe("reviews - engine", () => {
  const fx = useEngineFixture();

  it("reviews - review text published to the engine comes back as sentiment and aspects; a review over 16 KiB is dead-lettered", async () => {
    const prefix = uniquePrefix("reviews");
    const engine = await fx.startEngine({ subjectPrefix: prefix, lstmModel: "off", churnModel: "off", propensityModel: "off", deepfmModel: "off" });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const u = `${prefix}-u`;
    const base = { userId: u, type: EventType.REVIEW, itemId: "guitar-1", categoryId: "strings", brand: "Acme" };
    await client.publishMany([
      { ...base, eventId: `${prefix}-1`, timestampMs: T0, rating: 5, reviewText: NEGATIVE[0]![1], attributes: { summary: NEGATIVE[0]![0]! } },
      { ...base, eventId: `${prefix}-2`, timestampMs: T0 + 1000, itemId: "cable-2", categoryId: "cables", reviewText: POSITIVE[2]![1] },
      { ...base, eventId: `${prefix}-3`, timestampMs: T0 + 2000, reviewText: "x".repeat(16 * 1024 + 1) },
    ]);
    await waitFor(async () => (await client.getProfile(u).catch(() => undefined))?.eventsApplied === 2, { message: "reviews not applied" });
    await waitFor(async () => (await engine.metrics.total(engine.metrics.deadLetters)) === 1, { message: "long review not dead-lettered" });
    const reasons = (await engine.metrics.deadLetters.get()).values.filter((v) => v.value > 0).map((v) => v.labels.reason);
    expect(reasons).toEqual(["FIELD_TOO_LONG"]);
    const p = await client.getProfile(u);
    const r = p.reviews!;
    expect(r.count).toBe(2);
    expect(r.fromText).toBe(2);
    const byKey = Object.fromEntries(r.categories.map((c) => [c.key, c.sentiment]));
    // The text decides, not the 5 stars: the first review's text is negative.
    expect(byKey.strings).toBeLessThan(0);
    expect(byKey.cables).toBeGreaterThan(0);
    expect(byKey.strings).toBeCloseTo(model.analyse(NEGATIVE[0]![1]!, NEGATIVE[0]![0]!).sentiment, 6);
    expect(r.aspects.map((a) => a.key)).toEqual(expect.arrayContaining(["cable", "jack"]));
    // The protobuf reply carries the same block (the client decodes protobuf by default).
    expect(r.brands[0]!.key).toBe("acme");
  });
});
