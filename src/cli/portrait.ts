#!/usr/bin/env node
/**
 * The `portrait` command line: start, demo, replay, publish, request, profile, recommend, forget, audience, train, eval.
 * The only place besides the composition root that reads process.env, for
 * defaults that README documents.
 */
import { describeOrder } from "../recs/recommender.js";
import { Command, InvalidArgumentError, Option } from "commander";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { PortraitClient } from "../client/portrait-client.js";
import { CLUSTER_DEFAULTS, ENGINE_DEFAULTS, type ClusterOptions } from "../config/engine-options.js";
import { clusterStatus } from "../cluster/cluster-status.js";
import { DATASET_FORMATS, type DatasetFormat } from "../data/types.js";
import { resolveDataFile } from "../data/datasets.js";
import { Engine } from "../engine.js";
import { Catalog } from "../recs/catalog.js";
import { loadCatalogFromDataset } from "../recs/catalog-loader.js";
import { ErrorCode, PortraitError } from "../errors.js";
import { VERSION } from "../version.js";
import { runDemo } from "./demo.js";
import { registerModelCommands } from "./model-commands.js";
import { registerAudienceCommands } from "./audience-commands.js";
import { registerRegistryCommands } from "./registry-commands.js";
import { printProfile } from "./print-profile.js";
import { progress } from "./progress.js";
import { replay } from "./replay.js";
import { publishJson, resolveRequestSubject } from "./publish.js";

const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** Where the public data sets are: $PORTRAIT_DATASETS, else ../shared/data beside the repository. */
export const DEFAULT_DATASETS = process.env.PORTRAIT_DATASETS ?? resolve(PACKAGE_ROOT, "..", "shared", "data");
const DEFAULT_NATS = process.env.PORTRAIT_NATS_URL ?? ENGINE_DEFAULTS.natsUrl;
/** Flag defaults are the engine's option defaults (converted where the flag has another unit). */
const D = ENGINE_DEFAULTS;
const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;

function posInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
}
function nonNegInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("must be a non-negative integer");
  return n;
}
function portNumber(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < -1 || n > 65535) throw new InvalidArgumentError("must be a port number, 0 for any, or -1 for off");
  return n;
}

const natsOption = () => new Option("--nats <url>", "NATS server URL(s), comma-separated").default(DEFAULT_NATS);
const partitionsOption = () => new Option("--partitions <n>", "partition count P (must match the engine)").argParser(posInt).default(D.partitions);
const prefixOption = () => new Option("--prefix <prefix>", "subject and stream name prefix").default(D.subjectPrefix);
const formatOption = () => new Option("--format <format>", "data set format (required)").choices(DATASET_FORMATS as unknown as string[]).makeOptionMandatory();

interface ClientFlags extends NatsSecurityFlags { nats: string; partitions: number; prefix: string }

interface NatsSecurityFlags { user?: string; pass?: string; nkeySeed?: string; creds?: string; tlsCa?: string; tlsCert?: string; tlsKey?: string }

/** NATS credentials and TLS flags, on every command that connects (README "Security"). */
function natsSecurityFlags(cmd: Command): Command {
  return cmd
    .option("--user <user>", "NATS user")
    .addOption(new Option("--pass <password>", "NATS password (visible in ps: prefer the environment variable)").env("PORTRAIT_NATS_PASS"))
    .option("--nkey-seed <file>", "file holding a NATS user nkey seed (SU...)")
    .option("--creds <file>", "NATS .creds file (user JWT and seed)")
    .option("--tls-ca <file>", "PEM CA to trust for the NATS server's certificate (turns TLS on)")
    .option("--tls-cert <file>", "PEM client certificate for mutual TLS (with --tls-key)")
    .option("--tls-key <file>", "PEM key of --tls-cert");
}

function natsSecurityOptions(f: NatsSecurityFlags) {
  return {
    ...(f.user !== undefined ? { natsUser: f.user } : {}),
    ...(f.pass !== undefined ? { natsPass: f.pass } : {}),
    ...(f.nkeySeed !== undefined ? { natsNkeySeedFile: f.nkeySeed } : {}),
    ...(f.creds !== undefined ? { natsCredsFile: f.creds } : {}),
    ...(f.tlsCa !== undefined ? { natsTlsCaFile: f.tlsCa } : {}),
    ...(f.tlsCert !== undefined ? { natsTlsCertFile: f.tlsCert } : {}),
    ...(f.tlsKey !== undefined ? { natsTlsKeyFile: f.tlsKey } : {}),
  };
}

function clientOptions(f: ClientFlags) {
  return {
    natsUrl: f.nats,
    partitions: f.partitions,
    subjectPrefix: f.prefix,
    ...natsSecurityOptions(f),
  };
}

/** Runs `work` with a client connected for one command, and closes it whatever happens. */
async function withClient<T>(f: ClientFlags, name: string, work: (client: PortraitClient) => Promise<T>): Promise<T> {
  const client = await PortraitClient.connect({ ...clientOptions(f), name });
  try {
    return await work(client);
  } finally {
    await client.close();
  }
}

function engineFlags(cmd: Command): Command {
  return natsSecurityFlags(cmd)
    .addOption(natsOption())
    .option("--data-dir <dir>", "engine state directory (LMDB, embedded NATS store)", D.dataDir)
    .addOption(partitionsOption())
    .option("--workers <n>", "shard worker threads (default: cores - 1, at least 2)", posInt)
    .addOption(prefixOption())
    .addOption(new Option("--embedded-nats <mode>", "start an embedded nats-server: auto (when nothing answers), never, always").choices(["auto", "never", "always"]).default(D.embeddedNats))
    .option("--http-port <port>", "port of /metrics, /healthz, /readyz (0 = any, -1 = off)", portNumber, D.httpPort)
    .option("--currency <code>", "the shop currency (ISO 4217); events in another currency are dead-lettered")
    .option("--max-batch <n>", "most messages per batch handed to a shard", posInt, D.maxBatchMessages)
    .option("--max-ack-pending <n>", "most unacknowledged messages per partition", posInt, D.maxAckPending)
    .option("--max-shard-queue <events>", "most events handed to one shard and not yet answered (a query waits behind at most these)", posInt, D.maxShardQueueEvents)
    .option("--max-query-wait-ms <ms>", "a profile or recommend query not answered within this time of its arrival gets OVERLOADED", posInt, D.maxQueryWaitMs)
    .option("--half-life-hours <h>", "half-life of the decayed affinities, hours", Number, D.profile.halfLifeMs / HOUR_MS)
    .option("--session-gap-minutes <m>", "inactivity gap that ends a session, minutes", Number, D.profile.sessionGapMs / MINUTE_MS)
    .option("--no-beyond-clicks", "turn off review sentiment, social ties and risk signals in the profile (README \"The profile\")")
    .option("--models <dir>", "directory of the trained models (models/<name>/<version>/)", D.modelsDir)
    .option("--lstm <version>", 'LSTM user encoder stepped per event: a version, "current" or "off"', D.lstmModel)
    .option("--churn <version>", 'churn model: a version, "current" or "off"', D.churnModel)
    .option("--sentiment <version>", 'review sentiment model (read from --models, not the registry): a version, "current" or "off"', D.sentimentModel)
    .option("--propensity <version>", 'purchase-propensity model: a version, "current" or "off"', D.propensityModel)
    .option("--ranker <version>", 'feedback-trained ranker (portrait train ranker --from-feedback): a version, "current" or "off"', D.rankerModel)
    .option("--exploration-share <share>", "share of recommend replies that explore, in [0, 0.5] (0 = off)", Number, D.explorationShare)
    .option("--exploration-pool <n>", "exploration pool: the ranker's first n candidates", posInt, D.explorationPool)
    .option("--exploration-source-share <share>", "share of the exploring replies drawn from one candidate source's first n candidates instead of the ranker's, in [0, 1]", Number, D.explorationSourceShare)
    .option("--deepfm <version>", 'DeepFM ranker for recommendations: a version, "current" or "off" (then ranked by candidate prior)', D.deepfmModel)
    .option("--no-model-registry", "read models from --models only: no registry on NATS, no seeding, no hot swap")
    .option("--inference-workers <n>", "DeepFM inference worker threads", posInt, D.inference.workers)
    .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent", process.env.PORTRAIT_LOG_LEVEL ?? D.logLevel)
    .option("--pseudonym-key-file <file>", "secret key file: user ids are kept and logged only as keyed-hash pseudonyms (fixed for a data dir)")
    .option("--compress-profiles", "store profiles LZ4-compressed: about a quarter less disk per user for about 20 µs more CPU per profile write (compressed profiles are read with or without it)")
    .option("--audience-backfill-per-tick <n>", "stored profiles each shard reads per 100 ms tick in an audience backfill, evaluating those of its partitions (the rate bound: 10 x n profiles/s)", posInt, D.audienceBackfillPerTick)
    .addOption(new Option("--fault-kill-before-ack <batches>", "crash tests only: SIGKILL this process after N committed batches, before the next ack").argParser(posInt).hideHelp())
    .addOption(new Option("--fault-kill-before-audience-publish <ticks>", "crash tests only: SIGKILL after N audience ticks with transitions, before publishing the next").argParser(posInt).hideHelp());
}

interface EngineFlags extends ClientFlags {
  dataDir: string; workers?: number; embeddedNats: "auto" | "never" | "always"; httpPort: number; currency?: string;
  maxBatch: number; maxAckPending: number; maxShardQueue: number; maxQueryWaitMs: number; halfLifeHours: number; sessionGapMinutes: number; beyondClicks?: boolean; logLevel: string;
  models: string; lstm: string; churn: string; sentiment: string; propensity: string; ranker: string; deepfm: string; explorationShare: number; explorationPool: number; explorationSourceShare: number; inferenceWorkers: number; modelRegistry: boolean;
  faultKillBeforeAck?: number;
  faultKillBeforeAudiencePublish?: number;
  /** `start` only. */
  replicas?: number;
  audienceBackfillPerTick: number;
  compressProfiles?: boolean;
  pseudonymKeyFile?: string;
}

function engineOptions(f: EngineFlags) {
  return {
    natsUrl: f.nats,
    embeddedNats: f.embeddedNats,
    dataDir: f.dataDir,
    partitions: f.partitions,
    ...(f.workers !== undefined ? { workers: f.workers } : {}),
    subjectPrefix: f.prefix,
    httpPort: f.httpPort,
    ...(f.replicas !== undefined ? { replicas: f.replicas } : {}),
    ...(f.currency !== undefined ? { currency: f.currency } : {}),
    ...natsSecurityOptions(f),
    maxBatchMessages: f.maxBatch,
    maxAckPending: f.maxAckPending,
    maxShardQueueEvents: f.maxShardQueue,
    maxQueryWaitMs: f.maxQueryWaitMs,
    compressProfiles: f.compressProfiles === true,
    logLevel: f.logLevel,
    profile: { halfLifeMs: f.halfLifeHours * HOUR_MS, sessionGapMs: f.sessionGapMinutes * MINUTE_MS, beyondClicks: f.beyondClicks !== false },
    modelsDir: f.models,
    lstmModel: f.lstm,
    churnModel: f.churn,
    sentimentModel: f.sentiment,
    propensityModel: f.propensity,
    rankerModel: f.ranker,
    explorationShare: f.explorationShare,
    explorationPool: f.explorationPool,
    explorationSourceShare: f.explorationSourceShare,
    deepfmModel: f.deepfm,
    modelRegistry: f.modelRegistry,
    inference: { workers: f.inferenceWorkers },
    ...(f.faultKillBeforeAck !== undefined ? { faultKillBeforeAckAfterBatches: f.faultKillBeforeAck } : {}),
    ...(f.faultKillBeforeAudiencePublish !== undefined ? { faultKillBeforeAudiencePublishAfterTicks: f.faultKillBeforeAudiencePublish } : {}),
    audienceBackfillPerTick: f.audienceBackfillPerTick,
    ...(f.pseudonymKeyFile !== undefined ? { pseudonymKeyFile: f.pseudonymKeyFile } : {}),
  };
}

/** Runs the engine until SIGTERM/SIGINT, then drains; exit 0 after a clean drain, 1 on failure. */
async function runEngine(f: EngineFlags, cluster?: ClusterOptions): Promise<void> {
  // Handlers first: a signal during start-up must still stop the embedded server and close LMDB.
  let engine: Engine | undefined;
  let signalled = false;
  const stop = (sig: string) => {
    if (signalled) return;
    signalled = true;
    engine?.log.info({ signal: sig }, "draining");
    void engine?.close();
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
  engine = await Engine.start({ ...engineOptions(f), ...(cluster !== undefined ? { cluster } : {}) });
  if (signalled) {
    engine.log.info("signalled during start-up; closing");
    await engine.close();
    return;
  }
  try {
    await engine.done;
  } catch {
    await engine.close();
    process.exitCode = 1;
  }
}

const program = new Command("portrait")
  .description("Portrait: real-time user profiles from a NATS JetStream event stream")
  .version(VERSION)
  .showHelpAfterError()
  .configureHelp({ showGlobalOptions: true });

engineFlags(
  program.command("start")
    .description("run the engine until SIGTERM (starts an embedded nats-server when nothing answers at --nats)"),
)
  .option("--cluster", "cluster mode (README \"Scale-out\"): share the partitions with the other engine nodes of this prefix through leases in NATS")
  .option("--node-id <id>", "cluster mode: this node's id, unique among the nodes (letters, digits, _ or -)")
  .option("--lease-ms <ms>", "cluster mode: lease duration; a silent node loses its partitions after about this long", posInt, CLUSTER_DEFAULTS.leaseMs)
  .option("--replicas <n>", "replicas of the streams and buckets the engine creates (3 on a 3-node NATS cluster), with or without --cluster", posInt, ENGINE_DEFAULTS.replicas)
  .action((f: EngineFlags & { cluster?: boolean; nodeId?: string; leaseMs: number }) => {
    if (f.cluster !== true && f.nodeId !== undefined) throw new PortraitError(ErrorCode.CONFIG, "--node-id needs --cluster");
    if (f.cluster === true && f.nodeId === undefined) throw new PortraitError(ErrorCode.CONFIG, "--cluster needs --node-id");
    return runEngine(f, f.cluster === true ? { nodeId: f.nodeId!, leaseMs: f.leaseMs } : undefined);
  });

natsSecurityFlags(program.command("cluster")
  .description("cluster mode operations")
  .command("status")
  .description("the engine nodes of a prefix, their partitions and the age of their leases")
  .option("--json", "print one JSON object")
  .addOption(natsOption()).addOption(prefixOption()))
  .action(async (f: ClientFlags & { json?: boolean }) => {
    await withClient({ ...f, partitions: D.partitions }, "portrait-cluster", async (client) => {
      const st = await clusterStatus(client.nc, client.subjects);
      if (f.json) {
        console.log(JSON.stringify(st));
        return;
      }
      console.log(`lease bucket ${st.bucket}`);
      console.log("node                              heartbeat age  partitions");
      for (const n of st.nodes) console.log(`${n.node.padEnd(34)}${(n.heartbeatAgeMs < 0 ? "-" : `${n.heartbeatAgeMs} ms`).padStart(13)}  ${n.partitions.join(",")}`);
      console.log("partition  node                              epoch  lease age");
      for (const p of st.partitions) console.log(`${String(p.partition).padStart(9)}  ${(p.node || "(released)").padEnd(34)}${String(p.epoch).padStart(5)}  ${p.leaseAgeMs} ms`);
    });
  });

engineFlags(
  program.command("demo")
    .description("the main job on an embedded default: start nats-server and the engine, replay a sample of real data, print a profile")
    .option("--events <n>", "how many events of the sample to replay", posInt, 20000)
    .addOption(new Option("--format <format>", "data set format").choices(DATASET_FORMATS as unknown as string[]).default("rees46"))
    .option("--file <path>", "data file (default: the format's file under --datasets)")
    .option("--datasets <dir>", "directory of the public data sets", DEFAULT_DATASETS)
    .option("--learn-horizon <minutes>", "then train a purchase-propensity model on the demo's own stream with this horizon and serve it (0 = don't)", nonNegInt, 5),
).action((f: EngineFlags & { events: number; format: DatasetFormat; file?: string; datasets: string; learnHorizon: number }, cmd: Command) => {
  const natsGiven = cmd.getOptionValueSource("nats") !== "default";
  const dataDirGiven = cmd.getOptionValueSource("dataDir") !== "default";
  return runDemo({
    engine: engineOptions(f),
    natsGiven,
    dataDirGiven,
    file: f.file ? resolve(f.file) : resolveDataFile(f.datasets, f.format),
    format: f.format,
    events: f.events,
    learnHorizonMin: f.learnHorizon,
  });
});

natsSecurityFlags(program.command("replay")
  .description("publish a real data set's events to the engine's stream, with a progress bar; Ctrl-C stops it with a summary and a --skip resume point")
  .argument("[file]", "data file, gzip or plain (told apart by content); - reads standard input (default: the format's file under --datasets)")
  .addOption(formatOption())
  .option("--rate <n>", "events per second (open-loop schedule); default as fast as acknowledgements allow", posInt)
  .option("--limit <n>", "stop after this many events", posInt)
  .option("--skip <n>", "leave out the first n events (the resume point an interrupted replay printed)", nonNegInt)
  .option("--datasets <dir>", "directory of the public data sets", DEFAULT_DATASETS)
  .option("--max-inflight <n>", "most publishes awaiting acknowledgement", posInt, 256)
  .addOption(natsOption()).addOption(partitionsOption()).addOption(prefixOption()))
  .action(async (file: string | undefined, f: ClientFlags & { format: DatasetFormat; rate?: number; limit?: number; skip?: number; datasets: string; maxInflight: number }) => {
    const path = file === "-" ? file : file ? resolveDataFile(process.cwd(), f.format, resolve(file)) : resolveDataFile(f.datasets, f.format);
    const client = await PortraitClient.connect({ ...clientOptions(f), maxInflightPublishes: f.maxInflight, name: "portrait-replay" });
    const bar = progress(`replay ${f.format}`, undefined, { limit: f.limit });
    // First Ctrl-C: stop reading, let what was published be acknowledged, print where to resume. A second one exits at once.
    const stop = new AbortController();
    const onSigint = () => {
      if (stop.signal.aborted) process.exit(130);
      stop.abort();
    };
    process.on("SIGINT", onSigint);
    let stopped = false;
    try {
      const r = await replay(client, f.format, path, { rate: f.rate, limit: f.limit, skip: f.skip, signal: stop.signal, onProgress: (n) => bar.update(n) });
      bar.stop();
      stopped = true;
      const name = path === "-" ? "standard input" : path;
      console.log(`${r.interrupted ? "interrupted: " : ""}replayed ${name}: ${r.read} events read${f.skip ? ` after ${f.skip} skipped` : ""}, ${r.stored} stored, ` +
        `${r.duplicates} duplicates dropped by JetStream, ${r.skippedRows} rows skipped, ${(r.read / r.seconds).toFixed(0)} events/s`);
      if (r.interrupted) {
        console.log(`every event read was acknowledged; resume with: portrait replay ${file ?? ""} --format ${f.format} --skip ${r.resumeSkip}`.replace("  ", " "));
        process.exitCode = 130;
      }
    } finally {
      process.off("SIGINT", onSigint);
      if (!stopped) bar.stop();
      await client.close();
    }
  });

natsSecurityFlags(program.command("publish")
  .description("publish events written as JSON (one as an argument, or NDJSON with --file; - reads stdin), checked as the engine checks them first")
  .argument("[json]", 'one event, e.g. \'{"eventId":"e-1","userId":"u1","type":"VIEW","timestampMs":1700000000000,"itemId":"i1"}\'')
  .option("--file <file>", "NDJSON file of events, one per line (- = standard input)")
  .option("--currency <code>", "the engine's shop currency, when it has one: events in another are refused here as they would be dead-lettered there")
  .addOption(natsOption()).addOption(partitionsOption()).addOption(prefixOption()))
  .action(async (json: string | undefined, f: ClientFlags & { file?: string; currency?: string }) => {
    const validation = { partitions: f.partitions, maxEventBytes: D.maxEventBytes, maxFutureSkewMs: D.maxFutureSkewMs, currency: f.currency };
    await withClient(f, "portrait-publish", async (client) => {
      const r = await publishJson(client, { ...(json !== undefined ? { json } : {}), ...(f.file !== undefined ? { file: f.file } : {}) }, validation);
      console.log(`published ${r.events} event${r.events === 1 ? "" : "s"}: ${r.stored} stored, ${r.duplicates} duplicates dropped by JetStream`);
    });
  });

natsSecurityFlags(program.command("request")
  .description("send a JSON request to one of the engine's request-reply subjects and print the JSON reply")
  .argument("<subject>", "profile, recommend, forget, catalog.upsert, or the full subject")
  .argument("<json>", 'the request, e.g. \'{"userId":"u1"}\'')
  .addOption(natsOption()).addOption(partitionsOption()).addOption(prefixOption()))
  .action(async (name: string, json: string, f: ClientFlags) => {
    let body: unknown;
    try {
      body = JSON.parse(json);
    } catch (err) {
      throw new PortraitError(ErrorCode.BAD_REQUEST, `the request is not JSON: ${(err as Error).message}`);
    }
    await withClient(f, "portrait-request", async (client) => {
      const reply = await client.requestJson(resolveRequestSubject(client.subjects, name), body);
      console.log(JSON.stringify(reply, null, 2));
    });
  });

natsSecurityFlags(program.command("profile")
  .description("print a user's profile")
  .argument("<userId>", "the user id")
  .option("--json", "print one JSON object (counts keyed by event-type name)")
  .option("--as-of <ms>", "evaluate decayed values at this Unix epoch ms (default: the engine's event-time clock)", nonNegInt)
  .option("--explain", "list each served prediction's top contributing inputs")
  .addOption(natsOption()).addOption(partitionsOption()).addOption(prefixOption()))
  .action(async (userId: string, f: ClientFlags & { json?: boolean; asOf?: number; explain?: boolean }) => {
    await withClient(f, "portrait-cli", async (client) => {
      const p = await client.getProfile(userId, { ...(f.asOf !== undefined ? { asOfMs: f.asOf } : {}), ...(f.explain ? { explain: true } : {}) });
      if (f.json) console.log(JSON.stringify(p));
      else printProfile(p);
    });
  });

natsSecurityFlags(program.command("recommend")
  .description("print the top-K recommendations for a user, with scores and reasons")
  .argument("<userId>", "the user id (an unknown user gets popular items)")
  .option("-k, --k <n>", "how many items", posInt, 10)
  .option("--category <id>", "the category being browsed (its top items become candidates)")
  .option("--exclude <ids>", "comma-separated item ids never to return")
  .option("--json", "print the reply as one JSON object")
  .addOption(natsOption()).addOption(partitionsOption()).addOption(prefixOption()))
  .action(async (userId: string, f: ClientFlags & { k: number; category?: string; exclude?: string; json?: boolean }) => {
    await withClient(f, "portrait-cli", async (client) => {
      const r = await client.recommend(userId, {
        k: f.k, ...(f.category !== undefined ? { categoryId: f.category } : {}),
        ...(f.exclude !== undefined ? { exclude: f.exclude.split(",").filter((x) => x !== "") } : {}),
      });
      if (f.json) {
        console.log(JSON.stringify(r));
      } else {
        console.log(`${r.knownUser ? "user" : "unknown user"} ${userId}: ${r.items.length} of ${r.candidates} candidates, ` +
          `order: ${describeOrder(r.modelVersion, r.backend)}; sources ${Object.entries(r.candidateSources).map(([k, v]) => `${k}=${v}`).join(" ") || "-"}`);
        r.items.forEach((it, i) => console.log(`${String(i + 1).padStart(3)}. ${it.itemId.padEnd(20)} ${it.score.toFixed(4)}  ${it.reason}`));
      }
    });
  });

natsSecurityFlags(program.command("forget")
  .description("remove every trace of a user from the engine (profile, model state, co-visitation) and publish a tombstone")
  .argument("<userId>", "the user id")
  .option("--json", "print the reply as one JSON object")
  .addOption(natsOption()).addOption(partitionsOption()).addOption(prefixOption()))
  .action(async (userId: string, f: ClientFlags & { json?: boolean }) => {
    await withClient(f, "portrait-cli", async (client) => {
      const r = await client.forget(userId);
      if (f.json) console.log(JSON.stringify(r));
      else console.log(`${r.existed ? "forgot" : "no profile for"} user ${userId}; tombstone ${r.tombstoneEventId} published on ${client.subjects.tombstones}`);
    });
  });

natsSecurityFlags(program.command("catalog")
  .description("catalog upserts")
  .command("load")
  .description("read a data set's items (category, brand, price, title) and upsert them into a running engine's catalog")
  .argument("[file]", "data file (default: the format's file under --datasets)")
  .addOption(formatOption())
  .option("--limit <n>", "read at most this many events", posInt)
  .option("--datasets <dir>", "directory of the public data sets", DEFAULT_DATASETS)
  .option("--concurrency <n>", "upserts in flight", posInt, 64)
  .addOption(natsOption()).addOption(partitionsOption()).addOption(prefixOption()))
  .action(async (file: string | undefined, f: ClientFlags & { format: DatasetFormat; limit?: number; datasets: string; concurrency: number }) => {
    const path = file ? resolveDataFile(process.cwd(), f.format, resolve(file)) : resolveDataFile(f.datasets, f.format);
    const catalog = new Catalog();
    await loadCatalogFromDataset(catalog, f.format, path, f.limit !== undefined ? { limit: f.limit } : {});
    const items = [...catalog];
    const client = await PortraitClient.connect({ ...clientOptions(f), name: "portrait-catalog" });
    const bar = progress("catalog upserts", items.length);
    let done = 0;
    try {
      let next = 0;
      await Promise.all(Array.from({ length: f.concurrency }, async () => {
        while (next < items.length) {
          const it = items[next++]!;
          await client.upsertCatalog({
            itemId: it.itemId, categoryId: it.categoryId, categoryPath: it.categoryPath, brand: it.brand,
            price: it.price, currency: it.currency, title: it.title,
          });
          bar.update(++done);
        }
      }));
    } finally {
      bar.stop();
      await client.close();
    }
    console.log(`upserted ${done} items from ${path}`);
  });

registerModelCommands(program, DEFAULT_DATASETS);
registerAudienceCommands(program, {
  clientFlags: (cmd) => natsSecurityFlags(cmd).addOption(natsOption()).addOption(partitionsOption()).addOption(prefixOption()),
  withClient: (f, name, work) => withClient(f as ClientFlags, name, work),
});
registerRegistryCommands(
  program,
  (cmd) => natsSecurityFlags(cmd).addOption(natsOption()).addOption(prefixOption()),
  (f, work) => withClient({ ...(f as unknown as ClientFlags), partitions: D.partitions }, "portrait-models", (client) => work(client.nc, (f as unknown as ClientFlags).prefix)),
);

program.command("bench")
  .description("load-test scenarios (max-ingest, freshness, profile, recommend, mixed, soak, scale, cluster); 'portrait bench --help' lists them")
  .argument("[scenario]", "scenario name")
  .argument("[flags...]", "the scenario's flags (--smoke, --no-record, ...)")
  .helpOption(false)
  .allowUnknownOption(true)
  .action((_scenario: string | undefined, _flags: string[], _opts: unknown, cmd: Command) => {
    // The harness lives in the repository's bench/ (not in the published package); compiled once, then run.
    const runFile = resolve(PACKAGE_ROOT, "bench", "run.ts");
    if (!existsSync(runFile)) throw new PortraitError(ErrorCode.CONFIG, `the load-test harness is not here: ${runFile} is missing (it ships with the repository, not the package)`);
    const build = spawnSync("npm", ["run", "--silent", "bench:build"], { cwd: PACKAGE_ROOT, stdio: ["ignore", "ignore", "inherit"] });
    if (build.status !== 0) throw new PortraitError(ErrorCode.CONFIG, "building the benchmarks failed (npm run bench:build)");
    const run = spawnSync(process.execPath, [resolve(PACKAGE_ROOT, "dist-bench", "bench", "run.js"), ...cmd.args], { cwd: PACKAGE_ROOT, stdio: "inherit" });
    process.exitCode = run.status ?? 1;
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof PortraitError) {
    console.error(`portrait: ${err.code}: ${err.message}`);
  } else {
    console.error(`portrait: ${(err as Error)?.stack ?? String(err)}`);
  }
  process.exitCode = 1;
});
