import { execFileSync } from "node:child_process";
import { beforeAll, describe, expect, it } from "vitest";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import type { LstmEvent } from "../src/models/lstm-features.js";
import { LSTM_KERNEL_WASM } from "../src/models/lstm-kernel-wasm.js";
import { LstmRuntime, bestLstmKernel, lstmWasmGatesAgree } from "../src/models/lstm-runtime.js";
import { seededRandom } from "../src/models/seeded-random.js";

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe("lstm kernel", () => {
  let js: LstmRuntime;
  let wasm: LstmRuntime;
  let preact: LstmRuntime;
  beforeAll(() => {
    const dir = resolveModel(BUNDLED_MODELS_DIR, "lstm").dir;
    js = LstmRuntime.load(dir, "js");
    wasm = LstmRuntime.load(dir);
    preact = LstmRuntime.load(dir, "wasm-preact");
  });

  it("wasm - this platform runs the WebAssembly SIMD kernel with its gates (Node 20 has it), and it is the default", () => {
    expect(lstmWasmGatesAgree()).toBe(true);
    expect(bestLstmKernel()).toBe("wasm");
    expect([js.kernel, wasm.kernel, preact.kernel]).toEqual(["js", "wasm", "wasm-preact"]);
  });

  it("exp and tanh - the module's ports (scalar exp and tanh, two-lane exp) return Math.exp's and Math.tanh's bits on edge, random-bit and LSTM-range inputs", () => {
    const { exp, tanh, expv, memory } = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(LSTM_KERNEL_WASM, "base64")), {}).exports as unknown as {
      exp: (x: number) => number;
      tanh: (x: number) => number;
      expv: (p: number, n: number) => void;
      memory: { buffer: ArrayBuffer };
    };
    const rnd = seededRandom(15);
    const d = new Float64Array(1);
    const w = new Uint32Array(d.buffer);
    const xs: number[] = [0, -0, NaN, Infinity, -Infinity, 1, -1, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308];
    // Around each branch point of exp, expm1 and tanh (their high words) and the overflow / underflow thresholds, ulp by ulp.
    for (const x of [2 ** -54, 2 ** -28, 0.5 * Math.LN2, 1.5 * Math.LN2, 1, 22, 56 * Math.LN2, 709.782712893384, 745.1332191019411, 2.2250738585072014e-308]) {
      for (let u = -64; u <= 64; u++) {
        d[0] = x;
        w[0] = (w[0]! + u) >>> 0;
        xs.push(d[0]!, -d[0]!);
      }
    }
    for (const hi of [0x3c900000, 0x3e300000, 0x3fd62e42, 0x3ff0a2b2, 0x3ff00000, 0x40360000, 0x4043687a, 0x40862e42, 0x7fefffff, 0x000fffff]) {
      for (let i = 0; i < 500; i++) {
        w[1] = hi + Math.floor(rnd() * 3) - 1;
        w[0] = Math.floor(rnd() * 2 ** 32);
        xs.push(d[0]!, -d[0]!);
      }
    }
    for (let i = 0; i < 100_000; i++) {
      w[0] = Math.floor(rnd() * 2 ** 32); // any double: random bits
      w[1] = Math.floor(rnd() * 2 ** 32);
      xs.push(d[0]!, (rnd() - 0.5) * 60, (rnd() - 0.5) * 10 ** (12 * rnd() - 9));
    }
    const differ = xs.filter((x) => !Object.is(exp(x), Math.exp(x)) || !Object.is(tanh(x), Math.tanh(x)));
    // The two-lane exp, on pairs of those inputs (in range or not, each lane its own branch): expv(p, n) replaces n doubles at p.
    const mem = new Float64Array(memory.buffer, 0, 4096);
    for (let i = 0; i + 4096 <= xs.length; i += 4096) {
      mem.set(xs.slice(i, i + 4096));
      expv(0, 4096);
      for (let j = 0; j < 4096; j++) if (!Object.is(mem[j], Math.exp(xs[i + j]!))) differ.push(xs[i + j]!);
    }
    expect(xs.length).toBeGreaterThan(300_000);
    expect(differ).toEqual([]);
  });

  it("generated - the committed module is what scripts/gen-lstm-kernel.mjs makes", () => {
    // Exits non-zero (and throws here) when the bytes differ.
    execFileSync(process.execPath, [new URL("../scripts/gen-lstm-kernel.mjs", import.meta.url).pathname, "--check"], { stdio: "pipe" });
  });

  it("same bits - the wasm, wasm-preact and js kernels step random states by random events to identical states and stored halves", () => {
    const rnd = seededRandom(14);
    const pick = (ids: readonly string[]) => {
      const u = rnd();
      // Empty ("none"), out of vocabulary, or any id of the vocabulary.
      return u < 0.1 ? "" : u < 0.2 ? `oov-${u}` : ids[2 + Math.floor(rnd() * (ids.length - 2))]!;
    };
    const event = (t: number): LstmEvent => ({
      type: Math.floor(rnd() * 14) - 1,
      timestampMs: t,
      itemId: pick(js.items.ids),
      categoryId: pick(js.categories.ids),
      price: rnd() < 0.3 ? 0 : rnd() * 2000,
    });
    const W = 64;
    let steps = 0;
    let differ = 0;
    // Single steps from random states (zeros, tiny values, up to ±10^(decades - 3)): `step`, no rounding.
    const randomWaves = (waves: number, decades: number) => {
      for (let wave = 0; wave < waves; wave++) {
        const a = Array.from({ length: W }, () => js.initialState().map(() => (rnd() < 0.05 ? 0 : (rnd() - 0.5) * 10 ** (decades * rnd() - 3))));
        const b = a.map((s) => s.slice());
        const p = a.map((s) => s.slice());
        const evs = Array.from({ length: W }, () => event(1e12 + rnd() * 1e9));
        const prev = evs.map((e) => (rnd() < 0.2 ? 0 : e.timestampMs - rnd() * 1e8));
        js.step(a, evs, prev);
        wasm.step(b, evs, prev);
        preact.step(p, evs, prev);
        for (let i = 0; i < W; i++) if (!bits(b[i]!).equals(bits(a[i]!)) || !bits(p[i]!).equals(bits(a[i]!))) differ++;
        steps += W;
      }
    };
    randomWaves(100, 4);
    // Wider states (cells up to ±500: tanh's saturated branch, expm1's large reductions).
    randomWaves(50, 6);
    // Long streams from zero, 300 events per user: as the engine steps them (`stepHalf`, the stored bytes compared too)
    // and unrounded (`step`, each state feeding the next in full float precision).
    for (const half of [true, false]) {
      const a = Array.from({ length: W }, () => js.initialState());
      const b = Array.from({ length: W }, () => wasm.initialState());
      const p = Array.from({ length: W }, () => preact.initialState());
      const outA = a.map((s) => new Uint8Array(2 * s.length));
      const outB = b.map((s) => new Uint8Array(2 * s.length));
      const outP = p.map((s) => new Uint8Array(2 * s.length));
      const last = new Array<number>(W).fill(0);
      for (let t = 0; t < 300; t++) {
        const evs = last.map((q) => event((q || 1e12) + rnd() * 1e6));
        if (half) {
          js.stepHalf(a, evs, last, outA);
          wasm.stepHalf(b, evs, last, outB);
          preact.stepHalf(p, evs, last, outP);
        } else {
          js.step(a, evs, last);
          wasm.step(b, evs, last);
          preact.step(p, evs, last);
        }
        for (let i = 0; i < W; i++) {
          if (!bits(b[i]!).equals(bits(a[i]!)) || !bits(p[i]!).equals(bits(a[i]!))) differ++;
          if (half && (!Buffer.from(outB[i]!).equals(Buffer.from(outA[i]!)) || !Buffer.from(outP[i]!).equals(Buffer.from(outA[i]!)))) differ++;
          last[i] = evs[i]!.timestampMs;
        }
        steps += W;
      }
      // The streams moved away from zero (a comparison of zeros would prove nothing).
      expect(a.every((s) => s.some((v) => v !== 0))).toBe(true);
    }
    expect(steps).toBe(6_400 + 3_200 + 38_400);
    expect(differ).toBe(0);
  });
});
