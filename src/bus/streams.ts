/**
 * Setup of the JetStream streams (idempotent: creates what is missing and
 * updates the settings JetStream lets change; safe at every start) and of the
 * durable pull consumers, one per partition, positioned by their owner.
 */
import { AckPolicy, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType, createInbox, headers, nanos, type JetStreamClient, type JetStreamManager, type Msg, type NatsConnection, type NatsError, type StreamConfig, type Subscription } from "nats";
import type { OutboundMessage } from "./event-batch.js";
import type { Subjects } from "./subjects.js";

export interface StreamSettings {
  /** How long events are kept in the stream, ms (0 = forever). */
  eventRetentionMs: number;
  /** Window in which JetStream drops a second publish with the same Nats-Msg-Id, ms. */
  duplicateWindowMs: number;
  /** How long dead letters are kept, ms. */
  dlqRetentionMs: number;
  /** How long tombstones are kept, ms (0 = forever, the default). */
  tombstoneRetentionMs?: number;
  /** How long the training log of recommendation feedback is kept, ms (default 7 days). */
  feedbackRetentionMs?: number;
  /** Most bytes the training log keeps; the oldest records go first (default 256 MiB). */
  feedbackMaxBytes?: number;
  /** Replicas of each stream (default 1; 3 on a 3-node NATS cluster, README "Scale-out"). */
  replicas?: number;
}

export interface ConsumerSettings {
  /** Most unacknowledged messages per partition: the bound on what the engine holds in flight. */
  maxAckPending: number;
  /** Time after which an unacknowledged message is redelivered, ms. */
  ackWaitMs: number;
}

function isNotFound(err: unknown): boolean {
  const e = err as NatsError & { api_error?: { err_code?: number } };
  return e?.api_error?.err_code === 10059 || e?.api_error?.err_code === 10014 || e?.code === "404";
}

async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string; subjects: string[] }): Promise<void> {
  try {
    const info = await jsm.streams.info(cfg.name);
    await jsm.streams.update(cfg.name, { ...info.config, ...cfg });
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.streams.add(cfg);
  }
}

export async function ensureStreams(jsm: JetStreamManager, s: Subjects, o: StreamSettings): Promise<void> {
  const common = {
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    duplicate_window: nanos(o.duplicateWindowMs),
    num_replicas: o.replicas ?? 1,
  };
  await ensureStream(jsm, { ...common, name: s.eventStream, subjects: [s.eventsWildcard], max_age: nanos(o.eventRetentionMs) });
  await ensureStream(jsm, { ...common, name: s.dlqStream, subjects: [s.dlqWildcard], max_age: nanos(o.dlqRetentionMs) });
  // The catalog: the last accepted upsert of each item, kept until replaced.
  await ensureStream(jsm, { ...common, name: s.catalogStream, subjects: [s.catalogWildcard], max_msgs_per_subject: 1 });
  // A Tombstone per forget, for downstream systems that may be offline when it happens.
  await ensureStream(jsm, { ...common, name: s.tombstoneStream, subjects: [s.tombstones], max_age: nanos(o.tombstoneRetentionMs ?? 0) });
  // Audience enter/exit events for marketing tools; kept like the events. The duplicate window drops the second copy of a transition republished from the outbox after a crash.
  await ensureStream(jsm, { ...common, name: s.audienceStream, subjects: [s.audienceWildcard], max_age: nanos(o.eventRetentionMs) });
  // The training log of logged recommendation feedback (src/recs/feedback-log.ts): bounded by age and bytes, oldest first out.
  await ensureStream(jsm, {
    ...common, name: s.feedbackStream, subjects: [s.feedbackWildcard],
    max_age: nanos(o.feedbackRetentionMs ?? 7 * 86_400_000), max_bytes: o.feedbackMaxBytes ?? 256 * 1024 * 1024,
  });
}

/** The lease epoch in a cluster owner's consumer name (`<prefix>-p<p>-<node>-e<epoch>`), undefined for other names. */
export function consumerEpoch(name: string): number | undefined {
  const m = /-e(\d+)$/.exec(name);
  return m === null ? undefined : Number(m[1]);
}

/**
 * Deletes the partition's durable consumers that an owner with lease epoch
 * `epoch` (its own consumer named `keep`) supersedes: the single-node name
 * and every earlier owner's (a lower epoch, or a name without one). A
 * consumer of a later epoch is a newer owner's and is left alone, so a node
 * that has not yet noticed it lost the lease can never remove it. Called at
 * a takeover (after the changelog mark) and by the owner's periodic sweep
 * (a consumer re-created by a fenced owner, or one whose creation JetStream
 * carried out after its caller had given up, is removed there). `listed`:
 * the stream's consumer names, when the caller already has them. Resolves
 * with the names deleted.
 */
export async function deleteOtherConsumers(jsm: JetStreamManager, s: Subjects, partition: number, keep: string, epoch: number, listed?: readonly string[]): Promise<string[]> {
  const single = s.consumer(partition);
  const names = listed ?? await consumerNames(jsm, s);
  const deleted: string[] = [];
  for (const n of names) {
    if (n === keep || (n !== single && !n.startsWith(`${single}-`))) continue;
    const e = consumerEpoch(n);
    if (e !== undefined && e >= epoch) continue;
    try {
      await jsm.consumers.delete(s.eventStream, n);
      deleted.push(n);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  return deleted;
}

/** The names of the events stream's consumers. */
export async function consumerNames(jsm: JetStreamManager, s: Subjects): Promise<string[]> {
  const names: string[] = [];
  for await (const ci of jsm.consumers.list(s.eventStream)) names.push(ci.name);
  return names;
}

/** Deletes one durable consumer of the events stream; one already gone is fine. */
export async function deleteConsumer(jsm: JetStreamManager, s: Subjects, name: string): Promise<void> {
  try {
    await jsm.consumers.delete(s.eventStream, name);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

/** Publishes in flight at once by publishOutbound, and attempts per message (a retry is safe: the id deduplicates). */
const OUTBOUND_INFLIGHT = 256;
const OUTBOUND_ATTEMPTS = 5;
const OUTBOUND_TIMEOUT_MS = 10_000;

/**
 * JetStream publishes acknowledged on one reply subscription: a publish with
 * a reply subject `<inbox>.<n>`, and the PubAck (or the stream's error) on
 * that subject settles it. The same as `js.publish` on the wire (headers
 * Nats-Msg-Id, a PubAck per message), without nats.js's per-request cost:
 * its request object builds an Error with a stack trace on every reply
 * (RequestOne.cancel), a timer per request, and a mux entry; with about one
 * audience transition per event, that was the largest item of the engine's
 * main thread after socket writes (V8 profile of bench/audiences.ts).
 */
class AckedPublisher {
  readonly #nc: NatsConnection;
  readonly #inbox = createInbox();
  readonly #sub: Subscription;
  readonly #pending = new Map<number, { resolve: (seq: number) => void; reject: (err: Error) => void; deadline: number }>();
  #next = 0;
  #sweep: NodeJS.Timeout | undefined;

  constructor(nc: NatsConnection) {
    this.#nc = nc;
    this.#sub = nc.subscribe(`${this.#inbox}.*`, { callback: (err, m) => this.#settle(err, m) });
    void nc.closed().then(() => this.#failAll(new Error("connection closed")));
  }

  #settle(err: NatsError | null, m: Msg): void {
    if (err !== null) return this.#failAll(err);
    const id = Number(m.subject.slice(this.#inbox.length + 1));
    const p = this.#pending.get(id);
    if (p === undefined) return; // timed out already
    this.#pending.delete(id);
    // A status message without data: no stream for the subject (503) or another refusal.
    if (m.headers !== undefined && m.headers.hasError) return p.reject(new Error(`publish refused: ${m.headers.code} ${m.headers.description}`));
    const body = m.data.length > 0 ? (JSON.parse(utf8.decode(m.data)) as { error?: { description?: string; err_code?: number }; seq?: number }) : {};
    if (body.error !== undefined) return p.reject(new Error(`publish refused by JetStream: ${body.error.description ?? ""} (${body.error.err_code ?? "?"})`));
    p.resolve(body.seq ?? 0);
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  /** Resolves with the stream sequence the message was stored at. */
  publish(subject: string, data: Uint8Array, msgId: string, extra?: Readonly<Record<string, string>>): Promise<number> {
    if (this.#nc.isClosed()) return Promise.reject(new Error("connection closed"));
    const id = ++this.#next;
    const h = headers();
    h.set("Nats-Msg-Id", msgId);
    if (extra !== undefined) for (const k in extra) h.set(k, extra[k]!);
    const done = new Promise<number>((resolve, reject) => this.#pending.set(id, { resolve, reject, deadline: Date.now() + OUTBOUND_TIMEOUT_MS }));
    this.#sweep ??= setInterval(() => {
      const now = Date.now();
      for (const [k, p] of this.#pending) {
        if (p.deadline > now) continue;
        this.#pending.delete(k);
        p.reject(new Error(`no JetStream acknowledgement within ${OUTBOUND_TIMEOUT_MS} ms`));
      }
      if (this.#pending.size === 0) {
        clearInterval(this.#sweep);
        this.#sweep = undefined;
      }
    }, 1000).unref();
    this.#nc.publish(subject, data, { reply: `${this.#inbox}.${id}`, headers: h });
    return done;
  }

  get closed(): boolean {
    return this.#sub.isClosed();
  }
}

const publishers = new WeakMap<NatsConnection, AckedPublisher>();
const utf8 = new TextDecoder();

/**
 * Publishes messages through JetStream (each stored once by its Nats-Msg-Id),
 * at most OUTBOUND_INFLIGHT at once, retrying a failed publish (a timeout
 * under load) up to OUTBOUND_ATTEMPTS times; resolves when every one is
 * acknowledged, rejects with the last error otherwise.
 */
function publisherOf(js: JetStreamClient): AckedPublisher {
  // The client's connection (JetStreamClientImpl.nc; not in the interface).
  const nc = (js as unknown as { nc: NatsConnection }).nc;
  let pub = publishers.get(nc);
  if (pub === undefined || pub.closed) publishers.set(nc, (pub = new AckedPublisher(nc)));
  return pub;
}

/**
 * One JetStream publish with its id and extra headers (e.g. an expected last
 * message id), acknowledged on the shared reply subscription: sent before
 * this returns, so calls go out in call order. Rejects with the stream's
 * refusal (its description and error code) or a timeout; never retried.
 * Resolves with the stream sequence it was stored at.
 */
export function ackedPublish(js: JetStreamClient, subject: string, data: Uint8Array, msgId: string, extra?: Readonly<Record<string, string>>): Promise<number> {
  return publisherOf(js).publish(subject, data, msgId, extra);
}

/**
 * One JetStream publish with its id and extra headers, not acknowledged (no
 * reply subject): stored or refused by the stream without a word back. Sent
 * before this returns, in call order with ackedPublish on the same
 * connection. Only for a message whose storage a later acknowledged one
 * proves (the changelog's chain of expected ids: src/bus/changelog.ts).
 */
export function unackedPublish(js: JetStreamClient, subject: string, data: Uint8Array, msgId: string, extra: Readonly<Record<string, string>>): void {
  const nc = (js as unknown as { nc: NatsConnection }).nc;
  if (nc.isClosed()) return;
  const h = headers();
  h.set("Nats-Msg-Id", msgId);
  for (const k in extra) h.set(k, extra[k]!);
  nc.publish(subject, data, { headers: h });
}

export async function publishOutbound(js: JetStreamClient, msgs: readonly OutboundMessage[]): Promise<void> {
  const pub = publisherOf(js);
  let next = 0;
  const one = async (m: OutboundMessage) => {
    for (let i = 1; ; i++) {
      try {
        await pub.publish(m.subject, m.data, m.msgId);
        return;
      } catch (err) {
        if (i >= OUTBOUND_ATTEMPTS) throw err;
        await new Promise((r) => setTimeout(r, 100 * i));
      }
    }
  };
  const lane = async () => {
    while (next < msgs.length) await one(msgs[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(OUTBOUND_INFLIGHT, msgs.length) }, lane));
}

/**
 * Reads the catalog stream from its start (the last upsert of each item) and
 * hands each message to `apply`, in stream order; resolves when it has read
 * up to the stream's last sequence at the time of the call.
 */
export async function replayCatalog(js: JetStreamClient, jsm: JetStreamManager, s: Subjects, apply: (data: Uint8Array) => Promise<void>): Promise<number> {
  const last = (await jsm.streams.info(s.catalogStream)).state.last_seq;
  if (last === 0) return 0;
  const c = await js.consumers.get(s.catalogStream);
  let n = 0;
  const msgs = await c.consume({ max_messages: 512 });
  for await (const m of msgs) {
    await apply(m.data);
    n++;
    if (m.seq >= last) break;
  }
  await msgs.close();
  return n;
}

/**
 * (Re)creates a partition's durable consumer so that it delivers from
 * `afterSeq + 1`: the partition's owner positions its consumer from its own
 * committed state (LMDB), so a restart after a crash neither waits for the
 * ack timeout of the dead owner's unacknowledged messages nor re-reads what
 * it already applied. In cluster mode each owner has its own name (partition,
 * node, lease epoch): see PartitionConsumer's ConsumerFence.
 */
export async function resetConsumer(jsm: JetStreamManager, s: Subjects, partition: number, afterSeq: number, o: ConsumerSettings, name = s.consumer(partition)): Promise<void> {
  await deleteConsumer(jsm, s, name);
  await jsm.consumers.add(s.eventStream, {
    durable_name: name,
    filter_subject: s.events(partition),
    ack_policy: AckPolicy.All,
    ...(afterSeq > 0
      ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: afterSeq + 1 }
      : { deliver_policy: DeliverPolicy.All }),
    max_ack_pending: o.maxAckPending,
    ack_wait: nanos(o.ackWaitMs),
    max_deliver: -1,
  });
}
