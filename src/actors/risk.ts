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
 *    is kept (at most SHARING_TRACKED ids are tracked). Score =
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

/** The stored part (short names: every byte of a profile is written on every change). */
export interface RiskState {
  /** Burst count (decayed) as of bt, and bt. */
  b: number;
  bt: number;
  /** Peak rate of the current session, and the highest of earlier sessions (the user's habit), events/s. */
  sp: number;
  pp: number;
  /** Fast events, and the peak rate seen (events/s). */
  f: number;
  pk: number;
  /** Quick refunds (lines). */
  q: number;
  /** Quick refund orders, and fnv1a32 of the last quick refund's order id (-1: none or no order id); absent in states stored before them. */
  qo?: number;
  qk?: number;
  /** Tracked ids with their last event time, newest first: fnv1a32("s:" + session id) or -fnv1a32("d:" + device id) - 1 (devices negative); and the peak active at once. */
  ids: [number, number][];
  cp: number;
  /** Returns: events whose session or device id is an earlier one still active (not the latest), i.e. interleaved use. */
  rt: number;
}

export function newRiskState(): RiskState {
  return { b: 0, bt: 0, sp: 0, pp: 0, f: 0, pk: 0, q: 0, qo: 0, qk: -1, ids: [], cp: 0, rt: 0 };
}

/** Numbers of the stored form before the tracked ids (packRisk). */
const PACKED_FIXED = 11;
/** One array per number of tracked ids, reused by every packRisk (the store encodes it within the put). */
const PACKED = Array.from({ length: SHARING_TRACKED + 1 }, (_, n) => new Array<number>(PACKED_FIXED + 2 * n).fill(0));

/**
 * The stored form of a risk state (the store writes it in place of the
 * record, src/store/profile-store.ts): one flat array of numbers,
 * [b, bt, sp, pp, f, pk, q, qo, qk, cp, rt, then per tracked id: id, bt − its
 * last time]. msgpack writes an array without the record's per-field
 * walk, and the ids' times as small integers instead of doubles. Valid until
 * the next call (the arrays are reused): encode it at once.
 */
export function packRisk(r: RiskState): number[] {
  const ids = r.ids;
  const a = ids.length <= SHARING_TRACKED ? PACKED[ids.length]! : new Array<number>(PACKED_FIXED + 2 * ids.length);
  a[0] = r.b;
  a[1] = r.bt;
  a[2] = r.sp;
  a[3] = r.pp;
  a[4] = r.f;
  a[5] = r.pk;
  a[6] = r.q;
  a[7] = r.qo ?? 0;
  a[8] = r.qk ?? -1;
  a[9] = r.cp;
  a[10] = r.rt;
  for (let i = 0; i < ids.length; i++) {
    a[PACKED_FIXED + 2 * i] = ids[i]![0];
    a[PACKED_FIXED + 2 * i + 1] = r.bt - ids[i]![1];
  }
  return a;
}

/** The risk state of its stored form (packRisk). A state stored before that form (the record) is read as it is. */
export function unpackRisk(a: number[]): RiskState {
  const bt = a[1]!;
  const ids: [number, number][] = [];
  for (let i = PACKED_FIXED; i + 1 < a.length; i += 2) ids.push([a[i]!, bt - a[i + 1]!]);
  return { b: a[0]!, bt, sp: a[2]!, pp: a[3]!, f: a[4]!, pk: a[5]!, q: a[6]!, qo: a[7]!, qk: a[8]!, ids, cp: a[9]!, rt: a[10]! };
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

function touchId(r: RiskState, id: number, t: number, gapMs: number): void {
  const ids = r.ids;
  let i = 0;
  while (i < ids.length && ids[i]![0] !== id) i++;
  if (i < ids.length) {
    const x = ids[i]!;
    // Back to an id that is not the latest of its kind while it is still active: two of them in use at once.
    if (i > 0 && t - x[1] <= gapMs) {
      for (let j = 0; j < i; j++) {
        if ((ids[j]![0] >= 0) === (id >= 0)) {
          r.rt++;
          break;
        }
      }
    }
    if (t > x[1]) x[1] = t;
    if (i > 0) {
      for (let j = i; j > 0; j--) ids[j] = ids[j - 1]!;
      ids[0] = x;
    }
    return;
  }
  ids.unshift([id, t]);
  if (ids.length > SHARING_TRACKED) ids.length = SHARING_TRACKED;
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
    const dt = Math.max(0, t - r.bt);
    if (r.bt > 0 && dt > gapMs) {
      // A new session: the one that ended joins the habit.
      if (r.sp > r.pp) r.pp = r.sp;
      r.sp = 0;
    }
    r.b = r.b * Math.pow(2, -dt / RISK.burstHalfLifeMs) + 1;
    if (t > r.bt) r.bt = t;
    const rate = (r.b * LN2 * 1000) / RISK.burstHalfLifeMs;
    if (rate >= RISK.velocityPerSec && rate >= RISK.userFactor * r.pp) r.f++;
    if (rate > r.sp) r.sp = rate;
    if (rate > r.pk) r.pk = rate;
  }
  // Refunds soon after a purchase.
  if (e.type === EventType.REFUND && lastPurchaseMs > 0 && t - lastPurchaseMs <= RISK.quickRefundMs && t >= lastPurchaseMs) {
    r.q++;
    const k = e.orderId !== undefined && e.orderId !== "" ? fnv1a32String(e.orderId) : -1;
    if (k === -1 || k !== r.qk) r.qo = (r.qo ?? 0) + 1;
    r.qk = k;
  }
  // Sharing: ids active at t (including this event's).
  const device = e.attributes?.["device_id"] ?? "";
  // fnv1a32String(`s:${session id}`) and -fnv1a32String(`d:${device id}`) - 1.
  if (e.sessionId !== "") touchId(r, fnv1a32Update(SESSION_HASH, e.sessionId) >>> 0, t, gapMs);
  if (device !== "") touchId(r, -(fnv1a32Update(DEVICE_HASH, device) >>> 0) - 1, t, gapMs);
  if (e.sessionId !== "" || device !== "") {
    let sessions = 0;
    let devices = 0;
    const ids = r.ids;
    for (let i = 0; i < ids.length; i++) {
      const x = ids[i]!;
      if (t - x[1] > gapMs) continue;
      if (x[0] >= 0) sessions++;
      else devices++;
    }
    const active = Math.max(sessions, devices);
    if (active > r.cp) r.cp = active;
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
  const ratio = purchases > 0 ? refunds / purchases : refunds > 0 ? Infinity : 0;
  const quick = purchases > 0 ? x.q / purchases : 0;
  const qo = x.qo ?? 0;
  const orderShare = orders > 0 ? qo / orders : 0;
  // All of them: many refunds for what was bought, soon after buying (a wholesale customer cancelling old orders is
  // not flagged), and in several of the user's orders (one cancelled order is not a habit).
  const refundScore = refunds >= RISK.refundMinLines
    ? Math.min(ratio / RISK.refundRatio, quick / RISK.quickShare, orderShare / RISK.quickOrderShare, qo / RISK.quickOrdersMin)
    : 0;
  const shared = x.cp <= 1 ? 0 : Math.min((x.cp - 1) / (RISK.sharingPeak - 1), x.rt / RISK.sharingReturns);
  out[0] = clamp01(x.f / RISK.velocityMinFast);
  out[1] = clamp01(refundScore);
  out[2] = clamp01(shared);
}

const EMPTY: RiskState = Object.freeze(newRiskState()) as RiskState;

/**
 * Which signals of a profile state are flagged, as bits (1 velocity, 2
 * refund abuse, 4 sharing): the shard counts new flags, asking before and
 * after every event (so neither RiskCounts nor the scores are allocated).
 */
export function stateRiskFlagBits(s: { rk?: RiskState | undefined; counts: number[]; orders: number }): number {
  scoresInto(SCRATCH, s.rk, s.counts[EventType.REFUND] ?? 0, s.counts[EventType.PURCHASE] ?? 0, s.orders);
  return (SCRATCH[0]! >= 1 ? 1 : 0) | (SCRATCH[1]! >= 1 ? 2 : 0) | (SCRATCH[2]! >= 1 ? 4 : 0);
}

/** The signal names of the flag bits, in bit order (metric labels, audience fields). */
export const RISK_SIGNALS = ["velocity", "refundAbuse", "accountSharing"] as const;

/** The risk signals of a state with their reasons. */
export function riskView(r: RiskState | undefined, c: RiskCounts): RiskView {
  const x = r ?? EMPTY;
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
      `in ${x.qo ?? 0} of ${orders} orders = ${orders > 0 ? f2((x.qo ?? 0) / orders) : "0"} (flagged at ${RISK.quickOrderShare} with >= ${RISK.quickOrdersMin} orders)`),
    accountSharing: signal(ss,
      `peak ${x.cp} session or device ids active at once (flagged at ${RISK.sharingPeak}), ${x.rt} returns to an earlier active one (flagged at ${RISK.sharingReturns})`),
  };
}

