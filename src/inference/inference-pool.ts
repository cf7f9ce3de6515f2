/**
 * The DeepFM inference pool: a micro-batcher on the main thread in front of
 * piscina worker threads that each hold a DeepFM scorer (deepfm.worker.ts).
 *
 * Contract:
 * - `score(ids, dense, rows)` queues a request and resolves with its `rows`
 *   probabilities (a Float32Array of its own). Requests are concatenated into
 *   batches as inference-options.ts describes (size, `maxDelayMs` deadline,
 *   one batch in flight per worker). The batch's typed arrays are transferred
 *   to the worker and its scores transferred back; the caller's arrays are
 *   read (copied into the batch) when the batch is formed, up to `maxDelayMs`
 *   later, so they must not be changed before the promise settles.
 * - Rejections are PortraitErrors with a stable code:
 *   BAD_REQUEST (wrong sizes, ids outside [0, vocab), more rows than
 *   maxQueuedRows; checked before queuing, so a bad request never fails a
 *   batch), OVERLOADED (the queue is full or the pool is draining; at once,
 *   retryable), WORKER_EXITED (the worker died with the request's batch in
 *   flight; piscina starts a replacement, which loads the model on first use).
 * - A request is bound to the model version that is current when `score` is
 *   called, and a batch holds one version only. `swapModel(dir)` loads the new
 *   version in every worker, then switches: requests accepted before the
 *   switch are still scored by the old version (nothing is dropped), requests
 *   accepted after it by the new one. A worker closes the old scorer once the
 *   pool has no request of it left (on its next task).
 * - `pin(dir)` holds a loaded version for a caller that must score several
 *   requests, or requests spread over time, with one version (a recommender
 *   pinned to a ranker pairing during a hot swap): `score(..., dir)` scores
 *   with that version while it is pinned or current, whatever is current.
 *   The pin's `release()` lets it go once nothing else uses it.
 * - `drain()` stops intake (new requests get OVERLOADED), flushes the queue
 *   without waiting for deadlines, and resolves when every accepted request
 *   has settled. `close()` drains, then stops the threads; idempotent.
 *
 * Metrics (when a registry is given): inference-metrics.ts; they are removed
 * from the registry when the pool closes or fails to start.
 */
import { resolve as resolvePath } from "node:path";
import { fileURLToPath } from "node:url";
import { Piscina } from "piscina";
import type { Registry } from "prom-client";
import { BadRequestError, ErrorCode, OverloadedError, PortraitError, fromWire } from "../errors.js";
import type { DeepFmArchitecture } from "../models/deepfm-spec.js";
import { readDeepFmArchitecture } from "../models/deepfm-weights.js";
import { InferenceMetrics } from "./inference-metrics.js";
import { compileInferenceOptions, type CompiledInferenceOptions, type InferenceOptions } from "./inference-options.js";
import type { InferenceWorkerData, LoadedModel, LoadReply, LoadTask, ScoreReply, ScoreTask } from "./inference-protocol.js";

/** How long workers wait for each other when loading a version everywhere; past it, a worker loads on first use instead. */
const LOAD_BARRIER_TIMEOUT_MS = 30_000;

export interface InferenceStats {
  backend: string;
  version: string;
  workers: number;
  /** Requests and rows waiting for a worker. */
  queuedRequests: number;
  queuedRows: number;
  /** Batches handed to workers and not yet returned (at most `workers`). */
  inFlightBatches: number;
  /** Requests accepted, batches run and rows scored since start. */
  accepted: number;
  batches: number;
  rowsScored: number;
  /** Requests rejected since start, any code. */
  rejected: number;
  /** Worker threads that failed with no batch in flight (piscina replaced them). */
  workerErrors: number;
  draining: boolean;
}

interface Model extends LoadedModel {
  dir: string;
  /** Accepted requests of this version not yet settled. */
  pending: number;
}

interface Request {
  model: Model;
  ids: Int32Array;
  dense: Float32Array | undefined;
  rows: number;
  /** performance.now() at `score`. */
  t0: number;
  resolve: (scores: Float32Array) => void;
  reject: (err: PortraitError) => void;
}

function workerExited(err: unknown): PortraitError {
  return new PortraitError(ErrorCode.WORKER_EXITED, `inference worker failed: ${(err as Error)?.message ?? err}`, { cause: err });
}

function workerFile(): string {
  // From TypeScript sources, an .mjs entry registers tsx in the worker first (see that file).
  const ts = import.meta.url.endsWith(".ts");
  return fileURLToPath(new URL(ts ? "./deepfm.worker.tsx-entry.mjs" : "./deepfm.worker.js", import.meta.url));
}

/** Checks a request against the model's input contract; throws BadRequestError. */
function checkRequest(a: DeepFmArchitecture, ids: Int32Array, dense: Float32Array | undefined, rows: number, maxRows: number): void {
  if (!Number.isInteger(rows) || rows < 0) throw new BadRequestError(`rows must be a non-negative integer, got ${rows}`);
  if (rows > maxRows) throw new BadRequestError(`a request of ${rows} rows is larger than the queue (maxQueuedRows ${maxRows}); split it`);
  if (!(ids instanceof Int32Array)) throw new BadRequestError("ids must be an Int32Array");
  if (ids.length !== rows * a.fields) throw new BadRequestError(`ids has ${ids.length} values; ${rows} rows x ${a.fields} fields need ${rows * a.fields}`);
  if (a.denseDim > 0) {
    if (!(dense instanceof Float32Array) || dense.length !== rows * a.denseDim) {
      throw new BadRequestError(`dense has ${dense?.length ?? "no"} values; ${rows} rows x ${a.denseDim} dense need ${rows * a.denseDim}`);
    }
  } else if (dense !== undefined && dense.length !== 0) {
    throw new BadRequestError(`dense has ${dense.length} values; the model has no dense inputs`);
  }
  const vocab = a.vocab;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= vocab) throw new BadRequestError(`ids[${i}] = ${id} is outside [0, ${vocab})`);
  }
}

/** Loads `dir` in each of the `workers` workers (see LoadTask); the model as the first worker reports it. */
async function loadEverywhere(piscina: Piscina, workers: number, dir: string, live: string[]): Promise<LoadedModel> {
  const task: LoadTask = { kind: "load", dir, live, barrier: new Int32Array(new SharedArrayBuffer(4)), parties: workers, timeoutMs: LOAD_BARRIER_TIMEOUT_MS };
  const replies = await Promise.all(Array.from({ length: workers }, () => (piscina.run(task) as Promise<LoadReply>).catch((err: unknown) => {
    throw workerExited(err);
  })));
  for (const r of replies) if (!r.ok) throw fromWire(r.error);
  return (replies[0] as Extract<LoadReply, { ok: true }>).model;
}

export class InferencePool {
  readonly #piscina: Piscina;
  readonly #opts: CompiledInferenceOptions;
  readonly #metrics: InferenceMetrics | undefined;
  #current: Model;
  /** The current model and every model with pending requests, by directory. */
  readonly #models = new Map<string, Model>();
  /** Directories workers may still be sent: #models plus a version being loaded. */
  #live: string[] = [];
  #loading: string | undefined;
  #queue: Request[] = [];
  #head = 0;
  #queuedRows = 0;
  #inFlight = 0;
  #timer: NodeJS.Timeout | undefined;
  #draining = false;
  #idleWaiters: Array<() => void> = [];
  #swapChain: Promise<unknown> = Promise.resolve();
  #closing: Promise<void> | undefined;
  #accepted = 0;
  #batches = 0;
  #rowsScored = 0;
  #rejected = 0;
  readonly #workerErrors: { count: number };

  private constructor(piscina: Piscina, opts: CompiledInferenceOptions, model: Model, metrics: InferenceMetrics | undefined, workerErrors: { count: number }) {
    this.#piscina = piscina;
    this.#workerErrors = workerErrors;
    this.#opts = opts;
    this.#metrics = metrics;
    this.#current = model;
    this.#models.set(model.dir, model);
    this.#live = [model.dir];
    if (metrics !== undefined) {
      metrics.queuedRows = () => this.#queuedRows;
      metrics.setModel(model.backend, model.version);
    }
  }

  /**
   * Starts `options.workers` threads and loads the DeepFM version in
   * `modelDir` in each. ConfigError when the options or the directory are
   * invalid or no wanted backend loads; the threads are stopped then.
   * With `registry`, the pool's metrics are registered on it. Options the
   * engine compiled already (its config's `inference`) are used as they are.
   */
  static async start(modelDir: string, options: InferenceOptions | CompiledInferenceOptions = {}, registry?: Registry): Promise<InferencePool> {
    const opts = compileInferenceOptions(options);
    const dir = resolvePath(modelDir);
    readDeepFmArchitecture(dir);
    const metrics = registry === undefined ? undefined : new InferenceMetrics(registry);
    const workerData: InferenceWorkerData = { backend: opts.backend, threads: opts.threads };
    const piscina = new Piscina({
      filename: workerFile(),
      minThreads: opts.workers,
      maxThreads: opts.workers,
      idleTimeout: Number.POSITIVE_INFINITY,
      concurrentTasksPerWorker: 1,
      // The batcher keeps at most `workers` batches and, during a swap, `workers` load tasks in piscina.
      maxQueue: 4 * opts.workers,
      workerData,
    });
    // A worker that dies with no task in flight is reported here (piscina replaces it); unhandled, the event would kill the process.
    const workerErrors = { count: 0 };
    piscina.on("error", () => {
      workerErrors.count++;
      metrics?.workerErrors.inc();
    });
    try {
      const model = await loadEverywhere(piscina, opts.workers, dir, [dir]);
      return new InferencePool(piscina, opts, { ...model, dir, pending: 0 }, metrics, workerErrors);
    } catch (err) {
      await piscina.destroy();
      metrics?.unregister();
      throw err;
    }
  }

  /** The backend that scores new requests: "onnxruntime", "tfjs-node-gpu" or "wasm". */
  get backend(): string {
    return this.#current.backend;
  }

  /** The model version new requests are bound to. */
  get version(): string {
    return this.#current.version;
  }

  /** The input contract of the current version (fields, vocab, denseDim). */
  get arch(): DeepFmArchitecture {
    return this.#current.arch;
  }

  get options(): CompiledInferenceOptions {
    return this.#opts;
  }

  /**
   * Probabilities for `rows` rows: `ids` int32 row-major [rows, fields] in
   * [0, vocab), `dense` float32 [rows, denseDim] (undefined when denseDim is
   * 0). Rejections: see the file comment.
   */
  score(ids: Int32Array, dense: Float32Array | undefined, rows: number, dir?: string): Promise<Float32Array> {
    const t0 = performance.now();
    if (this.#draining) return this.#refuse(new OverloadedError("the inference pool is draining; try again elsewhere or later"));
    const model = dir === undefined ? this.#current : this.#models.get(dir);
    if (model === undefined) return this.#refuse(new OverloadedError(`DeepFM ${dir} is no longer loaded (a model swap finished meanwhile); try again`));
    try {
      checkRequest(model.arch, ids, dense, rows, this.#opts.maxQueuedRows);
    } catch (err) {
      return this.#refuse(err as PortraitError);
    }
    if (this.#queuedRows + rows > this.#opts.maxQueuedRows) {
      return this.#refuse(new OverloadedError(`the inference queue is full (${this.#queuedRows} rows queued, limit ${this.#opts.maxQueuedRows}); try again later`));
    }
    if (rows === 0) return Promise.resolve(new Float32Array(0));
    return new Promise<Float32Array>((resolve, reject) => {
      this.#queue.push({ model, ids, dense: model.arch.denseDim > 0 ? dense : undefined, rows, t0, resolve, reject });
      this.#queuedRows += rows;
      model.pending++;
      this.#accepted++;
      this.#pump();
    });
  }

  /**
   * Loads the DeepFM version in `dir` in every worker, then makes it current.
   * Requests already accepted finish on the version they were accepted for.
   * Rejects (and keeps the current version) when the version does not load;
   * swaps run one at a time, in call order.
   */
  swapModel(dir: string): Promise<void> {
    const run = this.#swapChain.then(() => this.#swap(resolvePath(dir)));
    this.#swapChain = run.catch(() => undefined);
    return run;
  }

  async #swap(dir: string): Promise<void> {
    if (this.#draining) throw new OverloadedError("the inference pool is draining; no model swap");
    if (dir === this.#current.dir) return;
    readDeepFmArchitecture(dir);
    // Live while loading, so that a batch finishing in a worker meanwhile does not close what it just loaded.
    this.#loading = dir;
    this.#refreshLive();
    let loaded: LoadedModel;
    try {
      loaded = await loadEverywhere(this.#piscina, this.#opts.workers, dir, this.#live);
    } finally {
      this.#loading = undefined;
      this.#refreshLive();
    }
    const model: Model = this.#models.get(dir) ?? { ...loaded, dir, pending: 0 };
    const old = this.#current;
    this.#current = model;
    this.#models.set(dir, model);
    this.#forgetIfUnused(old);
    this.#refreshLive();
    this.#metrics?.setModel(model.backend, model.version);
  }

  /**
   * Holds the version in `dir` (the current one when absent), which must be
   * loaded: it stays scoreable by `score(..., dir)` until released.
   * Returns the pinned model's directory, version and backend.
   */
  pin(dir?: string): { dir: string; version: string; backend: string; release: () => void } {
    const model = dir === undefined ? this.#current : this.#models.get(resolvePath(dir));
    if (model === undefined) throw new PortraitError(ErrorCode.INTERNAL, `DeepFM ${dir} is not loaded in the inference pool`);
    model.pending++;
    let released = false;
    return {
      dir: model.dir, version: model.version, backend: model.backend,
      release: () => {
        if (released) return;
        released = true;
        model.pending--;
        this.#forgetIfUnused(model);
      },
    };
  }

  stats(): InferenceStats {
    return {
      backend: this.backend,
      version: this.version,
      workers: this.#opts.workers,
      queuedRequests: this.#queue.length - this.#head,
      queuedRows: this.#queuedRows,
      inFlightBatches: this.#inFlight,
      accepted: this.#accepted,
      batches: this.#batches,
      rowsScored: this.#rowsScored,
      rejected: this.#rejected,
      workerErrors: this.#workerErrors.count,
      draining: this.#draining,
    };
  }

  /** Stops intake and resolves once every accepted request has settled. */
  drain(): Promise<void> {
    this.#draining = true;
    this.#pump();
    if (this.#idle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Drains, waits for a model swap in progress, stops the worker threads and
   * removes the pool's metrics from the registry. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.drain();
      await this.#swapChain;
      clearTimeout(this.#timer);
      await this.#piscina.close();
      this.#metrics?.unregister();
    })();
    return this.#closing;
  }

  #refuse(err: PortraitError): Promise<never> {
    this.#rejected++;
    this.#metrics?.rejected.inc({ code: err.code });
    return Promise.reject(err);
  }

  #idle(): boolean {
    return this.#inFlight === 0 && this.#head === this.#queue.length;
  }

  #forgetIfUnused(m: Model): void {
    if (m === this.#current || m.pending > 0) return;
    this.#models.delete(m.dir);
    this.#refreshLive();
  }

  #refreshLive(): void {
    this.#live = [...this.#models.keys()];
    if (this.#loading !== undefined && !this.#models.has(this.#loading)) this.#live.push(this.#loading);
  }

  /** Hands batches to free workers: full ones at once, partial ones once their first request is due. */
  #pump(): void {
    const { workers, maxBatchRows, maxDelayMs } = this.#opts;
    while (this.#inFlight < workers && this.#head < this.#queue.length) {
      const first = this.#queue[this.#head]!;
      // A batch cannot grow past a request of another version, so it is complete then.
      const last = this.#queue[this.#queue.length - 1]!;
      const wait = first.t0 + maxDelayMs - performance.now();
      if (!this.#draining && this.#queuedRows < maxBatchRows && wait > 0 && last.model === first.model) {
        this.#timer ??= setTimeout(() => {
          this.#timer = undefined;
          this.#pump();
        }, wait);
        return;
      }
      this.#dispatch(this.#take());
    }
  }

  /** Takes the next batch off the queue: one version, at most maxBatchRows rows unless its first request alone is larger. */
  #take(): Request[] {
    const q = this.#queue;
    const first = q[this.#head++]!;
    const batch = [first];
    let rows = first.rows;
    while (this.#head < q.length) {
      const r = q[this.#head]!;
      if (r.model !== first.model || rows + r.rows > this.#opts.maxBatchRows) break;
      batch.push(r);
      rows += r.rows;
      this.#head++;
    }
    this.#queuedRows -= rows;
    if (this.#head === q.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= q.length) {
      this.#queue = q.slice(this.#head);
      this.#head = 0;
    }
    return batch;
  }

  #dispatch(batch: Request[]): void {
    const model = batch[0]!.model;
    const { fields: F, denseDim: D } = model.arch;
    let rows = 0;
    for (const r of batch) rows += r.rows;
    // Always a fresh buffer: it is transferred, and the callers keep their arrays.
    const ids = batch.length === 1 ? batch[0]!.ids.slice() : new Int32Array(rows * F);
    const dense = D === 0 ? undefined : batch.length === 1 ? batch[0]!.dense!.slice() : new Float32Array(rows * D);
    if (batch.length > 1) {
      let at = 0;
      for (const r of batch) {
        ids.set(r.ids, at * F);
        if (dense !== undefined) dense.set(r.dense!, at * D);
        at += r.rows;
      }
    }
    const now = performance.now();
    const m = this.#metrics;
    if (m !== undefined) {
      m.batchRows.observe(rows);
      for (const r of batch) m.queueSeconds.observe((now - r.t0) / 1000);
    }
    this.#inFlight++;
    this.#batches++;
    const task: ScoreTask = { kind: "score", dir: model.dir, live: this.#live, ids, dense, rows };
    const transferList = dense === undefined ? [ids.buffer] : [ids.buffer, dense.buffer];
    (this.#piscina.run(task, { transferList }) as Promise<ScoreReply>).then(
      (reply) => (reply.ok ? this.#deliver(batch, reply.scores, reply.runMs) : this.#fail(batch, fromWire(reply.error))),
      (err: unknown) => this.#fail(batch, workerExited(err)),
    ).finally(() => {
      this.#inFlight--;
      model.pending -= batch.length;
      this.#forgetIfUnused(model);
      this.#pump();
      if (this.#idleWaiters.length > 0 && this.#idle()) for (const w of this.#idleWaiters.splice(0)) w();
    });
  }

  #deliver(batch: Request[], scores: Float32Array, runMs: number): void {
    const m = this.#metrics;
    m?.runSeconds.observe(runMs / 1000);
    this.#rowsScored += scores.length;
    const now = performance.now();
    if (batch.length === 1) {
      batch[0]!.resolve(scores);
      m?.requestSeconds.observe((now - batch[0]!.t0) / 1000);
      return;
    }
    let at = 0;
    for (const r of batch) {
      r.resolve(scores.slice(at, at + r.rows));
      at += r.rows;
      m?.requestSeconds.observe((now - r.t0) / 1000);
    }
  }

  #fail(batch: Request[], err: PortraitError): void {
    this.#rejected += batch.length;
    this.#metrics?.rejected.inc({ code: err.code }, batch.length);
    for (const r of batch) r.reject(err);
  }
}
