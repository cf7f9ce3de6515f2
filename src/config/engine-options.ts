/**
 * Engine options: what a user passes (CLI flags map one to one), every field
 * with its unit and default. ENGINE_DEFAULTS holds the default of each one and
 * is the list of them: a key it lacks is an unknown option, and an error.
 * `compileEngineOptions` validates them once into a frozen config, compiling
 * the nested profile, recs and inference options too; the engine hands those
 * compiled parts down to the shards, the recs worker and the inference pool.
 */
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import { PROFILE_DEFAULTS, compileProfileOptions, type CompiledProfileOptions, type ProfileOptions } from "../actors/profile-options.js";
import { NATS_DEFAULTS, type NatsOptions } from "../bus/connect.js";
import { isValidPrefix } from "../bus/subjects.js";
import { ConfigError } from "../errors.js";
import { BUNDLED_MODELS_DIR } from "../models/artifacts.js";
import { DEFAULT_INFERENCE_OPTIONS, compileInferenceOptions, type CompiledInferenceOptions, type InferenceOptions } from "../inference/inference-options.js";
import { RECS_DEFAULTS, compileRecsOptions, type CompiledRecsOptions, type RecsOptions } from "../recs/recs-options.js";
import { SEMI_SPACE_DEFAULT_BYTES, usableMemoryBytes, workerHeapBounds, workerHeapFor } from "../obs/heap.js";
import { LOG_LEVELS } from "../obs/logger.js";
import { DEFAULT_MAP_SIZE_BYTES } from "../store/profile-store.js";

const DAY_MS = 86_400_000;

/** The NATS URL, credentials and TLS files are NatsOptions (src/bus/connect.ts), shared with the client. */
export interface EngineOptions extends NatsOptions {
  /**
   * Start an embedded nats-server (JetStream, store in `<dataDir>/nats`) on the
   * URL's loopback port: "auto" when nothing answers there, "never", or
   * "always". Default "auto".
   */
  embeddedNats?: "auto" | "never" | "always";
  /** Directory of the engine's state (LMDB, embedded NATS store). Default "./.portrait". */
  dataDir?: string;
  /** Partition count P; fixed for a deployment (the data dir remembers it). Default 16. */
  partitions?: number;
  /** Shard worker threads. Default: cores - 1, at least 2 (measured: 2 beat 1 on a 2-core machine, bench/RESULTS.md). */
  workers?: number;
  /** Prefix of every subject and stream name. Default "portrait". */
  subjectPrefix?: string;
  /** Most messages in one batch handed to a shard, messages. Default 1024. */
  maxBatchMessages?: number;
  /** Most unacknowledged messages per partition consumer, messages (the ingest back-pressure bound). Default 8192. */
  maxAckPending?: number;
  /**
   * Most events handed to one shard worker in batches it has not answered
   * yet; further batches wait on the main thread, in order. A query waits in
   * its shard behind at most these events (plus one batch), so this bounds
   * how long ingest can hold queries up. Default 2048 (two full batches).
   */
  maxShardQueueEvents?: number;
  /** Redelivery timeout of an unacknowledged message, ms. Default 60000. */
  ackWaitMs?: number;
  /** JetStream duplicate window for Nats-Msg-Id, ms. Default 600000 (10 minutes). */
  duplicateWindowMs?: number;
  /** Retention of the event stream, ms (0 = forever). Default 604800000 (7 days). */
  eventRetentionMs?: number;
  /** Retention of the dead-letter stream, ms. Default 1209600000 (14 days). */
  dlqRetentionMs?: number;
  /**
   * Share of recommend replies that explore (README "The feedback loop"), in
   * [0, 0.5]: a random order of the exploration pool instead of the ranker's
   * top k. Default 0 (off): every reply is the ranker's top k, propensity 1.
   */
  explorationShare?: number;
  /** The exploration pool: the ranker's first N candidates (at least k are used); also the size of each candidate source's arm. Default 20. */
  explorationPool?: number;
  /**
   * Exploration over the candidate sources (README "The feedback loop"), in
   * [0, 1]: the share of the exploring replies that draw from one candidate
   * source's first explorationPool candidates (by its own score; the source
   * chosen uniformly among those that found at least k) instead of the
   * ranker's pool. Propensities are computed over the mixture
   * (src/recs/exploration.ts). Default 0 (the ranker's pool only).
   */
  explorationSourceShare?: number;
  /** How long after a reply its logged feedback (rec_propensity set) is accepted, ms. Default 3600000 (1 hour). */
  feedbackWindowMs?: number;
  /** Most served replies kept for judging logged feedback (the oldest are dropped first; each takes about 4 KB with the default pool): size it to the replies served in feedbackWindowMs. Default 20000. */
  feedbackMaxRequests?: number;
  /**
   * Which served replies are kept for judging logged feedback: "auto" keeps
   * them while exploration is on (explorationShare > 0) or while logged
   * feedback arrived within the last feedbackWindowMs, and none otherwise (an
   * engine whose clients log no feedback spends no memory on it; the first
   * logged feedback after a quiet window is then UNKNOWN_REC_REQUEST);
   * "always" keeps every reply. Default "auto".
   */
  feedbackKeep?: "auto" | "always";
  /** Retention of the training log stream <PREFIX>_FEEDBACK, ms. Default 604800000 (7 days). */
  feedbackRetentionMs?: number;
  /** Most bytes the training log stream keeps (the oldest records go first). Default 268435456 (256 MiB). */
  feedbackMaxBytes?: number;
  /**
   * Retention of the tombstone stream (one Tombstone per forget, with the raw
   * user id), ms; 0 = forever (the default). When set it must be at least
   * eventRetentionMs (and eventRetentionMs must not be 0): a downstream
   * system that re-reads the event stream must still find the tombstones of
   * the users whose events it reads.
   */
  tombstoneRetentionMs?: number;
  /** Largest accepted event, bytes. Default 65536. */
  maxEventBytes?: number;
  /** How far in the future an event timestamp may be, ms. Default 86400000 (1 day). */
  maxFutureSkewMs?: number;
  /** When set (ISO 4217), events in another non-empty currency are dead-lettered. Default none. */
  currency?: string;
  /** Most actors each shard keeps in memory, actors. Default 200000. */
  maxActorsPerShard?: number;
  /**
   * Most bytes of actors each shard keeps in memory, as the cache estimates
   * them (src/shard/actor-cache.ts; `portrait_shard_actor_cache_bytes`): a
   * user's state grows with its history, so the count bound alone does not
   * bound the memory. Default a quarter of the machine's memory (or of the
   * cgroup's limit when lower) divided by `workers`; when only
   * `maxShardHeapBytes` is given, what fits it (the inverse of its default),
   * if less.
   */
  maxActorBytesPerShard?: number;
  /**
   * Bound of each shard worker's V8 heap (its old generation, Worker
   * `resourceLimits.maxOldGenerationSizeMb`), bytes. V8 reserves heap in
   * proportion to the live data between collections (up to 4 x it when the
   * bound is 2 GiB or more, 1.3–2 x below that), and collects and compacts
   * harder as the heap nears its bound. A shard that still outgrows it fails
   * out of memory, which stops the engine as any worker failure does
   * (nothing committed is lost; unacknowledged events are redelivered after
   * a restart); the default and the check below keep that from happening
   * with the actor cache at its bound. Default 1.5 x `maxActorBytesPerShard`
   * + 512 MiB (src/obs/heap.ts); when both are given, it must be at least
   * that.
   */
  maxShardHeapBytes?: number;
  /**
   * Bound of V8's semi-space in each worker thread of the engine (the shards
   * and the recs worker), bytes: the young generation, where new objects are
   * allocated and most die in scavenges, is two semi-spaces plus as much for
   * new large objects (Worker `resourceLimits.maxYoungGenerationSizeMb` = 3 x
   * this, in whole MiB; V8 rounds the semi-space up to a power of two MiB).
   * V8 grows a thread's semi-space up to it while objects survive; a larger
   * one means fewer scavenges, for up to 2 x this committed per worker. At
   * max ingest 32 MiB gave no lower CPU per event than 16 and ~40 MiB more
   * RSS (bench/RESULTS.md, "the workers' young generation"). Default
   * SEMI_SPACE_DEFAULT_BYTES (16 MiB, V8's own). A process started with node's
   * `--max-semi-space-size` (NODE_OPTIONS) gets that size in every thread
   * instead, this option included; it is also the way to size the main
   * thread's.
   */
  workerSemiSpaceBytes?: number;
  /**
   * Stored profiles each shard reads per audience tick (every 100 ms) while an
   * audience backfill runs; it evaluates those of its own partitions. Every
   * shard reads every stored profile id, so this bounds the whole backfill's
   * rate: at most 10 x this many profiles/s. Default 5000 (50,000 profiles/s:
   * 1M profiles in 20 s at best).
   */
  audienceBackfillPerTick?: number;
  /** Most profile queries in flight, queries; more get OVERLOADED. Default 4096. */
  maxInflightQueries?: number;
  /**
   * Most recommendations in flight (they also count as queries); more get
   * OVERLOADED at once instead of queueing for seconds. Default 64 (about
   * 0.25 s of work at ~4 ms of CPU each on this 2-core machine).
   */
  maxInflightRecommends?: number;
  /**
   * Most time a profile or recommend query may wait in the engine, from its
   * arrival on the engine's connection to its answer, ms. A query not answered
   * by then (its user's shard is busy with a long queue of batches, or the
   * machine is starved of CPU) is answered OVERLOADED at that moment, and the
   * shard skips it when it gets to it. Keep it under the clients' request
   * timeout (PortraitClient's default is 5000 ms) so that callers get
   * OVERLOADED rather than TIMEOUT. Default 1000.
   */
  maxQueryWaitMs?: number;
  /** Initial LMDB map size, bytes (it grows). Default 1073741824 (1 GiB). */
  mapSizeBytes?: number;
  /**
   * Store profiles LZ4-compressed (lmdb-js compression, values of 128 B and
   * up): about a quarter less disk per user, for about 20 µs more CPU per
   * profile write (bench/RESULTS.md, "Disk"). Compressed profiles are read
   * whatever this says, so it can be turned on and off on a data dir. Default false.
   */
  compressProfiles?: boolean;
  /** Host the /metrics, /healthz, /readyz endpoint listens on. Default "127.0.0.1". */
  httpHost?: string;
  /** Port of that endpoint; 0 = any free port, -1 = off. Default 9464. */
  httpPort?: number;
  /** pino log level: fatal, error, warn, info, debug, trace or silent. Default "info". */
  logLevel?: string;
  /** Time allowed for a graceful drain on SIGTERM, ms. Default 30000. */
  drainTimeoutMs?: number;
  /** The profile model's options (src/actors/profile-options.ts); each defaults there (PROFILE_DEFAULTS). */
  profile?: ProfileOptions;
  /** Directory of model artifacts, models/<name>/<version>/. Default: the package's bundled models/. */
  modelsDir?: string;
  /**
   * The LSTM user encoder stepped in every actor: a version under
   * <modelsDir>/lstm/, "current" (the version named by CURRENT) or "off".
   * Default "current"; when no LSTM is there, the engine runs without its
   * predictions and logs a warning. A named version that is missing is a
   * CONFIG error.
   */
  lstmModel?: string;
  /** The churn model (<modelsDir>/churn/), same rules as lstmModel. Default "current". */
  churnModel?: string;
  /**
   * The review sentiment model (<modelsDir>/sentiment/, `portrait train
   * sentiment`), same rules as lstmModel. Read from modelsDir only: it does not
   * follow the model registry (no hot swap). Default "current".
   */
  sentimentModel?: string;
  /**
   * The purchase-propensity model (<modelsDir>/propensity/, `portrait train
   * propensity --from-stream`), same rules as lstmModel. Default "current".
   */
  propensityModel?: string;
  /**
   * The feedback-trained ranker (<modelsDir>/ranker/, `portrait train ranker
   * --from-feedback`), same rules as lstmModel. Default "current". While one
   * runs it replaces the configured ranking policy (recs.ranking).
   */
  rankerModel?: string;
  /**
   * The DeepFM ranker (<modelsDir>/deepfm/), same rules as lstmModel. Default
   * "current". Without one, recommendations are ranked by candidate priors.
   */
  deepfmModel?: string;
  /**
   * Follow the model registry on NATS (src/models/registry.ts, README "Model
   * registry"): on first start the bundled models are pushed and promoted as
   * the seed; then each model whose option is "current" runs the version
   * promoted in the registry (downloaded to <dataDir>/models-cache/), and is
   * hot-swapped when another is promoted or rolled back. A model given as a
   * version or "off" is pinned by its option. Default true; false = models
   * only from modelsDir, no watch.
   */
  modelRegistry?: boolean;
  /** Recommendation candidates, co-visitation, trending and catalog options (src/recs/recs-options.ts); each defaults there (RECS_DEFAULTS). */
  recs?: RecsOptions;
  /** The DeepFM inference pool (src/inference/inference-options.ts); each defaults there (DEFAULT_INFERENCE_OPTIONS). */
  inference?: InferenceOptions;
  /**
   * File holding the secret key of user-id pseudonymisation (README
   * "Pseudonymisation"): at least 16 bytes, trailing line breaks ignored,
   * read once at start and never logged. When set, user ids are replaced by
   * `p_<base64url(HMAC-SHA256(key, id))[:22]>` where they enter the shards, so
   * LMDB, the recs worker and logs see only pseudonyms. Fixed for a data dir:
   * another key (or turning it on or off) is refused with CONFIG. Default none
   * (off).
   */
  pseudonymKeyFile?: string;
  /**
   * Replicas of the streams and buckets the engine creates (events, dead
   * letters, catalog, tombstones, audiences, feedback, its KV buckets, and
   * in cluster mode the changelogs and leases): 3 on a 3-node NATS cluster,
   * with or without cluster mode. Default 1. An existing stream keeps the
   * replicas it was created with.
   */
  replicas?: number;
  /**
   * Fault injection, for crash tests only: after this many batches have been
   * committed, the process kills itself with SIGKILL before acknowledging the
   * next one. Default off.
   */
  faultKillBeforeAckAfterBatches?: number;
  /**
   * Fault injection, for crash tests only: after this many audience ticks
   * that committed transitions, the process kills itself with SIGKILL before
   * publishing the next one's. Default off.
   */
  faultKillBeforeAudiencePublishAfterTicks?: number;
  /**
   * Cluster mode (README "Scale-out"): several engine nodes with the same
   * subjectPrefix and partitions divide the partitions among themselves
   * through leases in NATS, keep each partition's state in a changelog
   * stream, and forward queries to the owner. Default off (one engine owns
   * every partition; nothing of this runs).
   */
  cluster?: ClusterOptions;
}

/** The cluster mode's options (EngineOptions.cluster). */
export interface ClusterOptions {
  /** This node's id, unique among the nodes of a prefix: letters, digits, _ or -, at most 32. Required. */
  nodeId: string;
  /**
   * How long a partition's lease lasts without a heartbeat, ms (default
   * 10000, at least 300): a node that stops heartbeating loses its
   * partitions after about this long, and a paused node is fenced after it.
   * Heartbeats go every leaseMs/3.
   */
  leaseMs?: number;
}

/** ClusterOptions with every default filled in, and the engine's replicas (EngineOptions.replicas) for the changelogs and leases. */
export type CompiledClusterOptions = Readonly<Required<ClusterOptions> & { replicas: number }>;

export const CLUSTER_DEFAULTS = Object.freeze({ leaseMs: 10_000 });

type OptionKey = keyof EngineOptions;

/**
 * The default of every engine option (undefined = none, off); its keys are
 * the known options. Nested groups default to their own modules' defaults.
 */
export const ENGINE_DEFAULTS = Object.freeze({
  ...NATS_DEFAULTS,
  embeddedNats: "auto",
  dataDir: ".portrait",
  partitions: 16,
  workers: defaultWorkers(),
  subjectPrefix: "portrait",
  maxBatchMessages: 1024,
  maxAckPending: 8192,
  maxShardQueueEvents: 2048,
  ackWaitMs: 60_000,
  duplicateWindowMs: 600_000,
  eventRetentionMs: 7 * DAY_MS,
  dlqRetentionMs: 14 * DAY_MS,
  explorationShare: 0,
  explorationPool: 20,
  explorationSourceShare: 0,
  feedbackWindowMs: 3_600_000,
  feedbackMaxRequests: 20_000,
  feedbackKeep: "auto",
  feedbackRetentionMs: 7 * DAY_MS,
  feedbackMaxBytes: 256 * 1024 * 1024,
  tombstoneRetentionMs: 0,
  maxEventBytes: 65_536,
  maxFutureSkewMs: DAY_MS,
  currency: undefined,
  maxActorsPerShard: 200_000,
  maxActorBytesPerShard: defaultActorBytesPerShard(defaultWorkers()),
  maxShardHeapBytes: workerHeapFor(defaultActorBytesPerShard(defaultWorkers())),
  workerSemiSpaceBytes: SEMI_SPACE_DEFAULT_BYTES,
  audienceBackfillPerTick: 5000,
  maxInflightQueries: 4096,
  maxInflightRecommends: 64,
  maxQueryWaitMs: 1000,
  mapSizeBytes: DEFAULT_MAP_SIZE_BYTES,
  compressProfiles: false,
  httpHost: "127.0.0.1",
  httpPort: 9464,
  logLevel: "info",
  drainTimeoutMs: 30_000,
  profile: PROFILE_DEFAULTS,
  modelsDir: BUNDLED_MODELS_DIR,
  lstmModel: "current",
  churnModel: "current",
  sentimentModel: "current",
  propensityModel: "current",
  rankerModel: "current",
  deepfmModel: "current",
  modelRegistry: true,
  recs: RECS_DEFAULTS,
  inference: DEFAULT_INFERENCE_OPTIONS,
  pseudonymKeyFile: undefined,
  replicas: 1,
  faultKillBeforeAckAfterBatches: undefined,
  faultKillBeforeAudiencePublishAfterTicks: undefined,
  cluster: undefined,
} satisfies { [K in OptionKey]: EngineOptions[K] | undefined });

type Defaults = typeof ENGINE_DEFAULTS;
/** Options with no default: undefined in the config unless given. */
type Unset = { [K in keyof Defaults]: Defaults[K] extends undefined ? K : never }[keyof Defaults];
type Nested = "profile" | "recs" | "inference" | "cluster";

/** The compiled options: every default filled in, paths resolved, nested groups compiled; frozen. */
export type EngineConfig = Readonly<
  { [K in Exclude<keyof EngineOptions, Unset | Nested>]-?: Exclude<EngineOptions[K], undefined> } &
  { [K in Unset]: EngineOptions[K] } &
  { profile: CompiledProfileOptions; recs: CompiledRecsOptions; inference: CompiledInferenceOptions; cluster: CompiledClusterOptions | undefined }
>;

function int(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(`options.${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  }
  return v;
}

function oneOf<T extends string>(name: string, v: unknown, values: readonly T[]): T {
  if (!values.includes(v as T)) throw new ConfigError(`options.${name} must be one of ${values.map((x) => JSON.stringify(x)).join(", ")}, got ${JSON.stringify(v)}`);
  return v as T;
}

function bool(name: string, v: unknown): boolean {
  if (typeof v !== "boolean") throw new ConfigError(`options.${name} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}
function str(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v === "") throw new ConfigError(`options.${name} must be a non-empty string`);
  return v;
}

function path(name: string, v: unknown): string | undefined {
  const s = str(name, v);
  return s === undefined ? undefined : resolve(s);
}

function natsSecurity(o: EngineOptions) {
  if (o.natsNkeySeedFile !== undefined && o.natsCredsFile !== undefined) throw new ConfigError("options.natsNkeySeedFile and options.natsCredsFile exclude each other");
  if ((o.natsTlsCertFile === undefined) !== (o.natsTlsKeyFile === undefined)) throw new ConfigError("options.natsTlsCertFile and options.natsTlsKeyFile must be given together");
  return {
    natsNkeySeedFile: path("natsNkeySeedFile", o.natsNkeySeedFile),
    natsCredsFile: path("natsCredsFile", o.natsCredsFile),
    natsTlsCaFile: path("natsTlsCaFile", o.natsTlsCaFile),
    natsTlsCertFile: path("natsTlsCertFile", o.natsTlsCertFile),
    natsTlsKeyFile: path("natsTlsKeyFile", o.natsTlsKeyFile),
  };
}

function unitShare(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > 1) throw new ConfigError(`options.${name} must be a number in [0, 1], got ${JSON.stringify(v)}`);
  return v;
}

function share(v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > 0.5) throw new ConfigError(`options.explorationShare must be a number in [0, 0.5], got ${JSON.stringify(v)}`);
  return v;
}

/** 0 (forever), or at least the event stream's retention: tombstones must outlive the events they cancel. */
function tombstoneRetention(o: EngineOptions): number {
  const t = int("tombstoneRetentionMs", o.tombstoneRetentionMs ?? ENGINE_DEFAULTS.tombstoneRetentionMs, 0);
  const events = o.eventRetentionMs ?? ENGINE_DEFAULTS.eventRetentionMs;
  if (t !== 0 && (events === 0 || t < events)) {
    throw new ConfigError(`options.tombstoneRetentionMs (${t}) must be 0 (forever) or at least options.eventRetentionMs (${events === 0 ? "0, forever" : events}): ` +
      "a downstream system re-reading the event stream must also find the tombstones of the users it reads");
  }
  return t;
}

export function defaultWorkers(): number {
  return Math.max(2, availableParallelism() - 1);
}

/** The default of maxActorBytesPerShard: a quarter of the memory (the machine's, or the cgroup's limit when lower) over the shards. */
export function defaultActorBytesPerShard(workers: number): number {
  return Math.max(1 << 20, Math.floor(usableMemoryBytes() / 4 / workers));
}

/** maxActorBytesPerShard (its default follows the workers given) and maxShardHeapBytes, each from the other when only one is given. */
function shardHeap(o: EngineOptions): { maxActorBytesPerShard: number; maxShardHeapBytes: number } {
  const state = o.maxActorBytesPerShard === undefined ? undefined : int("maxActorBytesPerShard", o.maxActorBytesPerShard, 1 << 20);
  const b = workerHeapBounds({ heap: o.maxShardHeapBytes, state }, defaultActorBytesPerShard(o.workers ?? ENGINE_DEFAULTS.workers),
    { heap: "maxShardHeapBytes", state: "maxActorBytesPerShard" }, 1 << 20);
  if (typeof b === "string") throw new ConfigError(b);
  return { maxActorBytesPerShard: b.state, maxShardHeapBytes: b.heap };
}

/**
 * Validates `o` and fills in ENGINE_DEFAULTS; compiles the profile, recs and
 * inference groups once (the parts the engine hands down). Throws ConfigError
 * on an unknown key or a bad value, naming the option.
 */
export function compileEngineOptions(o: EngineOptions = {}): EngineConfig {
  for (const k of Object.keys(o)) {
    if (!Object.hasOwn(ENGINE_DEFAULTS, k)) throw new ConfigError(`unknown engine option ${JSON.stringify(k)}`);
  }
  const D = ENGINE_DEFAULTS;
  const embeddedNats = o.embeddedNats ?? D.embeddedNats;
  if (!["auto", "never", "always"].includes(embeddedNats)) throw new ConfigError('options.embeddedNats must be "auto", "never" or "always"');
  const subjectPrefix = o.subjectPrefix ?? D.subjectPrefix;
  if (!isValidPrefix(subjectPrefix)) throw new ConfigError("options.subjectPrefix must be lower-case letters, digits, _ or -, starting with a letter");
  const logLevel = o.logLevel ?? D.logLevel;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new ConfigError(`options.logLevel must be one of ${LOG_LEVELS.join(", ")}`);
  const currency = str("currency", o.currency);
  if (currency !== undefined && !/^[A-Z]{3}$/.test(currency)) throw new ConfigError("options.currency must be an ISO 4217 code such as GBP");
  return Object.freeze({
    natsUrl: str("natsUrl", o.natsUrl) ?? D.natsUrl,
    embeddedNats,
    natsUser: str("natsUser", o.natsUser),
    natsPass: str("natsPass", o.natsPass),
    natsToken: str("natsToken", o.natsToken),
    ...natsSecurity(o),
    dataDir: resolve(str("dataDir", o.dataDir) ?? D.dataDir),
    partitions: int("partitions", o.partitions ?? D.partitions, 1, 1024),
    workers: int("workers", o.workers ?? D.workers, 1, 64),
    subjectPrefix,
    maxBatchMessages: int("maxBatchMessages", o.maxBatchMessages ?? D.maxBatchMessages, 1, 65536),
    maxAckPending: int("maxAckPending", o.maxAckPending ?? D.maxAckPending, 1, 1_000_000),
    maxShardQueueEvents: int("maxShardQueueEvents", o.maxShardQueueEvents ?? D.maxShardQueueEvents, 1, 10_000_000),
    ackWaitMs: int("ackWaitMs", o.ackWaitMs ?? D.ackWaitMs, 1000),
    duplicateWindowMs: int("duplicateWindowMs", o.duplicateWindowMs ?? D.duplicateWindowMs, 1000),
    eventRetentionMs: int("eventRetentionMs", o.eventRetentionMs ?? D.eventRetentionMs, 0),
    dlqRetentionMs: int("dlqRetentionMs", o.dlqRetentionMs ?? D.dlqRetentionMs, 60_000),
    tombstoneRetentionMs: tombstoneRetention(o),
    explorationShare: share(o.explorationShare ?? D.explorationShare),
    explorationPool: int("explorationPool", o.explorationPool ?? D.explorationPool, 1, 2000),
    explorationSourceShare: unitShare("explorationSourceShare", o.explorationSourceShare ?? D.explorationSourceShare),
    feedbackWindowMs: int("feedbackWindowMs", o.feedbackWindowMs ?? D.feedbackWindowMs, 1000),
    feedbackMaxRequests: int("feedbackMaxRequests", o.feedbackMaxRequests ?? D.feedbackMaxRequests, 1, 10_000_000),
    feedbackKeep: oneOf("feedbackKeep", o.feedbackKeep ?? D.feedbackKeep, ["auto", "always"] as const),
    feedbackRetentionMs: int("feedbackRetentionMs", o.feedbackRetentionMs ?? D.feedbackRetentionMs, 60_000),
    feedbackMaxBytes: int("feedbackMaxBytes", o.feedbackMaxBytes ?? D.feedbackMaxBytes, 1 << 20),
    maxEventBytes: int("maxEventBytes", o.maxEventBytes ?? D.maxEventBytes, 64, 8 * 1024 * 1024),
    maxFutureSkewMs: int("maxFutureSkewMs", o.maxFutureSkewMs ?? D.maxFutureSkewMs, 0),
    currency,
    maxActorsPerShard: int("maxActorsPerShard", o.maxActorsPerShard ?? D.maxActorsPerShard, 1),
    ...shardHeap(o),
    workerSemiSpaceBytes: int("workerSemiSpaceBytes", o.workerSemiSpaceBytes ?? D.workerSemiSpaceBytes, 1 << 20, 1 << 30),
    audienceBackfillPerTick: int("audienceBackfillPerTick", o.audienceBackfillPerTick ?? D.audienceBackfillPerTick, 1, 1_000_000),
    maxInflightQueries: int("maxInflightQueries", o.maxInflightQueries ?? D.maxInflightQueries, 1),
    maxInflightRecommends: int("maxInflightRecommends", o.maxInflightRecommends ?? D.maxInflightRecommends, 1),
    maxQueryWaitMs: int("maxQueryWaitMs", o.maxQueryWaitMs ?? D.maxQueryWaitMs, 1, 3_600_000),
    mapSizeBytes: int("mapSizeBytes", o.mapSizeBytes ?? D.mapSizeBytes, 2 ** 20),
    compressProfiles: bool("compressProfiles", o.compressProfiles ?? D.compressProfiles),
    httpHost: str("httpHost", o.httpHost) ?? D.httpHost,
    httpPort: int("httpPort", o.httpPort ?? D.httpPort, -1, 65535),
    logLevel,
    drainTimeoutMs: int("drainTimeoutMs", o.drainTimeoutMs ?? D.drainTimeoutMs, 0),
    profile: compileProfileOptions(o.profile),
    modelsDir: resolve(str("modelsDir", o.modelsDir) ?? D.modelsDir),
    lstmModel: str("lstmModel", o.lstmModel) ?? D.lstmModel,
    churnModel: str("churnModel", o.churnModel) ?? D.churnModel,
    sentimentModel: str("sentimentModel", o.sentimentModel) ?? D.sentimentModel,
    propensityModel: str("propensityModel", o.propensityModel) ?? D.propensityModel,
    rankerModel: str("rankerModel", o.rankerModel) ?? D.rankerModel,
    deepfmModel: str("deepfmModel", o.deepfmModel) ?? D.deepfmModel,
    modelRegistry: bool("modelRegistry", o.modelRegistry ?? D.modelRegistry),
    recs: compileRecsOptions(o.recs),
    inference: compileInferenceOptions(o.inference),
    faultKillBeforeAckAfterBatches: o.faultKillBeforeAckAfterBatches === undefined
      ? undefined
      : int("faultKillBeforeAckAfterBatches", o.faultKillBeforeAckAfterBatches, 1),
    faultKillBeforeAudiencePublishAfterTicks: o.faultKillBeforeAudiencePublishAfterTicks === undefined
      ? undefined
      : int("faultKillBeforeAudiencePublishAfterTicks", o.faultKillBeforeAudiencePublishAfterTicks, 1),
    pseudonymKeyFile: path("pseudonymKeyFile", o.pseudonymKeyFile),
    replicas: int("replicas", o.replicas ?? D.replicas, 1, 5),
    cluster: compileCluster(o),
  });
}

function compileCluster(o: EngineOptions): CompiledClusterOptions | undefined {
  const c = o.cluster;
  if (c === undefined) return undefined;
  if (c === null || typeof c !== "object") throw new ConfigError("options.cluster must be an object with a nodeId");
  if ("replicas" in c) throw new ConfigError("option cluster.replicas is now replicas (top level): it applies with or without cluster mode");
  for (const k of Object.keys(c)) if (!["nodeId", "leaseMs"].includes(k)) throw new ConfigError(`unknown option cluster.${k}`);
  if (typeof c.nodeId !== "string" || !/^[A-Za-z0-9_-]{1,32}$/.test(c.nodeId)) {
    throw new ConfigError("options.cluster.nodeId must be 1-32 letters, digits, _ or -");
  }
  // Profiles are found by partition on takeover: a pseudonym does not say its partition.
  if (o.pseudonymKeyFile !== undefined) throw new ConfigError("options.cluster cannot be combined with pseudonymKeyFile yet");
  return Object.freeze({
    nodeId: c.nodeId,
    leaseMs: int("cluster.leaseMs", c.leaseMs ?? CLUSTER_DEFAULTS.leaseMs, 300, 600_000),
    replicas: int("replicas", o.replicas ?? ENGINE_DEFAULTS.replicas, 1, 5),
  });
}
