/** The worker-thread client and the comlink error transfer, with a real worker thread (test/fixtures/errors.worker.ts). */
import { getHeapStatistics, setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterEach, describe, expect, it } from "vitest";
import { BadRequestError, ErrorCode, PortraitError, fromWire, toWire } from "../src/errors.js";
import { WorkerClient } from "../src/threads/worker-client.js";

interface Api {
  storageFailed(): Promise<never>;
  unknownUser(): Promise<never>;
  plain(): Promise<never>;
  stats(): Promise<{ n: number }>;
  exit(): void;
  grow(): Promise<number>;
  heapLimit(): Promise<number>;
}

const clients: Array<WorkerClient<Api, { n: number }>> = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

function spawn(onExit: (err: PortraitError) => void = () => undefined, maxHeapBytes?: number): WorkerClient<Api, { n: number }> {
  const c = new WorkerClient<Api, { n: number }>({
    base: new URL("./fixtures/", import.meta.url).href + "x.ts", module: "errors.worker", threadName: "test-errors", what: "test worker", onExit,
    ...(maxHeapBytes !== undefined ? { maxHeapBytes } : {}),
  });
  clients.push(c);
  return c;
}

describe("errors across threads", () => {
  it("errors - toWire/fromWire keep the code, the subclass where one exists, and map anything else to INTERNAL", () => {
    const bad = fromWire(toWire(new BadRequestError("no")));
    expect(bad).toBeInstanceOf(BadRequestError);
    expect(bad).toMatchObject({ code: "BAD_REQUEST", message: "no", retryable: false });
    expect(fromWire(toWire(new PortraitError(ErrorCode.STORAGE_FAILED, "full")))).toMatchObject({ code: "STORAGE_FAILED", retryable: true });
    expect(fromWire(toWire(new RangeError("x")))).toMatchObject({ code: "INTERNAL", message: "x" });
    expect(fromWire({ code: "NOT_A_CODE" as ErrorCode, message: "y" })).toMatchObject({ code: "INTERNAL", message: "y" });
  });

  it("errors - an error thrown in a worker reaches the main thread as a PortraitError with its code", async () => {
    const c = spawn();
    const storage = await c.call((api) => api.storageFailed()).catch((e: unknown) => e);
    expect(storage).toBeInstanceOf(PortraitError);
    expect(storage).toMatchObject({ code: "STORAGE_FAILED", message: expect.stringContaining("No space left") });
    expect((storage as Error).stack).toContain("errors.worker");
    await expect(c.call((api) => api.unknownUser())).rejects.toMatchObject({ code: "UNKNOWN_USER", message: 'no profile for user "u1"' });
    await expect(c.call((api) => api.plain())).rejects.toMatchObject({ code: "INTERNAL", message: "not a PortraitError" });
  });

  it("worker client - a worker that exits rejects the pending and later calls with WORKER_EXITED and tells onExit once", async () => {
    const exits: PortraitError[] = [];
    const c = spawn((err) => exits.push(err));
    expect(await c.stats((api) => api.stats(), 5000)).toEqual({ n: 1 });
    expect(c.lastStats).toEqual({ n: 1 });
    await expect(c.call(async (api) => api.exit())).rejects.toMatchObject({ code: "WORKER_EXITED", message: "test worker exited with code 3" });
    await expect(c.call((api) => api.stats())).rejects.toMatchObject({ code: "WORKER_EXITED" });
    expect(exits.map((e) => e.code)).toEqual(["WORKER_EXITED"]);
    expect(c.alive).toBe(false);
  });

  it("worker client - maxHeapBytes bounds the thread's heap; a thread that outgrows it fails with WORKER_EXITED (out of memory) and tells onExit, the process goes on", async () => {
    const MiB = 2 ** 20;
    const exits: PortraitError[] = [];
    const c = spawn((err) => exits.push(err), 64 * MiB);
    const limit = await c.call((api) => api.heapLimit());
    // heap_size_limit is the old generation's bound plus the young generation.
    expect(limit).toBeGreaterThanOrEqual(64 * MiB);
    expect(limit).toBeLessThan(256 * MiB);
    await expect(c.call((api) => api.grow())).rejects.toMatchObject({ code: "WORKER_EXITED", message: expect.stringMatching(/^test worker failed: .*out of memory/i) });
    expect(exits.map((e) => e.code)).toEqual(["WORKER_EXITED"]);
    // Without the bound, V8's default: GiBs on this machine, as on this thread.
    expect(getHeapStatistics().heap_size_limit).toBeGreaterThan(1024 * MiB);
  });

  it("worker client - a call's result is not kept once the caller dropped it (no reaction left on a pending promise per call)", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const c = spawn();
    // Each reply is a fresh object on main (structured clone); the caller keeps only weak references to them.
    const refs: WeakRef<object>[] = [];
    for (let i = 0; i < 20; i++) refs.push(new WeakRef(await c.call((api) => api.stats())));
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setImmediate(r));
      gc();
    }
    expect(refs.filter((r) => r.deref() !== undefined).length).toBe(0);
  });
});
