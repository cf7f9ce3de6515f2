/**
 * `portrait eval lstm`: the LSTM user encoder against baselines on the same
 * splits, with the live cell (lstm-runtime.ts) stepping each test sequence
 * exactly as the engine would.
 * - next-click on Yoochoose train_tr -> train_valid (items);
 * - next-category on the Taobao time split;
 * - purchase within 10 minutes on the Taobao and REES46 test windows (AUC,
 *   log-loss) against the rate of the current event type seen in training.
 * The cell steps as the engine does: each step's state rounded to the halves
 * a profile stores (LstmRuntime.stepHalf), unless `halfState` is false.
 */
import { LstmRuntime } from "../models/lstm-runtime.js";
import type { LstmEvent } from "../models/lstm-features.js";
import { PURCHASE_HORIZON_MS } from "../models/lstm-spec.js";
import { DEFAULT_LSTM_SOURCES, loadSource } from "../examples/lstm-sequences.js";
import { EventType } from "../wire/proto.js";
import { ItemKnnModel, PopularityModel, SessionPopModel, SknnModel, type ItemKnnOptions, type SknnOptions } from "./baselines.js";
import { auc, logloss } from "../metrics/classification.js";
import type { EvalTable } from "./eval-table.js";
import {
  evaluateNextItem, taobaoTimeSplit, yoochooseSplit,
  type NextItemModel, type Session, type TokenKind, type Vocab,
} from "./next-item.js";

function eventAt(s: Session, i: number): LstmEvent {
  return { type: s.types[i]!, timestampMs: s.times[i]!, itemId: s.items[i]!, categoryId: s.categories[i]!, price: 0 };
}

/** The LSTM as a next-item or next-category model: steps the prefix, scores with the matching head. */
export class LstmNextModel implements NextItemModel {
  readonly name: string;
  readonly #rt: LstmRuntime;
  readonly #token: TokenKind;
  /** eval vocabulary index -> LSTM head index (-1 = the model cannot name it). */
  #map = new Int32Array(0);
  #logits: Float32Array;
  #cacheId = "";
  #cacheUpTo = -1;
  #state: Float32Array;
  readonly #half: boolean;

  constructor(rt: LstmRuntime, token: TokenKind, halfState = true) {
    this.#rt = rt;
    this.#token = token;
    this.#half = halfState;
    this.name = `LSTM ${rt.version}${halfState ? "" : " (float32 state)"}`;
    this.#logits = new Float32Array(token === "item" ? rt.items.size : rt.categories.size);
    this.#state = rt.initialState();
  }

  fit(_train: Session[], vocab: Vocab): void {
    const own = this.#token === "item" ? this.#rt.items : this.#rt.categories;
    this.#map = Int32Array.from(vocab.tokens, (t) => {
      const i = own.indexOf(t);
      return i >= 2 ? i : -1;
    });
  }

  scoreNext(prefix: Session, upTo: number, out: Float32Array): void {
    // The evaluator walks each sequence target by target: step one event on.
    if (prefix.id !== this.#cacheId || upTo < this.#cacheUpTo) {
      this.#state.fill(0);
      this.#cacheId = prefix.id;
      this.#cacheUpTo = 0;
    }
    for (let i = this.#cacheUpTo; i < upTo; i++) {
      const prev = i > 0 ? prefix.times[i - 1]! : 0;
      if (this.#half) this.#rt.stepHalf([this.#state], [eventAt(prefix, i)], [prev]);
      else this.#rt.step([this.#state], [eventAt(prefix, i)], [prev]);
    }
    this.#cacheUpTo = upTo;
    const logits = this.#token === "item" ? this.#rt.itemLogits(this.#state, this.#logits) : this.#rt.categoryLogits(this.#state, this.#logits);
    for (let i = 0; i < out.length; i++) {
      const j = this.#map[i]!;
      out[i] = j >= 0 ? logits[j]! : -Infinity;
    }
  }
}

/**
 * Baseline parameters, tuned on MRR@20 of validation splits carved from the
 * training parts only (`npx tsx scripts/eval-baselines.ts` reruns the tuning).
 */
export const TUNED = Object.freeze({
  yoochoose: { itemKnn: { lambda: 500, alpha: 0.9 } as ItemKnnOptions, sknn: { k: 100, sampleSize: 1000, similarity: "cosine" } as SknnOptions },
  taobaoCategory: { itemKnn: { lambda: 500, alpha: 0.9 } as ItemKnnOptions, sknn: { k: 500, sampleSize: 500, similarity: "jaccard" } as SknnOptions },
});

export interface EvalLstmOptions {
  dataDir: string;
  modelDir: string;
  /** Read at most this many events per file (tests). */
  limit?: number;
  /** Step as the engine does, each state rounded to halves (default); false: float32 throughout (the comparison of bench/RESULTS.md "Disk"). */
  halfState?: boolean;
  onProgress?: (done: number, total: number, note: string) => void;
}

/** Purchase-propensity AUC and log-loss on the test windows of the sources that train the buy head. */
export async function evalPurchase(rt: LstmRuntime, o: EvalLstmOptions): Promise<EvalTable> {
  const rows: EvalTable["rows"] = [];
  const splits: string[] = [];
  const half = o.halfState ?? true;
  for (const [i, spec] of DEFAULT_LSTM_SOURCES.entries()) {
    if (!spec.heads.buy) continue;
    const src = await loadSource(o.dataDir, o.limit !== undefined ? { ...spec, limit: o.limit } : spec, i);
    splits.push(src.split);
    // Baseline: P(buy within the horizon | current event type), counted on the train part.
    const pos = new Float64Array(16);
    const all = new Float64Array(16);
    // As in training: labelled only when the whole horizon lies inside the data.
    const labelOf = (evs: LstmEvent[], t: number, seeUntil: number): number | undefined => {
      const e = evs[t]!;
      if (e.timestampMs + PURCHASE_HORIZON_MS >= seeUntil) return undefined;
      for (let j = t + 1; j < evs.length && evs[j]!.timestampMs - e.timestampMs <= PURCHASE_HORIZON_MS; j++) {
        if (evs[j]!.type === EventType.PURCHASE) return 1;
      }
      return 0;
    };
    for (const s of src.train) {
      for (let t = 0; t < s.events.length; t++) {
        const y = labelOf(s.events, t, src.trainEndMs);
        if (y === undefined) continue;
        all[s.events[t]!.type]! += 1;
        pos[s.events[t]!.type]! += y;
      }
    }
    const lstmP: number[] = [];
    const typeP: number[] = [];
    const labels: number[] = [];
    for (const s of src.test) {
      const st = rt.initialState();
      for (let t = 0; t < s.events.length; t++) {
        const e = s.events[t]!;
        const prev = t > 0 ? s.events[t - 1]!.timestampMs : 0;
        if (half) rt.stepHalf([st], [e], [prev]);
        else rt.step([st], [e], [prev]);
        if (e.timestampMs < src.trainEndMs) continue;
        const y = labelOf(s.events, t, src.endMs + 1);
        if (y === undefined) continue;
        labels.push(y);
        lstmP.push(rt.predict(st, 0).purchasePropensity);
        typeP.push((pos[e.type]! + 1) / (all[e.type]! + 2));
      }
    }
    const rate = labels.reduce((a, b) => a + b, 0) / Math.max(1, labels.length);
    rows.push({ data: spec.format, model: `LSTM ${rt.version}${half ? "" : " (float32 state)"}`, AUC: auc(lstmP, labels), logloss: logloss(lstmP, labels), n: labels.length, positives: rate });
    rows.push({ data: spec.format, model: "event-type rate (train)", AUC: auc(typeP, labels), logloss: logloss(typeP, labels), n: labels.length, positives: rate });
    o.onProgress?.(rows.length, 4, `purchase ${spec.format}`);
  }
  return {
    task: `purchase within ${PURCHASE_HORIZON_MS / 60_000} min`,
    split: splits.join("; "),
    columns: ["data", "model", "AUC", "logloss", "n", "positives"],
    rows,
  };
}

export async function evalLstm(o: EvalLstmOptions): Promise<EvalTable[]> {
  const rt = LstmRuntime.load(o.modelDir);
  const load = o.limit !== undefined ? { limit: o.limit } : {};
  const tables: EvalTable[] = [];
  const yc = await yoochooseSplit(o.dataDir, load);
  tables.push(await evaluateNextItem(yc, [
    new LstmNextModel(rt, "item", o.halfState ?? true), new PopularityModel(), new SessionPopModel(),
    new ItemKnnModel(TUNED.yoochoose.itemKnn), new SknnModel(TUNED.yoochoose.sknn),
  ], { token: "item", onProgress: (d, t, n) => o.onProgress?.(d, t, `next-click ${n}`) }));
  const tb = await taobaoTimeSplit(o.dataDir, load);
  tables.push(await evaluateNextItem(tb, [
    new LstmNextModel(rt, "category", o.halfState ?? true), new PopularityModel(), new SessionPopModel(),
    new ItemKnnModel(TUNED.taobaoCategory.itemKnn), new SknnModel(TUNED.taobaoCategory.sknn),
  ], { token: "category", onProgress: (d, t, n) => o.onProgress?.(d, t, `next-category ${n}`) }));
  tables.push(await evalPurchase(rt, o));
  return tables;
}
