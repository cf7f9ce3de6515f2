/**
 * The live LSTM cell: steps users' (h, c) one event at a time, batched over
 * the users of an event batch, in plain JS on Float32Arrays (no TF.js in the
 * shard threads). It computes exactly the trained layer's cell (see
 * lstm-model.ts; tested against TF.js to 1e-5).
 *
 * Speed: the step input is a concatenation of embeddings, so x·K is the sum of
 * one precomputed row per field (P_f = emb_f · K_f, built at load); what is
 * left per step is h·R (H x 4H) and the gates. The pre-activations
 * z = P_type + ... + P_gap + h·R are summed in doubles, in that order, by
 * WebAssembly SIMD (lstm-kernel-wasm.ts, two gate columns per f64x2 lane
 * pair, 16 columns a block; ~4x the JS loop on h·R, bench/lstm-step.ts) where
 * the platform has it, else JS (four gate columns at a time against the
 * transposed R, in doubles). The gates (sigmoid = 1 / (1 + exp(-x)), tanh)
 * and the cell update are JS over Math.exp and Math.tanh, or the same
 * operations in the WebAssembly module over its ports of V8's Math.exp and
 * Math.tanh (fdlibm's exp, expm1, tanh: the same bits, checked against
 * Math at load, `LstmKernel`). Every kernel gives the same bits.
 *
 * A state is one Float32Array of 2H: h then c. A zero state is the start.
 * The engine steps with `stepHalf`: each step's state rounded to half
 * precision, which is what a profile stores (half-float.ts).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../errors.js";
import { readManifest, type ModelManifest } from "./artifacts.js";
import { roundToHalf } from "./half-float.js";
import { LSTM_FIELDS, Vocab, encodeLstmEvent, type LstmEvent } from "./lstm-features.js";
import { LSTM_KERNEL_WASM } from "./lstm-kernel-wasm.js";
import { LSTM_LAYER, readStoredWeights, type LstmArchitecture, type StoredWeights } from "./lstm-spec.js";

export interface LstmPrediction {
  /** P(a purchase within the next 10 minutes of event time). */
  purchasePropensity: number;
  /** The most likely next categories with their probabilities. */
  nextCategories: Array<{ key: string; score: number }>;
}

function weight(w: StoredWeights, name: string, shape: number[]): Float32Array {
  const t = w[name];
  if (t === undefined) throw new ConfigError(`LSTM model lacks weight ${name}`);
  if (t.shape.join() !== shape.join()) throw new ConfigError(`LSTM weight ${name} has shape [${t.shape}], expected [${shape}]`);
  return t.values;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/**
 * Which code steps the cell: "wasm" (the pre-activations in WebAssembly SIMD,
 * the gates and the cell update in the same module), "wasm-preact" (the
 * pre-activations in WebAssembly, the gates in JS) or "js"; all give the
 * same bits (test/lstm-kernel.test.ts). `bestLstmKernel()` is the default:
 * "wasm" where the platform compiles the module and its exp and tanh return
 * Math.exp's and Math.tanh's bits on a probe of inputs, "wasm-preact" where
 * they do not (an engine whose Math.exp is not fdlibm's), else "js".
 */
export type LstmKernel = "wasm" | "wasm-preact" | "js";

/** The few members of the WebAssembly JS API used here (the project's lib settings do not declare that namespace). */
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}

const wasmApi = (): WasmApi | undefined => (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

let kernelModule: object | null | undefined;
let gatesAgree: boolean | undefined;

/** The compiled kernel module, or null where WebAssembly SIMD is unavailable (compiled once per thread). */
function lstmKernelModule(): object | null {
  if (kernelModule === undefined) {
    const api = wasmApi();
    const bytes = Buffer.from(LSTM_KERNEL_WASM, "base64");
    kernelModule = api !== undefined && api.validate(bytes) ? new api.Module(bytes) : null;
  }
  return kernelModule;
}

/**
 * Inputs on which the module's exp and tanh must return Math's bits before
 * its gates are used: every branch of fdlibm's exp, expm1 and tanh (tiny,
 * the reductions around ln2 / 2 and 1.5 ln2, 1, 22, 56 ln2, the overflow and
 * underflow thresholds, subnormals, ±0, ±Infinity, NaN) and a dense grid of
 * the range pre-activations and cells live in.
 */
function gateProbe(): number[] {
  const xs = [0, -0, NaN, Infinity, -Infinity, 1, 0.5, 5e-324, 2.2250738585072014e-308, 1e-300, 2 ** -54, 2 ** -28, 1e-9, 0.3465735902799726, 0.35, 1.0397207708399179, 1.04, 19.4, 22, 38.82, 100, 708.4, 709.78, 709.8, 745.13, 745.2, 1e300, 1.7976931348623157e308];
  for (let i = 0; i < 2034; i++) xs.push(-20 + i * 0.02 + i * 1e-7, 10 ** (i / 100 - 12));
  return [...xs, ...xs.map((x) => -x)]; // 8192 inputs
}

/**
 * Whether the module's ports of exp and tanh (scalar, and its two-lane exp)
 * agree with Math.exp and Math.tanh bit for bit on `gateProbe()` (checked
 * once per thread: a few ms of CPU with the module's compilation).
 */
export function lstmWasmGatesAgree(): boolean {
  if (gatesAgree === undefined) {
    const module = lstmKernelModule();
    gatesAgree = false;
    if (module !== null) {
      const { exp, tanh, expv, memory } = new (wasmApi()!).Instance(module, {}).exports as {
        exp: (x: number) => number;
        tanh: (x: number) => number;
        expv: (p: number, n: number) => void;
        memory: WasmMemory;
      };
      const xs = gateProbe();
      gatesAgree = xs.every((x) => Object.is(exp(x), Math.exp(x)) && Object.is(tanh(x), Math.tanh(x)));
      // expv(p, n): the n doubles at p replaced by their exp, two lanes at a time (the module's first page holds 8192).
      const lanes = new Float64Array(memory.buffer, 0, 4096);
      for (let i = 0; gatesAgree && i + 4096 <= xs.length; i += 4096) {
        lanes.set(xs.slice(i, i + 4096));
        expv(0, 4096);
        for (let j = 0; j < 4096; j++) if (!Object.is(lanes[j], Math.exp(xs[i + j]!))) gatesAgree = false;
      }
    }
  }
  return gatesAgree;
}

export function bestLstmKernel(): LstmKernel {
  return lstmKernelModule() === null ? "js" : lstmWasmGatesAgree() ? "wasm" : "wasm-preact";
}

/** The kernel's exported functions (byte addresses in its memory; see scripts/gen-lstm-kernel.mjs): z = p0 + ... + p4 + h·r; */
type Preact = (r: number, h: number, z: number, H: number, p0: number, p1: number, p2: number, p3: number, p4: number) => void;
/** and the whole step of the state s (f32 [2H], h then c) in place: h from s, preact, the gates, s. */
type Step = (r: number, h: number, z: number, H: number, p0: number, p1: number, p2: number, p3: number, p4: number, s: number) => void;

/** The WebAssembly kernel's instance and where its operands live in its memory. */
interface WasmKernel {
  preact: Preact;
  step: Step;
  /** Whether the gates run in the module ("wasm") or in JS ("wasm-preact"). */
  gates: boolean;
  /** Addresses: r (f64 [H][4H]), h (f64 [H]), z (f64 [4H]), s (f32 [2H]), each field's projection table (f32 [vocab][4H]). */
  r: number;
  h: number;
  z: number;
  s: number;
  proj: number[];
}

/** Rows of projection tables built between two yields of `projections`. */
const PROJECTION_ROWS_PER_SLICE = 512;

/** The files of models/lstm/<version>/: manifest.json, vocab.json, model.json + weights.bin. */
function readLstmFiles(dir: string): { manifest: ModelManifest; vocab: { items: string[]; categories: string[] }; w: StoredWeights } {
  const manifest = readManifest(dir);
  if (manifest.name !== "lstm") throw new ConfigError(`${dir} holds a "${manifest.name}" model, not an LSTM`);
  let vocab: { items: string[]; categories: string[] };
  try {
    vocab = JSON.parse(readFileSync(join(dir, "vocab.json"), "utf8"));
  } catch (err) {
    throw new ConfigError(`cannot read LSTM vocabulary in ${dir}: ${(err as Error).message}`);
  }
  return { manifest, vocab, w: readStoredWeights(dir) };
}

/**
 * Builds the per-field projection tables P_f = emb_f · K_f (bias folded into
 * the type field), yielding every PROJECTION_ROWS_PER_SLICE rows so that a
 * caller can give the event loop back; returns the tables.
 */
function* projections(manifest: ModelManifest, w: StoredWeights): Generator<void, Float32Array[]> {
  const a = manifest.architecture as unknown as LstmArchitecture;
  const G = 4 * a.hidden;
  let E = 0;
  for (const f of LSTM_FIELDS) E += a.embDims[f];
  const kernel = weight(w, `${LSTM_LAYER.lstm}/kernel`, [E, G]);
  const bias = weight(w, `${LSTM_LAYER.lstm}/bias`, [G]);
  const out: Float32Array[] = [];
  let row = 0;
  let done = 0;
  for (let fi = 0; fi < LSTM_FIELDS.length; fi++) {
    const f = LSTM_FIELDS[fi]!;
    const V = a.vocab[f];
    const d = a.embDims[f];
    const emb = weight(w, `${LSTM_LAYER.emb(f)}/embeddings`, [V, d]);
    const p = new Float32Array(V * G);
    const acc = new Float64Array(G);
    for (let v = 0; v < V; v++) {
      if (fi === 0) for (let j = 0; j < G; j++) acc[j] = bias[j]!;
      else acc.fill(0);
      for (let k = 0; k < d; k++) {
        const e = emb[v * d + k]!;
        const kr = (row + k) * G;
        for (let j = 0; j < G; j++) acc[j]! += e * kernel[kr + j]!;
      }
      p.set(acc, v * G);
      if (++done % PROJECTION_ROWS_PER_SLICE === 0) yield;
    }
    row += d;
    out.push(p);
  }
  return out;
}

export class LstmRuntime {
  readonly version: string;
  readonly hidden: number;
  readonly manifest: ModelManifest;
  readonly kernel: LstmKernel;
  readonly items: Vocab;
  readonly categories: Vocab;
  /** Per field: the projection table [vocab, 4H] (bias folded into the type field). */
  readonly #proj: Float32Array[];
  /** The JS kernel's recurrent weights transposed, [4H, H], in doubles: each gate column's weights are contiguous (empty with "wasm"). */
  readonly #recT: Float64Array;
  readonly #wasm: WasmKernel | undefined;
  readonly #catW: Float32Array; // [H, Vc]
  readonly #catB: Float32Array;
  readonly #buyW: Float32Array; // [H]
  readonly #buyB: number;
  readonly #itemW: Float32Array; // [H, Vi]
  readonly #itemB: Float32Array;
  readonly #z: Float64Array;
  readonly #h: Float64Array;
  /** "wasm": the state being stepped, in the module's memory (empty otherwise). */
  readonly #s: Float32Array;
  readonly #ids = new Int32Array(5);

  private constructor(manifest: ModelManifest, vocab: { items: string[]; categories: string[] }, w: StoredWeights, proj: Float32Array[], kernel: LstmKernel) {
    const a = manifest.architecture as unknown as LstmArchitecture;
    const H = a.hidden;
    const G = 4 * H;
    this.manifest = manifest;
    this.version = manifest.version;
    this.hidden = H;
    this.items = new Vocab(vocab.items);
    this.categories = new Vocab(vocab.categories);
    if (this.items.size !== a.vocab.item || this.categories.size !== a.vocab.category) {
      throw new ConfigError(`LSTM ${manifest.version}: vocab.json does not match the architecture's vocabulary sizes`);
    }
    if (H % 4 !== 0) throw new ConfigError(`LSTM hidden size must be a multiple of 4, got ${H}`);
    const rec = weight(w, `${LSTM_LAYER.lstm}/recurrent_kernel`, [H, G]);
    this.kernel = kernel;
    if (kernel !== "js") {
      const module = lstmKernelModule();
      if (module === null) throw new ConfigError("the LSTM's WebAssembly kernel is not available on this platform");
      if (kernel === "wasm" && !lstmWasmGatesAgree()) throw new ConfigError("the LSTM's WebAssembly gates do not match Math.exp / Math.tanh on this platform");
      const exports = new (wasmApi()!).Instance(module, {}).exports as { memory: WasmMemory; preact: Preact; step: Step };
      // Layout: r, h, z, s, then the projection tables (moved here: #proj views them; H % 4 == 0 makes 4H a multiple of the 16-column block).
      const r = 0, h = r + 8 * H * G, z = h + 8 * H, s = z + 8 * G;
      const at: number[] = [];
      let end = s + 8 * H;
      for (const p of proj) {
        at.push(end);
        end += p.byteLength;
      }
      const mem = exports.memory;
      mem.grow(Math.max(0, Math.ceil(end / 65536) - mem.buffer.byteLength / 65536));
      const buf = mem.buffer;
      new Float64Array(buf, r, H * G).set(rec);
      this.#proj = proj.map((p, f) => {
        const v = new Float32Array(buf, at[f]!, p.length);
        v.set(p);
        return v;
      });
      this.#h = new Float64Array(buf, h, H);
      this.#z = new Float64Array(buf, z, G);
      this.#s = new Float32Array(buf, s, 2 * H);
      this.#recT = new Float64Array(0);
      this.#wasm = { preact: exports.preact, step: exports.step, gates: kernel === "wasm", r, h, z, s, proj: at };
    } else {
      this.#recT = new Float64Array(G * H);
      for (let k = 0; k < H; k++) for (let j = 0; j < G; j++) this.#recT[j * H + k] = rec[k * G + j]!;
      this.#z = new Float64Array(G);
      this.#h = new Float64Array(H);
      this.#s = new Float32Array(0);
      this.#proj = proj;
      this.#wasm = undefined;
    }
    this.#catW = weight(w, `${LSTM_LAYER.category}/kernel`, [H, a.vocab.category]);
    this.#catB = weight(w, `${LSTM_LAYER.category}/bias`, [a.vocab.category]);
    this.#buyW = weight(w, `${LSTM_LAYER.buy}/kernel`, [H, 1]);
    this.#buyB = weight(w, `${LSTM_LAYER.buy}/bias`, [1])[0]!;
    this.#itemW = weight(w, `${LSTM_LAYER.item}/kernel`, [H, a.vocab.item]);
    this.#itemB = weight(w, `${LSTM_LAYER.item}/bias`, [a.vocab.item]);
  }

  /** Loads models/lstm/<version>/ (manifest.json, vocab.json, model.json, weights.bin). */
  static load(dir: string, kernel: LstmKernel = bestLstmKernel()): LstmRuntime {
    const { manifest, vocab, w } = readLstmFiles(dir);
    const build = projections(manifest, w);
    let r = build.next();
    while (!r.done) r = build.next();
    return new LstmRuntime(manifest, vocab, w, r.value, kernel);
  }

  /**
   * `load`, giving the event loop back every few thousand projection rows
   * (`pause`, default setImmediate), so that a shard loading a new version
   * beside the running one keeps answering queries and applying batches
   * meanwhile (a hot swap; building the tables takes ~0.5 s here).
   */
  static async loadAsync(dir: string, pause: () => Promise<void> = () => new Promise((r) => setImmediate(r)), kernel: LstmKernel = bestLstmKernel()): Promise<LstmRuntime> {
    const { manifest, vocab, w } = readLstmFiles(dir);
    await pause();
    const build = projections(manifest, w);
    let r = build.next();
    while (!r.done) {
      await pause();
      r = build.next();
    }
    return new LstmRuntime(manifest, vocab, w, r.value, kernel);
  }

  initialState(): Float32Array {
    return new Float32Array(2 * this.hidden);
  }

  /**
   * Steps states[i] in place by events[i] (one wave: each state at most once).
   * prevMs[i] is the time of that user's previous event, 0 for none.
   */
  step(states: Float32Array[], events: LstmEvent[], prevMs: number[]): void {
    const n = states.length;
    const H = this.hidden;
    const G = 4 * H;
    const z = this.#z;
    const h = this.#h;
    const ids = this.#ids;
    const rt = this.#recT;
    const p0 = this.#proj[0]!, p1 = this.#proj[1]!, p2 = this.#proj[2]!, p3 = this.#proj[3]!, p4 = this.#proj[4]!;
    const wasm = this.#wasm;
    for (let r = 0; r < n; r++) {
      encodeLstmEvent(events[r]!, prevMs[r]!, this.items, this.categories, ids, 0);
      const o0 = ids[0]! * G, o1 = ids[1]! * G, o2 = ids[2]! * G, o3 = ids[3]! * G, o4 = ids[4]! * G;
      const s = states[r]!;
      if (wasm !== undefined && wasm.gates) {
        // The whole step in the module, on a copy of the state in its memory.
        const pa = wasm.proj;
        this.#s.set(s);
        wasm.step(wasm.r, wasm.h, wasm.z, H, pa[0]! + 4 * o0, pa[1]! + 4 * o1, pa[2]! + 4 * o2, pa[3]! + 4 * o3, pa[4]! + 4 * o4, wasm.s);
        s.set(this.#s);
        continue;
      }
      for (let k = 0; k < H; k++) h[k] = s[k]!;
      // z = x·K + b (one projected row per field) + h·R.
      if (wasm !== undefined) {
        const pa = wasm.proj;
        wasm.preact(wasm.r, wasm.h, wasm.z, H, pa[0]! + 4 * o0, pa[1]! + 4 * o1, pa[2]! + 4 * o2, pa[3]! + 4 * o3, pa[4]! + 4 * o4);
      } else {
        // Four gate columns at a time.
        for (let j = 0; j < G; j += 4) {
          let a0 = p0[o0 + j]! + p1[o1 + j]! + p2[o2 + j]! + p3[o3 + j]! + p4[o4 + j]!;
          let a1 = p0[o0 + j + 1]! + p1[o1 + j + 1]! + p2[o2 + j + 1]! + p3[o3 + j + 1]! + p4[o4 + j + 1]!;
          let a2 = p0[o0 + j + 2]! + p1[o1 + j + 2]! + p2[o2 + j + 2]! + p3[o3 + j + 2]! + p4[o4 + j + 2]!;
          let a3 = p0[o0 + j + 3]! + p1[o1 + j + 3]! + p2[o2 + j + 3]! + p3[o3 + j + 3]! + p4[o4 + j + 3]!;
          const q0 = j * H, q1 = q0 + H, q2 = q1 + H, q3 = q2 + H;
          for (let k = 0; k < H; k++) {
            const hk = h[k]!;
            a0 += hk * rt[q0 + k]!;
            a1 += hk * rt[q1 + k]!;
            a2 += hk * rt[q2 + k]!;
            a3 += hk * rt[q3 + k]!;
          }
          z[j] = a0;
          z[j + 1] = a1;
          z[j + 2] = a2;
          z[j + 3] = a3;
        }
      }
      for (let k = 0; k < H; k++) {
        const i = sigmoid(z[k]!);
        const f = sigmoid(z[H + k]!);
        const g = Math.tanh(z[2 * H + k]!);
        const o = sigmoid(z[3 * H + k]!);
        const c = f * s[H + k]! + i * g;
        s[H + k] = c;
        s[k] = o * Math.tanh(c);
      }
    }
  }

  /**
   * `step`, then each state rounded to half precision in place (the values a
   * profile stores: UserState.lstm), its halves written into out[i] (4H
   * bytes) when given. The engine steps with this, so a state stepped in
   * memory and one reloaded from LMDB are the same.
   */
  stepHalf(states: Float32Array[], events: LstmEvent[], prevMs: number[], out?: Uint8Array[]): void {
    this.step(states, events, prevMs);
    for (let i = 0; i < states.length; i++) roundToHalf(states[i]!, out?.[i]);
  }

  /** The purchase head alone (what `predict` returns as purchasePropensity), without the category softmax. */
  purchasePropensity(state: Float32Array): number {
    let buy = this.#buyB;
    for (let j = 0; j < this.hidden; j++) buy += state[j]! * this.#buyW[j]!;
    return sigmoid(buy);
  }

  /** Purchase propensity and the top `k` next categories for a state. */
  predict(state: Float32Array, k = 3): LstmPrediction {
    const H = this.hidden;
    let buy = this.#buyB;
    for (let j = 0; j < H; j++) buy += state[j]! * this.#buyW[j]!;
    const logits = this.#headLogits(state, this.#catW, this.#catB);
    let max = -Infinity;
    for (const v of logits) if (v > max) max = v;
    let sum = 0;
    for (let v = 0; v < logits.length; v++) sum += Math.exp(logits[v]! - max);
    const top: Array<{ key: string; score: number }> = [];
    // Indices 0 (none) and 1 (out of vocabulary) are not categories one can name.
    // One pass keeping the best k (sorting all categories cost ~0.5 ms per query).
    const best: number[] = [];
    for (let v = 2; v < logits.length; v++) {
      if (best.length === k && logits[v]! <= logits[best[k - 1]!]!) continue;
      let i = best.length < k ? best.length : k - 1;
      while (i > 0 && logits[best[i - 1]!]! < logits[v]!) {
        if (i < k) best[i] = best[i - 1]!;
        i--;
      }
      best[i] = v;
      if (best.length > k) best.length = k;
    }
    for (const v of best) top.push({ key: this.categories.ids[v]!, score: Math.exp(logits[v]! - max) / sum });
    return { purchasePropensity: sigmoid(buy), nextCategories: top };
  }

  /** Next-item logits over `items` for a state, written into out (length items.size). */
  itemLogits(state: Float32Array, out: Float32Array = new Float32Array(this.items.size)): Float32Array {
    return this.#headLogits(state, this.#itemW, this.#itemB, out);
  }

  /** Next-category logits over `categories` for a state. */
  categoryLogits(state: Float32Array, out: Float32Array = new Float32Array(this.categories.size)): Float32Array {
    return this.#headLogits(state, this.#catW, this.#catB, out);
  }

  /** One category's logit (index into `categories`): the softmax input, one H-long dot product instead of the whole head. */
  categoryLogit(state: Float32Array, v: number): number {
    const W = this.#catW;
    const V = this.#catB.length;
    let z = this.#catB[v]!;
    for (let k = 0; k < this.hidden; k++) z += state[k]! * W[k * V + v]!;
    return z;
  }

  #headLogits(state: Float32Array, W: Float32Array, b: Float32Array, out: Float32Array = new Float32Array(b.length)): Float32Array {
    const V = b.length;
    out.set(b);
    for (let k = 0; k < this.hidden; k++) {
      const hk = state[k]!;
      if (hk === 0) continue;
      const o = k * V;
      for (let v = 0; v < V; v++) out[v]! += hk * W[o + v]!;
    }
    return out;
  }
}
