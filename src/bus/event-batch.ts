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
  /** Users newly flagged by a risk signal in this batch, by signal name (velocity, refundAbuse, accountSharing); absent when none. */
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
