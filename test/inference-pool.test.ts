/**
 * The DeepFM inference pool with its micro-batcher: real piscina workers
 * running onnxruntime on tiny seeded DeepFM versions written to a temp dir,
 * checked against the scorer run directly in this thread.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, PortraitError } from "../src/errors.js";
import { compileInferenceOptions } from "../src/inference/inference-options.js";
import { InferencePool } from "../src/inference/inference-pool.js";
import { loadDeepFmScorer, type DeepFmScorer } from "../src/models/deepfm-scorer.js";
import { FIXTURE_DEEPFM_ARCH as ARCH, randomDeepFmRows, writeDeepFmFixture } from "./helpers/deepfm-fixture.js";
import { seededRandom } from "../src/models/seeded-random.js";

const TOL = 1e-6;

interface Req {
  ids: Int32Array;
  dense: Float32Array | undefined;
  rows: number;
}

function makeReq(rows: number, seed: number): Req {
  return { ...randomDeepFmRows(ARCH, rows, seed), rows };
}

function maxAbsDiff(x: Float32Array, y: Float32Array): number {
  if (x.length !== y.length) return Number.POSITIVE_INFINITY;
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  const v = m?.values.find((x) => Object.entries(labels).every(([k, want]) => String(x.labels[k]) === want));
  return v?.value ?? 0;
}

let root: string;
let dirA: string;
let dirB: string;
let directA: DeepFmScorer;
let directB: DeepFmScorer;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "portrait-inference-"));
  dirA = writeDeepFmFixture(root, "2026-01-01.1", { seed: 11 });
  dirB = writeDeepFmFixture(root, "2026-01-01.2", { seed: 22 });
  directA = await loadDeepFmScorer(dirA, { backend: "onnxruntime" });
  directB = await loadDeepFmScorer(dirB, { backend: "onnxruntime" });
});

afterAll(async () => {
  await directA?.close();
  await directB?.close();
  if (root !== undefined) rmSync(root, { recursive: true, force: true });
});

describe("inference options", () => {
  it("inference options - defaults, and invalid values are rejected with the option's name", () => {
    expect(compileInferenceOptions()).toEqual({ workers: 1, backend: "auto", threads: 1, maxBatchRows: 1024, maxDelayMs: 0, maxQueuedRows: 16384 });
    expect(Object.isFrozen(compileInferenceOptions())).toBe(true);
    expect(() => compileInferenceOptions({ workers: 0 })).toThrow(/options\.workers must be a positive integer/);
    expect(() => compileInferenceOptions({ maxDelayMs: -1 })).toThrow(/options\.maxDelayMs/);
    expect(() => compileInferenceOptions({ maxBatchRows: 512, maxQueuedRows: 100 })).toThrow(/maxQueuedRows \(100\) must be at least options\.maxBatchRows \(512\)/);
    expect(() => compileInferenceOptions({ backend: "cuda" as never })).toThrow(/options\.backend/);
    expect(() => compileInferenceOptions({ maxBatch: 3 } as never)).toThrow(/options\.maxBatch is not an inference option/);
  });
});

describe("inference pool", () => {
  let pool: InferencePool;
  let registry: Registry;

  beforeAll(async () => {
    registry = new Registry();
    pool = await InferencePool.start(dirA, { workers: 2, maxBatchRows: 64, maxDelayMs: 2 }, registry);
  });

  afterAll(async () => {
    await pool?.close();
  });

  it("inference pool - reports the backend and version it runs, also as a metric", async () => {
    expect(pool.backend).toBe("onnxruntime");
    expect(pool.version).toBe("2026-01-01.1");
    expect(await metricValue(registry, "portrait_inference_backend_info", { backend: "onnxruntime", version: "2026-01-01.1" })).toBe(1);
  });

  it("inference pool - batched results equal one-at-a-time scoring, for many concurrent requests of random sizes", async () => {
    const r = seededRandom(5);
    const before = pool.stats();
    const reqs: Req[] = [];
    const pending: Array<Promise<Float32Array>> = [];
    // Waves of concurrent requests, some sent in one tick, some spread over a few ms.
    for (let wave = 0; wave < 6; wave++) {
      for (let i = 0; i < 50; i++) {
        const q = makeReq(1 + Math.floor(r() * 40), 1000 * wave + i);
        reqs.push(q);
        pending.push(pool.score(q.ids, q.dense, q.rows));
        if (wave % 2 === 1 && i % 10 === 9) await new Promise((res) => setTimeout(res, 1));
      }
    }
    const got = await Promise.all(pending);
    let worst = 0;
    for (let i = 0; i < reqs.length; i++) {
      const q = reqs[i]!;
      expect(got[i]!.length).toBe(q.rows);
      worst = Math.max(worst, maxAbsDiff(got[i]!, await directA.score(q.ids, q.dense, q.rows)));
    }
    expect(worst).toBeLessThanOrEqual(TOL);
    const after = pool.stats();
    const batches = after.batches - before.batches;
    // The requests really were batched (about 3 per 64-row batch at 20 rows on average), none above maxBatchRows (every request is <= 40 rows).
    expect(batches).toBeLessThan(reqs.length / 2);
    expect(after.rowsScored - before.rowsScored).toBe(reqs.reduce((s, q) => s + q.rows, 0));
    const hist = await registry.getSingleMetric("portrait_inference_batch_rows")!.get();
    const le64 = hist.values.find((v) => v.labels.le === 64)!.value;
    const all = hist.values.find((v) => v.labels.le === "+Inf")!.value;
    expect(le64).toBe(all);
  });

  it("inference pool - a bad request is rejected as BAD_REQUEST without failing the requests batched with it", async () => {
    const good = makeReq(5, 77);
    const bad = makeReq(3, 78);
    bad.ids[4] = ARCH.vocab;
    const results = await Promise.allSettled([
      pool.score(good.ids, good.dense, good.rows),
      pool.score(bad.ids, bad.dense, bad.rows),
      pool.score(good.ids.subarray(1), good.dense, good.rows),
      pool.score(good.ids, undefined, good.rows),
    ]);
    expect(results[0]!.status).toBe("fulfilled");
    expect(maxAbsDiff((results[0] as PromiseFulfilledResult<Float32Array>).value, await directA.score(good.ids, good.dense, good.rows))).toBeLessThanOrEqual(TOL);
    for (const res of results.slice(1)) {
      expect(res.status).toBe("rejected");
      expect(((res as PromiseRejectedResult).reason as PortraitError).code).toBe(ErrorCode.BAD_REQUEST);
    }
    expect(await metricValue(registry, "portrait_inference_rejected_total", { code: "BAD_REQUEST" })).toBe(3);
    expect(await pool.score(new Int32Array(0), new Float32Array(0), 0)).toEqual(new Float32Array(0));
  });
});

describe("inference pool overload", () => {
  it("inference pool - a burst larger than the queue gets OVERLOADED replies at once for the excess, and the pool recovers", async () => {
    const registry = new Registry();
    const maxQueuedRows = 64;
    const maxBatchRows = 16;
    const pool = await InferencePool.start(dirA, { workers: 1, maxBatchRows, maxQueuedRows, maxDelayMs: 5 }, registry);
    try {
      const burst = Array.from({ length: 40 }, (_, i) => makeReq(8, 500 + i));
      const order: string[] = [];
      const settled = await Promise.allSettled(burst.map((q) => pool.score(q.ids, q.dense, q.rows).then(
        (v) => (order.push("ok"), v),
        (e: unknown) => {
          order.push("rejected");
          throw e;
        },
      )));
      const rejected = settled.filter((s) => s.status === "rejected").map((s) => (s as PromiseRejectedResult).reason as PortraitError);
      const accepted = settled.filter((s) => s.status === "fulfilled").length;
      // At most a queue's worth plus the one batch in flight gets in.
      expect(accepted).toBeGreaterThan(0);
      expect(accepted).toBeLessThanOrEqual((maxQueuedRows + maxBatchRows) / 8);
      expect(rejected.length).toBe(40 - accepted);
      for (const e of rejected) {
        expect(e).toBeInstanceOf(PortraitError);
        expect(e.code).toBe(ErrorCode.OVERLOADED);
        expect(e.retryable).toBe(true);
      }
      // Rejected at once: every rejection settled before the first accepted request was scored.
      expect(order.lastIndexOf("rejected")).toBeLessThan(order.indexOf("ok"));
      expect(await metricValue(registry, "portrait_inference_rejected_total", { code: "OVERLOADED" })).toBe(rejected.length);
      for (let i = 0; i < burst.length; i++) {
        if (settled[i]!.status !== "fulfilled") continue;
        const q = burst[i]!;
        expect(maxAbsDiff((settled[i] as PromiseFulfilledResult<Float32Array>).value, await directA.score(q.ids, q.dense, q.rows))).toBeLessThanOrEqual(TOL);
      }
      // Recovered: a queue's worth of new requests is accepted and scored correctly.
      expect(pool.stats().queuedRows).toBe(0);
      const again = burst.slice(0, maxQueuedRows / 8);
      const out = await Promise.all(again.map((q) => pool.score(q.ids, q.dense, q.rows)));
      for (let i = 0; i < again.length; i++) {
        const q = again[i]!;
        expect(maxAbsDiff(out[i]!, await directA.score(q.ids, q.dense, q.rows))).toBeLessThanOrEqual(TOL);
      }
    } finally {
      await pool.close();
    }
  });
});

describe("inference pool model swap and shutdown", () => {
  it("inference pool - swapping the model version while requests are in flight drops none", async () => {
    const registry = new Registry();
    const pool = await InferencePool.start(dirA, { workers: 2, maxBatchRows: 64, maxDelayMs: 1 }, registry);
    try {
      const r = seededRandom(9);
      type Sent = { q: Req; p: Promise<Float32Array>; phase: "before" | "during" | "after" };
      const sent: Sent[] = [];
      let phase: Sent["phase"] = "before";
      let stop = false;
      // Four clients send requests back to back for the whole test.
      const clients = Array.from({ length: 4 }, async (_, c) => {
        for (let i = 0; !stop; i++) {
          const q = makeReq(1 + Math.floor(r() * 30), 10_000 * (c + 1) + i);
          const p = pool.score(q.ids, q.dense, q.rows);
          sent.push({ q, p, phase });
          await p;
        }
      });
      while (sent.length < 60) await new Promise((res) => setTimeout(res, 1));
      // A burst in the same tick as the swap, so requests are queued and in flight when it starts.
      const burst = Array.from({ length: 30 }, (_, i) => makeReq(20, 90_000 + i));
      for (const q of burst) sent.push({ q, p: pool.score(q.ids, q.dense, q.rows), phase: "before" });
      phase = "during";
      const inFlightAtSwap = pool.stats().queuedRows + pool.stats().inFlightBatches;
      await pool.swapModel(dirB);
      phase = "after";
      expect(pool.version).toBe("2026-01-01.2");
      const mark = sent.length;
      while (sent.length < mark + 60) await new Promise((res) => setTimeout(res, 1));
      stop = true;
      await Promise.all(clients);

      expect(inFlightAtSwap).toBeGreaterThan(0);
      const results = await Promise.allSettled(sent.map((s) => s.p));
      expect(results.filter((x) => x.status === "rejected")).toEqual([]);
      const count = { A: 0, B: 0 };
      for (let i = 0; i < sent.length; i++) {
        const { q, phase: ph } = sent[i]!;
        const got = (results[i] as PromiseFulfilledResult<Float32Array>).value;
        const dA = maxAbsDiff(got, await directA.score(q.ids, q.dense, q.rows));
        const dB = maxAbsDiff(got, await directB.score(q.ids, q.dense, q.rows));
        const which = dA <= TOL ? "A" : dB <= TOL ? "B" : "neither";
        expect(which, `request ${i} (${ph}): max diff ${dA} from version A, ${dB} from B`).not.toBe("neither");
        count[which as "A" | "B"]++;
        // A request is scored by the version current when it was accepted.
        if (ph === "before") expect(which).toBe("A");
        if (ph === "after") expect(which).toBe("B");
      }
      expect(count.A).toBeGreaterThanOrEqual(90);
      expect(count.B).toBeGreaterThanOrEqual(60);
      expect(await metricValue(registry, "portrait_inference_backend_info", { version: "2026-01-01.2" })).toBe(1);
      expect(await metricValue(registry, "portrait_inference_backend_info", { version: "2026-01-01.1" })).toBe(0);

      // A version that does not load is refused, and the current one keeps serving.
      await expect(pool.swapModel(join(root, "deepfm", "missing"))).rejects.toMatchObject({ code: ErrorCode.CONFIG });
      expect(pool.version).toBe("2026-01-01.2");
      const q = makeReq(7, 4242);
      expect(maxAbsDiff(await pool.score(q.ids, q.dense, q.rows), await directB.score(q.ids, q.dense, q.rows))).toBeLessThanOrEqual(TOL);
    } finally {
      await pool.close();
    }
  });

  it("inference pool - close() settles every request accepted before it and refuses later ones as OVERLOADED", async () => {
    const pool = await InferencePool.start(dirA, { workers: 1, maxBatchRows: 32, maxDelayMs: 50 });
    const reqs = Array.from({ length: 100 }, (_, i) => makeReq(1 + (i % 9), 700 + i));
    const accepted = reqs.map((q) => pool.score(q.ids, q.dense, q.rows));
    // The 50 ms deadline has not passed: close() must flush the partial batch, not drop or wait on it.
    const closing = pool.close();
    const late = makeReq(2, 1);
    await expect(pool.score(late.ids, late.dense, late.rows)).rejects.toMatchObject({ code: ErrorCode.OVERLOADED });
    const results = await Promise.allSettled(accepted);
    await closing;
    await pool.close();
    expect(results.filter((x) => x.status === "rejected")).toEqual([]);
    for (let i = 0; i < reqs.length; i++) {
      const q = reqs[i]!;
      expect(maxAbsDiff((results[i] as PromiseFulfilledResult<Float32Array>).value, await directA.score(q.ids, q.dense, q.rows))).toBeLessThanOrEqual(TOL);
    }
    expect(pool.stats()).toMatchObject({ queuedRows: 0, inFlightBatches: 0, accepted: 100, draining: true });
  });

  it("inference pool - start fails with CONFIG for a bad directory, options or backend, and leaves the registry reusable", async () => {
    await expect(InferencePool.start(join(root, "nothing-here"))).rejects.toMatchObject({ code: ErrorCode.CONFIG });
    await expect(InferencePool.start(dirA, { workers: -1 })).rejects.toMatchObject({ code: ErrorCode.CONFIG });
    const registry = new Registry();
    // No libtensorflow GPU build on this machine: the workers report the loader's ConfigError.
    await expect(InferencePool.start(dirA, { backend: "tfjs-node-gpu" }, registry)).rejects.toMatchObject({ code: ErrorCode.CONFIG, message: /tfjs-node-gpu/ });
    const pool = await InferencePool.start(dirA, {}, registry);
    await pool.close();
    expect(registry.getSingleMetric("portrait_inference_batch_rows")).toBeUndefined();
  });
});
