/** The V8 heap of the calling thread (each worker thread has its own isolate), and the memory the process may use. */
import { totalmem } from "node:os";
import { getHeapStatistics } from "node:v8";

/** V8 heap of one thread, bytes (v8.getHeapStatistics()). */
export interface HeapStats {
  usedBytes: number;
  totalBytes: number;
  /** Off-heap memory V8 accounts to the isolate: ArrayBuffers (transferred batches) and the like. */
  externalBytes: number;
  /** The most the heap may reach (V8's heap_size_limit: the old generation bound plus the young generation); past it the thread fails out of memory. */
  limitBytes: number;
}

export function heapStats(): HeapStats {
  const h = getHeapStatistics();
  return { usedBytes: h.used_heap_size, totalBytes: h.total_heap_size, externalBytes: h.external_memory, limitBytes: h.heap_size_limit };
}

/** The machine's memory, or the cgroup's limit when lower, bytes: what the memory bounds' defaults share out. */
export function usableMemoryBytes(): number {
  const limit = process.constrainedMemory?.() ?? 0;
  return limit > 0 ? Math.min(totalmem(), limit) : totalmem();
}

const MiB = 1 << 20;

/**
 * Heap a worker thread needs beside its bounded state, bytes: models, LMDB
 * and message buffers, and garbage between collections. A shard held ~330 MiB
 * besides its actors in the 8-minute soak with its cache at the bound
 * (bench/RESULTS.md, "Memory: where the soak's RSS goes").
 */
export const WORKER_HEAP_BASE_BYTES = 512 * MiB;

/**
 * Heap per byte of bounded state as its cache estimates it: the estimates
 * are 0.7–1.2 × the heap measured after a collection (actors 0.81–1.16,
 * recs tables 0.71–0.96), and V8 needs room for garbage between collections.
 */
export const WORKER_HEAP_PER_STATE_BYTE = 1.5;

/**
 * The engine's default bound of each worker's V8 semi-space (engine option
 * workerSemiSpaceBytes), bytes: V8's own default on a 64-bit machine. 32 MiB
 * cut a shard's scavenges by a quarter on bench/shard-apply.ts, but not the
 * engine's CPU per event in max-ingest, for ~40 MiB more RSS (bench/RESULTS.md,
 * "the workers' young generation").
 */
export const SEMI_SPACE_DEFAULT_BYTES = 16 * MiB;

/** The heap bound (old generation) that a worker holding `stateBytes` of estimated state needs, bytes. */
export function workerHeapFor(stateBytes: number): number {
  return Math.ceil(stateBytes * WORKER_HEAP_PER_STATE_BYTE + WORKER_HEAP_BASE_BYTES);
}

/** The most estimated state that fits a worker heap bound of `heapBytes` (the inverse of workerHeapFor), bytes. */
export function stateBytesFor(heapBytes: number): number {
  return Math.floor((heapBytes - WORKER_HEAP_BASE_BYTES) / WORKER_HEAP_PER_STATE_BYTE);
}

/**
 * A worker's heap bound and its state bound, each given or not: given one,
 * the other follows from it (the state bound is also at most
 * `defaultState`); given neither, the state bound is `defaultState`; given
 * both, the heap bound must hold the state bound (or the worker would run
 * out of memory before its cache is full). Invalid values give a message
 * naming the options instead, for the caller's ConfigError. Its result,
 * given back as both bounds, is accepted.
 */
export function workerHeapBounds(given: { heap: number | undefined; state: number | undefined }, defaultState: number, names: { heap: string; state: string }, minState: number):
  { heap: number; state: number } | string {
  const minHeap = workerHeapFor(minState);
  if (given.heap !== undefined && (!Number.isSafeInteger(given.heap) || given.heap < minHeap)) {
    return `options.${names.heap} must be an integer >= ${minHeap} (${minHeap / MiB} MiB: ${WORKER_HEAP_PER_STATE_BYTE} x the least ${names.state} + ${WORKER_HEAP_BASE_BYTES / MiB} MiB), got ${JSON.stringify(given.heap)}`;
  }
  if (given.state === undefined && given.heap !== undefined) return { heap: given.heap, state: Math.min(defaultState, stateBytesFor(given.heap)) };
  const state = given.state ?? defaultState;
  const need = workerHeapFor(state);
  if (given.heap === undefined) return { heap: need, state };
  if (given.heap < need) {
    return `options.${names.heap} (${given.heap}) must hold options.${names.state} (${state}): at least ${need} bytes ` +
      `(${WORKER_HEAP_PER_STATE_BYTE} x it + ${WORKER_HEAP_BASE_BYTES / MiB} MiB), or the worker would run out of memory before its cache is full`;
  }
  return { heap: given.heap, state };
}
