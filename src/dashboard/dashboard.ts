/**
 * The live dashboard the engine serves on its HTTP port: an overview page
 * (ingest rate, lag, freshness and query latencies, dead letters, models,
 * recommendation click-through) and a user page (profile, predictions with
 * their evidence, recommendations with reasons, timeline), polled by the
 * browser once a second.
 *
 * Routes (GET): `/` the page (static files in ./public), `/assets/uplot.*`
 * the chart library, `/api/overview` the figures as JSON, `/api/users/<id>`
 * a user's profile and recommendations as JSON (the engine's own
 * request-reply answers, so the page shows exactly what clients get).
 *
 * Figures come from the engine's Prometheus metrics, sampled every
 * `sampleEveryMs` into a bounded ring (`keepSamples`): rates and quantiles
 * of a sample are over the interval since the one before.
 */
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Counter, Gauge, Histogram } from "prom-client";
import { PortraitError, errorStatus } from "../errors.js";
import type { EngineMetrics } from "../obs/metrics.js";

/** A model the engine runs, with the metrics its manifest records. */
export interface DashboardModel {
  name: string;
  version: string;
  /** The manifest's metrics: a task and its values (AUC, logloss, ...). */
  metrics: { task: string; values: Record<string, number> }[];
}

/** How the dashboard asks the engine about a user (the engine's request-reply API). */
export interface UserLookup {
  profile(userId: string): Promise<unknown>;
  recommend(userId: string, k: number): Promise<unknown>;
}

export interface DashboardSources {
  metrics: EngineMetrics;
  version: string;
  isReady: () => boolean;
  models: () => DashboardModel[];
  /** The DeepFM inference backend, when one runs. */
  backend: () => string | undefined;
  /** Set once the engine answers queries. */
  users?: UserLookup | undefined;
}

export interface DashboardOptions {
  /** Sampling interval, ms. Default 1000. */
  sampleEveryMs?: number;
  /** Samples kept for the charts. Default 300 (5 minutes at 1 s). */
  keepSamples?: number;
}

/** One sample of the series the overview charts draw. */
export interface Sample {
  /** Wall clock, Unix ms. */
  t: number;
  /** Events applied per second over the interval. */
  ingestPerS: number;
  /** Messages not yet delivered, summed over partitions. */
  lag: number;
  /** Quantiles over the interval, ms (null: nothing observed). */
  freshnessP50Ms: number | null;
  freshnessP99Ms: number | null;
  profileP50Ms: number | null;
  profileP99Ms: number | null;
  recommendP50Ms: number | null;
  recommendP99Ms: number | null;
}

type Buckets = Map<number, number>;

const PUBLIC_DIR = join(dirname(fileURLToPath(import.meta.url)), "public");
const UPLOT_DIR = dirname(createRequire(import.meta.url).resolve("uplot/dist/uPlot.iife.min.js"));
const STATIC: Readonly<Record<string, readonly [string, string]>> = Object.freeze({
  "/": [join(PUBLIC_DIR, "index.html"), "text/html; charset=utf-8"],
  "/app.js": [join(PUBLIC_DIR, "app.js"), "text/javascript; charset=utf-8"],
  "/style.css": [join(PUBLIC_DIR, "style.css"), "text/css; charset=utf-8"],
  "/assets/uplot.js": [join(UPLOT_DIR, "uPlot.iife.min.js"), "text/javascript; charset=utf-8"],
  "/assets/uplot.css": [join(UPLOT_DIR, "uPlot.min.css"), "text/css; charset=utf-8"],
});

/** Cumulative bucket counts (le -> count) of a histogram, for the values matching `labels`. */
async function buckets(h: Histogram, labels: Record<string, string> = {}): Promise<Buckets> {
  const out: Buckets = new Map();
  for (const v of (await h.get()).values) {
    if (!v.metricName?.endsWith("_bucket")) continue;
    if (Object.entries(labels).some(([k, x]) => v.labels[k] !== x)) continue;
    const le = v.labels.le === "+Inf" ? Infinity : Number(v.labels.le);
    out.set(le, (out.get(le) ?? 0) + v.value);
  }
  return out;
}

/**
 * The q-quantile of the observations between two cumulative snapshots, in ms,
 * interpolated linearly inside its bucket (as Prometheus' histogram_quantile);
 * null when nothing was observed. An observation past the last finite bound
 * reads as that bound.
 */
export function quantileMs(now: Buckets, before: Buckets | undefined, q: number): number | null {
  const les = [...now.keys()].sort((a, b) => a - b);
  const count = (le: number) => (now.get(le) ?? 0) - (before?.get(le) ?? 0);
  const total = les.length > 0 ? count(les[les.length - 1]!) : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const le of les) {
    const c = count(le);
    if (c >= rank) {
      if (le === Infinity) return prevLe * 1000;
      const inBucket = c - prevCount;
      const frac = inBucket > 0 ? (rank - prevCount) / inBucket : 1;
      return (prevLe + (le - prevLe) * frac) * 1000;
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe * 1000;
}

async function total(m: Counter | Gauge): Promise<number> {
  return (await m.get()).values.reduce((a, v) => a + v.value, 0);
}

async function byLabel(m: Counter | Gauge, label: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await m.get()).values) {
    const k = String(v.labels[label]);
    out[k] = (out[k] ?? 0) + v.value;
  }
  return out;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" }).end(JSON.stringify(body));
}

export class Dashboard {
  readonly #src: DashboardSources;
  readonly #everyMs: number;
  readonly #keep: number;
  readonly #samples: Sample[] = [];
  readonly #startedMs = Date.now();
  #timer: NodeJS.Timeout | undefined;
  #prev: { t: number; applied: number; freshness: Buckets; profile: Buckets; recommend: Buckets } | undefined;
  #sampling: Promise<void> | undefined;

  constructor(src: DashboardSources, o: DashboardOptions = {}) {
    this.#src = src;
    this.#everyMs = o.sampleEveryMs ?? 1000;
    this.#keep = o.keepSamples ?? 300;
    if (!(Number.isInteger(this.#everyMs) && this.#everyMs > 0)) throw new RangeError("options.sampleEveryMs must be a positive integer");
    if (!(Number.isInteger(this.#keep) && this.#keep > 0)) throw new RangeError("options.keepSamples must be a positive integer");
  }

  /** Where the engine plugs in its request-reply API once it answers queries. */
  set users(lookup: UserLookup | undefined) {
    this.#src.users = lookup;
  }

  start(): void {
    if (this.#timer !== undefined) return;
    void this.#sample();
    this.#timer = setInterval(() => void this.#sample(), this.#everyMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #sample(): Promise<void> {
    // One at a time: a slow scrape is not stacked up behind itself.
    this.#sampling ??= this.#takeSample().catch(() => undefined).finally(() => (this.#sampling = undefined));
    return this.#sampling;
  }

  async #takeSample(): Promise<void> {
    const m = this.#src.metrics;
    const t = Date.now();
    const [applied, lag, freshness, profile, recommend] = await Promise.all([
      total(m.eventsApplied), total(m.lag), buckets(m.freshnessSeconds),
      buckets(m.requestSeconds, { endpoint: "profile.get" }), buckets(m.requestSeconds, { endpoint: "recommend" }),
    ]);
    const p = this.#prev;
    if (p !== undefined) {
      const s = Math.max(0.001, (t - p.t) / 1000);
      this.#samples.push({
        t, ingestPerS: (applied - p.applied) / s, lag,
        freshnessP50Ms: quantileMs(freshness, p.freshness, 0.5), freshnessP99Ms: quantileMs(freshness, p.freshness, 0.99),
        profileP50Ms: quantileMs(profile, p.profile, 0.5), profileP99Ms: quantileMs(profile, p.profile, 0.99),
        recommendP50Ms: quantileMs(recommend, p.recommend, 0.5), recommendP99Ms: quantileMs(recommend, p.recommend, 0.99),
      });
      if (this.#samples.length > this.#keep) this.#samples.splice(0, this.#samples.length - this.#keep);
    }
    this.#prev = { t, applied, freshness, profile, recommend };
  }

  /** The overview page's figures. */
  async overview(): Promise<Record<string, unknown>> {
    const m = this.#src.metrics;
    const [applied, skipped, lagByPartition, deadLetters, impressions, clicks, freshness, profile, recommend, requests] = await Promise.all([
      total(m.eventsApplied), total(m.eventsSkipped), byLabel(m.lag, "partition"), byLabel(m.deadLetters, "reason"),
      byLabel(m.recImpressions, "model_version"), byLabel(m.recClicks, "model_version"), buckets(m.freshnessSeconds),
      buckets(m.requestSeconds, { endpoint: "profile.get" }), buckets(m.requestSeconds, { endpoint: "recommend" }),
      byLabel(m.requests, "code"),
    ]);
    const ctr = Object.entries(impressions).map(([modelVersion, n]) => ({
      modelVersion, impressions: n, clicks: clicks[modelVersion] ?? 0, ctr: n > 0 ? (clicks[modelVersion] ?? 0) / n : null,
    }));
    const latency = (b: Buckets) => ({ p50Ms: quantileMs(b, undefined, 0.5), p99Ms: quantileMs(b, undefined, 0.99), count: b.get(Infinity) ?? 0 });
    return {
      version: this.#src.version,
      ready: this.#src.isReady(),
      startedMs: this.#startedMs,
      nowMs: Date.now(),
      eventTimeWatermarkMs: m.watermarkMs,
      eventsApplied: applied,
      eventsSkipped: skipped,
      lagByPartition: Object.entries(lagByPartition).map(([partition, lag]) => ({ partition: Number(partition), lag })).sort((a, b) => a.partition - b.partition),
      deadLetters: Object.entries(deadLetters).map(([reason, count]) => ({ reason, count })).sort((a, b) => b.count - a.count),
      requests,
      latency: { freshness: latency(freshness), profile: latency(profile), recommend: latency(recommend) },
      models: this.#src.models(),
      backend: this.#src.backend() ?? null,
      ctr,
      // Audiences are not part of this version of the engine.
      audiences: null,
      series: this.#samples,
    };
  }

  /** Serves a dashboard route; false when `req` is not one of them. */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const path = (req.url ?? "/").split("?")[0]!;
    const file = STATIC[path === "/index.html" ? "/" : path];
    if (file !== undefined) {
      res.writeHead(200, { "content-type": file[1] }).end(readFileSync(file[0]));
      return true;
    }
    if (path === "/api/overview") {
      this.overview().then((o) => sendJson(res, 200, o), (err: Error) => sendJson(res, 500, { code: "INTERNAL", message: err.message }));
      return true;
    }
    if (path.startsWith("/api/users/")) {
      const userId = decodeURIComponent(path.slice("/api/users/".length));
      void this.#user(userId, res);
      return true;
    }
    return false;
  }

  async #user(userId: string, res: ServerResponse): Promise<void> {
    const users = this.#src.users;
    if (users === undefined) return sendJson(res, 503, { code: "NOT_READY", message: "the engine does not answer queries yet" });
    try {
      const [profile, recommendations] = await Promise.all([users.profile(userId), users.recommend(userId, 10).catch((err: unknown) => ({ error: errorBody(err) }))]);
      sendJson(res, 200, { profile, recommendations, models: this.#src.models() });
    } catch (err) {
      sendJson(res, err instanceof PortraitError ? errorStatus[err.code] : 500, errorBody(err));
    }
  }
}

function errorBody(err: unknown): { code: string; message: string } {
  return err instanceof PortraitError ? { code: err.code, message: err.message } : { code: "INTERNAL", message: String(err) };
}
