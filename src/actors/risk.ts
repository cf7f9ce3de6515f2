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
 *    the user's own typical rate: the geometric mean 2^mean(log2 rate) of the
 *    rates at the user's earlier events that were not fast (robust: bursts do
 *    not raise it, so a bot that is fast from its first event keeps a
 *    typical rate of 0 and meets only the global threshold, while a busy
 *    human must burst well above their own habit). Only actions count:
 *    PURCHASE and REFUND lines are order lines (an order of 50 lines has one
 *    time) and do not enter the rate. Score = min(1, fast events /
 *    RISK.velocityMinFast); flagged at 1.
 * 2. Refund abuse. Refund lines / purchase lines, and "quick" refunds: a
 *    REFUND within RISK.quickRefundMs of the user's last purchase. Score =
 *    max(ratio / RISK.refundRatio when the user has at least
 *    RISK.refundMinLines refund lines, quick refunds / RISK.quickRefunds),
 *    capped at 1; flagged at 1.
 * 3. Account sharing. Distinct session ids and device ids
 *    (`attributes["device_id"]`) active at once: an id is active for
 *    sessionGapMs after its last event; the peak number active at any event
 *    is kept (at most SHARING_TRACKED ids are tracked). Score =
 *    min(1, (peak - 1) / (RISK.sharingPeak - 1)); flagged at 1.
 */
import { fnv1a32String } from "../wire/partition.js";
import { EventType } from "../wire/proto.js";

/** Thresholds of the risk signals (see the header). */
export const RISK = Object.freeze({
  burstHalfLifeMs: 10_000,
  /** Global threshold: events/s over the burst window. */
  velocityPerSec: 2,
  /** Per-user threshold: this many times the user's own typical rate. */
  userFactor: 4,
  /** Fast events that make a user bot-like. */
  velocityMinFast: 20,
  /** Refund lines / purchase lines that make a user a refund abuser (with refundMinLines refund lines). */
  refundRatio: 0.5,
  refundMinLines: 4,
  /** A refund this soon after the user's last purchase is quick. */
  quickRefundMs: 48 * 3_600_000,
  /** Quick refunds that make a user a refund abuser. */
  quickRefunds: 4,
  /** Concurrent session or device ids that make an account shared. */
  sharingPeak: 3,
});
/** Session and device ids tracked for sharing (most recent first). */
export const SHARING_TRACKED = 5;
const LN2 = Math.LN2;

/** The stored part (short names: every byte of a profile is written on every change). */
export interface RiskState {
  /** Burst count (decayed) as of bt, and bt. */
  b: number;
  bt: number;
  /** Sum of log2(rate) over the user's actions that were not fast, and their number (the user's typical rate). */
  lr: number;
  ln: number;
  /** Fast events, and the peak rate seen (events/s). */
  f: number;
  pk: number;
  /** Quick refunds. */
  q: number;
  /** Tracked ids with their last event time, newest first: fnv1a32("s:" + session id) or -fnv1a32("d:" + device id) - 1 (devices negative); and the peak active at once. */
  ids: [number, number][];
  cp: number;
}

export function newRiskState(): RiskState {
  return { b: 0, bt: 0, lr: 0, ln: 0, f: 0, pk: 0, q: 0, ids: [], cp: 0 };
}

/** What observeRisk reads of an event. */
export interface RiskEvent {
  type: EventType;
  timestampMs: number;
  sessionId: string;
  attributes?: { [k: string]: string };
}

function touchId(r: RiskState, id: number, t: number): void {
  const i = r.ids.findIndex((x) => x[0] === id);
  if (i >= 0) {
    if (t > r.ids[i]![1]) r.ids[i]![1] = t;
    if (i > 0) r.ids.unshift(r.ids.splice(i, 1)[0]!);
    return;
  }
  r.ids.unshift([id, t]);
  if (r.ids.length > SHARING_TRACKED) r.ids.length = SHARING_TRACKED;
}

/**
 * Updates the risk state with one event. `lastPurchaseMs` is the user's last
 * purchase before this event (0 = none); `gapMs` the profile's session gap.
 */
export function observeRisk(r: RiskState, e: RiskEvent, lastPurchaseMs: number, gapMs: number): void {
  const t = e.timestampMs;
  if (e.type !== EventType.PURCHASE && e.type !== EventType.REFUND) {
    // Velocity: decay the burst count to t (an older event adds at the current time: dt 0).
    const dt = Math.max(0, t - r.bt);
    r.b = r.b * Math.pow(2, -dt / RISK.burstHalfLifeMs) + 1;
    if (t > r.bt) r.bt = t;
    const rate = (r.b * LN2 * 1000) / RISK.burstHalfLifeMs;
    const typical = r.ln > 0 ? Math.pow(2, r.lr / r.ln) : 0;
    if (rate >= RISK.velocityPerSec && rate >= RISK.userFactor * typical) {
      r.f++;
    } else {
      r.lr += Math.log2(rate);
      r.ln++;
    }
    if (rate > r.pk) r.pk = rate;
  }
  // Refunds soon after a purchase.
  if (e.type === EventType.REFUND && lastPurchaseMs > 0 && t - lastPurchaseMs <= RISK.quickRefundMs && t >= lastPurchaseMs) r.q++;
  // Sharing: ids active at t (including this event's).
  const device = e.attributes?.["device_id"] ?? "";
  if (e.sessionId !== "") touchId(r, fnv1a32String(`s:${e.sessionId}`), t);
  if (device !== "") touchId(r, -fnv1a32String(`d:${device}`) - 1, t);
  if (e.sessionId !== "" || device !== "") {
    let sessions = 0;
    let devices = 0;
    for (const [id, last] of r.ids) {
      if (t - last > gapMs) continue;
      if (id >= 0) sessions++;
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

/** The three scores in [0, 1] (velocity, refund abuse, sharing), without reasons: `refunds` and `purchases` are the profile's REFUND and PURCHASE event counts. */
export function riskScores(r: RiskState | undefined, refunds: number, purchases: number): [number, number, number] {
  const x = r ?? EMPTY;
  const ratio = purchases > 0 ? refunds / purchases : refunds > 0 ? Infinity : 0;
  const ratioScore = refunds >= RISK.refundMinLines ? ratio / RISK.refundRatio : 0;
  const c = (v: number) => Math.min(1, Math.max(0, v));
  return [c(x.f / RISK.velocityMinFast), c(Math.max(ratioScore, x.q / RISK.quickRefunds)), c(x.cp <= 1 ? 0 : (x.cp - 1) / (RISK.sharingPeak - 1))];
}

const EMPTY: RiskState = Object.freeze(newRiskState()) as RiskState;

/** Which signals are flagged, as bits (1 velocity, 2 refund abuse, 4 sharing): the shard counts new flags. */
export function riskFlagBits(r: RiskState | undefined, refunds: number, purchases: number): number {
  const [v, f, s] = riskScores(r, refunds, purchases);
  return (v >= 1 ? 1 : 0) | (f >= 1 ? 2 : 0) | (s >= 1 ? 4 : 0);
}

/** The signal names of the flag bits, in bit order (metric labels, audience fields). */
export const RISK_SIGNALS = ["velocity", "refundAbuse", "accountSharing"] as const;

/** The risk signals of a state with their reasons. */
export function riskView(r: RiskState | undefined, refunds: number, purchases: number): RiskView {
  const x = r ?? EMPTY;
  const typical = x.ln > 0 ? Math.pow(2, x.lr / x.ln) : 0;
  const ratio = purchases > 0 ? refunds / purchases : refunds > 0 ? Infinity : 0;
  const [sv, sf, ss] = riskScores(r, refunds, purchases);
  return {
    velocity: signal(sv,
      `${x.f} fast events (>= ${RISK.velocityPerSec}/s and >= ${RISK.userFactor}x the user's typical ${f2(typical)}/s over a ${RISK.burstHalfLifeMs / 1000} s half-life); ` +
      `peak ${f2(x.pk)}/s; flagged at ${RISK.velocityMinFast}`),
    refundAbuse: signal(sf,
      `${refunds} refund lines / ${purchases} purchase lines = ${Number.isFinite(ratio) ? f2(ratio) : "inf"} (flagged at ${RISK.refundRatio} with >= ${RISK.refundMinLines} refunds); ` +
      `${x.q} refunds within ${RISK.quickRefundMs / 3_600_000} h of a purchase (flagged at ${RISK.quickRefunds})`),
    accountSharing: signal(ss,
      `peak ${x.cp} session or device ids active at once (flagged at ${RISK.sharingPeak})`),
  };
}

