import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LstmRuntime } from "../src/models/lstm-runtime.js";
import { LSTM_FIELDS, Vocab, encodeLstmEvent, type LstmEvent } from "../src/models/lstm-features.js";
import { loadLayersModel } from "../src/models/lstm-model.js";
import { PURCHASE_HORIZON_MS } from "../src/models/lstm-spec.js";
import { initTf, tf } from "../src/models/tf.js";
import { DEFAULT_LSTM_SOURCES, loadSource, windowsOf, type UserSequence } from "../src/examples/lstm-sequences.js";
import { trainLstm } from "../src/train/train-lstm.js";
import { EventType } from "../src/wire/proto.js";
import { removeDir } from "./helpers/engine.js";
import { tmpDir } from "./helpers/nats.js";

const DATA = process.env.PORTRAIT_DATASETS ?? new URL("../../shared/data", import.meta.url).pathname;

describe("lstm", () => {
  let modelsDir: string;
  let dir: string;
  let history: Array<{ trainLoss: number }>;
  let seqs: UserSequence[];

  beforeAll(async () => {
    if (!existsSync(DATA)) throw new Error(`the LSTM tests need the shared data sets at ${DATA} (../shared/DATA.md)`);
    modelsDir = tmpDir("lstm-models");
    // A tiny real fixture: the first few thousand events of each source.
    const sources = DEFAULT_LSTM_SOURCES.map((s) => ({ ...s, limit: 3000 }));
    const r = await trainLstm({ dataDir: DATA, modelsDir, sources, epochs: 3, patience: 3, hidden: 16, seed: 7 });
    dir = r.dir;
    history = r.manifest.training.history as Array<{ trainLoss: number }>;
    seqs = [];
    for (const [i, src] of sources.entries()) {
      seqs.push(...(await loadSource(DATA, src, i)).train.filter((s) => s.events.length >= 6).slice(0, 3));
    }
  }, 120_000);

  afterAll(() => removeDir(modelsDir));

  it("train - training on a tiny real fixture lowers the training loss", () => {
    expect(history.length).toBeGreaterThanOrEqual(2);
    expect(history.at(-1)!.trainLoss).toBeLessThan(history[0]!.trainLoss);
  });

  it("runtime - stepping event by event reproduces the trained layer on whole sequences (1e-5)", async () => {
    await initTf();
    const rt = LstmRuntime.load(dir);
    const model = await loadLayersModel(dir);
    expect(seqs.length).toBeGreaterThan(0);
    for (const s of seqs) {
      const T = s.events.length;
      const F = LSTM_FIELDS.length;
      const ids = new Int32Array(T * F);
      s.events.forEach((e, t) => encodeLstmEvent(e, t > 0 ? s.events[t - 1]!.timestampMs : 0, rt.items, rt.categories, ids, t * F));
      const inputs = LSTM_FIELDS.map((_, f) => tf.tensor2d(Array.from({ length: T }, (_, t) => ids[t * F + f]!), [1, T], "int32"));
      const outs = model.predict(inputs) as tf.Tensor[];
      const h = outs[3]!.dataSync();
      const buy = outs[2]!.dataSync();
      const state = rt.initialState();
      let maxDiff = 0;
      for (let t = 0; t < T; t++) {
        rt.step([state], [s.events[t]!], [t > 0 ? s.events[t - 1]!.timestampMs : 0]);
        for (let k = 0; k < rt.hidden; k++) maxDiff = Math.max(maxDiff, Math.abs(state[k]! - h[t * rt.hidden + k]!));
        const p = rt.predict(state).purchasePropensity;
        expect(Math.abs(p - 1 / (1 + Math.exp(-buy[t]!)))).toBeLessThan(1e-5);
      }
      expect(maxDiff).toBeLessThan(1e-5);
      tf.dispose([...inputs, ...outs]);
    }
    model.dispose();
  });

  it("runtime - a batched wave equals stepping users one at a time", () => {
    const rt = LstmRuntime.load(dir);
    const a = seqs.map(() => rt.initialState());
    const b = seqs.map(() => rt.initialState());
    for (let t = 0; t < 6; t++) {
      rt.step(a, seqs.map((s) => s.events[t]!), seqs.map((s) => (t > 0 ? s.events[t - 1]!.timestampMs : 0)));
      seqs.forEach((s, i) => rt.step([b[i]!], [s.events[t]!], [t > 0 ? s.events[t - 1]!.timestampMs : 0]));
    }
    a.forEach((st, i) => expect(Array.from(st)).toEqual(Array.from(b[i]!)));
  });

  it("artifacts - save, load and predict give the same numbers twice", () => {
    const r1 = LstmRuntime.load(dir);
    const r2 = LstmRuntime.load(dir);
    const s1 = r1.initialState();
    const s2 = r2.initialState();
    for (const e of seqs[0]!.events) {
      r1.step([s1], [e], [0]);
      r2.step([s2], [e], [0]);
    }
    expect(r1.predict(s1)).toEqual(r2.predict(s2));
    expect(r1.version).toBe(r2.version);
    expect(r1.predict(s1).nextCategories.length).toBe(3);
    // The top-k pass names the same categories, in the same order, as sorting every logit.
    const logits = r1.categoryLogits(s1);
    const sorted = Array.from({ length: logits.length - 2 }, (_, i) => i + 2).sort((a, b) => logits[b]! - logits[a]!);
    expect(r1.predict(s1, 5).nextCategories.map((c) => c.key)).toEqual(sorted.slice(0, 5).map((v) => r1.categories.ids[v]));
  });

  it("features - windows never read events after the time limit (planted future event)", () => {
    const vocabs = { items: new Vocab(["a", "b", "c"]), categories: new Vocab(["x", "y"]) };
    const ev = (t: number, item: string, type = EventType.VIEW): LstmEvent => ({ type, timestampMs: t, itemId: item, categoryId: "x", price: 3 });
    const base: UserSequence = { source: 0, userId: "u", events: [ev(1000, "a"), ev(2000, "b"), ev(3000, "a")] };
    const planted: UserSequence = { ...base, events: [...base.events, ev(3500, "c", EventType.PURCHASE)] };
    const heads = { item: true, category: true, buy: true };
    const o = { fromMs: -Infinity, toMs: 3100, seeUntilMs: 3100, length: 48, burnIn: 16 };
    expect(windowsOf(planted, heads, vocabs, o)).toEqual(windowsOf(base, heads, vocabs, o));
    const w = windowsOf(planted, heads, vocabs, { ...o, toMs: 4000, seeUntilMs: 4000 })[0]!;
    expect(Array.from(w.item)).toEqual([vocabs.items.indexOf("b"), vocabs.items.indexOf("a"), vocabs.items.indexOf("c"), 0]);
    // The horizon runs past what may be seen: no buy label, positive or negative.
    expect(Array.from(w.buyMask)).toEqual([0, 0, 0, 0]);
    const seen = windowsOf(planted, heads, vocabs, { ...o, toMs: 4000, seeUntilMs: 3000 + PURCHASE_HORIZON_MS + 1 })[0]!;
    // The purchase 500 ms after the last view is inside the horizon: a positive buy label there.
    expect(seen.buy[2]).toBe(1);
    expect(seen.buyMask[2]).toBe(1);
  });

  it("features - gap buckets and vocabularies encode as documented", () => {
    const v = Vocab.fromCounts(new Map([["a", 3], ["b", 1], ["c", 5]]), 2, 10);
    expect(v.ids).toEqual(["", "<oov>", "c", "a"]);
    expect([v.indexOf(""), v.indexOf("zzz"), v.indexOf("c")]).toEqual([0, 1, 2]);
    const out = new Int32Array(5);
    encodeLstmEvent({ type: EventType.PURCHASE, timestampMs: 10_000, itemId: "a", categoryId: "", price: 12 }, 9_000, v, v, out, 0);
    expect(Array.from(out)).toEqual([EventType.PURCHASE, 0, 3, 3, 2]);
  });
});
