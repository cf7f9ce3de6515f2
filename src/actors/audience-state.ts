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
import { riskScores } from "./risk.js";
import type { AudienceDefinition, CompiledAudiences, Field, Rule } from "./audience-rules.js";
import type { AudienceState, Transition } from "./audience-types.js";
import type { CompiledProfileOptions } from "./profile-options.js";
import { RFM_BINS, type AffinityTable, type ProfileEvent, type UserState } from "./user-profile.js";

export const DAY_MS = 86_400_000;
/** Days of day buckets kept. */
export const BUCKET_DAYS = 90;
const STRIDE = 5;
const SESSION_CATEGORIES = 8;

export type { AudienceState, Transition };
export type TransitionReason = "event" | "time" | "backfill" | "deleted" | "forgotten" | "merged";

export function newAudienceState(partition: number): AudienceState {
  return { p: partition, d: [], cart: 0, sc: [], scn: [], scS: 0, m: {}, due: 0 };
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
      a.d.splice(i + STRIDE, 0, day, 0, 0, 0, 0);
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
    const i = a.sc.indexOf(e.categoryId);
    if (i >= 0) a.scn[i]!++;
    else if (a.sc.length < SESSION_CATEGORIES) {
      a.sc.push(e.categoryId);
      a.scn.push(1);
    }
  }
}

/** What evaluation needs besides the state. */
export interface EvalEnv {
  profile: CompiledProfileOptions;
  /** A model's prediction for the user at `now`, or undefined when there is none. */
  predict?: ((name: "churnRisk" | "purchasePropensity") => number | undefined) | undefined;
}

function rfmScore(value: number, bins: readonly number[], lowerIsBetter: boolean): number {
  let passed = 0;
  for (const b of bins) if (lowerIsBetter ? value > b : value >= b) passed++;
  return lowerIsBetter ? 5 - passed : 1 + passed;
}

function compare(x: number | undefined, op: string, v: number): boolean {
  if (x === undefined) return false;
  switch (op) {
    case ">": return x > v;
    case ">=": return x >= v;
    case "<": return x < v;
    case "<=": return x <= v;
    case "==": return x === v;
    default: return x !== v;
  }
}

/** Windowed fields: name -> [bucket column, days]. */
const WINDOW_FIELDS = new Map<string, [number, number]>(
  (["events", "carts", "purchases", "revenue"] as const).flatMap((name, i) => [1, 7, 30, 90].map((w) => [`${name}.${w}d`, [i + 1, w]] as [string, [number, number]])),
);

/** Evaluates rules of one user at one time, collecting the next instant any leaf may change. */
class Evaluator {
  due = Infinity;
  readonly results = new Map<string, boolean>();
  constructor(readonly u: UserState, readonly a: AudienceState, readonly now: number, readonly env: EvalEnv) {}

  #at(t: number): void {
    if (t > this.now && t < this.due) this.due = t;
  }

  /** Window sums already computed in this evaluation: col * 1000 + days -> sum (their next change is recorded once). */
  readonly #windows = new Map<number, number>();

  #window(col: number, w: number): number {
    const memo = this.#windows.get(col * 1000 + w);
    if (memo !== undefined) return memo;
    const v = this.#windowSum(col, w);
    this.#windows.set(col * 1000 + w, v);
    return v;
  }

  #windowSum(col: number, w: number): number {
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
    if (oldest !== Infinity) this.#at((oldest + w) * DAY_MS);
    return col === 4 ? sum / 100 : sum;
  }

  #since(from: number, v: number): number | undefined {
    if (from <= 0) return undefined;
    this.#at(from + v * DAY_MS);
    this.#at(from + v * DAY_MS + 1);
    return (this.now - from) / DAY_MS;
  }

  #field(f: Field, v: number): number | undefined {
    const u = this.u;
    const win = WINDOW_FIELDS.get(f);
    if (win !== undefined) return this.#window(win[0], win[1]);
    switch (f) {
      case "rfm.r": {
        if (u.lastPurchaseMs <= 0) return 0;
        for (const b of RFM_BINS.recencyDays) this.#at(u.lastPurchaseMs + b * DAY_MS + 1);
        return rfmScore((this.now - u.lastPurchaseMs) / DAY_MS, RFM_BINS.recencyDays, true);
      }
      case "rfm.f": return u.lastPurchaseMs > 0 ? rfmScore(u.orders, RFM_BINS.frequency, false) : 0;
      case "rfm.m": return u.lastPurchaseMs > 0 ? rfmScore(u.purchased - u.refunded, RFM_BINS.monetary, false) : 0;
      case "orders": return u.orders;
      case "net": return u.purchased - u.refunded;
      case "eventsTotal": return u.n;
      case "daysSincePurchase": return this.#since(u.lastPurchaseMs, v);
      case "daysSinceSeen": return this.#since(u.lastSeenMs, v);
      case "prediction.churnRisk": return this.env.predict?.("churnRisk");
      case "prediction.purchasePropensity": return this.env.predict?.("purchasePropensity");
      // A mean of decayed sentiments: the common decay cancels, so it changes only with reviews.
      case "review.sentiment": return u.rv !== undefined && u.rv.w > 0 ? u.rv.s / u.rv.w : undefined;
      case "review.count": return u.rv?.n ?? 0;
      case "risk.velocity": return riskScores(u.rk, u.counts[EventType.REFUND] ?? 0, u.counts[EventType.PURCHASE] ?? 0)[0];
      case "risk.refundAbuse": return riskScores(u.rk, u.counts[EventType.REFUND] ?? 0, u.counts[EventType.PURCHASE] ?? 0)[1];
      case "risk.accountSharing": return riskScores(u.rk, u.counts[EventType.REFUND] ?? 0, u.counts[EventType.PURCHASE] ?? 0)[2];
      default: return undefined;
    }
  }

  #affinity(t: AffinityTable, key: string, topN: number | undefined, minScore: number | undefined): boolean {
    const i = t.keys.indexOf(key);
    if (i < 0) return false;
    const raw = t.scores[i]!;
    let ok = true;
    if (topN !== undefined) {
      // Rank is the same at every time: all scores decay by the same factor.
      let above = 0;
      for (let j = 0; j < t.scores.length; j++) if (t.scores[j]! > raw || (t.scores[j] === raw && t.keys[j]! < key)) above++;
      ok = above < topN;
    }
    if (minScore !== undefined) {
      const hl = this.env.profile.halfLifeMs;
      const ref = this.u.affRefMs;
      const score = raw * Math.pow(2, -(this.now - ref) / hl);
      if (score >= minScore) this.#at(Math.ceil(ref + hl * Math.log2(raw / minScore)) + 1);
      ok = ok && score >= minScore;
    }
    return ok;
  }

  rule(r: Rule): boolean {
    // Every leaf is evaluated (no short cut), so that every leaf's next change is known.
    if ("all" in r) {
      let ok = true;
      for (const x of r.all) ok = this.rule(x) && ok;
      return ok;
    }
    if ("any" in r) {
      let ok = false;
      for (const x of r.any) ok = this.rule(x) || ok;
      return ok;
    }
    if ("not" in r) return !this.rule(r.not);
    if ("field" in r) return compare(this.#field(r.field, r.value), r.op, r.value);
    if ("affinity" in r) {
      const x = r.affinity;
      const t = x.dimension === "category" ? this.u.cat : x.dimension === "brand" ? this.u.brand : this.u.band;
      return this.#affinity(t, x.dimension === "brand" ? x.key.toLowerCase() : x.key, x.topN, x.minScore);
    }
    if ("reviewAspect" in r) {
      const t = this.u.rv?.asp;
      return t !== undefined && t.keys.includes(r.reviewAspect.key) && this.#affinity(t, r.reviewAspect.key, r.reviewAspect.topN, undefined);
    }
    if ("reviewSentiment" in r) {
      const x = r.reviewSentiment;
      const rv = this.u.rv;
      const t = x.dimension === "category" ? rv?.cat : rv?.brand;
      const i = t?.keys.indexOf(x.dimension === "brand" ? x.key.toLowerCase() : x.key) ?? -1;
      if (t === undefined || i < 0 || !(t.w[i]! > 0)) return false;
      if (x.minWeight !== undefined) {
        // The weight decays like an affinity score: it falls below minWeight at a known time.
        const hl = this.env.profile.halfLifeMs;
        const ref = this.u.affRefMs;
        const w = t.w[i]! * Math.pow(2, -(this.now - ref) / hl);
        if (w >= x.minWeight) this.#at(Math.ceil(ref + hl * Math.log2(t.w[i]! / x.minWeight)) + 1);
        if (w < x.minWeight) return false;
      }
      return compare(t.s[i]! / t.w[i]!, x.op, x.value);
    }
    if ("session" in r) {
      const u = this.u;
      if (u.sCount === 0 || this.a.scS !== u.sCount) return false;
      const end = u.sLastMs + this.env.profile.sessionGapMs;
      if (this.now > end) return false;
      this.#at(end + 1);
      const i = this.a.sc.indexOf(r.session.category);
      if (i < 0) return false;
      const n = this.a.scn[i]!;
      let above = 0;
      for (let j = 0; j < this.a.sc.length; j++) if (this.a.scn[j]! > n || (this.a.scn[j] === n && j < i)) above++;
      return above < (r.session.topN ?? 1);
    }
    if ("cartAbandoned" in r) {
      const cart = this.a.cart;
      if (cart <= 0 || this.u.lastPurchaseMs >= cart) return false;
      const at = cart + r.cartAbandoned.afterMinutes * 60_000;
      this.#at(at);
      return this.now >= at;
    }
    return this.results.get(r.inAudience) === true;
  }
}

/** Holdout draw of a user for an audience: stable (a hash of both), uniform in [0, 1). */
export function holdoutDraw(user: string, audience: string): number {
  const h = createHash("sha256").update(audience).update("\0").update(user).digest();
  return h.readUInt32BE(0) / 2 ** 32;
}

function transition(a: AudienceState, user: string, def: AudienceDefinition | undefined, id: string, entered: boolean, at: number, reason: TransitionReason): Transition {
  const m = (a.m[id] ??= [0, 0, 0]);
  m[1]++;
  if (entered) {
    m[0] = at;
    const share = def?.holdoutShare ?? 0;
    m[2] = share > 0 && holdoutDraw(user, id) < share ? 1 : 0;
  } else {
    m[0] = 0;
  }
  return { audience: id, user, n: m[1], entered, atMs: at, reason, holdout: m[2] === 1 };
}

/**
 * Evaluates the audiences of the set for one user at `now` (not before the
 * user's last event), updates the memberships and `due`, and returns the
 * transitions. Memberships of audiences no longer in the set exit with reason
 * "deleted".
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
 */
export function evaluateAudiences(user: string, u: UserState, set: CompiledAudiences, now: number, env: EvalEnv, reason: TransitionReason, partition: number, events?: number): Transition[] {
  const a = (u.aud ??= newAudienceState(partition));
  const t = Math.max(now, u.lastSeenMs);
  const partial = events !== undefined && a.w === 1 && (a.due === 0 || t < a.due);
  const ev = new Evaluator(u, a, t, env);
  const out: Transition[] = [];
  const defs = set.defs;
  for (let i = 0; i < defs.length; i++) {
    const def = defs[i]!;
    const was = (a.m[def.id]?.[0] ?? 0) > 0;
    if (partial && (set.masks[i]! & events) === 0) {
      ev.results.set(def.id, was);
      continue;
    }
    const inside = ev.rule(def.rule);
    ev.results.set(def.id, inside);
    if (inside !== was) out.push(transition(a, user, def, def.id, inside, t, reason));
  }
  for (const id in a.m) {
    if (a.m[id]![0] > 0 && !set.versions.has(id)) out.push(transition(a, user, undefined, id, false, t, "deleted"));
  }
  const due = ev.due === Infinity ? 0 : ev.due;
  a.due = partial && a.due > 0 && (due === 0 || a.due < due) ? a.due : due;
  a.w = 1;
  return out;
}

/** Time of the user's entry in the timer index (0 = none): AudienceState.tm. */
export function timerOf(a: AudienceState | undefined): number {
  return a === undefined ? 0 : a.tm ?? a.due;
}

/** Exits from every audience (the user is being forgotten, or merged into another id). */
export function exitAll(user: string, u: UserState, atMs: number, reason: "forgotten" | "merged" = "forgotten"): Transition[] {
  const a = u.aud;
  if (a === undefined) return [];
  const out: Transition[] = [];
  for (const id in a.m) if (a.m[id]![0] > 0) out.push(transition(a, user, undefined, id, false, atMs, reason));
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
