/**
 * Risk signals of a profile: live anomaly scores, each with its reason. Pure
 * like the rest of the profile (user-profile.ts applyEvent calls
 * `observeRisk` for every event; queries call `riskView`). Event time
 * throughout: a replayed log gives the same scores as the live stream.
 *
 * 1. Bot-like velocity. The user's event rate is a decayed count with a
 *    short half-life (RISK.burstHalfLifeMs, 10 s): after each event,
 *    rate = count x ln 2 / half-life events/s (a steady stream of r events/s
 *    reads r). An event is "fast" when that rate is at or above the global
 *    threshold (RISK.velocityPerSec) and at or above RISK.userFactor times
 *    the user's own habit: the highest rate the user reached in earlier
 *    sessions (a session ends after sessionGapMs without actions). Measured
 *    on earlier sessions only, the habit is not raised by the burst it
 *    judges: a new user meets only the global threshold, and a user who has
 *    always browsed fast must go well beyond their own past. Only actions count:
 *    PURCHASE and REFUND lines are order lines (an order of 50 lines has one
 *    time) and do not enter the rate. Score = min(1, fast events /
 *    RISK.velocityMinFast); flagged at 1.
 * 2. Refund abuse. Refund lines / purchase lines, and "quick" refunds: a
 *    REFUND within RISK.quickRefundMs of the user's last purchase, counted
 *    as lines and as refund orders (consecutive quick refund lines with the
 *    same order_id are one order; a line without order_id is an order of its
 *    own). Abuse is a habit, not one cancellation: with at least
 *    RISK.refundMinLines refund lines, score = the smallest of
 *    ratio / RISK.refundRatio, (quick lines / purchase lines) /
 *    RISK.quickShare, (quick refund orders / the user's orders) /
 *    RISK.quickOrderShare and quick refund orders / RISK.quickOrdersMin,
 *    capped at 1; flagged at 1. The order terms are the user's own
 *    baseline: a customer who cancels one big order soon after placing it,
 *    or two of their forty orders, is not a refund abuser.
 * 3. Account sharing. Distinct session ids and device ids
 *    (`attributes["device_id"]`) active at once: an id is active for
 *    sessionGapMs after its last event; the peak number active at any event
 *    is kept (at most SHARING_TRACKED ids are tracked, and none past the
 *    session gap before the newest one's time). Score =
 *    min(1, (peak - 1) / (RISK.sharingPeak - 1)); flagged at 1.
 */
import { FNV1A32_OFFSET, fnv1a32String, fnv1a32Update } from "../wire/partition.js";
import { EventType } from "../wire/proto.js";

/** Thresholds of the risk signals (see the header). */
export const RISK = Object.freeze({
  burstHalfLifeMs: 10_000,
  /** Global threshold: events/s over the burst window. */
  velocityPerSec: 1.5,
  /** Per-user threshold: this many times the user's own habit (highest rate of earlier sessions). */
  userFactor: 2,
  /** Fast events that make a user bot-like. */
  velocityMinFast: 10,
  /** Refund lines / purchase lines that make a user a refund abuser (with refundMinLines refund lines). */
  refundRatio: 0.3,
  refundMinLines: 4,
  /** A refund this soon after the user's last purchase is quick. */
  quickRefundMs: 48 * 3_600_000,
  /** Quick refunds / purchase lines that make a user a refund abuser (with refundMinLines refund lines). */
  quickShare: 0.3,
  /** Quick refund orders / the user's orders, and at least this many quick refund orders (a habit, not one cancellation). */
  quickOrderShare: 0.3,
  quickOrdersMin: 2,
  /** Concurrent session or device ids that make an account shared, with this many returns to an earlier active id. */
  sharingPeak: 3,
  sharingReturns: 4,
});
/** Session and device ids tracked for sharing (most recent first). */
export const SHARING_TRACKED = 5;
const LN2 = Math.LN2;

/**
 * A risk state, in memory and as stored: one flat array of numbers (a V8
 * array of unboxed doubles: one object per user for the GC, nothing boxed,
 * nothing to rebuild on load), laid out as RK names below:
 * [b, bt, sp, pp, f, pk, q, qo, qk, cp, rt, then per tracked id: id, time].
 * - b, bt: the burst count (decayed) as of bt, and bt;
 * - sp, pp: the peak rate of the current session, and the highest of earlier sessions (the user's habit), events/s;
 * - f, pk: fast events, and the peak rate seen (events/s);
 *   (b and the rates are float32 values, Math.fround, since 2026-12-07: stored in 4 bytes each; states of earlier
 *   versions hold doubles, stored as such until they change)
 * - q, qo, qk: quick refunds (lines), quick refund orders, and fnv1a32 of the last quick refund's order id (-1: none or no order id);
 * - cp: the peak number of ids active at once;
 * - rt: returns: events whose session or device id is an earlier one still active (not the latest), i.e. interleaved use;
 * - the tracked ids, newest first, with their last event time: fnv1a32("s:" + session id) or
 *   -fnv1a32("d:" + device id) - 1 (devices negative); at most SHARING_TRACKED, none more than the session gap
 *   older than the newest.
 * In memory an id's time is its event time. Stored (src/store/profile-layout.ts, version 2) in a compact form of
 * its own; packRisk / unpackRisk are the flat form stored before (layout version 1 and msgpack profiles).
 */
export type RiskState = number[];

/** Indexes of the fields of a RiskState. */
export const RK = Object.freeze({ b: 0, bt: 1, sp: 2, pp: 3, f: 4, pk: 5, q: 6, qo: 7, qk: 8, cp: 9, rt: 10 });
/** Numbers before the tracked ids. */
export const RISK_FIXED = 11;
const FIXED = RISK_FIXED;

/**
 * The risk state as a record: the form states stored before 2026-12-07
 * (commit 684db6e) hold (qo and qk absent in the oldest), and a readable
 * view for tests and reports (riskRecord).
 */
export interface RiskRecord {
  b: number;
  bt: number;
  sp: number;
  pp: number;
  f: number;
  pk: number;
  q: number;
  qo?: number;
  qk?: number;
  /** [id, last event time], newest first. */
  ids: [number, number][];
  cp: number;
  rt: number;
}

export function newRiskState(): RiskState {
  const r = [0.5, 0, 0, 0, 0, 0, 0, 0, -1, 0, 0];
  r[0] = 0; // a double array from the start: no elements-kind transition at the first rate
  return r;
}

/** The tracked ids of a state. */
export function riskIdCount(r: RiskState): number {
  return (r.length - FIXED) >> 1;
}

/** A record view of a state (a copy). */
export function riskRecord(r: RiskState): RiskRecord {
  const ids: [number, number][] = [];
  for (let i = FIXED; i + 1 < r.length; i += 2) ids.push([r[i]!, r[i + 1]!]);
  return { b: r[0]!, bt: r[1]!, sp: r[2]!, pp: r[3]!, f: r[4]!, pk: r[5]!, q: r[6]!, qo: r[7]!, qk: r[8]!, ids, cp: r[9]!, rt: r[10]! };
}

/** The state of a record (states stored before the flat form; hand-overs and changelog records of earlier versions). */
export function riskOfRecord(x: RiskRecord): RiskState {
  const r = newRiskState();
  r[0] = x.b;
  r[1] = x.bt;
  r[2] = x.sp;
  r[3] = x.pp;
  r[4] = x.f;
  r[5] = x.pk;
  r[6] = x.q;
  r[7] = x.qo ?? 0;
  r[8] = x.qk ?? -1;
  r[9] = x.cp;
  r[10] = x.rt;
  // At most SHARING_TRACKED ids, as observeRisk keeps (the newest first).
  for (let i = 0; i < x.ids.length && i < SHARING_TRACKED; i++) r.push(x.ids[i]![0], x.ids[i]![1]);
  return r;
}

/** A state as it travels in memory-form (hand-overs, changelog records): a record of an earlier version becomes the flat form. */
export function riskOf(v: RiskState | RiskRecord): RiskState {
  return Array.isArray(v) ? v : riskOfRecord(v);
}

/** One array per number of tracked ids, reused by every packRisk (the store encodes it within the put). */
const PACKED = Array.from({ length: SHARING_TRACKED + 1 }, (_, n) => new Array<number>(FIXED + 2 * n).fill(0));

/**
 * The flat stored form of a risk state, as profiles of layout version 1 and
 * msgpack profiles before it hold it (src/store/profile-layout.ts writes a
 * compact form now; tests write old profiles with this): the same array with
 * each id's time as bt minus it. Valid until the next call (the arrays are
 * reused): encode it at once.
 */
export function packRisk(r: RiskState): number[] {
  const n = riskIdCount(r);
  const a = n <= SHARING_TRACKED ? PACKED[n]! : new Array<number>(FIXED + 2 * n);
  for (let i = 0; i < FIXED; i++) a[i] = r[i]!;
  const bt = r[1]!;
  for (let i = FIXED; i + 1 < r.length; i += 2) {
    a[i] = r[i]!;
    a[i + 1] = bt - r[i + 1]!;
  }
  return a;
}

/**
 * The risk state of its flat stored form (packRisk), in place: the array the
 * store decoded becomes the state. A state stored before that form (the
 * record) is turned into it. At most SHARING_TRACKED ids are kept.
 */
export function unpackRisk(v: number[] | RiskRecord): RiskState {
  if (!Array.isArray(v)) return riskOfRecord(v);
  const bt = v[1]!;
  if (v.length > FIXED + 2 * SHARING_TRACKED) v.length = FIXED + 2 * SHARING_TRACKED;
  for (let i = FIXED + 1; i < v.length; i += 2) v[i] = bt - v[i]!;
  return v;
}

/** What observeRisk reads of an event. */
export interface RiskEvent {
  type: EventType;
  timestampMs: number;
  sessionId: string;
  /** PURCHASE / REFUND: the order (quick refund orders); optional. */
  orderId?: string;
  attributes?: { [k: string]: string };
}

/** Moves the ids at 0..last-1 one place back and puts (id, t) first (the id at `last`, if any, is overwritten). */
function toFront(r: RiskState, last: number, id: number, t: number): void {
  for (let j = last; j > 0; j--) {
    r[FIXED + 2 * j] = r[FIXED + 2 * j - 2]!;
    r[FIXED + 2 * j + 1] = r[FIXED + 2 * j - 1]!;
  }
  r[FIXED] = id;
  r[FIXED + 1] = t;
}

function touchId(r: RiskState, id: number, t: number, gapMs: number): void {
  const n = riskIdCount(r);
  let i = 0;
  while (i < n && r[FIXED + 2 * i] !== id) i++;
  if (i < n) {
    const xt = r[FIXED + 2 * i + 1]!;
    // Back to an id that is not the latest of its kind while it is still active: two of them in use at once.
    if (i > 0 && t - xt <= gapMs) {
      for (let j = 0; j < i; j++) {
        if ((r[FIXED + 2 * j]! >= 0) === (id >= 0)) {
          r[RK.rt]!++;
          break;
        }
      }
    }
    toFront(r, i, id, t > xt ? t : xt);
    return;
  }
  // A new id, first; the oldest beyond SHARING_TRACKED is dropped.
  let m = n;
  if (n < SHARING_TRACKED) {
    r.push(0, 0);
    m = n + 1;
  } else if (n > SHARING_TRACKED) {
    r.length = FIXED + 2 * SHARING_TRACKED;
    m = SHARING_TRACKED;
  }
  toFront(r, m - 1, id, t);
}

/** FNV-1a states after "s:" and "d:": a session id's and a device id's hashes continue from them (no string built per event). */
const SESSION_HASH = fnv1a32Update(FNV1A32_OFFSET, "s:");
const DEVICE_HASH = fnv1a32Update(FNV1A32_OFFSET, "d:");

/**
 * Updates the risk state with one event. `lastPurchaseMs` is the user's last
 * purchase before this event (0 = none); `gapMs` the profile's session gap.
 */
export function observeRisk(r: RiskState, e: RiskEvent, lastPurchaseMs: number, gapMs: number): void {
  const t = e.timestampMs;
  if (e.type !== EventType.PURCHASE && e.type !== EventType.REFUND) {
    // Velocity: decay the burst count to t (an older event adds at the current time: dt 0).
    const bt = r[1]!;
    const dt = Math.max(0, t - bt);
    if (bt > 0 && dt > gapMs) {
      // A new session: the one that ended joins the habit.
      if (r[2]! > r[3]!) r[3] = r[2]!;
      r[2] = 0;
    }
    // The count and the rates kept as float32 values (stored in 4 bytes each, src/store/profile-layout.ts).
    const b = Math.fround(r[0]! * Math.pow(2, -dt / RISK.burstHalfLifeMs) + 1);
    r[0] = b;
    if (t > bt) r[1] = t;
    const rate = (b * LN2 * 1000) / RISK.burstHalfLifeMs;
    if (rate >= RISK.velocityPerSec && rate >= RISK.userFactor * r[3]!) r[4]!++;
    const rate32 = Math.fround(rate);
    if (rate32 > r[2]!) r[2] = rate32;
    if (rate32 > r[5]!) r[5] = rate32;
  }
  // Refunds soon after a purchase.
  if (e.type === EventType.REFUND && lastPurchaseMs > 0 && t - lastPurchaseMs <= RISK.quickRefundMs && t >= lastPurchaseMs) {
    r[6]!++;
    const k = e.orderId !== undefined && e.orderId !== "" ? fnv1a32String(e.orderId) : -1;
    if (k === -1 || k !== r[8]) r[7]!++;
    r[8] = k;
  }
  // Sharing: ids active at t (including this event's).
  const device = e.attributes?.["device_id"] ?? "";
  // fnv1a32String(`s:${session id}`) and -fnv1a32String(`d:${device id}`) - 1.
  if (e.sessionId !== "") touchId(r, fnv1a32Update(SESSION_HASH, e.sessionId) >>> 0, t, gapMs);
  if (device !== "") touchId(r, -(fnv1a32Update(DEVICE_HASH, device) >>> 0) - 1, t, gapMs);
  if (e.sessionId !== "" || device !== "") {
    // Ids past the session gap before the newest id's time are dropped: no later event can find them active (an
    // event older than the newest by more than the gap no longer sees them). A user back day after day kept 5 ids.
    let newest = -Infinity;
    for (let i = FIXED + 1; i < r.length; i += 2) if (r[i]! > newest) newest = r[i]!;
    let sessions = 0;
    let devices = 0;
    let w = FIXED;
    for (let i = FIXED; i + 1 < r.length; i += 2) {
      const id = r[i]!;
      const it = r[i + 1]!;
      if (newest - it > gapMs) continue;
      if (w !== i) {
        r[w] = id;
        r[w + 1] = it;
      }
      w += 2;
      if (t - it > gapMs) continue;
      if (id >= 0) sessions++;
      else devices++;
    }
    if (w !== r.length) r.length = w;
    const active = Math.max(sessions, devices);
    if (active > r[9]!) r[9] = active;
  }
}

/** One risk signal (proto `RiskSignal`). */
export interface RiskSignalView {
  /** In [0, 1]. */
  score: number;
  /** score reached 1. */
  flagged: boolean;
  /** What the score is made of, with the numbers. */
  reason: string;
}

export interface RiskView {
  velocity: RiskSignalView;
  refundAbuse: RiskSignalView;
  accountSharing: RiskSignalView;
}

const f2 = (x: number) => (Math.round(x * 100) / 100).toString();

function signal(s: number, reason: string): RiskSignalView {
  return { score: s, flagged: s >= 1, reason };
}

/** What the risk scores read of a profile besides its risk state: its REFUND and PURCHASE event counts and its orders. */
export interface RiskCounts {
  refunds: number;
  purchases: number;
  orders: number;
}

/** The risk counts of a profile state (counts per EventType number, orders). */
export function riskCounts(s: { counts: number[]; orders: number }): RiskCounts {
  return { refunds: s.counts[EventType.REFUND] ?? 0, purchases: s.counts[EventType.PURCHASE] ?? 0, orders: s.orders };
}

/** The three scores in [0, 1] (velocity, refund abuse, sharing), without reasons. */
export function riskScores(r: RiskState | undefined, c: RiskCounts): [number, number, number] {
  scoresInto(SCRATCH, r, c.refunds, c.purchases, c.orders);
  return [SCRATCH[0]!, SCRATCH[1]!, SCRATCH[2]!];
}

/** Where stateRiskFlagBits and riskScores compute. */
const SCRATCH = new Float64Array(3);

function clamp01(v: number): number {
  return Math.min(1, Math.max(0, v));
}

/** The scores of riskScores into `out` (velocity, refund abuse, sharing). */
function scoresInto(out: Float64Array, r: RiskState | undefined, refunds: number, purchases: number, orders: number): void {
  const x = r ?? EMPTY;
  out[0] = clamp01(x[4]! / RISK.velocityMinFast);
  out[1] = clamp01(refundScore(x, refunds, purchases, orders));
  out[2] = clamp01(sharingScore(x));
}

/** The refund abuse score before clamping (0 below RISK.refundMinLines refund lines). */
function refundScore(x: RiskState, refunds: number, purchases: number, orders: number): number {
  if (refunds < RISK.refundMinLines) return 0;
  const ratio = purchases > 0 ? refunds / purchases : refunds > 0 ? Infinity : 0;
  const quick = purchases > 0 ? x[6]! / purchases : 0;
  const qo = x[7]!;
  const orderShare = orders > 0 ? qo / orders : 0;
  // All of them: many refunds for what was bought, soon after buying (a wholesale customer cancelling old orders is
  // not flagged), and in several of the user's orders (one cancelled order is not a habit).
  return Math.min(ratio / RISK.refundRatio, quick / RISK.quickShare, orderShare / RISK.quickOrderShare, qo / RISK.quickOrdersMin);
}

/** The account sharing score before clamping. */
function sharingScore(x: RiskState): number {
  const cp = x[9]!;
  return cp <= 1 ? 0 : Math.min((cp - 1) / (RISK.sharingPeak - 1), x[10]! / RISK.sharingReturns);
}

const EMPTY: RiskState = Object.freeze(newRiskState()) as unknown as RiskState;

/**
 * Which signals of a profile state are flagged, as bits (1 velocity, 2
 * refund abuse, 4 sharing): the shard counts new flags, asking before and
 * after every event (so neither RiskCounts nor the scores are allocated).
 */
export function stateRiskFlagBits(s: { rk?: RiskState | undefined; counts: number[]; orders: number }): number {
  // The scores' own terms (clamp01(v) >= 1 is v >= 1), the refund part only from RISK.refundMinLines refund lines.
  // Velocity and sharing as comparisons, not the scores' divisions (f / velocityMinFast >= 1 is f >= velocityMinFast;
  // (cp - 1) / (sharingPeak - 1) >= 1 is cp >= sharingPeak; rt / sharingReturns >= 1 is rt >= sharingReturns), both
  // sides of `&` evaluated: this runs inlined in the shard's batch loop twice per event, and a division's first
  // fraction or a comparison first reached late sent that whole loop back to be compiled again (bench/RESULTS.md).
  const x = s.rk;
  if (x === undefined) return 0;
  const refunds = s.counts[EventType.REFUND] ?? 0;
  return (x[4]! >= RISK.velocityMinFast ? 1 : 0) |
    (refunds >= RISK.refundMinLines && refundScore(x, refunds, s.counts[EventType.PURCHASE] ?? 0, s.orders) >= 1 ? 2 : 0) |
    ((x[9]! >= RISK.sharingPeak ? 4 : 0) & (x[10]! >= RISK.sharingReturns ? 4 : 0));
}

/** The signal names of the flag bits, in bit order (metric labels, audience fields). */
export const RISK_SIGNALS = ["velocity", "refundAbuse", "accountSharing"] as const;

/** Users newly flagged per signal in a batch, by signal name (RISK_SIGNALS), zeros included. */
export function riskFlagCounts(velocity: number, refundAbuse: number, accountSharing: number): Record<(typeof RISK_SIGNALS)[number], number> {
  return { velocity, refundAbuse, accountSharing };
}

/** The risk signals of a state with their reasons. */
export function riskView(r: RiskState | undefined, c: RiskCounts): RiskView {
  const x = riskRecord(r ?? EMPTY);
  const { refunds, purchases, orders } = c;
  const ratio = purchases > 0 ? refunds / purchases : refunds > 0 ? Infinity : 0;
  const [sv, sf, ss] = riskScores(r, c);
  return {
    velocity: signal(sv,
      `${x.f} fast actions (>= ${RISK.velocityPerSec}/s over a ${RISK.burstHalfLifeMs / 1000} s half-life and >= ${RISK.userFactor}x the user's habit, ${f2(x.pp)}/s in earlier sessions); ` +
      `peak ${f2(x.pk)}/s; flagged at ${RISK.velocityMinFast}`),
    refundAbuse: signal(sf,
      `${refunds} refund lines / ${purchases} purchase lines = ${Number.isFinite(ratio) ? f2(ratio) : "inf"} (flagged at ${RISK.refundRatio} with >= ${RISK.refundMinLines} refunds); ` +
      `${x.q} refunds within ${RISK.quickRefundMs / 3_600_000} h of a purchase = ${purchases > 0 ? f2(x.q / purchases) : "0"} of purchase lines (flagged at ${RISK.quickShare}); ` +
      `in ${x.qo!} of ${orders} orders = ${orders > 0 ? f2(x.qo! / orders) : "0"} (flagged at ${RISK.quickOrderShare} with >= ${RISK.quickOrdersMin} orders)`),
    accountSharing: signal(ss,
      `peak ${x.cp} session or device ids active at once (flagged at ${RISK.sharingPeak}), ${x.rt} returns to an earlier active one (flagged at ${RISK.sharingReturns})`),
  };
}

