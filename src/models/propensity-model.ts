/**
 * Purchase propensity: P(the user makes a purchase within the horizon after
 * the as-of time), from the live profile. The horizon is the model's own
 * (`PropensitySpec.horizonMs`, default 30 minutes of event time) and is named
 * with every prediction.
 *
 * Like the churn model, the features (`propensityFeatures`) are a pure
 * function of the stored `UserState` and the as-of time: training replays the
 * shop's events through the same `applyEvent` and calls this same function at
 * each cut-off, and the shard calls it at query time, so train and serve see
 * the same numbers. Minutes are 60,000 ms; `log1p(x) = log(1 + x)`.
 *
 * Artifact: `models/propensity/<version>/manifest.json` (format "json") whose
 * `files.model` names a JSON file holding a PropensitySpec: a logistic or
 * boosted-trees spec over PROPENSITY_FEATURE_NAMES, the horizon, and a Platt
 * calibration fitted on the validation window.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { UserState } from "../actors/user-profile.js";
import { ConfigError } from "../errors.js";
import { EventType } from "../wire/proto.js";
import { readManifest, type ModelManifest } from "./artifacts.js";
import { calibrate, validateCalibration, type Calibration } from "./calibration.js";
import { explainSpec, featureIndices, specLogit, validateSpec, type ChurnModelSpec, type Explanation } from "./churn-model.js";

export const PROPENSITY_FEATURE_NAMES = Object.freeze([
  /** log1p(minutes since the last event). */
  "idle_min_log",
  /** log1p(minutes since the last purchase); NEVER_MIN_LOG when never. */
  "since_purchase_min_log",
  /** 1 when the user has bought before. */
  "has_bought",
  /** log1p(events). */
  "events_log",
  /** log1p(views + clicks). */
  "views_log",
  /** log1p(add-to-cart events). */
  "carts_log",
  /** log1p(purchase events). */
  "purchases_log",
  /** log1p(favorites). */
  "favorites_log",
  /** log1p(remove-from-cart events). */
  "removes_log",
  /** log1p(orders). */
  "orders_log",
  /** sign(net) x log1p(|net|). */
  "monetary_log",
  /** carts / (views + clicks), 0 without views. */
  "view_to_cart",
  /** purchases / carts, 0 without carts. */
  "cart_to_purchase",
  /** log1p(max(0, carts - purchases)): cart adds not (yet) matched by a purchase line. */
  "open_carts_log",
  /** log1p(events of the current session). */
  "session_events_log",
  /** log1p(minutes from the current session's start to its last event). */
  "session_min_log",
  /** log1p(sessions). */
  "sessions_log",
  /** Add-to-cart events among the last 10 events (the profile's timeline). */
  "recent_carts",
  /** Purchases among the last 10 events. */
  "recent_purchases",
  /** log1p(minutes since the newest add-to-cart in the timeline); NEVER_MIN_LOG when none. */
  "since_cart_min_log",
  /** log1p(timeline events in the 30 minutes before as-of). */
  "events_30m_log",
  /** log1p(timeline events in the 5 minutes before as-of). */
  "events_5m_log",
  /** 1 when the newest event is an add-to-cart. */
  "last_is_cart",
  /** Σ over the last 10 events of 2^(-minutes before as-of / 10): recent activity, smooth in time. */
  "activity_10m",
  /** The same over add-to-cart events. */
  "cart_activity_10m",
  /** Share of the strongest category in the category affinity (0 without categories). */
  "top_category_share",
  /** Distinct categories kept in the affinity table. */
  "categories",
  /** log1p(distinct recent items). */
  "recent_items_log",
] as const);
export type PropensityFeatureName = (typeof PROPENSITY_FEATURE_NAMES)[number];

const MS_PER_MIN = 60_000;
/**
 * Every "minutes since" feature is capped at 30 days, and "never" is that cap:
 * the features do not depend on when the shop's log happens to start (a user
 * first seen at the start of a log is not new), which is also why there is no
 * tenure feature.
 */
export const NEVER_MIN_LOG = Math.log1p(30 * 24 * 60);
const lmin = (ms: number) => Math.min(NEVER_MIN_LOG, Math.log1p(Math.max(0, ms) / MS_PER_MIN));

/** The feature vector of `state` at `asOfMs` (see PROPENSITY_FEATURE_NAMES); always finite. */
export function propensityFeatures(s: UserState, asOfMs: number): Float64Array {
  const c = (t: EventType) => s.counts[t] ?? 0;
  const views = c(EventType.VIEW) + c(EventType.CLICK);
  const carts = c(EventType.ADD_TO_CART);
  const purchases = c(EventType.PURCHASE);
  const net = s.purchased - s.refunded;
  const tl = s.tl ?? [];
  let recentCarts = 0;
  let recentPurchases = 0;
  let lastCart = 0;
  let last30 = 0;
  let last5 = 0;
  let activity = 0;
  let cartActivity = 0;
  for (const [type, t] of tl) {
    if (t > asOfMs) continue;
    if (type === EventType.ADD_TO_CART) {
      recentCarts++;
      if (t > lastCart) lastCart = t;
    }
    if (type === EventType.PURCHASE) recentPurchases++;
    if (asOfMs - t <= 30 * MS_PER_MIN) last30++;
    if (asOfMs - t <= 5 * MS_PER_MIN) last5++;
    const w = Math.pow(2, -(asOfMs - t) / (10 * MS_PER_MIN));
    activity += w;
    if (type === EventType.ADD_TO_CART) cartActivity += w;
  }
  let catSum = 0;
  let catMax = 0;
  for (const v of s.cat.scores) {
    catSum += v;
    if (v > catMax) catMax = v;
  }
  const x = new Float64Array(PROPENSITY_FEATURE_NAMES.length);
  x[0] = s.lastSeenMs > 0 ? lmin(asOfMs - s.lastSeenMs) : NEVER_MIN_LOG;
  x[1] = s.lastPurchaseMs > 0 ? lmin(asOfMs - s.lastPurchaseMs) : NEVER_MIN_LOG;
  x[2] = s.lastPurchaseMs > 0 ? 1 : 0;
  x[3] = Math.log1p(s.n);
  x[4] = Math.log1p(views);
  x[5] = Math.log1p(carts);
  x[6] = Math.log1p(purchases);
  x[7] = Math.log1p(c(EventType.FAVORITE));
  x[8] = Math.log1p(c(EventType.REMOVE_FROM_CART));
  x[9] = Math.log1p(s.orders);
  x[10] = Math.sign(net) * Math.log1p(Math.abs(net));
  x[11] = views > 0 ? carts / views : 0;
  x[12] = carts > 0 ? purchases / carts : 0;
  x[13] = Math.log1p(Math.max(0, carts - purchases));
  x[14] = Math.log1p(s.sEvents);
  x[15] = lmin(s.sLastMs - s.sStartMs);
  x[16] = Math.log1p(s.sCount);
  x[17] = recentCarts;
  x[18] = recentPurchases;
  x[19] = lastCart > 0 ? lmin(asOfMs - lastCart) : NEVER_MIN_LOG;
  x[20] = Math.log1p(last30);
  x[21] = Math.log1p(last5);
  x[22] = tl.length > 0 && tl[0]![0] === EventType.ADD_TO_CART ? 1 : 0;
  x[23] = activity;
  x[24] = cartActivity;
  x[25] = catSum > 0 ? catMax / catSum : 0;
  x[26] = s.cat.keys.length;
  x[27] = Math.log1p(s.recent.length);
  return x;
}

/** The stored model: a classifier over PROPENSITY_FEATURE_NAMES, its horizon and its calibration. */
export type PropensitySpec = ChurnModelSpec & {
  /** The label window after the as-of time, ms of event time. */
  horizonMs: number;
  calibration?: Calibration;
};

export function validatePropensitySpec(spec: unknown, where: string): PropensitySpec {
  const s = validateSpec(spec, where, PROPENSITY_FEATURE_NAMES, "propensity") as PropensitySpec;
  if (!(typeof s.horizonMs === "number" && s.horizonMs > 0)) throw new ConfigError(`invalid propensity model in ${where}: horizonMs must be a positive number`);
  try {
    validateCalibration(s.calibration);
  } catch (err) {
    throw new ConfigError(`invalid propensity model in ${where}: ${(err as Error).message}`);
  }
  return s;
}

/** A loaded propensity model. */
export class PropensityModel {
  readonly version: string;
  readonly spec: PropensitySpec;
  readonly manifest: ModelManifest | undefined;
  readonly #index: number[];
  readonly #x: Float64Array;

  constructor(spec: PropensitySpec, version: string, manifest?: ModelManifest) {
    this.spec = validatePropensitySpec(spec, `model ${version}`);
    this.version = version;
    this.manifest = manifest;
    this.#index = featureIndices(spec.features, PROPENSITY_FEATURE_NAMES, "propensity");
    this.#x = new Float64Array(this.#index.length);
  }

  /** Loads `dir/manifest.json` (name "propensity", format "json") and its `files.model`; ConfigError when missing or malformed. */
  static load(dir: string): PropensityModel {
    if (!existsSync(join(dir, "manifest.json"))) throw new ConfigError(`no propensity model manifest at ${join(dir, "manifest.json")}`);
    const manifest = readManifest(dir);
    if (manifest.name !== "propensity") throw new ConfigError(`${dir} holds model "${manifest.name}", not "propensity"`);
    if (manifest.format !== "json") throw new ConfigError(`propensity model ${dir} has format "${manifest.format}", expected "json"`);
    const file = manifest.files?.model;
    if (typeof file !== "string") throw new ConfigError(`propensity manifest in ${dir} names no files.model`);
    let spec: unknown;
    try {
      spec = JSON.parse(readFileSync(join(dir, file), "utf8"));
    } catch (err) {
      throw new ConfigError(`cannot read propensity model ${join(dir, file)}: ${(err as Error).message}`, { cause: err });
    }
    return new PropensityModel(validatePropensitySpec(spec, join(dir, file)), manifest.version, manifest);
  }

  /** The uncalibrated logit for a full feature vector (PROPENSITY_FEATURE_NAMES order). */
  logitFeatures(full: ArrayLike<number>): number {
    for (let j = 0; j < this.#index.length; j++) this.#x[j] = full[this.#index[j]!]!;
    return specLogit(this.spec, this.#x);
  }

  /** The calibrated P(a purchase in [asOfMs, asOfMs + horizon)) for the profile `state`. */
  predict(state: UserState, asOfMs: number): number {
    return calibrate(this.spec.calibration, this.logitFeatures(propensityFeatures(state, asOfMs)));
  }

  /** The top inputs of the logit for the profile `state` (explainSpec). */
  explain(state: UserState, asOfMs: number): Explanation {
    const full = propensityFeatures(state, asOfMs);
    return explainSpec(this.spec, this.#index.map((i) => full[i]!));
  }
}
