/**
 * A shard's audiences: the compiled definitions, the evaluation of its users
 * (after each batch, when a timer is due, in a backfill) and the writes that
 * go with it. The pure rules are in src/actors/audience-*.ts; this module
 * turns their transitions into LMDB writes of the `audiences` db
 * (profile-store.ts) that commit with the states that caused them:
 * - timers: ["t", partition, time ms, user]: the coarse index of the timers,
 *   which are kept in memory (audience-timers.ts): per user one entry at or
 *   before its committed due, written only when the due moves earlier than
 *   it; read whole at start;
 * - members: no index of their own (the member writes were one LMDB write
 *   per transition): `members`, `export` and `report` scan the memberships
 *   records (ProfileStore.members), and data dirs that still have the index
 *   ["m", audience, user] lose it at start (ProfileStore.dropMemberIndex);
 * - counts: ["c", partition] -> [audience, members, audience, members, ...]
 *   (audiences with members), maintained in memory and written once per
 *   commit that changes one (a count is a sum over partitions, not a scan).
 *   Data dirs of the layout before (one entry per audience and partition,
 *   ["c", audience, partition]: 0.37 LMDB writes per event in the shop bench)
 *   are folded into it at start;
 * - outbox: ["o", partition, entry number] -> the transitions of one commit
 *   (one evaluation call: a batch, a tick, a forget) as the bytes of their
 *   messages (encoded once, for the stream and the outbox; entries written
 *   before hold compact rows, OutboxRow, and are read as well),
 *   until the main thread has published all of them (JetStream PubAck) and
 *   told the shard; one put and one removal per commit, not per transition
 *   (they were two of the five LMDB writes of a transition). Entry numbers
 *   go on from the highest stored at start. Identity messages keep one entry
 *   each, keyed by their message id (identity.ts toOutbox), as do transitions
 *   stored before this layout.
 * - departed members of audiences with a holdout (for the uplift report):
 *   ["x", audience, user, since ms] -> [exit ms, holdout], written with the
 *   exit (reasons "event", "time", "backfill"), removed by forget and when
 *   the audience leaves the set;
 * - cohort sketch: ["q", shard] -> the shard's percentile-cohort histograms
 *   (CohortSketches), written with a batch at most once a second when changed,
 *   read at start.
 *
 * Exactly once: a transition exists only in a committed state (its number is
 * in the user's memberships) together with its outbox entry; the main thread
 * publishes committed transitions with Nats-Msg-Id = audience:user:number and
 * republishes the outbox at start, so a crash loses none and JetStream's
 * duplicate window drops a second copy.
 */
import type { Actor } from "../actors/actor.js";
import { backfillSelection, compileAudiences, type AudienceDefinition, type CompiledAudiences } from "../actors/audience-rules.js";
import { CohortSketches, evaluateAudiences, exitAll, observeAudienceEvent, type EvalEnv, type Transition, type TransitionReason } from "../actors/audience-state.js";
import type { CompiledProfileOptions } from "../actors/profile-options.js";
import type { ProfileEvent, UserState } from "../actors/user-profile.js";
import type { OutboundMessage, OutboxRef } from "../bus/event-batch.js";
import { subjects, type Subjects } from "../bus/subjects.js";
import { MEMBERSHIPS_PART, PROFILE_PART, type AudienceKey, type ProfileStore, type SideWrites } from "../store/profile-store.js";
import { partitionOf } from "../wire/partition.js";
import { pb } from "../wire/proto.js";
import type { ActorCache } from "./actor-cache.js";
import { AudienceTimers, type CompactionOptions } from "./audience-timers.js";

/** Most due timers fired per partition per batch or tick (the rest wait for the next). */
const MAX_TIMERS_PER_PASS = 5000;

export interface AudienceRunnerDeps {
  shard: number;
  partitions: number[];
  partitionCount: number;
  store: ProfileStore;
  actors: ActorCache;
  profile: CompiledProfileOptions;
  subjectPrefix: string;
  pseudonymised: boolean;
  /** Model predictions for a user at a time (lazy: called only by rules that read them). */
  predictor?: ((u: UserState, now: number) => EvalEnv["predict"]) | undefined;
  /** Profiles evaluated per backfill pass (the rate bound: passes run on the engine's tick). */
  backfillChunk: number;
  /** When the timer index's passed entries are compacted (audience-timers.ts); defaults for the engine, lower in tests. */
  timerCompaction?: Partial<CompactionOptions>;
}

/** A user of a backfill's chunk: its key, its partition and, when the partition was read from its state, its borrowed actor. */
export type BackfillKey = [string, number] | [string, number, Actor];

/** A backfill's progress in this shard. */
export interface BackfillProgress {
  running: boolean;
  scanned: number;
  total: number;
}

/** A partition's counts as stored: [audience, members, ...]. */
function countRecord(m: ReadonlyMap<string, number>): (string | number)[] {
  const r: (string | number)[] = [];
  for (const [audience, n] of m) r.push(audience, n);
  return r;
}

const varintLength = (n: number): number => {
  let len = 1;
  for (; n >= 128; n = Math.floor(n / 128)) len++;
  return len;
};

function writeVarint(b: Buffer, at: number, n: number): number {
  for (; n >= 128; n = Math.floor(n / 128)) b[at++] = (n % 128) | 128;
  b[at++] = n;
  return at;
}

/**
 * The protobuf `AudienceTransition` of a transition, written directly into
 * one buffer: the bytes pb.AudienceTransition.encode writes (every field, in
 * field order; test/audience-eval.test.ts compares them), without its writer's
 * operation list and message object (a shard encodes ~2 per event in the
 * audience bench). Numbers are non-negative integers below 2^53.
 */
export function encodeTransition(t: Transition): Uint8Array {
  const audience = stringBytes(t.audience);
  const reason = stringBytes(t.reason);
  // The user id is written by hand when it is ASCII (the usual case: one native call fewer per id).
  const user = t.user;
  const ascii = isAscii(user);
  const userLen = ascii ? user.length : Buffer.byteLength(user);
  const size = 7 + varintLength(audience.length) + audience.length + varintLength(userLen) + userLen + varintLength(t.n) + 1 + varintLength(t.atMs) + varintLength(reason.length) + reason.length + 1;
  const b = Buffer.allocUnsafe(size);
  let at = copyBytes(b, 0, 10, audience);
  b[at++] = 18;
  at = writeVarint(b, at, userLen);
  if (ascii) for (let i = 0; i < userLen; i++) b[at++] = user.charCodeAt(i);
  else at += b.write(user, at, userLen, "utf8");
  b[at++] = 24;
  at = writeVarint(b, at, t.n);
  b[at++] = 32;
  b[at++] = t.entered ? 1 : 0;
  b[at++] = 40;
  at = writeVarint(b, at, t.atMs);
  at = copyBytes(b, at, 50, reason);
  b[at++] = 56;
  b[at++] = t.holdout ? 1 : 0;
  return b;
}

/**
 * UTF-8 bytes of audience ids and reasons, encoded once (a shard encodes ~2 transitions per event in the audience
 * bench, each with an id of its set's few hundred and one of six reasons). Cleared when it grows past its bound (ids
 * of deleted audiences).
 */
const bytesOf = new Map<string, Uint8Array>();

function stringBytes(s: string): Uint8Array {
  let b = bytesOf.get(s);
  if (b === undefined) {
    if (bytesOf.size >= 4096) bytesOf.clear();
    bytesOf.set(s, (b = Buffer.from(s, "utf8")));
  }
  return b;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 128) return false;
  return true;
}

function copyBytes(b: Buffer, at: number, tag: number, x: Uint8Array): number {
  b[at++] = tag;
  at = writeVarint(b, at, x.length);
  for (let i = 0; i < x.length; i++) b[at++] = x[i]!;
  return at;
}

export function transitionMsgId(t: Transition): string {
  return `${t.audience}:${t.user}:${t.n}`;
}

/** A transition as outbox entries stored it before they held the messages' bytes: [audience, user, number, entered 0/1, at ms, reason, holdout 0/1]. */
type OutboxRow = [string, string, number, number, number, string, number];

const fromRow = (r: OutboxRow): Transition => ({ audience: r[0], user: r[1], n: r[2], entered: r[3] === 1, atMs: r[4], reason: r[5], holdout: r[6] === 1 });

export class AudienceRunner {
  readonly #d: AudienceRunnerDeps;
  readonly #s: Subjects;
  readonly #owned: Set<number>;
  #set: CompiledAudiences = compileAudiences([]);
  #hash = "[]";
  /** Members per audience, per owned partition, as of the last commit issued (written whole: #writeCounts). */
  readonly #counts = new Map<number, Map<string, number>>();
  /**
   * The running backfill; `only`: the audiences it evaluates (backfillSelection), undefined = all of them; `waiting`:
   * the batches applied before the set are still committing, and the scan has not started (set).
   */
  #backfill: { cursor: string; scanned: number; total: number; hash: string; only: Uint8Array | undefined; waiting: boolean } | undefined;
  readonly #cohorts: CohortSketches;
  /** Audiences with a holdout: their departed members are recorded for the report. */
  #holdouts = new Set<string>();
  #cohortsWrittenAt = 0;
  /** Number of the last outbox entry written (AudienceRunner header). */
  #outboxNo = 0;
  /** Outbox entries not yet removed: entry number -> messages not yet published (each message carries its entry number). */
  readonly #outboxLeft = new Map<number, number>();
  /** Outbox entries published, removed in the shard's next commit (takeOutboxRemovals). */
  #removals: AudienceKey[] = [];
  readonly #timers: AudienceTimers;
  /** What evaluate passes to evaluateAudiences, its predict set per user. */
  readonly #env: EvalEnv;

  constructor(d: AudienceRunnerDeps) {
    this.#d = d;
    this.#s = subjects(d.subjectPrefix);
    this.#owned = new Set(d.partitions);
    this.#timers = new AudienceTimers(d.partitions, (function* () {
      for (const p of d.partitions) {
        for (const { key } of d.store.audienceRange(["t", p, 0], ["t", p, Infinity])) yield [p, key[2] as number, key[3] as string] as [number, number, string];
      }
    })(), d.timerCompaction);
    if (this.#timers.duplicates.length > 0) d.store.audienceWrite({ puts: [], removes: this.#timers.duplicates });
    d.store.dropMemberIndex((user) => {
      const p = this.#partitionOf(user);
      return p !== undefined && this.#owned.has(p);
    });
    this.#loadCounts();
    for (const p of d.partitions) {
      for (const { key } of d.store.audienceRange(["o", p, 0], ["o", p, Number.MAX_SAFE_INTEGER])) this.#outboxNo = Math.max(this.#outboxNo, key[2] as number);
    }
    this.#cohorts = new CohortSketches(d.store.audienceGet(["q", d.shard]) as ConstructorParameters<typeof CohortSketches>[0]);
    this.#env = { profile: d.profile, predict: undefined, cohorts: this.#cohorts };
  }

  get size(): number {
    return this.#set.defs.length;
  }

  /**
   * Takes a new set of definitions (already validated by whoever stored them); starts a backfill when it differs from
   * the last one backfilled. `applied` settles once the batches applied before this call have committed: they were
   * evaluated with the set before, and the backfill's scan, which lists committed profiles only, starts after them, so
   * that a user whose first batch was still committing is not passed over.
   */
  set(defs: AudienceDefinition[], applied: Promise<void> = Promise.resolve()): void {
    const before = this.#set;
    this.#set = compileAudiences(defs);
    // Their numbers in memberships records (profile-store.ts), before any of their evaluations is committed.
    this.#d.store.registerAudiences(defs.map((x) => x.id));
    this.#holdouts = new Set(defs.filter((x) => (x.holdoutShare ?? 0) > 0).map((x) => x.id));
    // Departed members of audiences gone from the set (a new audience of the same id starts without them).
    const removes: AudienceKey[] = [];
    for (const id of before.versions.keys()) {
      if (this.#set.versions.has(id)) continue;
      for (const { key } of this.#d.store.audienceRange(["x", id], ["x", id, "\u{10FFFF}"])) removes.push(key);
    }
    if (removes.length > 0) this.#d.store.audienceWrite({ puts: [], removes });
    this.#hash = JSON.stringify([...this.#set.versions].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
    const done = this.#d.store.audienceGet(["b", this.#d.shard]);
    if (done === this.#hash) {
      this.#backfill = undefined;
      return;
    }
    // Selective when the set before is the one every stored profile was evaluated against: the last backfill finished
    // (the engine's first set is compared with nothing: a restart during a backfill evaluates every audience again), or a
    // running one evaluates the union of its audiences and the changed ones.
    const running = this.#backfill;
    let only: Uint8Array | undefined;
    if (before.defs.length > 0 && (running === undefined || running.only !== undefined)) {
      only = backfillSelection(before, this.#set);
      if (running !== undefined) this.#set.defs.forEach((x, i) => { if (before.versions.has(x.id) && running.only![before.defs.findIndex((y) => y.id === x.id)] === 1) only![i] = 1; });
    }
    const b = (this.#backfill = { cursor: "", scanned: 0, total: this.#d.store.profileCount(), hash: this.#hash, only, waiting: true as boolean });
    void applied.then(() => {
      b.waiting = false;
    });
  }

  progress(): BackfillProgress {
    const b = this.#backfill;
    return b === undefined ? { running: false, scanned: 0, total: 0 } : { running: true, scanned: b.scanned, total: b.total };
  }

  observe(u: UserState, e: ProfileEvent, partition: number): void {
    observeAudienceEvent(u, e, partition);
  }

  /**
   * Users of the partition whose timer is due at `now`, [due ms, user],
   * earliest first, taken off the schedule: the caller evaluates each in
   * this turn (evaluate schedules its next due) or drops it (dropTimer).
   */
  dueTimers(partition: number, now: number): [number, string][] {
    return this.#timers.takeDue(partition, now, MAX_TIMERS_PER_PASS);
  }

  /** A user's timer goes (forgotten): its index entry's removal into `side`. */
  dropTimer(partition: number, user: string, side: SideWrites): void {
    this.#timers.drop(partition, user, side);
  }

  /** The partition's passed timer index entries moved to their dues, when a compaction is due (audience-timers.ts); into `side`. */
  compactTimers(partition: number, side: SideWrites): void {
    this.#timers.compaction(partition, side);
  }

  /** Users with a timer scheduled in this shard. */
  get timersScheduled(): number {
    return this.#timers.scheduled;
  }

  /** A stored user's partition: from the id when it is the raw one (another shard's users are not read), else from its state. */
  #partitionOf(user: string): number | undefined {
    const d = this.#d;
    return d.pseudonymised ? d.actors.state(user)?.aud?.p : partitionOf(user, d.partitionCount);
  }

  /**
   * The next chunk of the running backfill: stored users of this shard's partitions, with their partition. With
   * pseudonymised ids the partition is read from the state, so each user's actor is borrowed here (ActorCache.borrow:
   * one decoding, not one for the partition and another for the evaluation) and comes third; the caller evaluates it or
   * gives it back. Other shards' users are given back at once.
   */
  backfillKeys(): BackfillKey[] | undefined {
    const b = this.#backfill;
    if (b === undefined) return undefined;
    if (b.waiting) return [];
    const d = this.#d;
    const keys = d.store.profileKeys(b.cursor, d.backfillChunk);
    const out: BackfillKey[] = [];
    for (const k of keys) {
      if (!d.pseudonymised) {
        const p = partitionOf(k, d.partitionCount);
        if (this.#owned.has(p)) out.push([k, p]);
        continue;
      }
      const a = d.actors.borrow(k);
      if (a === undefined) continue;
      const p = a.state.aud?.p;
      if (p !== undefined && this.#owned.has(p)) out.push([k, p, a]);
      else d.actors.giveBack([[k, a]]);
    }
    b.scanned += keys.length;
    if (keys.length === 0) {
      d.store.audienceWrite({ puts: [[["b", d.shard], b.hash]], removes: [] });
      this.#backfill = undefined;
      return out;
    }
    b.cursor = keys[keys.length - 1]!;
    return out;
  }

  /** The owned partitions' counts from their records; counters of the layout before folded into them (one transaction). */
  #loadCounts(): void {
    const d = this.#d;
    for (const p of d.partitions) {
      const m = new Map<string, number>();
      const r = d.store.audienceGet(["c", p]) as (string | number)[] | undefined;
      if (r !== undefined) for (let i = 0; i + 1 < r.length; i += 2) m.set(r[i] as string, r[i + 1] as number);
      this.#counts.set(p, m);
    }
    const old: SideWrites = { puts: [], removes: [] };
    const folded = new Set<number>();
    for (const { key, value } of d.store.audienceRange(["c", ""], ["c", "\u{10FFFF}"])) {
      const [, audience, p] = key as [string, string, number];
      if (!this.#owned.has(p)) continue;
      const m = this.#counts.get(p)!;
      const n = (m.get(audience) ?? 0) + (value as number);
      if (n !== 0) m.set(audience, n);
      else m.delete(audience);
      old.removes.push(key);
      folded.add(p);
    }
    if (old.removes.length === 0) return;
    for (const p of folded) old.puts.push([["c", p], countRecord(this.#counts.get(p)!)]);
    d.store.audienceWriteSync(old);
  }

  /** Applies the count changes of one commit; the partition's record is written once if any changed. */
  #writeCounts(partition: number, deltas: Map<string, number>, side: SideWrites): void {
    let m = this.#counts.get(partition);
    if (m === undefined) this.#counts.set(partition, (m = new Map()));
    let changed = false;
    for (const [audience, delta] of deltas) {
      if (delta === 0) continue;
      const n = (m.get(audience) ?? 0) + delta;
      if (n !== 0) m.set(audience, n);
      else m.delete(audience);
      changed = true;
    }
    if (changed) side.puts.push([["c", partition], countRecord(m)]);
  }

  #record(ts: readonly Transition[], partition: number, key: string, side: SideWrites, out: OutboundMessage[], deltas: Map<string, number>, rows: Uint8Array[]): void {
    for (const t of ts) {
      if (!t.entered && t.reason !== "forgotten" && t.reason !== "deleted" && t.reason !== "merged" && this.#holdouts.has(t.audience) && (t.sinceMs ?? 0) > 0) {
        side.puts.push([["x", t.audience, key, t.sinceMs!], [t.atMs, t.holdout ? 1 : 0]]);
      }
      deltas.set(t.audience, (deltas.get(t.audience) ?? 0) + (t.entered ? 1 : -1));
      const m = this.outbound(t);
      rows.push(m.data);
      out.push(m);
    }
  }

  /** One outbox entry for the transitions of one commit (`msgs`: their messages, in the same order). */
  #outbox(partition: number, rows: Uint8Array[], msgs: readonly OutboundMessage[], side: SideWrites): void {
    if (rows.length === 0) return;
    const no = ++this.#outboxNo;
    side.puts.push([["o", partition, no], rows]);
    this.#track(no, msgs);
  }

  #track(no: number, msgs: readonly OutboundMessage[]): void {
    for (const m of msgs) m.outbox = no;
    this.#outboxLeft.set(no, msgs.length);
  }

  /** The message of a transition stored as its bytes in an outbox entry. */
  #storedMessage(data: Uint8Array): OutboundMessage {
    const t = pb.AudienceTransition.decode(data);
    return { subject: this.#s.audienceEvents(t.audienceId), msgId: `${t.audienceId}:${t.userId}:${Number(t.transition)}`, data };
  }

  outbound(t: Transition): OutboundMessage {
    let subject = this.#subjects.get(t.audience);
    if (subject === undefined) {
      if (this.#subjects.size >= 4096) this.#subjects.clear();
      this.#subjects.set(t.audience, (subject = this.#s.audienceEvents(t.audience)));
    }
    return { subject, msgId: transitionMsgId(t), data: encodeTransition(t) };
  }

  /** The stream subject of each audience's transitions, built once (outbound; cleared past its bound: deleted audiences). */
  readonly #subjects = new Map<string, string>();

  /**
   * Evaluates users of one partition at `now`; their transitions, timers, members, counts and outbox entries go into `side`.
   * A user's optional fourth element: the event types (eventBit) applied to it since its last evaluation (evaluateAudiences).
   * Returns the users whose stored state this evaluation changed, with the parts to write (profile-store.ts): the
   * memberships record (MEMBERSHIPS_PART), and the profile too when the user had no audience state before.
   */
  evaluate(partition: number, users: Iterable<readonly [string, Actor, TransitionReason, number?]>, now: number, side: SideWrites, out: OutboundMessage[]): Map<string, number> {
    const d = this.#d;
    const deltas = new Map<string, number>();
    const changed = new Map<string, number>();
    const rows: Uint8Array[] = [];
    const out0 = out.length;
    for (const [key, actor, reason, events] of users) {
      const u = actor.state;
      const a0 = u.aud;
      const due0 = a0?.due;
      const w0 = a0?.w;
      const q0 = a0?.q?.[0];
      const q1 = a0?.q?.[1];
      // No audience defined: the evaluation reads no env (no rule), so no predictor closure per user.
      // One env for every user (evaluateAudiences keeps nothing of it past the call).
      const env = this.#env;
      env.predict = this.#set.defs.length === 0 ? undefined : d.predictor?.(u, Math.max(now, u.lastSeenMs));
      const ts = evaluateAudiences(key, u, this.#set, now, env, reason, partition, events, reason === "backfill" ? this.#backfill?.only : undefined);
      const a = u.aud!;
      const due = a.due;
      // The stored due decides which audiences a later event may skip (evaluateAudiences), so it is written when it moves
      // earlier; one that moves later (0 = never) is not: a stored due earlier than the shard's only makes the next
      // evaluation after a restart a whole one, and the due it computes is the same (the timers have their own index).
      // So the stored due is never later than the shard's. The cohort bins and the whole-evaluation flag are written.
      const earlier = due !== due0 && (due0 === undefined || due0 === 0 || (due > 0 && due < due0));
      if (a0 === undefined) changed.set(key, PROFILE_PART | MEMBERSHIPS_PART);
      else if (ts.length > 0 || earlier || a.w !== w0 || a.q?.[0] !== q0 || a.q?.[1] !== q1) changed.set(key, MEMBERSHIPS_PART);
      this.#timers.set(partition, key, due, now, side);
      if (ts.length > 0) this.#record(ts, partition, key, side, out, deltas, rows);
    }
    this.#timers.compaction(partition, side);
    this.#outbox(partition, rows, out.slice(out0), side);
    this.#writeCounts(partition, deltas, side);
    if (this.#cohorts.dirty && performance.now() - this.#cohortsWrittenAt >= 1000) {
      this.#cohortsWrittenAt = performance.now();
      side.puts.push([["q", d.shard], this.#cohorts.taken()]);
    }
    return changed;
  }

  /**
   * A partition restored from its changelog (cluster mode, BatchApplier.adopt): its counts are those of the restored
   * memberships, and its timers the restored dues; the writes (the partition's timer index entries and counts record
   * replaced) go into the returned SideWrites, to commit with the restored states. Removals before puts.
   */
  adopt(partition: number, states: readonly (readonly [string, UserState])[]): SideWrites {
    const side: SideWrites = { puts: [], removes: [] };
    const counts = new Map<string, number>();
    const dues: [string, number][] = [];
    for (const [key, u] of states) {
      const a = u.aud;
      if (a === undefined) continue;
      for (const id in a.m) if (a.m[id]![0] > 0) counts.set(id, (counts.get(id) ?? 0) + 1);
      if (a.due > 0) dues.push([key, a.due]);
    }
    this.#timers.reset(partition, dues, side);
    this.#counts.set(partition, counts);
    side.puts.push([["c", partition], countRecord(counts)]);
    return side;
  }

  /** The exits of a user being forgotten, and the removal of its timer: written with the removal of its state. */
  forget(key: string, u: UserState | undefined, atMs: number, reason: "forgotten" | "merged" = "forgotten"): { side: SideWrites; out: OutboundMessage[] } {
    const side: SideWrites = { puts: [], removes: [] };
    const out: OutboundMessage[] = [];
    if (u?.aud === undefined) return { side, out };
    const p = u.aud.p;
    this.#cohorts.drop(u.aud);
    // Its departed memberships (report records) go with it.
    for (const id in u.aud.m) {
      for (const { key: k } of this.#d.store.audienceRange(["x", id, key], ["x", id, key, Infinity])) side.removes.push(k);
    }
    this.#timers.drop(p, key, side);
    const deltas = new Map<string, number>();
    const rows: Uint8Array[] = [];
    this.#record(exitAll(key, u, atMs, reason), p, key, side, out, deltas, rows);
    this.#outbox(p, rows, out, side);
    this.#writeCounts(p, deltas, side);
    return { side, out };
  }

  /** Outbox entries of the owned partitions, committed and not yet confirmed published (republished at start). */
  pendingOutbox(): { partition: number; message: OutboundMessage }[] {
    const out: { partition: number; message: OutboundMessage }[] = [];
    for (const p of this.#d.partitions) {
      for (const { key, value } of this.#d.store.audienceRange(["o", p], ["o", p + 1])) {
        if (typeof key[2] === "number") {
          const msgs = (value as (Uint8Array | OutboxRow)[]).map((r) => (r instanceof Uint8Array ? this.#storedMessage(r) : this.outbound(fromRow(r))));
          this.#track(key[2], msgs);
          for (const message of msgs) out.push({ partition: p, message });
          continue;
        }
        // An identity message (a hand-over or a forwarded event, batch-applier.ts) is stored as its subject and bytes;
        // a transition stored before the per-commit entries, as itself.
        const v = value as Transition | { s: string; b: Uint8Array };
        out.push({ partition: p, message: "b" in v ? { subject: v.s, msgId: key[2] as string, data: v.b } : this.outbound(v) });
      }
    }
    return out;
  }

  /**
   * The main thread published these (PubAck), each named by its shared outbox entry's number or its id (outboxRefs): an
   * entry goes once all its messages were published, in the next commit of this shard (a batch's or a tick's, every
   * AUDIENCE_TICK_MS; takeOutboxRemovals), not in a transaction of their own (an LMDB commit per published batch of
   * notices or transitions). A lost removal only republishes, deduplicated by id.
   */
  published(partition: number, done: readonly OutboxRef[]): void {
    const removes = this.#removals;
    for (const ref of done) {
      if (typeof ref === "string") {
        removes.push(["o", partition, ref]);
        continue;
      }
      const left = (this.#outboxLeft.get(ref) ?? 1) - 1;
      if (left > 0) this.#outboxLeft.set(ref, left);
      else {
        this.#outboxLeft.delete(ref);
        removes.push(["o", partition, ref]);
      }
    }
  }

  /** Outbox entries published and not yet removed (published): into `side`, to commit with it. */
  takeOutboxRemovals(side: SideWrites): void {
    if (this.#removals.length === 0) return;
    for (const k of this.#removals) side.removes.push(k);
    this.#removals = [];
  }

  /** Removes what published left now, without waiting for the next commit (at close; before a forget replies); resolves once committed. */
  flushOutboxRemovals(): Promise<void> {
    if (this.#removals.length === 0) return Promise.resolve();
    const removes = this.#removals;
    this.#removals = [];
    return this.#d.store.audienceWrite({ puts: [], removes });
  }
}

/** Count of an audience: the sum of its committed counts in the partitions' records. */
export function audienceCount(store: ProfileStore, audience: string): number {
  let n = 0;
  for (const { value } of store.audienceRange(["c", 0], ["c", Number.MAX_SAFE_INTEGER])) {
    const r = value as (string | number)[];
    for (let i = 0; i + 1 < r.length; i += 2) {
      if (r[i] !== audience) continue;
      n += r[i + 1] as number;
      break;
    }
  }
  return n;
}

/** A page of an audience's committed members, after user `after` ("" = from the start). */
export function audienceMembers(store: ProfileStore, audience: string, after: string, limit: number): { userId: string; sinceMs: number; holdout: boolean }[] {
  const out: { userId: string; sinceMs: number; holdout: boolean }[] = [];
  if (limit <= 0) return out;
  for (const [user, since, holdout] of store.members(audience, after)) {
    out.push({ userId: user, sinceMs: since, holdout: holdout === 1 });
    if (out.length >= limit) break;
  }
  return out;
}

/** One group of an uplift report: members entered, share who bought within the window, revenue per member. */
export interface ReportGroup {
  members: number;
  buyers: number;
  purchaseRate: number;
  revenuePerMember: number;
  /** Sample variance of revenue per member. */
  revenueVariance: number;
}

/**
 * What members did in the `days` UTC days from the day they entered (their
 * day buckets: purchases and revenue), split into contacted members and
 * holdout: current members, and for an audience with a holdout those who
 * have left too (each membership once, whether or not it lasted the days:
 * leaving, by buying for example, is part of what is measured). Members
 * whose profile is gone (forgotten) are left out.
 */
export function audienceReport(store: ProfileStore, audience: string, days: number): { contacted: ReportGroup; holdout: ReportGroup } {
  const acc = [[0, 0, 0, 0], [0, 0, 0, 0]]; // members, buyers, Σ revenue, Σ revenue²
  const current = [...store.members(audience)];
  // Departed members (audiences with a holdout): [x, audience, user, since] -> [exit ms, holdout].
  const departed = store.audienceRange(["x", audience], ["x", audience, "\u{10FFFF}"]).map(({ key, value }) => [key[2] as string, key[3] as number, (value as [number, number])[1]] as const);
  for (const [user, since, holdout] of [...current, ...departed]) {
    const u = store.getState(user);
    if (u === undefined) continue;
    const from = Math.floor(since / 86_400_000);
    let buys = 0;
    let cents = 0;
    const d = u.aud?.d ?? [];
    for (let i = 0; i < d.length; i += 5) {
      if (d[i]! >= from && d[i]! < from + days) {
        buys += d[i + 3]!;
        cents += d[i + 4]!;
      }
    }
    const g = acc[holdout === 1 ? 1 : 0]!;
    g[0]!++;
    if (buys > 0) g[1]!++;
    g[2]! += cents / 100;
    g[3]! += (cents / 100) ** 2;
  }
  const group = ([n, b, s, s2]: number[]): ReportGroup => {
    const mean = n! > 0 ? s! / n! : 0;
    return { members: n!, buyers: b!, purchaseRate: n! > 0 ? b! / n! : 0, revenuePerMember: mean, revenueVariance: n! > 1 ? (s2! - n! * mean * mean) / (n! - 1) : 0 };
  };
  return { contacted: group(acc[0]!), holdout: group(acc[1]!) };
}
