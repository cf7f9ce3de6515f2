/**
 * The contract between the main thread and a shard worker. Only plain data and
 * typed arrays cross it; errors cross as WireError and are rebuilt on the
 * other side.
 */
import type { MessagePort } from "node:worker_threads";
import type { CompiledProfileOptions } from "../actors/profile-options.js";
import type { WireError } from "../errors.js";
import type { DeepFmUserFeatures } from "../models/deepfm-features.js";
import type { DeadLetterReason, EventValidationOptions } from "../wire/event-validation.js";

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

/**
 * A fetched batch of one partition's messages, packed: message i is
 * data[offsets[i] .. offsets[i+1]) and has stream sequence seqs[i]. The three
 * buffers are transferred to the worker, not copied.
 */
export interface EventBatch {
  partition: number;
  data: Uint8Array;
  offsets: Uint32Array;
  seqs: Float64Array;
}

export interface DeadLetter {
  /** Index of the message in its batch. */
  index: number;
  seq: number;
  reason: DeadLetterReason;
  detail: string;
}

/** The outcome of a batch; returned only once its LMDB transaction committed. */
export interface BatchResult {
  partition: number;
  /** Stream sequence of the batch's last message: everything up to it is done. */
  lastSeq: number;
  /** Events applied to profiles. */
  applied: number;
  /** Valid events skipped because their sequence was already applied (redeliveries). */
  skipped: number;
  deadLetters: DeadLetter[];
  /** Time to decode, validate and apply the batch, ms. */
  applyMs: number;
  /** Time from queuing the writes to their commit, ms. */
  commitMs: number;
  /** Latest event time applied by this shard, epoch ms (the shard's event-time clock). */
  watermarkMs: number;
  /** LSTM cell steps run for this batch (one per applied event when the LSTM runs) and their time, ms. */
  lstmSteps: number;
  lstmMs: number;
  /** Recommendation feedback applied in this batch: model version -> [impressions, clicks]. */
  feedback: Record<string, [number, number]>;
  /** The shard's stats after the batch (piggy-backed, so the metrics need not wait behind a busy shard). */
  stats: ShardStats;
}

/**
 * When a query arrived in the engine and by when it must be started (Unix
 * epoch ms, one clock for every thread): a shard that reaches the query after
 * `deadlineMs` answers OVERLOADED without doing the work.
 */
export interface QueryDeadline {
  receivedMs: number;
  deadlineMs: number;
}

/** What a recommendation request needs from the user's profile. */
export interface RecContext {
  /** False when the user has no profile. */
  known: boolean;
  /** The id the user's state is kept under: the pseudonym when pseudonymisation is on, else the user id. */
  userKey: string;
  /** The time the request is evaluated at (the shard's event clock unless the request named one). */
  asOfMs: number;
  recentItems: string[];
  topCategories: Array<{ key: string; score: number }>;
  /** The LSTM's next categories; empty without an LSTM. */
  nextCategories: Array<{ key: string; score: number }>;
  purchasedItems: string[];
  /** The DeepFM user fields. */
  user: DeepFmUserFeatures;
  /** The user's LSTM hidden state (the DeepFM dense input), when the LSTM runs. */
  lstmH: Float32Array | undefined;
  lstmVersion?: string | undefined;
}

export type RecContextResult = { ok: true; context: RecContext } | { ok: false; error: WireError };

export type ReplyEncoding = "protobuf" | "json";

/** A profile reply, encoded by the worker, or an error. */
export type ProfileResult = { ok: true; body: Uint8Array } | { ok: false; error: WireError };

/** V8 heap of one thread, bytes (v8.getHeapStatistics()). */
export interface HeapStats {
  usedBytes: number;
  totalBytes: number;
  /** Off-heap memory V8 accounts to the isolate: ArrayBuffers (transferred batches) and the like. */
  externalBytes: number;
}

export interface ShardStats {
  shard: number;
  actorsCached: number;
  pendingWrites: number;
  /** Item events posted to the recs worker since start. */
  itemEventsPosted: number;
  /** Item events not posted to the recs worker since start because its queue was full (ItemEventSink). */
  itemEventsDropped: number;
  heap: HeapStats;
}

/** What a shard worker exposes over comlink. */
export interface ShardApi {
  init(init: ShardInit): Promise<ShardReady>;
  applyBatch(batch: EventBatch): Promise<BatchResult>;
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
