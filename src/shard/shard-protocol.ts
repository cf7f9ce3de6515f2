/**
 * The shard worker's own API and its init: what the main thread asks of a
 * shard over comlink. Only plain data and typed arrays cross it; errors cross
 * as WireError in results, or thrown and rebuilt by the comlink error
 * transfer (src/threads/comlink-errors.ts). The batch contract belongs to the
 * bus (src/bus/event-batch.ts), the query types to src/contracts.ts.
 */
import type { MessagePort } from "node:worker_threads";
import type { CompiledProfileOptions } from "../actors/profile-options.js";
import type { EventBatch, BatchResult } from "../bus/event-batch.js";
import type { ProfileResult, QueryDeadline, RecContextResult, ReplyEncoding } from "../contracts.js";
import type { WireError } from "../errors.js";
import type { ShardStats } from "../obs/metrics.js";
import type { EventValidationOptions } from "../wire/event-validation.js";

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
  /** Model version directories to load (absent = that model is off). */
  models: { lstmDir?: string; churnDir?: string };
  /** Where to post the item events of each committed batch (ItemEventBatch) and forgotten users (ForgetUserMessage), e.g. the recs worker. */
  itemEvents?: ItemEventSink;
  /**
   * The pseudonymisation key (src/shard/pseudonym.ts); absent = user ids are
   * kept as given. Secret: never logged.
   */
  pseudonymKey?: Uint8Array;
}

/**
 * A bounded queue of item events to one receiver (the recs worker), shared by
 * all shards: `queued[0]` counts the item events posted and not yet observed
 * (a shard adds a batch's count before posting it, the receiver subtracts it
 * after observing it). A shard whose batch would take the count beyond
 * `maxQueued` drops that batch's item events instead of posting them
 * (drop-newest, counted in ShardStats.itemEventsDropped): what the receiver
 * derives from them (co-visitation, trending, item statistics) is
 * approximate; profiles are unaffected. Forget messages are always posted
 * and not counted.
 */
export interface ItemEventSink {
  port: MessagePort;
  /** Int32Array over a SharedArrayBuffer of 4 bytes, shared with every shard and the receiver. */
  queued: Int32Array;
  maxQueued: number;
}

/**
 * Item events a shard applied, posted after the batch committed. Columnar,
 * one entry per event with an item id. `newToUser` is 1 when the item was
 * not among the user's recent items before the event (the distinct-users
 * count of the DeepFM item features).
 */
export interface ItemEventBatch {
  userIds: string[];
  itemIds: string[];
  types: number[];
  timestampsMs: number[];
  categoryIds: string[];
  categoryPaths: string[];
  brands: string[];
  prices: number[];
  currencies: string[];
  newToUser: number[];
}

/**
 * Posted on the item-event port after a forget committed, after the item
 * events of every batch applied before it: the receiver drops what it keeps
 * about the user (the id is the pseudonym when pseudonymisation is on).
 */
export interface ForgetUserMessage {
  forgetUserId: string;
}

/** What a shard posts on its item-event port. */
export type ItemEventMessage = ItemEventBatch | ForgetUserMessage;

/** The outcome of a forget, returned once the removal committed. */
export type ForgetResult = { ok: true; existed: boolean } | { ok: false; error: WireError };

export interface ShardReady {
  /** Last applied stream sequence of each owned partition, as committed in LMDB. */
  appliedSeqs: Record<number, number>;
}

/** A batch's outcome as the shard reports it: with its stats piggy-backed (so the metrics need not wait behind a busy shard). */
export interface ShardBatchResult extends BatchResult {
  stats: ShardStats;
}

/** What a shard worker exposes over comlink. */
export interface ShardApi {
  init(init: ShardInit): Promise<ShardReady>;
  applyBatch(batch: EventBatch): Promise<ShardBatchResult>;
  /** Answered as soon as the query reaches the worker (between batches), OVERLOADED when its deadline has passed. */
  getProfile(userId: string, asOfMs: number, encoding: ReplyEncoding, deadline?: QueryDeadline): ProfileResult;
  getRecContext(userId: string, asOfMs: number, deadline?: QueryDeadline): RecContextResult;
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
