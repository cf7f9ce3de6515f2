/**
 * A lean request-reply channel to a worker thread over its own MessagePort,
 * for calls many times a second (profile lookups): no comlink proxy, id
 * string or wire wrapping per call, and the calls made in one turn of the
 * event loop travel as one message (the worker answers them with one
 * message too). Nothing else is ordered with them: a call is answered in the
 * worker's next turn that reaches this port, whatever it has queued on its
 * other ports.
 */
import type { MessagePort } from "node:worker_threads";
import type { PortraitError } from "../errors.js";

/** The worker's answer to one call, and the buffers to transfer with it (each owned by it alone). */
export interface CallAnswer<Res> {
  result: Res;
  transfer?: ArrayBuffer | undefined;
}

/** The main-thread side: `call` posts a request, resolved with the worker's answer; every call pending or later rejects once the worker is gone. */
export class CallPort<Req, Res> {
  readonly #port: MessagePort;
  readonly #pending = new Map<number, { resolve: (r: Res) => void; reject: (e: PortraitError) => void }>();
  #next = 0;
  /** [id, request, id, request, ...] not posted yet. */
  #out: unknown[] = [];
  #failed: PortraitError | undefined;

  /** `exited` rejects when the worker is gone (WorkerClient.exited). */
  constructor(port: MessagePort, exited: Promise<never>) {
    this.#port = port;
    port.on("message", (m: unknown[]) => {
      for (let i = 0; i < m.length; i += 2) {
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
    if (this.#out.length === 0) queueMicrotask(this.#flush);
    this.#out.push(id, req);
    return new Promise<Res>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
  }

  readonly #flush = (): void => {
    const out = this.#out;
    this.#out = [];
    if (this.#failed === undefined) this.#port.postMessage(out);
  };

  close(): void {
    this.#port.close();
  }
}

/**
 * The worker side: answers each call of a message with `answer` (`failed`
 * when it throws), all in one message back.
 */
export function serveCallPort<Req, Res>(port: MessagePort, answer: (req: Req) => CallAnswer<Res>, failed: (err: unknown) => Res): void {
  port.on("message", (m: unknown[]) => {
    const out: unknown[] = [];
    const transfer: ArrayBuffer[] = [];
    for (let i = 0; i < m.length; i += 2) {
      let a: CallAnswer<Res>;
      try {
        a = answer(m[i + 1] as Req);
      } catch (err) {
        a = { result: failed(err) };
      }
      out.push(m[i], a.result);
      if (a.transfer !== undefined) transfer.push(a.transfer);
    }
    port.postMessage(out, transfer);
  });
  // The worker's life is its comlink port's: this one keeps it from nothing.
  port.unref();
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
