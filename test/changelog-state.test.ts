/**
 * A user's state in the changelog (src/shard/changelog-state.ts): what a new
 * owner decodes is the state the old owner encoded, field for field, with the
 * memberships' null prototype back; and records written as MessagePack of the
 * whole state (before the profile layout) or as v8 serializations (before
 * that) are still read.
 */
import { serialize } from "node:v8";
import { Packr } from "msgpackr";
import { describe, expect, it } from "vitest";
import { newAudienceState, observeAudienceEvent } from "../src/actors/audience-state.js";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { riskCounts, riskRecord, riskView, type RiskState } from "../src/actors/risk.js";
import { applyEvent, newUserState, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import { decodeChangelogState, encodeChangelogState } from "../src/shard/changelog-state.js";
import { EventType } from "../src/wire/proto.js";

const o = compileProfileOptions({});

function sample(): UserState {
  const s = newUserState();
  const t0 = Date.UTC(2024, 4, 1);
  const ev = (type: EventType, dt: number, more: Partial<ProfileEvent> = {}): ProfileEvent => ({
    type, timestampMs: t0 + dt, itemId: "i1", categoryId: "shoes", brand: "Acme", price: 19.5, quantity: 1, currency: "EUR", sessionId: "s1", orderId: "", ...more,
  });
  const events: ProfileEvent[] = [
    ev(EventType.VIEW, 0),
    ev(EventType.ADD_TO_CART, 60_000),
    ev(EventType.PURCHASE, 120_000, { orderId: "o1" }),
    ev(EventType.SEARCH, 180_000, { itemId: "", categoryId: "", brand: "", price: 0, searchQuery: "red shoes" }),
  ];
  for (const e of events) {
    applyEvent(s, e, o);
    observeAudienceEvent(s, e, 3);
  }
  s.aud ??= newAudienceState(3);
  s.aud.m["constructor"] = [t0, 1, 0]; // a key Object.prototype has: the dictionary must not be a plain object
  s.aud.m["vip"] = [0, 2, 1];
  s.lstm = new Uint8Array(Float32Array.from([0.25, -1.5, 3, 0]).buffer);
  s.lstmV = "v7";
  return s;
}

/** A record as the changelog wrote it before the profile layout: self-contained MessagePack of the whole state. */
function msgpackRecord(s: UserState): Uint8Array {
  return new Uint8Array(new Packr({ useRecords: (o: object) => Object.getPrototypeOf(o) !== null, mapsAsObjects: true }).pack(s));
}

/** The state as plain data, for comparison (the LSTM bytes as an array). */
function plain(s: UserState): unknown {
  return { ...s, lstm: s.lstm === undefined ? undefined : [...s.lstm], aud: s.aud === undefined ? undefined : { ...s.aud, m: { ...s.aud.m } } };
}

describe("changelog state", () => {
  it("changelog state - decode(encode(state)) is the state, memberships with a null prototype, with and without an audience state", () => {
    const s = sample();
    s.aud!.due = Date.UTC(2024, 4, 2);
    s.aud!.w = 1;
    s.aud!.q = [3, 7];
    const bytes = encodeChangelogState(s);
    const back = decodeChangelogState(bytes);
    expect(plain(back)).toEqual(plain(s));
    expect(Object.getPrototypeOf(back.aud!.m)).toBeNull();
    expect(back.aud!.m["constructor"]).toEqual(s.aud!.m["constructor"]);
    expect(bytes[0]).toBe(0);
    const bare = newUserState();
    applyEvent(bare, { type: EventType.VIEW, timestampMs: Date.UTC(2024, 4, 1), itemId: "i9", categoryId: "c", brand: "", price: 0, quantity: 1, currency: "", sessionId: "s", orderId: "" }, o);
    expect(bare.aud).toBeUndefined();
    expect(plain(decodeChangelogState(encodeChangelogState(bare)))).toEqual(plain(bare));
    // Its own memory, not a view into the encoder's buffer (the changelog keeps states until a compaction).
    expect(bytes.byteLength).toBe(bytes.buffer.byteLength);
  });

  it("changelog state - records written as MessagePack (before the layout) and as v8 serializations (before that) are read", () => {
    const s = sample();
    for (const old of [msgpackRecord(s), serialize(s)]) {
      const back = decodeChangelogState(old);
      expect(plain(back)).toEqual(plain(s));
      expect(Object.getPrototypeOf(back.aud!.m)).toBeNull();
    }
  });

  it("changelog state - a risk state written as a record (before the flat form) is read as the flat form", () => {
    const s = sample();
    expect(Array.isArray(s.rk)).toBe(true);
    for (const old of [msgpackRecord({ ...s, rk: riskRecord(s.rk!) as unknown as RiskState }), serialize({ ...s, rk: riskRecord(s.rk!) })]) {
      const back = decodeChangelogState(old);
      expect(plain(back)).toEqual(plain(s));
      expect(riskView(back.rk, riskCounts(back))).toEqual(riskView(s.rk, riskCounts(s)));
    }
  });
});
