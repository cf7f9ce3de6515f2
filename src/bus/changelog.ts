/**
 * The changelog of a partition (README "Scale-out"): one JetStream stream per
 * partition, <PREFIX>_CL_<p>, with max_msgs_per_subject 1. It holds
 *  - writes (`<prefix>.cl.<p>.w.<epoch>.<n>`): one message per write of
 *    committed batches (split in parts of at most WRITE_PART_BYTES), each
 *    changed user once with its latest state;
 *  - compacted records (`<prefix>.cl.<p>.u.<hex key>`): a user's state as of
 *    the last compaction that included it (one per user, like a KV bucket);
 *  - the last takeover mark (`<prefix>.cl.<p>.mark`).
 * The bus sees states as opaque bytes; the shards encode and decode them.
 *
 * Group commit: one write is in flight at a time; the batches committed
 * meanwhile go out together in the next one. Its messages carry
 * Portrait-Seq (the last event stream sequence of its last batch) and, on
 * the last part, Portrait-End. Writes are raw-deflated. Compaction: once the
 * writes since the last compaction take (compressed, as stored) at least
 * twice the bytes of the distinct users they changed (and at least
 * SNAPSHOT_MIN_BYTES), or those users' states exceed SNAPSHOT_MAX_BYTES, the
 * owner writes each of them as a compacted record (the last one with
 * Portrait-End at the last write's sequence) and then purges the write
 * messages before it: the stream stays within about three times the
 * partition's state, and a user changed by many batches between two
 * compactions costs one record.
 *
 * Fencing: every message of the owner (write parts, compacted records) is
 * published with `Nats-Expected-Last-Msg-Id` = the id of the one before it in
 * the owner's chain, which starts at the owner's takeover mark; only the last
 * message of a write or a compaction asks for a PubAck, and its being stored
 * proves that everything before it in the chain was. A new owner reads the
 * stream to its end and appends its mark expecting that end
 * (`Nats-Expected-Last-Sequence`); from then on every message of the old
 * owner is refused (its expected predecessor is no longer the last message,
 * and since a refused message is not stored, every one after it is refused
 * too). So none lands after a newer owner's mark: a user's state in the
 * changelog never goes back in time. A purge removes only writes that a
 * stored compaction covers, so it cannot lose anything, whoever runs it.
 *
 * Restore: messages in stream order, a user's later state replacing its
 * earlier one. The partition's position is the highest Portrait-Seq of a
 * complete write or compaction (or of the last mark); states above it belong
 * to a write cut short by a crash, and their users skip their events up to
 * that sequence on replay (each state holds every event of its user up to
 * its sequence).
 */
import { deflateRawSync, inflateRawSync } from "node:zlib";
import { DiscardPolicy, RetentionPolicy, StorageType, headers, nanos, type JetStreamClient, type JetStreamManager } from "nats";
import { retrySetup } from "./leases.js";
import { ackedPublish, unackedPublish } from "./streams.js";

/** Most bytes of a write message (nats-server's default max_payload is 1 MiB). */
const WRITE_PART_BYTES = 768 * 1024;
/** A compaction waits for at least this many bytes of writes since the last one. */
const SNAPSHOT_MIN_BYTES = 1 << 20;
/** A compaction runs once the users changed since the last one hold this many bytes, whatever the writes hold (a memory bound). */
const SNAPSHOT_MAX_BYTES = 64 << 20;
import type { ChangelogChange } from "./event-batch.js";

export const CL_HEADERS = {
  seq: "Portrait-Seq",
  end: "Portrait-End",
  removed: "Portrait-Removed",
} as const;

export function changelogStream(prefix: string, partition: number): string {
  return `${prefix.toUpperCase().replace(/-/g, "_")}_CL_${partition}`;
}

function userSubject(prefix: string, partition: number, key: string): string {
  return `${prefix}.cl.${partition}.u.${Buffer.from(key, "utf8").toString("hex")}`;
}

function writeSubject(prefix: string, partition: number, epoch: string, n: number): string {
  return `${prefix}.cl.${partition}.w.${epoch}.${n}`;
}

/**
 * A write message, raw-deflated (level 1: the states repeat their field names
 * and item ids, and the servers store and replicate every byte three times):
 * per user, u32 key length, key (UTF-8), i32 state length (-1 = removed), state.
 */
function encodeWrite(entries: readonly (readonly [string, Uint8Array | null])[]): Uint8Array {
  return deflateRawSync(encodeEntries(entries), { level: 1 });
}

function encodeEntries(entries: readonly (readonly [string, Uint8Array | null])[]): Uint8Array {
  let size = 0;
  const keys = entries.map(([k]) => Buffer.from(k, "utf8"));
  for (let i = 0; i < entries.length; i++) size += 8 + keys[i]!.length + (entries[i]![1]?.length ?? 0);
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (let i = 0; i < entries.length; i++) {
    const st = entries[i]![1];
    o = out.writeUInt32LE(keys[i]!.length, o);
    o += keys[i]!.copy(out, o);
    o = out.writeInt32LE(st === null ? -1 : st.length, o);
    if (st !== null) o += Buffer.from(st.buffer, st.byteOffset, st.length).copy(out, o);
  }
  return out;
}

function decodeWrite(compressed: Uint8Array, each: (key: string, state: Uint8Array | null) => void): void {
  const b = inflateRawSync(compressed);
  const data = new Uint8Array(b.buffer, b.byteOffset, b.length);
  let o = 0;
  while (o < b.length) {
    const kl = b.readUInt32LE(o);
    const key = b.toString("utf8", o + 4, o + 4 + kl);
    o += 4 + kl;
    const sl = b.readInt32LE(o);
    o += 4;
    if (sl < 0) {
      each(key, null);
    } else {
      each(key, data.subarray(o, o + sl));
      o += sl;
    }
  }
}

function markSubject(prefix: string, partition: number): string {
  return `${prefix}.cl.${partition}.mark`;
}

/** Creates (or updates) the changelog stream of each partition. */
export async function ensureChangelogs(jsm: JetStreamManager, prefix: string, partitions: number, replicas: number): Promise<void> {
  for (let p = 0; p < partitions; p++) {
    const name = changelogStream(prefix, p);
    const cfg = {
      name, subjects: [`${prefix}.cl.${p}.>`], retention: RetentionPolicy.Limits, storage: StorageType.File,
      discard: DiscardPolicy.Old, max_msgs_per_subject: 1, num_replicas: replicas, duplicate_window: nanos(120_000),
    };
    await retrySetup(`changelog stream ${name}`, async () => {
      try {
        await jsm.streams.info(name);
      } catch {
        await jsm.streams.add(cfg);
      }
    });
  }
}

export type { ChangelogChange } from "./event-batch.js";

/** What a new owner reads from a partition's changelog. */
export interface RestoredPartition {
  /** Every user's last state (null = removed), with the sequence of the batch that wrote it. */
  users: Map<string, { state: Uint8Array | null; seq: number }>;
  /** Everything of the partition's events up to here is in `users`. */
  position: number;
  /** The stream's last sequence when read (the mark expects it). */
  lastSeq: number;
  bytes: number;
  /** Users whose last state came from a write, not a compacted record: the new owner's first compaction includes them. */
  inWrites: Set<string>;
  /** Bytes of the write messages read (as stored, compressed). */
  writeBytes: number;
}

/** The refusal of a record or a mark: another owner wrote the changelog. */
export class FencedError extends Error {}

function isWrongLast(err: unknown): boolean {
  return /wrong last (msg ?id|sequence)|10070|10071/i.test((err as Error)?.message ?? "");
}

/** A batch waiting for the write its changes went out in. */
interface Waiter {
  resolve(r: { records: number; bytes: number }): void;
  reject(err: unknown): void;
}

export class Changelog {
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #prefix: string;
  readonly partition: number;
  readonly stream: string;
  /** Id of the last message of this owner's chain (its mark, then its last record). */
  #lastId = "";
  #n = 0;
  #chainTag = "";
  /** The batches appended while a write is in flight: they go out together in the next one. */
  #next: { seq: number; changes: Map<string, Uint8Array | null>; waiters: Waiter[] } | undefined;
  #writing = false;
  /** Set once a write failed: the chain is cut, nothing more is written. */
  #broken: FencedError | undefined;
  #epoch = "";
  /** Users written in writes since the last compaction, with their latest state and its sequence. */
  readonly #since = new Map<string, { state: Uint8Array | null; seq: number }>();
  #sinceBytes = 0;
  /** Bytes of the writes since the last compaction, as stored (compressed). */
  #writtenBytes = 0;
  /** The sequence of the last write stored. */
  #lastWriteSeq = 0;

  readonly #compactMinBytes: number;
  readonly #compactMaxBytes: number;

  /** `o`: the compaction's thresholds (tests make them small). */
  constructor(js: JetStreamClient, jsm: JetStreamManager, prefix: string, partition: number, o: { compactMinBytes?: number; compactMaxBytes?: number } = {}) {
    this.#compactMinBytes = o.compactMinBytes ?? SNAPSHOT_MIN_BYTES;
    this.#compactMaxBytes = o.compactMaxBytes ?? SNAPSHOT_MAX_BYTES;
    this.#js = js;
    this.#jsm = jsm;
    this.#prefix = prefix;
    this.partition = partition;
    this.stream = changelogStream(prefix, partition);
  }

  /** Reads the changelog to its end. */
  async read(): Promise<RestoredPartition> {
    const info = await retrySetup(`changelog ${this.stream}`, () => this.#jsm.streams.info(this.stream), 8);
    const lastSeq = info.state.last_seq;
    const users = new Map<string, { state: Uint8Array | null; seq: number }>();
    const inWrites = new Set<string>();
    let position = 0;
    let bytes = 0;
    let writeBytes = 0;
    if (info.state.messages > 0) {
      const c = await this.#js.consumers.get(this.stream);
      const msgs = await c.consume({ max_messages: 1024 });
      const userPrefix = `${this.#prefix}.cl.${this.partition}.u.`;
      const writePrefix = `${this.#prefix}.cl.${this.partition}.w.`;
      for await (const m of msgs) {
        bytes += m.data.length;
        const seq = Number(m.headers?.get(CL_HEADERS.seq) ?? "0");
        const end = m.headers?.get(CL_HEADERS.end) === "1";
        if (m.subject.startsWith(writePrefix)) {
          writeBytes += m.data.length;
          decodeWrite(m.data, (key, state) => {
            users.set(key, { state, seq });
            inWrites.add(key);
          });
          if (end && seq > position) position = seq;
        } else if (m.subject.startsWith(userPrefix)) {
          const key = Buffer.from(m.subject.slice(userPrefix.length), "hex").toString("utf8");
          users.set(key, { state: m.headers?.get(CL_HEADERS.removed) === "1" ? null : m.data, seq });
          inWrites.delete(key);
          if (end && seq > position) position = seq;
        } else if (seq > position) {
          position = seq; // a mark: the position its owner restored
        }
        // The end read at the start, or nothing more now (a purge may have taken the message at that end).
        if (m.seq >= lastSeq || m.info.pending === 0) break;
      }
      await msgs.close();
    }
    return { users, position, lastSeq, bytes, inWrites, writeBytes };
  }

  /**
   * Appends this owner's takeover mark, expecting the end it read; the chain
   * of records starts at it. FencedError when something was written since
   * (read again and retry).
   */
  async mark(node: string, epoch: number, restored: RestoredPartition): Promise<void> {
    const id = `mark:${node}:${epoch}:${Date.now()}`;
    const h = headers();
    h.set(CL_HEADERS.seq, String(restored.position));
    try {
      await this.#js.publish(markSubject(this.#prefix, this.partition), new TextEncoder().encode(JSON.stringify({ node, epoch, position: restored.position })),
        { msgID: id, headers: h, expect: { lastSequence: restored.lastSeq, streamName: this.stream }, timeout: 5000 });
    } catch (err) {
      if (isWrongLast(err)) throw new FencedError(`changelog ${this.stream} changed while it was read`, { cause: err });
      throw err;
    }
    this.#lastId = id;
    this.#epoch = String(epoch);
    this.#chainTag = `${node}:${epoch}`;
    this.#n = 0;
    // What the writes read hold: the first compaction writes those users as records, before the writes are purged.
    this.#since.clear();
    this.#sinceBytes = 0;
    for (const key of restored.inWrites) {
      const u = restored.users.get(key)!;
      this.#since.set(key, u);
      this.#sinceBytes += key.length + (u.state?.length ?? 0);
    }
    this.#writtenBytes = restored.writeBytes;
    this.#lastWriteSeq = restored.position;
  }

  /**
   * Stores a committed batch's changes; resolves when they are stored (with
   * the records and bytes of the write they went out in, counted once: on
   * the first batch of that write), rejects with FencedError when the chain
   * was cut (another owner's mark, or NATS lost the last id) or a record was
   * not stored.
   *
   * Group commit: one write is in flight at a time; the batches appended
   * meanwhile go out together in the next one, each user once with its
   * latest state (a user's state holds every event of its up to the last
   * batch of the write, so the write's records carry that batch's
   * sequence). Every record of a write but its last is published without an
   * acknowledgement; the last one is acknowledged, and since each record
   * expects the one before it, its being stored proves the whole write (and
   * everything before it in the chain) was. So a write costs one PubAck, and
   * a user changed by several batches of it one record.
   */
  append(seq: number, changes: readonly ChangelogChange[]): Promise<{ records: number; bytes: number }> {
    if (changes.length === 0) return Promise.resolve({ records: 0, bytes: 0 });
    if (this.#broken !== undefined) return Promise.reject(this.#broken);
    const g = (this.#next ??= { seq, changes: new Map<string, Uint8Array | null>(), waiters: [] as Waiter[] });
    g.seq = seq;
    for (const [key, state] of changes) {
      g.changes.delete(key); // re-inserted last: the write keeps the order of the latest changes
      g.changes.set(key, state);
    }
    const done = new Promise<{ records: number; bytes: number }>((resolve, reject) => g.waiters.push({ resolve, reject }));
    if (!this.#writing) this.#write();
    return done;
  }

  /** Sends the pending group (synchronously, in call order); when it is stored, compacts if due and sends the next one. */
  #write(): void {
    const g = this.#next;
    if (g === undefined) return;
    this.#next = undefined;
    this.#writing = true;
    const entries = [...g.changes];
    // Parts of at most WRITE_PART_BYTES; only the last is acknowledged (and carries Portrait-End).
    const parts: (readonly [string, Uint8Array | null])[][] = [];
    let part: (readonly [string, Uint8Array | null])[] = [];
    let partBytes = 0;
    for (const e of entries) {
      const b = 8 + e[0].length * 3 + (e[1]?.length ?? 0);
      if (part.length > 0 && partBytes + b > WRITE_PART_BYTES) {
        parts.push(part);
        part = [];
        partBytes = 0;
      }
      part.push(e);
      partBytes += b;
    }
    parts.push(part);
    let bytes = 0;
    let last: Promise<number> | undefined;
    for (let i = 0; i < parts.length; i++) {
      const n = ++this.#n;
      const id = `${this.#chainTag}:${n}`;
      const h: Record<string, string> = { [CL_HEADERS.seq]: String(g.seq), "Nats-Expected-Last-Msg-Id": this.#lastId };
      const data = encodeWrite(parts[i]!);
      bytes += data.length;
      const subject = writeSubject(this.#prefix, this.partition, this.#epoch, n);
      if (i === parts.length - 1) {
        h[CL_HEADERS.end] = "1";
        last = ackedPublish(this.#js, subject, data, id, h);
      } else {
        unackedPublish(this.#js, subject, data, id, h);
      }
      this.#lastId = id;
    }
    for (const [key, state] of entries) {
      const prev = this.#since.get(key);
      if (prev !== undefined) this.#sinceBytes -= key.length + (prev.state?.length ?? 0);
      this.#since.set(key, { state, seq: g.seq });
      this.#sinceBytes += key.length + (state?.length ?? 0);
    }
    this.#writtenBytes += bytes;
    last!.then(() => {
      this.#lastWriteSeq = g.seq;
      g.waiters.forEach((w, k) => w.resolve(k === 0 ? { records: entries.length, bytes } : { records: 0, bytes: 0 }));
      const due = (this.#writtenBytes >= this.#compactMinBytes && this.#writtenBytes >= 2 * this.#sinceBytes) || this.#sinceBytes >= this.#compactMaxBytes;
      if (due) this.#compact();
      else this.#continue();
    }, (err: unknown) => this.#fail(err, g.waiters));
  }

  #continue(): void {
    this.#writing = false;
    this.#write();
  }

  /**
   * Writes every user changed since the last compaction as its compacted
   * record (in the chain; the last with Portrait-End at the last write's
   * sequence), then purges the writes before that last record: a stored
   * compaction covers them all (one write at a time, none in between).
   */
  #compact(): void {
    const entries = [...this.#since];
    const covers = this.#lastWriteSeq;
    this.#since.clear();
    this.#sinceBytes = 0;
    this.#writtenBytes = 0;
    if (entries.length === 0) return this.#continue();
    let last: Promise<number> | undefined;
    for (let i = 0; i < entries.length; i++) {
      const [key, u] = entries[i]!;
      const id = `${this.#chainTag}:${++this.#n}`;
      const h: Record<string, string> = { [CL_HEADERS.seq]: String(u.seq), "Nats-Expected-Last-Msg-Id": this.#lastId };
      if (u.state === null) h[CL_HEADERS.removed] = "1";
      const data = u.state ?? new Uint8Array();
      const subject = userSubject(this.#prefix, this.partition, key);
      if (i === entries.length - 1) {
        h[CL_HEADERS.seq] = String(covers);
        h[CL_HEADERS.end] = "1";
        last = ackedPublish(this.#js, subject, data, id, h);
      } else {
        unackedPublish(this.#js, subject, data, id, h);
      }
      this.#lastId = id;
    }
    last!.then((storedSeq) => {
      this.compactions++;
      // Best effort: a purge that fails leaves covered writes in the stream (read and overridden on restore), nothing worse.
      void this.#jsm.streams.purge(this.stream, { filter: `${this.#prefix}.cl.${this.partition}.w.>`, seq: storedSeq }).catch(() => undefined);
      this.#continue();
    }, (err: unknown) => this.#fail(err, []));
  }

  /** Compactions this owner completed. */
  compactions = 0;

  #fail(err: unknown, waiters: readonly Waiter[]): void {
    this.#lastId = "\u0000broken"; // nothing more is accepted from this chain
    const fenced = isWrongLast(err)
      ? new FencedError(`changelog ${this.stream}: the chain was cut (another owner's mark)`, { cause: err })
      : new FencedError(`changelog ${this.stream}: a record was not stored (${(err as Error)?.message})`, { cause: err });
    this.#broken = fenced;
    for (const w of waiters) w.reject(fenced);
    for (const w of this.#next?.waiters ?? []) w.reject(fenced);
    this.#next = undefined;
    this.#writing = false;
  }
}
