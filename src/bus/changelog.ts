/**
 * The changelog of a partition (README "Scale-out"): one JetStream stream per
 * partition, <PREFIX>_CL_<p>, that keeps the last state of every user of the
 * partition (subject `<prefix>.cl.<p>.u.<hex key>`, max_msgs_per_subject 1,
 * so it is compacted like a KV bucket) and the last takeover mark
 * (`<prefix>.cl.<p>.mark`). The bus sees states as opaque bytes; the shards
 * encode and decode them.
 *
 * Records of one committed batch carry headers Portrait-Seq (the batch's last
 * event stream sequence) and, on the batch's last record, Portrait-End.
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
import { ackedPublish } from "./streams.js";
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
   * Publishes a committed batch's changes, pipelined, each expecting the one
   * before it; resolves when all are stored, rejects with FencedError when
   * the chain was cut (another owner's mark, or NATS lost the last id).
   */
  append(seq: number, changes: readonly ChangelogChange[]): Promise<number> {
    // Synchronous up to the last publish: calls send their records in call order (the caller's batch order).
    if (changes.length === 0) return Promise.resolve(0);
    let bytes = 0;
    const sent: Promise<unknown>[] = [];
    for (let i = 0; i < changes.length; i++) {
      const [key, state] = changes[i]!;
      const id = `${this.#chainTag}:${++this.#n}`;
      const h: Record<string, string> = { [CL_HEADERS.seq]: String(seq), "Nats-Expected-Last-Msg-Id": this.#lastId };
      if (i === changes.length - 1) h[CL_HEADERS.end] = "1";
      if (state === null) h[CL_HEADERS.removed] = "1";
      const data = state ?? new Uint8Array();
      bytes += data.length;
      sent.push(ackedPublish(this.#js, userSubject(this.#prefix, this.partition, key), data, id, h));
      this.#lastId = id;
    }
    return Promise.allSettled(sent).then((results) => {
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed !== undefined) {
        this.#lastId = "\u0000broken"; // nothing more is accepted from this chain
        if (isWrongLast(failed.reason)) throw new FencedError(`changelog ${this.stream}: the chain was cut (another owner's mark)`, { cause: failed.reason });
        throw new FencedError(`changelog ${this.stream}: a record was not stored (${(failed.reason as Error)?.message})`, { cause: failed.reason });
      }
      return bytes;
    });
  }
}
