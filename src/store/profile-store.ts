/**
 * LMDB storage of user state and of each partition's applied stream sequence.
 *
 * Layout (one LMDB environment at `<dataDir>/lmdb`):
 * - db `profiles`: user id -> UserState without what an audience evaluation
 *   changes, in the layout of src/store/profile-layout.ts (fields at fixed
 *   places, written by code of its own; its risk state as one flat number
 *   array, src/actors/risk.ts packRisk), as one msgpack bin value
 *   (LZ4-compressed from PROFILE_COMPRESSION_THRESHOLD_BYTES with the option
 *   compressProfiles, and read whether compressed or not). Profiles stored
 *   before that layout are msgpack of the state itself, with shared
 *   structures (objects are records, except dictionaries with a null
 *   prototype, which are maps; the risk state packed, or before that its
 *   record): they still load, and their next write is of the layout. States
 *   written before the `memberships` db existed hold their memberships here
 *   (AudienceState.m, due, w, q), and a `memberships` record, once written,
 *   takes precedence;
 * - db `memberships`: user id -> what an audience evaluation changes, one flat
 *   msgpack array (MembershipRecord): [due ms, w, q0, q1, then per audience
 *   entered at least once: audience number, since ms, transitions, holdout];
 *   none for a user that never entered an audience and has no due. The
 *   audience number is the id's in the `audiences` db's dictionary (["n", id]
 *   -> number, registerAudiences); an id without one, and every id in records
 *   written before the dictionary, is the id string itself. Written by
 *   itself when only memberships or the due changed (a timer, a backfill), so
 *   a time-driven transition or a backfill entry does not rewrite the profile,
 *   and an event that changes no membership does not rewrite the memberships;
 *   read and merged into the state by getState. An audience's members are
 *   read by a scan of this db (`members`): no member index is written;
 * - db `meta`: "seq/<partition>" -> last applied JetStream stream sequence,
 *   "partitions" -> the deployment's partition count,
 *   "pseudonymKeyCheck" -> "off", or an HMAC of a fixed string under the
 *   pseudonymisation key (src/shard/pseudonym.ts): profiles are keyed by
 *   pseudonyms, so a data dir only works with the key it was written with,
 *   "clock" -> the engine clock (engine-clock.ts) when the shard last wrote,
 *   "cat/<category id>" -> the category's name (path) as events carried it:
 *   for people only, written outside the batches (a lost one comes back
 *   with the category's next event).
 *
 * - db `audiences` (ordered keys, src/shard/audience-runner.ts): ["t", partition,
 *   time ms, user] -> 1 (the timers' coarse index: an entry at or before the
 *   user's committed due, src/shard/audience-timers.ts), ["c", partition] -> [audience, members, ...]
 *   (the partition's counts; ["c", audience, partition] -> members before), ["o", partition,
 *   entry number] -> the transitions of one commit, or ["o", partition, message
 *   id] -> an identity message (the outbox: committed, not yet published),
 *   ["b", shard] -> the definitions a shard last backfilled, ["n", audience
 *   id] -> its number in memberships records (never changes once given; the
 *   numbers are 1, 2, ... in the order ids were first registered). Written in the
 *   same transaction as the states that caused them.
 *
 * - db `chain` (versioned): "p/<partition>" -> its version counts the
 *   partition's committed batches.
 *
 * - db `aliases` (README "Identity"): secondary key -> [primary key, primary's
 *   partition, merge id]: an id merged into another. Written by the
 *   secondary's partition in the batch of its IDENTIFY (with the removal of
 *   its profile and the hand-over in the outbox), read on ingest when a user
 *   has no actor in memory, removed when the merged user is forgotten.
 * - db `merging` (README "Identity"): "<primary key>\0<secondary key>" ->
 *   [merge id, secondary's partition, forgotten ms?]: a merge whose hand-over
 *   has not been folded yet. Written with the alias entry, removed by the
 *   primary's partition in the batch that folds (or drops) the hand-over. A
 *   forget of the primary marks its entries forgotten (with the removal of the
 *   profile), and a hand-over whose entry is marked is dropped, not folded: a
 *   forget that overtakes a hand-over does not resurrect the person.
 *
 * Writes are lmdb-js asynchronous puts: every put issued in one event turn is
 * committed in one transaction, and the returned promise resolves when it is
 * durable. A batch's profile puts and its sequence put are one conditional
 * block (`commitBatch`), so they commit together or not at all, and only if
 * the partition's previous batch committed: lmdb-js goes on committing the
 * transactions queued behind a failed one (a disk that was full can take a
 * smaller one), and without the condition a later batch's sequence would
 * cover the events of the failed one, which a restart would then skip.
 * Reads are synchronous and see committed data only.
 *
 * Failures: a write that cannot commit (disk full, I/O error) rejects with
 * STORAGE_FAILED naming the LMDB error; nothing of it is written.
 */
import { open, type Database, type DatabaseOptions, type RootDatabase } from "lmdb";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { membershipEntries } from "../actors/audience-state.js";
import type { AudienceState } from "../actors/audience-types.js";
import { unpackRisk, type RiskRecord } from "../actors/risk.js";
import type { UserState } from "../actors/user-profile.js";
import { ConfigError, ErrorCode, PortraitError } from "../errors.js";
import { decodeProfile, encodeProfileBin, layoutStart } from "./profile-layout.js";

/** Initial LMDB map size, bytes: 1 GiB (it grows). The engine's `mapSizeBytes` default too. */
export const DEFAULT_MAP_SIZE_BYTES = 2 ** 30;

/**
 * Profiles of at least this many bytes (as msgpack) are stored LZ4-compressed
 * (lmdb-js `compression`, its default dictionary; compressed in lmdb-js's
 * write thread, decompressed by reads). A compressed value starts with byte
 * 254 or 255, which no stored profile does (a msgpack bin, 0xc4-0xc6, or of
 * the layout before a record, 0x40-0x7f, or a map), so profiles stored
 * uncompressed read as they are.
 */
export const PROFILE_COMPRESSION_THRESHOLD_BYTES = 128;

/** lmdb-js's mark of a value given as its stored bytes (what its asBinary returns: `{ [BINARY_DATA]: bytes }`). */
const BINARY_DATA = "\x10binary-data\x02";
/** The one asBinary wrapper of the profile and memberships puts: lmdb-js reads it within the put. */
const BINARY_VALUE: { [BINARY_DATA]: Uint8Array | undefined } = { [BINARY_DATA]: undefined };

/** Parts of a user's state that a commit writes (commitBatch): the profile, the memberships record, or both (the default). */
export const PROFILE_PART = 1;
export const MEMBERSHIPS_PART = 2;

/** A `memberships` record: [due, w, q0, q1, (audience, since, transitions, holdout)...] (see the layout above). */
type MembershipRecord = (number | string)[];

/**
 * The audience numbers of memberships records (["n", id] -> number in the
 * `audiences` db): a record names an audience by a small integer (one byte in
 * msgpack up to 127) rather than by its id string (~15 bytes each, packed and
 * unpacked with every record). Numbers are given under the write lock
 * (`register`), so every thread and process sharing the environment sees the
 * same one for an id; a thread that reads a number it does not know yet
 * reloads the dictionary (another one registered it).
 */
class AudienceNumbers {
  readonly #byId = new Map<string, number>();
  readonly #ids: (string | undefined)[] = [];
  readonly #root: RootDatabase;
  readonly #db: Database<unknown, AudienceKey>;

  constructor(root: RootDatabase, db: Database<unknown, AudienceKey>) {
    this.#root = root;
    this.#db = db;
    this.#load();
  }

  #load(): void {
    for (const { key, value } of this.#db.getRange({ start: ["n", ""], end: ["n", "\u{10FFFF}"] })) {
      const id = key[1] as string;
      const n = value as number;
      this.#byId.set(id, n);
      this.#ids[n] = id;
    }
  }

  /** Gives the ids that have none a number, in one synchronous transaction (a set of definitions changed). */
  register(ids: Iterable<string>): void {
    const missing = [...new Set(ids)].filter((id) => !this.#byId.has(id));
    if (missing.length === 0) return;
    const given: [string, number][] = [];
    this.#root.transactionSync(() => {
      // What other threads gave since this one loaded, read under the write lock.
      this.#load();
      let next = Math.max(1, this.#ids.length);
      for (const id of missing) {
        if (this.#byId.has(id)) continue;
        const n = next++;
        void this.#db.put(["n", id], n);
        given.push([id, n]);
      }
    });
    // Used only once committed (a failed transaction throws here, and its ids keep being written as strings).
    for (const [id, n] of given) {
      this.#byId.set(id, n);
      this.#ids[n] = id;
    }
  }

  /** The number of an id, or the id itself when it has none. */
  of(id: string): number | string {
    return this.#byId.get(id) ?? id;
  }

  /** The id of a record's entry: a number of the dictionary, or an id string (no number, or a record of the layout before). */
  id(x: number | string): string {
    if (typeof x === "string") return x;
    let id = this.#ids[x];
    if (id === undefined) {
      this.#load();
      id = this.#ids[x];
      if (id === undefined) throw new PortraitError(ErrorCode.STORAGE_FAILED, `memberships record names audience number ${x}, which the dictionary does not hold`);
    }
    return id;
  }

  /** The number of an id as the dictionary holds it now (reloaded when this thread does not know one), or undefined. */
  current(id: string): number | undefined {
    if (!this.#byId.has(id)) this.#load();
    return this.#byId.get(id);
  }
}

function membershipRecord(a: AudienceState, numbers: AudienceNumbers): MembershipRecord {
  const r: MembershipRecord = [a.due, a.w ?? 0, a.q?.[0] ?? 0, a.q?.[1] ?? 0];
  const m = a.m;
  for (const id in m) {
    const x = m[id]!;
    r.push(numbers.of(id), x[0], x[1], x[2]);
  }
  return r;
}

/** Scratch of membershipBytes (grown when a record needs more). */
let recordScratch = Buffer.allocUnsafe(4096);

/** A number as msgpack writes it (the smallest integer form, else float64), at `at`; returns the end. */
function packNumber(b: Buffer, at: number, x: number): number {
  if (x >>> 0 === x) {
    if (x < 128) b[at++] = x;
    else if (x < 256) {
      b[at++] = 0xcc;
      b[at++] = x;
    } else if (x < 65536) {
      b[at++] = 0xcd;
      at = b.writeUInt16BE(x, at);
    } else {
      b[at++] = 0xce;
      at = b.writeUInt32BE(x, at);
    }
  } else if (x >> 0 === x) {
    if (x >= -32) b[at++] = x & 0xff;
    else if (x >= -128) {
      b[at++] = 0xd0;
      at = b.writeInt8(x, at);
    } else if (x >= -32768) {
      b[at++] = 0xd1;
      at = b.writeInt16BE(x, at);
    } else {
      b[at++] = 0xd2;
      at = b.writeInt32BE(x, at);
    }
  } else {
    b[at++] = 0xcb;
    at = b.writeDoubleBE(x, at);
  }
  return at;
}

/**
 * A memberships record (membershipRecord) as msgpack bytes, written here
 * rather than built as an array for msgpackr to walk (a record has 4 numbers
 * per audience the user ever entered, and is written at ~1.1 per event in
 * the audience bench); undefined when the user keeps no record (never
 * entered an audience, no due, no cohort bins). The store puts them as they
 * are (asBinary): the `memberships` db decodes them as any msgpack array,
 * so records written before read the same.
 */
export function membershipBytes(a: AudienceState, numbers: { of(id: string): number | string }): Buffer | undefined {
  const m = a.m;
  const q0 = a.q?.[0] ?? 0;
  const q1 = a.q?.[1] ?? 0;
  // Numbers take at most 9 bytes; an id without a number its UTF-8 bytes (at most 3 per UTF-16 unit) and a 3-byte
  // header. The elements are written from byte 5 on, and the array's header (at most 5 bytes) just before them once
  // their count is known.
  let b = recordScratch;
  let at = packNumber(b, 5, a.due);
  at = packNumber(b, at, a.w ?? 0);
  at = packNumber(b, at, q0);
  at = packNumber(b, at, q1);
  const kept = membershipEntries(a);
  let k = 0;
  // The entries as the evaluation keeps them, or a walk of m (a state not evaluated since it was read).
  const ids = kept?.ids ?? Object.keys(m);
  for (; k < ids.length; k++) {
    const id = ids[k]!;
    const no = numbers.of(id);
    const need = at + 27 + (typeof no === "string" ? 3 + 3 * no.length : 9);
    if (need > b.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * b.length));
      b.copy(grown, 0, 0, at);
      b = recordScratch = grown;
    }
    if (typeof no === "number") at = packNumber(b, at, no);
    else {
      const len = Buffer.byteLength(no);
      if (len < 32) b[at++] = 0xa0 | len;
      else if (len < 256) {
        b[at++] = 0xd9;
        b[at++] = len;
      } else {
        b[at++] = 0xda;
        at = b.writeUInt16BE(len, at);
      }
      at += b.write(no, at, len, "utf8");
    }
    const x = kept !== undefined ? kept.all[k]! : m[id]!;
    at = packNumber(b, at, x[0]);
    at = packNumber(b, at, x[1]);
    at = packNumber(b, at, x[2]);
  }
  if (k === 0 && a.due === 0 && q0 === 0 && q1 === 0) return undefined;
  const n = 4 + 4 * k;
  let start = 5;
  if (n < 16) b[--start] = 0x90 | n;
  else if (n < 65536) {
    start -= 3;
    b[start] = 0xdc;
    b.writeUInt16BE(n, start + 1);
  } else {
    start -= 5;
    b[start] = 0xdd;
    b.writeUInt32BE(n, start + 1);
  }
  const out = Buffer.allocUnsafe(at - start);
  b.copy(out, 0, start, at);
  return out;
}

function readMemberships(a: AudienceState, r: MembershipRecord, numbers: AudienceNumbers): void {
  a.due = r[0] as number;
  // A profile of the new layout has none of these; one of the old layout may have them (deleted: the record wins).
  if (r[1] === 1) a.w = 1;
  else if ("w" in a) delete a.w;
  if (r[2] !== 0 || r[3] !== 0) a.q = [r[2] as number, r[3] as number];
  else if ("q" in a) delete a.q;
  if ("tm" in a) delete a.tm;
  const m = Object.create(null) as AudienceState["m"];
  for (let i = 4; i + 3 < r.length; i += 4) m[numbers.id(r[i]!)] = [r[i + 1] as number, r[i + 2] as number, r[i + 3] as number];
  a.m = m;
}

/** The rejection handler of writes whose failure the batch's block reports (one function, not a closure per write). */
const ignore = (): undefined => undefined;
/** A stored profile as the profiles db decodes it: bytes of the layout (profile-layout.ts), or a state of the layout before. */
type StoredProfile = Uint8Array | UserState;

/** A key of the `audiences` db. */
export type AudienceKey = (string | number)[];

/** Writes of the `audiences` db that commit with a batch. */
export interface SideWrites {
  puts: [AudienceKey, unknown][];
  removes: AudienceKey[];
}

/** An entry of the alias table: [primary key, primary's partition, merge id]. */
export type AliasEntry = [string, number, string];

/** An entry of the `merging` table: [merge id, secondary's partition, when its primary was forgotten (ms), if it was]. */
export type MergingEntry = [string, number, number?];

/** The key of a merge in flight in the `merging` table. */
export function mergingKey(primaryKey: string, secondaryKey: string): string {
  return `${primaryKey}\u0000${secondaryKey}`;
}

/** Identity writes that commit with a batch: profiles removed (merged into another id), alias entries, merges in flight. */
export interface IdentityWrites {
  removeProfiles: string[];
  aliasPuts: [string, AliasEntry][];
  mergingPuts: [string, MergingEntry][];
  mergingRemoves: string[];
}

export interface ProfileStoreOptions {
  /** Directory of the engine's state; the LMDB environment lives in `<dataDir>/lmdb`. */
  dataDir: string;
  /** LMDB map size, bytes; grows automatically, this is the initial size. Default DEFAULT_MAP_SIZE_BYTES (1 GiB). */
  mapSizeBytes?: number;
  /** Write profiles of PROFILE_COMPRESSION_THRESHOLD_BYTES and up LZ4-compressed. Compressed profiles are read either way. Default false. */
  compressProfiles?: boolean;
}

/** The cause of a failed lmdb-js write: its `commitError` is a promise that rejects with the LMDB error (e.g. "No space left on device"). */
async function commitFailure(err: unknown): Promise<string> {
  const e = err as Error & { commitError?: Promise<unknown> };
  if (e?.commitError === undefined) return e?.message ?? String(err);
  const cause = await Promise.race([e.commitError.then(() => undefined, (x: unknown) => x), new Promise((r) => setTimeout(r, 100))]);
  return cause instanceof Error ? cause.message : e.message;
}

/**
 * When an LMDB transaction fails, lmdb-js rejects the promises of its writes
 * from inside whichever write call comes next (before that caller could
 * attach a handler), and rejects a shared `commitError` promise that nothing
 * else holds. The failure itself is reported once, as STORAGE_FAILED, by the
 * write whose promise its caller awaits; a process-level unhandledRejection
 * handler uses this to let these echoes pass (anything else still crashes).
 */
export function isLmdbCommitEcho(reason: unknown, promise: Promise<unknown>): boolean {
  const commitFailed = reason instanceof Error && reason.message.startsWith("Commit failed") && "commitError" in reason;
  const commitErrorPromise = typeof (promise as Promise<unknown> & { reject?: unknown }).reject === "function";
  return commitFailed || commitErrorPromise;
}

export class ProfileStore {
  readonly #dataDir: string;
  readonly #root: RootDatabase;
  readonly #profiles: Database<StoredProfile, string>;
  readonly #memberships: Database<MembershipRecord, string>;
  /** Audience states read from a profile of the layout before the `memberships` db: their next write writes their memberships too. */
  readonly #legacy = new WeakSet<AudienceState>();
  readonly #meta: Database<number | string, string>;
  readonly #chain: Database<number, string>;
  readonly #aud: Database<unknown, AudienceKey>;
  readonly #aliases: Database<AliasEntry, string>;
  readonly #merging: Database<MergingEntry, string>;
  readonly #numbers: AudienceNumbers;
  /** Version the chain entry of each partition has once every batch issued so far has committed. */
  readonly #chainVersion = new Map<number, number>();
  #closed = false;
  /** The clock this store last wrote (putClock), and whether it wrote the engine live. */
  #clockWritten = 0;
  #liveWritten = false;

  constructor(o: ProfileStoreOptions) {
    this.#dataDir = o.dataDir;
    const path = join(o.dataDir, "lmdb");
    mkdirSync(path, { recursive: true });
    this.#root = open({ path, mapSize: o.mapSizeBytes ?? DEFAULT_MAP_SIZE_BYTES, compression: false });
    this.#profiles = this.#root.openDB<UserState, string>({
      name: "profiles",
      encoding: "msgpack",
      sharedStructuresKey: Symbol.for("structures"),
      // A record structure per distinct key set suits fixed shapes; a membership dictionary is a new key set at almost
      // every transition, so it is written as a map (record definitions were 12% of a shard's time with 100 audiences).
      useRecords: (o: object) => Object.getPrototypeOf(o) !== null,
      mapsAsObjects: true,
      // Always configured, so that compressed profiles read whatever the option says; with it off none is written.
      compression: { threshold: o.compressProfiles === true ? PROFILE_COMPRESSION_THRESHOLD_BYTES : Number.POSITIVE_INFINITY },
    } as DatabaseOptions & { name: string });
    this.#memberships = this.#root.openDB<MembershipRecord, string>({ name: "memberships", encoding: "msgpack" });
    this.#meta = this.#root.openDB<number | string, string>({ name: "meta", encoding: "msgpack" });
    this.#chain = this.#root.openDB<number, string>({ name: "chain", encoding: "msgpack", useVersions: true });
    this.#aud = this.#root.openDB<unknown, AudienceKey>({ name: "audiences", encoding: "msgpack" });
    this.#aliases = this.#root.openDB<AliasEntry, string>({ name: "aliases", encoding: "msgpack" });
    this.#merging = this.#root.openDB<MergingEntry, string>({ name: "merging", encoding: "msgpack" });
    this.#numbers = new AudienceNumbers(this.#root, this.#aud);
  }

  /**
   * Gives audience ids their numbers for memberships records (the layout
   * above), once per id: call with a set's ids before its evaluations are
   * committed (an id without a number is written as its string, which loads
   * the same).
   */
  registerAudiences(ids: Iterable<string>): void {
    this.#numbers.register(ids);
  }

  /** A merge in flight (db `merging`) by its key (mergingKey), or undefined. */
  merging(key: string): MergingEntry | undefined {
    return this.#merging.get(key);
  }

  /** The merges into `primaryKey` whose hand-over is not folded yet: [secondary key, entry]. */
  mergesInFlight(primaryKey: string): [string, MergingEntry][] {
    const start = mergingKey(primaryKey, "");
    const out: [string, MergingEntry][] = [];
    for (const { key, value } of this.#merging.getRange({ start, end: `${primaryKey}\u0001` })) {
      out.push([(key as string).slice(start.length), value]);
    }
    return out;
  }

  /** The committed alias entry of a key (README "Identity"), or undefined when the key is not an alias. */
  getAlias(key: string): AliasEntry | undefined {
    return this.#aliases.get(key);
  }

  aliasCount(): number {
    return this.#aliases.getKeysCount();
  }

  /**
   * Current members of an audience (since > 0 in their memberships record) in user-id order after `after` ("" = from the
   * start): [user, since ms, holdout 0/1]. A scan of the `memberships` db (a record only for the users that ever entered an
   * audience or have a due); there is no member index to keep with every transition.
   */
  *members(audience: string, after = ""): Generator<[string, number, number]> {
    // Entries name the audience by its number, or by its id (no number then, or a record of the layout before).
    const n = this.#numbers.current(audience) ?? audience;
    for (const { key, value } of this.#memberships.getRange(after === "" ? {} : { start: after })) {
      if (key === after) continue;
      for (let i = 4; i + 3 < value.length; i += 4) {
        if (value[i] !== n && value[i] !== audience) continue;
        if ((value[i + 1] as number) > 0) yield [key, value[i + 1] as number, value[i + 3] as number];
        break;
      }
    }
  }

  /**
   * Data dirs written before members were read from the `memberships` db kept a member index, ["m", audience, user] in
   * the `audiences` db. In one transaction: each indexed user that `owned` accepts gets its memberships record (a
   * profile of the layout before that db holds its memberships inside), and its index entries go. Synchronous: at a
   * shard's start, before its batches (other shards write only their own users). Returns the entries removed.
   */
  dropMemberIndex(owned: (user: string) => boolean): number {
    let removed = 0;
    this.#root.transactionSync(() => {
      for (const { key } of this.#aud.getRange({ start: ["m"], end: ["m", "\u{10FFFF}"] })) {
        const user = key[2] as string;
        if (!owned(user)) continue;
        if (!this.#memberships.doesExist(user)) {
          const a = this.getState(user)?.aud;
          if (a !== undefined) {
            void this.#memberships.put(user, membershipRecord(a, this.#numbers));
            this.#legacy.delete(a);
          }
        }
        void this.#aud.remove(key);
        removed++;
      }
    });
    return removed;
  }

  /** Committed entries of the `audiences` db from `start` (inclusive) to `end` (exclusive), at most `limit`. */
  audienceRange(start: AudienceKey, end: AudienceKey, limit?: number): { key: AudienceKey; value: unknown }[] {
    return [...this.#aud.getRange({ start, end, ...(limit !== undefined ? { limit } : {}) })] as { key: AudienceKey; value: unknown }[];
  }

  audienceGet(key: AudienceKey): unknown {
    return this.#aud.get(key);
  }

  /** Writes in one transaction, now (a shard's start, before its batches). */
  audienceWriteSync(w: SideWrites): void {
    this.#root.transactionSync(() => {
      for (const [k, v] of w.puts) void this.#aud.put(k, v);
      for (const k of w.removes) void this.#aud.remove(k);
    });
  }

  /** Writes outside the batch chain (what is lost in a crash is only redone): callers need not await it; resolves once committed (a failed write is dropped, not thrown). */
  audienceWrite(w: SideWrites): Promise<void> {
    const done: Promise<unknown>[] = [];
    for (const [k, v] of w.puts) done.push(this.#aud.put(k, v).catch(ignore));
    for (const k of w.removes) done.push(this.#aud.remove(k).catch(ignore));
    return Promise.all(done).then(() => undefined);
  }

  /** User ids of stored profiles after `after` (exclusive; "" = from the start), at most `limit`. */
  profileKeys(after: string, limit: number): string[] {
    const out: string[] = [];
    for (const k of this.#profiles.getKeys({ start: after, limit: limit + 1 })) {
      if (k === after) continue;
      out.push(k);
      if (out.length >= limit) break;
    }
    return out;
  }

  profileCount(): number {
    return this.#profiles.getKeysCount();
  }

  /**
   * Removes a user's state together with the audience writes of its
   * forgetting (exits in the outbox, members, counts, timers), the alias
   * entries given and the merges in flight into it marked forgotten
   * (`mergingPuts`), in one transaction. STORAGE_FAILED when it cannot commit.
   */
  async removeStateWith(userId: string, side: SideWrites, aliasKeys: readonly string[] = [], mergingPuts: readonly [string, MergingEntry][] = []): Promise<void> {
    try {
      await this.#root.transaction(() => {
        void this.#profiles.remove(userId);
        void this.#memberships.remove(userId);
        for (const k of aliasKeys) void this.#aliases.remove(k);
        for (const [k, v] of mergingPuts) void this.#merging.put(k, v);
        for (const [k, v] of side.puts) void this.#aud.put(k, v);
        for (const k of side.removes) void this.#aud.remove(k);
      });
    } catch (err) {
      throw new PortraitError(ErrorCode.STORAGE_FAILED, `LMDB commit failed in ${this.#dataDir}: ${await commitFailure(err)}`, { cause: err });
    }
  }

  getState(userId: string): UserState | undefined {
    // The value's bytes as stored (decompressed), valid until the next read: the layout is decoded from them, not from a copy.
    const bytes = this.#profiles.getBinaryFast(userId);
    if (bytes === undefined) return undefined;
    const start = layoutStart(bytes);
    if (start >= 0) {
      const s = decodeProfile(bytes, start);
      const r = s.aud !== undefined ? this.#memberships.get(userId) : undefined;
      if (r !== undefined) readMemberships(s.aud!, r, this.#numbers);
      return s;
    }
    // The layouts before: msgpack of the state (read again, decoded by msgpackr with the db's shared structures), with the
    // risk state's stored form (packRisk), or before that its record.
    const s = this.#profiles.get(userId) as UserState;
    if (s.rk !== undefined) s.rk = unpackRisk(s.rk as number[] | RiskRecord);
    const a = s.aud;
    if (a === undefined) return s;
    const r = this.#memberships.get(userId);
    if (r !== undefined) {
      readMemberships(a, r, this.#numbers);
    } else if (a.m !== undefined) {
      // The layout before the memberships db: decoded dictionaries are plain objects, the memberships get their null prototype back (AudienceState.m).
      Object.setPrototypeOf(a.m, null);
      this.#legacy.add(a);
    } else {
      a.m = Object.create(null) as AudienceState["m"];
      a.due = 0;
    }
    return s;
  }

  /** Bytes of a user's stored values as written (0 = none): its profile and its memberships record (benches). */
  storedBytes(userId: string): { profile: number; memberships: number } {
    return { profile: this.#profiles.getBinary(userId)?.length ?? 0, memberships: this.#memberships.getBinary(userId)?.length ?? 0 };
  }

  hasState(userId: string): boolean {
    return this.#profiles.doesExist(userId);
  }

  /** Queues the removal of a user's state; it commits with the other writes of this event turn, in issue order. STORAGE_FAILED when it cannot. */
  async removeState(userId: string): Promise<void> {
    try {
      void this.#memberships.remove(userId).catch(ignore);
      await this.#profiles.remove(userId);
    } catch (err) {
      throw new PortraitError(ErrorCode.STORAGE_FAILED, `LMDB commit failed in ${this.#dataDir}: ${await commitFailure(err)}`, { cause: err });
    }
  }

  /** The engine clock this shard last stored (engine-clock.ts), Unix ms; 0 when none. */
  getClock(): number {
    const v = this.#meta.get("clock");
    return typeof v === "number" ? v : 0;
  }

  /** True when the engine was live when the clock was last stored (putClock). */
  getClockLive(): boolean {
    return this.#meta.get("clock-live") === 1;
  }

  /** Stores the engine clock when it moved since the last write, and that it is live once it is; not awaited (lmdb-js commits it on its own soon after). */
  putClock(ms: number, live = false): void {
    if (ms > this.#clockWritten) {
      this.#clockWritten = ms;
      void this.#meta.put("clock", ms).catch(ignore);
    }
    if (live && !this.#liveWritten) {
      this.#liveWritten = true;
      void this.#meta.put("clock-live", 1).catch(ignore);
    }
  }

  /** The stored name of a category, if one was seen. */
  getCategoryLabel(categoryId: string): string | undefined {
    const v = this.#meta.get(`cat/${categoryId}`);
    return typeof v === "string" ? v : undefined;
  }

  /** Stores a category's name; not awaited by anyone (it commits with the next transaction). */
  putCategoryLabel(categoryId: string, label: string): void {
    void this.#meta.put(`cat/${categoryId}`, label).catch(ignore);
  }

  getAppliedSeq(partition: number): number {
    return (this.#meta.get(`seq/${partition}`) as number | undefined) ?? 0;
  }

  /**
   * Queues the writes of a user's state: its profile (in its layout), its
   * memberships record, or both (`parts`; a state read from the layout before
   * the `memberships` db writes its record in any case); within a transaction
   * or block.
   */
  #putState(id: string, state: UserState, parts: number): void {
    // lmdb-js encodes the value within the put: the encoder's bytes are copied before the next state is encoded.
    // Only ever called within a block (commitBatch's ifVersion, a transaction): lmdb-js's put in a block returns its
    // shared settled promise (the block's promise reports the outcome), so no .catch: that made a promise and a
    // microtask per put.
    if (parts & PROFILE_PART) {
      // The msgpack bin value made in place (encodeProfileBin), put as bytes (lmdb-js asBinary, one wrapper for every put).
      BINARY_VALUE[BINARY_DATA] = encodeProfileBin(state);
      void this.#profiles.put(id, BINARY_VALUE as unknown as UserState);
    }
    const a = state.aud;
    if (a !== undefined && (parts & MEMBERSHIPS_PART || this.#legacy.has(a))) {
      const r = membershipBytes(a, this.#numbers);
      // A user that never entered an audience and has no due keeps no record (no disk per user without audiences).
      if (r === undefined) void this.#memberships.remove(id);
      else {
        BINARY_VALUE[BINARY_DATA] = r;
        void this.#memberships.put(id, BINARY_VALUE as unknown as MembershipRecord);
      }
      this.#legacy.delete(a);
    }
  }

  /**
   * Queues a batch of a partition: its users' states (each with the parts to
   * write: PROFILE_PART | MEMBERSHIPS_PART, default both) and the partition's
   * applied sequence, written only if every batch of the partition issued
   * before it committed. The writes are queued in this call; resolves once
   * they committed. Rejects with STORAGE_FAILED when its own transaction
   * fails, or when an earlier batch of the partition failed (then nothing of
   * this one is written).
   */
  /**
   * `between`: called after every 64 states queued (a shard answers lookups there: BatchApplierDeps.queries); it must
   * not write to this store.
   */
  async commitBatch(partition: number, seq: number, states: readonly (readonly [string, UserState, number?])[], side?: SideWrites, identity?: IdentityWrites, between?: () => void): Promise<void> {
    const key = `p/${partition}`;
    let version = this.#chainVersion.get(partition);
    if (version === undefined) {
      version = this.#chain.getEntry(key)?.version ?? 0;
      if (version === 0) {
        this.#chain.putSync(key, 0, 1);
        version = 1;
      }
    }
    const next = version + 1;
    this.#chainVersion.set(partition, next);
    const block = this.#chain.ifVersion(key, version, () => {
      // Each put settles with the block; the block's promise reports the outcome once.
      // Indexed, no destructuring: a for-of over the tuples made an iterator per state written.
      for (let i = 0; i < states.length; i++) {
        const x = states[i]!;
        this.#putState(x[0], x[1], x[2] ?? PROFILE_PART | MEMBERSHIPS_PART);
        if (between !== undefined && (i & 63) === 63) between();
      }
      if (side !== undefined) {
        for (const [k, v] of side.puts) void this.#aud.put(k, v).catch(ignore);
        for (const k of side.removes) void this.#aud.remove(k).catch(ignore);
      }
      if (identity !== undefined) {
        for (const k of identity.removeProfiles) {
          void this.#profiles.remove(k).catch(ignore);
          void this.#memberships.remove(k).catch(ignore);
        }
        for (const [k, v] of identity.aliasPuts) void this.#aliases.put(k, v).catch(ignore);
        for (const [k, v] of identity.mergingPuts) void this.#merging.put(k, v).catch(ignore);
        for (const k of identity.mergingRemoves) void this.#merging.remove(k).catch(ignore);
      }
      void this.#meta.put(`seq/${partition}`, seq).catch(ignore);
      void this.#chain.put(key, 0, next).catch(ignore);
    });
    let committed: boolean;
    try {
      committed = await block;
    } catch (err) {
      throw new PortraitError(ErrorCode.STORAGE_FAILED,
        `LMDB commit failed in ${this.#dataDir}: ${await commitFailure(err)} (disk full or I/O error?)`, { cause: err });
    }
    if (!committed) {
      throw new PortraitError(ErrorCode.STORAGE_FAILED,
        `LMDB commit of partition ${partition} skipped in ${this.#dataDir}: an earlier batch of the partition failed to commit`);
    }
  }

  /**
   * Replaces a partition's users with those restored from its changelog
   * (README "Scale-out": LMDB is a cache of the partitions a node owns): in
   * one transaction, removes every stored profile and memberships record whose
   * key `belongs` to the partition (a record left from before would take
   * precedence over the restored memberships, and a user gone from the
   * partition would stay a member), writes the restored states as a commit
   * writes them (profile and memberships record), the partition's audience
   * writes (`side`: its timer index and counts, AudienceRunner.adopt;
   * removals first) and its applied sequence. STORAGE_FAILED when it cannot
   * commit.
   */
  async replacePartition(partition: number, belongs: (key: string) => boolean, states: readonly (readonly [string, UserState])[], seq: number, side?: SideWrites): Promise<void> {
    const stale: string[] = [];
    for (const k of this.#profiles.getKeys()) if (belongs(k)) stale.push(k);
    const staleRecords: string[] = [];
    for (const k of this.#memberships.getKeys()) if (belongs(k)) staleRecords.push(k);
    try {
      await this.#root.transaction(() => {
        for (const k of stale) void this.#profiles.remove(k);
        for (const k of staleRecords) void this.#memberships.remove(k);
        for (const [k, v] of states) this.#putState(k, v, PROFILE_PART | MEMBERSHIPS_PART);
        if (side !== undefined) {
          for (const k of side.removes) void this.#aud.remove(k);
          for (const [k, v] of side.puts) void this.#aud.put(k, v);
        }
        void this.#meta.put(`seq/${partition}`, seq);
      });
    } catch (err) {
      throw new PortraitError(ErrorCode.STORAGE_FAILED, `LMDB commit failed in ${this.#dataDir}: ${await commitFailure(err)}`, { cause: err });
    }
  }

  /**
   * Records the partition count on first use and refuses a different one
   * later: a user's partition, and so the order of its events, depends on it.
   */
  checkPartitions(partitions: number): void {
    const stored = this.#meta.get("partitions");
    if (stored === undefined) {
      this.#meta.putSync("partitions", partitions);
    } else if (stored !== partitions) {
      throw new ConfigError(
        `this data dir was created with ${stored} partitions; the engine was started with ${partitions}. ` +
          "The partition count is fixed for a deployment: start with --partitions " + stored,
      );
    }
  }

  /**
   * Records whether profiles are keyed by pseudonyms, and under which key
   * (`check` = keyCheck(key), undefined = off), on first use, and refuses a
   * start that would not find them: another key, a key for a data dir written
   * without one, or none for a data dir written with one.
   */
  checkPseudonymKey(check: string | undefined): void {
    const want = check ?? "off";
    const recorded = this.#meta.get("pseudonymKeyCheck");
    // A data dir from before this check holds raw ids.
    const stored = recorded ?? (this.#profiles.getKeysCount({ limit: 1 }) > 0 ? "off" : undefined);
    if (stored === undefined || stored === want) {
      if (recorded === undefined) this.#meta.putSync("pseudonymKeyCheck", want);
      return;
    }
    if (stored === "off") {
      throw new ConfigError("this data dir holds profiles keyed by raw user ids; pseudonymisation (pseudonymKeyFile) cannot be turned on for it: " +
        "start without it, or with a new data dir");
    } else if (want === "off") {
      throw new ConfigError("this data dir holds profiles keyed by pseudonyms: start with the pseudonymKeyFile it was written with");
    } else {
      throw new ConfigError("this data dir was written with another pseudonymisation key (pseudonymKeyFile): under this key its profiles are unreachable. " +
        "Start with the key it was written with, or with a new data dir");
    }
  }

  /** Resolves when every write issued so far is committed. */
  get committed(): Promise<unknown> {
    return this.#root.committed;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#root.committed;
    await this.#root.close();
  }
}
