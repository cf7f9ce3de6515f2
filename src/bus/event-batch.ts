/**
 * What the bus hands over and what it gets back: the contract between a
 * partition consumer and whatever applies its batches (the shards). The bus
 * owns it; the receiving side implements BatchSink. Only plain data and typed
 * arrays cross it, so it can cross a thread boundary.
 */
import type { DeadLetterReason } from "../wire/event-validation.js";

/**
 * A fetched batch of one partition's messages, packed: message i is
 * data[offsets[i] .. offsets[i+1]) and has stream sequence seqs[i]. The three
 * buffers are transferred to the worker, not copied.
 */
export interface EventBatch {
  partition: number;
  data: Uint8Array;
  offsets: Uint32Array;
  seqs: Float64Array;
}

/** A message of a batch that is dead-lettered instead of applied. */
export interface DeadLetter {
  /** Index of the message in its batch. */
  index: number;
  seq: number;
  reason: DeadLetterReason;
  detail: string;
}

/** The outcome of a batch; returned only once its LMDB transaction committed. */
export interface BatchResult {
  partition: number;
  /** Stream sequence of the batch's last message: everything up to it is done. */
  lastSeq: number;
  /** Events applied to profiles. */
  applied: number;
  /** Valid events skipped because their sequence was already applied (redeliveries). */
  skipped: number;
  deadLetters: DeadLetter[];
  /** Time to decode, validate and apply the batch, ms. */
  applyMs: number;
  /** Time from queuing the writes to their commit, ms. */
  commitMs: number;
  /** Latest event time applied by the receiver, epoch ms (its event-time clock). */
  watermarkMs: number;
  /** LSTM cell steps run for this batch (one per applied event when the LSTM runs) and their time, ms. */
  lstmSteps: number;
  lstmMs: number;
  /** Recommendation feedback applied in this batch: model version -> [impressions, clicks]. */
  feedback: Record<string, [number, number]>;
  /** Users newly flagged by a risk signal in this batch, by signal name (velocity, refundAbuse, accountSharing), zeros included; absent with beyondClicks off. */
  riskFlags?: Record<string, number>;
  /**
   * The batch's logged feedback (rec_impression / rec_click with
   * rec_propensity), applied, in batch order: the partition consumer judges
   * it against the served replies and writes the training log (src/recs/feedback-log.ts).
   */
  logged?: LoggedFeedback[];
  /**
   * Messages the batch's commit produced (audience enter/exit events), to be
   * published through JetStream with their ids before the batch is
   * acknowledged; the sink keeps them (an outbox) until told they were.
   */
  outbound?: OutboundMessage[];
  /** When the batch's apply started and ended and its commit was in, epoch ms (performance.timeOrigin + now): the stages of portrait_ingest_stage_seconds (README "Operations"). */
  stamps?: BatchStamps;
  /**
   * Cluster mode only (README "Scale-out"): every user state the batch
   * committed, encoded (null = removed), for the partition's changelog; the
   * batch is acknowledged only once they are stored there.
   */
  changes?: ChangelogChange[];
}

/** Times of a batch in its receiver, epoch ms with sub-ms resolution (BatchResult.stamps). */
export interface BatchStamps {
  /** Handed to the receiver's thread (after any wait for room in its queue); set by the sink on the sending side. */
  handedMs?: number;
  applyStartMs: number;
  applyEndMs: number;
  committedMs: number;
}

/** Epoch ms with sub-ms resolution, comparable across threads of one process (and with JetStream's stored times on one host). */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Cluster mode: a user's change in a committed batch, for the partition's changelog (src/bus/changelog.ts): the encoded state, or null when the user's state was removed. */
export type ChangelogChange = readonly [key: string, state: Uint8Array | null];

/** A logged rec_impression / rec_click (see BatchResult.logged). */
export interface LoggedFeedback {
  /** Index of the message in its batch, and its stream sequence. */
  index: number;
  seq: number;
  click: boolean;
  requestId: string;
  itemId: string;
  propensity: number;
  timestampMs: number;
  eventId: string;
}

/** A message to publish through JetStream, deduplicated by its id. */
export interface OutboundMessage {
  subject: string;
  /** Nats-Msg-Id: the same message always has the same id. */
  msgId: string;
  data: Uint8Array;
  /**
   * May wait while its partition is behind (PartitionConsumer: at most
   * OUTBOUND_HOLD_MS), so that what a backlog's batches send goes out in
   * fewer, larger bursts (social notices); absent: published right after its
   * batch's acknowledgement.
   */
  holdable?: boolean;
  /**
   * The number of the outbox entry that holds it when it shares one with the
   * other transitions of its commit (src/shard/audience-runner.ts); absent:
   * its entry is keyed by its id.
   */
  outbox?: number;
}

/** What a sink is told was published (BatchSink.published): each message's shared outbox entry number, or its id. */
export type OutboxRef = string | number;

export function outboxRefs(msgs: readonly OutboundMessage[]): OutboxRef[] {
  return msgs.map((m) => m.outbox ?? m.msgId);
}

/**
 * Where a partition consumer delivers. The promise resolves once the batch is
 * committed (then the consumer acknowledges it) and rejects when it cannot be
 * (the consumer stops: nothing more of the partition is acknowledged).
 */
export interface BatchSink {
  applyBatch(batch: EventBatch): Promise<BatchResult>;
  /** The batch's outbound messages of a partition were published (acknowledged by JetStream). */
  published?(partition: number, done: OutboxRef[]): void;
}

/**
 * Gathers one batch message by message into the buffers an EventBatch is
 * made of, so that the messages themselves need not be kept until the batch
 * is cut (a partition consumer copies each message's bytes as it arrives:
 * what nats.js allocated for it dies young). take() hands the buffers over
 * (views of their filled part; they are transferred) and starts new ones,
 * sized like the last.
 */
export class BatchBuilder {
  #data: Uint8Array | undefined;
  #offsets: Uint32Array | undefined;
  #seqs: Float64Array | undefined;
  #bytes = 0;
  #count = 0;
  /** Bytes of the last batch taken: the next one's first capacity. */
  #lastBytes = 16 * 1024;

  constructor(readonly expectedMessages: number) {}

  get count(): number {
    return this.#count;
  }

  /** Appends bytes [start, end) of `src` as the next message, with its stream sequence. */
  push(src: Uint8Array, start: number, end: number, seq: number): void {
    const len = end - start;
    let data = this.#data;
    let offsets = this.#offsets;
    if (data === undefined || offsets === undefined) {
      data = this.#data = new Uint8Array(Math.max(this.#lastBytes, len));
      offsets = this.#offsets = new Uint32Array(this.expectedMessages + 1);
      this.#seqs = new Float64Array(this.expectedMessages);
    }
    const at = this.#bytes;
    if (at + len > data.length) {
      const grown = new Uint8Array(Math.max(data.length * 2, at + len));
      grown.set(data.subarray(0, at));
      data = this.#data = grown;
    }
    if (this.#count + 1 >= offsets.length) {
      const o = new Uint32Array(offsets.length * 2);
      o.set(offsets);
      offsets = this.#offsets = o;
      const q = new Float64Array(o.length - 1);
      q.set(this.#seqs!);
      this.#seqs = q;
    }
    // Most events are short: a loop beats allocating a view for set().
    if (len <= 128) for (let i = 0; i < len; i++) data[at + i] = src[start + i]!;
    else data.set(src.subarray(start, end), at);
    offsets[this.#count] = at;
    this.#seqs![this.#count] = seq;
    this.#count++;
    this.#bytes = at + len;
  }

  /** The gathered messages as one EventBatch (undefined when there are none); the builder starts over. */
  take(partition: number): EventBatch | undefined {
    const n = this.#count;
    if (n === 0) return undefined;
    const bytes = this.#bytes;
    this.#offsets![n] = bytes;
    const batch: EventBatch = { partition, data: this.#data!.subarray(0, bytes), offsets: this.#offsets!.subarray(0, n + 1), seqs: this.#seqs!.subarray(0, n) };
    this.#data = this.#offsets = this.#seqs = undefined;
    this.#count = this.#bytes = 0;
    this.#lastBytes = Math.max(1024, bytes + (bytes >> 2));
    return batch;
  }

  /** Drops what was gathered. */
  clear(): void {
    this.#count = this.#bytes = 0;
  }
}

/** Packs messages into one EventBatch (one copy of their bytes). */
export function packBatch<M>(partition: number, msgs: readonly M[], dataOf: (m: M) => Uint8Array, seqOf: (m: M, i: number) => number): EventBatch {
  const n = msgs.length;
  let total = 0;
  for (let i = 0; i < n; i++) total += dataOf(msgs[i]!).length;
  const data = new Uint8Array(total);
  const offsets = new Uint32Array(n + 1);
  const seqs = new Float64Array(n);
  let off = 0;
  for (let i = 0; i < n; i++) {
    const m = msgs[i]!;
    const bytes = dataOf(m);
    data.set(bytes, off);
    offsets[i] = off;
    off += bytes.length;
    seqs[i] = seqOf(m, i);
  }
  offsets[n] = off;
  return { partition, data, offsets, seqs };
}
