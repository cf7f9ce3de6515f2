/**
 * Shard worker thread: owns a set of partitions and their users' actors.
 * This entry wires the shard's parts and exposes them to the main thread over
 * comlink (ShardApi): the actor cache (actor-cache.ts), the writes in stream
 * order (batch-applier.ts), the queries (profile-queries.ts), the LMDB store
 * and the item-event queue to the recs worker.
 *
 * User ids are pseudonymised here when a key is configured (events after
 * decoding, queries on arrival; src/shard/pseudonym.ts): actors, LMDB and the
 * recs worker see only the pseudonym.
 */
import type { EventBatch } from "../bus/event-batch.js";
import type { ProfileResult, QueryDeadline, RecContextResult, ReplyEncoding } from "../contracts.js";
import { ChurnModel } from "../models/churn-model.js";
import { LstmRuntime } from "../models/lstm-runtime.js";
import { heapStats } from "../obs/heap.js";
import { createLogger, type Logger } from "../obs/logger.js";
import type { ShardStats } from "../obs/metrics.js";
import { ProfileStore, isLmdbCommitEcho } from "../store/profile-store.js";
import { ItemEventSender } from "../threads/item-event-queue.js";
import { exposeWorker, stallThread } from "../threads/worker-thread.js";
import { ActorCache } from "./actor-cache.js";
import { BatchApplier } from "./batch-applier.js";
import { CategoryLabels } from "./category-labels.js";
import { ClockReader } from "./engine-clock.js";
import { ProfileQueries } from "./profile-queries.js";
import { pseudonymiser } from "./pseudonym.js";
import type { ForgetResult, ShardApi, ShardBatchResult, ShardInit, ShardReady } from "./shard-protocol.js";

class Shard implements ShardApi {
  #shard = 0;
  #log!: Logger;
  #store!: ProfileStore;
  #actors!: ActorCache;
  #batches!: BatchApplier;
  #queries!: ProfileQueries;
  #itemEvents: ItemEventSender | undefined;
  #clock!: ClockReader;

  async init(init: ShardInit): Promise<ShardReady> {
    this.#shard = init.shard;
    const log = (this.#log = createLogger(init.logLevel, { component: "shard", shard: init.shard }));
    const key = pseudonymiser(init.pseudonymKey);
    const lstm = init.models.lstmDir !== undefined ? LstmRuntime.load(init.models.lstmDir) : undefined;
    const churn = init.models.churnDir !== undefined ? ChurnModel.load(init.models.churnDir) : undefined;
    const itemEvents = (this.#itemEvents = init.itemEvents !== undefined ? new ItemEventSender(init.itemEvents, log) : undefined);
    const store = (this.#store = new ProfileStore({ dataDir: init.dataDir, mapSizeBytes: init.mapSizeBytes }));
    const actors = (this.#actors = new ActorCache(store, init.maxActors));
    const labels = new CategoryLabels(store);
    const clock = (this.#clock = new ClockReader(init.clock.buffer, init.clock.options));
    const batches = (this.#batches = new BatchApplier({
      shard: init.shard, partitions: init.partitions, store, actors, profile: init.profile, validation: init.validation,
      key, pseudonymised: init.pseudonymKey !== undefined, lstm, itemEvents, labels, clock,
    }));
    this.#queries = new ProfileQueries({ shard: init.shard, actors, profile: init.profile, key, clock, labels, lstm, churn, log });
    log.info({ partitions: init.partitions.length }, "shard ready");
    return { appliedSeqs: batches.appliedSeqs(), clockMs: store.getClock() };
  }

  async applyBatch(batch: EventBatch): Promise<ShardBatchResult> {
    const r = await this.#batches.apply(batch);
    // Kept for the next start (written with the next transaction; a lost one only means the clock restarts a little earlier).
    this.#store.putClock(this.#clock.clockMs);
    return { ...r, stats: this.stats() };
  }

  getProfile(userId: string, asOfMs: number, encoding: ReplyEncoding, deadline?: QueryDeadline): ProfileResult {
    return this.#queries.getProfile(userId, asOfMs, encoding, deadline);
  }

  getRecContext(userId: string, asOfMs: number, deadline?: QueryDeadline): RecContextResult {
    return this.#queries.getRecContext(userId, asOfMs, deadline);
  }

  forget(userId: string): Promise<ForgetResult> {
    return this.#batches.forget(userId);
  }

  stats(): ShardStats {
    return {
      shard: this.#shard, actorsCached: this.#actors.size, pendingWrites: this.#batches.pendingWrites,
      itemEventsPosted: this.#itemEvents?.posted ?? 0, itemEventsDropped: this.#itemEvents?.dropped ?? 0,
      itemEventsWaited: this.#itemEvents?.waited ?? 0, heap: heapStats(),
    };
  }

  async faultStall(ms: number): Promise<void> {
    stallThread(ms);
  }

  async close(): Promise<void> {
    await this.#store.close();
    this.#log.info("shard closed");
  }
}

// lmdb-js's echoes of a failed commit must not crash the worker before the batch reports it as STORAGE_FAILED; anything else still does.
process.on("unhandledRejection", (reason, promise) => {
  if (isLmdbCommitEcho(reason, promise)) return;
  throw reason;
});

exposeWorker(new Shard(), "shard.worker");
