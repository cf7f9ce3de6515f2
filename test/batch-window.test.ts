/**
 * The main thread's bound on a shard's queue (BatchWindow, src/shard/shard-pool.ts): a batch held for room is handed
 * over once the shard has applied the batches before it, without waiting for their answers (their LMDB commits).
 */
import { describe, expect, it } from "vitest";
import { BatchWindow } from "../src/shard/shard-pool.js";

/** A call whose answer the test gives. */
function pendingCall(): { promise: Promise<string>; answer: (v: string) => void } {
  let answer!: (v: string) => void;
  const promise = new Promise<string>((r) => (answer = r));
  return { promise, answer };
}

/** Lets promise callbacks and Atomics.waitAsync resolutions run. */
const settle = () => new Promise((r) => setImmediate(r));

describe("BatchWindow", () => {
  it("hands a held batch over once the shard applied the ones before it, before they are answered", async () => {
    const applied = new Int32Array(new SharedArrayBuffer(4));
    const w = new BatchWindow(10, applied);
    const first = pendingCall();
    const started: string[] = [];
    void w.run(8, () => (started.push("first"), first.promise));
    const second = w.run(8, () => (started.push("second"), Promise.resolve("second done")));
    await settle();
    expect(started).toEqual(["first"]);
    expect(w.held).toBe(1);
    expect(w.pending).toBe(8);
    // The shard applied the first batch (its commit is still out): the second goes.
    Atomics.add(applied, 0, 8);
    Atomics.notify(applied, 0);
    await settle();
    await settle();
    expect(started).toEqual(["first", "second"]);
    expect(w.held).toBe(0);
    expect(await second).toBe("second done");
    first.answer("first done");
  });

  it("keeps a batch held while the shard has not applied enough, and keeps hand-over order", async () => {
    const applied = new Int32Array(new SharedArrayBuffer(4));
    const w = new BatchWindow(10, applied);
    const first = pendingCall();
    const started: number[] = [];
    void w.run(6, () => (started.push(1), first.promise));
    void w.run(6, () => (started.push(2), Promise.resolve("")));
    void w.run(1, () => (started.push(3), Promise.resolve("")));
    await settle();
    // The third would fit, but goes after the second.
    expect(started).toEqual([1]);
    // 5 not applied + 6 > 10: the second still waits.
    Atomics.add(applied, 0, 1);
    Atomics.notify(applied, 0);
    await settle();
    expect(started).toEqual([1]);
    Atomics.add(applied, 0, 5);
    Atomics.notify(applied, 0);
    await settle();
    await settle();
    expect(started).toEqual([1, 2, 3]);
    first.answer("");
  });

  it("without a shared count, counts a batch until it is answered", async () => {
    const w = new BatchWindow(10);
    const first = pendingCall();
    const started: string[] = [];
    void w.run(8, () => (started.push("first"), first.promise));
    const second = w.run(8, () => (started.push("second"), Promise.resolve("ok")));
    await settle();
    expect(started).toEqual(["first"]);
    first.answer("");
    expect(await second).toBe("ok");
    expect(started).toEqual(["first", "second"]);
  });

  it("releases held batches when everything handed over was answered (a shard that is gone never applies)", async () => {
    const applied = new Int32Array(new SharedArrayBuffer(4));
    const w = new BatchWindow(10, applied);
    const first = pendingCall();
    void w.run(8, () => first.promise);
    const second = w.run(8, () => Promise.reject(new Error("gone")));
    first.answer("failed");
    await expect(second).rejects.toThrow("gone");
  });
});
