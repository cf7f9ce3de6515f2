/**
 * Options of the DeepFM inference pool (inference-pool.ts): what the user
 * passes, every field with its unit and default, compiled and validated once
 * into a frozen config by `compileInferenceOptions`.
 *
 * How the fields interact:
 * - Requests are queued and concatenated into batches of at most
 *   `maxBatchRows` rows. A batch is handed to a worker when it is full, when
 *   its oldest request has waited `maxDelayMs`, or at once while draining.
 *   Each worker runs one batch at a time, so at most `workers` batches are in
 *   flight; while they all are busy, new requests keep filling the queue and
 *   the next batches come out larger (batching costs no latency under load).
 * - The queue holds at most `maxQueuedRows` rows (requests waiting for a
 *   worker, not the batches in flight). A request that would exceed it is
 *   rejected at once with OverloadedError (code OVERLOADED, retryable).
 * - A request larger than `maxBatchRows` is scored alone, as one batch of its
 *   own size (not split: one larger batch scores at least as fast per row as
 *   its parts, and no results have to be stitched together). A request larger
 *   than `maxQueuedRows` could never be queued and is a BadRequestError.
 */
import { ConfigError } from "../errors.js";
import { DEEPFM_BACKENDS, type DeepFmBackend } from "../models/deepfm-scorer.js";

export interface InferenceOptions {
  /**
   * Worker threads, each holding its own scorer (one onnxruntime session per
   * model version) and running one batch at a time. A positive integer;
   * default 1. The default suits a 2-core machine, where the main thread
   * (API, bus, shard coordination) needs the other core; on a bigger machine
   * use about one worker per core left over, and measure with
   * `npx tsx bench/inference.ts`.
   */
  workers?: number;
  /** The scorer backend: "auto" (default) takes the best that loads (see deepfm-scorer.ts); a name forces it. */
  backend?: "auto" | DeepFmBackend;
  /** onnxruntime intra-op threads per scorer, a positive integer; default 1 (the pool scales by workers). */
  threads?: number;
  /** Rows per batch before it is flushed without waiting, a positive integer; default 1024. */
  maxBatchRows?: number;
  /**
   * Milliseconds a request may wait for more rows to join its batch before the
   * batch is flushed, a finite number >= 0; default 0. 0 flushes as soon as a
   * worker is free ("greedy": requests still batch while every worker is
   * busy, and an idle pool adds no wait). A positive wait is spent with the
   * worker idle: with few concurrent callers it costs latency and throughput
   * (bench/inference.ts: 1 ms gave 0.25x the requests/s of 0 ms with one
   * client, and 0 ms was as good or better at every client count measured).
   */
  maxDelayMs?: number;
  /**
   * Rows waiting for a worker (not counting batches in flight) before new
   * requests are rejected as OVERLOADED, an integer >= maxBatchRows; default
   * 16384 (16 full batches: about 25-35 ms of work for one worker at the
   * 0.5-0.7M rows/s measured for the production-size DeepFM).
   */
  maxQueuedRows?: number;
}

export type CompiledInferenceOptions = Readonly<Required<InferenceOptions>>;

export const DEFAULT_INFERENCE_OPTIONS: CompiledInferenceOptions = Object.freeze({
  workers: 1,
  backend: "auto",
  threads: 1,
  maxBatchRows: 1024,
  maxDelayMs: 0,
  maxQueuedRows: 16384,
});

/** Every config compileInferenceOptions returned: passed again, it is returned as is (compiled once, handed down). */
const compiled = new WeakSet<object>([DEFAULT_INFERENCE_OPTIONS]);

function positiveInt(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new ConfigError(`options.${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Validates `opts` (unknown keys are errors) and fills in the defaults;
 * throws ConfigError. A config it returned before (the engine's, say) is
 * returned unchanged.
 */
export function compileInferenceOptions(opts: InferenceOptions | CompiledInferenceOptions = {}): CompiledInferenceOptions {
  if (compiled.has(opts)) return opts as CompiledInferenceOptions;
  const known = Object.keys(DEFAULT_INFERENCE_OPTIONS);
  for (const k of Object.keys(opts)) {
    if (!known.includes(k)) throw new ConfigError(`options.${k} is not an inference option (${known.join(", ")})`);
  }
  const o = { ...DEFAULT_INFERENCE_OPTIONS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) };
  if (o.backend !== "auto" && !(DEEPFM_BACKENDS as readonly string[]).includes(o.backend)) {
    throw new ConfigError(`options.backend must be "auto" or one of ${DEEPFM_BACKENDS.join(", ")}, got ${JSON.stringify(o.backend)}`);
  }
  positiveInt("workers", o.workers);
  positiveInt("threads", o.threads);
  positiveInt("maxBatchRows", o.maxBatchRows);
  positiveInt("maxQueuedRows", o.maxQueuedRows);
  if (typeof o.maxDelayMs !== "number" || !Number.isFinite(o.maxDelayMs) || o.maxDelayMs < 0) {
    throw new ConfigError(`options.maxDelayMs must be a finite number >= 0, got ${JSON.stringify(o.maxDelayMs)}`);
  }
  if (o.maxQueuedRows < o.maxBatchRows) {
    throw new ConfigError(`options.maxQueuedRows (${o.maxQueuedRows}) must be at least options.maxBatchRows (${o.maxBatchRows})`);
  }
  const c = Object.freeze(o);
  compiled.add(c);
  return c;
}
