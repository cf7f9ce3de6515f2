/**
 * Prometheus metrics of the inference pool, registered on the registry it is
 * given (the engine's, so they are served with the others at GET /metrics).
 * One pool per registry: prom-client refuses a second metric of a name.
 *
 * - `portrait_inference_backend_info{backend,version}`: 1 for the model version
 *   new requests go to, and the backend it runs on (onnxruntime, tfjs-node-gpu, wasm).
 * - `portrait_inference_batch_rows`: rows per batch handed to a worker.
 * - `portrait_inference_queue_seconds`: per request, from `score()` to its batch being handed to a worker.
 * - `portrait_inference_run_seconds`: per batch, the scorer's run time inside the worker.
 * - `portrait_inference_request_seconds`: per request, from `score()` to its result (queue + transfer + run).
 * - `portrait_inference_rejected_total{code}`: requests rejected, by error code
 *   (OVERLOADED when the queue is full or the pool drains, BAD_REQUEST, WORKER_EXITED, ...).
 * - `portrait_inference_queued_rows`: rows waiting for a worker, read at scrape time.
 * - `portrait_inference_worker_errors_total`: workers that failed with no batch in
 *   flight (a failure with a batch in flight rejects it as WORKER_EXITED instead).
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

const LATENCY_BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1];
const ROW_BUCKETS = [1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];

export class InferenceMetrics {
  /** Rows waiting for a worker; set by the pool. */
  queuedRows: () => number = () => 0;
  readonly backendInfo: Gauge<"backend" | "version">;
  readonly batchRows: Histogram;
  readonly queueSeconds: Histogram;
  readonly runSeconds: Histogram;
  readonly requestSeconds: Histogram;
  readonly rejected: Counter<"code">;
  readonly queued: Gauge;
  readonly workerErrors: Counter;

  constructor(registry: Registry) {
    this.#registry = registry;
    const registers = [registry];
    this.backendInfo = new Gauge({
      name: "portrait_inference_backend_info",
      help: "1 for the DeepFM version that new requests go to, labelled with the backend it runs on.",
      labelNames: ["backend", "version"] as const,
      registers,
    });
    this.batchRows = new Histogram({ name: "portrait_inference_batch_rows", help: "Rows per batch handed to an inference worker.", buckets: ROW_BUCKETS, registers });
    this.queueSeconds = new Histogram({
      name: "portrait_inference_queue_seconds",
      help: "Time from a scoring request to its batch being handed to a worker.",
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    this.runSeconds = new Histogram({
      name: "portrait_inference_run_seconds",
      help: "Time the scorer ran on one batch, inside the worker.",
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    this.requestSeconds = new Histogram({
      name: "portrait_inference_request_seconds",
      help: "Time from a scoring request to its result (queue, transfer and run).",
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    this.rejected = new Counter({
      name: "portrait_inference_rejected_total",
      help: "Scoring requests rejected, by error code.",
      labelNames: ["code"] as const,
      registers,
    });
    this.queued = new Gauge({
      name: "portrait_inference_queued_rows",
      help: "Rows waiting for an inference worker.",
      registers,
      collect: () => this.queued.set(this.queuedRows()),
    });
    this.workerErrors = new Counter({
      name: "portrait_inference_worker_errors_total",
      help: "Inference worker threads that failed outside a batch (piscina replaces them).",
      registers,
    });
  }

  readonly #registry: Registry;

  /** Removes these metrics from the registry (a pool that failed to start or closed), so another pool can register them. */
  unregister(): void {
    for (const m of [this.backendInfo, this.batchRows, this.queueSeconds, this.runSeconds, this.requestSeconds, this.rejected, this.queued, this.workerErrors]) {
      this.#registry.removeSingleMetric((m as unknown as { name: string }).name);
    }
  }

  /** Points backend_info at the version new requests go to. */
  setModel(backend: string, version: string): void {
    this.backendInfo.reset();
    this.backendInfo.set({ backend, version }, 1);
  }
}
