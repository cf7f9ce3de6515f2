/** The V8 heap of the calling thread (each worker thread has its own isolate), and the memory the process may use. */
import { totalmem } from "node:os";
import { getHeapStatistics } from "node:v8";

/** V8 heap of one thread, bytes (v8.getHeapStatistics()). */
export interface HeapStats {
  usedBytes: number;
  totalBytes: number;
  /** Off-heap memory V8 accounts to the isolate: ArrayBuffers (transferred batches) and the like. */
  externalBytes: number;
}

export function heapStats(): HeapStats {
  const h = getHeapStatistics();
  return { usedBytes: h.used_heap_size, totalBytes: h.total_heap_size, externalBytes: h.external_memory };
}

/** The machine's memory, or the cgroup's limit when lower, bytes: what the memory bounds' defaults share out. */
export function usableMemoryBytes(): number {
  const limit = process.constrainedMemory?.() ?? 0;
  return limit > 0 ? Math.min(totalmem(), limit) : totalmem();
}
