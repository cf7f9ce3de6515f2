/**
 * The shard worker's own API and its init: what the main thread asks of a
 * shard over comlink. Only plain data and typed arrays cross it; errors cross
 * as WireError in results, or thrown and rebuilt by the comlink error
 * transfer (src/threads/comlink-errors.ts). The batch contract belongs to the
 * bus (src/bus/event-batch.ts), the query types to src/contracts.ts.
 */
import type { CompiledProfileOptions } from "../actors/profile-options.js";
import type { EventBatch, BatchResult } from "../bus/event-batch.js";
import type { ProfileResult, QueryDeadline, RecContextResult, ReplyEncoding } from "../contracts.js";
import type { WireError } from "../errors.js";
import type { ShardStats } from "../obs/metrics.js";
import type { ItemEventSink } from "../threads/item-event-queue.js";
import type { EventValidationOptions } from "../wire/event-validation.js";
import type { BatchTimes, ClockOptions } from "./engine-clock.js";

export interface ShardInit {
  /** Index of this shard, 0..workers-1. */
  shard: number;
  /** The partitions this shard owns. */
  partitions: number[];
  dataDir: string;
  mapSizeBytes: number;
  profile: CompiledProfileOptions;
  validation: EventValidationOptions;
  /** Most actors kept in memory; the least recently used are dropped once committed. */
  maxActors: number;
  logLevel: string;
  /**
   * Model version directories to load (absent = that model is off), and this
   * engine's own stream source ("stream:<event stream>"): a prediction is
   * served only from a model evaluated on it (src/models/evidence.ts).
   */
  models: { lstmDir?: string; churnDir?: string; propensityDir?: string; shopSource: string };
  /** Where to post the item events of each committed batch and forgotten users (src/threads/item-event-queue.ts), e.g. to the recs worker. */
  itemEvents?: ItemEventSink;
  /**
   * The pseudonymisation key (src/shard/pseudonym.ts); absent = user ids are
   * kept as given. Secret: never logged.
   */
  pseudonymKey?: Uint8Array;
  /** The engine clock's shared memory (EngineClock.buffer) and its rules. */
  clock: { buffer: SharedArrayBuffer; options: ClockOptions };
}

/**
 * The models a shard runs (ShardApi.setModels): a version directory, or null
 * for off. `keepLstm`: earlier LSTM versions to keep loaded for
 * recommendations still pinned to them (getRecContext's lstmVersion); every
 * other earlier version is dropped.
 */
export interface ShardModelSet {
  lstmDir: string | null;
  churnDir: string | null;
  propensityDir: string | null;
  keepLstm: string[];
}

/** The versions a shard runs after setModels ("" = off). */
export interface ShardModelVersions {
  lstm: string;
  churn: string;
}

/** The outcome of a forget, returned once the removal committed. */
export type ForgetResult = { ok: true; existed: boolean } | { ok: false; error: WireError };

export interface ShardReady {
  /** Last applied stream sequence of each owned partition, as committed in LMDB. */
  appliedSeqs: Record<number, number>;
  /** The engine clock as this shard last stored it, Unix ms (0: never). */
  clockMs: number;
}

/** A batch's outcome as the shard reports it: with its stats piggy-backed (so the metrics need not wait behind a busy shard). */
export interface ShardBatchResult extends BatchResult {
  stats: ShardStats;
  /** What the engine clock needs from the batch. */
  times: BatchTimes;
}

/** What a shard worker exposes over comlink. */
export interface ShardApi {
  init(init: ShardInit): Promise<ShardReady>;
  applyBatch(batch: EventBatch): Promise<ShardBatchResult>;
  /** Answered as soon as the query reaches the worker (between batches), OVERLOADED when its deadline has passed. */
  getProfile(userId: string, asOfMs: number, encoding: ReplyEncoding, deadline?: QueryDeadline): ProfileResult;
  getRecContext(userId: string, asOfMs: number, deadline?: QueryDeadline, lstmVersion?: string): RecContextResult;
  /**
   * Loads the models of `set` (a version already loaded is reused) and runs
   * them from the next message on: a batch or query in progress finishes on
   * the versions it started with. A model that fails to load leaves the
   * running ones in place (the call rejects).
   */
  setModels(set: ShardModelSet): Promise<ShardModelVersions>;
  /**
   * Removes the user's actor and stored state. Ordered with the batches: a
   * batch applied before it cannot bring the state back, one applied after it
   * starts a new profile. Resolves after the removal committed and the
   * ForgetUserMessage was posted.
   */
  forget(userId: string): Promise<ForgetResult>;
  stats(): ShardStats;
  /** Fault injection, tests only: blocks the thread for `ms` (queued behind the batches handed over before it). */
  faultStall(ms: number): Promise<void>;
  /** Waits for pending commits and closes the store. */
  close(): Promise<void>;
}
