/**
 * Main-thread side of the recs worker: starts it, hands each shard a
 * MessagePort on which the shard posts its committed item events directly to
 * the worker (the main thread does not relay them), and forwards requests.
 * The item events queued on those ports are bounded by one count shared by
 * the shards and the worker (src/threads/item-event-queue.ts, recs option
 * maxQueuedItemEvents): beyond it a shard's batch waits for room (its
 * acknowledgement with it), and only a batch that waited maxItemEventWaitMs
 * is dropped; co-visitation, trending and the item statistics are approximate derived
 * state, profiles are unaffected. If the worker exits, pending calls reject
 * with WORKER_EXITED and `onExit` is told.
 */
import * as Comlink from "comlink";
import type { PortraitError } from "../errors.js";
import { ItemEventQueue, type ItemEventSinks } from "../threads/item-event-queue.js";
import { WorkerClient } from "../threads/worker-client.js";
import type { CandidateSource } from "./sources.js";
import type { PrepareRequest, PrepareResult, RecsApi, RecsInit, RecsStats, UpsertResult } from "./recs-protocol.js";

/**
 * How long a metrics scrape waits for a busy recs worker's stats before using
 * the last ones it gave, ms; ten times this while it never gave any (as the
 * shard pool does), so a first scrape under load still gets figures.
 */
const STATS_WAIT_MS = 250;

export class RecsHost {
  readonly #client: WorkerClient<RecsApi, RecsStats>;
  readonly #queue: ItemEventQueue;

  private constructor(client: WorkerClient<RecsApi, RecsStats>, queue: ItemEventQueue) {
    this.#client = client;
    this.#queue = queue;
  }

  /** Starts the worker; returns the host and, for ShardPool.start, one port per shard and the queue bound they share. */
  /** `semiSpaceBytes`: bound of the worker's V8 semi-space (the engine option workerSemiSpaceBytes; V8's default where absent). */
  static async start(init: Omit<RecsInit, "itemEventsQueued">, shards: number, onExit: (err: PortraitError) => void, semiSpaceBytes?: number): Promise<{ host: RecsHost; itemEvents: ItemEventSinks }> {
    const queue = new ItemEventQueue(init.recs.maxQueuedItemEvents, init.recs.maxItemEventWaitMs);
    const client = new WorkerClient<RecsApi, RecsStats>({ base: import.meta.url, module: "recs.worker", threadName: "portrait-recs", what: "recs worker", onExit,
      maxHeapBytes: init.recs.maxHeapBytes, ...(semiSpaceBytes !== undefined ? { semiSpaceBytes } : {}) });
    const host = new RecsHost(client, queue);
    await client.call((api) => api.init({ ...init, itemEventsQueued: queue.queued }));
    const ports = [];
    for (let i = 0; i < shards; i++) {
      const { sender, receiver } = queue.channel();
      await client.call((api) => api.addItemEventPort(Comlink.transfer(receiver, [receiver])));
      ports.push(sender);
    }
    return { host, itemEvents: { ports, queued: queue.queued, maxQueued: queue.maxQueued, maxWaitMs: queue.maxWaitMs } };
  }

  /** Item events the shards posted that the worker has not observed yet (exact: the shared count). */
  itemEventsQueued(): number {
    return this.#queue.size();
  }

  prepare(req: PrepareRequest): Promise<PrepareResult> {
    // The worker sees users only under the id their state is kept under (a pseudonym when pseudonymisation is on).
    const r = req.userId === req.context.userKey ? req : { ...req, userId: req.context.userKey };
    return this.#client.call((api) => api.prepare(r) as Promise<PrepareResult>);
  }

  /** RecsApi.setDeepFm: loads a DeepFM version's schema beside those in `keep`. */
  setDeepFm(dir: string | null, keep: string[]): Promise<string> {
    return this.#client.call((api) => api.setDeepFm(dir, keep) as unknown as Promise<string>);
  }

  /** RecsApi.setRanker: serves a feedback-trained ranker's weights (null = the configured policy). */
  setRanker(ranker: { version: string; weights: Partial<Record<CandidateSource, number>> } | null): Promise<void> {
    return this.#client.call((api) => api.setRanker(ranker) as unknown as Promise<void>);
  }

  upsert(bytes: Uint8Array): Promise<UpsertResult> {
    return this.#client.call((api) => api.upsert(bytes) as Promise<UpsertResult>);
  }

  stats(): Promise<RecsStats> {
    return this.#client.call((api) => api.stats());
  }

  /** For a metrics scrape: the worker's stats, or when it is busy, the last ones it gave within 250 ms (undefined before any). */
  recentStats(): Promise<RecsStats | undefined> {
    return this.#client.stats((api) => api.stats(), STATS_WAIT_MS, 10 * STATS_WAIT_MS);
  }

  /** Fault injection, tests only: blocks the worker's thread for `ms` once it reaches this call; resolves when it is free again. */
  faultStall(ms: number): Promise<void> {
    return this.#client.call((api) => api.faultStall(ms));
  }

  /** Stops the worker. Idempotent. */
  close(): Promise<void> {
    return this.#client.close((api) => api.close());
  }
}
