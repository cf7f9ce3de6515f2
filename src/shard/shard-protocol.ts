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
import type { ItemEventSink } from "../threads/item-event-queue.js";
import type { EventValidationOptions } from "../wire/event-validation.js";
import type { BatchTimes, ClockOptions } from "./engine-clock.js";
import type { AudienceDefinition } from "../actors/audience-rules.js";
import type { OutboundMessage, OutboxRef } from "../bus/event-batch.js";
import type { BackfillProgress, ReportGroup } from "./audience-runner.js";

export interface ShardInit {
  /** Index of this shard, 0..workers-1. */
  shard: number;
  /** The partitions this shard owns. */
  partitions: number[];
  dataDir: string;
  mapSizeBytes: number;
  /** ProfileStoreOptions.compressProfiles; default false. */
  compressProfiles?: boolean;
  profile: CompiledProfileOptions;
  validation: EventValidationOptions;
  /** Most actors kept in memory; the least recently used are dropped once committed. */
  maxActors: number;
  /** Most bytes of actors kept in memory, as ActorCache estimates them; absent = no byte bound. */
  maxActorBytes?: number;
  logLevel: string;
  /**
   * Model version directories to load (absent = that model is off), and this
   * engine's own stream source ("stream:<event stream>"): a prediction is
   * served only from a model evaluated on it (src/models/evidence.ts).
   */
  models: { lstmDir?: string; churnDir?: string; propensityDir?: string; sentimentDir?: string; shopSource: string };
  /** Where to post the item events of each committed batch and forgotten users (src/threads/item-event-queue.ts), e.g. to the recs worker. */
  itemEvents?: ItemEventSink;
  /**
   * The pseudonymisation key (src/shard/pseudonym.ts); absent = user ids are
   * kept as given. Secret: never logged.
   */
  pseudonymKey?: Uint8Array;
  /** The engine clock's shared memory (EngineClock.buffer) and its rules. */
  clock: { buffer: SharedArrayBuffer; options: ClockOptions };
  /** The subject prefix (audience enter/exit events are published under it). Default "portrait". */
  subjectPrefix?: string;
  /** The deployment's partition count. */
  partitionCount: number;
  /** Cluster mode (README "Scale-out"): batches return their committed states for the changelog, and partitions are adopted from it. */
  changelog?: boolean;
  /** Profiles evaluated per tick in an audience backfill (the bound on its rate). Default 2000. */
  backfillChunk?: number;
}

/** The outcome of a forget, returned once the removal committed; `outbound`: the user's audience exits (reason "forgotten"), committed in the outbox, to publish. */
export type ForgetResult =
  | {
    ok: true; existed: boolean; outbound: OutboundMessage[];
    /** The key the shard looked up. */
    key: string;
    /** Set when that key is an alias: nothing was removed, forget [primary key, its partition] instead (README "Identity"). */
    alias?: [string, number];
    /** The ids merged into the forgotten one, [key, partition]: their alias entries are to be removed (ShardApi.forgetAlias). */
    aliases?: [string, number][];
  }
  | { ok: false; error: WireError };

/** A shard's uplift report (audience-runner.ts audienceReport). */
export type AudienceReportResult = { ok: true; contacted: ReportGroup; holdout: ReportGroup } | { ok: false; error: WireError };

/** What a tick committed: the transitions to publish, per partition. */
export interface TickResult {
  outbound: Record<number, OutboundMessage[]>;
  timersFired: number;
  backfilled: number;
}

/** A shard's answer to an audience query (read from the committed `audiences` db). */
export type AudienceQueryResult =
  | { ok: true; count: number; members: { userId: string; sinceMs: number; holdout: boolean }[] }
  | { ok: false; error: WireError };
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


export interface ShardReady {
  /** Last applied stream sequence of each owned partition, as committed in LMDB. */
  appliedSeqs: Record<number, number>;
  /** The engine clock as this shard last stored it, Unix ms (0: never). */
  clockMs: number;
  /** The engine was live when this shard last stored the clock (engine-clock.ts). */
  clockLive: boolean;
  /** Audience transitions committed but not confirmed published before the last stop: published again (deduplicated by id) before consuming. */
  outbox: Record<number, OutboundMessage[]>;
}

/** A batch's outcome as the shard reports it: with its stats piggy-backed (so the metrics need not wait behind a busy shard). */
export interface ShardBatchResult extends BatchResult {
  stats: ShardStats;
  /** What the engine clock needs from the batch. */
  times: BatchTimes;
}

/** A query's answer from a shard: the result, or the user's key is an alias of [primary key, primary's partition] (README "Identity"). */
export type ShardProfileResult = ProfileResult | { ok: false; alias: [string, number]; error?: undefined };
export type ShardRecContextResult = RecContextResult | { ok: false; alias: [string, number]; error?: undefined };
/** A query for a user whose alias was resolved: `asked` the client's id, `key` the primary's key. */
export interface ResolvedUser {
  asked: string;
  key: string;
}

/** A profile lookup over a shard's query port (threads/call-port.ts): the arguments of ShardApi.getProfile. */
export type ProfileCall = [userId: string, asOfMs: number, encoding: ReplyEncoding, deadline: QueryDeadline | undefined, explain: boolean, resolved: ResolvedUser | undefined];

/** What a shard worker exposes over comlink. */
export interface ShardApi {
  init(init: ShardInit): Promise<ShardReady>;
  applyBatch(batch: EventBatch): Promise<ShardBatchResult>;
  getRecContext(userId: string, asOfMs: number, deadline?: QueryDeadline, lstmVersion?: string, resolved?: ResolvedUser): ShardRecContextResult;
  /**
   * The port the main thread sends profile lookups to (ProfileCall, answered
   * with a ShardProfileResult whose body is transferred), without comlink's
   * cost per call, the lookups of one main-thread turn in one message. A lookup
   * is answered as soon as it reaches the worker (between batches), OVERLOADED
   * when its deadline has passed.
   */
  queryPort(port: MessagePort): void;
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
  forget(userId: string, resolvedKey?: string): Promise<ForgetResult>;
  /**
   * Cluster mode: replaces the partition's users with those restored from its
   * changelog ([key, encoded state or null, record sequence]) and sets its
   * position; resolves with the number of states written.
   */
  adopt(partition: number, users: [string, Uint8Array | null, number][], position: number): Promise<number>;
  /** Removes an alias entry of an owned partition (its primary is being forgotten), ordered with the batches like forget. */
  forgetAlias(key: string): Promise<{ ok: true } | { ok: false; error: WireError }>;
  /** Replaces the audience definitions (validated by whoever stored them); a new set starts a backfill. */
  setAudiences(defs: AudienceDefinition[]): Promise<void>;
  /**
   * Time passing: fires due audience timers and runs a chunk of a backfill; resolves after they committed. `only`: the
   * partitions to run them for (cluster mode: those this node holds a lease on); all of the shard's when undefined.
   */
  tick(only?: number[]): Promise<TickResult & { backfill: BackfillProgress }>;
  /** These outbound messages of the partition were published: their outbox entries go. */
  published(partition: number, done: OutboxRef[]): Promise<void>;
  /** Outbox entries published and waiting for the shard's next commit are removed now; resolves once committed. */
  flushOutbox(): Promise<void>;
  /** An audience's count, and a page of its members after `after` (limit 0 = count only). Any shard answers for all (one LMDB). */
  audienceQuery(audienceId: string, after: string, limit: number): AudienceQueryResult;
  /** What current members and holdout did in the `days` days from entering (audience-runner.ts audienceReport). */
  audienceReport(audienceId: string, days: number): AudienceReportResult;
  stats(): ShardStats;
  /** Fault injection, tests only: blocks the thread for `ms` (queued behind the batches handed over before it). */
  faultStall(ms: number): Promise<void>;
  /** Waits for pending commits and closes the store. */
  close(): Promise<void>;
}
