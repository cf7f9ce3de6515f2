/**
 * A user's audience state and its pure evaluation. Everything audiences add
 * to a profile lives in ONE sub-structure, `UserState.aud` (AudienceState):
 * plain arrays and numbers, so a codec of the whole state has one place to
 * add it. No I/O, no clocks: the shard passes the evaluation time.
 *
 * Definitions:
 * - day buckets: per UTC day with activity, [day number, events, add-to-carts,
 *   purchase events, purchase money in cents], flattened (stride 5), oldest
 *   first, kept for the 90 days up to the user's newest event (at most 450
 *   numbers; a user active on 10 days keeps 50). A window of N days at time t
 *   sums the buckets of days dayOf(t)-N+1 .. (and any later).
 * - session categories: counts of the categories of the current session's
 *   events (reset when the profile starts a new session), at most 8 kept.
 * - memberships: audience id -> [since ms (0 = not a member), transitions so
 *   far, holdout 0/1]. The transition count goes on after an exit, so
 *   (audience, user, transition number) names each enter and exit once: it is
 *   the message id on the audience stream.
 * - due: the earliest time after the last evaluation at which time alone may
 *   change a membership (0 = never): the shard's timer index fires it.
 *
 * Evaluation time: the caller's "now" (the engine clock), never earlier than
 * the user's last event. A rule's value is piecewise constant in time; every
 * time-dependent leaf reports the next instant its value may change (a day
 * bucket leaving a window, "days since" crossing a threshold, a decayed score
 * dropping under its minimum, a session ending, a cart turning abandoned), and
 * the minimum of those is `due`. Re-evaluating at `due` is therefore exact.
 */
import { createHash } from "node:crypto";
import { EventType } from "../wire/proto.js";
import { riskCounts, riskScores } from "./risk.js";
import type { AudienceDefinition, CompiledAudiences, Field, Rule } from "./audience-rules.js";
import type { AudienceState, Transition } from "./audience-types.js";
import type { CompiledProfileOptions } from "./profile-options.js";
import { RFM_BINS, type AffinityTable, type ProfileEvent, type UserState } from "./user-profile.js";

export const DAY_MS = 86_400_000;
/** Days of day buckets kept. */
export const BUCKET_DAYS = 90;
const STRIDE = 5;
const SESSION_CATEGORIES = 8;
/**
 * Short-term interest: the session's category counts halve every this many
 * events of the session (each event multiplies them by SESSION_DECAY before
 * adding 1 to its category), so the session's top category follows a change
 * of interest within a few events (bench/interest-shift.ts).
 */
export const SESSION_HALF_LIFE_EVENTS = 3;
const SESSION_DECAY = 2 ** (-1 / SESSION_HALF_LIFE_EVENTS);

export type { AudienceState, Transition };
export type TransitionReason = "event" | "time" | "backfill" | "deleted" | "forgotten" | "merged";

/** An empty membership dictionary (null prototype: AudienceState.m). */
export function newMemberships(): AudienceState["m"] {
  return Object.create(null) as AudienceState["m"];
}

export function newAudienceState(partition: number): AudienceState {
  return { p: partition, d: [], cart: 0, sc: [], scn: [], scS: 0, m: newMemberships(), due: 0 };
}

const dayOf = (t: number) => Math.floor(t / DAY_MS);

/** Takes one applied event into the audience state (call after applyEvent on the same state). */
export function observeAudienceEvent(u: UserState, e: ProfileEvent, partition: number): void {
  const a = (u.aud ??= newAudienceState(partition));
  a.p = partition;
  const day = dayOf(e.timestampMs);
  const newest = a.d.length > 0 ? Math.max(a.d[a.d.length - STRIDE]!, day) : day;
  if (day > newest - BUCKET_DAYS) {
    let i = a.d.length - STRIDE;
    while (i >= 0 && a.d[i]! > day) i -= STRIDE;
    if (i < 0 || a.d[i] !== day) {
      // A new newest day (the usual case) is appended: a splice returns an array of what it removed, even none.
      if (i + STRIDE === a.d.length) a.d.push(day, 0, 0, 0, 0);
      else a.d.splice(i + STRIDE, 0, day, 0, 0, 0, 0);
      i += STRIDE;
    }
    a.d[i + 1]!++;
    if (e.type === EventType.ADD_TO_CART) a.d[i + 2]!++;
    if (e.type === EventType.PURCHASE) {
      a.d[i + 3]!++;
      a.d[i + 4]! += Math.round(e.price * (e.quantity > 0 ? e.quantity : 1) * 100);
    }
    let drop = 0;
    while (drop < a.d.length && a.d[drop]! <= newest - BUCKET_DAYS) drop += STRIDE;
    if (drop > 0) a.d.splice(0, drop);
  }
  if (e.type === EventType.ADD_TO_CART && e.timestampMs > a.cart) a.cart = e.timestampMs;
  if (a.scS !== u.sCount) {
    a.scS = u.sCount;
    a.sc = [];
    a.scn = [];
  }
  if (e.categoryId !== "") {
    // Counts decayed per event (SESSION_HALF_LIFE_EVENTS): the session's top follows a change of interest inside a session.
    for (let j = 0; j < a.scn.length; j++) a.scn[j] = Math.round(a.scn[j]! * SESSION_DECAY * 1000) / 1000;
    const i = a.sc.indexOf(e.categoryId);
    if (i >= 0) a.scn[i]!++;
    else if (a.sc.length < SESSION_CATEGORIES) {
      a.sc.push(e.categoryId);
      a.scn.push(1);
    } else {
      // The table is full: the category replaces the weakest one (the current interest is never left out).
      let weakest = 0;
      for (let j = 1; j < a.scn.length; j++) if (a.scn[j]! < a.scn[weakest]!) weakest = j;
      if (a.scn[weakest]! < 1) {
        a.sc[weakest] = e.categoryId;
        a.scn[weakest] = 1;
      }
    }
  }
}

/** What evaluation needs besides the state. */
export interface EvalEnv {
  profile: CompiledProfileOptions;
  /** A model's prediction for the user at `now`, or undefined when there is none. */
  predict?: ((name: "churnRisk" | "purchasePropensity") => number | undefined) | undefined;
  /** The percentile cohorts' sketches (the shard's); without them a percentile rule is false. */
  cohorts?: CohortSketches | undefined;
}

/** Bins of a cohort sketch over [0, 1] (predictions are probabilities): boundaries are kept to 1/COHORT_BINS. */
export const COHORT_BINS = 1000;
const PREDICTIONS = ["churnRisk", "purchasePropensity"] as const;
type PredictionName = (typeof PREDICTIONS)[number];

/**
 * Percentile cohorts ("the top 10% of churn risk"): per prediction, a
 * histogram of the latest prediction of each user evaluated by a percentile
 * rule (COHORT_BINS bins over [0, 1]). A user's bin is kept in its state
 * (`AudienceState.q`), so a new value moves the user's one count rather than
 * adding one: the histogram counts users, not evaluations. A cohort's
 * boundary is the lower edge of the bin where the users counted from the top
 * first reach the cohort's share; it is recomputed after every 0.5% of the
 * counted users changed bins (so it stays current as predictions move).
 * The shard keeps one per engine shard (users are spread over shards by a
 * hash, so each shard's distribution estimates the whole's) and stores it
 * with its batches (audience-runner.ts).
 */
export class CohortSketches {
  readonly counts: Record<PredictionName, Float64Array> = { churnRisk: new Float64Array(COHORT_BINS), purchasePropensity: new Float64Array(COHORT_BINS) };
  readonly #total = { churnRisk: 0, purchasePropensity: 0 };
  readonly #moves = { churnRisk: 0, purchasePropensity: 0 };
  readonly #boundaries = new Map<string, number>();
  /** Changed since the last `taken()`. */
  dirty = false;

  constructor(stored?: Partial<Record<PredictionName, number[]>>) {
    for (const n of PREDICTIONS) {
      const xs = stored?.[n];
      if (xs === undefined || xs.length !== COHORT_BINS) continue;
      this.counts[n].set(xs);
      this.#total[n] = xs.reduce((x, y) => x + y, 0);
    }
  }

  static bin(x: number): number {
    return Math.min(COHORT_BINS - 1, Math.max(0, Math.floor(x * COHORT_BINS)));
  }

  /** Counts the user's prediction `x` (moving its earlier count). */
  observe(a: AudienceState, name: PredictionName, x: number): void {
    const k = PREDICTIONS.indexOf(name);
    const q = (a.q ??= [0, 0]);
    const b = CohortSketches.bin(x) + 1;
    if (q[k] === b) return;
    const c = this.counts[name];
    if (q[k]! > 0) c[q[k]! - 1]!--;
    else this.#total[name]++;
    c[b - 1]!++;
    q[k] = b;
    this.#moves[name]++;
    this.dirty = true;
  }

  /** Takes the user out (forgotten). */
  drop(a: AudienceState | undefined): void {
    if (a?.q === undefined) return;
    PREDICTIONS.forEach((name, k) => {
      const b = a.q![k]!;
      if (b <= 0) return;
      this.counts[name][b - 1]!--;
      this.#total[name]--;
      this.#moves[name]++;
      this.dirty = true;
    });
    a.q = [0, 0];
  }

  /** The lower bound of the top `top`% of the counted users' predictions; undefined before any user is counted. */
  boundary(name: PredictionName, top: number): number | undefined {
    const total = this.#total[name];
    if (total <= 0) return undefined;
    if (this.#moves[name] > Math.max(1, total / 200)) {
      this.#boundaries.clear();
      this.#moves[name] = 0;
    }
    const key = `${name}:${top}`;
    let v = this.#boundaries.get(key);
    if (v === undefined) {
      const want = (top / 100) * total;
      const c = this.counts[name];
      let above = 0;
      let i = COHORT_BINS - 1;
      for (; i > 0; i--) {
        above += c[i]!;
        if (above >= want) break;
      }
      v = i / COHORT_BINS;
      this.#boundaries.set(key, v);
    }
    return v;
  }

  /** The histograms to store, when changed since the last call. */
  taken(): Record<PredictionName, number[]> | undefined {
    if (!this.dirty) return undefined;
    this.dirty = false;
    return { churnRisk: [...this.counts.churnRisk], purchasePropensity: [...this.counts.purchasePropensity] };
  }
}

function rfmScore(value: number, bins: readonly number[], lowerIsBetter: boolean): number {
  let passed = 0;
  for (const b of bins) if (lowerIsBetter ? value > b : value >= b) passed++;
  return lowerIsBetter ? 5 - passed : 1 + passed;
}

/** Windowed fields: name -> [bucket column, days]. */
const WINDOW_FIELDS = new Map<string, [number, number]>(
  (["events", "carts", "purchases", "revenue"] as const).flatMap((name, i) => [1, 7, 30, 90].map((w) => [`${name}.${w}d`, [i + 1, w]] as [string, [number, number]])),
);

/**
 * One user's evaluation at one time: what the compiled rules read, and the
 * next instant any leaf may change (`due`). One context per thread, reset for
 * each user (no allocation per evaluation).
 */
class EvalContext {
  u!: UserState;
  a!: AudienceState;
  now = 0;
  env!: EvalEnv;
  due = Infinity;
  /** Per audience of the set (its index in defs): 0 = not evaluated in this evaluation, 1 = out, 2 = in. */
  res = new Uint8Array(0);
  /** Per audience of the set: 1 = the user is a member (before this evaluation's transitions): membershipFlags. */
  inside: Uint8Array = new Uint8Array(0);
  /** Window sums already computed in this evaluation, by col * 4 + window index; valid where stamp === gen. */
  readonly win = new Float64Array(20);
  readonly stamp = new Uint32Array(20);
  gen = 0;
  /** Per audience of the set: 1 = its guard may hold (openGuards; read only for guarded audiences). */
  open = new Uint8Array(0);

  reset(u: UserState, a: AudienceState, now: number, env: EvalEnv, audiences: number): void {
    this.u = u;
    this.a = a;
    this.now = now;
    this.env = env;
    this.due = Infinity;
    if (this.res.length < audiences) this.res = new Uint8Array(Math.max(audiences, 2 * this.res.length));
    else this.res.fill(0, 0, audiences);
    this.gen++;
  }

  at(t: number): void {
    if (t > this.now && t < this.due) this.due = t;
  }

  /** The decay factor of the affinity scores at `now`, shared by the audiences of one evaluation (computed once). */
  #decay = 0;
  #decayGen = 0;

  /** 2^(-(now - affRefMs) / halfLife): the factor from a stored affinity score (or review weight) to its value at `now`. */
  decay(): number {
    if (this.#decayGen !== this.gen) {
      this.#decay = Math.pow(2, -(this.now - this.u.affRefMs) / this.env.profile.halfLifeMs);
      this.#decayGen = this.gen;
    }
    return this.#decay;
  }

  window(col: number, wi: number): number {
    const k = col * 4 + wi;
    if (this.stamp[k] === this.gen) return this.win[k]!;
    const w = WINDOW_DAYS[wi]!;
    const d = this.a.d;
    const from = dayOf(this.now) - w + 1;
    let sum = 0;
    let oldest = Infinity;
    for (let i = 0; i < d.length; i += STRIDE) {
      if (d[i]! < from) continue;
      // The sum changes by time only when a bucket with something in this column leaves the window.
      if (d[i + col]! !== 0 && d[i]! < oldest) oldest = d[i]!;
      sum += d[i + col]!;
    }
    if (oldest !== Infinity) this.at((oldest + w) * DAY_MS);
    const v = col === 4 ? sum / 100 : sum;
    this.win[k] = v;
    this.stamp[k] = this.gen;
    return v;
  }

  since(from: number, v: number): number | undefined {
    if (from <= 0) return undefined;
    this.at(from + v * DAY_MS);
    this.at(from + v * DAY_MS + 1);
    return (this.now - from) / DAY_MS;
  }
}

/**
 * Whether the key at index `j` of table `t` is among its `topN` first keys in
 * rank order (score descending, then key): fewer than topN keys rank above it.
 * A count over the table, stopped at topN (no sort: an evaluation checks only
 * the few keys its open guards name).
 */
export function inTopAt(t: AffinityTable, j: number, topN: number): boolean {
  const { keys, scores } = t;
  const s = scores[j]!;
  const k = keys[j]!;
  let above = 0;
  for (let x = 0; x < keys.length; x++) {
    const y = scores[x]!;
    if ((y > s || (y === s && keys[x]! < k)) && ++above >= topN) return false;
  }
  return true;
}

/** A compiled rule: its value for the context's user and time (every leaf runs: each records its next change). */
type Compiled = (c: EvalContext) => boolean;
const WINDOW_DAYS = [1, 7, 30, 90] as const;

function comparator(op: string, v: number): (x: number | undefined) => boolean {
  switch (op) {
    case ">": return (x) => x !== undefined && x > v;
    case ">=": return (x) => x !== undefined && x >= v;
    case "<": return (x) => x !== undefined && x < v;
    case "<=": return (x) => x !== undefined && x <= v;
    case "==": return (x) => x !== undefined && x === v;
    default: return (x) => x !== undefined && x !== v;
  }
}

/** A field's value reader (it records the field's next change by time, given the compared value). */
function fieldReader(f: Field, v: number): (c: EvalContext) => number | undefined {
  const win = WINDOW_FIELDS.get(f);
  if (win !== undefined) {
    const [col, w] = win;
    const wi = WINDOW_DAYS.indexOf(w as 1 | 7 | 30 | 90);
    return (c) => c.window(col, wi);
  }
  switch (f) {
    case "rfm.r": return (c) => {
      const u = c.u;
      if (u.lastPurchaseMs <= 0) return 0;
      for (const b of RFM_BINS.recencyDays) c.at(u.lastPurchaseMs + b * DAY_MS + 1);
      return rfmScore((c.now - u.lastPurchaseMs) / DAY_MS, RFM_BINS.recencyDays, true);
    };
    case "rfm.f": return (c) => (c.u.lastPurchaseMs > 0 ? rfmScore(c.u.orders, RFM_BINS.frequency, false) : 0);
    case "rfm.m": return (c) => (c.u.lastPurchaseMs > 0 ? rfmScore(c.u.purchased - c.u.refunded, RFM_BINS.monetary, false) : 0);
    case "orders": return (c) => c.u.orders;
    case "net": return (c) => c.u.purchased - c.u.refunded;
    case "eventsTotal": return (c) => c.u.n;
    case "daysSincePurchase": return (c) => c.since(c.u.lastPurchaseMs, v);
    case "daysSinceSeen": return (c) => c.since(c.u.lastSeenMs, v);
    case "prediction.churnRisk": return (c) => c.env.predict?.("churnRisk");
    case "prediction.purchasePropensity": return (c) => c.env.predict?.("purchasePropensity");
    // A mean of decayed sentiments: the common decay cancels, so it changes only with reviews.
    case "review.sentiment": return (c) => (c.u.rv !== undefined && c.u.rv.w > 0 ? c.u.rv.s / c.u.rv.w : undefined);
    case "review.count": return (c) => c.u.rv?.n ?? 0;
    case "risk.velocity": return (c) => riskScores(c.u.rk, riskCounts(c.u))[0];
    case "risk.refundAbuse": return (c) => riskScores(c.u.rk, riskCounts(c.u))[1];
    case "risk.accountSharing": return (c) => riskScores(c.u.rk, riskCounts(c.u))[2];
    case "social.following": return (c) => c.u.so?.o ?? 0;
    case "social.followers": return (c) => c.u.so?.i ?? 0;
    default: return () => undefined;
  }
}

/** A key among the top n of a decayed table, and/or its decayed score at least s (`table`: the user's table, undefined = none). */
function affinityRule(table: (u: UserState) => AffinityTable | undefined, key: string, topN: number | undefined, minScore: number | undefined): Compiled {
  if (minScore === undefined) {
    // Rank is the same at every time: all scores decay by the same factor.
    return (c) => {
      const t = table(c.u);
      const i = t === undefined ? -1 : t.keys.indexOf(key);
      return i >= 0 && inTopAt(t!, i, topN!);
    };
  }
  return (c) => {
    const t = table(c.u);
    if (t === undefined) return false;
    const i = t.keys.indexOf(key);
    if (i < 0) return false;
    const raw = t.scores[i]!;
    const ok = topN === undefined || inTopAt(t, i, topN);
    const score = raw * c.decay();
    if (score >= minScore) c.at(Math.ceil(c.u.affRefMs + c.env.profile.halfLifeMs * Math.log2(raw / minScore)) + 1);
    return ok && score >= minScore;
  };
}

/** Compiles a rule once per set; `index`: position of each audience in the set's evaluation order (references come first). */
function compileRule(r: Rule, index: ReadonlyMap<string, number>): Compiled {
  if ("all" in r) {
    const xs = r.all.map((x) => compileRule(x, index));
    return (c) => {
      let ok = true;
      for (let i = 0; i < xs.length; i++) ok = xs[i]!(c) && ok;
      return ok;
    };
  }
  if ("any" in r) {
    const xs = r.any.map((x) => compileRule(x, index));
    return (c) => {
      let ok = false;
      for (let i = 0; i < xs.length; i++) ok = xs[i]!(c) || ok;
      return ok;
    };
  }
  if ("not" in r) {
    const x = compileRule(r.not, index);
    return (c) => !x(c);
  }
  if ("field" in r) {
    const read = fieldReader(r.field, r.value);
    const cmp = comparator(r.op, r.value);
    return (c) => cmp(read(c));
  }
  if ("affinity" in r) {
    const x = r.affinity;
    const table = x.dimension === "category" ? (u: UserState) => u.cat : x.dimension === "brand" ? (u: UserState) => u.brand : (u: UserState) => u.band;
    return affinityRule(table, x.dimension === "brand" ? x.key.toLowerCase() : x.key, x.topN, x.minScore);
  }
  if ("reviewAspect" in r) return affinityRule((u) => u.rv?.asp, r.reviewAspect.key, r.reviewAspect.topN, undefined);
  if ("reviewSentiment" in r) {
    const x = r.reviewSentiment;
    const key = x.dimension === "brand" ? x.key.toLowerCase() : x.key;
    const cmp = comparator(x.op, x.value);
    const minWeight = x.minWeight;
    return (c) => {
      const rv = c.u.rv;
      const t = x.dimension === "category" ? rv?.cat : rv?.brand;
      const i = t?.keys.indexOf(key) ?? -1;
      if (t === undefined || i < 0 || !(t.w[i]! > 0)) return false;
      if (minWeight !== undefined) {
        // The weight decays like an affinity score: it falls below minWeight at a known time.
        const w = t.w[i]! * c.decay();
        if (w >= minWeight) c.at(Math.ceil(c.u.affRefMs + c.env.profile.halfLifeMs * Math.log2(t.w[i]! / minWeight)) + 1);
        if (w < minWeight) return false;
      }
      return cmp(t.s[i]! / t.w[i]!);
    };
  }
  if ("session" in r) {
    const category = r.session.category;
    const topN = r.session.topN ?? 1;
    return (c) => {
      const u = c.u;
      const a = c.a;
      if (u.sCount === 0 || a.scS !== u.sCount) return false;
      const end = u.sLastMs + c.env.profile.sessionGapMs;
      if (c.now > end) return false;
      c.at(end + 1);
      const i = a.sc.indexOf(category);
      if (i < 0) return false;
      const n = a.scn[i]!;
      let above = 0;
      for (let j = 0; j < a.sc.length; j++) if (a.scn[j]! > n || (a.scn[j] === n && j < i)) above++;
      return above < topN;
    };
  }
  if ("cartAbandoned" in r) {
    const afterMs = r.cartAbandoned.afterMinutes * 60_000;
    return (c) => {
      const cart = c.a.cart;
      if (cart <= 0 || c.u.lastPurchaseMs >= cart) return false;
      const at = cart + afterMs;
      c.at(at);
      return c.now >= at;
    };
  }
  if ("percentile" in r) {
    const name = r.percentile.field === "prediction.churnRisk" ? "churnRisk" : "purchasePropensity";
    const top = r.percentile.top;
    return (c) => {
      const x = c.env.predict?.(name);
      const sk = c.env.cohorts;
      if (x === undefined || sk === undefined) return false;
      sk.observe(c.a, name, x);
      const b = sk.boundary(name, top);
      return b !== undefined && x >= b;
    };
  }
  const j = index.get(r.inAudience)!;
  // Evaluated before this audience in this evaluation, or (skipped: no event of its types) its membership as it stands.
  return (c) => {
    const v = c.res[j]!;
    if (v !== 0) return v === 2;
    return c.inside[j] === 1;
  };
}

/** Index of each audience in a set (its position in defs). */
const indexCache = new WeakMap<CompiledAudiences, Map<string, number>>();

function indexOf(set: CompiledAudiences): Map<string, number> {
  let index = indexCache.get(set);
  if (index === undefined) indexCache.set(set, (index = new Map(set.defs.map((d, i) => [d.id, i]))));
  return index;
}

/** The compiled rules of a set, in its order; built once per set. */
const compiledSets = new WeakMap<CompiledAudiences, readonly Compiled[]>();

function rulesOf(set: CompiledAudiences): readonly Compiled[] {
  let rules = compiledSets.get(set);
  if (rules === undefined) {
    const index = indexOf(set);
    rules = set.defs.map((d) => compileRule(d.rule, index));
    compiledSets.set(set, rules);
  }
  return rules;
}

/**
 * The guards of a set (CompiledAudiences.guards), numbered g: per slot, key ->
 * the guards naming it; per guard, its audience's index in the set, its top N
 * (0 = none) and its minimum score (NaN = none).
 */
interface GuardIndex {
  bySlot: Map<string, number[]>[];
  audience: Int32Array;
  topN: Int32Array;
  minScore: Float64Array;
  /**
   * Per affinity slot (0-2): the largest top N of its guards that have one (0 = none), and the smallest minimum
   * score of those that have one (Infinity = none). A key can open a guard of the slot only when it is among the
   * table's `maxTopN` first or its decayed score is at least `minMinScore` (every affinity guard has a top N or a
   * minimum score, and needs each it has): openGuards looks up only those keys.
   */
  maxTopN: Int32Array;
  minMinScore: Float64Array;
}
const guardIndexes = new WeakMap<CompiledAudiences, GuardIndex | null>();

function guardIndexOf(set: CompiledAudiences): GuardIndex | null {
  let index = guardIndexes.get(set);
  if (index === undefined) {
    const gs = set.guards.flatMap((g, i) => (g === undefined ? [] : [[i, g] as const]));
    index = gs.length === 0 ? null : {
      bySlot: [new Map(), new Map(), new Map(), new Map()], audience: new Int32Array(gs.length), topN: new Int32Array(gs.length), minScore: new Float64Array(gs.length),
      maxTopN: new Int32Array(3), minMinScore: new Float64Array([Infinity, Infinity, Infinity]),
    };
    gs.forEach(([i, g], k) => {
      if (g.slot < 3) {
        if (g.topN !== undefined) index!.maxTopN[g.slot] = Math.max(index!.maxTopN[g.slot]!, g.topN);
        if (g.minScore !== undefined) index!.minMinScore[g.slot] = Math.min(index!.minMinScore[g.slot]!, g.minScore);
      }
      const byKey = index!.bySlot[g.slot]!;
      const xs = byKey.get(g.key);
      if (xs === undefined) byKey.set(g.key, [k]);
      else xs.push(k);
      index!.audience[k] = i;
      index!.topN[k] = g.topN ?? 0;
      index!.minScore[k] = g.minScore ?? NaN;
    });
    guardIndexes.set(set, index);
  }
  return index;
}

/**
 * Marks in c.open the audiences whose guard (audience-rules.ts Guard) may hold
 * for the context's user at its time: from the keys of the user's affinity
 * tables and session categories, not by running each rule. A guarded audience
 * not marked has a false guard (the leaf's own tests: a key absent from its
 * table is false for every top N and score).
 */
function openGuards(c: EvalContext, index: GuardIndex, audiences: number): void {
  const open = c.open.length < audiences ? (c.open = new Uint8Array(Math.max(audiences, 2 * c.open.length))) : c.open.fill(0, 0, audiences);
  const { audience, topN, minScore } = index;
  const u = c.u;
  for (let slot = 0; slot < 3; slot++) {
    const byKey = index.bySlot[slot]!;
    if (byKey.size === 0) continue;
    const t = slot === 0 ? u.cat : slot === 1 ? u.brand : u.band;
    const keys = t.keys;
    const scores = t.scores;
    // The keys that may open a guard of the slot (GuardIndex.maxTopN, minMinScore): a score at least the table's
    // maxTopN-th largest (ties let more keys through: the guard's own test below is exact), or a decayed score at
    // least the smallest minimum. The rest are not looked up.
    const top = index.maxTopN[slot]!;
    const kth = top === 0 ? Infinity : keys.length <= top ? -Infinity : kthLargest(scores, top);
    const minMin = index.minMinScore[slot]!;
    const d = minMin === Infinity ? 0 : c.decay();
    for (let j = 0; j < keys.length; j++) {
      const s = scores[j]!;
      if (s < kth && !(s * d >= minMin)) continue;
      const gs = byKey.get(keys[j]!);
      if (gs === undefined) continue;
      for (let x = 0; x < gs.length; x++) {
        const g = gs[x]!;
        if (topN[g]! > 0 && !inTopAt(t, j, topN[g]!)) continue;
        const min = minScore[g]!;
        if (min === min && !(t.scores[j]! * c.decay() >= min)) continue;
        open[audience[g]!] = 1;
      }
    }
  }
  const bySession = index.bySlot[3]!;
  const a = c.a;
  if (bySession.size > 0 && u.sCount !== 0 && a.scS === u.sCount && c.now <= u.sLastMs + c.env.profile.sessionGapMs) {
    for (let j = 0; j < a.sc.length; j++) {
      const gs = bySession.get(a.sc[j]!);
      if (gs !== undefined) for (let x = 0; x < gs.length; x++) open[audience[gs[x]!]!] = 1;
    }
  }
}

/** Scratch of kthLargest (top N is at most 16: audience-rules.ts). */
const kthScratch = new Float64Array(16);

/** The k-th largest of `xs` (1 <= k <= 16, k < xs.length). */
function kthLargest(xs: readonly number[], k: number): number {
  if (k === 1) {
    let m = -Infinity;
    for (let i = 0; i < xs.length; i++) if (xs[i]! > m) m = xs[i]!;
    return m;
  }
  // The k largest so far, descending, in kthScratch[0..k).
  const b = kthScratch;
  let n = 0;
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i]!;
    if (n === k && !(x > b[k - 1]!)) continue;
    let j = n < k ? n++ : k - 1;
    while (j > 0 && b[j - 1]! < x) {
      b[j] = b[j - 1]!;
      j--;
    }
    b[j] = x;
  }
  return b[k - 1]!;
}

/** Per set, per event types (eventBit): the audiences (indexes, ascending) whose types include one of them. */
const candidateLists = new WeakMap<CompiledAudiences, Map<number, Int32Array>>();
let lastCandidatesSet: CompiledAudiences | undefined;
let lastCandidates = new Map<number, Int32Array>();

function candidatesOf(set: CompiledAudiences, events: number): Int32Array {
  if (set !== lastCandidatesSet) {
    let m = candidateLists.get(set);
    if (m === undefined) candidateLists.set(set, (m = new Map()));
    lastCandidates = m;
    lastCandidatesSet = set;
  }
  let list = lastCandidates.get(events);
  if (list === undefined) {
    const xs: number[] = [];
    set.masks.forEach((mask, i) => {
      if ((mask & events) !== 0) xs.push(i);
    });
    // Bounded: a set sees few combinations of types (one bit per type), but each is kept.
    if (lastCandidates.size >= 4096) lastCandidates.clear();
    lastCandidates.set(events, (list = Int32Array.from(xs)));
  }
  return list;
}

const context = new EvalContext();
/** The set of the last evaluation, and its rules and guard index (evaluateAudiences). */
let lastSet: CompiledAudiences | undefined;
let lastRules: readonly Compiled[] = [];
let lastGuards: GuardIndex | null = null;

/** Whether a backfill's selection (evaluateAudiences `only`) includes an audience with a guard; by selection. */
const selectedGuarded = new WeakMap<Uint8Array, boolean>();

function selectsGuarded(set: CompiledAudiences, only: Uint8Array): boolean {
  let x = selectedGuarded.get(only);
  if (x === undefined) selectedGuarded.set(only, (x = set.guards.some((g, i) => g !== undefined && only[i] === 1)));
  return x;
}

/**
 * A state's memberships as flags by index in a set (1 = member), kept beside
 * the state (not stored) and rebuilt when the set or the memberships object
 * changes: a lookup of `m` by audience id for each audience was most of an
 * evaluation's time (V8 profile of the bench: a keyed load on a
 * 100-key object per audience per event; a transition still looks its
 * entry up by id). Transitions update both (evaluateAudiences); `m` is
 * changed only in this module.
 */
interface Flags {
  set: CompiledAudiences;
  m: AudienceState["m"];
  inside: Uint8Array;
  /** Every entry of `m` and its id, in the order of `m` (membershipEntries). */
  ids: string[];
  all: AudienceState["m"][string][];
  /** Memberships of audiences not in the set (deleted ones, to exit in the next whole evaluation). */
  others: number;
}
/**
 * Where a state keeps its Flags: a symbol-keyed property of its own, not
 * enumerable (no codec, spread, clone or byte estimate sees it), rather than
 * a WeakMap from states to flags. With a WeakMap, the ~8,600 freshly loaded
 * states of a selective backfill cost 24–35 µs each against 14–26 µs
 * (unpacking and evaluating them, alternated in one process: the WeakMap's
 * insertions and its ephemerons in every GC).
 */
const FLAGS = Symbol("audience membership flags");
type WithFlags = AudienceState & { [FLAGS]?: Flags | undefined };

function membershipFlags(a: AudienceState, set: CompiledAudiences): Flags {
  const f = (a as WithFlags)[FLAGS];
  if (f !== undefined && f.set === set && f.m === a.m) return f;
  const index = indexOf(set);
  const g: Flags = { set, m: a.m, inside: new Uint8Array(set.defs.length), ids: [], all: [], others: 0 };
  for (const id in a.m) {
    const x = a.m[id]!;
    g.ids.push(id);
    g.all.push(x);
    if (x[0] <= 0) continue;
    const i = index.get(id);
    if (i === undefined) g.others++;
    else g.inside[i] = 1;
  }
  if (FLAGS in a) (a as WithFlags)[FLAGS] = g;
  else Object.defineProperty(a, FLAGS, { value: g, writable: true, configurable: true, enumerable: false });
  return g;
}

/**
 * The entries of a state's memberships and their ids, in the order of `m`,
 * when its evaluation keeps them (the flags of its last evaluation are those
 * of its `m`); else undefined (walk `m`). For the store, which writes them
 * at ~1 memberships record per event in the audience bench: a walk of `m`
 * (a dictionary: its keys listed and ordered at every walk) and a keyed load
 * per id cost more than the writing.
 */
export function membershipEntries(a: AudienceState): { ids: readonly string[]; all: readonly AudienceState["m"][string][] } | undefined {
  const f = (a as WithFlags)[FLAGS];
  return f !== undefined && f.m === a.m ? f : undefined;
}

/** Holdout draw of a user for an audience: stable (a hash of both), uniform in [0, 1). */
export function holdoutDraw(user: string, audience: string): number {
  const h = createHash("sha256").update(audience).update("\0").update(user).digest();
  return h.readUInt32BE(0) / 2 ** 32;
}

function transition(a: AudienceState, user: string, def: AudienceDefinition | undefined, id: string, entered: boolean, at: number, reason: TransitionReason, entry?: AudienceState["m"][string]): Transition {
  const m = entry ?? (a.m[id] ??= [0, 0, 0]);
  m[1]++;
  const since = entered ? at : m[0];
  if (entered) {
    m[0] = at;
    const share = def?.holdoutShare ?? 0;
    m[2] = share > 0 && holdoutDraw(user, id) < share ? 1 : 0;
  } else {
    m[0] = 0;
  }
  return { audience: id, user, n: m[1], entered, atMs: at, reason, holdout: m[2] === 1, sinceMs: since };
}

/** What an evaluation without transitions returns (shared, frozen). */
const NO_TRANSITIONS: readonly Transition[] = Object.freeze([]);

/** Whether the user is a member of any audience (in the set or not). */
function isMemberOfAny(a: AudienceState): boolean {
  const m = a.m;
  for (const id in m) if (m[id]![0] > 0) return true;
  return false;
}

/**
 * Evaluates the audiences of the set for one user at `now` (not before the
 * user's last event), updates the memberships and `due`, and returns the
 * transitions. Memberships of audiences no longer in the set exit with reason
 * "deleted" in a whole evaluation (a changed set is backfilled: every stored
 * profile is evaluated in whole).
 *
 * `events`: the event types (eventBit) applied to the user since its last
 * evaluation, when that is all that happened; undefined = evaluate every
 * audience. With it, an audience whose rule no such event type can change
 * (CompiledAudiences.masks) keeps its membership unevaluated, provided that no
 * time boundary passed since the last evaluation (`now` < due) and the user
 * was evaluated in whole before (`w`). Exact: its leaves have the values they
 * had, and their next changes were in the old due, so min(old due, the due of
 * what was evaluated) is never later than the true next change (it may be
 * earlier: a timer that finds nothing changed just sets the next one).
 *
 * In every evaluation, a non-member of an audience with a guard
 * (CompiledAudiences.guards) that is false for the user is not evaluated: the
 * rule is false, and stays false until an event makes the guard true, so it
 * has no transition and no due time (thirty category-lovers audiences need
 * only the one of the user's top category run).
 *
 * `only` (a backfill after a change of the set: backfillSelection): per
 * audience of the set, 1 = evaluate; the others keep their memberships under
 * the same conditions (no time boundary passed, evaluated in whole before),
 * and memberships of audiences no longer in the set exit.
 */
export function evaluateAudiences(user: string, u: UserState, set: CompiledAudiences, now: number, env: EvalEnv, reason: TransitionReason, partition: number, events?: number, only?: Uint8Array): readonly Transition[] {
  const a = (u.aud ??= newAudienceState(partition));
  const t = Math.max(now, u.lastSeenMs);
  const partial = (events !== undefined || only !== undefined) && a.w === 1 && (a.due === 0 || t < a.due);
  if (set.defs.length === 0 && !isMemberOfAny(a)) {
    // No audience defined and no membership to exit: what the evaluation below comes to (no rule, no transition, no
    // time boundary), without its context, flags or env (a shard without audiences runs this for every user it writes).
    if (!(partial && a.due > 0)) a.due = 0;
    a.w = 1;
    return NO_TRANSITIONS;
  }
  // The set's compiled rules and guard index: WeakMap lookups only when the set is not the last one's.
  if (set !== lastSet) {
    lastRules = rulesOf(set);
    lastGuards = guardIndexOf(set);
    lastSet = set;
  }
  const rules = lastRules;
  const c = context;
  c.reset(u, a, t, env, rules.length);
  const f = membershipFlags(a, set);
  const flags = (c.inside = f.inside);
  // Allocated at the first transition: most evaluations have none.
  let out: Transition[] | undefined;
  const defs = set.defs;
  const masks = set.masks;
  const guards = set.guards;
  const guardIndex = lastGuards;
  // A partial backfill evaluates only its audiences: the guards are opened only when one of them has one.
  if (guardIndex !== null && !(partial && events === undefined && only !== undefined && !selectsGuarded(set, only))) openGuards(c, guardIndex, defs.length);
  const open = c.open;
  // An event's partial evaluation runs only the audiences of its event types (their list per set and types, built once).
  const list = partial && events !== undefined && only === undefined ? candidatesOf(set, events) : undefined;
  const n = list === undefined ? defs.length : list.length;
  for (let x = 0; x < n; x++) {
    const i = list === undefined ? x : list[x]!;
    if (partial && (events === undefined || (masks[i]! & events) === 0) && (only === undefined || only[i] === 0)) continue;
    // A non-member whose guard is false stays out, and time alone cannot let it in (Guard).
    if (guards[i] !== undefined && open[i] === 0 && flags[i] === 0) continue;
    const def = defs[i]!;
    const inside = rules[i]!(c);
    c.res[i] = inside ? 2 : 1;
    if (inside !== (flags[i] === 1)) {
      let entry = a.m[def.id];
      if (entry === undefined) {
        entry = a.m[def.id] = [0, 0, 0];
        f.ids.push(def.id);
        f.all.push(entry);
      }
      (out ??= []).push(transition(a, user, def, def.id, inside, t, reason, entry));
      flags[i] = inside ? 1 : 0;
    }
  }
  // Memberships of deleted audiences: in whole evaluations and backfills (a new set re-evaluates every stored profile).
  if ((!partial || only !== undefined) && f.others > 0) {
    for (const id in a.m) {
      if (a.m[id]![0] > 0 && !set.versions.has(id)) (out ??= []).push(transition(a, user, undefined, id, false, t, "deleted"));
    }
    f.others = 0;
  }
  const due = c.due === Infinity ? 0 : c.due;
  a.due = partial && a.due > 0 && (due === 0 || a.due < due) ? a.due : due;
  a.w = 1;
  return out ?? NO_TRANSITIONS;
}

/** Exits from every audience (the user is being forgotten, or merged into another id). */
export function exitAll(user: string, u: UserState, atMs: number, reason: "forgotten" | "merged" = "forgotten"): Transition[] {
  const a = u.aud;
  if (a === undefined) return [];
  const out: Transition[] = [];
  for (const id in a.m) if (a.m[id]![0] > 0) out.push(transition(a, user, undefined, id, false, atMs, reason));
  if (FLAGS in a) (a as WithFlags)[FLAGS] = undefined;
  a.due = 0;
  return out;
}

/** The user's memberships, for the profile reply. */
export function membershipsOf(u: UserState): { audienceId: string; sinceMs: number; holdout: boolean }[] {
  const out: { audienceId: string; sinceMs: number; holdout: boolean }[] = [];
  const m = u.aud?.m;
  if (m !== undefined) for (const id in m) if (m[id]![0] > 0) out.push({ audienceId: id, sinceMs: m[id]![0], holdout: m[id]![2] === 1 });
  return out.sort((x, y) => (x.audienceId < y.audienceId ? -1 : 1));
}
