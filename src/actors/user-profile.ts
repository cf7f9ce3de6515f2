/**
 * The profile model: a user's state and the pure function that applies one
 * event to it. No I/O, no clocks, no threads: the shard worker calls these,
 * tests call them directly.
 *
 * Definitions (README "Profile" says the same for users of the API):
 * - counts: events per type.
 * - money: purchased = sum(price x quantity) of PURCHASE, refunded = the same
 *   for REFUND, net = purchased - refunded. Currency is the first one seen.
 * - RFM: recency = days from the last purchase to as-of; frequency = orders
 *   (a purchase line whose order_id is one of the user's last 8 order ids
 *   adds no order); monetary = net. Scores 1..5 from the fixed bins below.
 * - affinities: for category, brand (lower-cased) and price band, the sum of
 *   the event weights (EVENT_WEIGHTS) of the user's events, each multiplied by
 *   2^(-(asOf - t) / halfLife), t being the event time. The top K keys are kept;
 *   when a new key arrives at a full table the weakest key is dropped.
 * - sessions: a new session starts when session_id changes (if events carry
 *   one) or after sessionGapMs without events (if not).
 * - funnel: views -> carts -> purchases from the counts.
 * - recent items: the last N distinct item ids of item events, newest first.
 * - bought: the last BOUGHT_MEMORY distinct purchased item ids, newest first.
 * - timeline: the last TIMELINE_MEMORY events applied (type, time, item id or
 *   search query), in the order applied, newest first.
 * - reviews: each REVIEW's sentiment in [-1, 1] (from its text through the
 *   shard's sentiment model, else from its rating: (stars - 3) / 2, else
 *   none) is kept as a decayed mean overall, per category and per brand:
 *   sum(d x sentiment) / sum(d), d = 2^(-(asOf - t) / halfLife), the same
 *   decay and reference time as the affinities (the ratio does not depend on
 *   asOf; the weight sum(d) says how much evidence is behind it). The
 *   review's aspects (src/models/sentiment-model.ts) add d to a decayed
 *   aspect table. Each table keeps REVIEW_TOP_K keys, dropping the weakest.
 * - risk: bot-like velocity, refund abuse and account sharing scores with
 *   their reasons (src/actors/risk.ts).
 * - social: degrees, shares and friends' interests (src/actors/social.ts),
 *   changed by the shard's social events, never by applyEvent.
 * Events out of time order (older than the latest applied) are applied too:
 * their decayed weight is computed from their own time.
 */
import { EVENT_TYPE_NAMES, EVENT_TYPE_SLOTS, EventType } from "../wire/proto.js";
import type { AudienceState } from "./audience-types.js";
import type { CompiledProfileOptions } from "./profile-options.js";
import { socialView, type SocialState, type SocialView } from "./social.js";
import { newRiskState, observeRisk, riskCounts, riskView, type RiskState, type RiskView } from "./risk.js";

/** The fields of a validated event the profile reads (a decoded `Event` has them all; "" and 0 mean unset). */
export interface ProfileEvent {
  type: EventType;
  timestampMs: number;
  itemId: string;
  categoryId: string;
  brand: string;
  price: number;
  quantity: number;
  currency: string;
  sessionId: string;
  orderId: string;
  /** A SEARCH's query (optional: only the timeline reads it). */
  searchQuery?: string;
  /** Free-form attributes (optional: the risk signals read attributes["device_id"]). */
  attributes?: { [k: string]: string };
  /** A REVIEW's stars, 0 = none (optional: only the review sentiment reads it). */
  rating?: number;
  /** A REVIEW's text analysed by the shard's sentiment model (absent without text or model). */
  review?: { sentiment: number; aspects: string[] };
}

/** Decayed sentiment of one dimension: parallel arrays; w = sum of decayed weights, s = sum of decayed weight x sentiment. */
export interface SentimentTable {
  keys: string[];
  w: number[];
  s: number[];
}

/** The review part of a state (absent until the first review with a sentiment). */
export interface ReviewState {
  /** Reviews with a sentiment. */
  n: number;
  /** Of them, sentiment from the text (the rest from the rating). */
  nText: number;
  /** Overall decayed sums (scaled like the affinities, reference affRefMs). */
  w: number;
  s: number;
  cat: SentimentTable;
  brand: SentimentTable;
  /** Decayed aspect weights. */
  asp: AffinityTable;
}

/** Decayed scores of one dimension: parallel arrays, at most affinityTopK long. */
export interface AffinityTable {
  keys: string[];
  scores: number[];
}

/**
 * A user's stored state (schema version 1). Plain data, written by the store
 * in a layout of its own (src/store/profile-layout.ts: a field added here has
 * to be given its place there, which the compiler checks). Field names are
 * short: profiles stored before that layout (msgpack records) and the
 * changelog's copies (src/shard/changelog-state.ts) hold them.
 */
export interface UserState {
  /** Schema version. */
  v: 1;
  /** Events applied. */
  n: number;
  /** Count per EventType number (index 0 unused). */
  counts: number[];
  purchased: number;
  refunded: number;
  currency: string;
  orders: number;
  /** The last 8 order ids, newest last. */
  orderIds: string[];
  lastPurchaseMs: number;
  firstSeenMs: number;
  lastSeenMs: number;
  /** Reference time of the affinity scores: their value at time T is score x 2^(-(T - affRefMs) / halfLife). */
  affRefMs: number;
  cat: AffinityTable;
  brand: AffinityTable;
  band: AffinityTable;
  /** Sessions: count, events and duration (ms) of finished sessions, and the current one. */
  sCount: number;
  sEventsDone: number;
  sDurationDone: number;
  sId: string;
  sStartMs: number;
  sLastMs: number;
  sEvents: number;
  /** Recent distinct item ids, newest first. */
  recent: string[];
  /** The last BOUGHT_MEMORY distinct purchased item ids, newest first (absent in states stored before it existed). */
  bought?: string[];
  /** The last TIMELINE_MEMORY events: [type number, event time ms, item id or search query], newest first (absent in states stored before it existed). */
  tl?: [number, number, string][];
  /**
   * The LSTM user encoder's state: h then c, binary16 little-endian bytes
   * (2 x hidden x 2; float32, 2 x hidden x 4, in states stored before
   * 2026-12-07: src/shard/lstm-steps.ts). Absent until the first step. Stepped by the shard, not
   * by applyEvent; valid only for the model version in lstmV (another version
   * starts again from zero).
   */
  lstm?: Uint8Array;
  lstmV?: string;
  /** Audiences: day buckets, session categories, memberships, next due time (src/actors/audience-types.ts); absent until the first evaluation. */
  aud?: AudienceState;
  /** Review sentiment and aspects (absent until the first review with a sentiment). */
  rv?: ReviewState;
  /** Risk signals (src/actors/risk.ts); absent in states stored before they existed, until their next event. */
  rk?: RiskState;
  /** Social ties (src/actors/social.ts); absent until the user's first social event or notice. */
  so?: SocialState;
  /** Identity (README "Identity"): the ids merged into this one, [key, partition], chains included; absent until the first merge. */
  al?: [string, number][];
  /** Identity: the merge ids folded into this state (each is folded once). */
  mg?: string[];
}

/** Affinity weight of each event type (index = EventType number). */
export const EVENT_WEIGHTS: readonly number[] = Object.freeze([
  0, // unspecified
  1, // view
  1, // click
  0, // search (no item)
  3, // add_to_cart
  0, // remove_from_cart
  2, // favorite
  5, // purchase
  0, // refund
  2, // review
  0, // rec_impression (being shown something is not interest)
  1, // rec_click
]);

/** Price bands: [lower bound, label]; a price falls in the last band whose bound it reaches. */
export const PRICE_BANDS: readonly (readonly [number, string])[] = Object.freeze([
  [0, "0-5"], [5, "5-10"], [10, "10-20"], [20, "20-50"], [50, "50-100"],
  [100, "100-200"], [200, "200-500"], [500, "500-1000"], [1000, "1000-2000"], [2000, "2000+"],
] as const);

/** RFM score bins: a value's score is 1 + the number of thresholds it passes. */
export const RFM_BINS = Object.freeze({
  /** Recency, days: <= 7 scores 5, <= 30 → 4, <= 90 → 3, <= 180 → 2, else 1. */
  recencyDays: [7, 30, 90, 180] as const,
  /** Frequency, orders: 1 → 1, 2 → 2, 3-4 → 3, 5-9 → 4, >= 10 → 5. */
  frequency: [2, 3, 5, 10] as const,
  /** Monetary, net in currency units: < 50 → 1, < 200 → 2, < 500 → 3, < 2000 → 4, else 5. */
  monetary: [50, 200, 500, 2000] as const,
});

const ORDER_MEMORY = 8;
/** Keys kept per review table (category and brand sentiment, aspects). */
export const REVIEW_TOP_K = 8;
/** Purchased items remembered (for "exclude what the user just bought"). */
export const BOUGHT_MEMORY = 10;
/** Events kept in the profile's timeline (for people: the dashboard's user page). */
export const TIMELINE_MEMORY = 10;
/** Renormalise affinity scores once the newest event is this many half-lives past their reference (2^32 keeps full double precision). */
const RENORMALISE_HALVINGS = 32;
const MS_PER_DAY = 86_400_000;

export function newUserState(): UserState {
  return {
    v: 1, n: 0, counts: new Array<number>(EVENT_TYPE_SLOTS).fill(0),
    purchased: 0, refunded: 0, currency: "", orders: 0, orderIds: [], lastPurchaseMs: 0,
    firstSeenMs: 0, lastSeenMs: 0, affRefMs: 0,
    cat: { keys: [], scores: [] }, brand: { keys: [], scores: [] }, band: { keys: [], scores: [] },
    sCount: 0, sEventsDone: 0, sDurationDone: 0, sId: "", sStartMs: 0, sLastMs: 0, sEvents: 0,
    recent: [], bought: [], tl: [],
  };
}

export function priceBand(price: number): string {
  // Indexed: a destructuring for-of made two iterators per band, for every event with a price.
  let label = PRICE_BANDS[0]![1];
  for (let i = 0; i < PRICE_BANDS.length; i++) if (price >= PRICE_BANDS[i]![0]) label = PRICE_BANDS[i]![1];
  return label;
}

function scaleTable(t: AffinityTable, f: number): void {
  for (let i = 0; i < t.scores.length; i++) t.scores[i]! *= f;
}

function addAffinity(t: AffinityTable, key: string, w: number, topK: number): void {
  const i = t.keys.indexOf(key);
  if (i >= 0) {
    t.scores[i]! += w;
    return;
  }
  if (t.keys.length < topK) {
    t.keys.push(key);
    t.scores.push(w);
    return;
  }
  let min = 0;
  for (let j = 1; j < t.scores.length; j++) if (t.scores[j]! < t.scores[min]!) min = j;
  t.keys[min] = key;
  t.scores[min] = w;
}

function scaleReviews(r: ReviewState, f: number): void {
  r.w *= f;
  r.s *= f;
  for (const t of [r.cat, r.brand]) {
    for (let i = 0; i < t.w.length; i++) {
      t.w[i]! *= f;
      t.s[i]! *= f;
    }
  }
  scaleTable(r.asp, f);
}

function addSentiment(t: SentimentTable, key: string, w: number, sentiment: number): void {
  let i = t.keys.indexOf(key);
  if (i < 0) {
    if (t.keys.length < REVIEW_TOP_K) {
      i = t.keys.length;
      t.keys.push(key);
      t.w.push(0);
      t.s.push(0);
    } else {
      i = 0;
      for (let j = 1; j < t.w.length; j++) if (t.w[j]! < t.w[i]!) i = j;
      t.keys[i] = key;
      t.w[i] = 0;
      t.s[i] = 0;
    }
  }
  t.w[i]! += w;
  t.s[i]! += w * sentiment;
}

/** The sentiment of a review event: its text's, else its rating's, else undefined. */
export function reviewSentiment(e: ProfileEvent): number | undefined {
  if (e.review !== undefined) return e.review.sentiment;
  const r = e.rating ?? 0;
  return r >= 1 && r <= 5 ? (r - 3) / 2 : undefined;
}

/** Puts `item` first in `recent` (moved there if present), keeping at most `max`; in place (a splice made an array of the removed item). */
function touchRecent(recent: string[], item: string, max: number): void {
  let i = recent.indexOf(item);
  if (i === 0) return;
  if (i < 0) {
    // A new item: the last one drops out when the list is full.
    if (recent.length < max) recent.push(item);
    i = recent.length - 1;
  }
  for (let j = i; j > 0; j--) recent[j] = recent[j - 1]!;
  recent[0] = item;
  if (recent.length > max) recent.length = max;
}

function updateSession(s: UserState, e: ProfileEvent, o: CompiledProfileOptions): void {
  const t = e.timestampMs;
  const isNew = s.sCount === 0 ||
    (e.sessionId !== "" ? e.sessionId !== s.sId : t - s.sLastMs > o.sessionGapMs);
  if (isNew) {
    if (s.sCount > 0) {
      s.sEventsDone += s.sEvents;
      s.sDurationDone += s.sLastMs - s.sStartMs;
    }
    s.sCount++;
    s.sId = e.sessionId;
    s.sStartMs = t;
    s.sLastMs = t;
    s.sEvents = 1;
    return;
  }
  s.sEvents++;
  if (t > s.sLastMs) s.sLastMs = t;
  if (t < s.sStartMs) s.sStartMs = t;
}

/** Applies one valid event to the state, in place. */
export function applyEvent(s: UserState, e: ProfileEvent, o: CompiledProfileOptions): void {
  const t = e.timestampMs;
  const type = e.type;
  s.n++;
  s.counts[type] = (s.counts[type] ?? 0) + 1;
  if (s.firstSeenMs === 0 || t < s.firstSeenMs) s.firstSeenMs = t;
  if (t > s.lastSeenMs) s.lastSeenMs = t;

  if (o.beyondClicks) observeRisk((s.rk ??= newRiskState()), e, s.lastPurchaseMs, o.sessionGapMs);

  const qty = e.quantity > 0 ? e.quantity : 1;
  if (type === EventType.PURCHASE || type === EventType.REFUND) {
    const amount = e.price * qty;
    if (s.currency === "" && e.currency !== "" && amount > 0) s.currency = e.currency;
    if (type === EventType.PURCHASE) {
      s.purchased += amount;
      if (e.itemId !== "") touchRecent((s.bought ??= []), e.itemId, BOUGHT_MEMORY);
      if (t > s.lastPurchaseMs) s.lastPurchaseMs = t;
      if (e.orderId === "" || !s.orderIds.includes(e.orderId)) {
        s.orders++;
        if (e.orderId !== "") {
          s.orderIds.push(e.orderId);
          if (s.orderIds.length > ORDER_MEMORY) s.orderIds.shift();
        }
      }
    } else {
      s.refunded += amount;
    }
  }

  const w0 = EVENT_WEIGHTS[type] ?? 0;
  if (w0 > 0) {
    // Scores are kept valid at affRefMs; a later event adds its weight scaled
    // up by 2^((t - ref) / halfLife) instead of decaying every stored score,
    // and the tables are renormalised to a new reference only when that factor
    // grows large. The same sum, with O(1) work per event.
    if (s.affRefMs === 0) s.affRefMs = t;
    let halvings = (t - s.affRefMs) / o.halfLifeMs;
    if (halvings > RENORMALISE_HALVINGS) {
      const f = Math.pow(2, -halvings);
      scaleTable(s.cat, f);
      scaleTable(s.brand, f);
      scaleTable(s.band, f);
      if (s.rv !== undefined) scaleReviews(s.rv, f);
      s.affRefMs = t;
      halvings = 0;
    }
    const w = halvings === 0 ? w0 : w0 * Math.pow(2, halvings);
    if (e.categoryId !== "") addAffinity(s.cat, e.categoryId, w, o.affinityTopK);
    if (e.brand !== "") addAffinity(s.brand, e.brand.toLowerCase(), w, o.affinityTopK);
    if (e.price > 0) addAffinity(s.band, priceBand(e.price), w, o.affinityTopK);
    if (type === EventType.REVIEW && o.beyondClicks) {
      const sentiment = reviewSentiment(e);
      if (sentiment !== undefined) {
        // The review tables take the decay factor alone (not the event weight): a mean of sentiments.
        const d = w / w0;
        const r = (s.rv ??= { n: 0, nText: 0, w: 0, s: 0, cat: { keys: [], w: [], s: [] }, brand: { keys: [], w: [], s: [] }, asp: { keys: [], scores: [] } });
        r.n++;
        if (e.review !== undefined) r.nText++;
        r.w += d;
        r.s += d * sentiment;
        if (e.categoryId !== "") addSentiment(r.cat, e.categoryId, d, sentiment);
        if (e.brand !== "") addSentiment(r.brand, e.brand.toLowerCase(), d, sentiment);
        for (const a of e.review?.aspects ?? []) addAffinity(r.asp, a, d, REVIEW_TOP_K);
      }
    }
  }

  updateSession(s, e, o);
  if (e.itemId !== "") touchRecent(s.recent, e.itemId, o.recentItems);
  const tl = (s.tl ??= []);
  const text = e.itemId !== "" ? e.itemId : (e.searchQuery ?? "");
  if (tl.length >= TIMELINE_MEMORY) {
    // A full timeline: its oldest entry, dropped, takes the new event (no array per event); the others move back one place.
    if (tl.length > TIMELINE_MEMORY) tl.length = TIMELINE_MEMORY;
    const x = tl[TIMELINE_MEMORY - 1]!;
    for (let j = TIMELINE_MEMORY - 1; j > 0; j--) tl[j] = tl[j - 1]!;
    x[0] = e.type;
    x[1] = e.timestampMs;
    x[2] = text;
    tl[0] = x;
  } else {
    tl.unshift([e.type, e.timestampMs, text]);
  }
}

function score(value: number, bins: readonly number[], lowerIsBetter: boolean): number {
  let passed = 0;
  for (const b of bins) if (lowerIsBetter ? value > b : value >= b) passed++;
  return lowerIsBetter ? 5 - passed : 1 + passed;
}

function ratio(a: number, b: number): number {
  return b > 0 ? a / b : 0;
}

export interface AffinityView {
  key: string;
  score: number;
  /** A category's name, when the shard knows one (it adds them). */
  label?: string;
}

/** The profile a query returns: the proto `Profile` as plain data. */
export interface ProfileView {
  userId: string;
  counts: Record<string, number>;
  money: { purchased: number; refunded: number; net: number; currency: string };
  rfm: {
    recencyDays: number; frequency: number; monetary: number;
    rScore: number; fScore: number; mScore: number; lastPurchaseMs: number;
  };
  categories: AffinityView[];
  brands: AffinityView[];
  priceBands: AffinityView[];
  sessions: {
    count: number; avgEvents: number; avgDurationMs: number;
    currentStartMs: number; currentEvents: number; currentSessionId: string;
  };
  funnel: {
    views: number; carts: number; purchases: number;
    viewToCart: number; cartToPurchase: number; viewToPurchase: number;
  };
  recentItems: string[];
  /** The last events applied, newest first (the timeline). */
  recentEvents: RecentEventView[];
  firstSeenMs: number;
  lastSeenMs: number;
  asOfMs: number;
  eventsApplied: number;
  /** Model predictions, when the engine runs the models (the shard adds them). */
  predictions?: PredictionsView;
  /** The user's audience memberships with the time each began (the shard adds them; README "Audiences"). */
  audiences?: { audienceId: string; sinceMs: number; holdout: boolean }[];
  /** The id the profile is kept under: userId, or the primary when userId was merged into it (README "Identity"; the shard sets that). */
  primaryUserId: string;
  /** Ids merged into this profile. */
  aliases: number;
  /** Review sentiment and aspects; absent when the user has no review with a sentiment. */
  reviews?: ReviewsView;
  /** Risk signals with their reasons (src/actors/risk.ts). */
  risk?: RiskView;
  /** Social ties (src/actors/social.ts); absent without any. */
  social?: SocialView;
}

/** A decayed mean sentiment of one key: sentiment in [-1, 1], weight = the decayed review count behind it. */
export interface SentimentView {
  key: string;
  sentiment: number;
  weight: number;
  label?: string;
}

/** The proto `Reviews` as plain data. */
export interface ReviewsView {
  /** Reviews with a sentiment, and those whose sentiment came from their text. */
  count: number;
  fromText: number;
  /** Decayed mean sentiment of all the user's reviews, in [-1, 1]. */
  sentiment: number;
  /** Per category and per brand, heaviest first. */
  categories: SentimentView[];
  brands: SentimentView[];
  /** The aspects the user writes about most (decayed), strongest first. */
  aspects: AffinityView[];
}

/** One event of the timeline: its type's name, its time, and its item id (or a search's query). */
export interface RecentEventView {
  type: string;
  timestampMs: number;
  itemId: string;
}

/** A model's holdout result on this shop's data (proto `Evidence`). */
export interface EvidenceView {
  /** The deciding metric ("AUC") and the model's value on the later window. */
  metric: string;
  holdout: number;
  /** The best baseline on the same window and its value. */
  baselineName: string;
  baseline: number;
  /** "stream:<event stream>" and the test window (event time, ms). */
  source: string;
  testFromMs: number;
  testToMs: number;
  testExamples: number;
  /** How the probability was calibrated. */
  calibration: string;
}

/** One prediction (proto `Prediction`): a calibrated probability with its evidence, or null with the reason. */
export interface PredictionView {
  /** Model name and version; "" when no such model runs. */
  model: string;
  version: string;
  /** The calibrated probability, or null when the model has not earned a place here (see reason). */
  probability: number | null;
  /** "" when probability is set. */
  reason: string;
  /** What the probability is of, e.g. "a purchase within 5 minutes". */
  definition: string;
  evidence?: EvidenceView;
  /** The prediction's top inputs; only when the query asked for explanations and the probability is served. */
  explanation?: ExplanationView;
}

/** One input's part in a prediction (proto `Contribution`). */
export interface ContributionView {
  /** The input: a feature name, or an event of the timeline. */
  input: string;
  /** Its value (the feature's value; for an event, how many events ago, 0 = newest). */
  value: number;
  /** Its contribution, in the explanation's unit. */
  contribution: number;
}

/** How a prediction came about (proto `Explanation`). */
export interface ExplanationView {
  /** How the contributions were computed, e.g. "exact (linear)". */
  method: string;
  /** Their unit, e.g. "logit" or "probability". */
  unit: string;
  /** The model's output before the inputs: the bias of a linear model, the base of boosted trees. */
  base: number;
  /** The strongest inputs, largest |contribution| first (at most EXPLAIN_TOP). */
  contributions: ContributionView[];
}

/** The proto `Predictions` as plain data. */
export interface PredictionsView {
  /** P(a purchase within the propensity model's horizon). */
  purchasePropensity: PredictionView;
  /** P(no purchase in the churn model's horizon). */
  churnRisk: PredictionView;
  /** The top next category's probability; nextCategories lists the top ones, empty when it is null. */
  nextCategory: PredictionView;
  nextCategories: AffinityView[];
}

function sentimentView(t: SentimentTable, f: number): SentimentView[] {
  return t.keys
    .map((key, i) => ({ key, sentiment: t.w[i]! > 0 ? t.s[i]! / t.w[i]! : 0, weight: t.w[i]! * f }))
    .sort((a, b) => b.weight - a.weight || (a.key < b.key ? -1 : 1));
}

/** The review view of a state at decay factor f (undefined without reviews). */
export function reviewsView(r: ReviewState | undefined, f: number): ReviewsView | undefined {
  if (r === undefined) return undefined;
  return {
    count: r.n, fromText: r.nText, sentiment: r.w > 0 ? r.s / r.w : 0,
    categories: sentimentView(r.cat, f), brands: sentimentView(r.brand, f), aspects: affinityView(r.asp, f),
  };
}

function affinityView(t: AffinityTable, f: number): AffinityView[] {
  return t.keys
    .map((key, i) => ({ key, score: t.scores[i]! * f }))
    .sort((a, b) => b.score - a.score || (a.key < b.key ? -1 : 1));
}

/** Evaluates the state at `asOfMs` into the query view. */
export function profileView(userId: string, s: UserState, asOfMs: number, o: CompiledProfileOptions): ProfileView {
  const counts: Record<string, number> = {};
  for (let i = 1; i < EVENT_TYPE_SLOTS; i++) counts[EVENT_TYPE_NAMES[i]!] = s.counts[i] ?? 0;
  const net = s.purchased - s.refunded;
  const bought = s.lastPurchaseMs > 0;
  const recencyDays = bought ? (asOfMs - s.lastPurchaseMs) / MS_PER_DAY : -1;
  const f = s.affRefMs > 0 ? Math.pow(2, -(asOfMs - s.affRefMs) / o.halfLifeMs) : 1;
  const views = s.counts[EventType.VIEW] ?? 0;
  const carts = s.counts[EventType.ADD_TO_CART] ?? 0;
  const purchases = s.counts[EventType.PURCHASE] ?? 0;
  const sessionEvents = s.sEventsDone + s.sEvents;
  const sessionDuration = s.sDurationDone + (s.sLastMs - s.sStartMs);
  return {
    userId,
    counts,
    money: { purchased: s.purchased, refunded: s.refunded, net, currency: s.currency },
    rfm: {
      recencyDays,
      frequency: s.orders,
      monetary: net,
      rScore: bought ? score(recencyDays, RFM_BINS.recencyDays, true) : 0,
      fScore: bought ? score(s.orders, RFM_BINS.frequency, false) : 0,
      mScore: bought ? score(net, RFM_BINS.monetary, false) : 0,
      lastPurchaseMs: s.lastPurchaseMs,
    },
    categories: affinityView(s.cat, f),
    brands: affinityView(s.brand, f),
    priceBands: affinityView(s.band, f),
    sessions: {
      count: s.sCount,
      avgEvents: ratio(sessionEvents, s.sCount),
      avgDurationMs: ratio(sessionDuration, s.sCount),
      currentStartMs: s.sStartMs,
      currentEvents: s.sEvents,
      currentSessionId: s.sId,
    },
    funnel: {
      views, carts, purchases,
      viewToCart: ratio(carts, views),
      cartToPurchase: ratio(purchases, carts),
      viewToPurchase: ratio(purchases, views),
    },
    recentItems: s.recent.slice(),
    recentEvents: (s.tl ?? []).map(([type, timestampMs, itemId]) => ({ type: EVENT_TYPE_NAMES[type] ?? "unspecified", timestampMs, itemId })),
    firstSeenMs: s.firstSeenMs,
    lastSeenMs: s.lastSeenMs,
    asOfMs,
    eventsApplied: s.n,
    ...(s.rv !== undefined ? { reviews: reviewsView(s.rv, f)! } : {}),
    risk: riskView(s.rk, riskCounts(s)),
    ...(s.so !== undefined ? { social: socialView(s.so)! } : {}),
    primaryUserId: userId,
    aliases: s.al?.length ?? 0,
  };
}
