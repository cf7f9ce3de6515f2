/**
 * The writes of a shard, in stream order: event batches and forgets.
 *
 * Each batch is applied synchronously (an actor handles one event at a time,
 * in stream order), its writes are queued in one LMDB transaction, and the
 * next batch can be applied while that commit flushes. A batch's promise
 * settles when its commit does; commits resolve in order. A forget is ordered
 * with the batches (ShardApi.forget).
 */
import type { Actor } from "../actors/actor.js";
import type { CompiledProfileOptions } from "../actors/profile-options.js";
import { applyEvent } from "../actors/user-profile.js";
import { riskFlagCounts, stateRiskFlagBits } from "../actors/risk.js";
import type { BatchResult, DeadLetter, EventBatch, LoggedFeedback } from "../bus/event-batch.js";
import { toWire, type WireError } from "../errors.js";
import type { LstmRuntime } from "../models/lstm-runtime.js";
import { analyseReviewEvent, type SentimentModel } from "../models/sentiment-model.js";
import type { UserState } from "../actors/user-profile.js";
import type { ProfileStore } from "../store/profile-store.js";
import { newItemEventBatch, pushItemEvent, type ItemEventSender } from "../threads/item-event-queue.js";
import { decodeEvent, type DeadLetterReason, type EventValidationOptions } from "../wire/event-validation.js";
import { EventType, pb } from "../wire/proto.js";
import type { ActorCache } from "./actor-cache.js";
import type { CategoryLabels } from "./category-labels.js";
import { MAX_AHEAD_PER_BATCH, type BatchTimes, type ClockReader } from "./engine-clock.js";
import { liveState, LstmSteps, stepLstm } from "./lstm-steps.js";
import type { Pseudonymise } from "./pseudonym.js";
import type { ForgetResult, TickResult } from "./shard-protocol.js";
import type { AudienceRunner } from "./audience-runner.js";
import type { TransitionReason } from "../actors/audience-state.js";
import { eventBit } from "../actors/audience-rules.js";
import type { OutboundMessage } from "../bus/event-batch.js";
import { mergingKey, PROFILE_PART, type AliasEntry, type IdentityWrites, type MergingEntry, type SideWrites } from "../store/profile-store.js";
import type { Subjects } from "../bus/subjects.js";
import { partitionOf } from "../wire/partition.js";
import { decodeChangelogState, encodeChangelogState } from "./changelog-state.js";
import type { ChangelogChange } from "../bus/event-batch.js";
import { mergeStates } from "../actors/identity-merge.js";
import { MAX_HOPS, forwardMessage, handoverMessage, mergeIdOf, readHandover, toOutbox } from "./identity.js";
import type { Event } from "../wire/proto.js";
import { applySocial, NoticeBatch, unbatchNotices, type Recipient } from "./social.js";
import { decodeShopEvent, shopEvent, type ShopEvent } from "../wire/shop-event.js";

const NO_KEY = new Uint8Array(0);

export interface BatchApplierDeps {
  shard: number;
  partitions: number[];
  store: ProfileStore;
  actors: ActorCache;
  profile: CompiledProfileOptions;
  validation: EventValidationOptions;
  /** Raw user id -> the id state is kept under; `pseudonymised` false when that is the id itself. */
  key: Pseudonymise;
  pseudonymised: boolean;
  /** The models the shard runs now (swapped between batches: a batch reads them once, at its start). */
  models: { readonly lstm: LstmRuntime | undefined; readonly sentiment: SentimentModel | undefined };
  itemEvents: ItemEventSender | undefined;
  /** Category names events carry. */
  labels: CategoryLabels;
  /** The engine clock (engine-clock.ts): which event times are in its era. */
  clock: ClockReader;
  /** The shard's audiences: evaluated after each batch, on timers and in backfills (audience-runner.ts). */
  audiences: AudienceRunner;
  /** Subjects (identity hand-overs and forwarded events go to the events subjects: README "Identity"). */
  subjects: Subjects;
  /** The deployment's partition count (a primary id's partition). */
  partitionCount: number;
  /** Cluster mode (README "Scale-out"): each batch returns its committed states, encoded, for the partition's changelog. */
  changelog?: boolean;
  /**
   * Queries answered inside a batch's apply (README "Queries"): `poll` answers
   * the lookups waiting now, except those `busy` names (users this batch has
   * changed so far), which `flush` answers once the batch's apply is whole.
   * Polled every POLL_EVERY_EVENTS events, between slices of the LSTM step and
   * of the profiles queued for the commit.
   * Absent: queries wait for the batch's end.
   */
  queries?: { poll(busy: (key: string) => boolean): void; flush(): void };
}

/** Events applied between two polls of the query port inside a batch (BatchApplierDeps.queries). */
const POLL_EVERY_EVENTS = 8;

/** Identity counters of a shard (README "Identity"). */
export interface IdentityStats {
  /** IDENTIFY events applied (merges started). */
  identifies: number;
  /** Hand-overs folded into a primary. */
  merges: number;
  /** Hand-overs skipped because their merge id was folded before. */
  duplicateMerges: number;
  /** Events forwarded from an alias to its primary's partition. */
  forwarded: number;
  /** Hand-overs dropped because the primary was forgotten while they were in flight. */
  forgottenHandovers: number;
  /** Alias-table reads from LMDB on ingest (users without an actor in memory). */
  aliasReads: number;
}


/** What a batch gathers besides its events' effects on their own actors. */
interface BatchWork {
  dirty: Map<string, Actor>;
  steps: LstmSteps;
  side: SideWrites;
  outbound: OutboundMessage[];
  identity: IdentityWrites;
  /** Users whose audiences are evaluated in whole (merged). */
  wholeEval: Set<string>;
  /** The index of a notice in its SOCIAL_NOTICE batch message (its forward's message id names it). */
  part?: number;
}

/**
 * An event of `type` changed the actor in batch `batchNo`: it is in the batch's `dirty`, and its event bits in the
 * batch (Actor.batchTypes, begun again at its first event of the batch) take the type's (eventBit).
 */
function touch(actor: Actor, key: string, type: EventType, batchNo: number, dirty: Map<string, Actor>): void {
  actor.batchTypes = (actor.lastBatch === batchNo ? actor.batchTypes : 0) | eventBit(type);
  actor.lastBatch = batchNo;
  dirty.set(key, actor);
}

/** A batch's outcome with what the engine clock needs from it. */
export interface AppliedBatch extends BatchResult {
  times: BatchTimes;
}

export class BatchApplier {
  readonly #d: BatchApplierDeps;
  readonly #appliedSeq = new Map<number, number>();
  /**
   * Users restored from a changelog record above the partition's restored
   * position (a batch cut short by a crash): their events up to the record's
   * sequence are in the record already, and are skipped on replay.
   */
  readonly #skipUntil = new Map<number, Map<string, number>>();
  /** Batches applied but not yet committed and posted; a forget waits for those before it. */
  readonly #inflight = new Set<Promise<unknown>>();
  #batchNo = 0;
  /** The users the batch being applied changed so far (queries for them wait for its end), undefined between batches. */
  #busy: Map<string, Actor> | undefined;
  readonly #isBusy = (key: string): boolean => this.#busy === undefined || this.#busy.has(key) || this.#pendingAliases.has(key);
  #committedBatch = 0;
  #pendingWrites = 0;
  #watermarkMs = 0;
  /** Alias entries written by batches not committed yet (LMDB has them once they are). */
  readonly #pendingAliases = new Map<string, AliasEntry>();
  /**
   * Whether LMDB may hold an alias entry of this shard's keys: it held some entry when the shard started, or this
   * shard made one since (only the shard of a key's partition writes its alias entry: #identity). Without any, an
   * event of a user not in memory needs no read of the `aliases` db (a deployment that never merges ids).
   */
  #aliasesStored: boolean;
  /** Signs hand-overs and forwarded events (src/wire/internal-mac.ts); without a key (tests of a bare pool) they are neither signed meaningfully nor checked. */
  get #internalKey(): Uint8Array {
    return this.#d.validation.internalKey ?? NO_KEY;
  }
  readonly identity: IdentityStats = { identifies: 0, merges: 0, duplicateMerges: 0, forwarded: 0, forgottenHandovers: 0, aliasReads: 0 };

  constructor(d: BatchApplierDeps) {
    this.#d = d;
    for (const p of d.partitions) this.#appliedSeq.set(p, d.store.getAppliedSeq(p));
    this.#aliasesStored = d.store.aliasCount() > 0;
  }

  /**
   * The alias entry of a key, or undefined when it is no alias: none while
   * LMDB can hold no alias of this shard's keys (#aliasesStored); an actor in
   * memory is none (its profile exists); else the batches' pending entries,
   * else LMDB (one read for a user without an actor in memory).
   */
  aliasOf(key: string): AliasEntry | undefined {
    if (!this.#aliasesStored) return undefined;
    const p = this.#pendingAliases.get(key);
    if (p !== undefined) return p;
    if (this.#d.actors.cached(key)) return undefined;
    this.identity.aliasReads++;
    return this.#d.store.getAlias(key);
  }

  /** Last applied stream sequence of each owned partition, as committed in LMDB at start. */
  appliedSeqs(): Record<number, number> {
    return Object.fromEntries(this.#appliedSeq);
  }

  /** Batches whose writes are queued and not committed yet. */
  get pendingWrites(): number {
    return this.#pendingWrites;
  }

  /** Settles once the batches and ticks in flight now have committed or failed. */
  settled(): Promise<void> {
    return Promise.all([...this.#inflight]).then(() => undefined);
  }

  apply(batch: EventBatch): Promise<AppliedBatch> {
    // The apply runs synchronously in this call; `done` settles once the batch committed and posted its item events.
    let run: Promise<AppliedBatch>;
    try {
      run = this.#apply(batch);
    } finally {
      // The batch's apply is whole (or failed whole): the lookups held back for its users see all of it.
      this.#busy = undefined;
      this.#d.queries?.flush();
    }
    const done = run.then(() => undefined, () => undefined);
    this.#inflight.add(done);
    void done.then(() => this.#inflight.delete(done));
    return run;
  }

  async #apply(batch: EventBatch): Promise<AppliedBatch> {
    const t0 = performance.now();
    const d = this.#d;
    const { partition, data, offsets, seqs } = batch;
    const n = seqs.length;
    const applied = this.#appliedSeq.get(partition);
    if (applied === undefined) throw new Error(`shard ${d.shard} does not own partition ${partition}`);
    const batchNo = ++this.#batchNo;
    const now = Date.now();
    const deadLetters: DeadLetter[] = [];
    const dirty = new Map<string, Actor>();
    let appliedCount = 0;
    let skipped = 0;
    const lstm = d.models.lstm;
    const sentiment = d.models.sentiment;
    const beyond = d.profile.beyondClicks;
    // Users newly flagged per signal (RISK_SIGNALS order), counted without a branch per event (a branch first taken
    // late in a run sends this loop back to be compiled again).
    let flagged0 = 0;
    let flagged1 = 0;
    let flagged2 = 0;
    const steps = new LstmSteps();
    const items = d.itemEvents !== undefined ? newItemEventBatch(n) : undefined;
    const feedback: Record<string, [number, number]> = {};
    const logged: LoggedFeedback[] = [];
    const keys = d.pseudonymised ? new Map<string, string>() : undefined;
    let inEraMs = 0;
    const ahead = new Map<string, number>();
    // Writes and messages of the batch besides the states: audiences, identity (outbox entries of hand-overs and forwards).
    const side: SideWrites = { puts: [], removes: [] };
    const outbound: OutboundMessage[] = [];
    const identity: IdentityWrites = { removeProfiles: [], aliasPuts: [], mergingPuts: [], mergingRemoves: [] };
    const wholeEval = new Set<string>();
    // Social notices the batch sends, published per recipients' partition after the loop (shard/social.ts).
    const notices = new NoticeBatch();
    // Highest sequence done so far: a partition delivers in stream order, so
    // anything at or below it is a redelivery (even one inside this batch).
    let high = applied;
    const skip = this.#skipUntil.get(partition);
    // Lookups are answered between events until the batch meets an event that changes users besides its own (identity, social).
    const queries = d.queries;
    let polling = queries !== undefined;
    this.#busy = dirty;
    for (let i = 0; i < n; i++) {
      if (polling && (i & (POLL_EVERY_EVENTS - 1)) === POLL_EVERY_EVENTS - 1) queries!.poll(this.#isBusy);
      const seq = seqs[i]!;
      const start = offsets[i]!;
      const end = offsets[i + 1]!;
      // A plain shop event is read straight into its fixed shape; anything else through protobufjs's Event (wire/shop-event.ts).
      const r = decodeShopEvent(data, start, end, partition, now, d.validation) ?? decodeEvent(data.subarray(start, end), partition, now, d.validation);
      if ("ok" in r && !r.ok) {
        deadLetters.push({ index: i, seq, reason: r.reason, detail: r.detail });
        if (seq > high) high = seq;
        continue;
      }
      if (seq <= high) {
        skipped++;
        continue;
      }
      high = seq;
      // The protobuf Event when decodeShopEvent left the event to decodeEvent; ev is whichever of the two the event has.
      let e = "ok" in r ? r.event : undefined;
      const ev = e ?? (r as ShopEvent);
      // A forwarded event (README "Identity") carries the key already.
      if (keys !== undefined && e?.forwarded !== true) {
        let k = keys.get(ev.userId);
        if (k === undefined) keys.set(ev.userId, (k = d.key(ev.userId)));
        ev.userId = k;
      }
      if (d.changelog === true && (ev.type >= EventType.FOLLOW || ev.type === EventType.IDENTIFY || ev.type === EventType.IDENTITY_HANDOVER)) {
        // Cluster mode: their effects on other users live in this node's LMDB and outbox, which a takeover does not carry.
        deadLetters.push({ index: i, seq, reason: "CLUSTER_UNSUPPORTED", detail: "identity and social events are not available in cluster mode (--cluster) in this version" });
        continue;
      }
      if (e !== undefined && (e.type >= EventType.FOLLOW || e.type === EventType.IDENTIFY || e.type === EventType.IDENTITY_HANDOVER)) polling = false;
      if (e !== undefined && e.type === EventType.SOCIAL_NOTICE && e.socialNotices.length > 0) {
        // A batch of notices (validated whole): each is applied to its recipient, or forwarded when the recipient is an alias.
        appliedCount += this.#noticeBatch(e, partition, seq, batchNo, notices, { dirty, steps, side, outbound, identity, wholeEval }, skip);
        continue;
      }
      if (skip !== undefined && seq <= (skip.get(ev.userId) ?? 0)) {
        skipped++;
        continue;
      }
      const alias = this.aliasOf(ev.userId);
      if (alias !== undefined || ev.type === EventType.IDENTIFY || ev.type === EventType.IDENTITY_HANDOVER) {
        polling = false;
        // A shop event of an alias goes on to the primary as protobufjs decodes it, under the key it has here.
        if (e === undefined) (e = pb.Event.decode(data.subarray(start, end))).userId = ev.userId;
        const verdict = this.#identity(e, alias, partition, seq, batchNo, { dirty, steps, side, outbound, identity, wholeEval });
        if (verdict === "skipped") skipped++;
        else if (verdict === "applied") appliedCount++;
        else deadLetters.push({ index: i, seq, reason: verdict.reason, detail: verdict.detail });
        continue;
      }
      if (e !== undefined && e.type >= EventType.FOLLOW) {
        // Social events and notices change only the social part (README "Social ties"): no counts, sessions, LSTM or item events.
        const verdict = this.#social(e, partition, seq, batchNo, dirty, notices);
        if (verdict === "applied") appliedCount++;
        else deadLetters.push({ index: i, seq, reason: verdict.reason, detail: verdict.detail });
        continue;
      }
      // One fixed shape for everything below (wire/shop-event.ts): the decoded Event's shape varies with the fields present.
      const x = e !== undefined ? shopEvent(e) : (r as ShopEvent);
      const actor = d.actors.actor(x.userId);
      if (lstm !== undefined) {
        // Before the event enters the timeline: a state of another version is re-encoded from the events before this one.
        liveState(actor, lstm);
        steps.push(actor, x, actor.state.lastSeenMs);
      }
      if (items !== undefined && x.itemId !== "") pushItemEvent(items, x, !actor.state.recent.includes(x.itemId));
      if (x.type === EventType.REC_IMPRESSION || x.type === EventType.REC_CLICK) {
        const f = (feedback[x.modelVersion] ??= [0, 0]);
        f[x.type === EventType.REC_IMPRESSION ? 0 : 1]++;
        if (x.recPropensity != null) {
          logged.push({ index: i, seq, click: x.type === EventType.REC_CLICK, requestId: x.recRequestId, itemId: x.itemId, propensity: x.recPropensity, timestampMs: x.timestampMs, eventId: x.eventId });
        }
      }
      const st = actor.state;
      let riskNew = 0;
      if (beyond) {
        // A review's text is read here, once, and not kept: the profile keeps the sentiment and the aspects.
        const review = analyseReviewEvent(sentiment, x);
        if (review !== undefined) x.review = review;
        const riskBefore = stateRiskFlagBits(st);
        applyEvent(st, x, d.profile);
        riskNew = stateRiskFlagBits(st) & ~riskBefore;
      } else {
        applyEvent(st, x, d.profile);
      }
      flagged0 += riskNew & 1;
      flagged1 += (riskNew >> 1) & 1;
      flagged2 += riskNew >> 2;
      d.audiences.observe(actor.state, x, partition);
      if (x.categoryPath !== "") d.labels.note(x.categoryId, x.categoryPath);
      if (d.clock.inEra(x.timestampMs, now)) {
        if (x.timestampMs > inEraMs) inEraMs = x.timestampMs;
      } else if (ahead.size < MAX_AHEAD_PER_BATCH || ahead.has(x.userId)) {
        ahead.set(x.userId, Math.min(ahead.get(x.userId) ?? Infinity, x.timestampMs));
      }
      touch(actor, x.userId, x.type, batchNo, dirty);
      appliedCount++;
      if (x.timestampMs > this.#watermarkMs) this.#watermarkMs = x.timestampMs;
    }
    if (notices.size > 0) {
      for (const m of notices.messages(d.subjects, this.#internalKey, partition, d.validation.maxEventBytes)) toOutbox(partition, m, side, outbound);
    }
    const poll = polling ? () => queries!.poll(this.#isBusy) : undefined;
    poll?.();
    const tl = performance.now();
    if (lstm !== undefined && steps.length > 0) stepLstm(lstm, steps, poll);
    const lstmMs = performance.now() - tl;
    const lastSeq = n > 0 ? seqs[n - 1]! : applied;
    this.#appliedSeq.set(partition, high);
    if (skip !== undefined && high >= skip.get("\u0000max")!) this.#skipUntil.delete(partition);
    // Audiences: the batch's users, and the partition's users whose timer is due on the engine clock, in the same commit.
    const clockNow = d.clock.now(now);
    const evaluated: [string, Actor, TransitionReason, number?][] = [];
    // Event types applied per user (Actor.batchTypes): audiences no such type can change are not re-evaluated.
    dirty.forEach((a, id) => evaluated.push([id, a, "event", wholeEval.has(id) ? undefined : a.batchTypes]));
    // The users the batch's events changed: their profiles are written; those of due timers, only their changed memberships.
    const changedProfiles = evaluated.length;
    if (clockNow > 0) this.#collectDue(partition, clockNow, batchNo, dirty, evaluated, side);
    const changed = d.audiences.evaluate(partition, evaluated, clockNow, side, outbound);
    // Users of due timers changed their memberships whole in evaluate; the batch's own users wait for its end.
    poll?.();
    const states: [string, UserState, number][] = [];
    for (let i = 0; i < evaluated.length; i++) {
      const [id, a] = evaluated[i]!;
      const parts = (i < changedProfiles ? PROFILE_PART : 0) | (changed.get(id) ?? 0);
      if (parts !== 0) states.push([id, a.state, parts]);
    }
    // One conditional block, one LMDB transaction: the states and the sequence commit together, after the partition's previous batch.
    // On STORAGE_FAILED nothing of this batch is acknowledged: the engine stops, and a restart once the cause is fixed redelivers it.
    const hasIdentity = identity.removeProfiles.length > 0 || identity.aliasPuts.length > 0 || identity.mergingRemoves.length > 0;
    // Outbox entries published since the shard's last commit go in this one (any partition's: one LMDB environment).
    d.audiences.takeOutboxRemovals(side);
    const commit = d.store.commitBatch(partition, high, states, side, hasIdentity ? identity : undefined, poll);
    // Encoded now, before a later batch changes the same actors: the changelog record is the state this commit wrote.
    const changes: ChangelogChange[] | undefined = d.changelog === true ? [] : undefined;
    if (changes !== undefined) {
      for (const [id, a] of dirty) changes.push([id, encodeChangelogState(a.state)]);
      for (const id of identity.removeProfiles) if (!dirty.has(id)) changes.push([id, null]);
    }
    if (hasIdentity) {
      // Once committed, LMDB answers for these aliases.
      void commit.then(() => {
        for (const [k, v] of identity.aliasPuts) if (this.#pendingAliases.get(k) === v) this.#pendingAliases.delete(k);
      }, () => undefined);
    }
    const t1 = performance.now();
    this.#pendingWrites++;
    try {
      await commit;
    } finally {
      this.#pendingWrites--;
    }
    const tc = performance.now();
    if (batchNo > this.#committedBatch) this.#committedBatch = batchNo;
    d.actors.changed(dirty);
    d.actors.evict(this.#committedBatch);
    // Back-pressure: when the recs worker's queue is full, the batch's result (and so its ack) waits for room (item-event-queue.ts).
    const posted = items !== undefined && items.itemIds.length > 0 ? d.itemEvents!.post(items) : undefined;
    const t2 = performance.now();
    if (posted !== undefined) await posted;
    return {
      partition, lastSeq, applied: appliedCount, skipped, deadLetters,
      applyMs: t1 - t0, commitMs: t2 - t1, watermarkMs: this.#watermarkMs,
      lstmSteps: steps.length, lstmMs, feedback, times: { inEraMs, ahead: [...ahead] },
      stamps: { applyStartMs: performance.timeOrigin + t0, applyEndMs: performance.timeOrigin + t1, committedMs: performance.timeOrigin + tc },
      ...(outbound.length > 0 ? { outbound } : {}),
      ...(beyond ? { riskFlags: riskFlagCounts(flagged0, flagged1, flagged2) } : {}),
      ...(logged.length > 0 ? { logged } : {}),
      ...(changes !== undefined ? { changes } : {}),
    };
  }

  /**
   * Takes a partition over from its changelog (cluster mode): LMDB's users of
   * the partition are replaced by `users` (state null = removed), the
   * partition's position is `position`, and users whose record is above it
   * skip their events up to the record's sequence. Nothing of the partition
   * may be in flight.
   */
  async adopt(partition: number, users: readonly (readonly [string, Uint8Array | null, number])[], position: number): Promise<number> {
    const d = this.#d;
    if (!this.#appliedSeq.has(partition)) throw new Error(`shard ${d.shard} does not own partition ${partition}`);
    const belongs = (k: string) => partitionOf(k, d.partitionCount) === partition;
    d.actors.dropWhere(belongs);
    const states: [string, UserState][] = [];
    const skip = new Map<string, number>();
    let max = 0;
    for (const [key, bytes, seq] of users) {
      if (bytes !== null) {
        states.push([key, decodeChangelogState(bytes)]);
      }
      if (seq > position) {
        skip.set(key, seq);
        if (seq > max) max = seq;
      }
    }
    await d.store.replacePartition(partition, belongs, states, position, d.audiences.adopt(partition, states));
    d.actors.dropWhere(belongs);
    this.#appliedSeq.set(partition, position);
    if (skip.size > 0) {
      skip.set("\u0000max", max);
      this.#skipUntil.set(partition, skip);
    } else {
      this.#skipUntil.delete(partition);
    }
    return states.length;
  }

  /**
   * An identity event, or an event of an alias (README "Identity"). Returns
   * what became of it: applied (a merge started or folded, an event or an
   * identify forwarded), skipped (a duplicate), or a dead letter.
   */
  #identity(e: Event, alias: AliasEntry | undefined, partition: number, seq: number, batchNo: number, b: BatchWork): "applied" | "skipped" | { reason: DeadLetterReason; detail: string } {
    const d = this.#d;
    if (alias !== undefined) {
      // The key is an alias: an IDENTIFY naming its primary again changes nothing; anything else goes on to the primary.
      if (e.type === EventType.IDENTIFY && this.#primaryKey(e) === alias[0]) return "skipped";
      if (e.hops >= MAX_HOPS) return { reason: "IDENTIFY_CYCLE", detail: `forwarded ${e.hops} times along aliases: the aliases form a loop` };
      toOutbox(partition, forwardMessage(d.subjects, this.#internalKey, e, seq, alias, b.part), b.side, b.outbound);
      this.identity.forwarded++;
      return "applied";
    }
    if (e.type === EventType.IDENTIFY) {
      const secondary = e.userId;
      const primaryKey = this.#primaryKey(e);
      const actor = d.actors.actor(secondary);
      const u = actor.state;
      if (primaryKey === secondary) return { reason: "IDENTIFY_SAME_ID", detail: "primary_user_id is the id user_id was merged into" };
      if ((u.al ?? []).some(([k]) => k === primaryKey)) {
        return { reason: "IDENTIFY_CYCLE", detail: "primary_user_id is already an alias of user_id: the merge would make a cycle" };
      }
      const mergeId = mergeIdOf(d.subjects, partition, seq);
      // A forwarded IDENTIFY carries the primary's raw id too: its partition is the raw id's.
      const entry: AliasEntry = [primaryKey, partitionOf(e.primaryUserId, d.partitionCount), mergeId];
      toOutbox(partition, handoverMessage(d.subjects, this.#internalKey, mergeId, entry, e.timestampMs, { k: secondary, p: partition, s: u, o: primaryKey }), b.side, b.outbound);
      // The secondary's memberships end here (reason "merged"); the primary re-evaluates its own on the merged state.
      const exits = d.audiences.forget(secondary, u, Math.max(d.clock.now(), u.lastSeenMs), "merged");
      b.side.puts.push(...exits.side.puts);
      b.side.removes.push(...exits.side.removes);
      b.outbound.push(...exits.out);
      b.identity.removeProfiles.push(secondary);
      b.identity.aliasPuts.push([secondary, entry]);
      // In flight until the primary folds it: a forget of the primary meanwhile finds it and marks it forgotten.
      b.identity.mergingPuts.push([mergingKey(primaryKey, secondary), [mergeId, partition]]);
      this.#pendingAliases.set(secondary, entry);
      this.#aliasesStored = true;
      b.dirty.delete(secondary);
      b.steps.drop(actor);
      d.actors.drop(secondary);
      this.identity.identifies++;
      return "applied";
    }
    // IDENTITY_HANDOVER on the primary's partition.
    const primary = e.userId;
    const h = readHandover(e);
    // The merge's entry in flight, under the primary it was made for (a hand-over may reach a later primary through its aliases).
    const inFlight = mergingKey(h.o ?? primary, h.k);
    const m = d.store.merging(inFlight);
    if (m !== undefined && m[0] === e.mergeId) {
      b.identity.mergingRemoves.push(inFlight);
      if (m[2] !== undefined) {
        // The primary was forgotten while this hand-over was in flight: the person is erased, not started again from the secondary's data.
        this.identity.forgottenHandovers++;
        return "applied";
      }
    }
    const actor = d.actors.actor(primary);
    const u = actor.state;
    if ((u.mg ?? []).includes(e.mergeId)) {
      this.identity.duplicateMerges++;
      return "skipped";
    }
    if (h.k === primary || (h.s.al ?? []).some(([k]) => k === primary)) {
      return { reason: "IDENTIFY_CYCLE", detail: "the hand-over's ids include its primary: two identifies crossed (A -> B and B -> A)" };
    }
    mergeStates(u, h.s, d.profile);
    (u.al ??= []).push([h.k, h.p]);
    (u.mg ??= []).push(e.mergeId);
    // The LSTM state is re-encoded from the merged timeline (lstm-steps.ts); steps queued before the fold are in it.
    actor.lstm = undefined;
    b.steps.drop(actor);
    if (u.aud !== undefined) u.aud.p = partition;
    actor.batchTypes = 0;
    actor.lastBatch = batchNo;
    b.dirty.set(primary, actor);
    // Its event bits are not read: the audiences' evaluation is a whole one.
    b.wholeEval.add(primary);
    this.identity.merges++;
    return "applied";
  }

  /**
   * A FOLLOW, UNFOLLOW, SHARE or SOCIAL_NOTICE (README "Social ties"): the
   * user's social part changes, and the other user's actor is told through
   * the outbox (shard/social.ts). With beyondClicks off it is applied as a
   * no-op (acknowledged, nothing changes, nothing is sent).
   */
  #social(e: Event, partition: number, seq: number, batchNo: number, dirty: Map<string, Actor>, notices: NoticeBatch): "applied" | { reason: DeadLetterReason; detail: string } {
    const d = this.#d;
    if (!d.profile.beyondClicks) return "applied";
    // A notice's recipient is keyed already (forwarded); a shop's target is a raw id, on its own partition.
    const raw = e.type === EventType.SOCIAL_NOTICE ? "" : e.targetUserId;
    const target: Recipient | undefined = raw !== "" ? [d.key(raw), partitionOf(raw, d.partitionCount)] : undefined;
    const actor = d.actors.actor(e.userId);
    const r = applySocial(actor.state, e, [e.userId, partition], target);
    if (!r.ok) return r;
    // The answer to a follow of an alias names the alias (SocialNotice.followed_key): the follower holds that id.
    const as = e.socialNotice?.followedKey;
    if (r.notice !== undefined) notices.add({ ...r.notice, from: [as ? as : e.userId, partition] }, seq, e.timestampMs);
    touch(actor, e.userId, e.type, batchNo, dirty);
    return "applied";
  }

  /**
   * A SOCIAL_NOTICE batch message (shard/social.ts), validated whole: its
   * notices in order, each applied to its recipient like a single notice,
   * or forwarded when the recipient is an alias (message id
   * "<prefix>:x:<seq>:<index>"). Returns the notices applied or forwarded
   * (each counts as an applied event, as a single notice does). Cluster
   * mode: a recipient whose restored changelog record is at or past `seq`
   * has it already (`skip`, per user, as for its own events).
   */
  #noticeBatch(e: Event, partition: number, seq: number, batchNo: number, notices: NoticeBatch, b: BatchWork, skip?: Map<string, number>): number {
    let applied = 0;
    const all = unbatchNotices(e);
    for (let k = 0; k < all.length; k++) {
      const one = all[k]!;
      if (skip !== undefined && seq <= (skip.get(one.userId) ?? 0)) continue;
      const alias = this.aliasOf(one.userId);
      const verdict = alias !== undefined
        ? this.#identity(one, alias, partition, seq, batchNo, { ...b, part: k })
        : this.#social(one, partition, seq, batchNo, b.dirty, notices);
      // Validation leaves no other verdict to a notice of a batch (its kind is known, its hops 0).
      if (verdict === "applied") applied++;
    }
    return applied;
  }

  /** The key of an IDENTIFY's primary (primary_user_id is always the raw id). */
  #primaryKey(e: Event): string {
    return this.#d.key(e.primaryUserId);
  }

  /**
   * The partition's users whose timer is due at `now` (audience-timers.ts),
   * added to `dirty` and `into` (reason "time"). A forgotten user's timer is
   * dropped (its index entry's removal into `side`).
   */
  #collectDue(partition: number, now: number, batchNo: number, dirty: Map<string, Actor>, into: [string, Actor, TransitionReason, number?][], side: SideWrites): number {
    const d = this.#d;
    let fired = 0;
    for (const [, key] of d.audiences.dueTimers(partition, now)) {
      // Merged into another id by a batch not committed yet: that batch dropped its timer.
      if (this.#pendingAliases.has(key)) continue;
      // Forgotten (or being forgotten: its removal hides the stored state): no actor is made for it, or an empty
      // profile would answer for the forgotten user; its timer goes with the removal.
      if (!d.actors.has(key)) {
        d.audiences.dropTimer(partition, key, side);
        continue;
      }
      // In the batch too: its evaluation is a whole one (evaluateAudiences: the due passed).
      if (dirty.has(key)) continue;
      const a = d.actors.actor(key);
      a.lastBatch = batchNo;
      dirty.set(key, a);
      into.push([key, a, "time"]);
      fired++;
    }
    return fired;
  }

  /**
   * Time passing: fires the due timers of every owned partition on the engine
   * clock and runs one chunk of a running backfill. Each partition's writes
   * commit through its chain (after its batches in flight); resolves after
   * they committed, with the transitions to publish.
   */
  async tick(only?: readonly number[]): Promise<TickResult> {
    const d = this.#d;
    // Cluster mode: only the partitions this node holds a lease on (another node's timers are its own business).
    const runs = (p: number) => only === undefined || only.includes(p);
    const now = d.clock.now();
    const result: TickResult = { outbound: {}, timersFired: 0, backfilled: 0 };
    const batchNo = ++this.#batchNo;
    const work = new Map<number, { dirty: Map<string, Actor>; users: [string, Actor, TransitionReason][]; side: SideWrites }>();
    const of = (p: number) => {
      let w = work.get(p);
      if (w === undefined) work.set(p, (w = { dirty: new Map(), users: [], side: { puts: [], removes: [] } }));
      return w;
    };
    if (now > 0) {
      for (const p of d.partitions) {
        if (!runs(p)) continue;
        const w = of(p);
        result.timersFired += this.#collectDue(p, now, batchNo, w.dirty, w.users, w.side);
      }
    }
    // A backfill's users are borrowed (actor-cache.ts): their stored states lent for this evaluation and its commit, not
    // cached (no byte estimate each, and the live traffic's actors stay cached); given back once the commits settled.
    const lent: [string, Actor][] = [];
    for (const [user, p, borrowed] of d.audiences.backfillKeys() ?? []) {
      const w = runs(p) ? of(p) : undefined;
      if (w === undefined || w.dirty.has(user) || this.#pendingAliases.has(user)) {
        if (borrowed !== undefined) d.actors.giveBack([[user, borrowed]]);
        continue;
      }
      const a = borrowed ?? d.actors.borrow(user);
      if (a === undefined) continue;
      a.lastBatch = batchNo;
      w.dirty.set(user, a);
      w.users.push([user, a, "backfill"]);
      lent.push([user, a]);
      result.backfilled++;
    }
    // Outbox entries published since the shard's last commit, when no batch took them (an idle shard).
    const first = d.partitions[0];
    if (first !== undefined) d.audiences.takeOutboxRemovals(of(first).side);
    const commits: Promise<void>[] = [];
    for (const [p, w] of work) {
      if (w.users.length === 0) d.audiences.compactTimers(p, w.side);
      if (w.users.length === 0 && w.side.removes.length === 0) continue;
      const out: OutboundMessage[] = [];
      const changed = d.audiences.evaluate(p, w.users, now, w.side, out);
      if (out.length > 0) result.outbound[p] = out;
      // Time and backfills change only memberships (the profile too for a user without audience state before); a user whose
      // memberships did not change keeps its stored state (no write).
      const states = w.users.filter(([id]) => changed.has(id)).map(([id, a]) => [id, a.state, changed.get(id)!] as const);
      commits.push(d.store.commitBatch(p, this.#appliedSeq.get(p)!, states, w.side));
    }
    if (commits.length === 0) {
      d.actors.giveBack(lent);
      return result;
    }
    this.#pendingWrites++;
    const all = Promise.all(commits);
    const settled = all.then(() => undefined, () => undefined);
    // Each commit settled (a rejection of one does not end the others' loans early).
    void Promise.allSettled(commits).then(() => d.actors.giveBack(lent));
    this.#inflight.add(settled);
    void settled.then(() => this.#inflight.delete(settled));
    try {
      await all;
    } finally {
      this.#pendingWrites--;
    }
    if (batchNo > this.#committedBatch) this.#committedBatch = batchNo;
    for (const w of work.values()) d.actors.changed(w.dirty);
    d.actors.evict(this.#committedBatch);
    return result;
  }

  async forget(userId: string, resolvedKey?: string): Promise<ForgetResult> {
    const d = this.#d;
    const key = resolvedKey ?? d.key(userId);
    // An alias: its primary is forgotten, with every id merged into it (README "Identity").
    const alias = this.aliasOf(key);
    if (alias !== undefined) return { ok: true, existed: true, outbound: [], key, alias: [alias[0], alias[1]] };
    const existed = d.actors.has(key);
    const aliases = (d.actors.state(key)?.al ?? []).map(([k, p]) => [k, p] as [string, number]);
    // Merges into it whose hand-over is still in flight: marked forgotten (their hand-over is dropped on arrival), their ids erased too.
    const marked: [string, MergingEntry][] = [];
    for (const [k, [mergeId, p, forgotten]] of d.store.mergesInFlight(key)) {
      marked.push([mergingKey(key, k), [mergeId, p, forgotten ?? Date.now()]]);
      if (!aliases.some(([x]) => x === k)) aliases.push([k, p]);
    }
    // Exits from every audience (reason "forgotten"), committed with the removal of the state.
    const exits = d.audiences.forget(key, d.actors.state(key), Math.max(d.clock.now(), d.actors.state(key)?.lastSeenMs ?? 0));
    // Batches applied before this point: their puts commit before the removal, and their item events must reach the recs worker first.
    const before = [...this.#inflight];
    try {
      await d.actors.erase(key, async () => {
        await d.store.removeStateWith(key, exits.side, [], marked);
        await Promise.all(before);
      });
    } catch (err) {
      return { ok: false, error: toWire(err) };
    }
    // Always posted (never dropped, not counted in the queue bound): the recs worker must forget the user.
    void d.itemEvents?.forget(key);
    return { ok: true, existed: existed || marked.length > 0, outbound: exits.out, key, ...(aliases.length > 0 ? { aliases } : {}) };
  }

  /** Removes an alias entry (its primary was forgotten): after the batches in flight, like forget. */
  async forgetAlias(key: string): Promise<{ ok: true } | { ok: false; error: WireError }> {
    const d = this.#d;
    await this.settled();
    this.#pendingAliases.delete(key);
    try {
      await d.actors.erase(key, () => d.store.removeStateWith(key, { puts: [], removes: [] }, [key]));
    } catch (err) {
      return { ok: false, error: toWire(err) };
    }
    void d.itemEvents?.forget(key);
    return { ok: true };
  }
}
