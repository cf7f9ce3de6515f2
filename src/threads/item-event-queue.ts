/**
 * The item-event queue: the item events of every committed batch, from the
 * shards straight to one receiver (the recs worker), with no relay through
 * the main thread. Both ends live here: the host creates the queue and one
 * channel per shard, each shard posts through an ItemEventSender, and the
 * receiver observes with receiveItemEvents.
 *
 * The queue is bounded by one count shared by all shards and the receiver
 * (an Int32Array over a SharedArrayBuffer): a shard adds a batch's count
 * before posting it (compare-and-swap, so shards posting at once never take
 * it beyond the bound), the receiver subtracts it after observing it and
 * wakes waiting senders (Atomics.notify).
 *
 * When full, a sender waits (back-pressure): a batch that would take the
 * count beyond `maxQueued` is kept in the shard, in order behind any batch
 * already waiting, and posted as soon as the receiver has made room; the
 * batch's promise (what the shard's batch result awaits, and so the
 * acknowledgement and the next pulls) settles when it is posted. Only a batch
 * that waited `maxWaitMs` without the receiver observing anything (a receiver
 * that is stuck, not slow), or one larger than the whole bound, is dropped (counted in
 * ShardStats.itemEventsDropped): what the receiver derives from item events
 * (co-visitation, trending, sessions, item statistics) is approximate;
 * profiles are unaffected. Forget messages are never dropped and not
 * counted; they keep their place behind waiting batches.
 */
import { MessageChannel, type MessagePort } from "node:worker_threads";
import type { Logger } from "../obs/logger.js";

/**
 * Item events a shard applied, posted after the batch committed. Columnar,
 * one entry per event with an item id: `itemIds.length` entries. The numeric
 * columns are views of one ArrayBuffer sized for the shard's batch
 * (`newItemEventBatch`), transferred when posted, not cloned element by
 * element (the receiver then reads them without a heap number per
 * timestamp and price); they may be longer than the entries. `newToUser` is 1
 * when the item was not among the user's recent items before the event (the
 * distinct-users count of the DeepFM item features).
 */
export interface ItemEventBatch {
  userIds: string[];
  itemIds: string[];
  types: Uint8Array;
  timestampsMs: Float64Array;
  categoryIds: string[];
  categoryPaths: string[];
  brands: string[];
  prices: Float64Array;
  currencies: string[];
  newToUser: Uint8Array;
}

/**
 * Posted after a forget committed, after the item events of every batch
 * applied before it: the receiver drops what it keeps about the user (the id
 * is the pseudonym when pseudonymisation is on).
 */
export interface ForgetUserMessage {
  forgetUserId: string;
}

/** What a shard posts on its port. */
export type ItemEventMessage = ItemEventBatch | ForgetUserMessage;

/** One shard's end of the queue (part of its init; the port is transferred). */
export interface ItemEventSink {
  port: MessagePort;
  /** The shared count: Int32Array over a SharedArrayBuffer of 8 bytes ([0] queued, [1] slices observed, wrapping: the receiver's progress). */
  queued: Int32Array;
  maxQueued: number;
  /** Longest a batch waits for room before it is dropped, ms (0: dropped at once, drop-newest). */
  maxWaitMs: number;
}

/** Every shard's end: one port per shard (index = shard) and the bound they share. */
export interface ItemEventSinks {
  ports: MessagePort[];
  queued: Int32Array;
  maxQueued: number;
  maxWaitMs: number;
}

/** The host's handle on the queue: the shared count and the channels. */
export class ItemEventQueue {
  readonly queued = new Int32Array(new SharedArrayBuffer(8));
  readonly maxQueued: number;
  readonly maxWaitMs: number;

  constructor(maxQueued: number, maxWaitMs: number) {
    this.maxQueued = maxQueued;
    this.maxWaitMs = maxWaitMs;
  }

  /** A channel for one shard: `sender` goes to the shard (ItemEventSink.port), `receiver` to the receiver. */
  channel(): { sender: MessagePort; receiver: MessagePort } {
    const ch = new MessageChannel();
    return { sender: ch.port1, receiver: ch.port2 };
  }

  /** Item events posted and not observed yet (exact). */
  size(): number {
    return Atomics.load(this.queued, 0);
  }
}

/** A batch with room for `capacity` item events (the numeric columns: 18 bytes each, in one ArrayBuffer). */
export function newItemEventBatch(capacity: number): ItemEventBatch {
  const buf = new ArrayBuffer(18 * capacity);
  return {
    userIds: [], itemIds: [], categoryIds: [], categoryPaths: [], brands: [], currencies: [],
    timestampsMs: new Float64Array(buf, 0, capacity), prices: new Float64Array(buf, 8 * capacity, capacity),
    types: new Uint8Array(buf, 16 * capacity, capacity), newToUser: new Uint8Array(buf, 17 * capacity, capacity),
  };
}

export interface ItemEvent {
  userId: string; itemId: string; type: number; timestampMs: number; categoryId: string; categoryPath: string; brand: string; price: number; currency: string;
}

/** Appends an event (the batch must have room: at most the capacity it was created with). */
export function pushItemEvent(b: ItemEventBatch, e: ItemEvent, newToUser: boolean): void {
  const i = b.itemIds.length;
  if (i >= b.types.length) throw new RangeError(`item event batch: room for ${b.types.length} events`);
  b.userIds.push(e.userId);
  b.itemIds.push(e.itemId);
  b.types[i] = e.type;
  b.timestampsMs[i] = e.timestampMs;
  b.categoryIds.push(e.categoryId);
  b.categoryPaths.push(e.categoryPath);
  b.brands.push(e.brand);
  b.prices[i] = e.price;
  b.currencies.push(e.currency);
  b.newToUser[i] = newToUser ? 1 : 0;
}

/** Posts a message on a shard's port: a batch's numeric columns' buffer transferred, not copied. */
function postMessageTo(port: MessagePort, m: ItemEventMessage): void {
  if ("forgetUserId" in m) port.postMessage(m);
  else port.postMessage(m, [m.types.buffer as ArrayBuffer]);
}

/** Atomics.waitAsync (Node >= 16; not in this TypeScript's lib): resolves on a notify or at the timeout. */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number, timeoutMs: number): { async: false; value: string } | { async: true; value: Promise<string> };
}).waitAsync;

type Waiting = { m: ItemEventMessage; n: number; done: () => void };

/** A shard's end: posts within the bound, waits for room when full (in order), counts what it posted and dropped. */
export class ItemEventSender {
  readonly #sink: ItemEventSink;
  readonly #log: Logger;
  /** Messages waiting for room, in posting order (a forget behind the batches before it). */
  readonly #waiting: Waiting[] = [];
  #pumping = false;
  posted = 0;
  dropped = 0;
  /** Item events that had to wait for room before they were posted. */
  waited = 0;
  /** When the last "dropped" warning was logged, ms (at most one per 10 s). */
  #dropLoggedMs = 0;

  constructor(sink: ItemEventSink, log: Logger) {
    this.#sink = sink;
    this.#log = log;
  }

  /** Item events waiting in this shard for room in the queue. */
  get waiting(): number {
    let n = 0;
    for (const w of this.#waiting) n += w.n;
    return n;
  }

  /**
   * Posts a committed batch's item events. Returns undefined when posted (or
   * dropped) at once, else a promise that settles when the batch was posted
   * after waiting for room, or dropped after maxWaitMs.
   */
  post(items: ItemEventBatch): Promise<void> | undefined {
    const n = items.itemIds.length;
    if (n > this.#sink.maxQueued) {
      this.#drop(n);
      return undefined;
    }
    if (this.#waiting.length === 0 && this.#tryPost(items, n)) return undefined;
    if (this.#sink.maxWaitMs === 0) {
      this.#drop(n);
      return undefined;
    }
    return this.#wait(items, n);
  }

  /** Never dropped, not counted in the bound; behind the batches waiting before it. */
  forget(userKey: string): Promise<void> | undefined {
    const m: ForgetUserMessage = { forgetUserId: userKey };
    if (this.#waiting.length === 0) {
      this.#sink.port.postMessage(m);
      return undefined;
    }
    return this.#wait(m, 0);
  }

  #tryPost(items: ItemEventBatch, n: number): boolean {
    const sink = this.#sink;
    for (;;) {
      const queued = Atomics.load(sink.queued, 0);
      if (queued + n > sink.maxQueued) return false;
      if (Atomics.compareExchange(sink.queued, 0, queued, queued + n) === queued) break;
    }
    postMessageTo(sink.port, items);
    this.posted += n;
    return true;
  }

  #wait(m: ItemEventMessage, n: number): Promise<void> {
    return new Promise<void>((done) => {
      this.#waiting.push({ m, n, done });
      if (!this.#pumping) {
        this.#pumping = true;
        void this.#pump().catch((err: unknown) => this.#log.error({ err }, "item-event queue: waiting sender failed"));
      }
    });
  }

  /**
   * Posts the waiting messages in order as room frees up (woken by the
   * receiver's notify). The receiver is stuck, and the head is dropped, only
   * when its progress count ([1]) has not moved for maxWaitMs: the queued
   * count alone cannot tell, since another shard may fill the room it frees.
   */
  async #pump(): Promise<void> {
    const sink = this.#sink;
    let progress = Atomics.load(sink.queued, 1);
    let progressMs = Date.now();
    try {
      while (this.#waiting.length > 0) {
        const w = this.#waiting[0]!;
        if ("forgetUserId" in w.m) {
          postMessageTo(sink.port, w.m);
        } else if (this.#tryPost(w.m, w.n)) {
          this.waited += w.n;
        } else {
          const p = Atomics.load(sink.queued, 1);
          const now = Date.now();
          if (p !== progress) {
            progress = p;
            progressMs = now;
          }
          if (now - progressMs < sink.maxWaitMs) {
            const seen = Atomics.load(sink.queued, 0);
            const r = seen + w.n > sink.maxQueued ? waitAsync(sink.queued, 0, seen, Math.max(1, progressMs + sink.maxWaitMs - now)) : undefined;
            // Awaited either way, so that a count changing under us never spins this thread.
            if (r?.async === true) await r.value;
            else await new Promise<void>((resolve) => setImmediate(resolve));
            continue;
          }
          this.#drop(w.n);
        }
        this.#waiting.shift();
        w.done();
      }
    } finally {
      this.#pumping = false;
    }
  }

  #drop(n: number): void {
    this.dropped += n;
    const now = Date.now();
    if (now - this.#dropLoggedMs >= 10_000) {
      this.#dropLoggedMs = now;
      this.#log.warn({ dropped: this.dropped, maxQueuedItemEvents: this.#sink.maxQueued, maxItemEventWaitMs: this.#sink.maxWaitMs },
        "the recs worker's item-event queue stayed full: dropping item events (co-visitation, trending, sessions and item statistics miss them; profiles are unaffected)");
    }
  }
}

/** Item events observed in one go before the receiver's thread turns to its other messages (recommendation requests). */
export const RECEIVE_SLICE_EVENTS = 256;

type Pending = { m: ItemEventMessage; at: number; queued: Int32Array; on: ItemEventObserver };

export interface ItemEventObserver {
  /** Observes events [from, to) of a batch. */
  observe(b: ItemEventBatch, from: number, to: number): void;
  forget(userKey: string): void;
}

/**
 * The receiver's pending messages, from every channel, in arrival order (a
 * channel's own order kept: a forget after its batches). Observed in slices of
 * RECEIVE_SLICE_EVENTS with setImmediate between them, so that the thread's
 * requests are answered between slices rather than behind a whole backlog;
 * each slice's count comes off the shared bound once observed, so senders
 * never queue more than the bound here either.
 */
const pending: Pending[] = [];
let draining = false;

function drain(): void {
  let budget = RECEIVE_SLICE_EVENTS;
  while (pending.length > 0 && budget > 0) {
    const p = pending[0]!;
    if ("forgetUserId" in p.m) {
      p.on.forget(p.m.forgetUserId);
      pending.shift();
      continue;
    }
    const n = p.m.itemIds.length;
    const to = Math.min(n, p.at + budget);
    try {
      p.on.observe(p.m, p.at, to);
    } finally {
      Atomics.sub(p.queued, 0, to - p.at);
      Atomics.add(p.queued, 1, 1);
      Atomics.notify(p.queued, 0);
      budget -= to - p.at;
      p.at = to;
      if (p.at >= n) pending.shift();
    }
  }
  if (pending.length > 0) setImmediate(drain);
  else draining = false;
}

/** The receiver's end of one channel: observes each batch (in slices, between the thread's other work), then takes its count off the shared bound. */
export function receiveItemEvents(port: MessagePort, queued: Int32Array, on: ItemEventObserver): void {
  port.on("message", (m: ItemEventMessage) => {
    pending.push({ m, at: 0, queued, on });
    if (!draining) {
      draining = true;
      setImmediate(drain);
    }
  });
}
