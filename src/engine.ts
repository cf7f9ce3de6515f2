/**
 * The composition root: wires NATS, the shard workers, the store, the query
 * API and observability into one running engine, and takes it down in reverse
 * order. Components get their configuration from here; nothing below reads
 * process.env.
 *
 * Start order: data-dir lock -> (embedded nats-server) -> NATS connection -> streams ->
 * shard workers (open LMDB, read applied sequences) -> partition consumers,
 * positioned after each partition's applied sequence -> query API -> ready.
 * Drain order: not ready -> query API stops -> consumers stop intake and flush
 * (every handed-over batch committed and acknowledged) -> shards close LMDB ->
 * NATS drains -> embedded server stops -> HTTP closes -> lock released.
 */
import type { JetStreamClient, NatsConnection } from "nats";
import { QueryApi } from "./api/profile-endpoint.js";
import { connectNats, natsOptionsOf } from "./bus/connect.js";
import { probeNats, startNatsServer, type NatsServerHandle } from "./bus/nats-server-launcher.js";
import { PartitionConsumer } from "./bus/partition-consumer.js";
import { ensureStreams, publishOutbound, replayCatalog } from "./bus/streams.js";
import { internalKey } from "./bus/internal-key.js";
import { AudienceAdmin, openDefinitions, readDefinitions, watchDefinitions, type BackfillView } from "./api/audience-admin.js";
import { outboxRefs, type OutboundMessage } from "./bus/event-batch.js";
import { subjects, type Subjects } from "./bus/subjects.js";
import { compileEngineOptions, type EngineConfig, type EngineOptions } from "./config/engine-options.js";
import { ConfigError, ErrorCode, PortraitError, fromWire } from "./errors.js";
import { startOpsServer, type OpsServer } from "./obs/http-server.js";
import { Dashboard, type DashboardModel } from "./dashboard/dashboard.js";
import { createLogger, type Logger } from "./obs/logger.js";
import { ClusterMetrics, EngineMetrics } from "./obs/metrics.js";
import { ClusterNode } from "./cluster/cluster-node.js";
import { retrySetup } from "./bus/leases.js";
import type { ConsumerFence } from "./bus/partition-consumer.js";
import { streamSource } from "./models/evidence.js";
import { EngineModels } from "./engine-models.js";
import { ShardPool } from "./shard/shard-pool.js";
import { partitionOf } from "./wire/partition.js";
import { InferencePool } from "./inference/inference-pool.js";
import { RecsHost } from "./recs/recs-host.js";
import { Recommender } from "./recs/recommender.js";
import { FeedbackLog } from "./recs/feedback-log.js";
import { pb, plainBytes } from "./wire/proto.js";
import { ProfileStore } from "./store/profile-store.js";
import { DataDirLock } from "./store/data-dir-lock.js";
import { VERSION } from "./version.js";
import { PortraitClient } from "./client/portrait-client.js";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { keyCheck, readPseudonymKey } from "./shard/pseudonym.js";
import { MAX_HOPS } from "./shard/identity.js";

/** Period of the audience ticks (timers on the engine clock, backfill chunks), ms: time-driven transitions fire within about this of their due time. */
const AUDIENCE_TICK_MS = 100;
/** Most transitions of ticks being published before a tick waits for them (a backfill's enters, time-driven exits). */
const TICK_PUBLISH_BOUND = 20_000;

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

/** Starts an embedded nats-server on the URL's loopback port, or explains why it cannot. */
async function embeddedServer(cfg: EngineConfig, log: Logger, root: Logger): Promise<NatsServerHandle | undefined> {
  if (cfg.embeddedNats === "never") return undefined;
  const first = cfg.natsUrl.split(",")[0]!.trim();
  if (cfg.embeddedNats === "auto" && (await probeNats(first, 1000))) return undefined;
  // A secured server that is down must not be replaced by an open local one.
  const secured = Object.keys(natsOptionsOf(cfg)).some((k) => k !== "natsUrl");
  if (cfg.embeddedNats === "auto" && secured) return undefined;
  const url = new URL(first.includes("://") ? first : `nats://${first}`);
  if (!LOOPBACK.has(url.hostname)) {
    throw new ConfigError(`nothing answers at ${first}, and an embedded nats-server can only be started on a loopback address`);
  }
  log.info({ port: Number(url.port || 4222) }, "no NATS server answers; starting an embedded nats-server with JetStream");
  // It outlives a crash of this engine (clients of other processes keep their broker; the next start finds it at the URL).
  const server = await startNatsServer({ outliveParent: true, host: "127.0.0.1", port: Number(url.port || 4222), storeDir: join(cfg.dataDir, "nats") });
  root.child({ component: "nats-server" }).info({ pid: server.pid, url: server.url, logFile: server.logFile }, "embedded nats-server started");
  return server;
}

/** The crash-test hook: SIGKILL after `batches` committed batches, before the next acknowledgement. */
function faultKiller(batches: number | undefined, log: Logger): (() => void) | undefined {
  if (batches === undefined) return undefined;
  log.warn({ batches }, "fault injection on: this process will SIGKILL itself before an acknowledgement");
  let n = 0;
  return () => {
    if (++n > batches) process.kill(process.pid, "SIGKILL");
  };
}

/** Attempts and per-attempt timeout of a tombstone publish: together under a client's default 5-second request timeout. */
const TOMBSTONE_ATTEMPTS = 3;
const TOMBSTONE_ATTEMPT_TIMEOUT_MS = 1200;

/**
 * Publishes a tombstone through JetStream and resolves with its PubAck: the
 * tombstone is stored. Its event id is the `Nats-Msg-Id`, so a retry after a
 * lost acknowledgement is dropped as a duplicate (stored once); a tombstone
 * that cannot be stored is PUBLISH_FAILED (retryable: the user is already
 * forgotten, and a second forget publishes a new tombstone).
 */
async function storeTombstone(js: JetStreamClient, s: Subjects, tombstoneEventId: string, data: Uint8Array): Promise<void> {
  let last: unknown;
  for (let i = 0; i < TOMBSTONE_ATTEMPTS; i++) {
    try {
      await js.publish(s.tombstones, data, { msgID: tombstoneEventId, expect: { streamName: s.tombstoneStream }, timeout: TOMBSTONE_ATTEMPT_TIMEOUT_MS });
      return;
    } catch (err) {
      last = err;
      // No stream (or JetStream away) answers at once: a short pause before trying again.
      if (i + 1 < TOMBSTONE_ATTEMPTS) await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new PortraitError(ErrorCode.PUBLISH_FAILED,
    `the user was forgotten, but its tombstone could not be stored in stream ${s.tombstoneStream} (${(last as Error)?.message ?? String(last)}); forget again to publish one`,
    { cause: last });
}

export class Engine {
  readonly config: EngineConfig;
  readonly subjects: Subjects;
  readonly metrics: EngineMetrics;
  readonly log: Logger;
  readonly #root: Logger;
  #lock?: DataDirLock;
  #nats?: NatsServerHandle;
  #nc?: NatsConnection;
  #pool?: ShardPool;
  #recs?: RecsHost;
  #inference?: InferencePool;
  #engineModels?: EngineModels;
  #consumers: PartitionConsumer[] = [];
  #cluster?: ClusterNode;
  #api?: QueryApi;
  #ops?: OpsServer;
  #dashboard?: Dashboard;
  #audienceWatch?: { stop(): void };
  #tickTimer?: NodeJS.Timeout;
  #ticking: Promise<void> | undefined;
  /** Transitions of ticks being published, and how many messages they hold. */
  readonly #tickPublishes = new Set<Promise<void>>();
  #tickPublishing = 0;
  #backfill: BackfillView = { running: false, scanned: 0, total: 0 };
  readonly #models: DashboardModel[] = [];
  #ready = false;
  #closing: Promise<void> | undefined;
  /** Set when the engine failed: close() then leaves an embedded nats-server running for the other clients. */
  #failed = false;
  #fatal: ((err: unknown) => void) | undefined;
  /** Rejects when the engine fails (a shard died, a dead letter could not be written); resolves after close(). */
  readonly done: Promise<void>;
  #resolveDone!: () => void;

  private constructor(cfg: EngineConfig, root: Logger) {
    this.config = cfg;
    this.#root = root;
    this.log = root.child({ component: "engine" });
    this.subjects = subjects(cfg.subjectPrefix);
    this.metrics = new EngineMetrics();
    this.done = new Promise<void>((resolve, reject) => {
      this.#resolveDone = resolve;
      this.#fatal = reject;
    });
    this.done.catch(() => undefined);
  }

  /** Starts an engine; resolves when it is ready (consuming and answering queries). */
  static async start(options: EngineOptions = {}, logger?: Logger): Promise<Engine> {
    const cfg = compileEngineOptions(options);
    // Components bind their own `component`: the root logger has none, so no line carries the key twice.
    const engine = new Engine(cfg, logger ?? createLogger(cfg.logLevel));
    try {
      await engine.#start();
    } catch (err) {
      await engine.close();
      throw err;
    }
    return engine;
  }

  /** The recs worker, then the shards (each posts its item events to the recs worker). */
  async #startShards(cfg: EngineConfig, models: EngineModels["dirs"], internalMacKey: Uint8Array, pseudonymKey: Uint8Array | undefined): Promise<{ pool: ShardPool; recs: RecsHost }> {
    const s = this.subjects;
    const recs = await RecsHost.start({ recs: cfg.recs, ...(models.deepfmDir !== undefined ? { deepfmDir: models.deepfmDir } : {}), logLevel: cfg.logLevel },
      cfg.workers, (err) => this.#fail(err, { component: "recs" }), cfg.workerSemiSpaceBytes);
    this.#recs = recs.host;
    this.#pool = await ShardPool.start(cfg.workers, cfg.partitions, {
      dataDir: cfg.dataDir,
      mapSizeBytes: cfg.mapSizeBytes,
      compressProfiles: cfg.compressProfiles,
      profile: cfg.profile,
      validation: {
        partitions: cfg.partitions,
        maxEventBytes: cfg.maxEventBytes,
        maxFutureSkewMs: cfg.maxFutureSkewMs,
        currency: cfg.currency,
        internalKey: internalMacKey,
      },
      maxActors: cfg.maxActorsPerShard,
      maxActorBytes: cfg.maxActorBytesPerShard,
      logLevel: cfg.logLevel,
      subjectPrefix: cfg.subjectPrefix,
      backfillChunk: cfg.audienceBackfillPerTick,
      models: {
        ...(models.lstmDir !== undefined ? { lstmDir: models.lstmDir } : {}), ...(models.churnDir !== undefined ? { churnDir: models.churnDir } : {}),
        ...(models.propensityDir !== undefined ? { propensityDir: models.propensityDir } : {}),
        ...(models.sentimentDir !== undefined ? { sentimentDir: models.sentimentDir } : {}), shopSource: streamSource(s.eventStream),
      },
      ...(pseudonymKey !== undefined ? { pseudonymKey } : {}),
      ...(cfg.cluster !== undefined ? { changelog: true } : {}),
    }, (shard, err) => this.#fail(err, { shard }), recs.itemEvents, { maxShardQueueEvents: cfg.maxShardQueueEvents, maxHeapBytes: cfg.maxShardHeapBytes, semiSpaceBytes: cfg.workerSemiSpaceBytes });
    return { pool: this.#pool, recs: recs.host };
  }

  async #start(): Promise<void> {
    const cfg = this.config;
    const s = this.subjects;
    // First: a second engine on this data dir is refused before it touches anything.
    this.#lock = await DataDirLock.acquire(cfg.dataDir);
    if (cfg.httpPort >= 0) {
      const dashboard = new Dashboard({
        metrics: this.metrics, version: VERSION, isReady: () => this.#ready, models: () => this.#models, backend: () => this.#inference?.backend,
      });
      this.#dashboard = dashboard;
      this.#ops = await startOpsServer(cfg.httpHost, cfg.httpPort, this.metrics.registry, () => this.#ready, (req, res) => dashboard.handle(req, res));
      dashboard.start();
    }
    this.#nats = await embeddedServer(cfg, this.log, this.#root);
    const url = this.#nats?.url ?? cfg.natsUrl;
    this.#lock.describe({ natsUrl: url, ...(this.#ops ? { httpPort: this.#ops.port } : {}) });
    this.#nc = await connectNats({ ...natsOptionsOf(cfg), natsUrl: url, name: "portrait-engine" });
    this.#watchConnection(this.#nc);
    const jsm = await this.#nc.jetstreamManager();
    const replicas = cfg.replicas;
    // Replicated streams (or cluster mode): a clustered nats-server answers 503 for a moment after a stream is created,
    // and may not answer racing creators at all, so each setup call is retried (bounded); otherwise the first error fails.
    const setup = <T>(what: string, f: () => Promise<T>): Promise<T> => (cfg.cluster === undefined && replicas === 1 ? f() : retrySetup(what, f));
    await setup("event streams", () => ensureStreams(jsm, s, { ...cfg, replicas }));
    // Signs and checks hand-overs and forwarded events (README "Identity"); one per deployment, never logged.
    const js = this.#nc.jetstream();
    const internalMacKey = await setup("internal key", () => internalKey(js, s.engineBucket, replicas));

    // Read once; never logged. Refused with CONFIG when the data dir was written under another key.
    const pseudonymKey = cfg.pseudonymKeyFile !== undefined ? readPseudonymKey(cfg.pseudonymKeyFile) : undefined;
    const meta = new ProfileStore({ dataDir: cfg.dataDir, mapSizeBytes: cfg.mapSizeBytes });
    try {
      meta.checkPartitions(cfg.partitions);
      meta.checkPseudonymKey(pseudonymKey !== undefined ? keyCheck(pseudonymKey) : undefined);
    } finally {
      await meta.close();
    }
    const engineModels = (this.#engineModels = await EngineModels.start(cfg, this.log, this.metrics, this.#models, this.#nc));
    const models = engineModels.dirs;
    // The inference pool loads its scorer while the recs worker and the shards start: nothing between them waits on it.
    // Both are awaited before a failure is thrown, so that close() finds whatever did start.
    const inferenceStarted = models.deepfmDir === undefined ? Promise.resolve() : InferencePool.start(models.deepfmDir, cfg.inference, this.metrics.registry).then((p) => {
      this.#inference = p;
      this.log.info({ backend: p.backend, version: p.version }, "DeepFM inference pool ready");
    });
    const shardsStarted = this.#startShards(cfg, models, internalMacKey, pseudonymKey);
    const [inferenceDone, shardsDone] = await Promise.allSettled([inferenceStarted, shardsStarted]);
    if (inferenceDone.status === "rejected") throw inferenceDone.reason;
    if (shardsDone.status === "rejected") throw shardsDone.reason;
    const { pool: pool, recs: recsHost } = shardsDone.value;
    // Audience transitions committed before the last stop and not confirmed published: published again (JetStream drops copies by id).
    for (const [p, msgs] of pool.outboxAtStart) {
      await publishOutbound(js, msgs);
      pool.published(p, outboxRefs(msgs));
      this.log.info({ partition: p, transitions: msgs.length }, "audience outbox republished");
    }
    // Audience definitions: the KV bucket's set before the first batch, then every change.
    const defsKv = await setup("audience definitions", () => openDefinitions(js, s.audienceBucket, replicas));
    if (cfg.cluster !== undefined) {
      // Cluster mode: an audience's members, counts, timers and transition outbox live in the owner's LMDB, which a takeover
      // does not carry yet; so audiences are refused (CONFIG), here and by every audience request, rather than counted wrong.
      const defined = await setup("audience definitions", () => readDefinitions(defsKv));
      if (defined.size > 0) {
        throw new ConfigError(`audiences are not available in cluster mode (--cluster) in this version, and ${s.audienceBucket} holds ${defined.size} ` +
          `(${[...defined.keys()].slice(0, 5).join(", ")}): delete them, or run without --cluster`);
      }
    } else {
      this.#audienceWatch = await watchDefinitions(defsKv, this.log.child({ component: "audiences" }), async (defs) => {
        await pool.setAudiences(defs);
        this.log.info({ audiences: defs.length }, "audience definitions applied");
      });
    }
    this.#startTicks(js);
    const beforeAck = faultKiller(cfg.faultKillBeforeAckAfterBatches, this.log);
    // Every reply is kept for judging its logged feedback; what passes goes to the training log (src/recs/feedback-log.ts).
    const feedbackLog = new FeedbackLog(js, s, {
      windowMs: cfg.feedbackWindowMs, maxRequests: cfg.feedbackMaxRequests,
      keep: cfg.feedbackKeep === "always" || cfg.explorationShare > 0 ? "always" : "when-asked",
    });
    this.metrics.feedbackRepliesKept = () => feedbackLog.size;
    const consumerOf = (p: number, fence?: ConsumerFence) => new PartitionConsumer(js, jsm, s, pool, this.metrics, this.#root, {
      partition: p,
      maxBatchMessages: cfg.maxBatchMessages,
      prefetchMessages: Math.min(cfg.maxAckPending, cfg.maxBatchMessages * 4),
      consumer: cfg,
      onFatal: (err) => this.#fail(err, { partition: p }),
      beforeAck,
      feedback: (logged) => feedbackLog.judge(logged),
      fence,
    });
    if (cfg.cluster === undefined) {
      for (let p = 0; p < cfg.partitions; p++) {
        const c = consumerOf(p);
        await c.start(pool.appliedAtStart.get(p) ?? 0);
        this.#consumers.push(c);
      }
    } else {
      // Cluster mode (README "Scale-out"): the partitions this node owns come and go with their leases.
      this.#cluster = new ClusterNode(cfg.cluster, {
        js, jsm, subjects: s, partitions: cfg.partitions, pool: pool, metrics: new ClusterMetrics(this.metrics.registry), log: this.#root,
        consumer: (p, fence) => consumerOf(p, fence),
      });
      await this.#cluster.start();
    }
    // Upserts are idempotent (the last of an item wins), so a replay cut short by a fresh clustered stream's 503 is simply run again.
    const replayed = await setup("catalog replay", () => replayCatalog(js, jsm, s, async (data) => {
      const r = await recsHost.upsert(data);
      if (!r.ok) this.log.warn({ code: r.error.code, reason: r.error.message }, "stored catalog upsert rejected on replay");
    }));
    if (replayed > 0) this.log.info({ upserts: replayed }, "catalog replayed");
    const recommender = new Recommender(pool, recsHost, this.#inference, (userId) => partitionOf(userId, cfg.partitions), engineModels.initialPairing(this.#inference), {
      exploration: { share: cfg.explorationShare, pool: cfg.explorationPool, sourceShare: cfg.explorationSourceShare },
      log: feedbackLog,
      onExplored: () => this.metrics.recsExplored.inc(),
    });
    await engineModels.attach({
      shards: pool, recs: recsHost, recommender,
      inference: () => this.#inference,
      startInference: async (dir) => (this.#inference = await InferencePool.start(dir, cfg.inference, this.metrics.registry)),
    });
    this.#api = await QueryApi.start(this.#nc, s, pool, this.metrics, this.#root, {
      partitions: cfg.partitions,
      maxInflightQueries: cfg.maxInflightQueries,
      maxInflightRecommends: cfg.maxInflightRecommends,
      maxQueryWaitMs: cfg.maxQueryWaitMs,
      version: VERSION,
      route: this.#cluster,
    }, {
      recommender,
      catalog: {
        upsert: (bytes) => recsHost.upsert(bytes),
        store: async (bytes) => {
          const itemId = pb.CatalogUpsert.decode(plainBytes(bytes)).itemId;
          await js.publish(s.catalogItem(itemId), bytes);
        },
      },
      forget: {
        forget: async (userId) => {
          // The removal would have to reach the owner and its changelog in order with the user's batches: not built yet.
          if (cfg.cluster !== undefined) throw new ConfigError("forget is not available in cluster mode (--cluster) in this version: the user would stay in the partition's changelog");
          // A merged user (README "Identity"): the forget reaches the primary through the aliases and erases every id merged into it.
          let partition = partitionOf(userId, cfg.partitions);
          let resolved: string | undefined;
          let askedKey: string | undefined;
          let r = await pool.forget(partition, userId);
          // The aliases walked on the way: erased too, even if the primary does not list them yet (a hand-over in flight).
          const walked: [string, number][] = [];
          for (let hop = 0; r.ok && r.alias !== undefined; hop++) {
            if (hop >= MAX_HOPS) throw new PortraitError(ErrorCode.INTERNAL, "the user's aliases form a loop");
            askedKey ??= r.key;
            walked.push([r.key, partition]);
            [resolved, partition] = r.alias;
            r = await pool.forget(partition, userId, resolved);
          }
          if (!r.ok) throw fromWire(r.error);
          if (r.outbound.length > 0) {
            // The exits (reason "forgotten") were committed in the outbox with the removal; a failed publish is republished at the next start.
            await publishOutbound(js, r.outbound);
            pool.published(partition, outboxRefs(r.outbound));
          }
          askedKey ??= r.key;
          const merged: string[] = resolved !== undefined ? [resolved] : [];
          const aliases = [...(r.aliases ?? [])];
          for (const [k, p] of walked) if (!aliases.some(([x]) => x === k)) aliases.push([k, p]);
          for (const [k, p] of aliases) {
            const a = await pool.forgetAlias(p, k);
            if (!a.ok) throw fromWire(a.error);
            if (k !== askedKey) merged.push(k);
          }
          // Published notices and transitions naming the user leave the outboxes now, not with each shard's next commit.
          await pool.flushOutboxes();
          const tombstoneEventId = randomUUID();
          // Stored in the tombstone stream (PubAck) before the caller hears of the forget.
          await storeTombstone(js, s, tombstoneEventId, pb.Tombstone.encode({ userId, forgottenMs: Date.now(), tombstoneEventId }).finish());
          for (const k of merged) {
            const id = randomUUID();
            await storeTombstone(js, s, id, pb.Tombstone.encode({ userId: k, forgottenMs: Date.now(), tombstoneEventId: id, mergedWithUserId: userId }).finish());
          }
          return { existed: r.existed, tombstoneEventId, mergedIdsErased: merged.length };
        },
      },
      audiences: new AudienceAdmin(defsKv, pool, () => this.#backfill, cfg.cluster === undefined ? undefined
        : "audiences are not available in cluster mode (--cluster) in this version: their members, counts and timers are not carried through a takeover"),
    });
    // Ready means the server has our subscriptions: a query sent now finds a responder.
    await this.#nc.flush();
    if (this.#dashboard !== undefined) {
      // The page shows what clients get: it asks the engine's own endpoints.
      const client = new PortraitClient(this.#nc, { partitions: cfg.partitions, subjectPrefix: cfg.subjectPrefix });
      this.#dashboard.users = {
        profile: (userId) => client.requestJson(s.profileGet, { userId }),
        recommend: (userId, k) => client.requestJson(s.recommend, { userId, k }),
      };
    }
    this.#ready = true;
    this.metrics.ready.set(1);
    this.metrics.shardStats = () => this.#pool?.stats() ?? Promise.resolve([]);
    this.metrics.workerStats = async () => {
      const r = await recsHost.recentStats();
      if (r === undefined) return [];
      const tables = {
        catalog: r.items, covisitation: r.covisitationItems, trending: r.trendingItems,
        sessions: r.sessions, session_index_items: r.sessionIndexItems, rule_items: r.ruleItems,
      };
      return [{ thread: "recs", heap: r.heap, tables, tableBytes: r.stateBytes }];
    };
    this.metrics.recsQueuedItemEvents = () => recsHost.itemEventsQueued();
    this.metrics.shardBatchesHeld = () => pool.heldBatches();
    this.log.info({
      version: VERSION, nats: url, embeddedNats: this.#nats !== undefined, partitions: cfg.partitions, workers: cfg.workers,
      dataDir: cfg.dataDir, metrics: this.#ops ? `http://${cfg.httpHost}:${this.#ops.port}/metrics` : "off",
    }, "engine ready");
  }

  /**
   * Time passing for audiences: every AUDIENCE_TICK_MS each shard fires its
   * due timers on the engine clock and runs a chunk of a running backfill;
   * the committed transitions are then published (and dropped from the
   * outboxes). One tick at a time; a failure stops the engine like a failed
   * batch (the outboxes keep what was not published).
   */
  #startTicks(js: JetStreamClient): void {
    const pool = this.#pool!;
    const killBeforePublish = faultKiller(this.config.faultKillBeforeAudiencePublishAfterTicks, this.log);
    // Cluster mode: only the partitions this node holds a lease on (none before the cluster node has started).
    const cluster = this.config.cluster !== undefined;
    const run = async () => {
      const results = await pool.tick(cluster ? (this.#cluster?.leased() ?? []) : undefined);
      if (results.some((r) => Object.keys(r.outbound).length > 0)) killBeforePublish?.();
      // Published while the next ticks run (committed in the outboxes, so a crash loses none); a tick waits for them only
      // beyond TICK_PUBLISH_BOUND messages in flight, and close waits for all.
      for (const r of results) {
        for (const [p, msgs] of Object.entries(r.outbound) as [string, OutboundMessage[]][]) {
          // A lease lost during the tick: its transitions stay in this node's outbox; the owner publishes its own.
          if (cluster && this.#cluster?.leased().includes(Number(p)) !== true) continue;
          this.#tickPublishing += msgs.length;
          const done: Promise<void> = publishOutbound(js, msgs).then(() => pool.published(Number(p), outboxRefs(msgs)))
            .catch((err: unknown) => this.#fail(err, { component: "audience-ticks" })).finally(() => {
            this.#tickPublishing -= msgs.length;
            this.#tickPublishes.delete(done);
          });
          this.#tickPublishes.add(done);
        }
      }
      if (this.#tickPublishing > TICK_PUBLISH_BOUND) await Promise.all(this.#tickPublishes);
      const running = results.filter((r) => r.backfill.running);
      this.#backfill = running.length === 0
        ? { running: false, scanned: 0, total: 0 }
        : { running: true, scanned: Math.min(...running.map((r) => r.backfill.scanned)), total: Math.max(...running.map((r) => r.backfill.total)) };
    };
    this.#tickTimer = setInterval(() => {
      if (this.#ticking !== undefined || this.#closing !== undefined) return;
      this.#ticking = run().catch((err: unknown) => this.#fail(err, { component: "audience-ticks" })).finally(() => (this.#ticking = undefined));
    }, AUDIENCE_TICK_MS);
  }

  #watchConnection(nc: NatsConnection): void {
    void (async () => {
      for await (const st of nc.status()) {
        if (st.type === "disconnect" || st.type === "reconnect") this.log.warn({ event: st.type, server: st.data }, "NATS connection");
        else if (st.type === "error") this.log.error({ data: st.data }, "NATS error");
      }
    })().catch((err) => this.log.error({ err }, "NATS status watcher failed"));
  }

  #fail(err: unknown, where: Record<string, unknown>): void {
    this.#failed = true;
    if (this.#fatal === undefined) return;
    this.log.fatal({ err, ...where }, "engine failed; unacknowledged events will be redelivered after a restart");
    const fatal = this.#fatal;
    this.#fatal = undefined;
    fatal(err);
  }

  get ready(): boolean {
    return this.#ready;
  }

  /** The URL clients should use (the embedded server's when one was started). */
  get natsUrl(): string {
    return this.#nats?.url ?? this.config.natsUrl;
  }

  /** Port of the /metrics endpoint, or undefined when off. */
  get httpPort(): number | undefined {
    return this.#ops?.port;
  }

  /** The running models and their hot swap (src/engine-models.ts). */
  get models(): EngineModels | undefined {
    return this.#engineModels;
  }

  /** Cluster mode: this node's leases and served partitions (undefined when off). */
  get cluster(): ClusterNode | undefined {
    return this.#cluster;
  }

  /** The embedded nats-server this engine started, if any. */
  get embeddedServer(): { pid: number; url: string } | undefined {
    return this.#nats !== undefined ? { pid: this.#nats.pid, url: this.#nats.url } : undefined;
  }

  /** Fault injection, for tests only: fails the engine as an internal failure would (`done` rejects with `err`). */
  faultFail(err: Error): void {
    this.#fail(err, { fault: "injected" });
  }

  /**
   * Fault injection, for tests only: blocks shard `shard`'s thread for `ms`
   * (as a very long batch would), starting as soon as the shard reaches this
   * call; what is sent to the shard afterwards waits. Resolves when the shard
   * is free again.
   */
  faultStallShard(shard: number, ms: number): Promise<void> {
    if (this.#pool === undefined) return Promise.reject(new Error("the engine is not started"));
    return this.#pool.faultStall(shard, ms);
  }

  /**
   * Fault injection, for tests only: blocks the recs worker's thread for `ms`
   * (as a flood of item events would); item events and recommendation
   * requests sent to it meanwhile wait. Resolves when it is free again.
   */
  faultStallRecs(ms: number): Promise<void> {
    if (this.#recs === undefined) return Promise.reject(new Error("the engine is not started"));
    return this.#recs.faultStall(ms);
  }

  /**
   * Graceful drain and close, in reverse start order, within drainTimeoutMs.
   * Every batch handed to a shard is committed and acknowledged before the
   * shards close. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#ready = false;
    this.metrics.ready.set(0);
    const deadline = Date.now() + this.config.drainTimeoutMs;
    // Each step gets what is left of the one deadline; a step that overruns is
    // abandoned (its unacknowledged events are redelivered to the next start)
    // and the later steps still run, so LMDB is always closed.
    const step = async (name: string, f: () => Promise<unknown> | undefined, minMs = 0): Promise<boolean> => {
      let timer: NodeJS.Timeout | undefined;
      try {
        const work = Promise.resolve(f()).then(() => true);
        const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), Math.max(minMs, deadline - Date.now()))));
        const done = await Promise.race([work, late]);
        if (!done) this.log.warn({ step: name, drainTimeoutMs: this.config.drainTimeoutMs }, "shutdown step overran the drain deadline; moving on");
        return done;
      } catch (err) {
        this.log.warn({ err, step: name }, "shutdown step failed");
        return false;
      } finally {
        clearTimeout(timer);
      }
    };
    await step("api", () => this.#api?.stop());
    clearInterval(this.#tickTimer);
    this.#audienceWatch?.stop();
    await step("audience-ticks", async () => {
      await this.#ticking;
      await Promise.all(this.#tickPublishes);
    });
    await step("models", () => this.#engineModels?.close());
    await step("consumers", () => Promise.all([...this.#consumers.map((c) => c.drain()), this.#cluster?.close()]));
    // Closing LMDB is local and quick: it gets a few seconds even past the deadline.
    await step("shards", () => this.#pool?.close(), 5000);
    await step("inference", () => this.#inference?.close(), 2000);
    await step("recs", () => this.#recs?.close(), 2000);
    const nc = this.#nc;
    if (nc && !nc.isClosed()) {
      await step("nats", () => nc.drain());
      // A drain attempted while disconnected can leave nats.js's reconnect loop
      // and heartbeat timers running; close() stops them (a no-op when drained).
      await nc.close().catch(() => undefined);
    }
    if (this.#failed && this.#nats !== undefined) {
      // A failed engine must not take down a broker that other processes use; the next start finds it at the URL and uses it.
      this.log.warn({ pid: this.#nats.pid, url: this.#nats.url }, "the engine failed: leaving its embedded nats-server running for other clients");
    } else {
      await this.#nats?.stop().catch((err: unknown) => this.log.warn({ err }, "embedded nats-server did not stop cleanly"));
    }
    this.#dashboard?.stop();
    await this.#ops?.close();
    await this.#lock?.release();
    this.log.info("engine closed");
    this.#resolveDone();
  }

}
