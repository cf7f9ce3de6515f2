/**
 * DeepFM inference pool: rows/s by batch size through the pool next to the
 * scorer called directly in this thread (the raw limit of one core), and the
 * lift from micro-batching when many clients each score 200 candidates.
 *
 *   npx tsx bench/inference.ts [--cell-ms 1500] [--clients 1,8,32] [--no-append]
 *
 * Model: production-like DeepFM, 16 fields x 8 dims, dense 32, MLP 64-32,
 * vocab 200k, random weights, onnxruntime on 1 intra-op thread.
 *
 * 1. Batch sizes 1, 64, 256, 1024, 4096. "direct": the scorer in this thread,
 *    one call after another (best of 3 windows of cell-ms/3). "pool, W
 *    workers": requests of exactly that many rows with maxBatchRows = the
 *    batch size (so every batch is one request), maxDelayMs 0, and 2 x W
 *    requests outstanding so a worker never waits for the main thread; rows/s
 *    over one window of cell-ms.
 * 2. Batching lift: N clients, each sending 200-row requests back to back
 *    (a recommendation scoring 200 candidates), one worker, for cell-ms:
 *    "no batching" = maxBatchRows 200 (each request is its own batch);
 *    "micro-batching" = maxBatchRows 4096, maxDelayMs 1; "greedy" =
 *    maxBatchRows 4096, maxDelayMs 0 (batches form only while the worker is
 *    busy). Requests/s and latency percentiles (hdr-histogram-js).
 *
 * Each cell is bounded by cell-ms and by MAX_CALLS calls.
 */
import * as hdr from "hdr-histogram-js";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { Piscina } from "piscina";
import { InferencePool } from "../src/inference/inference-pool.js";
import { writeManifest, type ModelManifest } from "../src/models/artifacts.js";
import { loadDeepFmScorer } from "../src/models/deepfm-scorer.js";
import { deepFmWeightShapes, type DeepFmArchitecture } from "../src/models/deepfm-spec.js";
import { saveDeepFmWeights } from "../src/models/deepfm-weights.js";
import { appendResults, printTable } from "./report.js";
import { seededRandom } from "../src/models/seeded-random.js";

const argv = process.argv.slice(2);
const arg = (name: string, dflt: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] ?? dflt : dflt);
const cellMs = Number(arg("--cell-ms", "1500")) || 1500;
const CLIENTS = arg("--clients", "1,8,32").split(",").map(Number);
const MAX_CALLS = 200_000;
const BATCHES = [1, 64, 256, 1024, 4096];
const CANDIDATES = 200;
const ARCH: DeepFmArchitecture = { fields: 16, vocab: 200_000, embDim: 8, denseDim: 32, hidden: [64, 32] };
const command = `npx tsx bench/inference.ts --cell-ms ${cellMs} --clients ${CLIENTS.join(",")}`;

const r = seededRandom(1);
const uniform = (n: number, scale: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
function rows(n: number): { ids: Int32Array; dense: Float32Array } {
  return { ids: Int32Array.from({ length: n * ARCH.fields }, () => Math.floor(r() * ARCH.vocab)), dense: uniform(n * ARCH.denseDim, 1) };
}

const fmt = (x: number) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x.toFixed(0));
const ms = (us: number) => (us / 1000).toFixed(2);

/** Calls/s of `fn` one after another: a warm-up call, then the best of 3 windows of cellMs/3. */
async function sequential(fn: () => Promise<unknown>): Promise<number> {
  await fn();
  let best = 0;
  for (let w = 0; w < 3; w++) {
    const t0 = performance.now();
    let n = 0;
    do {
      await fn();
      n++;
    } while (n < MAX_CALLS / 3 && performance.now() - t0 < cellMs / 3);
    best = Math.max(best, (n * 1000) / (performance.now() - t0));
  }
  return best;
}

/**
 * `clients` loops, each awaiting `fn` and calling it again, for cellMs (after
 * a warm-up of cellMs/5): calls/s and each call's latency in microseconds.
 */
async function closedLoop(clients: number, fn: () => Promise<unknown>): Promise<{ perS: number; lat: hdr.Histogram }> {
  const lat = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
  let phase: "warm" | "measure" | "stop" = "warm";
  let calls = 0;
  const loops = Array.from({ length: clients }, async () => {
    while (phase !== "stop") {
      const t0 = performance.now();
      await fn();
      if (phase === "measure") {
        lat.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)));
        if (++calls >= MAX_CALLS) phase = "stop";
      }
    }
  });
  await new Promise((res) => setTimeout(res, cellMs / 5));
  phase = "measure";
  const t0 = performance.now();
  await new Promise<void>((res) => {
    const check = setInterval(() => {
      if (phase === "stop" || performance.now() - t0 >= cellMs) {
        clearInterval(check);
        res();
      }
    }, 5);
  });
  const seconds = (performance.now() - t0) / 1000;
  const measured = calls;
  phase = "stop";
  await Promise.all(loops);
  return { perS: measured / seconds, lat };
}

function manifest(version: string): ModelManifest {
  return {
    name: "deepfm", version, createdAt: new Date().toISOString(), portraitVersion: "bench", format: "deepfm-f32",
    architecture: { ...ARCH }, features: {}, training: { data: ["random"], split: "none", seed: 1 }, metrics: [],
    files: { weights: "weights.bin", onnx: "model.onnx" },
  };
}

const root = mkdtempSync(join(tmpdir(), "portrait-bench-inference-"));
try {
  const weights: Record<string, Float32Array> = {};
  for (const [name, shape] of deepFmWeightShapes(ARCH)) weights[name] = uniform(shape.reduce((x, d) => x * d, 1), 0.1);
  const dir = writeManifest(root, manifest("2026-01-01.1"), false);
  saveDeepFmWeights(dir, ARCH, weights);
  const inputs = new Map(BATCHES.map((b) => [b, rows(b)]));
  const loadBefore = loadavg().map((x) => x.toFixed(2)).join(" ");

  // 1. Rows/s by batch size.
  const direct = new Map<number, number>();
  const scorer = await loadDeepFmScorer(dir, { backend: "onnxruntime", threads: 1 });
  for (const b of BATCHES) {
    const { ids, dense } = inputs.get(b)!;
    direct.set(b, b * (await sequential(() => scorer.score(ids, dense, b))));
  }
  await scorer.close();
  // The handoff limit: a piscina round trip of an empty task, one at a time.
  const noop = join(root, "noop.mjs");
  writeFileSync(noop, "export default (x) => x;\n");
  const bare = new Piscina({ filename: noop, minThreads: 1, maxThreads: 1 });
  const roundTripUs = 1e6 / (await sequential(() => bare.run(1)));
  await bare.close();
  const WORKERS = [1, 2];
  const pooled = new Map<string, number>();
  let backend = "";
  for (const w of WORKERS) {
    for (const b of BATCHES) {
      const pool = await InferencePool.start(dir, { workers: w, backend: "onnxruntime", maxBatchRows: b, maxDelayMs: 0, maxQueuedRows: Math.max(b * 4 * w, 16) });
      backend = pool.backend;
      const { ids, dense } = inputs.get(b)!;
      const { perS } = await closedLoop(2 * w, () => pool.score(ids, dense, b));
      pooled.set(`${w}/${b}`, b * perS);
      await pool.close();
    }
  }
  const header1 = ["batch rows", "direct rows/s (1 thread)", ...WORKERS.map((w) => `pool ${w} worker${w > 1 ? "s" : ""} rows/s`), "pool 1 worker / direct"];
  const rows1 = BATCHES.map((b) => [
    String(b), fmt(direct.get(b)!), ...WORKERS.map((w) => fmt(pooled.get(`${w}/${b}`)!)), (pooled.get(`1/${b}`)! / direct.get(b)!).toFixed(2),
  ]);
  const title1 = "DeepFM rows/s by batch size: scorer in this thread vs through the inference pool";
  printTable(title1, header1, rows1);
  const notes1 = [
    `Model: 16 fields x 8, dense 32, MLP 64-32, vocab 200k; backend ${backend}, 1 intra-op thread per scorer. Pool: maxBatchRows = batch, maxDelayMs 0, 2 requests outstanding per worker.`,
    "The direct column is the raw limit of one core; with 2 workers the pool shares this 2-core machine with its own main thread (and with other users).",
    `Handoff limit in this run: a piscina round trip of an empty task takes ${roundTripUs.toFixed(0)} µs (one at a time).`,
  ];

  // 2. Batching lift for 200-candidate requests.
  const configs: Array<[string, { maxBatchRows: number; maxDelayMs: number }]> = [
    ["no batching (maxBatchRows 200)", { maxBatchRows: CANDIDATES, maxDelayMs: 0 }],
    ["micro-batching (4096, 1 ms)", { maxBatchRows: 4096, maxDelayMs: 1 }],
    ["greedy (4096, 0 ms)", { maxBatchRows: 4096, maxDelayMs: 0 }],
  ];
  const req = rows(CANDIDATES);
  const header2 = ["clients", "mode", "requests/s", "rows/s", "mean batch rows", "p50 ms", "p99 ms", "lift"];
  const rows2: string[][] = [];
  for (const n of CLIENTS) {
    let base = 0;
    for (const [label, cfg] of configs) {
      const pool = await InferencePool.start(dir, { workers: 1, backend: "onnxruntime", maxQueuedRows: 65_536, ...cfg });
      const before = pool.stats();
      const { perS, lat } = await closedLoop(n, () => pool.score(req.ids, req.dense, CANDIDATES));
      const after = pool.stats();
      await pool.close();
      if (base === 0) base = perS;
      const meanBatch = (after.rowsScored - before.rowsScored) / Math.max(1, after.batches - before.batches);
      rows2.push([
        String(n), label, fmt(perS), fmt(perS * CANDIDATES), meanBatch.toFixed(0),
        ms(lat.getValueAtPercentile(50)), ms(lat.getValueAtPercentile(99)), `${(perS / base).toFixed(2)}x`,
      ]);
    }
  }
  const title2 = `DeepFM batching lift: N clients x ${CANDIDATES}-row requests, 1 worker`;
  printTable(title2, header2, rows2);
  const notes2 = [
    `Closed loop: each client sends its next request when the previous one returns; ${cellMs} ms per cell after a ${cellMs / 5} ms warm-up. Lift = requests/s over "no batching" with the same clients.`,
    `Raw limit in this run (direct, 1 thread): ${fmt(direct.get(256)!)} rows/s at batch 256, ${fmt(direct.get(4096)!)} at 4096.`,
  ];
  const load = `Load average (1, 5, 15 min) before the run: ${loadBefore}; after: ${loadavg().map((x) => x.toFixed(2)).join(" ")} (2 cores: above 2, other processes compete for the CPU).`;
  notes1.push(load);
  notes2.push(load);
  console.log(`\n${[...notes1, ...notes2.slice(0, -1)].map((n) => `- ${n}`).join("\n")}`);
  if (!argv.includes("--no-append")) {
    appendResults(title1, command, header1, rows1, notes1);
    appendResults(title2, command, header2, rows2, notes2);
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
