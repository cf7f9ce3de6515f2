/**
 * The stored profile layout (src/store/profile-codec.ts): every field of
 * UserState round-trips, at its limits; non-finite numbers are refused;
 * records written before a field existed decode with its default; profiles
 * stored by the previous layout (msgpack with shared structures) still load
 * through the store, and are rewritten in the binary layout on the next change.
 */
import { open } from "lmdb";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { applyEvent, newUserState, profileView, type ProfileEvent, type UserState } from "../src/actors/user-profile.js";
import { ErrorCode, PortraitError } from "../src/errors.js";
import { FIELDS, PROFILE_LAYOUT_VERSION, PROFILE_MAGIC, decodeProfile, encodeProfile } from "../src/store/profile-codec.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { EventType } from "../src/wire/proto.js";
import { removeDir } from "./helpers/engine.js";
import { tmpDir } from "./helpers/nats.js";

const o = compileProfileOptions({});
const T0 = Date.UTC(2025, 4, 1);
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function ev(p: Partial<ProfileEvent> & { type: EventType; timestampMs: number }): ProfileEvent {
  return { itemId: "", categoryId: "", brand: "", price: 0, quantity: 0, currency: "", sessionId: "", orderId: "", ...p };
}

/** A state with every field set to something other than its default: events of every type through applyEvent, then the LSTM fields. */
function fullState(events = 40, long = false): UserState {
  const s = newUserState();
  const types = Object.values(EventType).filter((t): t is EventType => typeof t === "number" && t > 0);
  const pad = long ? "ü-é-漢字-".repeat(20) : "";
  for (let i = 0; i < events; i++) {
    const type = types[i % types.length]!;
    applyEvent(s, ev({
      type, timestampMs: T0 + i * 61_000 + (i % 3 === 0 ? 0.5 : 0), itemId: `item-${i % 29}${pad}`, categoryId: `cat-${i % 23}${pad}`,
      brand: `Brand ${i % 19}${pad}`, price: 3.99 + i * 17.25, quantity: 1 + (i % 3), currency: "EUR",
      sessionId: `s${Math.floor(i / 7)}`, orderId: `o${i}${pad}`, searchQuery: `shoes ${i}${pad}`,
    }), o);
  }
  s.lstm = new Uint8Array(Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) * 3).buffer);
  s.lstmV = "2026-11-22.2";
  return s;
}

describe("profile codec", () => {
  it("profile codec - every field of UserState is in the layout, set in the sample, and round-trips exactly", () => {
    const s = fullState();
    const defaults = newUserState() as unknown as Record<string, unknown>;
    // The sample sets every field the codec knows, and the codec knows every field the sample has.
    expect(Object.keys(s).sort()).toEqual(Object.keys(FIELDS).sort());
    for (const k of Object.keys(FIELDS)) {
      if (k === "v") continue;
      expect((s as unknown as Record<string, unknown>)[k], k).not.toEqual(defaults[k]);
    }
    const bytes = encodeProfile(s);
    expect(bytes[0]).toBe(PROFILE_MAGIC);
    expect(bytes[1]).toBe(PROFILE_LAYOUT_VERSION);
    const back = decodeProfile(bytes);
    expect(back).toEqual(s);
    for (const k of Object.keys(FIELDS)) expect((back as unknown as Record<string, unknown>)[k], k).toEqual((s as unknown as Record<string, unknown>)[k]);
    // And what the profile answers is the same.
    expect(profileView("u", back, T0 + 86_400_000, o)).toEqual(profileView("u", s, T0 + 86_400_000, o));
  });

  it("profile codec - limits: the empty state, full lists of long non-ASCII strings, extreme numbers", () => {
    const empty = newUserState();
    expect(decodeProfile(encodeProfile(empty))).toEqual(empty);
    const big = fullState(400, true);
    expect(big.recent.length).toBe(o.recentItems);
    expect(big.cat.keys.length).toBe(o.affinityTopK);
    expect(decodeProfile(encodeProfile(big))).toEqual(big);
    const odd = newUserState();
    odd.purchased = Number.MAX_VALUE;
    odd.refunded = -Number.MIN_VALUE;
    odd.n = Number.MAX_SAFE_INTEGER;
    odd.orders = 2 ** 50;
    odd.sDurationDone = -(2 ** 50) + 1;
    odd.lastPurchaseMs = -1;
    odd.affRefMs = 1e-300;
    odd.cat = { keys: ["", "x"], scores: [0, -0.1] };
    odd.lstm = new Uint8Array(0);
    odd.lstmV = "";
    expect(decodeProfile(encodeProfile(odd))).toEqual(odd);
  });

  it("profile codec - NaN and infinities are refused (STORAGE_FAILED), not stored", () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const s = newUserState();
      s.cat = { keys: ["c"], scores: [bad] };
      expect(() => encodeProfile(s)).toThrow(PortraitError);
      const t = newUserState();
      t.purchased = bad;
      expect(() => encodeProfile(t)).toThrow(/only finite numbers/);
    }
  });

  it("profile codec - absent optional fields stay absent; a record written before later fields existed takes their defaults; bad records are refused", () => {
    const s = newUserState();
    delete s.bought;
    delete s.tl;
    const back = decodeProfile(encodeProfile(s));
    expect("bought" in back).toBe(false);
    expect("tl" in back).toBe(false);
    expect(back).toEqual(s);
    // Two fields written (v = 1, n = 5), the rest unknown to that writer.
    const old = Uint8Array.from([PROFILE_MAGIC, PROFILE_LAYOUT_VERSION, 2, 0b11, 4, 20]);
    expect(decodeProfile(old)).toEqual({ ...newUserState(), n: 5 });
    const err = (b: Uint8Array) => { try { decodeProfile(b); } catch (e) { return (e as PortraitError).code; } return "decoded"; };
    expect(err(Uint8Array.from([PROFILE_MAGIC, 9, 0]))).toBe(ErrorCode.STORAGE_FAILED);
    expect(err(encodeProfile(fullState()).subarray(0, 40))).toBe(ErrorCode.STORAGE_FAILED);
    expect(err(Uint8Array.from([PROFILE_MAGIC, PROFILE_LAYOUT_VERSION, Object.keys(FIELDS).length + 1]))).toBe(ErrorCode.STORAGE_FAILED);
  });

  it("profile codec - smaller than msgpack of the whole object for the same state", async () => {
    const { pack } = await import("msgpackr");
    for (const s of [fullState(3), fullState(40)]) expect(encodeProfile(s).length).toBeLessThan(pack(s).length);
  });
});

describe("profile store - layouts", () => {
  it("profile store - profiles stored by the previous layout (msgpack) load and answer the same; the next commit rewrites them in the binary layout", async () => {
    const dataDir = tmpDir("portrait-codec");
    cleanups.push(() => removeDir(dataDir));
    const states = new Map<string, UserState>([["u-old-1", fullState(40)], ["u-old-2", fullState(3)], ["u-old-3", newUserState()]]);
    const legacyOnly = newUserState();
    delete legacyOnly.bought;
    delete legacyOnly.tl;
    states.set("u-old-4", legacyOnly);
    // Written as the store wrote them before (msgpack with shared structures).
    const root = open({ path: join(dataDir, "lmdb"), compression: false });
    const db = root.openDB<UserState, string>({ name: "profiles", encoding: "msgpack", sharedStructuresKey: Symbol.for("structures") });
    for (const [id, s] of states) await db.put(id, s);
    await root.close();

    const store = new ProfileStore({ dataDir });
    cleanups.push(() => store.close());
    // msgpack gives the LSTM bytes back as a Buffer (as the store always returned them): compare the bytes.
    const plain = (s: UserState | undefined) => (s?.lstm !== undefined ? { ...s, lstm: Uint8Array.from(s.lstm) } : s);
    for (const [id, s] of states) {
      const got = plain(store.getState(id))!;
      expect(got, id).toEqual(s);
      expect(profileView(id, got, T0 + 3_600_000, o)).toEqual(profileView(id, s, T0 + 3_600_000, o));
    }
    // A change rewrites the record in the new layout; old and new records live side by side.
    const changed = plain(store.getState("u-old-2"))!;
    applyEvent(changed, ev({ type: EventType.VIEW, timestampMs: T0 + 999_000, itemId: "new" }), o);
    await store.commitBatch(0, 1, [["u-old-2", changed], ["u-new", fullState(5)]]);
    expect(store.getState("u-old-2")).toEqual(changed);
    expect(store.getState("u-new")).toEqual(fullState(5));
    expect(plain(store.getState("u-old-1"))).toEqual(states.get("u-old-1"));
    expect(new Map([...store.states()].map(([k, v]) => [k, plain(v)]))).toEqual(new Map([...states, ["u-old-2", changed], ["u-new", fullState(5)]]));
    await store.close();
    const after = open({ path: join(dataDir, "lmdb"), compression: false });
    const bin = after.openDB<Uint8Array, string>({ name: "profiles", encoding: "binary" });
    expect(bin.getBinary("u-old-2")![0]).toBe(PROFILE_MAGIC);
    expect(bin.getBinary("u-new")![0]).toBe(PROFILE_MAGIC);
    expect(bin.getBinary("u-old-1")![0]).not.toBe(PROFILE_MAGIC);
    await after.close();
  });
});
