/**
 * The changelog of a partition (README "Scale-out"): one JetStream stream per
 * partition, <PREFIX>_CL_<p>, that keeps the last state of every user of the
 * partition (subject `<prefix>.cl.<p>.u.<hex key>`, max_msgs_per_subject 1,
 * so it is compacted like a KV bucket) and the last takeover mark
 * (`<prefix>.cl.<p>.mark`). The bus sees states as opaque bytes; the shards
 * encode and decode them.
 *
 * Records of one write carry headers Portrait-Seq (the last event stream
 * sequence of the write's last batch) and, on the write's last record,
 * Portrait-End. A write holds the batches committed while the write before
 * it was in flight (group commit: Changelog.append), each user once.
 *
 * Fencing: every record is published with `Nats-Expected-Last-Msg-Id` = the
 * id of the record before it in the owner's chain, which starts at the
 * owner's takeover mark. A new owner reads the stream to its end and appends
 * its mark expecting that end (`Nats-Expected-Last-Sequence`); from then on
 * every record of the old owner is refused (its expected predecessor is no
 * longer the last message, and since a refused record is not stored, every
 * record after it is refused too). So a record stored implies that every
 * record before it in its chain is stored, and none lands after a newer
 * owner's mark: a user's state in the changelog never goes back in time.
 *
 * Restore: the partition's position is the highest Portrait-Seq of a batch
 * end (or of the last mark); records above it belong to a batch cut short by
 * a crash, and their users skip their events up to the record's sequence on
 * replay (each record holds every event of its user up to its sequence).
 */
import { DiscardPolicy, RetentionPolicy, StorageType, headers, nanos, type JetStreamClient, type JetStreamManager } from "nats";
import { retrySetup } from "./leases.js";
import { ackedPublish, unackedPublish } from "./streams.js";
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

  constructor(js: JetStreamClient, jsm: JetStreamManager, prefix: string, partition: number) {
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
    let position = 0;
    let bytes = 0;
    if (info.state.messages > 0) {
      const c = await this.#js.consumers.get(this.stream);
      const msgs = await c.consume({ max_messages: 1024 });
      const userPrefix = `${this.#prefix}.cl.${this.partition}.u.`;
      for await (const m of msgs) {
        bytes += m.data.length;
        const seq = Number(m.headers?.get(CL_HEADERS.seq) ?? "0");
        if (m.subject.startsWith(userPrefix)) {
          const key = Buffer.from(m.subject.slice(userPrefix.length), "hex").toString("utf8");
          users.set(key, { state: m.headers?.get(CL_HEADERS.removed) === "1" ? null : m.data, seq });
          if (m.headers?.get(CL_HEADERS.end) === "1" && seq > position) position = seq;
        } else if (seq > position) {
          position = seq; // a mark: the position its owner restored
        }
        if (m.seq >= lastSeq) break;
      }
      await msgs.close();
    }
    return { users, position, lastSeq, bytes };
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
    this.#chainTag = `${node}:${epoch}`;
    this.#n = 0;
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

  /** Sends the pending group (synchronously, in call order) and starts the next one when its acknowledgement is in. */
  #write(): void {
    const g = this.#next;
    if (g === undefined) return;
    this.#next = undefined;
    this.#writing = true;
    let bytes = 0;
    let last: Promise<void> | undefined;
    let i = 0;
    const n = g.changes.size;
    for (const [key, state] of g.changes) {
      const id = `${this.#chainTag}:${++this.#n}`;
      const h: Record<string, string> = { [CL_HEADERS.seq]: String(g.seq), "Nats-Expected-Last-Msg-Id": this.#lastId };
      if (state === null) h[CL_HEADERS.removed] = "1";
      const data = state ?? new Uint8Array();
      bytes += data.length;
      const subject = userSubject(this.#prefix, this.partition, key);
      if (++i === n) {
        h[CL_HEADERS.end] = "1";
        last = ackedPublish(this.#js, subject, data, id, h);
      } else {
        unackedPublish(this.#js, subject, data, id, h);
      }
      this.#lastId = id;
    }
    last!.then(() => {
      g.waiters.forEach((w, k) => w.resolve(k === 0 ? { records: n, bytes } : { records: 0, bytes: 0 }));
      this.#writing = false;
      this.#write();
    }, (err: unknown) => {
      this.#lastId = "\u0000broken"; // nothing more is accepted from this chain
      const fenced = isWrongLast(err)
        ? new FencedError(`changelog ${this.stream}: the chain was cut (another owner's mark)`, { cause: err })
        : new FencedError(`changelog ${this.stream}: a record was not stored (${(err as Error)?.message})`, { cause: err });
      this.#broken = fenced;
      for (const w of g.waiters) w.reject(fenced);
      for (const w of this.#next?.waiters ?? []) w.reject(fenced);
      this.#next = undefined;
      this.#writing = false;
    });
  }
}
