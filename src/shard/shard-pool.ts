/**
 * Main-thread side of the shard workers: starts W worker threads, assigns
 * partitions to them (partition p belongs to shard p % W) and forwards
 * batches and queries. If a worker exits, every pending call is rejected with
 * WORKER_EXITED and `onExit` is told; the engine treats that as fatal (the
 * unacknowledged messages are redelivered after a restart).
 */
import * as Comlink from "comlink";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import type { MessagePort, Worker } from "node:worker_threads";
import { ErrorCode, PortraitError } from "../errors.js";
import { registerErrorTransfer } from "../threads/comlink-errors.js";
import { spawnWorker } from "./spawn-worker.js";
import type { EventBatch } from "../bus/event-batch.js";
import type { ProfileResult, QueryDeadline, RecContextResult, ReplyEncoding } from "../contracts.js";
import type { ShardStats } from "../obs/metrics.js";
import type { ForgetResult, ShardApi, ShardBatchResult, ShardInit } from "./shard-protocol.js";

/** Where the shards post their item events: one port per shard (index = shard) and the queue bound they share (ItemEventSink). */
export interface ItemEventSinks {
  ports: MessagePort[];
  queued: Int32Array;
  maxQueued: number;
}

/** How long a metrics scrape waits for a busy shard's stats before using the ones its last batch carried, ms. */
const STATS_WAIT_MS = 250;

export type ShardCommon = Omit<ShardInit, "shard" | "partitions" | "itemEvents">;

interface ShardHandle {
  worker: Worker;
  api: Comlink.Remote<ShardApi>;
  /** Rejects when the worker exits; never resolves. */
  exited: Promise<never>;
  alive: boolean;
  /** The latest stats heard from the shard (a batch result or a stats call). */
  last: ShardStats | undefined;
}

registerErrorTransfer();

export class ShardPool {
  readonly workers: number;
  readonly partitions: number;
  readonly #shards: ShardHandle[];
  /** Last applied sequence per partition, as found in LMDB at start. */
  readonly appliedAtStart: ReadonlyMap<number, number>;
  #closed = false;

  private constructor(shards: ShardHandle[], partitions: number, applied: Map<number, number>) {
    this.#shards = shards;
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
    itemEvents?: ItemEventSinks,
  ): Promise<ShardPool> {
    const shards: ShardHandle[] = [];
    for (let i = 0; i < workers; i++) {
      const worker = spawnWorker(import.meta.url, "shard.worker", `portrait-shard-${i}`);
      const handle: ShardHandle = { worker, api: Comlink.wrap<ShardApi>(nodeEndpoint(worker)), exited: undefined as never, alive: true, last: undefined };
      handle.exited = new Promise<never>((_, reject) => {
        const fail = (why: string) => {
          if (!handle.alive) return;
          handle.alive = false;
          const err = new PortraitError(ErrorCode.WORKER_EXITED, `shard worker ${i} ${why}`);
          reject(err);
          onExit(i, err);
        };
        worker.once("error", (e) => fail(`failed: ${e.message}`));
        worker.once("exit", (code) => fail(`exited with code ${code}`));
      });
      handle.exited.catch(() => undefined);
      shards.push(handle);
    }
    const pool = new ShardPool(shards, partitions, new Map());
    const applied = pool.appliedAtStart as Map<number, number>;
    await Promise.all(
      shards.map(async (s, i) => {
        const owned = pool.partitionsOf(i);
        const port = itemEvents?.ports[i];
        const init: ShardInit = {
          ...common, shard: i, partitions: owned,
          ...(port !== undefined ? { itemEvents: { port, queued: itemEvents!.queued, maxQueued: itemEvents!.maxQueued } } : {}),
        };
        const ready = await pool.#call(s, () => s.api.init(port !== undefined ? Comlink.transfer(init, [port]) : init));
        for (const p of owned) applied.set(p, ready.appliedSeqs[p] ?? 0);
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

  #call<T>(s: ShardHandle, f: () => Promise<T>): Promise<T> {
    if (!s.alive) return s.exited;
    return Promise.race([f(), s.exited]);
  }

  /** Hands a packed batch to the partition's shard; its buffers are transferred. */
  applyBatch(batch: EventBatch): Promise<ShardBatchResult> {
    const s = this.#shards[this.shardOf(batch.partition)]!;
    const transfer = [batch.data.buffer, batch.offsets.buffer, batch.seqs.buffer] as ArrayBuffer[];
    return this.#call(s, () => s.api.applyBatch(Comlink.transfer(batch, transfer))).then((r) => {
      s.last = r.stats;
      return r;
    });
  }

  getProfile(partition: number, userId: string, asOfMs: number, encoding: ReplyEncoding, deadline?: QueryDeadline): Promise<ProfileResult> {
    const s = this.#shards[this.shardOf(partition)]!;
    return this.#call<ProfileResult>(s, () => s.api.getProfile(userId, asOfMs, encoding, deadline));
  }

  getRecContext(partition: number, userId: string, asOfMs: number, deadline?: QueryDeadline): Promise<RecContextResult> {
    const s = this.#shards[this.shardOf(partition)]!;
    return this.#call<RecContextResult>(s, () => s.api.getRecContext(userId, asOfMs, deadline));
  }

  /** Fault injection, tests only: blocks the shard's thread for `ms` once it reaches this call; resolves when it is free again. */
  faultStall(shard: number, ms: number): Promise<void> {
    const s = this.#shards[shard]!;
    return this.#call(s, () => s.api.faultStall(ms));
  }

  /** Forgets a user in the partition's shard (ShardApi.forget). */
  forget(partition: number, userId: string): Promise<ForgetResult> {
    const s = this.#shards[this.shardOf(partition)]!;
    return this.#call<ForgetResult>(s, () => s.api.forget(userId));
  }

  /**
   * Every live shard's stats: asked for, or, when a shard does not answer
   * within 250 ms (a long batch), the ones its last batch carried.
   */
  stats(): Promise<ShardStats[]> {
    return Promise.all(this.#shards.filter((s) => s.alive).map(async (s) => {
      const asked = this.#call(s, () => s.api.stats()).then((st) => (s.last = st));
      asked.catch(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), s.last === undefined ? 10 * STATS_WAIT_MS : STATS_WAIT_MS)));
      try {
        return (await Promise.race([asked, late])) ?? s.last;
      } finally {
        clearTimeout(timer);
      }
    })).then((all) => all.filter((st): st is ShardStats => st !== undefined));
  }

  /** Closes every shard's store (waiting for pending commits), then stops the threads. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled(this.#shards.map((s) => (s.alive ? this.#call(s, () => s.api.close()) : Promise.resolve())));
    for (const s of this.#shards) {
      s.alive = false;
      s.api[Comlink.releaseProxy]();
      await s.worker.terminate();
    }
  }
}
