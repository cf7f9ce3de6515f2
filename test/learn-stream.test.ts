/**
 * Learning from the shop's own stream: events published to a real
 * nats-server and applied by a real engine are read back with an ordered
 * consumer, a propensity model is trained on them with a strict time split,
 * and an engine that loads it serves exactly what training computed for the
 * same user at the same as-of (one feature function), with its evidence.
 * Also: no future leak in the examples, calibration of a planted miscalibrated
 * model, and the rules that serve a model as null with a reason.
 */
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { applyEvent, newUserState } from "../src/actors/user-profile.js";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { buildPropensityExamples } from "../src/examples/propensity-data.js";
import type { UserEvent } from "../src/examples/churn-data.js";
import { currentVersion, resolveModel, type ModelManifest } from "../src/models/artifacts.js";
import { calibrate, expectedCalibrationError, fitPlatt, sigmoid } from "../src/models/calibration.js";
import { judgeModel, streamSource } from "../src/models/evidence.js";
import { PropensityModel, propensityFeatures } from "../src/models/propensity-model.js";
import { ModelRegistry } from "../src/models/registry.js";
import { seededRandom } from "../src/models/seeded-random.js";
import { trainPropensity } from "../src/train/train-propensity.js";
import { streamEvents } from "../src/train/training-events.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { T0, countByUser, expectExactCounts, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";
import { waitFor } from "./helpers/nats.js";

const MIN = 60_000;
const HORIZON = 10 * MIN;

/**
 * A small shop over three hours of event time: each user has a few sessions of
 * views; in some sessions they add to cart, and a cart is followed by a
 * purchase a few minutes later more often than a view-only session is.
 */
function shop(prefix: string, users: number, seed = 7): IEvent[] {
  const rnd = seededRandom(seed);
  const out: IEvent[] = [];
  for (let u = 0; u < users; u++) {
    const userId = `${prefix}-u${u}`;
    const sessions = 1 + Math.floor(rnd() * 4);
    for (let s = 0; s < sessions; s++) {
      let t = T0 + Math.floor(rnd() * 170) * MIN;
      const ev = (type: EventType, item: string) => {
        out.push({ eventId: `${userId}-${out.length}`, userId, type, timestampMs: t, itemId: item, categoryId: `c${item.length % 3}`, price: 10, sessionId: `${userId}-s${s}` });
        t += (1 + Math.floor(rnd() * 3)) * MIN;
      };
      const views = 1 + Math.floor(rnd() * 5);
      for (let k = 0; k < views; k++) ev(EventType.VIEW, `i${Math.floor(rnd() * 30)}`);
      const carts = rnd() < 0.35 ? 1 + Math.floor(rnd() * 2) : 0;
      for (let k = 0; k < carts; k++) ev(EventType.ADD_TO_CART, `i${Math.floor(rnd() * 30)}`);
      if (rnd() < (carts > 0 ? 0.55 : 0.04)) ev(EventType.PURCHASE, `i${Math.floor(rnd() * 30)}`);
    }
  }
  return out.sort((a, b) => (a.timestampMs as number) - (b.timestampMs as number));
}

function userEvent(e: IEvent): UserEvent {
  return {
    userId: e.userId!, type: e.type!, timestampMs: e.timestampMs as number, itemId: e.itemId ?? "", categoryId: e.categoryId ?? "",
    brand: "", price: e.price ?? 0, quantity: 0, currency: "", sessionId: e.sessionId ?? "", orderId: "",
  };
}

describe("learn from the stream", () => {
  const fx = useEngineFixture();

  it("train propensity --from-stream: the stream is read whole, the split is strict, and the engine serves what training computed, with its evidence, once promoted (no restart)", async () => {
    const prefix = uniquePrefix("learn");
    const dataDir = fx.tmpDir("portrait-engine");
    const modelsDir = fx.tmpDir("portrait-models");
    const off = { lstmModel: "off", churnModel: "off", deepfmModel: "off" };
    const engine = await fx.startEngine({ subjectPrefix: prefix, dataDir, modelsDir, ...off, modelRegistry: true });
    expect(engine.models!.served.propensity).toBeUndefined();
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const published = shop(prefix, 400);
    await client.publishMany(published);
    await expectExactCounts(client, countByUser(published));

    const read = await streamEvents({ natsUrl: fx.nats.url, prefix, partitions: engine.config.partitions });
    expect(read.source).toBe(streamSource(subjects(prefix).eventStream));
    expect(read.read).toBe(published.length);
    expect(read.skipped).toEqual({ invalid: 0, outOfWindow: 0 });
    expect(read.events.map((e) => `${e.userId}@${e.timestampMs}:${e.type}`).sort())
      .toEqual(published.map((e) => `${e.userId}@${e.timestampMs as number}:${e.type}`).sort());
    const since = T0 + 60 * MIN;
    const bounded = await streamEvents({ natsUrl: fx.nats.url, prefix, sinceMs: since, untilMs: since + 30 * MIN });
    expect(bounded.events.length).toBe(published.filter((e) => (e.timestampMs as number) >= since && (e.timestampMs as number) < since + 30 * MIN).length);
    expect(bounded.skipped.outOfWindow).toBe(published.length - bounded.events.length);

    const { dir, manifest } = await trainPropensity(read, { modelsDir, horizonMs: HORIZON, makeCurrent: true });
    const ev = manifest.evaluation!;
    expect(ev.source).toBe(read.source);
    expect(ev.testWindow.fromMs).toBeGreaterThanOrEqual(ev.trainWindow.toMs);
    expect(Object.keys(ev.baselines).sort()).toEqual(["popularity (events so far)", "recency (minutes since last event)", "recency/RFM logistic"]);
    expect(ev.counts.test).toBeGreaterThan(100);
    // The planted signal (a cart is followed by a purchase) is learned, and beats the baselines on the later window.
    expect(ev.challenger).toBeGreaterThan(Math.max(...Object.values(ev.baselines)));
    expect(resolveModel(modelsDir, "propensity").dir).toBe(dir);

    // The CLI the scheduler runs: one read of the stream, every model it can train; churn needs months, so it is skipped with the reason.
    const cli = spawnSync(process.execPath, ["dist/cli/portrait.js", "train", "all", "--from-stream", "--nats", fx.nats.url, "--prefix", prefix,
      "--partitions", "4", "--horizon", "10", "--models", fx.tmpDir("portrait-models-cli"), "--no-current", "--epochs", "1", "--max-seconds", "5"],
    { encoding: "utf8", timeout: 60_000 });
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stderr).toMatch(/skipped churn: the events span .* a churn split with a 90-day horizon needs/);
    expect(cli.stdout).toContain(`evaluation on ${read.source}`);
    // The DeepFM learns from the same read: its manifest's evaluation is printed too.
    expect(cli.stdout).toMatch(/wrote .*deepfm/);
    expect(cli.stdout.match(/evaluation on /g)).toHaveLength(2);

    // Promoted through the registry (it beats the baselines and there is no champion), the running engine swaps it in.
    const reg = await ModelRegistry.open(fx.nc, { prefix });
    await reg.push(dir);
    await reg.promote("propensity", manifest.version, { reason: "test: trained on the stream" });
    await waitFor(() => engine.models!.served.propensity?.version === manifest.version, { timeoutMs: 30_000, message: "the engine did not swap the propensity model in" });

    // The next training, into a directory that has never seen it, is scored against that promoted champion (what promotion compares with).
    const fresh = fx.tmpDir("portrait-models-next");
    const next = spawnSync(process.execPath, ["dist/cli/portrait.js", "train", "propensity", "--from-stream", "--nats", fx.nats.url, "--prefix", prefix,
      "--partitions", "4", "--horizon", "10", "--models", fresh, "--no-current"], { encoding: "utf8", timeout: 60_000 });
    expect(next.status, next.stderr).toBe(0);
    expect(next.stderr).toContain(`champion propensity@${manifest.version}: promoted in the registry, now CURRENT in ${fresh}`);
    expect(next.stdout).toContain(`vs champion ${manifest.version} `);
    expect(currentVersion(fresh, "propensity")).toBe(manifest.version);
    const model = PropensityModel.load(dir);
    const asOf = Math.max(...published.map((e) => e.timestampMs as number)) + MIN;
    const users = [...new Set(published.map((e) => e.userId!))].slice(0, 25);
    const [examples] = buildPropensityExamples(read.events, [asOf], HORIZON);
    for (const userId of users) {
      const got = (await client.getProfile(userId, { asOfMs: asOf })).predictions!.purchasePropensity;
      // Training's features for this user at this as-of (the example builder) ...
      const x = examples!.x[examples!.userIds.indexOf(userId)]!;
      // ... equal the features of the state replayed from the stream, which the engine's state gives the same prediction.
      const state = newUserState();
      for (const e of read.events.filter((e) => e.userId === userId)) applyEvent(state, e, compileProfileOptions());
      expect(Array.from(x)).toEqual(Array.from(propensityFeatures(state, asOf)));
      expect(got).toMatchObject({ model: "propensity", version: manifest.version, reason: "", definition: "a purchase within 10 minutes" });
      expect(got.probability).toBeCloseTo(calibrate(model.spec.calibration, model.logitFeatures(x)), 12);
      expect(got.evidence).toMatchObject({ metric: "AUC", holdout: ev.challenger, source: ev.source, testExamples: ev.counts.test });
    }
  });

  it("no future leak: a planted future event changes no example at an earlier cut-off, only the label it falls in", () => {
    const prefix = "leak";
    const events = shop(prefix, 60, 3).map(userEvent);
    const cutoffs = [T0 + 60 * MIN, T0 + 90 * MIN];
    const before = buildPropensityExamples(events, cutoffs, HORIZON);
    const victim = before[0]!.userIds.find((u, i) => before[0]!.y[i] === 0)!;
    // A view and a cart after the last cut-off's label window, and a purchase inside the first cut-off's window.
    const late: UserEvent[] = [
      { ...userEvent({ userId: victim, type: EventType.VIEW, timestampMs: cutoffs[1]! + HORIZON + MIN, itemId: "x" }) },
      { ...userEvent({ userId: victim, type: EventType.ADD_TO_CART, timestampMs: cutoffs[1]! + HORIZON + 2 * MIN, itemId: "x" }) },
    ];
    const withLate = buildPropensityExamples([...events, ...late].sort((a, b) => a.timestampMs - b.timestampMs), cutoffs, HORIZON);
    expect(withLate).toEqual(before);
    const buy = userEvent({ userId: victim, type: EventType.PURCHASE, timestampMs: cutoffs[0]! + MIN, itemId: "y", price: 5 });
    const withBuy = buildPropensityExamples([...events, buy].sort((a, b) => a.timestampMs - b.timestampMs), cutoffs, HORIZON);
    const i = before[0]!.userIds.indexOf(victim);
    expect(withBuy[0]!.x).toEqual(before[0]!.x);
    expect(withBuy[0]!.y[i]).toBe(1);
    expect(Array.from(withBuy[0]!.y).filter((_, k) => k !== i)).toEqual(Array.from(before[0]!.y).filter((_, k) => k !== i));
  });

  it("calibration: Platt on a validation window fixes a planted overconfident, shifted model", () => {
    const rnd = seededRandom(11);
    const draw = (n: number) => {
      const z: number[] = [];
      const y: number[] = [];
      for (let i = 0; i < n; i++) {
        const t = (rnd() - 0.5) * 6;
        z.push(3 * t + 2); // the planted model's logit: 3x too confident, shifted up by 2
        y.push(rnd() < sigmoid(t) ? 1 : 0);
      }
      return { z, y };
    };
    const val = draw(4000);
    const test = draw(4000);
    const before = expectedCalibrationError(test.z.map((z) => sigmoid(z)), test.y);
    const c = fitPlatt(val.z, val.y);
    const after = expectedCalibrationError(test.z.map((z) => calibrate(c, z)), test.y);
    expect(before).toBeGreaterThan(0.15);
    expect(after).toBeLessThan(0.03);
    expect(c.a).toBeCloseTo(1 / 3, 1);
    expect(c.b).toBeCloseTo(-2 / 3, 0);
  });

  it("evidence: a model is null with a reason when unevaluated, evaluated on another stream, worse than its baseline, or uncalibrated", () => {
    const shopSource = streamSource("SHOP_EVENTS");
    const base: ModelManifest = {
      name: "propensity", version: "v1", createdAt: "", portraitVersion: "", format: "json", architecture: {}, features: {},
      training: { data: ["rees46/2019-Oct_head_sample.csv.gz"], split: "", seed: 1 }, metrics: [], files: {},
    };
    const evaluation = {
      source: shopSource, trainWindow: { fromMs: 0, toMs: 1 }, testWindow: { fromMs: 1, toMs: 2 }, counts: { train: 5, test: 5 },
      metric: "AUC", higherIsBetter: true, challenger: 0.8, baselines: { recency: 0.7, popularity: 0.6 },
    };
    expect(judgeModel(base, shopSource, "platt").reason).toMatch(/has no evaluation on this shop's data \(it was trained and tested on 2019-Oct_head_sample.csv.gz\)/);
    expect(judgeModel({ ...base, evaluation: { ...evaluation, source: streamSource("OTHER_EVENTS") } }, shopSource, "platt").reason)
      .toMatch(/evaluated on stream:OTHER_EVENTS, not on this shop's stream/);
    expect(judgeModel({ ...base, evaluation: { ...evaluation, challenger: 0.7 } }, shopSource, "platt").reason)
      .toMatch(/does not beat its baseline on this shop's holdout: AUC 0.700 vs recency 0.700/);
    expect(judgeModel({ ...base, evaluation }, shopSource, undefined).reason).toMatch(/has no calibration/);
    const ok = judgeModel({ ...base, evaluation }, shopSource, "platt on 9 validation rows");
    expect(ok.reason).toBe("");
    expect(ok.evidence).toMatchObject({ metric: "AUC", holdout: 0.8, baselineName: "recency", baseline: 0.7, calibration: "platt on 9 validation rows" });
  });

  it("cli: a model that cannot be trained from the stream yet is a clear BAD_REQUEST", () => {
    const r = spawnSync(process.execPath, ["dist/cli/portrait.js", "train", "lstm", "--from-stream"], { encoding: "utf8", timeout: 20_000 });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/BAD_REQUEST: training lstm from the shop's stream is not supported yet: churn, propensity and deepfm are/);
    const all = spawnSync(process.execPath, ["dist/cli/portrait.js", "train", "all"], { encoding: "utf8", timeout: 20_000 });
    expect(all.status).not.toBe(0);
    expect(all.stderr).toMatch(/BAD_REQUEST: portrait train all trains every model that can learn from the shop's stream: add --from-stream/);
  });
});
