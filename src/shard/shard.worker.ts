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
import type { MessagePort } from "node:worker_threads";
import type { EventBatch } from "../bus/event-batch.js";
import type { QueryDeadline } from "../contracts.js";
import { ChurnModel } from "../models/churn-model.js";
import { LstmRuntime } from "../models/lstm-runtime.js";
import { PropensityModel } from "../models/propensity-model.js";
import { SentimentModel } from "../models/sentiment-model.js";
import { heapStats } from "../obs/heap.js";
import { createLogger, type Logger } from "../obs/logger.js";
import type { ShardStats } from "../obs/metrics.js";
import { ProfileStore, isLmdbCommitEcho } from "../store/profile-store.js";
import { ItemEventSender } from "../threads/item-event-queue.js";
import { exposeWorker, stallThread } from "../threads/worker-thread.js";
import { ownedBytes, serveCallPort, type CallServer } from "../threads/call-port.js";
import { ActorCache } from "./actor-cache.js";
import { BatchApplier } from "./batch-applier.js";
import { CategoryLabels } from "./category-labels.js";
import { ClockReader } from "./engine-clock.js";
import { Predictions } from "./predictions.js";
import { ProfileQueries } from "./profile-queries.js";
import { pseudonymiser } from "./pseudonym.js";
import type { AudienceQueryResult, AudienceReportResult, ForgetResult, ProfileCall, ResolvedUser, ShardApi, ShardProfileResult, ShardRecContextResult, ShardBatchResult, ShardInit, ShardModelSet, ShardModelVersions, ShardReady, TickResult } from "./shard-protocol.js";
import { AudienceRunner, audienceCount, audienceMembers, audienceReport, type BackfillProgress } from "./audience-runner.js";
import type { AudienceDefinition } from "../actors/audience-rules.js";
import type { OutboundMessage, OutboxRef } from "../bus/event-batch.js";
import { toWire, type WireError } from "../errors.js";
import { subjects } from "../bus/subjects.js";

/** The models a shard runs; swapped whole between messages (setModels). */
class ShardModels {
  lstm: LstmRuntime | undefined;
  churn: ChurnModel | undefined;
  propensity: PropensityModel | undefined;
  /** The review sentiment model, loaded once at init (it is not swapped). */
  sentiment: SentimentModel | undefined;
  /** The prediction models of this set with their verdicts on this shop's stream, rebuilt on every set. */
  predictions: Predictions = new Predictions({ lstm: undefined, churn: undefined, propensity: undefined, shopSource: "" });
  /** This engine's own stream source (what "this shop's data" means for a model's evaluation). */
  shopSource = "";
  #propensityDir: string | undefined;
  /** Loaded LSTM versions: the running one and those kept for pinned recommendations. */
  readonly lstmVersions = new Map<string, LstmRuntime>();
  readonly #dirs = new Map<string, string>();
  #churnDir: string | undefined;

  /** Loads what is new (the LSTM in slices, answering other messages meanwhile), then switches in one synchronous step. */
  async set(set: ShardModelSet): Promise<ShardModelVersions> {
    // Load first, switch after: a failed load changes nothing.
    let lstm: LstmRuntime | undefined;
    if (set.lstmDir !== null) {
      const known = [...this.#dirs].find(([, dir]) => dir === set.lstmDir)?.[0];
      lstm = known !== undefined ? this.lstmVersions.get(known) : await LstmRuntime.loadAsync(set.lstmDir);
    }
    const churn = set.churnDir === null ? undefined : set.churnDir === this.#churnDir ? this.churn : ChurnModel.load(set.churnDir);
    const propensityDir = set.propensityDir ?? undefined;
    const propensity = propensityDir === undefined ? undefined : propensityDir === this.#propensityDir ? this.propensity : PropensityModel.load(propensityDir);
    const predictions = new Predictions({ lstm, lstmDir: set.lstmDir ?? undefined, churn, propensity, shopSource: this.shopSource });
    this.lstm = lstm;
    this.churn = churn;
    this.propensity = propensity;
    this.predictions = predictions;
    this.#churnDir = set.churnDir ?? undefined;
    this.#propensityDir = propensityDir;
    if (lstm !== undefined && set.lstmDir !== null) {
      this.lstmVersions.set(lstm.version, lstm);
      this.#dirs.set(lstm.version, set.lstmDir);
    }
    for (const v of [...this.lstmVersions.keys()]) {
      if (v !== lstm?.version && !set.keepLstm.includes(v)) {
        this.lstmVersions.delete(v);
        this.#dirs.delete(v);
      }
    }
    return { lstm: lstm?.version ?? "", churn: churn?.version ?? "" };
  }
}

class Shard implements ShardApi {
  #shard = 0;
  #log!: Logger;
  #store!: ProfileStore;
  #actors!: ActorCache;
  #batches!: BatchApplier;
  #queries!: ProfileQueries;
  /** The profile lookups' port (queryPort), polled inside a batch's apply too (BatchApplierDeps.queries). */
  #queryServer: CallServer<ProfileCall, ShardProfileResult> | undefined;
  #itemEvents: ItemEventSender | undefined;
  #clock!: ClockReader;
  #audiences!: AudienceRunner;
  readonly #models = new ShardModels();

  async init(init: ShardInit): Promise<ShardReady> {
    this.#shard = init.shard;
    const log = (this.#log = createLogger(init.logLevel, { component: "shard", shard: init.shard }));
    const key = pseudonymiser(init.pseudonymKey);
    const models = this.#models;
    models.shopSource = init.models.shopSource;
    models.sentiment = init.models.sentimentDir !== undefined ? SentimentModel.load(init.models.sentimentDir) : undefined;
    await models.set({ lstmDir: init.models.lstmDir ?? null, churnDir: init.models.churnDir ?? null, propensityDir: init.models.propensityDir ?? null, keepLstm: [] });
    const itemEvents = (this.#itemEvents = init.itemEvents !== undefined ? new ItemEventSender(init.itemEvents, log) : undefined);
    const store = (this.#store = new ProfileStore({ dataDir: init.dataDir, mapSizeBytes: init.mapSizeBytes, compressProfiles: init.compressProfiles === true }));
    const actors = (this.#actors = new ActorCache(store, init.maxActors, init.maxActorBytes));
    const labels = new CategoryLabels(store);
    const clock = (this.#clock = new ClockReader(init.clock.buffer, init.clock.options));
    const audiences = (this.#audiences = new AudienceRunner({
      shard: init.shard, partitions: init.partitions, partitionCount: init.partitionCount, store, actors, profile: init.profile,
      subjectPrefix: init.subjectPrefix ?? "portrait", pseudonymised: init.pseudonymKey !== undefined, backfillChunk: init.backfillChunk ?? 2000,
      // What the profile serves, from the models running at the time of the evaluation (they may be swapped between messages).
      predictor: (u, now) => (name) => models.predictions.served(name, u, now),
    }));
    const batches = (this.#batches = new BatchApplier({
      shard: init.shard, partitions: init.partitions, store, actors, profile: init.profile, validation: init.validation,
      key, pseudonymised: init.pseudonymKey !== undefined, models, itemEvents, labels, clock, audiences,
      subjects: subjects(init.subjectPrefix ?? "portrait"), partitionCount: init.partitionCount, changelog: init.changelog === true,
      queries: {
        // A lookup names the raw id, or the key when it follows an alias (ShardPool.getProfile).
        poll: (busy) => this.#queryServer?.poll((c) => busy(c[5]?.key ?? key(c[0]))),
        flush: () => this.#queryServer?.flush(),
      },
    }));
    this.#queries = new ProfileQueries({ shard: init.shard, actors, profile: init.profile, key, clock, labels, models, log, aliasOf: (k) => batches.aliasOf(k) });
    log.info({ partitions: init.partitions.length }, "shard ready");
    const outbox: Record<number, OutboundMessage[]> = {};
    for (const m of audiences.pendingOutbox()) (outbox[m.partition] ??= []).push(m.message);
    return { appliedSeqs: batches.appliedSeqs(), clockMs: store.getClock(), clockLive: store.getClockLive(), outbox };
  }

  async applyBatch(batch: EventBatch): Promise<ShardBatchResult> {
    const r = await this.#batches.apply(batch);
    // Kept for the next start (not awaited; a lost one only means the clock restarts a little earlier). The batch's own
    // in-era time counts: the main thread moves the clock to it only after this returns, so a stream whose last batch
    // is this one would otherwise restart with the clock before it (or at 0: not live, no timer fires until an event).
    const clockMs = Math.max(this.#clock.clockMs, r.times.inEraMs);
    this.#store.putClock(clockMs, this.#clock.liveWith(clockMs));
    return { ...r, stats: this.stats() };
  }

  queryPort(port: MessagePort): void {
    this.#queryServer = serveCallPort<ProfileCall, ShardProfileResult>(port, (c) => {
      const r = this.#queries.getProfile(c[0], c[1], c[2], c[3], c[4], c[5]);
      if (!r.ok) return { result: r };
      const body = ownedBytes(r.body);
      return { result: { ok: true, body }, transfer: body.buffer as ArrayBuffer };
    }, (err) => ({ ok: false, error: toWire(err) }));
  }

  getRecContext(userId: string, asOfMs: number, deadline?: QueryDeadline, lstmVersion?: string, resolved?: ResolvedUser): ShardRecContextResult {
    return this.#queries.getRecContext(userId, asOfMs, deadline, lstmVersion, resolved);
  }

  async setModels(set: ShardModelSet): Promise<ShardModelVersions> {
    const r = await this.#models.set(set);
    this.#log.info({ lstm: r.lstm || "off", churn: r.churn || "off", propensity: this.#models.propensity?.version ?? "off", keptLstm: [...this.#models.lstmVersions.keys()] }, "models set");
    return r;
  }

  forget(userId: string, resolvedKey?: string): Promise<ForgetResult> {
    return this.#batches.forget(userId, resolvedKey);
  }

  adopt(partition: number, users: [string, Uint8Array | null, number][], position: number): Promise<number> {
    return this.#batches.adopt(partition, users, position);
  }

  forgetAlias(key: string): Promise<{ ok: true } | { ok: false; error: WireError }> {
    return this.#batches.forgetAlias(key);
  }

  async setAudiences(defs: AudienceDefinition[]): Promise<void> {
    this.#audiences.set(defs, this.#batches.settled());
  }

  async tick(only?: number[]): Promise<TickResult & { backfill: BackfillProgress }> {
    const r = await this.#batches.tick(only);
    return { ...r, backfill: this.#audiences.progress() };
  }

  async published(partition: number, done: OutboxRef[]): Promise<void> {
    this.#audiences.published(partition, done);
  }

  flushOutbox(): Promise<void> {
    return this.#audiences.flushOutboxRemovals();
  }

  audienceQuery(audienceId: string, after: string, limit: number): AudienceQueryResult {
    try {
      return { ok: true, count: audienceCount(this.#store, audienceId), members: limit > 0 ? audienceMembers(this.#store, audienceId, after, limit) : [] };
    } catch (err) {
      return { ok: false, error: toWire(err) };
    }
  }

  audienceReport(audienceId: string, days: number): AudienceReportResult {
    try {
      return { ok: true as const, ...audienceReport(this.#store, audienceId, days) };
    } catch (err) {
      return { ok: false as const, error: toWire(err) };
    }
  }

  stats(): ShardStats {
    return {
      shard: this.#shard, actorsCached: this.#actors.size, actorBytes: this.#actors.bytes, pendingWrites: this.#batches.pendingWrites,
      itemEventsPosted: this.#itemEvents?.posted ?? 0, itemEventsDropped: this.#itemEvents?.dropped ?? 0,
      itemEventsWaited: this.#itemEvents?.waited ?? 0, identity: { ...this.#batches.identity }, heap: heapStats(),
    };
  }

  async faultStall(ms: number): Promise<void> {
    stallThread(ms);
  }

  async close(): Promise<void> {
    await this.#audiences.flushOutboxRemovals();
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
