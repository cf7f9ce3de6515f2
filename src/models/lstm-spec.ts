/**
 * The LSTM user encoder's architecture, its label horizon and its stored
 * weights, without TF.js: the engine's shard workers run the live cell
 * (lstm-runtime.ts) from these, and never load TF.js; training and the
 * TF.js layers model are in lstm-model.ts.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { LSTM_FIELDS } from "./lstm-features.js";

/**
 * The horizon of the purchase-propensity head: a purchase within this much
 * event time after the event. Short on purpose: the logs with non-purchase
 * events (Taobao, REES46) span 2-3 hours, and a label needs the whole horizon
 * observed.
 */
export const PURCHASE_HORIZON_MS = 10 * 60_000;

export interface LstmArchitecture {
  hidden: number;
  /** Embedding size per field (LSTM_FIELDS order). */
  embDims: Record<(typeof LSTM_FIELDS)[number], number>;
  /** Vocabulary size per field. */
  vocab: Record<(typeof LSTM_FIELDS)[number], number>;
}

/** Layer names the runtime reads weights from. */
export const LSTM_LAYER = {
  emb: (f: string) => `emb_${f}`,
  lstm: "lstm",
  item: "head_item",
  category: "head_category",
  buy: "head_buy",
} as const;

export function inputDim(a: LstmArchitecture): number {
  return LSTM_FIELDS.reduce((s, f) => s + a.embDims[f], 0);
}

export interface StoredWeights {
  /** Weight name (e.g. "lstm/kernel") -> values and shape. */
  [name: string]: { values: Float32Array; shape: number[] };
}

/** Reads the float32 weights of a saved layers model without TF.js (the live runtime uses this). */
export function readStoredWeights(dir: string): StoredWeights {
  const json = JSON.parse(readFileSync(join(dir, "model.json"), "utf8")) as {
    weightsManifest: Array<{ paths: string[]; weights: Array<{ name: string; shape: number[]; dtype: string }> }>;
  };
  const out: StoredWeights = {};
  for (const group of json.weightsManifest) {
    const buf = Buffer.concat(group.paths.map((p) => readFileSync(join(dir, p))));
    let off = 0;
    for (const w of group.weights) {
      if (w.dtype !== "float32") throw new Error(`weight ${w.name}: dtype ${w.dtype} not supported`);
      const n = w.shape.reduce((a, b) => a * b, 1);
      const values = new Float32Array(n);
      for (let i = 0; i < n; i++) values[i] = buf.readFloatLE(off + 4 * i);
      off += 4 * n;
      out[w.name] = { values, shape: w.shape };
    }
  }
  return out;
}
