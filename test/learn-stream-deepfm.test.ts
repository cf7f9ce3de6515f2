/**
 * The DeepFM ranker learned from the shop's own stream: events published to a
 * real nats-server and applied by a real engine are read back with an ordered
 * consumer, a DeepFM is trained on them with a strict time split, and its
 * manifest's evaluation (challenger, champion and baselines on the same later
 * window) is what promotion decides on. Also: the CLI path, and no future leak
 * in the rows.
 */
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { subjects } from "../src/bus/subjects.js";
import { PortraitClient } from "../src/client/portrait-client.js";
import { buildDeepFmRows } from "../src/examples/deepfm-rows.js";
import { toUserEvent, type UserEvent } from "../src/examples/churn-data.js";
import type { DatasetEvent } from "../src/data/types.js";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { createDeepFmSchema } from "../src/models/deepfm-features.js";
import { streamSource } from "../src/models/evidence.js";
import { decidePromotion, lstmPairing } from "../src/models/registry.js";
import { seededRandom } from "../src/models/seeded-random.js";
import { trainDeepFm } from "../src/train/train-deepfm.js";
import { streamEvents } from "../src/train/training-events.js";
import { EventType, type IEvent } from "../src/wire/proto.js";
import { T0, countByUser, expectExactCounts, uniquePrefix } from "./helpers/engine.js";
import { useEngineFixture } from "./helpers/fixture.js";

const MIN = 60_000;
const CATS = 6;
const ITEMS = 90;

/**
 * A small shop over three hours of event time: item i is in category i % 6;
 * each user has a favourite category and views (sometimes carts) items of it
 * 85% of the time, other items otherwise. Every item is about as popular as
 * any other, so popularity cannot tell a user's next item from a random one;
 * the user's categories can.
 */
function shop(prefix: string, users: number, seed = 5): IEvent[] {
  const rnd = seededRandom(seed);
  const out: IEvent[] = [];
  for (let u = 0; u < users; u++) {
    const userId = `${prefix}-u${u}`;
    const fav = u % CATS;
    const n = 4 + Math.floor(rnd() * 8);
    let t = T0 + Math.floor(rnd() * 120) * MIN;
    for (let k = 0; k < n; k++) {
      const inFav = rnd() < 0.85;
      const i = inFav ? fav + CATS * Math.floor(rnd() * (ITEMS / CATS)) : Math.floor(rnd() * ITEMS);
      const type = rnd() < 0.1 ? EventType.ADD_TO_CART : EventType.VIEW;
      out.push({ eventId: `${userId}-${k}`, userId, type, timestampMs: t, itemId: `i${i}`, categoryId: `c${i % CATS}`, price: 10 + (i % 7), sessionId: `${userId}-s` });
      t += (1 + Math.floor(rnd() * 6)) * MIN;
    }
  }
  return out.sort((a, b) => (a.timestampMs as number) - (b.timestampMs as number));
}

describe("learn the DeepFM ranker from the stream", () => {
  const fx = useEngineFixture();

  it("train deepfm --from-stream: strict split, evaluation on the stream's later window against the champion and the baselines; the CLI path", async () => {
    const prefix = uniquePrefix("learnfm");
    const off = { lstmModel: "off", churnModel: "off", deepfmModel: "off" };
    const engine = await fx.startEngine({ subjectPrefix: prefix, dataDir: fx.tmpDir("portrait-engine"), modelsDir: fx.tmpDir("portrait-models-engine"), ...off });
    const client = new PortraitClient(fx.nc, { subjectPrefix: prefix, partitions: engine.config.partitions });
    const published = shop(prefix, 200);
    await client.publishMany(published);
    await expectExactCounts(client, countByUser(published));

    const read = await streamEvents({ natsUrl: fx.nats.url, prefix, partitions: engine.config.partitions });
    expect(read.read).toBe(published.length);
    const modelsDir = fx.tmpDir("portrait-models");
    const quick = { dataDir: fx.tmpDir("no-datasets"), modelsDir, events: read, epochs: 2, patience: 1, seed: 3 };

    // First version: no champion yet.
    const first = await trainDeepFm({ ...quick, makeCurrent: true });
    const e1 = first.manifest.evaluation!;
    expect(e1.source).toBe(streamSource(subjects(prefix).eventStream));
    expect(first.manifest.training.data).toEqual([e1.source]);
    expect(e1.champion).toBeUndefined();
    expect(e1.testWindow.fromMs).toBeGreaterThan(e1.trainWindow.toMs);
    expect(e1.trainWindow.fromMs).toBe(published[0]!.timestampMs);
    expect(e1.testWindow.toMs).toBe(published.at(-1)!.timestampMs);
    expect(e1.counts.test).toBeGreaterThan(200);
    expect(Object.keys(e1.baselines).sort()).toEqual(["logistic regression (same fields, first order)", "popularity (item interactions so far)"]);
    // The planted signal (the user's category) is learned and beats the baselines on the later window; popularity knows nothing here.
    expect(e1.baselines["popularity (item interactions so far)"]).toBeLessThan(0.6);
    expect(e1.challenger).toBeGreaterThan(0.7);
    expect(decidePromotion(first.manifest, undefined, subjects(prefix).eventStream).promote).toBe(e1.challenger > Math.max(...Object.values(e1.baselines)));
    expect((first.manifest.features as { schema: { dense: string } }).schema.dense).toBe("none");

    // Second version on the same stream and seed: the champion (the first, CURRENT, with its own schema) is scored on the same rows
    // and gets the AUC it got as the challenger; promotion decides on the numbers, whichever way they fall.
    // This one reads the bundled LSTM's state (a different schema from the champion's): the pairing is recorded as on the file path.
    const lstm = resolveModel(BUNDLED_MODELS_DIR, "lstm");
    const second = await trainDeepFm({ ...quick, lstmDir: lstm.dir, makeCurrent: false });
    expect((second.manifest.features as { schema: { lstmVersion?: string } }).schema.lstmVersion).toBe(lstm.manifest.version);
    expect(lstmPairing(second.manifest)).toBe(lstm.manifest.version);
    const e2 = second.manifest.evaluation!;
    expect(e2.champion).toEqual({ version: first.manifest.version, value: e1.challenger });
    expect(e2.testWindow).toEqual(e1.testWindow);
    const d = decidePromotion(second.manifest, first.manifest.version, subjects(prefix).eventStream);
    expect(d.promote).toBe(e2.challenger > e1.challenger && Object.values(e2.baselines).every((b) => e2.challenger > b));
    if (!d.promote) expect(d.reason).toMatch(/does not beat/);

    // The CLI: train deepfm --from-stream writes a version whose evaluation names the stream; a data set evaluation of it asks for --format.
    const cliModels = fx.tmpDir("portrait-models-cli");
    const cli = spawnSync(process.execPath, ["dist/cli/portrait.js", "train", "deepfm", "--from-stream", "--nats", fx.nats.url, "--prefix", prefix,
      "--partitions", String(engine.config.partitions), "--models", cliModels, "--epochs", "1", "--lstm", "off"],
    { encoding: "utf8", timeout: 60_000 });
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(`evaluation on ${e1.source}`);
    expect(cli.stdout).toMatch(/AUC [\d.]+ vs no champion; baselines popularity/);
    const written = resolveModel(cliModels, "deepfm");
    expect(written.manifest.evaluation!.source).toBe(e1.source);
    const ev = spawnSync(process.execPath, ["dist/cli/portrait.js", "eval", "deepfm", "--models", cliModels], { encoding: "utf8", timeout: 20_000 });
    expect(ev.status).not.toBe(0);
    expect(ev.stderr).toMatch(/BAD_REQUEST: DeepFM .* was trained on stream:.*name a data set \(--format\)/);
  });

  it("no future leak: a planted later event changes no earlier row, and a stream too short for a split is a clear BAD_REQUEST", async () => {
    // Converted as the stream reader converts what it reads (training-events.ts).
    const events = shop("leak", 120, 9).map((e) => toUserEvent(e as DatasetEvent));
    const schema = createDeepFmSchema({});
    const before = buildDeepFmRows(events, { schema, negatives: 4, seed: 1 });
    const last = events.at(-1)!;
    // The same user comes back an hour later: a view and a cart of an item they had, and a purchase of another.
    const victim = events[Math.floor(events.length / 2)]!;
    const late: UserEvent[] = [
      { ...victim, type: EventType.VIEW, timestampMs: last.timestampMs + 60 * MIN },
      { ...victim, type: EventType.ADD_TO_CART, timestampMs: last.timestampMs + 61 * MIN },
      { ...victim, type: EventType.PURCHASE, itemId: last.itemId, timestampMs: last.timestampMs + 62 * MIN },
    ];
    const after = buildDeepFmRows([...events, ...late], { schema, negatives: 4, seed: 1 });
    expect(after.n).toBeGreaterThan(before.n);
    const F = before.fields;
    expect(Array.from(after.ids.subarray(0, before.n * F))).toEqual(Array.from(before.ids));
    expect(Array.from(after.labels.subarray(0, before.n))).toEqual(Array.from(before.labels));
    expect(after.itemIds.slice(0, before.n)).toEqual(before.itemIds);
    expect(Array.from(after.timeMs.subarray(before.n)).every((t) => t > last.timestampMs)).toBe(true);

    const tiny = { source: "stream:TINY_EVENTS", events: events.slice(0, 3), read: 3, skipped: { invalid: 0, outOfWindow: 0 } };
    await expect(trainDeepFm({ dataDir: "", modelsDir: fx.tmpDir("portrait-models-tiny"), events: tiny, epochs: 1 }))
      .rejects.toMatchObject({ code: "BAD_REQUEST", message: expect.stringMatching(/too few DeepFM rows for a time split of stream:TINY_EVENTS/) });
  });
});
