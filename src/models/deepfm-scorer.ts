/**
 * The DeepFM scorer: loads a DeepFM version directory (layout in
 * deepfm-weights.ts) on the best serving backend that works here.
 *
 * Backends, best first ("auto" tries them in this order):
 * 1. `tfjs-node-gpu`: TF.js on libtensorflow with CUDA, running deepfm-spec's
 *    forward. Used only when an NVIDIA GPU is present AND
 *    `@tensorflow/tfjs-node-gpu` loads (checked in that order: the package
 *    loads all of TF.js). GPU presence is decided by the driver's device node
 *    `/dev/nvidia0` (in a container it exists only when a GPU is passed
 *    through); tfjs-node does not list devices, and libtensorflow silently
 *    runs on its CPU kernels without a GPU, which would be slower than 2.
 * 2. `onnxruntime`: onnxruntime-node on the CPU running `model.onnx`. When the
 *    directory has no `model.onnx`, the graph is exported in memory from
 *    `weights.bin` at load (nothing is written: model directories may be
 *    read-only).
 * 3. `wasm`: TF.js on the wasm backend (`initTf("wasm")`) running
 *    deepfm-spec's forward.
 *
 * Forcing a backend that cannot load throws a ConfigError naming the reason.
 * With "auto", `skipped` says why each better backend was not used.
 *
 * Threads: onnxruntime runs `threads` intra-op threads (default 1: the
 * serving pool scales by workers, one scorer each). TF.js backends ignore it.
 * onnxruntime-node runs a batch synchronously on the calling thread (inside
 * the returned promise), so a server calls `score` from a worker thread.
 *
 * TF.js has one backend per thread: the TF.js backends fail with a
 * ConfigError when TF.js already runs on another backend in this thread.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import type * as Ort from "onnxruntime-node";
import { BadRequestError, ConfigError, ErrorCode, PortraitError } from "../errors.js";
import { deepFmForward, deepFmWeightShapes, type DeepFmArchitecture, type DeepFmWeights } from "./deepfm-spec.js";
import { DEEPFM_FILES, loadDeepFmWeights, readDeepFmArchitecture } from "./deepfm-weights.js";
import { exportDeepFmOnnx } from "./onnx/export-deepfm.js";
// TF.js is loaded only for the backends that run on it: a worker serving onnxruntime never pays for loading it.
import type { tf as Tf } from "./tf.js";

export const DEEPFM_BACKENDS = ["tfjs-node-gpu", "onnxruntime", "wasm"] as const;
export type DeepFmBackend = (typeof DEEPFM_BACKENDS)[number];

export interface DeepFmScorerOptions {
  /** Which backend: "auto" (default) takes the best that loads, in the order above; a name forces it. */
  backend?: "auto" | DeepFmBackend;
  /** onnxruntime intra-op threads, a positive integer; default 1. */
  threads?: number;
}

export interface DeepFmScorer {
  /** The backend in use, one of DEEPFM_BACKENDS. */
  readonly backend: string;
  /** The model version (manifest `version`). */
  readonly version: string;
  readonly arch: DeepFmArchitecture;
  /** Why better backends were skipped, one line each ("<backend>: <reason>"); empty when forced. */
  readonly skipped: string[];
  /**
   * Probabilities for `rows` rows: `ids` int32 row-major [rows, fields], each
   * in [0, vocab); `dense` float32 [rows, denseDim] (undefined when denseDim
   * is 0). A BadRequestError when the sizes or ids are out of range.
   */
  score(ids: Int32Array, dense: Float32Array | undefined, rows: number): Promise<Float32Array>;
  /** Waits for batches in flight, then frees the session or tensors; idempotent. `score` afterwards rejects. */
  close(): Promise<void>;
}

const require = createRequire(import.meta.url);

/** A backend that cannot run here; "auto" moves on to the next one, a forced backend reports it. */
class BackendUnavailable extends ConfigError {
  constructor(backend: DeepFmBackend, reason: string, cause?: unknown) {
    super(`${backend}: ${reason}`, { cause });
  }
}

/** The GPU test of backend 1 (see the file comment). */
export function nvidiaGpuPresent(): boolean {
  return existsSync("/dev/nvidia0");
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split("\n")[0]!.trim();
}

function compileOptions(opts: DeepFmScorerOptions): { backend: "auto" | DeepFmBackend; threads: number } {
  for (const k of Object.keys(opts)) {
    if (k !== "backend" && k !== "threads") throw new ConfigError(`options.${k} is not a DeepFM scorer option (backend, threads)`);
  }
  const backend = opts.backend ?? "auto";
  if (backend !== "auto" && !(DEEPFM_BACKENDS as readonly string[]).includes(backend)) {
    throw new ConfigError(`options.backend must be "auto" or one of ${DEEPFM_BACKENDS.join(", ")}, got ${JSON.stringify(backend)}`);
  }
  const threads = opts.threads ?? 1;
  if (!Number.isInteger(threads) || threads < 1) throw new ConfigError(`options.threads must be a positive integer, got ${threads}`);
  return { backend, threads };
}

/** Checks sizes and id ranges; throws BadRequestError. */
function checkInput(a: DeepFmArchitecture, ids: Int32Array, dense: Float32Array | undefined, rows: number): void {
  if (!Number.isInteger(rows) || rows < 0) throw new BadRequestError(`rows must be a non-negative integer, got ${rows}`);
  if (ids.length !== rows * a.fields) throw new BadRequestError(`ids has ${ids.length} values; ${rows} rows x ${a.fields} fields need ${rows * a.fields}`);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= a.vocab) throw new BadRequestError(`ids[${i}] = ${id} is outside [0, ${a.vocab})`);
  }
  const want = rows * a.denseDim;
  if (a.denseDim > 0 ? dense?.length !== want : dense !== undefined && dense.length !== 0) {
    throw new BadRequestError(`dense has ${dense?.length ?? "no"} values; ${rows} rows x ${a.denseDim} dense need ${want}`);
  }
}

interface Loaded {
  dir: string;
  arch: DeepFmArchitecture;
  version: string;
}

type Run = (ids: Int32Array, dense: Float32Array | undefined, rows: number) => Promise<Float32Array>;

function makeScorer(m: Loaded, backend: DeepFmBackend, skipped: string[], run: Run, free: () => Promise<void>): DeepFmScorer {
  let closed = false;
  const inFlight = new Set<Promise<Float32Array>>();
  return {
    backend,
    version: m.version,
    arch: m.arch,
    skipped,
    async score(ids, dense, rows) {
      if (closed) throw new PortraitError(ErrorCode.INTERNAL, `the DeepFM scorer ${m.version} is closed`);
      checkInput(m.arch, ids, dense, rows);
      if (rows === 0) return new Float32Array(0);
      const p = run(ids, m.arch.denseDim > 0 ? dense : undefined, rows);
      inFlight.add(p);
      try {
        return await p;
      } finally {
        inFlight.delete(p);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      // Batches already handed to the runtime finish before it is freed.
      await Promise.allSettled([...inFlight]);
      await free();
    },
  };
}

async function openOnnxruntime(m: Loaded, threads: number, skipped: string[]): Promise<DeepFmScorer> {
  let ort: typeof Ort;
  try {
    ort = await import("onnxruntime-node");
  } catch (err) {
    throw new BackendUnavailable("onnxruntime", `onnxruntime-node does not load: ${firstLine(err)}`, err);
  }
  const file = join(m.dir, DEEPFM_FILES.onnx);
  const model = existsSync(file) ? readFileSync(file) : exportDeepFmOnnx(m.arch, loadDeepFmWeights(m.dir).weights);
  let session: Ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(model, {
      executionProviders: ["cpu"],
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "all",
    });
  } catch (err) {
    throw new BackendUnavailable("onnxruntime", `cannot load ${existsSync(file) ? file : "the graph exported from weights.bin"}: ${firstLine(err)}`, err);
  }
  const wantInputs = m.arch.denseDim > 0 ? ["ids", "dense"] : ["ids"];
  if ([...session.inputNames].sort().join() !== [...wantInputs].sort().join() || !session.outputNames.includes("prob")) {
    await session.release();
    throw new BackendUnavailable("onnxruntime", `${file} has inputs [${session.inputNames}] and outputs [${session.outputNames}]; the manifest's architecture needs inputs [${wantInputs}] and output prob`);
  }
  const { fields: F, denseDim: D } = m.arch;
  return makeScorer(m, "onnxruntime", skipped, async (ids, dense, rows) => {
    const feeds: Record<string, Ort.Tensor> = { ids: new ort.Tensor("int32", ids, [rows, F]) };
    if (dense !== undefined) feeds.dense = new ort.Tensor("float32", dense, [rows, D]);
    const out = await session.run(feeds, ["prob"]);
    return out.prob!.data as Float32Array;
  }, () => session.release());
}

/** deepfm-spec's forward on whatever TF.js backend `tf` runs. */
function tfjsScorer(m: Loaded, tf: typeof Tf, backend: DeepFmBackend, skipped: string[]): DeepFmScorer {
  const { weights } = loadDeepFmWeights(m.dir);
  const w: DeepFmWeights = {};
  for (const [name, shape] of deepFmWeightShapes(m.arch)) w[name] = tf.tensor(weights[name]!, shape, "float32");
  const { fields: F, denseDim: D } = m.arch;
  return makeScorer(m, backend, skipped, async (ids, dense, rows) => {
    const p = tf.tidy(() => deepFmForward(
      tf, m.arch, w, tf.tensor2d(ids, [rows, F], "int32"), dense === undefined ? undefined : tf.tensor2d(dense, [rows, D], "float32"),
    ));
    try {
      return (await p.data()) as Float32Array;
    } finally {
      p.dispose();
    }
  }, async () => {
    for (const t of Object.values(w)) t.dispose();
  });
}

async function openTfjsNodeGpu(m: Loaded, skipped: string[]): Promise<DeepFmScorer> {
  // The GPU first: loading the package loads all of TF.js (seconds), wasted on a machine without a GPU.
  if (!nvidiaGpuPresent()) throw new BackendUnavailable("tfjs-node-gpu", "no NVIDIA GPU is present (/dev/nvidia0 does not exist)");
  try {
    require("@tensorflow/tfjs-node-gpu");
  } catch (err) {
    throw new BackendUnavailable("tfjs-node-gpu", `@tensorflow/tfjs-node-gpu does not load: ${firstLine(err)}`, err);
  }
  let rt;
  try {
    const { initTf } = await import("./tf.js");
    rt = await initTf("tensorflow");
  } catch (err) {
    throw new BackendUnavailable("tfjs-node-gpu", firstLine(err), err);
  }
  return tfjsScorer(m, rt.tf, "tfjs-node-gpu", skipped);
}

async function openWasm(m: Loaded, skipped: string[]): Promise<DeepFmScorer> {
  let rt;
  try {
    const { initTf } = await import("./tf.js");
    rt = await initTf("wasm");
  } catch (err) {
    throw new BackendUnavailable("wasm", firstLine(err), err);
  }
  return tfjsScorer(m, rt.tf, "wasm", skipped);
}

/**
 * Loads the DeepFM version in `dir` (a `models/deepfm/<version>` directory,
 * e.g. from `resolveModel(root, "deepfm").dir`). ConfigError when the
 * directory is incomplete, the options are invalid, or no wanted backend loads.
 */
export async function loadDeepFmScorer(dir: string, opts: DeepFmScorerOptions = {}): Promise<DeepFmScorer> {
  const { backend, threads } = compileOptions(opts);
  const { arch, version } = readDeepFmArchitecture(dir);
  const m: Loaded = { dir, arch, version };
  const order: DeepFmBackend[] = backend === "auto" ? [...DEEPFM_BACKENDS] : [backend];
  const skipped: string[] = [];
  for (const name of order) {
    try {
      if (name === "tfjs-node-gpu") return await openTfjsNodeGpu(m, skipped);
      if (name === "onnxruntime") return await openOnnxruntime(m, threads, skipped);
      return await openWasm(m, skipped);
    } catch (err) {
      // A missing or broken weights file is not a backend problem: it fails every backend.
      if (backend !== "auto" || !(err instanceof BackendUnavailable)) throw err;
      skipped.push(err.message);
    }
  }
  throw new ConfigError(`no DeepFM backend loads for ${dir}: ${skipped.join("; ")}`);
}
