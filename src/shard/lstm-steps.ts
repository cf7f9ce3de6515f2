/**
 * The LSTM user encoder in a shard: each applied event is one cell step from
 * the user's stored (h, c).
 *
 * A state belongs to the model version that stepped it (UserState.lstmV).
 * When another version runs (a hot swap, or a restart with another --lstm),
 * the state is rebuilt lazily, on the user's first touch: the new version
 * steps the events of the profile's timeline (UserState.tl: the last
 * TIMELINE_MEMORY events, type, time and item id; category and price are
 * not kept there, so they enter as "none") from a zero state, oldest first.
 * A query re-encodes without storing; the next applied event stores the
 * re-encoded state with its batch.
 *
 * Stored layout (UserState.lstm): since 2026-12-07 the halves of (h, c)
 * (binary16 little-endian, 4 x hidden bytes; the engine steps with
 * LstmRuntime.stepHalf, so the live state holds exactly these values);
 * before, float32 (8 x hidden bytes), which still loads as it is: the
 * byte length tells the two apart for the hidden size of lstmV's model.
 */
import type { Actor } from "../actors/actor.js";
import type { UserState } from "../actors/user-profile.js";
import type { LstmEvent } from "../models/lstm-features.js";
import type { LstmRuntime } from "../models/lstm-runtime.js";
import { readHalves } from "../models/half-float.js";
import { EventType } from "../wire/proto.js";

/** The state `rt` reaches from zero over the timeline's events (oldest first): the re-encoding after a version change. `h`: a zero state to step in place. */
export function reencodeLstmState(state: UserState, rt: LstmRuntime, h = rt.initialState()): Float32Array {
  const tl = state.tl ?? [];
  let prev = 0;
  for (let i = tl.length - 1; i >= 0; i--) {
    const [type, timestampMs, item] = tl[i]!;
    rt.stepHalf([h], [{ type, timestampMs, itemId: type === EventType.SEARCH ? "" : item, categoryId: "", price: 0 }], [prev]);
    if (timestampMs > prev) prev = timestampMs;
  }
  return h;
}

/** A copy of the user's stored LSTM state when it belongs to `rt`'s version, else the re-encoded one. */
export function storedLstmState(state: UserState, rt: LstmRuntime): Float32Array {
  const h = rt.initialState();
  const s = state.lstm;
  if (s !== undefined && state.lstmV === rt.version) {
    if (s.byteLength === 2 * h.length) {
      readHalves(s, h);
      return h;
    }
    // The float32 layout before halves.
    if (s.byteLength === h.byteLength) {
      new Uint8Array(h.buffer).set(s);
      return h;
    }
  }
  // `h` is still zero here: a new user's (empty timeline) state is it, without a second allocation.
  return reencodeLstmState(state, rt, h);
}

/**
 * The actor's live LSTM state for `rt`: its stored bytes when they belong to
 * `rt`'s version, else re-encoded from the timeline. Called before the
 * actor's next event is applied (the timeline must not hold it yet).
 */
export function liveState(a: Actor, rt: LstmRuntime): Float32Array {
  if (a.lstm !== undefined && a.state.lstmV === rt.version) return a.lstm;
  const h = storedLstmState(a.state, rt);
  a.lstm = h;
  // Its halves are written by the step that follows (stepLstm).
  a.state.lstm = new Uint8Array(2 * h.length);
  a.state.lstmV = rt.version;
  return h;
}

/**
 * A batch's LSTM steps in the order applied: the actor, its event, and the
 * actor's last event time before it, in parallel arrays (a tuple per event
 * was ~90 B of a shard's allocation per event: bench/shard-apply.ts --alloc).
 */
export class LstmSteps {
  readonly actors: Actor[] = [];
  readonly events: LstmEvent[] = [];
  readonly prevMs: number[] = [];

  get length(): number {
    return this.actors.length;
  }

  push(a: Actor, e: LstmEvent, prevMs: number): void {
    this.actors.push(a);
    this.events.push(e);
    this.prevMs.push(prevMs);
  }

  /** Drops the actor's steps (its LSTM state is re-encoded, or it is gone). */
  drop(a: Actor): void {
    for (let i = this.actors.length - 1; i >= 0; i--) {
      if (this.actors[i] !== a) continue;
      this.actors.splice(i, 1);
      this.events.splice(i, 1);
      this.prevMs.splice(i, 1);
    }
  }
}

/** One LSTM wave: each actor at most once; `stored`: the actors' state.lstm, where the step writes the halves. */
interface Wave { states: Float32Array[]; events: LstmEvent[]; prevMs: number[]; stored: Uint8Array[] }

/**
 * Steps every applied event's actor once per event (`prevMs`: the actor's last event time before it), in waves: a user's
 * k-th event of the batch is in wave k. `between`: called between slices of `slice` rows (a row's step does not depend
 * on the others in its product, so the slices give the same states as one product).
 */
export function stepLstm(rt: LstmRuntime, steps: LstmSteps, between?: () => void, slice = 64): void {
  const waves: Wave[] = [];
  const depth = new Map<Actor, number>();
  const { actors, events, prevMs } = steps;
  for (let i = 0; i < actors.length; i++) {
    const a = actors[i]!;
    const d = depth.get(a) ?? 0;
    depth.set(a, d + 1);
    const w = (waves[d] ??= { states: [], events: [], prevMs: [], stored: [] });
    w.states.push(liveState(a, rt));
    w.events.push(events[i]!);
    w.prevMs.push(prevMs[i]!);
    w.stored.push(a.state.lstm!);
  }
  for (const w of waves) {
    if (between === undefined || w.states.length <= slice) {
      rt.stepHalf(w.states, w.events, w.prevMs, w.stored);
      between?.();
      continue;
    }
    for (let i = 0; i < w.states.length; i += slice) {
      const j = Math.min(w.states.length, i + slice);
      rt.stepHalf(w.states.slice(i, j), w.events.slice(i, j), w.prevMs.slice(i, j), w.stored.slice(i, j));
      between();
    }
  }
}
