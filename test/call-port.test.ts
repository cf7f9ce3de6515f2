/**
 * The lean call channel the profile lookups take to their shard
 * (src/threads/call-port.ts), over a real MessageChannel in this thread.
 */
import { MessageChannel } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { ErrorCode, PortraitError } from "../src/errors.js";
import { CallPort, ownedBytes, serveCallPort } from "../src/threads/call-port.js";

describe("call port", () => {
  it("call port - the calls of one turn travel as one message, each answered with its own result (a throw answered by `failed`), bodies transferred", async () => {
    const { port1, port2 } = new MessageChannel();
    let messages = 0;
    port2.on("message", () => messages++);
    serveCallPort<number, { n: number; body?: Uint8Array } | { failed: string }>(port2, (n) => {
      if (n === 3) throw new Error("three");
      const body = ownedBytes(Buffer.from([n, n]));
      return { result: { n, body }, transfer: body.buffer as ArrayBuffer };
    }, (err) => ({ failed: (err as Error).message }));
    const never = new Promise<never>(() => undefined);
    const c = new CallPort<number, { n: number; body?: Uint8Array } | { failed: string }>(port1, never);
    const r = await Promise.all([1, 2, 3, 4].map((n) => c.call(n)));
    expect(r.map((x) => ("n" in x ? x.n : x.failed))).toEqual([1, 2, "three", 4]);
    expect(r.map((x) => ("body" in x ? [...x.body!] : []))).toEqual([[1, 1], [2, 2], [], [4, 4]]);
    expect(messages).toBe(1);
    c.close();
  });

  it("call port - calls pending when the worker goes, and later ones, reject with its error", async () => {
    const { port1, port2 } = new MessageChannel();
    port2.on("message", () => undefined); // never answers
    let exit!: (e: PortraitError) => void;
    const exited = new Promise<never>((_, reject) => (exit = reject));
    const c = new CallPort<number, number>(port1, exited);
    const pending = c.call(1);
    exit(new PortraitError(ErrorCode.WORKER_EXITED, "shard worker 0 exited with code 1"));
    await expect(pending).rejects.toThrow(/exited with code 1/);
    await expect(c.call(2)).rejects.toThrow(/exited with code 1/);
    c.close();
    port2.close();
  });

  it("call port - poll answers the calls waiting now except those held back, which flush answers; the port's own turn answers the rest", async () => {
    const { port1, port2 } = new MessageChannel();
    const server = serveCallPort<number, number>(port2, (n) => ({ result: n * 10 }), () => -1);
    const never = new Promise<never>(() => undefined);
    const c = new CallPort<number, number>(port1, never);
    const order: number[] = [];
    const calls = [1, 2, 3, 4].map((n) => c.call(n).then((r) => (order.push(r), r)));
    // The calls' message is posted at the end of this turn (a microtask); take it synchronously, as a shard does inside a batch.
    await Promise.resolve();
    const taken = server.poll((n) => n % 2 === 0);
    expect(taken).toBe(1);
    await new Promise((r) => setTimeout(r, 20));
    expect(order).toEqual([10, 30]);
    server.flush();
    expect(await Promise.all(calls)).toEqual([10, 20, 30, 40]);
    expect(order).toEqual([10, 30, 20, 40]);
    c.close();
  });

  it("call port - bytes a view into a larger buffer are copied to a buffer of their own; bytes that span theirs are kept", () => {
    const pooled = Buffer.from("abc"); // a view into Node's shared pool
    const own = ownedBytes(pooled);
    expect(own.buffer.byteLength).toBe(3);
    expect([...own]).toEqual([...pooled]);
    const exact = new Uint8Array([1, 2]);
    expect(ownedBytes(exact)).toBe(exact);
  });
});
