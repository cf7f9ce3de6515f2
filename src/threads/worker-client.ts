/**
 * The main-thread side of one comlink worker thread: spawn, calls that fail
 * with WORKER_EXITED once the thread is gone, stats with a deadline, and an
 * idempotent close. The shard pool and the recs host each hold one per
 * thread. Errors thrown in the worker keep their code (comlink-errors.ts).
 */
import * as Comlink from "comlink";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import type { Worker } from "node:worker_threads";
import { ErrorCode, PortraitError } from "../errors.js";
import { registerErrorTransfer } from "./comlink-errors.js";
import { spawnWorker } from "./spawn-worker.js";

registerErrorTransfer();

export interface WorkerClientOptions {
  /** The caller's import.meta.url and the worker file name next to it without extension, e.g. "shard.worker". */
  base: string;
  module: string;
  /** The thread's name (in stack traces and diagnostics), e.g. "portrait-shard-0". */
  threadName: string;
  /** How errors name the thread, e.g. "shard worker 0". */
  what: string;
  /**
   * Told once when the thread fails or exits on its own (not when close()
   * terminates it); every pending and later call rejects with the same
   * WORKER_EXITED error.
   */
  onExit: (err: PortraitError) => void;
  /**
   * Bound of the thread's V8 heap (its old generation), bytes; V8's default
   * where absent. A thread that outgrows it fails out of memory (onExit).
   */
  maxHeapBytes?: number;
  /** Bound of the thread's V8 semi-space, bytes (its young generation is 3 x it); V8's default where absent. */
  semiSpaceBytes?: number;
}

export class WorkerClient<Api, Stats = never> {
  readonly api: Comlink.Remote<Api>;
  /** Rejects with WORKER_EXITED when the thread is gone; never resolves. */
  readonly exited: Promise<never>;
  readonly #worker: Worker;
  /** Rejecters of the calls not answered yet: a thread that goes rejects them all (WORKER_EXITED). */
  readonly #pending = new Set<(err: PortraitError) => void>();
  #alive = true;
  #closed = false;
  #stats: Stats | undefined;

  constructor(o: WorkerClientOptions) {
    const limits = o.maxHeapBytes === undefined && o.semiSpaceBytes === undefined ? undefined : {
      ...(o.maxHeapBytes !== undefined ? { maxOldGenerationSizeMb: Math.ceil(o.maxHeapBytes / 2 ** 20) } : {}),
      ...(o.semiSpaceBytes !== undefined ? { maxYoungGenerationSizeMb: 3 * Math.ceil(o.semiSpaceBytes / 2 ** 20) } : {}),
    };
    this.#worker = spawnWorker(o.base, o.module, o.threadName, limits);
    this.api = Comlink.wrap<Api>(nodeEndpoint(this.#worker));
    this.exited = new Promise<never>((_, reject) => {
      const fail = (why: string) => {
        if (!this.#alive) return;
        this.#alive = false;
        const err = new PortraitError(ErrorCode.WORKER_EXITED, `${o.what} ${why}`);
        reject(err);
        for (const r of this.#pending) r(err);
        this.#pending.clear();
        o.onExit(err);
      };
      this.#worker.once("error", (e) => fail(`failed: ${e.message}`));
      this.#worker.once("exit", (code) => fail(`exited with code ${code}`));
    });
    this.exited.catch(() => undefined);
  }

  get alive(): boolean {
    return this.#alive;
  }

  /**
   * Runs a call on the worker; rejects with WORKER_EXITED if the thread is
   * gone or goes before it answers. (Not a race against `exited`: that
   * promise stays pending while the thread lives, and every race left a
   * reaction on it holding the call's result, so every reply ever received,
   * batch results, profiles and candidate lists, stayed on the heap.)
   */
  call<T>(f: (api: Comlink.Remote<Api>) => Promise<T>): Promise<T> {
    if (!this.#alive) return this.exited;
    return new Promise<T>((resolve, reject) => {
      this.#pending.add(reject);
      f(this.api).then(resolve, reject).finally(() => this.#pending.delete(reject));
    });
  }

  /** The latest stats heard from the worker: asked with stats(), or reported along with other replies (noteStats). */
  get lastStats(): Stats | undefined {
    return this.#stats;
  }

  noteStats(s: Stats): void {
    this.#stats = s;
  }

  /**
   * Asks the worker for its stats, waiting at most `waitMs` (`firstWaitMs`
   * while none were ever heard): a busy worker answers with the last ones
   * heard instead (undefined when none). The late answer still updates them.
   */
  async stats(ask: (api: Comlink.Remote<Api>) => Promise<Stats>, waitMs: number, firstWaitMs = waitMs): Promise<Stats | undefined> {
    const asked = this.call(ask).then((s) => (this.#stats = s));
    asked.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), this.#stats === undefined ? firstWaitMs : waitMs)));
    try {
      return (await Promise.race([asked, late])) ?? this.#stats;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Lets the worker finish (`finish`, e.g. its close call; errors ignored), then stops the thread. Idempotent. */
  async close(finish?: (api: Comlink.Remote<Api>) => Promise<unknown>): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#alive && finish !== undefined) await this.call(finish).catch(() => undefined);
    this.#alive = false;
    this.api[Comlink.releaseProxy]();
    await this.#worker.terminate();
  }
}
