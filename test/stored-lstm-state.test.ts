import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { open, type DatabaseOptions } from "lmdb";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Actor } from "../src/actors/actor.js";
import { newUserState, type UserState } from "../src/actors/user-profile.js";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import { fromHalfBits, readHalves, roundToHalf, toHalfBits } from "../src/models/half-float.js";
import type { LstmEvent } from "../src/models/lstm-features.js";
import { LstmRuntime } from "../src/models/lstm-runtime.js";
import { LstmSteps, stepLstm, storedLstmState } from "../src/shard/lstm-steps.js";
import { ProfileStore } from "../src/store/profile-store.js";
import { EventType } from "../src/wire/proto.js";

const t0 = Date.UTC(2024, 0, 1);
const ev = (i: number): LstmEvent => ({ type: i % 5 === 4 ? EventType.ADD_TO_CART : EventType.VIEW, timestampMs: t0 + i * 30_000, itemId: `i${i % 7}`, categoryId: `c${i % 3}`, price: 10 + i });
const actorOf = (state: UserState): Actor => ({ state, lastBatch: 0, batchTypes: 0, referenced: false, lstm: undefined, bytes: 0, bytesAtN: 0 });
/** One step of one actor (a batch with a single applied event). */
const oneStep = (a: Actor, e: LstmEvent, prevMs: number): LstmSteps => {
  const s = new LstmSteps();
  s.push(a, e, prevMs);
  return s;
};

describe("stored LSTM state - halves", () => {
  it("half-float - every finite half converts back to itself; rounding is to nearest, ties to even, saturating", () => {
    const wrong: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) !== 0x7c00 && toHalfBits(fromHalfBits(h)) !== h) wrong.push(h);
    }
    expect(wrong).toEqual([]);
    expect(toHalfBits(1)).toBe(0x3c00);
    expect(toHalfBits(-2)).toBe(0xc000);
    expect(toHalfBits(0.1)).toBe(0x2e66);
    expect(toHalfBits(2 ** -24)).toBe(1);
    expect(toHalfBits(2 ** -26)).toBe(0);
    // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: to the even one; 1 + 3 * 2^-11 rounds up to the even 1 + 2^-9.
    expect(toHalfBits(1 + 2 ** -11)).toBe(0x3c00);
    expect(toHalfBits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(toHalfBits(1e6)).toBe(0x7bff);
    expect(toHalfBits(-Infinity)).toBe(0xfbff);
    expect(Number.isNaN(fromHalfBits(toHalfBits(NaN)))).toBe(true);
    // roundToHalf's bit path agrees with toHalfBits on values of every magnitude, halfway points and the edges of the normal range.
    const xs = new Float32Array(20_000);
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let i = 0; i < xs.length; i++) xs[i] = (rnd() - 0.5) * 2 ** Math.floor(rnd() * 44 - 28);
    xs.set([1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -14, 2 ** -14 * (1 - 2 ** -12), 65504, 65519, 65520, -65536, 0, -0], 0);
    const ys = xs.slice();
    const bits = new Uint8Array(2 * xs.length);
    roundToHalf(ys, bits);
    const off: number[] = [];
    for (let i = 0; i < xs.length; i++) {
      const h = toHalfBits(xs[i]!);
      if ((bits[2 * i]! | (bits[2 * i + 1]! << 8)) !== h || !Object.is(ys[i], Math.fround(fromHalfBits(h)))) off.push(xs[i]!);
    }
    expect(off).toEqual([]);
    const a = Float32Array.of(0.3, -1.7, 123.456, 1e-6);
    const bytes = new Uint8Array(8);
    roundToHalf(a, bytes);
    const b = new Float32Array(4);
    readHalves(bytes, b);
    expect(Array.from(b)).toEqual(Array.from(a));
  });

  describe("with the bundled LSTM and LMDB", () => {
    let rt: LstmRuntime;
    let dir: string;
    beforeAll(() => {
      rt = LstmRuntime.load(resolveModel(BUNDLED_MODELS_DIR, "lstm").dir);
    });
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), "portrait-lstm-state-"));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it("layout - a profile stored with the float32 state (before halves) loads and answers the same; its next step stores halves; compressed profiles read with compression off, which writes them plain", async () => {
      // A state as the engine stored it before: float32 (h, c) bytes, written uncompressed with the profiles db's msgpack options.
      const h = rt.initialState();
      for (let i = 0; i < 6; i++) rt.step([h], [ev(i)], [i > 0 ? ev(i - 1).timestampMs : 0]);
      const old = newUserState();
      old.lstm = new Uint8Array(h.buffer.slice(0));
      old.lstmV = rt.version;
      const env = open({ path: join(dir, "lmdb"), compression: false });
      const db = env.openDB<UserState, string>({
        name: "profiles", encoding: "msgpack", sharedStructuresKey: Symbol.for("structures"),
        useRecords: (o: object) => Object.getPrototypeOf(o) !== null, mapsAsObjects: true,
      } as DatabaseOptions & { name: string });
      await db.put("u1", old);
      await env.close();

      const store = new ProfileStore({ dataDir: dir, mapSizeBytes: 2 ** 26, compressProfiles: true });
      let stepped: number[] = [];
      try {
        const loaded = store.getState("u1")!;
        expect(loaded.lstm!.byteLength).toBe(8 * rt.hidden);
        const state = storedLstmState(loaded, rt);
        expect(Array.from(state)).toEqual(Array.from(h));
        expect(rt.predict(state, 5)).toEqual(rt.predict(h, 5));

        const a = actorOf(loaded);
        stepLstm(rt, oneStep(a, ev(6), ev(5).timestampMs));
        expect(a.state.lstm!.byteLength).toBe(4 * rt.hidden);
        await store.commitBatch(0, 1, [["u1", a.state]]);
        const again = store.getState("u1")!;
        expect(Array.from(storedLstmState(again, rt))).toEqual(Array.from(a.lstm!));
        stepped = Array.from(a.lstm!);
      } finally {
        await store.close();
      }
      // Stored compressed (LZ4 marker byte 254): a profile this size is above the threshold.
      const firstByte = async () => {
        const raw = open({ path: join(dir, "lmdb"), compression: false, readOnly: true });
        const b = raw.openDB({ name: "profiles", encoding: "binary" }).getBinary("u1")![0];
        await raw.close();
        return b;
      };
      expect(await firstByte()).toBe(254);
      // Compression off (the default): the compressed profile reads the same, and its next write is stored uncompressed.
      const plain = new ProfileStore({ dataDir: dir, mapSizeBytes: 2 ** 26 });
      try {
        const read = plain.getState("u1")!;
        expect(Array.from(storedLstmState(read, rt))).toEqual(stepped);
        read.n = 7;
        await plain.commitBatch(0, 2, [["u1", read]]);
        expect(plain.getState("u1")!.n).toBe(7);
      } finally {
        await plain.close();
      }
      expect(await firstByte()).not.toBe(254);
    });

    it("determinism - a user stepped in memory and one reloaded from LMDB between batches reach the same state", async () => {
      const store = new ProfileStore({ dataDir: dir, mapSizeBytes: 2 ** 26 });
      try {
        const live = actorOf(newUserState());
        for (let i = 0; i < 4; i++) stepLstm(rt, oneStep(live, ev(i), i > 0 ? ev(i - 1).timestampMs : 0));
        await store.commitBatch(0, 1, [["u1", live.state]]);
        const reloaded = actorOf(store.getState("u1")!);
        for (let i = 4; i < 12; i++) {
          stepLstm(rt, oneStep(live, ev(i), ev(i - 1).timestampMs));
          stepLstm(rt, oneStep(reloaded, ev(i), ev(i - 1).timestampMs));
        }
        expect(Array.from(reloaded.lstm!)).toEqual(Array.from(live.lstm!));
        expect(Array.from(reloaded.state.lstm!)).toEqual(Array.from(live.state.lstm!));
      } finally {
        await store.close();
      }
    });

    it("determinism - a batch's LSTM step in slices, with a call between them (the shard answers lookups there), stores the states of one product", () => {
      const batch = (users: Actor[]): LstmSteps => {
        const s = new LstmSteps();
        // Users with one to three events each: three waves of different widths.
        for (let k = 0; k < 3; k++) users.forEach((a, u) => { if (u % 3 >= k) s.push(a, ev(u + k), k > 0 ? ev(u + k - 1).timestampMs : 0); });
        return s;
      };
      const whole = Array.from({ length: 150 }, () => actorOf(newUserState()));
      const sliced = Array.from({ length: 150 }, () => actorOf(newUserState()));
      stepLstm(rt, batch(whole));
      let calls = 0;
      stepLstm(rt, batch(sliced), () => calls++, 16);
      expect(calls).toBeGreaterThan(3);
      for (let u = 0; u < 150; u++) expect(Array.from(sliced[u]!.state.lstm!)).toEqual(Array.from(whole[u]!.state.lstm!));
    });
  });
});
