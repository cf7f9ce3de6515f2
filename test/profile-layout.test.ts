import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { open, type DatabaseOptions } from "lmdb";
import { pack } from "msgpackr";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newAudienceState } from "../src/actors/audience-state.js";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { packRisk } from "../src/actors/risk.js";
import { applyEvent, newUserState, profileView, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import { decodeProfile, encodeProfile, encodeProfileBin } from "../src/store/profile-layout.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { EventType } from "../src/wire/proto.js";

const T0 = Date.UTC(2024, 0, 1);
const o = compileProfileOptions({});
const ev = (e: Partial<ProfileEvent>): ProfileEvent => ({
  type: EventType.VIEW, timestampMs: T0, itemId: "", categoryId: "", brand: "", price: 0, quantity: 0, currency: "", sessionId: "", orderId: "", ...e,
});

/** A state with every field set: events of every kind (risk, reviews, sessions, orders), then every optional part. */
function fullState(): UserState {
  const s = newUserState();
  for (let k = 0; k < 40; k++) {
    const type = [EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.REFUND, EventType.REVIEW, EventType.SEARCH][k % 6]!;
    applyEvent(s, ev({
      type, timestampMs: T0 + k * 61_000, itemId: type === EventType.SEARCH ? "" : `i${k % 9}`, searchQuery: "rote Schuhe ✓",
      categoryId: `c${k % 5}`, brand: k % 2 ? "Acme" : "Zürich-Läufer", price: 9.99 * (k + 1), quantity: k % 3, currency: "EUR",
      sessionId: `s${k >> 3}`, orderId: `o${k >> 1}`, attributes: { device_id: `d${k % 2}` }, rating: 1 + (k % 5),
      ...(k % 4 === 0 ? { review: { sentiment: 0.25 * (k % 5) - 0.5, aspects: ["fit", "Größe"] } } : {}),
    }), o);
  }
  s.lstm = Uint8Array.from({ length: 128 }, (_, i) => (i * 37) & 0xff);
  s.lstmV = "2026-11-22.2";
  const a = newAudienceState(3);
  a.d = [19723, 14, 0, 1, 7470, 19724, 300, 2, 0, 65536];
  a.cart = T0 + 5;
  a.sc = ["c1", "c2"];
  a.scn = [1.794, 2];
  a.scS = 8;
  s.aud = a;
  s.so = { o: 2, i: 300, ss: 1, sr: 0, fo: [4294967295, 1, 2 ** 31], fr: [[77, ["c1", "c9"], [0.5, 3]], [4000000000, [], []]] };
  s.al = [["old-id", 5], ["ünïcode-id", 0]];
  s.mg = ["m1", "m2"];
  return s;
}

/** Every form a number takes in the layout, and the edges between them. */
const NUMBERS = [0, 1, 0xef, 0xf0, 0xffff, 0x10000, 2 ** 32 - 1, 2 ** 32, 2 ** 48 - 1, 2 ** 48, 2 ** 53, -1, -(2 ** 31), 0.1, 1e308,
  Number.MIN_VALUE, Infinity, -Infinity, NaN, T0];
/** Strings: empty, at the edges of the short ASCII path and of a one-byte length, non-ASCII, and long. */
const STRINGS = ["", "a", "x".repeat(16), "y".repeat(17), "z".repeat(79), "w".repeat(80), "é", "Größe 𝄞 ✓", "ü".repeat(200), "q".repeat(70_000)];

describe("profile layout", () => {
  it("layout - every field round-trips, at the limits too: empty state, every number form, long and non-ASCII strings, long lists", () => {
    const s = fullState();
    expect(s.rv).toBeDefined();
    expect(s.rk).toBeDefined();
    expect(s.tl!.length).toBeGreaterThan(0);
    expect(decodeProfile(encodeProfile(s))).toEqual(s);
    // Every optional part absent, and the state a user starts with.
    const bare = newUserState();
    delete bare.bought;
    delete bare.tl;
    expect(decodeProfile(encodeProfile(bare))).toEqual(bare);
    expect(decodeProfile(encodeProfile(newUserState()))).toEqual(newUserState());
    // Numbers, strings and lists of every size (a list of 300 has a two-byte length).
    const x = fullState();
    x.counts = [...NUMBERS, ...Array.from({ length: 300 }, (_, i) => i * 1000.5)];
    x.recent = [...STRINGS, ...Array.from({ length: 300 }, (_, i) => `item-${i}`)];
    x.aud!.sc = STRINGS.slice();
    x.aud!.scn = NUMBERS.slice();
    x.currency = "€";
    const back = decodeProfile(encodeProfile(x));
    expect(back).toEqual(x);
    expect(Number.isNaN(back.counts[NUMBERS.findIndex(Number.isNaN)])).toBe(true);
    // A timeline time that is not an integer, or later than lastSeenMs, is written as it is (exact).
    const t = fullState();
    t.tl![0]![1] = T0 + 0.5;
    t.tl![1]![1] = t.lastSeenMs + 1000;
    expect(decodeProfile(encodeProfile(t))).toEqual(t);
    // The encoder's result is a view of its buffer: the next encode reuses it.
    const first = Buffer.from(encodeProfile(s));
    encodeProfile(x);
    expect(Buffer.from(encodeProfile(s)).equals(first)).toBe(true);
  });

  it("layout - the risk state's compact form round-trips: doubles of earlier versions, times that are not integers or after lastSeenMs, devices, every field set or not", () => {
    const s = fullState();
    const base = s.rk!.slice();
    const cases: number[][] = [
      base,
      // A state of an earlier version: b and the rates as doubles, not float32 values.
      [0.1, base[1]!, 0.3, 0.2, 0, 0.30000000000000004, 0, 0, -1, 0, 0],
      // Every field set (qk a hash), bt not an integer, a device id, an id's time after lastSeenMs and not an integer.
      [2.5, s.lastSeenMs - 0.5, 1.5, 0.25, 7, 3, 2, 1, 4294967295, 3, 9, 5, s.lastSeenMs, -1, s.lastSeenMs + 10.5, -4294967296, 0],
      // bt after lastSeenMs, no ids, NaN and infinities.
      [NaN, s.lastSeenMs + 1, Infinity, -Infinity, 0, Infinity, 0, 0, -1, 0, 0],
      // Before any action (a state made by a purchase alone).
      [0, 0, 0, 0, 0, 0, 1, 1, 12345, 1, 0, 77, s.lastSeenMs],
      // b, bt and pk 0 with a rate left (not made by observeRisk, read back all the same).
      [0, 0, 0.5, 0.25, 0, 0, 0, 0, -1, 0, 0],
    ];
    for (const rk of cases) {
      s.rk = rk;
      const back = decodeProfile(encodeProfile(s));
      expect(back.rk).toEqual(rk);
      expect(back).toEqual(s);
    }
  });

  it("layout - a profile of layout version 1 (the risk state as packRisk's flat array, ids past the gap kept) loads", () => {
    // encodeProfile of commit c1e8cca for the state of these events, with a social part, aliases and merges after the risk part.
    const V1 = "01f0c303060c0004000000000001010000000a0a000101026f31f260de52c28c01f200f451c28c01f200d1bfc28c01f200f451c28c0100000000010531302d323001f35c5d5d225a0014400405f1e4ce0100027333f200d1bfc28c01f200d1bfc28c010103026933026931026932010269310600010002693308f140086c0002693107f1a0f26c0002693101f124d76d0002693101f144da6d0002693201f100dd6d000269311501f200d1bfc28c01f3bf942eff9bbeb13ff336c752af1a43c93f00f336c752af1a43c93f0101f17dc933200202f1f6c426a100f1d0c1269ff140086c00f300000045c69fb9c1f124d76d00f3000000feca9fbcc1f144da6d00f189c626a2f144da6d0001000000014d0001066f6c642d69640501026d31";
    const RK_V1 = [1, 1704074400000, 0.06931471805599453, 0.1973603588172012, 0, 0.1973603588172012, 1, 1, 540264829, 2, 2, 2703672566, 1704074400000,
      2670117328, 1704067320000, -429901381, 1704067201500, -480234238, 1704067200700, 2720450185, 1704067200700];
    const s = newUserState();
    for (const e of [
      ev({ type: EventType.VIEW, timestampMs: T0, itemId: "i1", sessionId: "s1", attributes: { device_id: "d1" } }),
      ev({ type: EventType.VIEW, timestampMs: T0 + 700, itemId: "i2", sessionId: "s2", attributes: { device_id: "d2" } }),
      ev({ type: EventType.VIEW, timestampMs: T0 + 1500, itemId: "i1", sessionId: "s1", attributes: { device_id: "d1" } }),
      ev({ type: EventType.PURCHASE, timestampMs: T0 + 60_000, itemId: "i1", orderId: "o1", price: 10, sessionId: "s1" }),
      ev({ type: EventType.REFUND, timestampMs: T0 + 120_000, itemId: "i1", orderId: "o1", price: 10, sessionId: "s1" }),
      ev({ type: EventType.VIEW, timestampMs: T0 + 7_200_000, itemId: "i3", sessionId: "s3" }),
    ]) applyEvent(s, e, o);
    s.so = { o: 1, i: 0, ss: 0, sr: 0, fo: [77], fr: [] };
    s.al = [["old-id", 5]];
    s.mg = ["m1"];
    const old = decodeProfile(Buffer.from(V1, "hex"));
    expect(old.rk).toEqual(RK_V1);
    expect({ ...old, rk: undefined }).toEqual({ ...s, rk: undefined });
    // Written again in this version, it reads back the same.
    expect(decodeProfile(encodeProfile(old))).toEqual(old);
  });

  it("layout - bytes of an unknown version, cut short or with bytes left over are refused", () => {
    const b = Buffer.from(encodeProfile(fullState()));
    const other = Buffer.from(b);
    other[0] = 3;
    expect(() => decodeProfile(other)).toThrow(/version 3/);
    expect(() => decodeProfile(Buffer.concat([b, Buffer.from([0])]))).toThrow(/left/);
    expect(() => decodeProfile(b.subarray(0, b.length - 40))).toThrow();
  });

  it("layout - the value put is msgpack's bin of the layout, byte for byte, at every header size; a value handed out is never written again", () => {
    const small = newUserState();
    const mid = fullState();
    const large = fullState();
    large.recent = [..."x".repeat(70_000).match(/.{1,7000}/g)!];
    const states = [small, mid, large, small, mid, mid, large];
    for (let k = 0; k < 40; k++) states.push(k % 3 === 0 ? small : mid);
    // Views of the values as handed out (not copies): later calls must leave them as they were.
    const given: Uint8Array[] = [];
    for (const st of states) {
      const v = encodeProfileBin(st);
      given.push(v.subarray(v.start, v.end));
    }
    expect(given[0]![0]).toBe(0xc4);
    expect(given[1]![0]).toBe(0xc5);
    expect(given[2]![0]).toBe(0xc6);
    for (let i = 0; i < states.length; i++) expect(Buffer.from(given[i]!).equals(pack(Buffer.from(encodeProfile(states[i]!))))).toBe(true);
  });

  describe("with LMDB", () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), "portrait-profile-layout-"));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it("layout - a profile stored by the msgpack layout before loads and answers the same; its next write is of this layout", async () => {
      const s = fullState();
      s.aud!.m.a1 = [T0 + 1000, 1, 0];
      // An id that is a name of Object.prototype's (the memberships are a null-prototype dictionary).
      const id: string = "constructor";
      s.aud!.m[id] = [0, 2, 1];
      s.aud!.due = T0 + 9000;
      s.aud!.w = 1;
      s.aud!.q = [3, 0];
      const asOf = T0 + 86_400_000;
      const view = profileView("u", s, asOf, o);
      const store = new ProfileStore({ dataDir: dir, mapSizeBytes: 2 ** 26 });
      await store.commitBatch(0, 1, [["u", s]]);
      await store.close();
      // The profile as the store wrote it before this layout: msgpack records with shared structures, the audience state
      // without what the memberships db holds, the risk state packed (the memberships record stays as written).
      const env = open({ path: join(dir, "lmdb"), compression: false });
      const profiles = env.openDB({ name: "profiles", encoding: "msgpack", sharedStructuresKey: Symbol.for("structures"), useRecords: (x: object) => Object.getPrototypeOf(x) !== null, mapsAsObjects: true } as DatabaseOptions & { name: string });
      expect(profiles.get("u")).toBeInstanceOf(Uint8Array);
      const a = s.aud!;
      await profiles.put("u", { ...s, aud: { p: a.p, d: a.d, cart: a.cart, sc: a.sc, scn: a.scn, scS: a.scS }, rk: packRisk(s.rk!).slice() });
      expect(profiles.get("u")).not.toBeInstanceOf(Uint8Array);
      await env.close();

      const again = new ProfileStore({ dataDir: dir, mapSizeBytes: 2 ** 26 });
      try {
        const old = again.getState("u")!;
        expect(old).toEqual(s);
        expect(Object.getPrototypeOf(old.aud!.m)).toBe(null);
        expect(profileView("u", old, asOf, o)).toEqual(view);
        // Its next write is of this layout, and reads back the same.
        const next = ev({ type: EventType.VIEW, timestampMs: T0 + 3_000_000, itemId: "i1" });
        applyEvent(old, next, o);
        applyEvent(s, next, o);
        await again.commitBatch(0, 2, [["u", old]]);
        const stored = again.getState("u")!;
        expect(stored).toEqual(s);
        expect(Object.getPrototypeOf(stored.aud!.m)).toBe(null);
        // One msgpack bin value: a 2-byte header up to 255 bytes, 3 up to 65,535.
        const n = encodeProfile(s).length;
        expect(again.storedBytes("u").profile).toBe(n + (n < 256 ? 2 : 3));
      } finally {
        await again.close();
      }
    });
  });
});
