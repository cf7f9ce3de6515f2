/**
 * Piscina worker of the inference pool: one DeepFM scorer per model directory
 * (loaded on first use, closed once the pool no longer lists it as live),
 * scoring the batches the pool sends. Runs one task at a time
 * (concurrentTasksPerWorker 1), so onnxruntime's synchronous run never blocks
 * another task of this worker.
 */
import { move, transferableSymbol, valueSymbol, workerData } from "piscina";
import { toWire } from "../errors.js";
import { loadDeepFmScorer, type DeepFmScorer } from "../models/deepfm-scorer.js";
import type { InferenceTask, InferenceWorkerData, LoadReply, LoadTask, ScoreReply, ScoreTask } from "./inference-protocol.js";

interface Cached {
  scorer: Promise<DeepFmScorer>;
  /** Tasks of this worker using the scorer now. */
  active: number;
}

const options = workerData as InferenceWorkerData;
const cache = new Map<string, Cached>();

function acquire(dir: string): Cached {
  let c = cache.get(dir);
  if (c === undefined) {
    c = { scorer: loadDeepFmScorer(dir, { backend: options.backend, threads: options.threads }), active: 0 };
    cache.set(dir, c);
    // A failed load is not cached: the next task retries.
    c.scorer.catch(() => cache.delete(dir));
  }
  c.active++;
  return c;
}

/** Closes the scorers of directories the pool will not send again. */
function release(c: Cached, live: string[]): void {
  c.active--;
  for (const [dir, other] of cache) {
    if (other.active > 0 || live.includes(dir)) continue;
    cache.delete(dir);
    void other.scorer.then((s) => s.close()).catch(() => undefined);
  }
}

type WaitAsync = (a: Int32Array, index: number, value: number, timeoutMs: number) => { async: boolean; value: Promise<string> | string };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

async function meet(barrier: Int32Array, parties: number, timeoutMs: number): Promise<void> {
  Atomics.add(barrier, 0, 1);
  Atomics.notify(barrier, 0);
  const until = performance.now() + timeoutMs;
  for (let seen = Atomics.load(barrier, 0); seen < parties; seen = Atomics.load(barrier, 0)) {
    const left = until - performance.now();
    // Past the deadline the others load lazily on their first batch instead.
    if (left <= 0) return;
    const r = waitAsync(barrier, 0, seen, left);
    if (r.async) await r.value;
  }
}

async function load(task: LoadTask): Promise<LoadReply> {
  const t0 = performance.now();
  const c = acquire(task.dir);
  try {
    const s = await c.scorer;
    return { ok: true, model: { backend: s.backend, version: s.version, arch: s.arch, skipped: s.skipped }, loadMs: performance.now() - t0 };
  } catch (err) {
    return { ok: false, error: toWire(err) };
  } finally {
    // Arrive even after a failure, so the other workers do not wait for the timeout.
    if (task.parties > 1) await meet(task.barrier, task.parties, task.timeoutMs);
    release(c, task.live);
  }
}

async function score(task: ScoreTask): Promise<ScoreReply | ReturnType<typeof move>> {
  const c = acquire(task.dir);
  try {
    const s = await c.scorer;
    const t0 = performance.now();
    let scores = await s.score(task.ids, task.dense, task.rows);
    const runMs = performance.now() - t0;
    // Transfer only a buffer the scores own entirely; otherwise copy the few bytes.
    if (scores.byteOffset !== 0 || scores.byteLength !== scores.buffer.byteLength || !(scores.buffer instanceof ArrayBuffer)) scores = scores.slice();
    const reply: ScoreReply = { ok: true, scores, runMs };
    return move({ [transferableSymbol]: [scores.buffer], [valueSymbol]: reply } as never);
  } catch (err) {
    return { ok: false, error: toWire(err) };
  } finally {
    release(c, task.live);
  }
}

export default function handle(task: InferenceTask): Promise<unknown> {
  return task.kind === "load" ? load(task) : score(task);
}
