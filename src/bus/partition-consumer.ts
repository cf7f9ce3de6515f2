/**
 * Consumes one partition: a durable pull consumer whose messages are gathered
 * into batches (whatever has arrived by the end of the current I/O turn, at
 * most maxBatchMessages), each message's bytes copied into the batch's buffer
 * as it arrives (the message itself is not kept: BatchBuilder), and handed to
 * the batch sink (the partition's shard). Batches are settled strictly in order: once a
 * batch's commit is reported, its dead letters are published (and their
 * publish acknowledged) and then the batch's last message is acknowledged,
 * which with AckPolicy.All acknowledges the whole batch. A batch's outbound
 * messages (audience transitions, kept in the sink's outbox) are published
 * after its acknowledgement, in batch order, on a chain of their own; ingest
 * waits for it only when more than MAX_OUTBOUND_QUEUED are pending. Holdable
 * ones (social notices) wait while the partition is behind (its last batch
 * left messages pending on the server), at most OUTBOUND_HOLD_MS: a
 * partition draining a backlog would otherwise send one small message per
 * batch to partitions that have caught up, each applied there as a batch
 * and an LMDB commit of its own; held, they go out in a few bursts.
 *
 * The bus knows nothing of actors: it delivers to a BatchSink.
 * Back-pressure: the consumer's max_ack_pending bounds the messages held.
 */
import { headers, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg } from "nats";
import type { Logger } from "../obs/logger.js";
import { INGEST_STAGES, type EngineMetrics } from "../obs/metrics.js";
import { BatchBuilder, epochMs, outboxRefs, type BatchResult, type BatchSink, type DeadLetter, type LoggedFeedback, type OutboundMessage } from "./event-batch.js";
import { DLQ_HEADERS } from "../wire/headers.js";
import { publishOutbound, resetConsumer, type ConsumerSettings } from "./streams.js";
import type { Subjects } from "./subjects.js";

/**
 * Stream sequence and pending count from a JetStream reply subject, without
 * nats.js's per-message split of the whole subject (a tenth of the main
 * thread's time at full rate). Formats, as nats.js parses them:
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>` and
 * `$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>.<random>`.
 */
/** What a JetStream reply subject says of its message. */
export interface AckInfo {
  /** Stream sequence. */
  seq: number;
  /** Consumer (delivery) sequence: one more for every delivery the consumer makes, redeliveries included. */
  dseq: number;
  /** Messages still pending for the consumer after this one. */
  pending: number;
  /** When JetStream stored the message, ms since the epoch. */
  storedMs: number;
}

export function ackInfo(reply: string): AckInfo {
  let dots = 0;
  for (let i = 0; i < reply.length; i++) if (reply.charCodeAt(i) === 46) dots++;
  // Token indexes of the stream sequence and the pending count.
  let seqToken: number;
  let pendingToken: number;
  if (dots === 8) {
    seqToken = 5;
    pendingToken = 8;
  } else if (dots >= 10) {
    seqToken = 7;
    pendingToken = 10;
  } else {
    throw new Error(`not a JetStream reply subject: ${reply}`);
  }
  let seq = NaN;
  let dseq = NaN;
  let pending = NaN;
  let storedMs = NaN;
  let token = 0;
  let start = 0;
  for (let i = 0; i <= reply.length; i++) {
    if (i < reply.length && reply.charCodeAt(i) !== 46) continue;
    if (token === seqToken) seq = Number(reply.slice(start, i));
    else if (token === seqToken + 1) dseq = Number(reply.slice(start, i));
    // The token before the pending count: the time JetStream stored the message, ns.
    else if (token === pendingToken - 1) storedMs = Number(reply.slice(start, i)) / 1e6;
    else if (token === pendingToken) {
      pending = Number(reply.slice(start, i));
      break;
    }
    token++;
    start = i + 1;
  }
  return { seq, dseq, pending, storedMs };
}

/** The reply subject of a JetStream message (present on every JsMsg; missing from its type). */
function replyOf(m: JsMsg): string {
  return (m as unknown as { reply: string }).reply;
}

/**
 * What nats.js 2.x keeps of a delivered message before decoding any of it:
 * the reply subject's bytes and the payload (headers, then data from `hdr`).
 * Reading them spares a string per message; absent (another nats.js), the
 * consumer uses the public getters.
 */
interface RawMsg {
  _msg?: { reply?: unknown; hdr?: unknown };
  _rdata?: unknown;
}

/** Stream and delivery sequences read by ackSeqs (one pair, reused: no object per message). */
const seqsRead = new Float64Array(2);

/**
 * ackInfo's stream and delivery sequences ([seq, dseq]), from the reply
 * subject's bytes, in one array reused by every call (read it before the
 * next); undefined when it is not a JetStream reply subject.
 */
export function ackSeqs(reply: Uint8Array): Float64Array | undefined {
  const n = reply.length;
  let dots = 0;
  for (let i = 0; i < n; i++) if (reply[i] === 46) dots++;
  const seqToken = dots === 8 ? 5 : dots >= 10 ? 7 : -1;
  if (seqToken < 0) return undefined;
  let token = 0;
  let i = 0;
  for (; i < n && token < seqToken; i++) if (reply[i] === 46) token++;
  for (let k = 0; k < 2; k++) {
    let v = 0;
    const start = i;
    for (; i < n; i++) {
      const c = reply[i]!;
      if (c === 46) break;
      if (c < 48 || c > 57) return undefined;
      v = v * 10 + (c - 48);
    }
    if (i === start) return undefined;
    seqsRead[k] = v;
    i++;
  }
  return seqsRead;
}

/** Most outbound messages of a partition waiting to be published before the next batch's acknowledgement waits for them. */
const MAX_OUTBOUND_QUEUED = 20_000;
/** Longest a holdable outbound message waits while its partition is behind (see the header). */
export const OUTBOUND_HOLD_MS = 1000;

export interface PartitionConsumerOptions {
  partition: number;
  maxBatchMessages: number;
  /** Messages the consumer asks JetStream for ahead of the batches in hand. */
  prefetchMessages: number;
  /** The durable consumer's settings, for (re)positioning it. */
  consumer: ConsumerSettings;
  /** Called once when the pipeline cannot continue (a shard died, the DLQ cannot be written). */
  onFatal: (err: unknown) => void;
  /** Fault injection for crash tests: called after a batch committed, just before its acknowledgement. */
  beforeAck?: (() => void) | undefined;
  /**
   * Judges a batch's logged recommendation feedback and writes the training
   * log (src/recs/feedback-log.ts), before the batch's dead letters are
   * published and the batch is acknowledged; returns the feedback dead letters.
   */
  feedback?: ((logged: readonly LoggedFeedback[]) => Promise<{ deadLetters: DeadLetter[]; impressions: number; clicks: number }>) | undefined;
  /** Cluster mode: the lease and the changelog gate every acknowledgement. */
  fence?: ConsumerFence | undefined;
}

/**
 * Cluster mode (README "Scale-out"): what makes a consumer one owner's. Its
 * durable consumer is its own (named for the partition, the node and the
 * lease epoch), so a node that lost the partition can never move or
 * acknowledge the new owner's; and nothing is acknowledged, repositioned or
 * re-created unless the lease still holds.
 */
export interface ConsumerFence {
  /** This owner's durable consumer name. */
  name: string;
  /** True while the lease holds on this node's clock (a reposition is refused otherwise). */
  owns(): boolean;
  /**
   * A batch committed in LMDB: store its changelog records and confirm the
   * lease. Called in batch order, as soon as each batch's result is in (not
   * after the previous batch's acknowledgement), so the records of
   * consecutive batches are in flight together; it must hand its records to
   * the changelog before it returns, so that they are written in batch order. False = fenced:
   * the batch is not acknowledged, nor anything after it.
   */
  commit(r: BatchResult): Promise<boolean>;
  /** Told once when this consumer is fenced (a commit refused, or a reposition without the lease). */
  onFenced(reason: string): void;
}

/** Pause between attempts to reposition a consumer while JetStream does not answer (after a broker restart). */
const REPOSITION_RETRY_MS = 500;

export class PartitionConsumer {
  readonly partition: number;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #subjects: Subjects;
  readonly #sink: BatchSink;
  readonly #metrics: EngineMetrics;
  readonly #log: Logger;
  readonly #o: PartitionConsumerOptions;
  #messages: ConsumerMessages | undefined;
  /** The batch being gathered: its bytes and sequences, and its first and last message (the one acknowledged). */
  readonly #builder: BatchBuilder;
  #first: JsMsg | undefined;
  #last: JsMsg | undefined;
  /** The children of EngineMetrics.stageSeconds, in INGEST_STAGES order. */
  #stages: { observe(v: number): void }[] | undefined;
  /** When the first message of the batch being gathered arrived, epoch ms. */
  #firstArrivedMs = 0;
  #flushScheduled = false;
  #stopped = false;
  #tail: Promise<void> = Promise.resolve();
  /** Cluster mode: resolves once the last batch's changelog records were issued (fence.commit called), in batch order. */
  #staged: Promise<void> = Promise.resolve();
  /**
   * Outbound messages of acknowledged batches not yet published, in batch
   * order; one publishing loop takes all of them at each turn (so a batch's
   * messages wait for the acknowledgements of the turn in flight, not for
   * those of every batch before it), and how many are queued or in flight.
   */
  #outboundPending: OutboundMessage[] = [];
  #outboundTail: Promise<void> = Promise.resolve();
  #outboundRunning = false;
  #outboundQueued = 0;
  /** Messages left on the server after the last settled batch (its last message's pending count). */
  #behind = 0;
  /** Ends the wait of held outbound messages (the partition caught up, or it drains). */
  #release: (() => void) | undefined;
  /** The consumer sequence of the last message taken in; 0 right after (re)positioning. */
  #lastDelivery = 0;
  /** The highest stream sequence handed to the sink (or the position the consumer was created at). */
  #handedSeq = 0;
  /** Set while the consumer is being repositioned; messages that arrive meanwhile are ignored. */
  #repositioning: Promise<void> | undefined;
  /** Stream sequence of the last batch settled (committed and acknowledged). */
  #settledSeq = 0;
  /** Set once this consumer lost its partition (cluster mode): nothing more is handed over or acknowledged. */
  #fenced = false;

  constructor(js: JetStreamClient, jsm: JetStreamManager, subjects: Subjects, sink: BatchSink, metrics: EngineMetrics, log: Logger, o: PartitionConsumerOptions) {
    this.partition = o.partition;
    this.#js = js;
    this.#jsm = jsm;
    this.#subjects = subjects;
    this.#sink = sink;
    this.#metrics = metrics;
    this.#log = log.child({ component: "consumer", partition: o.partition });
    this.#o = o;
    this.#builder = new BatchBuilder(o.maxBatchMessages);
  }

  /**
   * (Re)creates the partition's durable consumer so that it delivers from
   * `afterSeq + 1` (the partition's committed position) and starts taking
   * messages in.
   */
  async start(afterSeq: number): Promise<void> {
    const fence = this.#o.fence;
    if (fence !== undefined && !fence.owns()) throw new Error(`partition ${this.partition}: the lease does not hold; the consumer is not (re)created`);
    const name = fence?.name ?? this.#subjects.consumer(this.partition);
    await resetConsumer(this.#jsm, this.#subjects, this.partition, afterSeq, this.#o.consumer, name);
    this.#handedSeq = afterSeq;
    if (afterSeq > this.#settledSeq) this.#settledSeq = afterSeq;
    this.#lastDelivery = 0;
    const consumer = await this.#js.consumers.get(this.#subjects.eventStream, name);
    this.#messages = await consumer.consume({
      max_messages: this.#o.prefetchMessages,
      callback: (m) => this.#onMessage(m),
    });
  }

  #onMessage(m: JsMsg): void {
    if (this.#stopped || this.#fenced || this.#repositioning !== undefined) return; // not acknowledged: delivered again
    const raw = (m as unknown as { msg?: RawMsg }).msg;
    const replyBytes = raw?._msg?.reply;
    const hdr = raw?._msg?.hdr;
    const payload = raw?._rdata;
    let seq: number;
    let dseq: number;
    const read = replyBytes instanceof Uint8Array ? ackSeqs(replyBytes) : undefined;
    if (read !== undefined) {
      seq = read[0]!;
      dseq = read[1]!;
    } else {
      const info = ackInfo(replyOf(m));
      seq = info.seq;
      dseq = info.dseq;
    }
    // Every delivery the consumer makes has the next delivery sequence. One that skips (a delivery
    // lost on its way, e.g. across a broker restart) or goes back (the broker restored older
    // consumer state) means a message before this one may never arrive: acknowledging this one
    // (AckPolicy.All) would acknowledge that one unapplied. So the consumer is positioned again
    // after what it handed over.
    if (dseq !== this.#lastDelivery + 1) {
      this.#reposition(ackInfo(replyOf(m)));
      return;
    }
    this.#lastDelivery = dseq;
    const b = this.#builder;
    if (b.count === 0) {
      this.#firstArrivedMs = epochMs();
      this.#first = m;
    }
    this.#last = m;
    if (payload instanceof Uint8Array && typeof hdr === "number") b.push(payload, hdr > -1 ? hdr : 0, payload.length, seq);
    else b.push(m.data, 0, m.data.length, seq);
    if (b.count >= this.#o.maxBatchMessages) {
      this.#flush();
    } else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #reposition(seen: AckInfo): void {
    if (this.#o.fence !== undefined && !this.#o.fence.owns()) {
      void this.fence("a reposition was needed without a valid lease");
      return;
    }
    this.#metrics.consumerRepositions.inc({ partition: String(this.partition) });
    this.#log.warn({ expectedDelivery: this.#lastDelivery + 1, delivery: seen.dseq, seq: seen.seq },
      "delivery sequence out of order (a delivery was lost or the broker restored older consumer state): repositioning the consumer after the last handed-over event");
    this.#messages?.stop();
    this.#flush(); // what arrived in order before the break is applied as usual
    this.#repositioning = (async () => {
      await this.#tail.catch(() => undefined);
      await this.#messages?.closed().catch(() => undefined);
      for (let attempt = 1; !this.#stopped && !this.#fenced; attempt++) {
        if (this.#o.fence !== undefined && !this.#o.fence.owns()) {
          void this.fence("the lease ran out while repositioning");
          return;
        }
        try {
          await this.start(this.#handedSeq);
          this.#log.info({ afterSeq: this.#handedSeq, attempt }, "consumer repositioned");
          return;
        } catch (err) {
          if (attempt === 1 || attempt % 20 === 0) this.#log.warn({ err, attempt }, "cannot reposition the consumer yet; retrying");
          await new Promise((r) => setTimeout(r, REPOSITION_RETRY_MS));
        }
      }
    })().finally(() => {
      this.#repositioning = undefined;
    });
  }

  #flush(): void {
    this.#flushScheduled = false;
    const batch = this.#builder.take(this.partition);
    if (batch === undefined) return;
    const first = this.#first!;
    const last = this.#last!;
    this.#first = this.#last = undefined;
    const n = batch.seqs.length;
    this.#handedSeq = Math.max(this.#handedSeq, batch.seqs[n - 1]!);
    // The batch's bytes go to the sink's thread; a dead letter is published with its event's bytes from this copy.
    const kept = { data: batch.data.slice(), offsets: batch.offsets.slice() };
    const started = performance.now();
    const arrivedMs = this.#firstArrivedMs;
    const cutMs = epochMs();
    let resultMs = 0;
    this.#metrics.batchSize.observe(n);
    this.#metrics.inflightBatches.inc();
    const result = this.#sink.applyBatch(batch);
    result.then(() => {
      resultMs = epochMs();
    }, () => undefined); // failures are observed through the tail below
    const fence = this.#o.fence;
    let committed: Promise<boolean> | undefined;
    if (fence !== undefined) {
      // Each batch's changelog records go out as soon as its result is in, after the previous batch's were issued
      // (not after its acknowledgement): the settle below waits for them before acknowledging.
      const issued = this.#staged.then(() => result).then((r) => ({ done: this.#fenced ? Promise.resolve(false) : fence.commit(r) }));
      this.#staged = issued.then(() => undefined, () => undefined);
      committed = issued.then((x) => x.done);
      committed.catch(() => undefined);
    }
    this.#tail = this.#tail
      .then(() => result)
      .then((r) => this.#settle(first, last, kept, r, started, committed, [arrivedMs, cutMs, resultMs]))
      .catch((err) => {
        this.#o.onFatal(err);
        throw err;
      })
      .finally(() => this.#metrics.inflightBatches.dec());
    this.#tail.catch(() => undefined);
  }

  async #settle(first: JsMsg, last: JsMsg, kept: { data: Uint8Array; offsets: Uint32Array }, r: BatchResult, started: number, committed: Promise<boolean> | undefined, times: [arrivedMs: number, cutMs: number, resultMs: number]): Promise<void> {
    if (this.#fenced) return;
    if (committed !== undefined && !(await committed)) {
      void this.fence("a commit was refused (the changelog or the lease belongs to another owner)");
      return;
    }
    if (this.#fenced) return;
    if (r.logged !== undefined && this.#o.feedback !== undefined) {
      const j = await this.#o.feedback(r.logged);
      if (j.deadLetters.length > 0) r.deadLetters.push(...j.deadLetters);
      if (j.impressions > 0) this.#metrics.feedbackLogged.inc({ kind: "impression" }, j.impressions);
      if (j.clicks > 0) this.#metrics.feedbackLogged.inc({ kind: "click" }, j.clicks);
    }
    if (r.deadLetters.length > 0) {
      await Promise.all(r.deadLetters.map((d) => {
        const h = headers();
        h.set(DLQ_HEADERS.reason, d.reason);
        h.set(DLQ_HEADERS.detail, d.detail);
        // The consumer's filter subject: every message of the partition has it.
        h.set(DLQ_HEADERS.subject, this.#subjects.events(this.partition));
        h.set(DLQ_HEADERS.seq, String(d.seq));
        // Same id on a redelivery: JetStream keeps one dead letter per event.
        return this.#js.publish(this.#subjects.dlq(d.reason), kept.data.subarray(kept.offsets[d.index], kept.offsets[d.index + 1]), {
          msgID: `${this.#subjects.eventStream}:${d.seq}`,
          headers: h,
        });
      }));
      for (const d of r.deadLetters) this.#metrics.deadLetters.inc({ reason: d.reason });
      this.#log.warn({ count: r.deadLetters.length, reasons: [...new Set(r.deadLetters.map((d) => d.reason))] }, "dead-lettered events");
    }
    if (r.outbound !== undefined && r.outbound.length > 0) {
      // Committed with the batch (in the sink's outbox, republished at start after a crash), so the batch can be acknowledged
      // before they are published: they go out in batch order on their own chain, which ingest waits for only beyond a bound.
      // publishOutbound sends in the order of its list, so taking every queued batch at once keeps batch order.
      for (const m of r.outbound) {
        this.#outboundPending.push(m);
        if (m.holdable !== true) this.#release?.(); // what is held goes along with it
      }
      this.#outboundQueued += r.outbound.length;
      if (!this.#outboundRunning) {
        this.#outboundRunning = true;
        this.#outboundTail = (async () => {
          try {
            while (this.#outboundPending.length > 0) {
              await this.#hold();
              const msgs = this.#outboundPending;
              this.#outboundPending = [];
              await publishOutbound(this.#js, msgs);
              this.#outboundQueued -= msgs.length;
              this.#sink.published?.(this.partition, outboxRefs(msgs));
            }
          } finally {
            this.#outboundRunning = false;
          }
        })();
        this.#outboundTail.catch((err: unknown) => this.#o.onFatal(err));
      }
      if (this.#outboundQueued > MAX_OUTBOUND_QUEUED) await this.#outboundTail;
    }
    this.#behind = ackInfo(replyOf(last)).pending;
    if (this.#behind === 0) this.#release?.();
    this.#o.beforeAck?.();
    last.ack();
    this.#settledSeq = r.lastSeq;
    const storedMs = ackInfo(replyOf(first)).storedMs;
    if (storedMs > 0) this.#metrics.freshnessSeconds.observe(Math.max(0, Date.now() - storedMs) / 1000);
    this.#observeStages(storedMs, times, r, epochMs());
    this.#metrics.eventsApplied.inc(r.applied);
    if (r.skipped > 0) this.#metrics.eventsSkipped.inc(r.skipped);
    this.#metrics.applySeconds.observe(r.applyMs / 1000);
    this.#metrics.commitSeconds.observe(r.commitMs / 1000);
    for (const signal in r.riskFlags) if (r.riskFlags[signal]! > 0) this.#metrics.riskFlags.inc({ signal }, r.riskFlags[signal]!);
    for (const version in r.feedback) {
      const [imps, clicks] = r.feedback[version]!;
      if (imps > 0) this.#metrics.recImpressions.inc({ model_version: version }, imps);
      if (clicks > 0) this.#metrics.recClicks.inc({ model_version: version }, clicks);
    }
    if (r.lstmSteps > 0) {
      this.#metrics.lstmSteps.inc(r.lstmSteps);
      this.#metrics.lstmSeconds.observe(r.lstmMs / 1000);
    }
    this.#metrics.batchSeconds.observe((performance.now() - started) / 1000);
    this.#metrics.lag.set({ partition: String(this.partition) }, ackInfo(replyOf(last)).pending);
    this.#metrics.observeWatermark(r.watermarkMs);
  }

  /** The stages of the batch's oldest event (EngineMetrics.stageSeconds), from the times taken on its way. */
  #observeStages(storedMs: number, [arrivedMs, cutMs, resultMs]: [number, number, number], r: BatchResult, ackedMs: number): void {
    const st = r.stamps;
    if (st === undefined || st.handedMs === undefined || !(storedMs > 0) || resultMs === 0) return;
    const h = (this.#stages ??= INGEST_STAGES.map((stage) => this.#metrics.stageSeconds.labels({ stage })));
    const times = [storedMs, arrivedMs, cutMs, st.handedMs, st.applyStartMs, st.applyEndMs, st.committedMs, resultMs, ackedMs];
    for (let i = 0; i + 1 < times.length; i++) h[i]!.observe(Math.max(0, times[i + 1]! - times[i]!) / 1000);
    h[h.length - 1]!.observe(Math.max(0, ackedMs - storedMs) / 1000);
  }

  /** While every queued outbound message is holdable and the partition is behind: waits until it caught up, drains, or OUTBOUND_HOLD_MS passed. */
  async #hold(): Promise<void> {
    if (this.#stopped || this.#behind === 0 || !this.#outboundPending.every((m) => m.holdable === true)) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => this.#release?.(), OUTBOUND_HOLD_MS);
      this.#release = () => {
        clearTimeout(t);
        this.#release = undefined;
        resolve();
      };
    });
  }

  /**
   * Cluster mode: the partition was lost. Stops intake at once; batches
   * already handed over still commit in LMDB (a cache) but none is
   * acknowledged. Resolves when every handed-over batch has settled.
   */
  async fence(reason?: string): Promise<void> {
    if (!this.#fenced) {
      this.#fenced = true;
      this.#builder.clear();
      this.#first = this.#last = undefined;
      this.#messages?.stop();
      if (reason !== undefined) this.#o.fence?.onFenced(reason);
    }
    await this.#repositioning?.catch(() => undefined);
    await this.#tail.catch(() => undefined);
    await this.#outboundTail.catch(() => undefined);
    await this.#messages?.closed().catch(() => undefined);
  }

  /** Stream sequence up to which every event of the partition is applied, committed and acknowledged by this consumer. */
  get settledSeq(): number {
    return this.#settledSeq;
  }

  get fenced(): boolean {
    return this.#fenced;
  }

  /** Stops intake, hands over what has arrived, and waits until every batch is acknowledged. */
  async drain(): Promise<void> {
    this.#stopped = true;
    this.#release?.();
    await this.#repositioning;
    this.#messages?.stop();
    this.#flush();
    await this.#tail.catch(() => undefined);
    await this.#outboundTail.catch(() => undefined);
    await this.#messages?.closed().catch(() => undefined);
  }
}
