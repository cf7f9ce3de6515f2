/**
 * The TF.js runtime used for training and for the TF.js serving fallback.
 *
 * Backends, best first: `tensorflow` (@tensorflow/tfjs-node-gpu, only when it
 * loads; it needs libtensorflow, which cannot be downloaded on machines without
 * internet), `wasm` (SIMD, the fastest that loads here), `cpu` (pure JS).
 * `initTf()` picks the best that loads unless one is forced, and says which.
 *
 * The wasm backend lacks `UnsortedSegmentSum`, which the gradient of an
 * embedding lookup (Gather) needs; we register a JS kernel for it so training
 * works on wasm.
 */
import type * as TfCore from "@tensorflow/tfjs-core";
import type * as TfLayers from "@tensorflow/tfjs-layers";
import { createRequire } from "node:module";
import { ConfigError } from "../errors.js";
import { TF_BACKENDS, type TfBackendName } from "./tf-backends.js";

const require = createRequire(import.meta.url);
/**
 * TF.js is loaded with require() on purpose, and every module takes it from
 * here: its packages ship a CommonJS bundle ("main") and ES module files
 * ("module"); a loader that picks ESM for one import and CJS for another (tsx,
 * vite) would create two engines whose tensors do not recognise each other.
 */
// The union package's bundle registers the chained tensor methods
// (t.flatten() ...) on core's CJS Tensor class; tfjs-layers needs them.
require("@tensorflow/tfjs");
export const tf: typeof TfCore = require("@tensorflow/tfjs-core");
export const tfl: typeof TfLayers = require("@tensorflow/tfjs-layers");
require("@tensorflow/tfjs-backend-cpu");
// eslint-disable-next-line @typescript-eslint/no-namespace
export declare namespace tf {
  type Tensor = TfCore.Tensor;
  type Tensor1D = TfCore.Tensor1D;
  type Tensor2D = TfCore.Tensor2D;
  type Tensor3D = TfCore.Tensor3D;
  type Scalar = TfCore.Scalar;
  type TensorInfo = TfCore.TensorInfo;
}
// eslint-disable-next-line @typescript-eslint/no-namespace
export declare namespace tfl {
  type LayersModel = TfLayers.LayersModel;
  type SymbolicTensor = TfLayers.SymbolicTensor;
  namespace layers {
    type Layer = TfLayers.layers.Layer;
  }
}

export interface TfRuntime {
  tf: typeof tf;
  backend: TfBackendName;
  /** Why better backends were not used, one line each. */
  skipped: string[];
}

let current: Promise<TfRuntime> | undefined;
let currentWanted: string | undefined;

function registerWasmSegmentSum(): void {
  if (tf.getKernel("UnsortedSegmentSum", "wasm") !== undefined) return;
  tf.registerKernel({
    kernelName: "UnsortedSegmentSum",
    backendName: "wasm",
    kernelFunc: ({ inputs, attrs, backend }) => {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const b = backend as any;
      const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
      const numSegments = (attrs as unknown as { numSegments: number }).numSegments;
      const xv = b.readSync(x.dataId) as Float32Array;
      const ids = b.readSync(segmentIds.dataId) as Int32Array;
      const inner = x.shape.slice(1).reduce((a: number, d: number) => a * d, 1);
      const out = b.makeOutput([numSegments, ...x.shape.slice(1)], x.dtype) as tf.TensorInfo;
      const ov = b.typedArrayFromHeap(out) as Float32Array;
      ov.fill(0);
      for (let i = 0; i < ids.length; i++) {
        const s = ids[i]!;
        if (s < 0 || s >= numSegments) continue;
        const src = i * inner;
        const dst = s * inner;
        for (let j = 0; j < inner; j++) ov[dst + j]! += xv[src + j]!;
      }
      return out;
    },
  });
}

async function tryBackend(name: TfBackendName): Promise<string | undefined> {
  try {
    if (name === "tensorflow") {
      require("@tensorflow/tfjs-node-gpu");
    } else if (name === "wasm") {
      const wasm = require("@tensorflow/tfjs-backend-wasm") as typeof import("@tensorflow/tfjs-backend-wasm");
      // Node: load the .wasm files from the package directory.
      const dir = require.resolve("@tensorflow/tfjs-backend-wasm/package.json").replace(/package\.json$/, "dist/");
      wasm.setWasmPaths(dir);
      registerWasmSegmentSum();
    }
    if (!(await tf.setBackend(name))) return `${name}: backend did not initialise`;
    await tf.ready();
    return undefined;
  } catch (err) {
    return `${name}: ${String((err as Error)?.message ?? err).split("\n")[0]}`;
  }
}

/**
 * Initialises TF.js once per thread on `wanted` (a name, or "auto" for the
 * best that loads). A second call with another wish is a configuration error.
 */
export function initTf(wanted: TfBackendName | "auto" = "auto"): Promise<TfRuntime> {
  if (current !== undefined) {
    if (wanted !== currentWanted && wanted !== "auto") {
      return current.then((rt) => {
        if (rt.backend !== wanted) throw new ConfigError(`TF.js already runs on ${rt.backend}; cannot switch to ${wanted}`);
        return rt;
      });
    }
    return current;
  }
  currentWanted = wanted;
  current = (async () => {
    const order: TfBackendName[] = wanted === "auto" ? [...TF_BACKENDS] : [wanted];
    const skipped: string[] = [];
    for (const name of order) {
      const why = await tryBackend(name);
      if (why === undefined) return { tf, backend: name, skipped };
      skipped.push(why);
    }
    throw new ConfigError(`no TF.js backend loads: ${skipped.join("; ")}`);
  })();
  return current;
}
