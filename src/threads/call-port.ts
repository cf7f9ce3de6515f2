/**
 * A lean request-reply channel to a worker thread over its own MessagePort,
 * for calls many times a second (profile lookups): no comlink proxy, id
 * string or wire wrapping per call, and the calls made in one turn of the
 * event loop travel as one message (the worker answers them with one
 * message too). Nothing else is ordered with them: a call is answered in the
 * worker's next turn that reaches this port, whatever it has queued on its
 * other ports.
 */
import { receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import type { PortraitError } from "../errors.js";

/** The worker's answer to one call, and the buffers to transfer with it (each owned by it alone). */
export interface CallAnswer<Res> {
  result: Res;
  transfer?: ArrayBuffer | undefined;
}

/**
 * Where the calls of one answered message spent their time, epoch ms
 * (performance.timeOrigin + now, comparable across threads): posted by main,
 * taken up by the worker, answered by it, received back on main.
 */
export interface CallTimes {
  postedMs: number;
  startMs: number;
  endMs: number;
  receivedMs: number;
  /** Calls answered in the message. */
  calls: number;
}

const epochMs = (): number => performance.timeOrigin + performance.now();

/**
 * Messages: main -> worker `[postedMs, id, request, id, request, ...]`;
 * worker -> main `[postedMs, startMs, endMs, id, result, id, result, ...]`
 * (a message's calls may be answered in several messages: CallServer.poll).
 */
const HEAD = 1;
const ANSWER_HEAD = 3;

/** The main-thread side: `call` posts a request, resolved with the worker's answer; every call pending or later rejects once the worker is gone. */
export class CallPort<Req, Res> {
  readonly #port: MessagePort;
  readonly #pending = new Map<number, { resolve: (r: Res) => void; reject: (e: PortraitError) => void }>();
  #next = 0;
  /** [postedMs, id, request, id, request, ...] not posted yet. */
  #out: unknown[] = [0];
  #failed: PortraitError | undefined;

  /** `exited` rejects when the worker is gone (WorkerClient.exited); `onTimes` is told the stages of each answered message. */
  constructor(port: MessagePort, exited: Promise<never>, onTimes?: (t: CallTimes) => void) {
    this.#port = port;
    port.on("message", (m: unknown[]) => {
      if (onTimes !== undefined) {
        onTimes({ postedMs: m[0] as number, startMs: m[1] as number, endMs: m[2] as number, receivedMs: epochMs(), calls: (m.length - ANSWER_HEAD) / 2 });
      }
      for (let i = ANSWER_HEAD; i < m.length; i += 2) {
        const id = m[i] as number;
        const p = this.#pending.get(id);
        if (p === undefined) continue;
        this.#pending.delete(id);
        p.resolve(m[i + 1] as Res);
      }
    });
    // An idle channel keeps no thread alive.
    port.unref();
    exited.catch((err: PortraitError) => {
      this.#failed = err;
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    });
  }

  call(req: Req): Promise<Res> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    const id = this.#next++;
    if (this.#out.length === HEAD) queueMicrotask(this.#flush);
    this.#out.push(id, req);
    return new Promise<Res>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
  }

  readonly #flush = (): void => {
    const out = this.#out;
    this.#out = [0];
    out[0] = epochMs();
    if (this.#failed === undefined) this.#port.postMessage(out);
  };

  close(): void {
    this.#port.close();
  }
}

/**
 * The worker side: answers each call of a message with `answer` (`failed`
 * when it throws), all in one message back. Between those turns, a worker
 * busy with a long synchronous task can answer the calls waiting now with
 * `poll` (MessagePort messages are taken synchronously: receiveMessageOnPort),
 * holding back those `defer` names until `flush`.
 */
export class CallServer<Req, Res> {
  readonly #port: MessagePort;
  readonly #answer: (req: Req) => CallAnswer<Res>;
  readonly #failed: (err: unknown) => Res;
  /** Calls held back by poll: [postedMs, id, request, ...] per message. */
  #held: unknown[][] = [];

  constructor(port: MessagePort, answer: (req: Req) => CallAnswer<Res>, failed: (err: unknown) => Res) {
    this.#port = port;
    this.#answer = answer;
    this.#failed = failed;
    port.on("message", (m: unknown[]) => {
      this.flush();
      this.#serve(m, undefined);
    });
    // The worker's life is its comlink port's: this one keeps it from nothing.
    port.unref();
  }

  /** Answers the calls waiting on the port now, except those `defer` holds back (answered by flush); how many messages were taken. */
  poll(defer?: (req: Req) => boolean): number {
    let n = 0;
    for (let r = receiveMessageOnPort(this.#port); r !== undefined; r = receiveMessageOnPort(this.#port)) {
      this.#serve(r.message as unknown[], defer);
      n++;
    }
    return n;
  }

  /** Answers the calls poll held back. */
  flush(): void {
    if (this.#held.length === 0) return;
    const held = this.#held;
    this.#held = [];
    for (const m of held) this.#serve(m, undefined);
  }

  #serve(m: unknown[], defer: ((req: Req) => boolean) | undefined): void {
    const out: unknown[] = [m[0], epochMs(), 0];
    const transfer: ArrayBuffer[] = [];
    let held: unknown[] | undefined;
    for (let i = HEAD; i < m.length; i += 2) {
      const req = m[i + 1] as Req;
      if (defer !== undefined && defer(req)) {
        (held ??= [m[0]]).push(m[i], req);
        continue;
      }
      let a: CallAnswer<Res>;
      try {
        a = this.#answer(req);
      } catch (err) {
        a = { result: this.#failed(err) };
      }
      out.push(m[i], a.result);
      if (a.transfer !== undefined) transfer.push(a.transfer);
    }
    if (held !== undefined) this.#held.push(held);
    if (out.length === ANSWER_HEAD) return;
    out[2] = epochMs();
    this.#port.postMessage(out, transfer);
  }
}

/** A CallServer on `port` (see there). */
export function serveCallPort<Req, Res>(port: MessagePort, answer: (req: Req) => CallAnswer<Res>, failed: (err: unknown) => Res): CallServer<Req, Res> {
  return new CallServer(port, answer, failed);
}

/**
 * Bytes whose buffer they alone span, to transfer: `b` itself, or a copy
 * when it is a view into a larger buffer (protobufjs hands out views into
 * Node's shared 8 KiB pool, which a structured clone would copy whole).
 */
export function ownedBytes(b: Uint8Array): Uint8Array {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b;
  const out = Buffer.allocUnsafeSlow(b.byteLength);
  out.set(b);
  return out;
}
