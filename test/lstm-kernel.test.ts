import { execFileSync } from "node:child_process";
import { beforeAll, describe, expect, it } from "vitest";
import { BUNDLED_MODELS_DIR, resolveModel } from "../src/models/artifacts.js";
import type { LstmEvent } from "../src/models/lstm-features.js";
import { LstmRuntime, bestLstmKernel } from "../src/models/lstm-runtime.js";
import { seededRandom } from "../src/models/seeded-random.js";

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe("lstm kernel", () => {
  let js: LstmRuntime;
  let wasm: LstmRuntime;
  beforeAll(() => {
    const dir = resolveModel(BUNDLED_MODELS_DIR, "lstm").dir;
    js = LstmRuntime.load(dir, "js");
    wasm = LstmRuntime.load(dir);
  });

  it("wasm - this platform runs the WebAssembly SIMD kernel (Node 20 has it), and it is the default", () => {
    expect(bestLstmKernel()).toBe("wasm");
    expect([js.kernel, wasm.kernel]).toEqual(["js", "wasm"]);
  });

  it("generated - the committed module is what scripts/gen-lstm-kernel.mjs makes", () => {
    // Exits non-zero (and throws here) when the bytes differ.
    execFileSync(process.execPath, [new URL("../scripts/gen-lstm-kernel.mjs", import.meta.url).pathname, "--check"], { stdio: "pipe" });
  });

  it("same bits - the wasm and js kernels step random states by random events to identical states and stored halves", () => {
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
    // Single steps from random states (wide ranges, zeros, tiny values): `step`, no rounding.
    for (let wave = 0; wave < 100; wave++) {
      const a = Array.from({ length: W }, () => js.initialState().map(() => (rnd() < 0.05 ? 0 : (rnd() - 0.5) * 10 ** (4 * rnd() - 3))));
      const b = a.map((s) => s.slice());
      const evs = Array.from({ length: W }, () => event(1e12 + rnd() * 1e9));
      const prev = evs.map((e) => (rnd() < 0.2 ? 0 : e.timestampMs - rnd() * 1e8));
      js.step(a, evs, prev);
      wasm.step(b, evs, prev);
      for (let i = 0; i < W; i++) if (!bits(b[i]!).equals(bits(a[i]!))) differ++;
      steps += W;
    }
    // Streams as the engine steps them: `stepHalf` from zero, 100 events per user, the stored bytes compared too.
    const a = Array.from({ length: W }, () => js.initialState());
    const b = Array.from({ length: W }, () => wasm.initialState());
    const outA = a.map((s) => new Uint8Array(2 * s.length));
    const outB = b.map((s) => new Uint8Array(2 * s.length));
    const last = new Array<number>(W).fill(0);
    for (let t = 0; t < 100; t++) {
      const evs = last.map((p) => event((p || 1e12) + rnd() * 1e6));
      js.stepHalf(a, evs, last, outA);
      wasm.stepHalf(b, evs, last, outB);
      for (let i = 0; i < W; i++) {
        if (!bits(b[i]!).equals(bits(a[i]!)) || !Buffer.from(outB[i]!).equals(Buffer.from(outA[i]!))) differ++;
        last[i] = evs[i]!.timestampMs;
      }
      steps += W;
    }
    // The streams moved away from zero (a comparison of zeros would prove nothing).
    expect(a.every((s) => s.some((v) => v !== 0))).toBe(true);
    expect(steps).toBe(12_800);
    expect(differ).toBe(0);
  });
});
