/**
 * DeepFM features, rows and training on real Taobao events (../shared/data,
 * or PORTRAIT_DATASETS): no look-ahead in rows, negatives never touched by the
 * user, a short training run that learns, and save -> load -> predict that
 * reproduces the numbers.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyEvent, newUserState, type ProfileEvent } from "../src/actors/user-profile.js";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { fnv1a32String } from "../src/wire/partition.js";
import { resolveDataFile } from "../src/data/datasets.js";
import type { DatasetEvent } from "../src/data/types.js";
import { evalDeepFm, scoreDeepFmRows, type DeepFmRowsSpec } from "../src/eval/deepfm-eval.js";
import { loadDeepFmScorer } from "../src/models/deepfm-scorer.js";
import {
  buildDeepFmRow, checkDeepFmSchema, createDeepFmSchema, hashId, type DeepFmSchema, type ItemInfo,
} from "../src/models/deepfm-features.js";
import { deepFmForward, deepFmWeightShapes, type DeepFmWeights } from "../src/models/deepfm-spec.js";
import { loadDeepFmWeights } from "../src/models/deepfm-weights.js";
import { initTf } from "../src/models/tf.js";
import {
  buildDeepFmRows, loadDeepFmEvents, sortEventsByTime, splitDeepFmRows, type DeepFmRows, type LstmStepper,
} from "../src/examples/deepfm-rows.js";
import { trainDeepFm } from "../src/train/train-deepfm.js";
import { EventType } from "../src/wire/proto.js";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const DATA_DIR = process.env.PORTRAIT_DATASETS ?? resolve(REPO_ROOT, "../shared/data");
const LIMIT = 12_000;
const profile = compileProfileOptions();
let events: DatasetEvent[] = [];
const tmp = mkdtempSync(resolve(tmpdir(), "portrait-deepfm-"));

beforeAll(async () => {
  try {
    resolveDataFile(DATA_DIR, "taobao");
  } catch (err) {
    throw new Error(`missing test data: ${(err as Error).message} (tests look in ${DATA_DIR}; set PORTRAIT_DATASETS to override)`);
  }
  events = await loadDeepFmEvents(DATA_DIR, "taobao", undefined, LIMIT);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function event(p: Partial<ProfileEvent> & { timestampMs: number }): ProfileEvent {
  return { type: EventType.VIEW, itemId: "", categoryId: "", brand: "", price: 0, quantity: 0, currency: "", sessionId: "", orderId: "", ...p };
}

function localIds(schema: DeepFmSchema, ids: Int32Array, row = 0): Record<string, number> {
  const F = schema.fields.length;
  return Object.fromEntries(schema.fields.map((f, i) => [f.name, ids[row * F + i]! - f.offset]));
}

describe("deepfm features", () => {
  it("features - hashId is the partitioner's FNV-1a over UTF-8", () => {
    for (const s of ["", "1464116", "cat:électronique", "北京"]) expect(hashId(s)).toBe(fnv1a32String(s));
  });

  it("features - user, item and cross fields come from the state before the row", () => {
    const schema = createDeepFmSchema();
    const s = newUserState();
    const t0 = Date.UTC(2017, 10, 26, 1, 0, 0);
    applyEvent(s, event({ timestampMs: t0, itemId: "a", categoryId: "c1", brand: "Acme", price: 12 }), profile);
    applyEvent(s, event({ timestampMs: t0 + 1000, itemId: "b", categoryId: "c1", type: EventType.ADD_TO_CART, price: 12 }), profile);
    applyEvent(s, event({ timestampMs: t0 + 2000, itemId: "c", categoryId: "c2", type: EventType.PURCHASE, price: 30, quantity: 1 }), profile);
    const ids = new Int32Array(schema.fields.length);
    const dense = new Float32Array(0);
    const item: ItemInfo = { itemId: "b", categoryId: "c1", brand: "acme", price: 15, popularity: 5, lastMs: t0 + 1000, firstMs: t0, users: 3, categoryPopularity: 9 };
    const asOf = t0 + 62_000;
    buildDeepFmRow(schema, s, item, asOf, undefined, ids, dense, 0);
    const v = localIds(schema, ids);
    // c1: view 1 + cart 3 = 4 < c2: purchase 5, so c1 ranks second.
    expect(v.x_cat).toBe(3);
    expect(v.x_brand).toBe(2);
    expect(v.x_seen).toBe(2); // "b" is the second most recent item
    expect(v.u_funnel).toBe(1 + 1 + 2);
    expect(v.u_r).toBe(5);
    expect(v.u_n).toBe(1 + Math.floor(Math.log2(3)));
    expect(v.u_gap).toBe(1 + Math.floor(Math.log2(1 + 60)));
    expect(v.i_pop).toBe(1 + 2);
    expect(v.i_id).toBe(1 + (hashId("b") % 8191));
    expect(v.c_hour).toBe(1);
    expect(v.c_wday).toBe(0);
    for (let f = 0; f < schema.fields.length; f++) {
      const field = schema.fields[f]!;
      expect(ids[f]).toBeGreaterThanOrEqual(field.offset);
      expect(ids[f]).toBeLessThan(field.offset + field.size);
    }
    // A user without events: every user and cross field is "none".
    buildDeepFmRow(schema, newUserState(), { ...item, itemId: "z", popularity: 1 }, asOf, undefined, ids, dense, 0);
    const n = localIds(schema, ids);
    for (const name of ["u_cat1", "u_brand", "u_r", "u_n", "u_gap", "u_funnel", "x_cat", "x_seen", "i_id"]) expect(n[name], name).toBe(0);
  });

  it("features - a stored schema must match the builder", () => {
    const schema = createDeepFmSchema({ fields: ["i_pop", "x_cat"] });
    expect(checkDeepFmSchema(JSON.parse(JSON.stringify(schema)))).toEqual(schema);
    expect(() => checkDeepFmSchema({ ...schema, fields: [{ ...schema.fields[0]!, size: 20 }, schema.fields[1]!] })).toThrow(/bad size/);
    expect(() => createDeepFmSchema({ fields: ["nope"] })).toThrow(/unknown DeepFM field "nope"/);
  });
});

function rowsBefore(r: DeepFmRows, ms: number): number {
  let n = 0;
  while (n < r.n && r.timeMs[n]! < ms) n++;
  return n;
}

describe("deepfm rows", () => {
  it("rows - a planted future event changes no row before its time", () => {
    const schema = createDeepFmSchema();
    const k = Math.floor(events.length / 2);
    const T = events[k]!.timestampMs;
    const a = buildDeepFmRows(events, { schema, seed: 3 });
    const n = rowsBefore(a, T);
    expect(n).toBeGreaterThan(1000);
    // The future event involves the user of the last row before T and the item seen most often in those rows.
    const user = events[a.event[n - 1]!]!.userId;
    const counts = new Map<string, number>();
    for (const id of a.itemIds.slice(0, n)) counts.set(id, (counts.get(id) ?? 0) + 1);
    const item = [...counts].sort((x, y) => y[1] - x[1])[0]![0];
    const planted: DatasetEvent = { ...events[k]!, eventId: "planted", userId: user, itemId: item, type: EventType.PURCHASE, timestampMs: T, price: 99, quantity: 3 };
    const b = buildDeepFmRows(sortEventsByTime([...events, planted]), { schema, seed: 3 });
    expect(rowsBefore(b, T)).toBe(n);
    const F = a.fields;
    expect(b.ids.subarray(0, n * F)).toEqual(a.ids.subarray(0, n * F));
    expect(b.labels.subarray(0, n)).toEqual(a.labels.subarray(0, n));
    expect(b.popularity.subarray(0, n)).toEqual(a.popularity.subarray(0, n));
    expect(b.itemIds.slice(0, n)).toEqual(a.itemIds.slice(0, n));
    // The planted purchase is visible afterwards (so the comparison above can fail).
    const later = (r: DeepFmRows) => Array.from(r.popularity.subarray(rowsBefore(r, T + 1)));
    expect(later(b)).not.toEqual(later(a));
  });

  it("rows - negatives are catalog items the user never touched up to that event", () => {
    const rows = buildDeepFmRows(events, { schema: createDeepFmSchema(), seed: 5, negatives: 4 });
    expect(rows.stats.positives).toBeGreaterThan(500);
    expect(rows.stats.negatives).toBe(4 * rows.stats.positives);
    const touched = new Map<string, Set<string>>();
    const catalog = new Set<string>();
    let r = 0;
    for (let ei = 0; ei < events.length; ei++) {
      const e = events[ei]!;
      let mine = touched.get(e.userId);
      if (mine === undefined) touched.set(e.userId, (mine = new Set()));
      for (; r < rows.n && rows.event[r] === ei; r++) {
        if (rows.labels[r] === 1) {
          expect(rows.itemIds[r]).toBe(e.itemId);
          expect(catalog.has(e.itemId!)).toBe(true);
        } else {
          expect(mine.has(rows.itemIds[r]!)).toBe(false);
          expect(rows.itemIds[r]).not.toBe(e.itemId);
          expect(catalog.has(rows.itemIds[r]!)).toBe(true);
        }
      }
      mine.add(e.itemId!);
      catalog.add(e.itemId!);
    }
    expect(r).toBe(rows.n);
  });

  it("rows - a user who touched most of a small catalog gets only the rest as negatives", () => {
    const t0 = Date.UTC(2017, 10, 26, 1);
    const ev = (i: number, userId: string, itemId: string): DatasetEvent =>
      ({ eventId: `e${i}`, userId, type: EventType.VIEW, timestampMs: t0 + i * 1000, itemId, categoryId: "c" });
    const stream: DatasetEvent[] = [];
    for (let i = 1; i <= 6; i++) stream.push(ev(stream.length, "other", `i${i}`));
    for (let i = 1; i <= 4; i++) stream.push(ev(stream.length, "u", `i${i}`));
    stream.push(ev(stream.length, "u", "i1"));
    const rows = buildDeepFmRows(stream, { schema: createDeepFmSchema(), seed: 1, negatives: 4 });
    const last = rows.event.indexOf(stream.length - 1);
    expect(rows.labels[last]).toBe(1);
    expect(rows.itemIds.slice(last + 1).sort()).toEqual(["i5", "i6"]);
  });

  it("rows - the dense input is the LSTM state before the event, however steps are batched", () => {
    const seen = new Map<string, number>();
    const stepped = new WeakMap<Float32Array, number>();
    // A deterministic stand-in cell: h = (events stepped, seconds of the latest event since 2017-07-14).
    const stepper: LstmStepper = {
      hidden: 2,
      initialState: () => new Float32Array(4),
      step(states, evs, prevMs) {
        expect(new Set(states).size).toBe(states.length);
        states.forEach((s, i) => {
          expect(prevMs[i]).toBe(stepped.get(s) ?? 0);
          stepped.set(s, evs[i]!.timestampMs);
          s[0]! += 1;
          s[1] = (evs[i]!.timestampMs - 1.5e12) / 1000;
        });
      },
    };
    const schema = createDeepFmSchema({ lstmHidden: 2, lstmVersion: "test" });
    const rows = buildDeepFmRows(events, { schema, seed: 5, lstm: stepper });
    const last = new Map<string, number>();
    let r = 0;
    for (let ei = 0; ei < events.length; ei++) {
      const e = events[ei]!;
      for (; r < rows.n && rows.event[r] === ei; r++) {
        expect(rows.dense[2 * r]).toBe(seen.get(e.userId) ?? 0);
        const t = last.get(e.userId);
        expect(rows.dense[2 * r + 1]).toBe(t === undefined ? 0 : (t - 1.5e12) / 1000);
      }
      seen.set(e.userId, (seen.get(e.userId) ?? 0) + 1);
      last.set(e.userId, e.timestampMs);
    }
    expect(rows.n).toBeGreaterThan(0);
  });
});

describe("deepfm training", () => {
  it("train - a short run on real events learns, and save -> load -> predict reproduces it", async () => {
    const t0 = performance.now();
    const { dir, manifest } = await trainDeepFm({ dataDir: DATA_DIR, limit: LIMIT, modelsDir: tmp, seed: 7, epochs: 2, patience: 2 });
    expect(performance.now() - t0).toBeLessThan(30_000);
    const h = manifest.training.history as Array<{ trainLoss: number; valLoss: number }>;
    expect(h).toHaveLength(2);
    expect(h[1]!.trainLoss).toBeLessThan(h[0]!.trainLoss);
    expect(manifest.training.bestValidationLogloss as number).toBeLessThan(manifest.training.initialValidationLogloss as number);
    const deepFm = manifest.metrics.find((m) => m.task.endsWith(": DeepFM"))!;
    expect(deepFm.values.AUC).toBeGreaterThan(0.6);

    // The saved files, scored by the serving scorer and by the TF.js reference forward.
    const spec = manifest.training.rowsSpec as DeepFmRowsSpec;
    const schema = checkDeepFmSchema((manifest.features as { schema: DeepFmSchema }).schema);
    const rows = buildDeepFmRows(events, { schema, negatives: spec.negatives, seed: spec.seed });
    const split = splitDeepFmRows(rows, spec.split, spec.splitBy);
    const scorer = await loadDeepFmScorer(dir, { backend: "onnxruntime" });
    const served = await scoreDeepFmRows(scorer, rows, split.test);
    await scorer.close();
    const { arch, weights } = loadDeepFmWeights(dir);
    const { tf } = await initTf();
    const w: DeepFmWeights = {};
    for (const [name, shape] of deepFmWeightShapes(arch)) w[name] = tf.tensor(weights[name]!, shape);
    const [a, b] = split.test;
    const ref = deepFmForward(tf, arch, w, tf.tensor2d(rows.ids.subarray(a * rows.fields, b * rows.fields), [b - a, rows.fields], "int32"), undefined);
    const refData = await ref.data();
    tf.dispose([ref, ...Object.values(w)]);
    let maxDiff = 0;
    for (let i = 0; i < served.length; i++) maxDiff = Math.max(maxDiff, Math.abs(served[i]! - refData[i]!));
    expect(maxDiff).toBeLessThan(1e-5);

    // The evaluation rebuilds the same rows and gets the manifest's numbers.
    const table = await evalDeepFm({ dataDir: DATA_DIR, modelDir: dir, backend: "onnxruntime" });
    expect(table.rows[0]!.AUC).toBeCloseTo(deepFm.values.AUC!, 9);
    expect(table.rows[0]!.logloss).toBeCloseTo(deepFm.values.logloss!, 9);
    expect(table.rows.map((r) => String(r.model).split(" ")[0])).toEqual(["DeepFM", "logistic", "popularity"]);
  });
});
