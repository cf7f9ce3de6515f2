/**
 * Messages between the inference pool (main thread) and its piscina workers
 * (deepfm.worker.ts). Typed arrays are transferred both ways; errors travel
 * as WireError and are rebuilt on the main thread.
 *
 * The pool names the model directory in every task, so a worker loads a
 * version on first use, and lists the directories it may still send (`live`):
 * a worker closes a cached scorer once its directory is no longer live and no
 * task of its own uses it.
 */
import type { WireError } from "../errors.js";
import type { DeepFmBackend } from "../models/deepfm-scorer.js";
import type { DeepFmArchitecture } from "../models/deepfm-spec.js";

/** Fixed for the life of a pool; passed as piscina `workerData`. */
export interface InferenceWorkerData {
  backend: "auto" | DeepFmBackend;
  threads: number;
}

/**
 * Loads `dir` (if not cached) and reports the model. With `parties` > 1 the
 * task then waits on `barrier` (an Int32Array of length 1 on a
 * SharedArrayBuffer) until `parties` load tasks have arrived or `timeoutMs`
 * has passed: each worker runs one task at a time, so `parties` tasks that
 * meet at the barrier ran on `parties` different workers.
 */
export interface LoadTask {
  kind: "load";
  dir: string;
  live: string[];
  barrier: Int32Array;
  parties: number;
  timeoutMs: number;
}

/** Scores `rows` rows of `dir`'s model; `ids` and `dense` are transferred. */
export interface ScoreTask {
  kind: "score";
  dir: string;
  live: string[];
  ids: Int32Array;
  dense: Float32Array | undefined;
  rows: number;
}

export type InferenceTask = LoadTask | ScoreTask;

export interface LoadedModel {
  backend: string;
  version: string;
  arch: DeepFmArchitecture;
  /** Why better backends were skipped (deepfm-scorer `skipped`). */
  skipped: string[];
}

export type LoadReply = { ok: true; model: LoadedModel; loadMs: number } | { ok: false; error: WireError };

/** `scores` is transferred; `runMs` is the scorer's time for the batch, in the worker. */
export type ScoreReply = { ok: true; scores: Float32Array; runMs: number } | { ok: false; error: WireError };
