/**
 * How a user's state travels in a partition's changelog (README "Scale-out",
 * src/bus/changelog.ts; the bus sees the bytes as opaque): the store's
 * profile layout (src/store/profile-layout.ts), followed by what the store
 * keeps apart from it (the audience memberships, AudienceState m, due, w and
 * q) as MessagePack:
 *   0x00, u32 LE length of the layout bytes, the layout bytes,
 *   then, when the state has an audience state, a msgpack array [m, due, w, q]
 *   (m a map; w 0 when absent, q null when absent).
 *
 * Each batch of an owner encodes every user it changed, so this is on the
 * ingest path: the layout is written by code made for it, where msgpackr
 * walked the objects (bench/RESULTS.md, "changelog states in the profile
 * layout").
 * Records written before are still read by their first byte: self-contained
 * MessagePack of the whole state (a map or a record: never 0x00, which is the
 * number 0) and, before that, v8 serializations (0xFF, their version tag).
 */
import { deserialize } from "node:v8";
import { Packr } from "msgpackr";
import { riskOf, type RiskRecord, type RiskState } from "../actors/risk.js";
import type { UserState } from "../actors/user-profile.js";
import type { AudienceState } from "../actors/audience-types.js";
import { decodeProfile, encodeProfile } from "../store/profile-layout.js";

/**
 * Record structures are written into each encoding (no shared structures): a
 * record is read without any other. Binary fields (the LSTM state) are
 * copied out on decoding, so a state does not keep the whole message it came
 * in alive.
 */
const packr = new Packr({ useRecords: (o: object) => Object.getPrototypeOf(o) !== null, mapsAsObjects: true, copyBuffers: true });

/** The first byte of every v8.serialize output (its version tag). */
const V8_VERSION_TAG = 0xff;
/** The first byte of a state in the profile layout plus memberships. */
const LAYOUT_TAG = 0x00;

type MembershipsPart = [m: AudienceState["m"], due: number, w: 0 | 1, q: [number, number] | null];

/** Bytes of their own (the changelog keeps states until the next compaction, and they are cloned to the main thread). */
export function encodeChangelogState(state: UserState): Uint8Array {
  const layout = encodeProfile(state);
  const a = state.aud;
  const tail = a === undefined ? undefined : packr.pack([a.m, a.due, a.w ?? 0, a.q ?? null] satisfies MembershipsPart);
  const out = new Uint8Array(5 + layout.length + (tail?.length ?? 0));
  out[0] = LAYOUT_TAG;
  new DataView(out.buffer).setUint32(1, layout.length, true);
  out.set(layout, 5);
  if (tail !== undefined) out.set(tail, 5 + layout.length);
  return out;
}

export function decodeChangelogState(bytes: Uint8Array): UserState {
  if (bytes[0] === LAYOUT_TAG) return decodeLayoutState(bytes);
  const st = (bytes[0] === V8_VERSION_TAG ? deserialize(bytes) : packr.unpack(bytes)) as UserState;
  // The memberships are a null-prototype dictionary (AudienceState.m), as ProfileStore.getState gives them back.
  if (st.aud !== undefined) Object.setPrototypeOf(st.aud.m, null);
  // The risk state travels in its memory form; a record of an earlier version becomes it (src/actors/risk.ts).
  if (st.rk !== undefined) st.rk = riskOf(st.rk as RiskState | RiskRecord);
  return st;
}

function decodeLayoutState(bytes: Uint8Array): UserState {
  const len = new DataView(bytes.buffer, bytes.byteOffset, bytes.length).getUint32(1, true);
  const end = 5 + len;
  const st = decodeProfile(bytes.subarray(0, end), 5);
  if (st.aud !== undefined) {
    if (end >= bytes.length) throw new RangeError("changelog state: an audience state without its memberships");
    const [m, due, w, q] = packr.unpack(bytes.subarray(end)) as MembershipsPart;
    Object.setPrototypeOf(m, null);
    st.aud.m = m;
    st.aud.due = due;
    if (w === 1) st.aud.w = 1;
    if (q !== null) st.aud.q = q;
  }
  return st;
}
