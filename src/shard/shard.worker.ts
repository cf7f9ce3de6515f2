/**
 * Shard worker thread: owns a set of partitions, keeps their users' actors,
 * applies event batches in order and commits them to LMDB. Exposed to the main
 * thread over comlink (ShardApi).
 *
 * Each batch is applied synchronously (an actor handles one event at a time,
 * in stream order), its writes are queued in one LMDB transaction, and the
 * next batch can be applied while that commit flushes. The reply for a batch
 * is sent when its commit resolves; commits resolve in order.
 *
 * A query whose deadline passed before it got here is answered OVERLOADED
 * without work (main has already replied OVERLOADED at the deadline).
 *
 * User ids are pseudonymised here when a key is configured (events after
 * decoding, queries on arrival; src/shard/pseudonym.ts): actors, LMDB and the
 * recs worker see only the pseudonym. A forget is ordered with the batches
 * (see ShardApi.forget).
 */
import { applyEvent, newUserState, profileView, type PredictionsView, type UserState } from "../actors/user-profile.js";
import type { CompiledProfileOptions } from "../actors/profile-options.js";
import { ErrorCode, OverloadedError, PortraitError, UnknownUserError, toWire, type WireError } from "../errors.js";
import { ChurnModel } from "../models/churn-model.js";
import { deepFmUserFeatures } from "../models/deepfm-features.js";
import type { LstmEvent } from "../models/lstm-features.js";
import { LstmRuntime } from "../models/lstm-runtime.js";
import { heapStats } from "../obs/heap.js";
import { createLogger, type Logger } from "../obs/logger.js";
import { ProfileStore } from "../store/profile-store.js";
import { decodeEvent, type EventValidationOptions } from "../wire/event-validation.js";
import { EventType, pb } from "../wire/proto.js";
import { ItemEventSender, newItemEventBatch, pushItemEvent } from "../threads/item-event-queue.js";
import { exposeWorker, stallThread } from "../threads/worker-thread.js";
import { pseudonymiser, type Pseudonymise } from "./pseudonym.js";
import type { DeadLetter, EventBatch } from "../bus/event-batch.js";
import type { ProfileResult, QueryDeadline, RecContext, RecContextResult, ReplyEncoding } from "../contracts.js";
import type { ShardStats } from "../obs/metrics.js";
import type { ForgetResult, ShardApi, ShardBatchResult, ShardInit, ShardReady } from "./shard-protocol.js";

const encoder = new TextEncoder();

/** The cause of a failed lmdb-js write: its `commitError` is a promise that rejects with the LMDB error (e.g. "No space left on device"). */
async function commitFailure(err: unknown): Promise<string> {
  const e = err as Error & { commitError?: Promise<unknown> };
  if (e?.commitError === undefined) return e?.message ?? String(err);
  const cause = await Promise.race([e.commitError.then(() => undefined, (x: unknown) => x), new Promise((r) => setTimeout(r, 100))]);
  return cause instanceof Error ? cause.message : e.message;
}

interface Actor {
  state: UserState;
  /** Number of the last batch that changed this actor; it may be dropped from memory once that batch committed. */
  lastBatch: number;
  /** Used since the eviction sweep last passed it (CLOCK second chance). */
  referenced: boolean;
  /** The live LSTM state (h then c); state.lstm holds the same bytes for LMDB. */
  lstm: Float32Array | undefined;
}

/** A copy of the user's stored LSTM state when it belongs to the running model version, else a zero state. */
function storedLstmState(state: UserState, rt: LstmRuntime): Float32Array {
  const h = rt.initialState();
  if (state.lstm !== undefined && state.lstmV === rt.version && state.lstm.byteLength === h.byteLength) new Uint8Array(h.buffer).set(state.lstm);
  return h;
}

/** One LSTM wave: each actor at most once. */
interface Wave { states: Float32Array[]; events: LstmEvent[]; prevMs: number[] }

class Shard implements ShardApi {
  #init!: ShardInit;
  #store!: ProfileStore;
  #log!: Logger;
  #profile!: CompiledProfileOptions;
  #validation!: EventValidationOptions;
  readonly #actors = new Map<string, Actor>();
  readonly #appliedSeq = new Map<number, number>();
  /** Raw user id -> the id state is kept under (identity without pseudonymisation). */
  #key!: Pseudonymise;
  /** Keys whose removal is not committed yet (-> forgets pending): LMDB still returns their old state. */
  readonly #erasing = new Map<string, number>();
  /** Batches applied but not yet committed and posted; a forget waits for those before it. */
  readonly #inflight = new Set<Promise<unknown>>();
  #batchNo = 0;
  #committedBatch = 0;
  #pendingWrites = 0;
  #watermarkMs = 0;
  #lstm: LstmRuntime | undefined;
  #churn: ChurnModel | undefined;
  #itemEvents: ItemEventSender | undefined;

  /** OVERLOADED when the query's deadline passed before this shard could start it. */
  #late(deadline: QueryDeadline | undefined): WireError | undefined {
    if (deadline === undefined) return undefined;
    const now = Date.now();
    if (now <= deadline.deadlineMs) return undefined;
    return toWire(new OverloadedError(`the query waited ${now - deadline.receivedMs} ms in the engine before shard ${this.#init.shard} could start it ` +
      `(allowed ${deadline.deadlineMs - deadline.receivedMs} ms); try again later`));
  }

  async init(init: ShardInit): Promise<ShardReady> {
    this.#init = init;
    this.#profile = init.profile;
    this.#validation = init.validation;
    this.#key = pseudonymiser(init.pseudonymKey);
    this.#log = createLogger(init.logLevel, { component: "shard", shard: init.shard });
    if (init.itemEvents !== undefined) this.#itemEvents = new ItemEventSender(init.itemEvents, this.#log);
    if (init.models.lstmDir !== undefined) this.#lstm = LstmRuntime.load(init.models.lstmDir);
    if (init.models.churnDir !== undefined) this.#churn = ChurnModel.load(init.models.churnDir);
    this.#store = new ProfileStore({ dataDir: init.dataDir, mapSizeBytes: init.mapSizeBytes });
    const appliedSeqs: Record<number, number> = {};
    for (const p of init.partitions) {
      const seq = this.#store.getAppliedSeq(p);
      this.#appliedSeq.set(p, seq);
      appliedSeqs[p] = seq;
    }
    this.#log.info({ partitions: init.partitions.length }, "shard ready");
    return { appliedSeqs };
  }

  #actor(userId: string): Actor {
    let a = this.#actors.get(userId);
    if (a !== undefined) {
      a.referenced = true;
      return a;
    }
    const stored = this.#erasing.has(userId) ? undefined : this.#store.getState(userId);
    a = { state: stored ?? newUserState(), lastBatch: 0, referenced: false, lstm: undefined };
    this.#actors.set(userId, a);
    return a;
  }

  /**
   * Drops actors beyond maxActors, oldest first, CLOCK-style: a recently used
   * actor gets a second chance (moved to the back), and an actor whose last
   * change is not committed yet is never dropped (LMDB would return stale state).
   */
  #evict(): void {
    let excess = this.#actors.size - this.#init.maxActors;
    let budget = this.#actors.size;
    for (const [id, a] of this.#actors) {
      if (excess <= 0 || budget-- <= 0) break;
      if (a.lastBatch > this.#committedBatch) continue;
      this.#actors.delete(id);
      if (a.referenced) {
        a.referenced = false;
        this.#actors.set(id, a);
      } else {
        excess--;
      }
    }
  }

  /**
   * The actor's live LSTM state: from its stored bytes when they belong to the
   * running model version, else a zero state (a new user, or a new version).
   */
  #lstmState(a: Actor, rt: LstmRuntime): Float32Array {
    if (a.lstm !== undefined) return a.lstm;
    const h = storedLstmState(a.state, rt);
    a.lstm = h;
    a.state.lstm = new Uint8Array(h.buffer);
    a.state.lstmV = rt.version;
    return h;
  }

  /** Steps every applied event's actor once per event, in waves (a user's k-th event of the batch is in wave k). */
  #stepLstm(rt: LstmRuntime, steps: Array<[Actor, LstmEvent, number]>): void {
    const waves: Wave[] = [];
    const depth = new Map<Actor, number>();
    for (const [a, e, prevMs] of steps) {
      const d = depth.get(a) ?? 0;
      depth.set(a, d + 1);
      const w = (waves[d] ??= { states: [], events: [], prevMs: [] });
      w.states.push(this.#lstmState(a, rt));
      w.events.push(e);
      w.prevMs.push(prevMs);
    }
    for (const w of waves) rt.step(w.states, w.events, w.prevMs);
  }

  applyBatch(batch: EventBatch): Promise<ShardBatchResult> {
    // The apply runs synchronously in this call; `done` settles once the batch committed and posted its item events.
    const run = this.#applyBatch(batch);
    const done = run.then(() => undefined, () => undefined);
    this.#inflight.add(done);
    void done.then(() => this.#inflight.delete(done));
    return run;
  }

  async #applyBatch(batch: EventBatch): Promise<ShardBatchResult> {
    const t0 = performance.now();
    const { partition, data, offsets, seqs } = batch;
    const n = seqs.length;
    const applied = this.#appliedSeq.get(partition);
    if (applied === undefined) throw new Error(`shard ${this.#init.shard} does not own partition ${partition}`);
    const batchNo = ++this.#batchNo;
    const now = Date.now();
    const deadLetters: DeadLetter[] = [];
    const dirty = new Map<string, Actor>();
    let appliedCount = 0;
    let skipped = 0;
    const lstm = this.#lstm;
    const steps: Array<[Actor, LstmEvent, number]> = [];
    const items = this.#itemEvents !== undefined ? newItemEventBatch() : undefined;
    const feedback: Record<string, [number, number]> = {};
    const keys = this.#init.pseudonymKey !== undefined ? new Map<string, string>() : undefined;
    // Highest sequence done so far: a partition delivers in stream order, so
    // anything at or below it is a redelivery (even one inside this batch).
    let high = applied;
    for (let i = 0; i < n; i++) {
      const seq = seqs[i]!;
      const r = decodeEvent(data.subarray(offsets[i]!, offsets[i + 1]!), partition, now, this.#validation);
      if (!r.ok) {
        deadLetters.push({ index: i, seq, reason: r.reason, detail: r.detail });
        if (seq > high) high = seq;
        continue;
      }
      if (seq <= high) {
        skipped++;
        continue;
      }
      high = seq;
      const e = r.event;
      if (keys !== undefined) {
        let k = keys.get(e.userId);
        if (k === undefined) keys.set(e.userId, (k = this.#key(e.userId)));
        e.userId = k;
      }
      const actor = this.#actor(e.userId);
      if (lstm !== undefined) steps.push([actor, e, actor.state.lastSeenMs]);
      if (items !== undefined && e.itemId !== "") pushItemEvent(items, e, !actor.state.recent.includes(e.itemId));
      if (e.type === EventType.REC_IMPRESSION || e.type === EventType.REC_CLICK) {
        const f = (feedback[e.modelVersion] ??= [0, 0]);
        f[e.type === EventType.REC_IMPRESSION ? 0 : 1]++;
      }
      applyEvent(actor.state, e, this.#profile);
      actor.lastBatch = batchNo;
      dirty.set(e.userId, actor);
      appliedCount++;
      if (e.timestampMs > this.#watermarkMs) this.#watermarkMs = e.timestampMs;
    }
    const tl = performance.now();
    if (lstm !== undefined && steps.length > 0) this.#stepLstm(lstm, steps);
    const lstmMs = performance.now() - tl;
    const lastSeq = n > 0 ? seqs[n - 1]! : applied;
    this.#appliedSeq.set(partition, high);
    // One conditional block, one LMDB transaction: the states and the sequence commit together, after the partition's previous batch.
    const commit = this.#store.commitBatch(partition, high, [...dirty].map(([id, a]) => [id, a.state] as const));
    const t1 = performance.now();
    this.#pendingWrites++;
    let committed: boolean;
    try {
      committed = await commit;
    } catch (err) {
      // Nothing of this batch is acknowledged: the engine stops, and a restart once the cause is fixed redelivers it.
      throw new PortraitError(ErrorCode.STORAGE_FAILED,
        `LMDB commit failed in ${this.#init.dataDir}: ${await commitFailure(err)} (disk full or I/O error?)`);
    } finally {
      this.#pendingWrites--;
    }
    if (!committed) {
      throw new PortraitError(ErrorCode.STORAGE_FAILED,
        `LMDB commit of partition ${partition} skipped in ${this.#init.dataDir}: an earlier batch of the partition failed to commit`);
    }
    if (batchNo > this.#committedBatch) this.#committedBatch = batchNo;
    this.#evict();
    if (items !== undefined && items.itemIds.length > 0) this.#itemEvents!.post(items);
    return {
      partition, lastSeq, applied: appliedCount, skipped, deadLetters,
      applyMs: t1 - t0, commitMs: performance.now() - t1, watermarkMs: this.#watermarkMs,
      lstmSteps: steps.length, lstmMs, feedback, stats: this.stats(),
    };
  }

  /** The user's current state, or undefined (never the stored state of a user being forgotten). */
  #state(key: string): UserState | undefined {
    return this.#actors.get(key)?.state ?? (this.#erasing.has(key) ? undefined : this.#store.getState(key));
  }

  getProfile(userId: string, asOfMs: number, encoding: ReplyEncoding, deadline?: QueryDeadline): ProfileResult {
    const late = this.#late(deadline);
    if (late !== undefined) return { ok: false, error: late };
    try {
      const state = this.#state(this.#key(userId));
      if (state === undefined) {
        return { ok: false, error: toWire(new UnknownUserError(userId)) };
      }
      const asOf = asOfMs > 0 ? asOfMs : Math.max(this.#watermarkMs, state.lastSeenMs);
      const profile = profileView(userId, state, asOf, this.#profile);
      const predictions = this.#predictions(state, asOf);
      if (predictions !== undefined) profile.predictions = predictions;
      const body = encoding === "json"
        ? encoder.encode(JSON.stringify({ profile }))
        : pb.ProfileReply.encode({ profile }).finish();
      // Not transferred: protobufjs may hand out a view into Node's shared buffer pool.
      return { ok: true, body };
    } catch (err) {
      this.#log.error({ err }, "profile query failed");
      return { ok: false, error: toWire(err) };
    }
  }

  /** What a recommendation needs from the user's profile (known false when the user has none). */
  getRecContext(userId: string, asOfMs: number, deadline?: QueryDeadline): RecContextResult {
    const late = this.#late(deadline);
    if (late !== undefined) return { ok: false, error: late };
    try {
      const userKey = this.#key(userId);
      const state = this.#state(userKey);
      const asOf = asOfMs > 0 ? asOfMs : Math.max(this.#watermarkMs, state?.lastSeenMs ?? 0);
      if (state === undefined) {
        return { ok: true, context: { known: false, userKey, asOfMs: asOf, recentItems: [], topCategories: [], nextCategories: [], purchasedItems: [], user: deepFmUserFeatures(newUserState(), asOf), lstmH: undefined } };
      }
      const view = profileView(userId, state, asOf, this.#profile);
      let lstmH: Float32Array | undefined;
      let nextCategories: RecContext["nextCategories"] = [];
      if (this.#lstm !== undefined) {
        const h = storedLstmState(state, this.#lstm);
        nextCategories = this.#lstm.predict(h, 3).nextCategories;
        lstmH = h.slice(0, this.#lstm.hidden);
      }
      const context: RecContext = {
        known: true, userKey, asOfMs: asOf, recentItems: view.recentItems, topCategories: view.categories.slice(0, 5), nextCategories,
        purchasedItems: state.bought ?? [], user: deepFmUserFeatures(state, asOf), lstmH, lstmVersion: this.#lstm?.version,
      };
      return { ok: true, context };
    } catch (err) {
      this.#log.error({ err }, "recommendation context failed");
      return { ok: false, error: toWire(err) };
    }
  }

  #predictions(state: UserState, asOfMs: number): PredictionsView | undefined {
    if (this.#lstm === undefined && this.#churn === undefined) return undefined;
    const out: PredictionsView = { lstmVersion: "", purchasePropensity: 0, nextCategories: [], churnVersion: "", churnRisk: 0 };
    if (this.#lstm !== undefined) {
      const p = this.#lstm.predict(storedLstmState(state, this.#lstm));
      out.lstmVersion = this.#lstm.version;
      out.purchasePropensity = p.purchasePropensity;
      out.nextCategories = p.nextCategories;
    }
    // The churn model describes customers who have bought: it has no answer for the others.
    if (this.#churn !== undefined && state.lastPurchaseMs > 0) {
      out.churnVersion = this.#churn.version;
      out.churnRisk = this.#churn.predict(state, asOfMs);
    }
    return out;
  }

  async forget(userId: string): Promise<ForgetResult> {
    const key = this.#key(userId);
    const existed = this.#actors.has(key) || (!this.#erasing.has(key) && this.#store.hasState(key));
    // Batches applied before this point: their puts commit before the removal, and their item events must reach the recs worker first.
    const before = [...this.#inflight];
    this.#actors.delete(key);
    this.#erasing.set(key, (this.#erasing.get(key) ?? 0) + 1);
    try {
      await this.#store.removeState(key);
      await Promise.all(before);
    } catch (err) {
      return { ok: false, error: { code: ErrorCode.STORAGE_FAILED, message: `LMDB commit failed in ${this.#init.dataDir}: ${await commitFailure(err)}` } };
    } finally {
      const n = this.#erasing.get(key)! - 1;
      if (n === 0) this.#erasing.delete(key);
      else this.#erasing.set(key, n);
    }
    // Always posted (never dropped, not counted in the queue bound): the recs worker must forget the user.
    this.#itemEvents?.forget(key);
    return { ok: true, existed };
  }

  stats(): ShardStats {
    return {
      shard: this.#init.shard, actorsCached: this.#actors.size, pendingWrites: this.#pendingWrites,
      itemEventsPosted: this.#itemEvents?.posted ?? 0, itemEventsDropped: this.#itemEvents?.dropped ?? 0, heap: heapStats(),
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

/**
 * When an LMDB transaction fails, lmdb-js rejects the promises of its writes
 * from inside whichever write call comes next (before that caller could
 * attach a handler), and rejects a shared `commitError` promise that nothing
 * else holds. The failure itself is reported once, as STORAGE_FAILED, by the
 * batch whose commit promise this worker awaits; these echoes must not crash
 * the worker before that report gets out. Any other unhandled rejection still
 * does.
 */
function isLmdbCommitEcho(reason: unknown, promise: Promise<unknown>): boolean {
  const commitFailed = reason instanceof Error && reason.message.startsWith("Commit failed") && "commitError" in reason;
  const commitErrorPromise = typeof (promise as Promise<unknown> & { reject?: unknown }).reject === "function";
  return commitFailed || commitErrorPromise;
}
process.on("unhandledRejection", (reason, promise) => {
  if (isLmdbCommitEcho(reason, promise)) return;
  throw reason;
});

exposeWorker(new Shard(), "shard.worker");
