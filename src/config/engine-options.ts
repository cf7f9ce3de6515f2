/**
 * Engine options: what a user passes (CLI flags map one to one), every field
 * with its unit and default. `compileEngineOptions` validates them once into a
 * frozen config; unknown keys are errors.
 */
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import { compileProfileOptions, type CompiledProfileOptions, type ProfileOptions } from "../actors/profile-options.js";
import { isValidPrefix } from "../bus/subjects.js";
import { ConfigError } from "../errors.js";
import { BUNDLED_MODELS_DIR } from "../models/artifacts.js";
import { compileInferenceOptions, type InferenceOptions } from "../inference/inference-options.js";
import { compileRecsOptions, type RecsOptions } from "../recs/recs-options.js";
import { LOG_LEVELS } from "../obs/logger.js";

export interface EngineOptions {
  /** NATS server URL(s), comma-separated. Default "nats://127.0.0.1:4222". */
  natsUrl?: string;
  /**
   * Start an embedded nats-server (JetStream, store in `<dataDir>/nats`) on the
   * URL's loopback port: "auto" when nothing answers there, "never", or
   * "always". Default "auto".
   */
  embeddedNats?: "auto" | "never" | "always";
  /** NATS user and password, or token, when the server requires them. Default none. */
  natsUser?: string;
  natsPass?: string;
  natsToken?: string;
  /** File holding the engine's NATS user nkey seed ("SU..."; the seed is never logged). Default none. */
  natsNkeySeedFile?: string;
  /** A NATS `.creds` file (user JWT + seed) for operator/JWT auth; not with natsNkeySeedFile. Default none. */
  natsCredsFile?: string;
  /** PEM CA file to trust for the NATS server's certificate (any tls option turns TLS on). Default: the system's CAs. */
  natsTlsCaFile?: string;
  /** PEM client certificate and key for mutual TLS; both or neither. Default none. */
  natsTlsCertFile?: string;
  natsTlsKeyFile?: string;
  /** Directory of the engine's state (LMDB, embedded NATS store). Default "./.portrait". */
  dataDir?: string;
  /** Partition count P; fixed for a deployment (the data dir remembers it). Default 16. */
  partitions?: number;
  /** Shard worker threads. Default: cores - 1, at least 2 (measured: 2 beat 1 on a 2-core machine, bench/RESULTS.md). */
  workers?: number;
  /** Prefix of every subject and stream name. Default "portrait". */
  subjectPrefix?: string;
  /** Most messages in one batch handed to a shard. Default 1024. */
  maxBatchMessages?: number;
  /** Most unacknowledged messages per partition consumer (the ingest back-pressure bound). Default 8192. */
  maxAckPending?: number;
  /** Redelivery timeout of an unacknowledged message, ms. Default 60000. */
  ackWaitMs?: number;
  /** JetStream duplicate window for Nats-Msg-Id, ms. Default 600000 (10 minutes). */
  duplicateWindowMs?: number;
  /** Retention of the event stream, ms (0 = forever). Default 7 days. */
  eventRetentionMs?: number;
  /** Retention of the dead-letter stream, ms. Default 14 days. */
  dlqRetentionMs?: number;
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
  /** Most actors each shard keeps in memory. Default 200000. */
  maxActorsPerShard?: number;
  /** Most profile queries in flight; more get OVERLOADED. Default 4096. */
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
  /** Initial LMDB map size, bytes (it grows). Default 1 GiB. */
  mapSizeBytes?: number;
  /** Host and port of the /metrics, /healthz, /readyz endpoint; port 0 = any free port, -1 = off. Default 127.0.0.1:9464. */
  httpHost?: string;
  httpPort?: number;
  /** pino log level. Default "info". */
  logLevel?: string;
  /** Time allowed for a graceful drain on SIGTERM, ms. Default 30000. */
  drainTimeoutMs?: number;
  /** The profile model's options. */
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
   * The DeepFM ranker (<modelsDir>/deepfm/), same rules as lstmModel. Default
   * "current". Without one, recommendations are ranked by candidate priors.
   */
  deepfmModel?: string;
  /** Recommendation candidates, co-visitation, trending and catalog options (src/recs/recs-options.ts). */
  recs?: RecsOptions;
  /** The DeepFM inference pool (src/inference/inference-options.ts). */
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
   * Fault injection, for crash tests only: after this many batches have been
   * committed, the process kills itself with SIGKILL before acknowledging the
   * next one. Default off.
   */
  faultKillBeforeAckAfterBatches?: number;
}

export interface EngineConfig {
  readonly natsUrl: string;
  readonly embeddedNats: "auto" | "never" | "always";
  readonly natsUser: string | undefined;
  readonly natsPass: string | undefined;
  readonly natsToken: string | undefined;
  readonly natsNkeySeedFile: string | undefined;
  readonly natsCredsFile: string | undefined;
  readonly natsTlsCaFile: string | undefined;
  readonly natsTlsCertFile: string | undefined;
  readonly natsTlsKeyFile: string | undefined;
  readonly dataDir: string;
  readonly partitions: number;
  readonly workers: number;
  readonly subjectPrefix: string;
  readonly maxBatchMessages: number;
  readonly maxAckPending: number;
  readonly ackWaitMs: number;
  readonly duplicateWindowMs: number;
  readonly eventRetentionMs: number;
  readonly dlqRetentionMs: number;
  readonly tombstoneRetentionMs: number;
  readonly maxEventBytes: number;
  readonly maxFutureSkewMs: number;
  readonly currency: string | undefined;
  readonly maxActorsPerShard: number;
  readonly maxInflightQueries: number;
  readonly maxInflightRecommends: number;
  readonly maxQueryWaitMs: number;
  readonly mapSizeBytes: number;
  readonly httpHost: string;
  readonly httpPort: number;
  readonly logLevel: string;
  readonly drainTimeoutMs: number;
  readonly profile: CompiledProfileOptions;
  readonly modelsDir: string;
  readonly lstmModel: string;
  readonly churnModel: string;
  readonly deepfmModel: string;
  readonly recs: RecsOptions;
  readonly inference: InferenceOptions;
  readonly faultKillBeforeAckAfterBatches: number | undefined;
  readonly pseudonymKeyFile: string | undefined;
}

const KEYS: ReadonlySet<string> = new Set([
  "natsUrl", "embeddedNats", "natsUser", "natsPass", "natsToken", "natsNkeySeedFile", "natsCredsFile", "natsTlsCaFile", "natsTlsCertFile", "natsTlsKeyFile", "dataDir", "partitions", "workers", "subjectPrefix",
  "maxBatchMessages", "maxAckPending", "ackWaitMs", "duplicateWindowMs", "eventRetentionMs", "dlqRetentionMs", "tombstoneRetentionMs",
  "maxEventBytes", "maxFutureSkewMs", "currency", "maxActorsPerShard", "maxInflightQueries", "maxInflightRecommends", "maxQueryWaitMs", "mapSizeBytes",
  "httpHost", "httpPort", "logLevel", "drainTimeoutMs", "profile", "modelsDir", "lstmModel", "churnModel", "deepfmModel", "recs", "inference", "faultKillBeforeAckAfterBatches",
  "pseudonymKeyFile",
]);

function int(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(`options.${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  }
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

/** 0 (forever), or at least the event stream's retention: tombstones must outlive the events they cancel. */
function tombstoneRetention(o: EngineOptions): number {
  const t = int("tombstoneRetentionMs", o.tombstoneRetentionMs ?? 0, 0);
  const events = o.eventRetentionMs ?? 7 * 86_400_000;
  if (t !== 0 && (events === 0 || t < events)) {
    throw new ConfigError(`options.tombstoneRetentionMs (${t}) must be 0 (forever) or at least options.eventRetentionMs (${events === 0 ? "0, forever" : events}): ` +
      "a downstream system re-reading the event stream must also find the tombstones of the users it reads");
  }
  return t;
}

export function defaultWorkers(): number {
  return Math.max(2, availableParallelism() - 1);
}

export function compileEngineOptions(o: EngineOptions = {}): EngineConfig {
  for (const k of Object.keys(o)) {
    if (!KEYS.has(k)) throw new ConfigError(`unknown engine option ${JSON.stringify(k)}`);
  }
  const embeddedNats = o.embeddedNats ?? "auto";
  if (!["auto", "never", "always"].includes(embeddedNats)) throw new ConfigError('options.embeddedNats must be "auto", "never" or "always"');
  const subjectPrefix = o.subjectPrefix ?? "portrait";
  if (!isValidPrefix(subjectPrefix)) throw new ConfigError("options.subjectPrefix must be lower-case letters, digits, _ or -, starting with a letter");
  const logLevel = o.logLevel ?? "info";
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new ConfigError(`options.logLevel must be one of ${LOG_LEVELS.join(", ")}`);
  const currency = str("currency", o.currency);
  if (currency !== undefined && !/^[A-Z]{3}$/.test(currency)) throw new ConfigError("options.currency must be an ISO 4217 code such as GBP");
  return Object.freeze({
    natsUrl: str("natsUrl", o.natsUrl) ?? "nats://127.0.0.1:4222",
    embeddedNats,
    natsUser: str("natsUser", o.natsUser),
    natsPass: str("natsPass", o.natsPass),
    natsToken: str("natsToken", o.natsToken),
    ...natsSecurity(o),
    dataDir: resolve(str("dataDir", o.dataDir) ?? ".portrait"),
    partitions: int("partitions", o.partitions ?? 16, 1, 1024),
    workers: int("workers", o.workers ?? defaultWorkers(), 1, 64),
    subjectPrefix,
    maxBatchMessages: int("maxBatchMessages", o.maxBatchMessages ?? 1024, 1, 65536),
    maxAckPending: int("maxAckPending", o.maxAckPending ?? 8192, 1, 1_000_000),
    ackWaitMs: int("ackWaitMs", o.ackWaitMs ?? 60_000, 1000),
    duplicateWindowMs: int("duplicateWindowMs", o.duplicateWindowMs ?? 600_000, 1000),
    eventRetentionMs: int("eventRetentionMs", o.eventRetentionMs ?? 7 * 86_400_000, 0),
    dlqRetentionMs: int("dlqRetentionMs", o.dlqRetentionMs ?? 14 * 86_400_000, 60_000),
    tombstoneRetentionMs: tombstoneRetention(o),
    maxEventBytes: int("maxEventBytes", o.maxEventBytes ?? 65_536, 64, 8 * 1024 * 1024),
    maxFutureSkewMs: int("maxFutureSkewMs", o.maxFutureSkewMs ?? 86_400_000, 0),
    currency,
    maxActorsPerShard: int("maxActorsPerShard", o.maxActorsPerShard ?? 200_000, 1),
    maxInflightQueries: int("maxInflightQueries", o.maxInflightQueries ?? 4096, 1),
    maxInflightRecommends: int("maxInflightRecommends", o.maxInflightRecommends ?? 64, 1),
    maxQueryWaitMs: int("maxQueryWaitMs", o.maxQueryWaitMs ?? 1000, 1, 3_600_000),
    mapSizeBytes: int("mapSizeBytes", o.mapSizeBytes ?? 2 ** 30, 2 ** 20),
    httpHost: str("httpHost", o.httpHost) ?? "127.0.0.1",
    httpPort: int("httpPort", o.httpPort ?? 9464, -1, 65535),
    logLevel,
    drainTimeoutMs: int("drainTimeoutMs", o.drainTimeoutMs ?? 30_000, 0),
    profile: compileProfileOptions(o.profile),
    modelsDir: resolve(str("modelsDir", o.modelsDir) ?? BUNDLED_MODELS_DIR),
    lstmModel: str("lstmModel", o.lstmModel) ?? "current",
    churnModel: str("churnModel", o.churnModel) ?? "current",
    deepfmModel: str("deepfmModel", o.deepfmModel) ?? "current",
    // Validated here so that a bad option fails at start, then handed on as given.
    recs: (compileRecsOptions(o.recs), o.recs ?? {}),
    inference: (compileInferenceOptions(o.inference), o.inference ?? {}),
    faultKillBeforeAckAfterBatches: o.faultKillBeforeAckAfterBatches === undefined
      ? undefined
      : int("faultKillBeforeAckAfterBatches", o.faultKillBeforeAckAfterBatches, 1),
    pseudonymKeyFile: path("pseudonymKeyFile", o.pseudonymKeyFile),
  });
}
