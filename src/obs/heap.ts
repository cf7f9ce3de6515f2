/** The V8 heap of the calling thread (each worker thread has its own isolate). */
import { getHeapStatistics } from "node:v8";
import type { HeapStats } from "../shard/shard-protocol.js";

export function heapStats(): HeapStats {
  const h = getHeapStatistics();
  return { usedBytes: h.used_heap_size, totalBytes: h.total_heap_size, externalBytes: h.external_memory };
}
