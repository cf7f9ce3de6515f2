/**
 * Main-thread side of the shard workers: starts W worker threads, assigns
 * partitions to them (partition p belongs to shard p % W) and forwards
 * batches and queries. If a worker exits, every pending call is rejected with
 * WORKER_EXITED and `onExit` is told; the engine treats that as fatal (the
 * unacknowledged messages are redelivered after a restart).
 */
import * as Comlink from "comlink";
import { epochMs, type EventBatch } from "../bus/event-batch.js";
import type { ProfileResult, QueryDeadline, RecContextResult, ReplyEncoding } from "../contracts.js";
import { ErrorCode, PortraitError, toWire, type WireError } from "../errors.js";
import { MAX_HOPS } from "./identity.js";
import type { ShardStats } from "../obs/metrics.js";
import type { ItemEventSinks } from "../threads/item-event-queue.js";
import { CLOCK_DEFAULTS, EngineClock } from "./engine-clock.js";
import { WorkerClient } from "../threads/worker-client.js";
import { CallPort, type CallTimes } from "../threads/call-port.js";
import { MessageChannel } from "node:worker_threads";
import type { AudienceQueryResult, AudienceReportResult, ForgetResult, ProfileCall, ResolvedUser, ShardApi, ShardProfileResult, ShardRecContextResult, ShardBatchResult, ShardInit, ShardModelSet, ShardModelVersions, TickResult } from "./shard-protocol.js";
import type { AudienceDefinition } from "../actors/audience-rules.js";
import type { OutboundMessage, OutboxRef } from "../bus/event-batch.js";
import type { BackfillProgress } from "./audience-runner.js";

/** How long a metrics scrape waits for a busy shard's stats before using the ones its last batch carried, ms. */
const STATS_WAIT_MS = 250;

/**
 * At most `maxEvents` events handed to one shard in batches not yet answered
 * (a larger batch still goes alone); the rest wait here, in hand-over order.
 * A shard takes its messages in order, so a query posted to it waits behind
 * every batch already in its port: with each partition's consumer prefetching
 * thousands of events, that was seconds of work (queries starved behind
 * ingest). Holding batches on main bounds a query's wait to about `maxEvents`
 * events of work, and leaves ingest to back up where it is bounded anyway
 * (max_ack_pending), not in front of the queries.
 */
class BatchWindow {
  #events = 0;
  readonly #held: { events: number; go: () => void }[] = [];

  constructor(readonly maxEvents: number) {}

  /** Batches waiting for room. */
  get held(): number {
    return this.#held.length;
  }

  run<T>(events: number, start: () => Promise<T>): Promise<T> {
    const go = (): Promise<T> => {
      this.#events += events;
      const p = start();
      const done = () => {
        this.#events -= events;
        while (this.#held.length > 0 && this.#fits(this.#held[0]!.events)) this.#held.shift()!.go();
      };
      p.then(done, done);
      return p;
    };
    if (this.#held.length === 0 && this.#fits(events)) return go();
    return new Promise<T>((resolve, reject) => this.#held.push({ events, go: () => void go().then(resolve, reject) }));
  }

  #fits(events: number): boolean {
    return this.#events === 0 || this.#events + events <= this.maxEvents;
  }
}

export type ShardCommon = Omit<ShardInit, "shard" | "partitions" | "itemEvents" | "clock" | "partitionCount">;

export interface ShardPoolOptions {
  /** Most events handed to one shard in batches not yet answered (BatchWindow); the engine option maxShardQueueEvents. */
  maxShardQueueEvents: number;
  /** Bound of each shard worker's V8 heap, bytes; the engine option maxShardHeapBytes (V8's default where absent). */
  maxHeapBytes?: number;
  /** Bound of each shard worker's V8 semi-space, bytes; the engine option workerSemiSpaceBytes (V8's default where absent). */
  semiSpaceBytes?: number;
  /** Told the stages of each answered message of profile lookups (CallTimes): the engine's portrait_query_stage_seconds. */
  onQueryTimes?: (t: CallTimes) => void;
}

type Shard = WorkerClient<ShardApi, ShardStats>;

export class ShardPool {
  readonly workers: number;
  readonly partitions: number;
  readonly #shards: Shard[];
  readonly #windows: BatchWindow[];
  /** Each shard's query port (ShardApi.queryPort): the profile lookups. */
  readonly #queryPorts: CallPort<ProfileCall, ShardProfileResult>[] = [];
  /** Last applied sequence per partition, as found in LMDB at start. */
  readonly appliedAtStart: ReadonlyMap<number, number>;
  /** The engine clock (engine-clock.ts): moved by the batches' times, read by every shard. */
  readonly clock: EngineClock;
  /** Audience transitions found in the shards' outboxes at start, per partition: to publish before consuming. */
  readonly outboxAtStart = new Map<number, OutboundMessage[]>();
  #closed = false;

  private constructor(shards: Shard[], partitions: number, applied: Map<number, number>, clock: EngineClock, o: ShardPoolOptions) {
    this.#shards = shards;
    this.#windows = shards.map(() => new BatchWindow(o.maxShardQueueEvents));
    this.clock = clock;
    this.workers = shards.length;
    this.partitions = partitions;
    this.appliedAtStart = applied;
  }

  static async start(
    workers: number,
    partitions: number,
    common: ShardCommon,
    onExit: (shard: number, err: PortraitError) => void,
    /** Where each shard posts the item events it applied, e.g. the recs worker; the ports are transferred. */
    itemEvents: ItemEventSinks | undefined,
    o: ShardPoolOptions,
  ): Promise<ShardPool> {
    const shards: Shard[] = [];
    for (let i = 0; i < workers; i++) {
      shards.push(new WorkerClient<ShardApi, ShardStats>({
        base: import.meta.url, module: "shard.worker", threadName: `portrait-shard-${i}`, what: `shard worker ${i}`, onExit: (err) => onExit(i, err),
        ...(o.maxHeapBytes !== undefined ? { maxHeapBytes: o.maxHeapBytes } : {}),
        ...(o.semiSpaceBytes !== undefined ? { semiSpaceBytes: o.semiSpaceBytes } : {}),
      }));
    }
    const clock = new EngineClock(CLOCK_DEFAULTS);
    const pool = new ShardPool(shards, partitions, new Map(), clock, o);
    const applied = pool.appliedAtStart as Map<number, number>;
    await Promise.all(
      shards.map(async (s, i) => {
        const owned = pool.partitionsOf(i);
        const port = itemEvents?.ports[i];
        const init: ShardInit = {
          ...common, shard: i, partitions: owned, partitionCount: partitions, clock: { buffer: clock.buffer, options: CLOCK_DEFAULTS },
          ...(port !== undefined ? { itemEvents: { port, queued: itemEvents!.queued, maxQueued: itemEvents!.maxQueued, maxWaitMs: itemEvents!.maxWaitMs } } : {}),
        };
        const ready = await s.call((api) => api.init(port !== undefined ? Comlink.transfer(init, [port]) : init));
        for (const p of owned) applied.set(p, ready.appliedSeqs[p] ?? 0);
        for (const [p, msgs] of Object.entries(ready.outbox)) pool.outboxAtStart.set(Number(p), msgs);
        clock.restore(ready.clockMs, ready.clockLive);
        const { port1, port2 } = new MessageChannel();
        await s.call((api) => api.queryPort(Comlink.transfer(port2, [port2])));
        pool.#queryPorts[i] = new CallPort(port1, s.exited, o.onQueryTimes);
      }),
    );
    return pool;
  }

  shardOf(partition: number): number {
    return partition % this.workers;
  }

  partitionsOf(shard: number): number[] {
    const out: number[] = [];
    for (let p = shard; p < this.partitions; p += this.workers) out.push(p);
    return out;
  }

  #owner(partition: number): Shard {
    return this.#shards[this.shardOf(partition)]!;
  }

  /**
   * Hands a packed batch to the partition's shard (its buffers are
   * transferred) once the shard's unanswered batches leave room for it
   * (maxShardQueueEvents); until then it is held here, in order.
   */
  applyBatch(batch: EventBatch): Promise<ShardBatchResult> {
    const shard = this.shardOf(batch.partition);
    const s = this.#shards[shard]!;
    const transfer = [batch.data.buffer, batch.offsets.buffer, batch.seqs.buffer] as ArrayBuffer[];
    let handedMs = 0;
    return this.#windows[shard]!.run(batch.offsets.length - 1, () => {
      handedMs = epochMs();
      return s.call((api) => api.applyBatch(Comlink.transfer(batch, transfer)));
    }).then((r) => {
      if (r.stamps !== undefined) r.stamps.handedMs = handedMs;
      s.noteStats(r.stats);
      this.clock.observe(r.times);
      return r;
    });
  }

  /** Batches held on main per shard, waiting for room in the shard's window. */
  heldBatches(): number[] {
    return this.#windows.map((w) => w.held);
  }

  /** The user's profile; an alias is followed to its primary's shard (README "Identity"), at most MAX_HOPS times. */
  async getProfile(partition: number, userId: string, asOfMs: number, encoding: ReplyEncoding, deadline?: QueryDeadline, explain = false): Promise<ProfileResult> {
    let resolved: ResolvedUser | undefined;
    for (let hop = 0; ; hop++) {
      const r = await this.#queryPorts[this.shardOf(partition)]!.call([userId, asOfMs, encoding, deadline, explain, resolved]);
      if (!("alias" in r) || r.alias === undefined) return r as ProfileResult;
      if (hop >= MAX_HOPS) return { ok: false, error: toWire(new PortraitError(ErrorCode.INTERNAL, `the aliases of user ${JSON.stringify(userId)} form a loop`)) };
      resolved = { asked: userId, key: r.alias[0] };
      partition = r.alias[1];
    }
  }

  async getRecContext(partition: number, userId: string, asOfMs: number, deadline?: QueryDeadline, lstmVersion?: string): Promise<RecContextResult> {
    let resolved: ResolvedUser | undefined;
    for (let hop = 0; ; hop++) {
      const r = await this.#owner(partition).call<ShardRecContextResult>((api) => api.getRecContext(userId, asOfMs, deadline, lstmVersion, resolved));
      if (!("alias" in r) || r.alias === undefined) return r as RecContextResult;
      if (hop >= MAX_HOPS) return { ok: false, error: toWire(new PortraitError(ErrorCode.INTERNAL, `the aliases of user ${JSON.stringify(userId)} form a loop`)) };
      resolved = { asked: userId, key: r.alias[0] };
      partition = r.alias[1];
    }
  }

  /** Sets the models of every shard (ShardApi.setModels); resolves with each shard's versions. */
  setModels(set: ShardModelSet): Promise<ShardModelVersions[]> {
    return Promise.all(this.#shards.map((s) => s.call<ShardModelVersions>((api) => api.setModels(set))));
  }

  /** Fault injection, tests only: blocks the shard's thread for `ms` once it reaches this call; resolves when it is free again. */
  faultStall(shard: number, ms: number): Promise<void> {
    return this.#shards[shard]!.call((api) => api.faultStall(ms));
  }

  /** The partition's outbound messages were published (BatchSink.published): the shard drops them from its outbox. */
  published(partition: number, done: OutboxRef[]): void {
    void this.#owner(partition).call((api) => api.published(partition, done)).catch(() => undefined);
  }

  /**
   * Every shard removes the outbox entries it was told are published (published) now rather than with its next commit:
   * a forget replies only after this, so no published notice or transition naming the user is left in LMDB.
   */
  flushOutboxes(): Promise<void> {
    return Promise.all(this.#shards.map((s) => s.call((api) => api.flushOutbox()))).then(() => undefined);
  }

  /** Replaces every shard's audience definitions. */
  setAudiences(defs: AudienceDefinition[]): Promise<void> {
    return Promise.all(this.#shards.map((s) => s.call((api) => api.setAudiences(defs)))).then(() => undefined);
  }

  /**
   * Ticks every shard (timers, backfill chunks); resolves with each shard's result once its writes committed. `only`: the
   * partitions to tick (cluster mode: those this node holds a lease on); every partition when undefined.
   */
  tick(only?: number[]): Promise<(TickResult & { backfill: BackfillProgress })[]> {
    return Promise.all(this.#shards.map((s) => s.call((api) => api.tick(only))));
  }

  /** An audience's count and a page of members (any shard reads the one LMDB). */
  audienceQuery(audienceId: string, after: string, limit: number): Promise<AudienceQueryResult> {
    return this.#shards[0]!.call<AudienceQueryResult>((api) => api.audienceQuery(audienceId, after, limit));
  }

  /** An uplift report of an audience's current members (any shard reads the one LMDB). */
  audienceReport(audienceId: string, days: number): Promise<AudienceReportResult> {
    return this.#shards[0]!.call<AudienceReportResult>((api) => api.audienceReport(audienceId, days));
  }

  /** Forgets a user in the partition's shard (ShardApi.forget). */
  forget(partition: number, userId: string, resolvedKey?: string): Promise<ForgetResult> {
    return this.#owner(partition).call<ForgetResult>((api) => api.forget(userId, resolvedKey));
  }

  /** Cluster mode: restores a partition from its changelog in its shard (ShardApi.adopt). */
  adopt(partition: number, users: [string, Uint8Array | null, number][], position: number): Promise<number> {
    return this.#owner(partition).call<number>((api) => api.adopt(partition, users, position));
  }

  /** Removes an alias entry in the partition's shard (ShardApi.forgetAlias). */
  forgetAlias(partition: number, key: string): Promise<{ ok: true } | { ok: false; error: WireError }> {
    return this.#owner(partition).call<{ ok: true } | { ok: false; error: WireError }>((api) => api.forgetAlias(key));
  }

  /**
   * Every live shard's stats: asked for, or, when a shard does not answer
   * within 250 ms (a long batch), the ones its last batch carried.
   */
  stats(): Promise<ShardStats[]> {
    return Promise.all(this.#shards.filter((s) => s.alive).map((s) => s.stats((api) => api.stats(), STATS_WAIT_MS, 10 * STATS_WAIT_MS)))
      .then((all) => all.filter((st): st is ShardStats => st !== undefined));
  }

  /** Closes every shard's store (waiting for pending commits), then stops the threads. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#shards.map((s) => s.close((api) => api.close())));
    for (const q of this.#queryPorts) q.close();
  }
}
