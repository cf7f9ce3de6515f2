/**
 * Main-thread side of the recs worker: starts it, hands each shard a
 * MessagePort on which the shard posts its committed item events directly to
 * the worker (the main thread does not relay them), and forwards requests.
 * The item events queued on those ports are bounded by one count shared by
 * the shards and the worker (ItemEventSink, recs option maxQueuedItemEvents):
 * beyond it the shards drop item events (drop-newest); co-visitation,
 * trending and the item statistics are approximate derived state, profiles
 * are unaffected. If
 * the worker exits, pending calls reject with WORKER_EXITED and `onExit` is
 * told.
 */
import * as Comlink from "comlink";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import { MessageChannel, type MessagePort, type Worker } from "node:worker_threads";
import { ErrorCode, PortraitError } from "../errors.js";
import type { ItemEventSinks } from "../shard/shard-pool.js";
import { spawnWorker } from "../shard/spawn-worker.js";
import { registerErrorTransfer } from "../threads/comlink-errors.js";
import { compileRecsOptions } from "./recs-options.js";
import type { PrepareRequest, PrepareResult, RecsApi, RecsInit, RecsStats, UpsertResult } from "./recs-protocol.js";

registerErrorTransfer();

export class RecsHost {
  readonly #worker: Worker;
  readonly #api: Comlink.Remote<RecsApi>;
  readonly #exited: Promise<never>;
  readonly #queued = new Int32Array(new SharedArrayBuffer(4));
  #alive = true;
  #closed = false;

  private constructor(worker: Worker, onExit: (err: PortraitError) => void) {
    this.#worker = worker;
    this.#api = Comlink.wrap<RecsApi>(nodeEndpoint(worker));
    this.#exited = new Promise<never>((_, reject) => {
      const fail = (why: string) => {
        if (!this.#alive) return;
        this.#alive = false;
        const err = new PortraitError(ErrorCode.WORKER_EXITED, `recs worker ${why}`);
        reject(err);
        if (!this.#closed) onExit(err);
      };
      worker.once("error", (e) => fail(`failed: ${e.message}`));
      worker.once("exit", (code) => fail(`exited with code ${code}`));
    });
    this.#exited.catch(() => undefined);
  }

  /** Starts the worker; returns the host and, for ShardPool.start, one port per shard and the queue bound they share. */
  static async start(init: Omit<RecsInit, "itemEventsQueued">, shards: number, onExit: (err: PortraitError) => void): Promise<{ host: RecsHost; itemEvents: ItemEventSinks }> {
    const maxQueued = compileRecsOptions(init.recs).maxQueuedItemEvents;
    const host = new RecsHost(spawnWorker(import.meta.url, "recs.worker", "portrait-recs"), onExit);
    await host.#call(() => host.#api.init({ ...init, itemEventsQueued: host.#queued }));
    const ports: MessagePort[] = [];
    for (let i = 0; i < shards; i++) {
      const ch = new MessageChannel();
      await host.#call(() => host.#api.addItemEventPort(Comlink.transfer(ch.port2, [ch.port2])));
      ports.push(ch.port1);
    }
    return { host, itemEvents: { ports, queued: host.#queued, maxQueued } };
  }

  /** Item events the shards posted that the worker has not observed yet (exact: the shared count). */
  itemEventsQueued(): number {
    return Atomics.load(this.#queued, 0);
  }

  #call<T>(f: () => Promise<T>): Promise<T> {
    if (!this.#alive) return this.#exited;
    return Promise.race([f(), this.#exited]);
  }

  prepare(req: PrepareRequest): Promise<PrepareResult> {
    // The worker sees users only under the id their state is kept under (a pseudonym when pseudonymisation is on).
    const r = req.userId === req.context.userKey ? req : { ...req, userId: req.context.userKey };
    return this.#call(() => this.#api.prepare(r) as Promise<PrepareResult>);
  }

  upsert(bytes: Uint8Array): Promise<UpsertResult> {
    return this.#call(() => this.#api.upsert(bytes) as Promise<UpsertResult>);
  }

  stats(): Promise<RecsStats> {
    return this.#call(() => this.#api.stats());
  }

  /** Fault injection, tests only: blocks the worker's thread for `ms` once it reaches this call; resolves when it is free again. */
  faultStall(ms: number): Promise<void> {
    return this.#call(() => this.#api.faultStall(ms));
  }

  /** Stops the worker. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#alive) await this.#call(() => this.#api.close()).catch(() => undefined);
    this.#alive = false;
    this.#api[Comlink.releaseProxy]();
    await this.#worker.terminate();
  }
}
