/**
 * The replay both cut-off example builders (churn, propensity) share: the
 * engine's own `applyEvent` over the events strictly before each cut-off, in
 * one pass over a time-sorted log, and each user's purchase times for the
 * labels.
 */
import { compileProfileOptions } from "../actors/profile-options.js";
import { applyEvent, newUserState, type ProfileEvent, type UserState } from "../actors/user-profile.js";
import { BadRequestError } from "../errors.js";
import { EventType } from "../wire/proto.js";

/** A profile event with its user, as the reader gave it. */
export interface UserEvent extends ProfileEvent {
  userId: string;
}

/** Each user's purchase times, ascending. */
export function purchaseTimes(events: readonly UserEvent[]): Map<string, number[]> {
  const purchases = new Map<string, number[]>();
  for (const e of events) {
    if (e.type !== EventType.PURCHASE) continue;
    let times = purchases.get(e.userId);
    if (times === undefined) purchases.set(e.userId, (times = []));
    times.push(e.timestampMs);
  }
  for (const times of purchases.values()) times.sort((a, b) => a - b);
  return purchases;
}

/** The index of the first time >= t in an ascending array (its length when none). */
export function firstAtOrAfter(sorted: readonly number[], t: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** True when `sorted` (ascending) holds a time in [from, to). */
export function anyIn(sorted: readonly number[] | undefined, from: number, to: number): boolean {
  if (sorted === undefined) return false;
  const i = firstAtOrAfter(sorted, from);
  return i < sorted.length && sorted[i]! < to;
}

/**
 * Replays `events` (sorted by time; equal times keep their order) into one
 * profile per user and calls `atCutoff(c, states)` at each cut-off in
 * ascending order, when the profiles hold exactly the events with
 * timestampMs < c. `onEvent` sees every applied event in the same order (a
 * side model keeping its own state). `name` names the caller in the error for
 * an unsorted log.
 */
export function replayToCutoffs(
  name: string, events: readonly UserEvent[], cutoffsMs: readonly number[],
  atCutoff: (cutoffMs: number, states: ReadonlyMap<string, UserState>) => void,
  onEvent?: (e: UserEvent) => void,
): void {
  const profile = compileProfileOptions();
  const states = new Map<string, UserState>();
  let next = 0;
  let prevT = -Infinity;
  for (const c of [...cutoffsMs].sort((a, b) => a - b)) {
    for (; next < events.length && events[next]!.timestampMs < c; next++) {
      const e = events[next]!;
      if (e.timestampMs < prevT) throw new BadRequestError(`${name} needs events sorted by time`);
      prevT = e.timestampMs;
      let s = states.get(e.userId);
      if (s === undefined) states.set(e.userId, (s = newUserState()));
      applyEvent(s, e, profile);
      onEvent?.(e);
    }
    atCutoff(c, states);
  }
}
