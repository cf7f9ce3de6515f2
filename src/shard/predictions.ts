/**
 * The predictions of a profile, each with its evidence or null with a reason
 * (src/models/evidence.ts says when a model has earned a place). The verdicts
 * are computed once per model when the shard loads it; a query only runs the
 * models whose verdict allows them.
 */
import type { AffinityView, ContributionView, ExplanationView, PredictionView, PredictionsView, UserState } from "../actors/user-profile.js";
import { EVENT_TYPE_NAMES, EventType } from "../wire/proto.js";
import { topContributions } from "../models/churn-model.js";
import { readManifest } from "../models/artifacts.js";
import type { ChurnModel } from "../models/churn-model.js";
import { describeCalibration, judgeModel, type ModelVerdict } from "../models/evidence.js";
import type { LstmRuntime } from "../models/lstm-runtime.js";
import type { PropensityModel } from "../models/propensity-model.js";
import { storedLstmState } from "./lstm-steps.js";

export interface PredictionModels {
  lstm: LstmRuntime | undefined;
  lstmDir?: string | undefined;
  churn: ChurnModel | undefined;
  propensity: PropensityModel | undefined;
  /** This engine's own stream source ("stream:<event stream>"), what "this shop's data" means. */
  shopSource: string;
}

const MS_PER_DAY = 86_400_000;

/**
 * Occlusion over the timeline (the last TIMELINE_MEMORY events) for the LSTM's
 * top next category: the category's logit (the softmax input) from the
 * timeline re-encoded with every event, minus the same without one event, one
 * event at a time. The states before each left-out event are shared with the
 * full re-encoding, so the cost is n(n-1)/2 cell steps (45 for 10 events) and
 * n + 1 dot products of the hidden size.
 */
export function explainNextCategory(state: UserState, lstm: LstmRuntime, category: string): ExplanationView {
  const tl = state.tl ?? [];
  const v = lstm.categories.indexOf(category);
  const n = tl.length;
  // Oldest first, as the re-encoding steps them (lstm-steps.ts reencodeLstmState).
  const evs = tl.slice().reverse().map(([type, timestampMs, item]) => ({ type, timestampMs, itemId: type === EventType.SEARCH ? "" : item, categoryId: "", price: 0 }));
  const prefix: Float32Array[] = [];
  const prevAt: number[] = [];
  const h = lstm.initialState();
  let prev = 0;
  for (let j = 0; j < n; j++) {
    prefix.push(h.slice());
    prevAt.push(prev);
    lstm.stepHalf([h], [evs[j]!], [prev]);
    if (evs[j]!.timestampMs > prev) prev = evs[j]!.timestampMs;
  }
  const base = lstm.categoryLogit(h, v);
  const out: ContributionView[] = [];
  for (let j = 0; j < n; j++) {
    const g = prefix[j]!.slice();
    let p = prevAt[j]!;
    for (let m = j + 1; m < n; m++) {
      lstm.stepHalf([g], [evs[m]!], [p]);
      if (evs[m]!.timestampMs > p) p = evs[m]!.timestampMs;
    }
    const e = evs[j]!;
    const ago = n - 1 - j;
    out.push({ input: `${EVENT_TYPE_NAMES[e.type] ?? "event"} ${tl[ago]![2]} at ${new Date(e.timestampMs).toISOString()}`, value: ago, contribution: base - lstm.categoryLogit(g, v) });
  }
  return {
    method: `occlusion over the last ${n} events: logit of ${category} with the timeline re-encoded, minus the same without the event`,
    unit: "category logit", base, contributions: topContributions(out),
  };
}

function off(model: string): PredictionView {
  return { model: "", version: "", probability: null, reason: `no ${model} model runs in this engine`, definition: "" };
}

function view(v: ModelVerdict, definition: string, probability: number | null, reason = v.reason): PredictionView {
  return {
    model: v.name, version: v.version, definition,
    probability: reason === "" ? probability : null,
    reason,
    ...(reason === "" && v.evidence !== undefined ? { evidence: { ...v.evidence } } : {}),
  };
}

export class Predictions {
  readonly #m: PredictionModels;
  readonly #propensity: { v: ModelVerdict; definition: string } | undefined;
  readonly #churn: { v: ModelVerdict; definition: string } | undefined;
  readonly #lstm: { v: ModelVerdict; definition: string } | undefined;

  constructor(m: PredictionModels) {
    this.#m = m;
    if (m.propensity !== undefined && m.propensity.manifest !== undefined) {
      const p = m.propensity;
      this.#propensity = {
        v: judgeModel(p.manifest!, m.shopSource, describeCalibration(p.spec.calibration)),
        definition: `a purchase within ${p.spec.horizonMs / 60_000} minutes`,
      };
    }
    if (m.churn !== undefined && m.churn.manifest !== undefined) {
      const horizon = (m.churn.manifest.training.splitMs as { horizonMs?: number } | undefined)?.horizonMs ?? 90 * MS_PER_DAY;
      this.#churn = {
        v: judgeModel(m.churn.manifest, m.shopSource, describeCalibration(m.churn.spec.calibration)),
        definition: `no purchase in the next ${horizon / MS_PER_DAY} days`,
      };
    }
    if (m.lstm !== undefined && m.lstmDir !== undefined) {
      const manifest = readManifest(m.lstmDir);
      const cal = manifest.training.calibration;
      this.#lstm = { v: judgeModel(manifest, m.shopSource, typeof cal === "string" ? cal : undefined), definition: "the category of the next event" };
    }
  }

  /** True when any prediction model runs (the profile then carries a predictions block). */
  get any(): boolean {
    return this.#m.lstm !== undefined || this.#m.churn !== undefined || this.#m.propensity !== undefined;
  }

  /**
   * The probability the profile serves for `name`, or undefined where it
   * serves none (no such model runs, the model is not judged fit for this
   * shop's data, a churn risk for a user who never bought): what the
   * audience fields `prediction.*` and their percentile cohorts read, so a
   * marketing audience never targets users on a prediction the profile
   * withholds.
   */
  served(name: "churnRisk" | "purchasePropensity", state: UserState, asOfMs: number): number | undefined {
    if (name === "churnRisk") {
      const { churn } = this.#m;
      return churn !== undefined && this.#churnReason(state) === "" ? churn.predict(state, asOfMs) : undefined;
    }
    const { propensity } = this.#m;
    const p = this.#propensity;
    return propensity !== undefined && p !== undefined && p.v.reason === "" ? propensity.predict(state, asOfMs) : undefined;
  }

  /** Why the profile serves no churn risk for `state` ("" = it serves one), undefined when no churn model is judged. */
  #churnReason(state: UserState): string | undefined {
    const c = this.#churn;
    if (c === undefined) return undefined;
    // The churn model describes customers who have bought: it has no answer for the others.
    return c.v.reason !== "" ? c.v.reason : state.lastPurchaseMs > 0 ? "" : "the churn model describes customers who have bought; this user has not";
  }

  /** The predictions of a state; with `explain`, each served one carries its explanation (computed only then). */
  of(state: UserState, asOfMs: number, explain = false): PredictionsView {
    const { lstm, churn, propensity } = this.#m;
    const out: PredictionsView = {
      purchasePropensity: off("propensity"), churnRisk: off("churn"), nextCategory: off("lstm"), nextCategories: [],
    };
    const p = this.#propensity;
    if (propensity !== undefined && p !== undefined) {
      out.purchasePropensity = view(p.v, p.definition, p.v.reason === "" ? propensity.predict(state, asOfMs) : null);
      if (explain && out.purchasePropensity.probability !== null) out.purchasePropensity.explanation = propensity.explain(state, asOfMs);
    }
    const c = this.#churn;
    if (churn !== undefined && c !== undefined) {
      const reason = this.#churnReason(state)!;
      out.churnRisk = view(c.v, c.definition, reason === "" ? churn.predict(state, asOfMs) : null, reason);
      if (explain && out.churnRisk.probability !== null) out.churnRisk.explanation = churn.explain(state, asOfMs);
    }
    const l = this.#lstm;
    if (lstm !== undefined && l !== undefined && l.v.reason === "") {
      const top: AffinityView[] = lstm.predict(storedLstmState(state, lstm)).nextCategories;
      out.nextCategory = view(l.v, l.definition, top[0]?.score ?? null, top.length === 0 ? "the LSTM has no category for this user" : "");
      if (top.length > 0) out.nextCategories = top;
      if (explain && top.length > 0) out.nextCategory.explanation = explainNextCategory(state, lstm, top[0]!.key);
    } else if (l !== undefined) {
      out.nextCategory = view(l.v, l.definition, null);
    }
    return out;
  }
}

/**
 * The proto `Predictions` of a view: a null probability becomes has_value =
 * false. Each field named (not a spread of the view, whose optional fields
 * give it several shapes: a spread of those took a seventh of a lookup's CPU
 * in the shard); an absent field is undefined, which the encoder skips.
 */
export function wirePredictions(p: PredictionsView): Record<string, unknown> {
  const one = (v: PredictionView) => ({
    model: v.model, version: v.version, probability: v.probability ?? 0, hasValue: v.probability !== null, reason: v.reason, definition: v.definition,
    evidence: v.evidence, explanation: v.explanation,
  });
  return {
    purchasePropensity: one(p.purchasePropensity), churnRisk: one(p.churnRisk), nextCategory: one(p.nextCategory), nextCategories: p.nextCategories,
  };
}
