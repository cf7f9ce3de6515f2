/**
 * How a user's state travels in a partition's changelog (README "Scale-out",
 * src/bus/changelog.ts; the bus sees the bytes as opaque): self-contained
 * MessagePack, with the same record rule as the store's profiles (objects
 * with a prototype as records, the null-prototype dictionaries as maps).
 *
 * Each batch of an owner encodes every user it changed, so this is on the
 * ingest path: msgpackr encodes a state in about a third of the time of
 * v8.serialize, which the changelog used before (bench/RESULTS.md, cluster).
 * Records written that way are still read: a v8 serialization starts with its
 * version tag 0xFF, which no MessagePack encoding of an object does (0xFF is
 * the number -1).
 */
import { deserialize } from "node:v8";
import { Packr } from "msgpackr";
import { riskOf, type RiskRecord, type RiskState } from "../actors/risk.js";
import type { UserState } from "../actors/user-profile.js";

/**
 * Record structures are written into each encoding (no shared structures): a
 * record is read without any other. Binary fields (the LSTM state) are
 * copied out on decoding, so a state does not keep the whole message it came
 * in alive.
 */
const packr = new Packr({ useRecords: (o: object) => Object.getPrototypeOf(o) !== null, mapsAsObjects: true, copyBuffers: true });

/** The first byte of every v8.serialize output (its version tag). */
const V8_VERSION_TAG = 0xff;

/**
 * A copy of its own: msgpackr returns a view into its shared 8 KiB output
 * buffer, and a state kept by the changelog until the next compaction would
 * keep that whole buffer alive (and be cloned with it to the main thread).
 */
export function encodeChangelogState(state: UserState): Uint8Array {
  return new Uint8Array(packr.pack(state));
}

export function decodeChangelogState(bytes: Uint8Array): UserState {
  const st = (bytes[0] === V8_VERSION_TAG ? deserialize(bytes) : packr.unpack(bytes)) as UserState;
  // The memberships are a null-prototype dictionary (AudienceState.m), as ProfileStore.getState gives them back.
  if (st.aud !== undefined) Object.setPrototypeOf(st.aud.m, null);
  // The risk state travels in its memory form; a record of an earlier version becomes it (src/actors/risk.ts).
  if (st.rk !== undefined) st.rk = riskOf(st.rk as RiskState | RiskRecord);
  return st;
}
