/**
 * The models an engine runs, where they come from, and their hot swap.
 *
 * Where from: a model whose option is "current" follows the model registry
 * on NATS when `modelRegistry` is on (src/models/registry.ts): on first start
 * the bundled versions are pushed and promoted as the seed, and the promoted
 * version is downloaded to `<dataDir>/models-cache/<name>/<version>/`. A model
 * given as a version, or any model when the registry is off, is read from
 * `modelsDir` and never swapped; "off" is off.
 *
 * What runs: the promoted churn and propensity models; the promoted DeepFM; the LSTM the
 * DeepFM was trained with (its manifest's features.schema.lstmVersion), else
 * the promoted LSTM. A ranker and its LSTM pairing therefore switch together:
 * an LSTM promoted before a DeepFM trained on it runs only once that DeepFM is
 * promoted (the CLI says so), and a DeepFM that cannot run with the LSTM the
 * options pin is not run (logged).
 *
 * Hot swap (on every change of the promotions KV bucket, one at a time):
 * 1. download the changed versions and load them beside the running ones:
 *    the DeepFM in the inference pool and its schema in the recs worker, the
 *    LSTM, churn and propensity models in every shard (which keep the old LSTM for the
 *    recommendations still pinned to it);
 * 2. switch: shards run the new LSTM, churn and propensity models from their next message
 *    (a batch or a query runs entirely on the models it started with), and the
 *    recommender pins new requests to the new ranker pairing;
 * 3. once the requests pinned to the old pairing have finished, the old
 *    versions are let go.
 * A version that fails to download or load (MODEL_CORRUPT,
 * MODEL_INCOMPATIBLE, CONFIG) is logged and the running ones stay.
 */
import type { KV, KvEntry, NatsConnection, QueuedIterator } from "nats";
import { join } from "node:path";
import type { EngineConfig } from "./config/engine-options.js";
import type { DashboardModel } from "./dashboard/dashboard.js";
import { ConfigError, ModelIncompatibleError } from "./errors.js";
import type { InferencePool } from "./inference/inference-pool.js";
import { currentVersion, resolveModel, type ModelManifest } from "./models/artifacts.js";
import { ENGINE_MODELS, ModelRegistry, lstmPairing, readLocalManifest, type EngineModelName } from "./models/registry.js";
import type { Logger } from "./obs/logger.js";
import type { EngineMetrics } from "./obs/metrics.js";
import type { RecsHost } from "./recs/recs-host.js";
import type { RankerPairing, Recommender } from "./recs/recommender.js";
import type { ShardPool } from "./shard/shard-pool.js";
import { readRankerWeights } from "./models/ranker-model.js";

export interface ServedModel {
  version: string;
  dir: string;
  manifest: ModelManifest;
  /** "registry" (promoted, followed) or "local" (modelsDir). */
  from: "registry" | "local";
}
export type ServedSet = Partial<Record<EngineModelName, ServedModel>>;

/** The running components a swap reaches. */
export interface SwapTargets {
  shards: ShardPool;
  recs: RecsHost;
  recommender: Recommender;
  /** The inference pool, when one runs. */
  inference(): InferencePool | undefined;
  /** Starts the inference pool with a first DeepFM version (a DeepFM promoted to an engine that ran none). */
  startInference(dir: string): Promise<InferencePool>;
}

type Pin = ReturnType<InferencePool["pin"]>;

/** Each engine model's option: "current", a version, or "off". */
function modelSpecs(cfg: EngineConfig): Record<EngineModelName, string> {
  return { lstm: cfg.lstmModel, churn: cfg.churnModel, propensity: cfg.propensityModel, ranker: cfg.rankerModel, deepfm: cfg.deepfmModel };
}

/** The shards' part of a set (null = off). */
function shardModels(set: ServedSet): { lstmDir: string | null; churnDir: string | null; propensityDir: string | null } {
  return { lstmDir: set.lstm?.dir ?? null, churnDir: set.churn?.dir ?? null, propensityDir: set.propensity?.dir ?? null };
}

/** A feedback ranker version's weights (src/train/train-ranker.ts writes them). */
function readRanker(m: ServedModel): { version: string; weights: Record<string, number> } {
  return { version: m.version, weights: readRankerWeights(m.dir, m.manifest) };
}

export class EngineModels {
  readonly #cfg: EngineConfig;
  readonly #log: Logger;
  readonly #metrics: EngineMetrics;
  /** What the dashboard lists (kept in place: the dashboard holds this array). */
  readonly dashboard: DashboardModel[];
  readonly #registry: ModelRegistry | undefined;
  /** The names that follow the registry. */
  readonly #followed: EngineModelName[];
  #served: ServedSet = {};
  /** The review sentiment model: read from modelsDir at start, not followed in the registry. */
  #sentiment: ServedModel | undefined;
  #targets: SwapTargets | undefined;
  #pin: Pin | undefined;
  #watch: QueuedIterator<KvEntry> | undefined;
  #chain: Promise<void> = Promise.resolve();
  #closed = false;
  #fetchMs = 0;
  /** Swaps applied since start (tests and the bench wait on it). */
  swaps = 0;

  private constructor(cfg: EngineConfig, log: Logger, metrics: EngineMetrics, dashboard: DashboardModel[], registry: ModelRegistry | undefined) {
    this.#cfg = cfg;
    this.#log = log;
    this.#metrics = metrics;
    this.dashboard = dashboard;
    this.#registry = registry;
    this.#followed = registry === undefined ? [] : ENGINE_MODELS.filter((n) => modelSpecs(cfg)[n] === "current");
  }

  /** Opens the registry (when on), seeds it, and resolves the set the engine starts with. */
  static async start(cfg: EngineConfig, log: Logger, metrics: EngineMetrics, dashboard: DashboardModel[], nc: NatsConnection): Promise<EngineModels> {
    const registry = cfg.modelRegistry ? await ModelRegistry.open(nc, { prefix: cfg.subjectPrefix, create: true }) : undefined;
    const m = new EngineModels(cfg, log, metrics, dashboard, registry);
    if (registry !== undefined && m.#followed.length > 0) {
      const seeded = await registry.seed(cfg.modelsDir, m.#followed);
      if (seeded.length > 0) log.info({ models: seeded, objects: registry.bucketNames.objects, promoted: registry.bucketNames.promoted }, "model registry seeded with the bundled models");
    }
    const set = await m.#desired();
    m.#publish(set);
    m.#sentiment = m.#local("sentiment", cfg.sentimentModel);
    if (m.#sentiment !== undefined) log.info({ model: "sentiment", version: m.#sentiment.version, dir: m.#sentiment.dir }, "model loaded");
    return m;
  }

  /** The version directories to start the components with. */
  get dirs(): { lstmDir?: string; churnDir?: string; propensityDir?: string; deepfmDir?: string; sentimentDir?: string } {
    const s = this.#served;
    return {
      ...(this.#sentiment !== undefined ? { sentimentDir: this.#sentiment.dir } : {}),
      ...(s.lstm !== undefined ? { lstmDir: s.lstm.dir } : {}),
      ...(s.churn !== undefined ? { churnDir: s.churn.dir } : {}),
      ...(s.propensity !== undefined ? { propensityDir: s.propensity.dir } : {}),
      ...(s.deepfm !== undefined ? { deepfmDir: s.deepfm.dir } : {}),
    };
  }

  get served(): Readonly<ServedSet> {
    return this.#served;
  }

  /** The ranker pairing the engine starts with (after the inference pool started). */
  initialPairing(pool: InferencePool | undefined): RankerPairing {
    const s = this.#served;
    if (s.deepfm !== undefined && pool !== undefined) this.#pin = pool.pin(s.deepfm.dir);
    return {
      lstmVersion: s.lstm?.version,
      deepfm: this.#pin !== undefined ? { dir: this.#pin.dir, version: this.#pin.version, backend: this.#pin.backend } : undefined,
    };
  }

  /** Starts watching the promotions; each change is reconciled, one at a time. */
  async attach(targets: SwapTargets): Promise<void> {
    this.#targets = targets;
    if (this.#served.ranker !== undefined) await targets.recs.setRanker(readRanker(this.#served.ranker));
    if (this.#registry === undefined || this.#followed.length === 0) return;
    const kv: KV = this.#registry.promotions;
    this.#watch = await kv.watch({ key: ">" });
    const followed = new Set<string>(this.#followed);
    void (async () => {
      for await (const e of this.#watch!) {
        if (!followed.has(e.key)) continue;
        this.reconcile();
      }
    })().catch((err: unknown) => this.#log.error({ err }, "model registry watch failed; models are no longer swapped"));
  }

  /** Brings the running models to what the registry promotes (queued behind a swap in progress). Resolves when done. */
  reconcile(): Promise<void> {
    const run = this.#chain.then(async () => {
      if (this.#closed || this.#targets === undefined) return;
      try {
        const t0 = performance.now();
        const next = await this.#desired();
        this.#fetchMs = performance.now() - t0;
        await this.#swap(next);
      } catch (err) {
        this.#log.error({ err, code: (err as { code?: string }).code }, "model swap failed; the running models stay");
      }
    });
    this.#chain = run;
    return run;
  }

  /** Stops watching and waits for a swap in progress. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#watch?.stop();
    await this.#chain;
    this.#pin?.release();
  }

  /** A model from modelsDir, by its option (the rules of EngineOptions.lstmModel). */
  #local(name: EngineModelName | "sentiment", spec: string): ServedModel | undefined {
    const cfg = this.#cfg;
    if (spec === "off") return undefined;
    if (spec === "current" && currentVersion(cfg.modelsDir, name) === undefined) {
      // The propensity model and the feedback ranker are the shop's own (none is bundled): their absence is expected until the shop trains one.
      const own = name === "propensity" || name === "ranker";
      const how = name === "propensity" ? "portrait train propensity --from-stream" : name === "ranker" ? "portrait train ranker --from-feedback" : `portrait train ${name}`;
      this.#log[own ? "info" : "warn"]({ model: name, modelsDir: cfg.modelsDir }, `no ${name} model found; running without it (train one with \`${how}\`)`);
      return undefined;
    }
    const { dir, manifest } = resolveModel(cfg.modelsDir, spec === "current" ? name : `${name}@${spec}`);
    return { version: manifest.version, dir, manifest, from: "local" };
  }

  async #fromRegistry(name: string, version: string): Promise<ServedModel> {
    const dir = await this.#registry!.fetch(name, version, join(this.#cfg.dataDir, "models-cache"));
    return { version, dir, manifest: readLocalManifest(dir), from: "registry" };
  }

  /** What should run now: see the file comment. */
  async #desired(): Promise<ServedSet> {
    const cfg = this.#cfg;
    const spec = modelSpecs(cfg);
    const follows = (n: EngineModelName) => this.#followed.includes(n);
    const reg = this.#registry;
    const promoted = async (n: EngineModelName) => (follows(n) ? (await reg!.promoted(n))?.version : undefined);
    const out: ServedSet = {};
    const get = async (n: EngineModelName, version?: string): Promise<ServedModel | undefined> => {
      if (!follows(n)) return this.#local(n, spec[n]);
      const v = version ?? (await promoted(n));
      if (v === undefined) return undefined;
      const running = this.#served[n];
      return running?.version === v && running.from === "registry" ? running : this.#fromRegistry(n, v);
    };
    const churn = await get("churn");
    if (churn !== undefined) out.churn = churn;
    const propensity = await get("propensity");
    if (propensity !== undefined) out.propensity = propensity;
    const ranker = await get("ranker");
    if (ranker !== undefined) out.ranker = ranker;
    const deepfm = await get("deepfm");
    const needs = deepfm !== undefined ? lstmPairing(deepfm.manifest) : undefined;
    let lstm: ServedModel | undefined;
    if (needs !== undefined && follows("lstm")) {
      const promotedLstm = await promoted("lstm");
      if (promotedLstm !== needs) {
        this.#log.warn({ deepfm: deepfm!.version, pairedLstm: needs, promotedLstm }, "the promoted DeepFM reads another LSTM than the promoted one: running the pair (promote a DeepFM trained with the promoted LSTM to switch both)");
      }
      lstm = await get("lstm", needs);
    } else {
      lstm = await get("lstm");
    }
    if (lstm !== undefined) out.lstm = lstm;
    if (deepfm !== undefined) {
      if (needs !== undefined && needs !== lstm?.version) {
        const err = new ModelIncompatibleError(`DeepFM ${deepfm.version} reads the state of LSTM ${needs}, but the engine runs ${lstm === undefined ? "no LSTM" : `LSTM ${lstm.version}`}: ` +
          `run --lstm ${needs}, or a DeepFM trained with this LSTM (portrait train deepfm), or --deepfm off`);
        if (!follows("deepfm")) throw new ConfigError(err.message);
        this.#log.error({ code: err.code }, err.message);
      } else {
        out.deepfm = deepfm;
      }
    }
    return out;
  }

  /** Records `set` as running: metrics, dashboard, logs. */
  #publish(set: ServedSet): void {
    for (const [name, m] of Object.entries(this.#served)) {
      if (set[name as EngineModelName]?.version !== m.version) this.#metrics.modelInfo.remove({ model: name, version: m.version });
    }
    this.#served = set;
    this.dashboard.length = 0;
    for (const name of ENGINE_MODELS) {
      const m = set[name];
      if (m === undefined) continue;
      this.dashboard.push({ name, version: m.version, metrics: (m.manifest.metrics ?? []) as DashboardModel["metrics"] });
      this.#metrics.modelInfo.set({ model: name, version: m.version }, 1);
      this.#log.info({ model: name, version: m.version, dir: m.dir, from: m.from }, "model loaded");
    }
  }

  async #swap(next: ServedSet): Promise<void> {
    const cur = this.#served;
    const changed = (n: EngineModelName) => cur[n]?.version !== next[n]?.version || cur[n]?.dir !== next[n]?.dir;
    if (!ENGINE_MODELS.some(changed)) return;
    const t = this.#targets!;
    const t0 = performance.now();
    const oldPairing = t.recommender.pairing;
    const oldDeepfm = oldPairing.deepfm?.version;
    const oldLstm = oldPairing.lstmVersion;
    // 1. Load the new versions beside the running ones.
    let pool = t.inference();
    let pin: Pin | undefined;
    const steps: Record<string, number> = { fetchMs: Math.round(this.#fetchMs) };
    const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
      const s0 = performance.now();
      try {
        return await f();
      } finally {
        steps[name] = Math.round(performance.now() - s0);
      }
    };
    if (next.deepfm !== undefined) {
      if (changed("deepfm")) {
        if (pool === undefined) pool = await timed("inferenceMs", () => t.startInference(next.deepfm!.dir));
        else await timed("inferenceMs", () => pool!.swapModel(next.deepfm!.dir));
        await timed("recsMs", () => t.recs.setDeepFm(next.deepfm!.dir, oldDeepfm !== undefined ? [oldDeepfm] : []));
      }
      pin = pool!.pin(next.deepfm.dir);
    }
    // 2. Switch: shards from their next message (keeping the old LSTM for pinned requests), then the ranker pairing.
    const keep = oldLstm !== undefined && oldLstm !== next.lstm?.version ? [oldLstm] : [];
    await timed("shardsMs", () => t.shards.setModels({ ...shardModels(next), keepLstm: keep }));
    const switchedMs = performance.now() - t0;
    const pairing: RankerPairing = {
      lstmVersion: next.lstm?.version,
      deepfm: pin !== undefined ? { dir: pin.dir, version: pin.version, backend: pin.backend } : undefined,
    };
    await timed("drainMs", () => t.recommender.setPairing(pairing, pool));
    // 3. The old pairing's requests have finished: let its versions go.
    this.#pin?.release();
    this.#pin = pin;
    if (keep.length > 0) await t.shards.setModels({ ...shardModels(next), keepLstm: [] });
    if (changed("deepfm")) await t.recs.setDeepFm(next.deepfm?.dir ?? null, []);
    if (changed("ranker")) await timed("rankerMs", () => t.recs.setRanker(next.ranker !== undefined ? readRanker(next.ranker) : null));
    const before = Object.fromEntries(ENGINE_MODELS.map((n) => [n, cur[n]?.version ?? "off"]));
    this.#publish(next);
    this.swaps++;
    this.#log.info({ before, after: Object.fromEntries(ENGINE_MODELS.map((n) => [n, next[n]?.version ?? "off"])),
      loadMs: Math.round(switchedMs), totalMs: Math.round(performance.now() - t0), ...steps }, "models hot-swapped");
  }
}
