/**
 * `node dist-bench/bench/interest-shift.js`: how fast a user's short-term and
 * long-term top category follow a shift of interest (issue 15: "on a log where
 * users' interests shift, the short-term top category follows the shift
 * within 5 events"). Pure: the profile's own code (applyEvent,
 * observeAudienceEvent) on a synthetic log, no engine.
 *
 * Each user: 40 events before the shift, 10 after. Before, 80% of events are
 * in category A (the rest uniform over 30 categories); after, 80% in B.
 * Events come in sessions of 4-12 events 1-3 minutes apart, sessions 2-30
 * hours apart. The shift falls either at the start of a session or in the
 * middle of one (half the users each).
 *
 * Short-term top = the top category of the current session's counts (what
 * the `session` rule reads; ties to the first seen); long-term = the top of
 * the decayed category affinity (`affinity`, 7-day half-life by default).
 * Reported: the share of users whose top is B k events after the shift.
 *
 *   node dist-bench/bench/interest-shift.js [--users N] [--no-record]
 */
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { observeAudienceEvent } from "../src/actors/audience-state.js";
import { PROFILE_DEFAULTS } from "../src/actors/profile-options.js";
import { applyEvent, newUserState, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import { EventType } from "../src/wire/proto.js";
import { appendResults, printTable } from "./report.js";

const { values: a } = parseArgs({ options: { users: { type: "string", default: "4000" }, "no-record": { type: "boolean", default: false } } });
const USERS = Number(a.users);
const BEFORE = 40;
const AFTER = 10;
const CATS = 30;

let seed = 17;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const between = (lo: number, hi: number) => lo + rnd() * (hi - lo);

function sessionTop(u: UserState): string | undefined {
  const s = u.aud;
  if (s === undefined || s.scS !== u.sCount || s.sc.length === 0) return undefined;
  let best = 0;
  for (let j = 1; j < s.sc.length; j++) if (s.scn[j]! > s.scn[best]!) best = j;
  return s.sc[best];
}

function longTop(u: UserState): string | undefined {
  let best = -1;
  for (let j = 0; j < u.cat.scores.length; j++) if (best < 0 || u.cat.scores[j]! > u.cat.scores[best]!) best = j;
  return best < 0 ? undefined : u.cat.keys[best];
}

// [mid-session?][k after the shift] -> users whose top is B: short, long.
const hits = [0, 1].map(() => Array.from({ length: AFTER + 1 }, () => [0, 0]));
const users = [0, 0];
for (let i = 0; i < USERS; i++) {
  const mid = i % 2;
  const A = Math.floor(rnd() * CATS);
  let B = Math.floor(rnd() * (CATS - 1));
  if (B >= A) B++;
  const u = newUserState();
  let t = Date.UTC(2026, 0, 1) + Math.floor(rnd() * 86_400_000);
  let left = Math.floor(between(4, 13)); // events left in the current session
  const step = (k: number, cat: number) => {
    if (left === 0) {
      t += Math.floor(between(2, 30) * 3_600_000);
      left = Math.floor(between(4, 13));
    } else if (k > 0) {
      t += Math.floor(between(1, 3) * 60_000);
    }
    left--;
    const e: ProfileEvent = { type: EventType.VIEW, timestampMs: t, itemId: `i${cat}-${k}`, categoryId: `c${cat}`, brand: "", price: 10, quantity: 1, currency: "", sessionId: "", orderId: "" };
    applyEvent(u, e, PROFILE_DEFAULTS);
    observeAudienceEvent(u, e, 0);
  };
  const pick = (fav: number) => (rnd() < 0.8 ? fav : Math.floor(rnd() * CATS));
  for (let k = 0; k < BEFORE; k++) step(k, pick(A));
  // The shift at the start of a session (a new one begins with the first B-phase event) or in the middle of one.
  if (mid === 0) left = 0;
  else if (left < 3) left = 3 + Math.floor(rnd() * 4);
  users[mid]!++;
  for (let k = 1; k <= AFTER; k++) {
    step(BEFORE + k, pick(B));
    const h = hits[mid]![k]!;
    if (sessionTop(u) === `c${B}`) h[0]!++;
    if (longTop(u) === `c${B}`) h[1]!++;
  }
}

const pctOf = (n: number, d: number) => `${((100 * n) / d).toFixed(0)}%`;
const rows: string[][] = [];
for (const k of [1, 2, 3, 5, 10]) {
  rows.push([
    `${k} event${k > 1 ? "s" : ""} after the shift`,
    pctOf(hits[0]![k]![0]!, users[0]!), pctOf(hits[1]![k]![0]!, users[1]!),
    pctOf(hits[0]![k]![1]!, users[0]!), pctOf(hits[1]![k]![1]!, users[1]!),
  ]);
}
const header = ["users whose top category is the new one", "short-term (session), shift at a session start", "short-term (session), shift mid-session", "long-term (7-day decayed), at a session start", "long-term, mid-session"];
const notes = [
  `- ${USERS} synthetic users: ${BEFORE} events before the shift (80% in category A), ${AFTER} after (80% in B), 30 categories; sessions of 4-12 events 1-3 min apart, 2-30 h between sessions; profile defaults (half-life ${PROFILE_DEFAULTS.halfLifeMs / 86_400_000} days, session gap ${PROFILE_DEFAULTS.sessionGapMs / 60_000} min). Target: the short-term top follows within 5 events. Pure computation (load average ${loadavg().map((x) => x.toFixed(2)).join(" ")} does not bear on it).`,
];
printTable("interest shift", header, rows);
for (const n of notes) console.log(n);
if (!a["no-record"]) appendResults("interest shift", `node dist-bench/bench/interest-shift.js --users ${USERS}`, header, rows, notes);
