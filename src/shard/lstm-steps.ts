/** The LSTM user encoder in a shard: each applied event is one cell step from the user's stored (h, c). */
import type { Actor } from "../actors/actor.js";
import type { UserState } from "../actors/user-profile.js";
import type { LstmEvent } from "../models/lstm-features.js";
import type { LstmRuntime } from "../models/lstm-runtime.js";

/** A copy of the user's stored LSTM state when it belongs to the running model version, else a zero state. */
export function storedLstmState(state: UserState, rt: LstmRuntime): Float32Array {
  const h = rt.initialState();
  if (state.lstm !== undefined && state.lstmV === rt.version && state.lstm.byteLength === h.byteLength) new Uint8Array(h.buffer).set(state.lstm);
  return h;
}

/**
 * The actor's live LSTM state: from its stored bytes when they belong to the
 * running model version, else a zero state (a new user, or a new version).
 */
function liveState(a: Actor, rt: LstmRuntime): Float32Array {
  if (a.lstm !== undefined) return a.lstm;
  const h = storedLstmState(a.state, rt);
  a.lstm = h;
  a.state.lstm = new Uint8Array(h.buffer);
  a.state.lstmV = rt.version;
  return h;
}

/** One LSTM wave: each actor at most once. */
interface Wave { states: Float32Array[]; events: LstmEvent[]; prevMs: number[] }

/** Steps every applied event's actor once per event (`prevMs`: the actor's last event time before it), in waves: a user's k-th event of the batch is in wave k. */
export function stepLstm(rt: LstmRuntime, steps: Array<[Actor, LstmEvent, number]>): void {
  const waves: Wave[] = [];
  const depth = new Map<Actor, number>();
  for (const [a, e, prevMs] of steps) {
    const d = depth.get(a) ?? 0;
    depth.set(a, d + 1);
    const w = (waves[d] ??= { states: [], events: [], prevMs: [] });
    w.states.push(liveState(a, rt));
    w.events.push(e);
    w.prevMs.push(prevMs);
  }
  for (const w of waves) rt.step(w.states, w.events, w.prevMs);
}
