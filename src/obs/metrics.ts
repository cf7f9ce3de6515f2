/**
 * Prometheus metrics of one engine. Names follow
 * `portrait_<component>_<what>_<unit>`; queue wait and run times are
 * histograms. Served at GET /metrics by the engine's HTTP server.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { heapStats, type HeapStats } from "./heap.js";

/** What a shard reports of itself (ShardApi.stats, and piggy-backed on each batch result). */
export interface ShardStats {
  shard: number;
  actorsCached: number;
  /** Estimated bytes of the cached actors (ActorCache.bytes). */
  actorBytes: number;
  pendingWrites: number;
  /** Item events posted to the recs worker since start. */
  itemEventsPosted: number;
  /** Item events not posted to the recs worker since start because its queue was full (src/threads/item-event-queue.ts). */
  itemEventsDropped: number;
  /** Item events posted after waiting for room in the recs worker's queue (back-pressure, recs option maxItemEventWaitMs). */
  itemEventsWaited: number;
  /** Identity counters since start (README "Identity"): identifies, merges folded, duplicate hand-overs skipped, events forwarded, alias-table reads. */
  identity?: { identifies: number; merges: number; duplicateMerges: number; forwarded: number; forgottenHandovers: number; aliasReads: number };
  heap: HeapStats;
}

/** The memory of the threads other than the shards and main, as the engine last heard it. */
export interface WorkerThreadStats {
  /** Thread name in `portrait_thread_heap_bytes{thread}`, e.g. "recs". */
  thread: string;
  heap: HeapStats;
  /** Entries per bounded table of the thread (the recs worker: items, sessions, rules...), for `portrait_recs_state_entries{table}`. */
  tables?: Record<string, number>;
  /** Estimated bytes per table (the recs worker's maxStateBytes estimate), for `portrait_recs_state_bytes{table}`. */
  tableBytes?: Record<string, number>;
}

const LATENCY_BUCKETS_S = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5];
/**
 * The stages of stageSeconds, in path order: each from the end of the one
 * before (the first from the event's store in JetStream); "total" is stored
 * -> acknowledged.
 */
export const INGEST_STAGES = ["jetstream", "gather", "window", "post", "apply", "commit", "return", "settle", "total"] as const;

/**
 * The stages of queryStageSeconds, a profile lookup's way through its shard:
 * post (main posts it on the shard's query port -> the shard takes it up:
 * the wait behind the shard's batch apply or other work), run (the shard
 * answering the calls of that message), return (-> main receives the answer).
 */
export const QUERY_STAGES = ["post", "run", "return"] as const;

/** Finer than LATENCY_BUCKETS_S below 50 ms: the stages of the freshness path (stageSeconds). */
const STAGE_BUCKETS_S = [0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5];
const BATCH_BUCKETS = [1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096];

export class EngineMetrics {
  readonly registry = new Registry();
  /** Where the actor-cache gauge reads from at scrape time; set by the engine. */
  shardStats: () => Promise<ShardStats[]> = () => Promise.resolve([]);
  /** Where the per-thread heap gauge reads the other workers from; set by the engine. */
  workerStats: () => Promise<WorkerThreadStats[]> = () => Promise.resolve([]);
  /** Item events queued for the recs worker (the count shared by the shards and the worker), undefined without one; set by the engine. */
  recsQueuedItemEvents: () => number | undefined = () => undefined;
  /** Served replies the feedback log keeps (FeedbackLog.size); set by the engine. */
  feedbackRepliesKept: () => number | undefined = () => undefined;
  /** Batches held on main per shard, waiting for room in the shard's queue (ShardPool.heldBatches); set by the engine. */
  shardBatchesHeld: () => number[] = () => [];
  readonly eventsApplied = new Counter({
    name: "portrait_ingest_events_applied_total",
    help: "Events applied to profiles and committed.",
    registers: [this.registry],
  });
  readonly eventsSkipped = new Counter({
    name: "portrait_ingest_events_skipped_total",
    help: "Redelivered events skipped because their stream sequence was already applied.",
    registers: [this.registry],
  });
  readonly consumerRepositions = new Counter({
    name: "portrait_ingest_consumer_repositions_total",
    help: "Partition consumers recreated after their last handed-over event because a delivery went missing or came out of order (broker restarts), by partition.",
    labelNames: ["partition"] as const,
    registers: [this.registry],
  });
  readonly deadLetters = new Counter({
    name: "portrait_ingest_dead_letters_total",
    help: "Events that failed decoding or validation and were published to the dead-letter subject, by reason.",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly batchSize = new Histogram({
    name: "portrait_ingest_batch_size_messages",
    help: "Messages per batch handed to a shard.",
    buckets: BATCH_BUCKETS,
    registers: [this.registry],
  });
  readonly applySeconds = new Histogram({
    name: "portrait_ingest_batch_apply_seconds",
    help: "Time a shard spent decoding, validating and applying a batch.",
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  });
  readonly commitSeconds = new Histogram({
    name: "portrait_ingest_batch_commit_seconds",
    help: "Time from queuing a batch's LMDB writes to their commit.",
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  });
  readonly batchSeconds = new Histogram({
    name: "portrait_ingest_batch_seconds",
    help: "Time from handing a batch to its shard to acknowledging it (queue wait + apply + commit + dead letters).",
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  });
  readonly stageSeconds = new Histogram({
    name: "portrait_ingest_stage_seconds",
    help: "Where a batch's oldest event spends its time on the way to its acknowledgement, by stage (README \"Operations\"): jetstream (stored -> delivered to the consumer), gather (-> the batch is cut), window (-> handed to its shard: the shard's queue bound), post (-> its apply starts in the shard), apply (the batch's apply; an event is visible to queries once applied), commit (-> its LMDB commit), return (-> its result on main), settle (-> acknowledged: earlier batches, dead letters), total (stored -> acknowledged).",
    labelNames: ["stage"] as const,
    buckets: STAGE_BUCKETS_S,
    registers: [this.registry],
  });
  readonly queryStageSeconds = new Histogram({
    name: "portrait_query_stage_seconds",
    help: "Where profile lookups spend their time between main and their shard, by stage (QUERY_STAGES), one observation per message of lookups (those of one main turn travel together): post (posted on the shard's query port -> taken up by the shard, behind its batch apply), run (the shard answering the calls of that message), return (-> received on main). The rest of portrait_api_request_seconds is main's own work.",
    labelNames: ["stage"] as const,
    buckets: STAGE_BUCKETS_S,
    registers: [this.registry],
  });
  readonly freshnessSeconds = new Histogram({
    name: "portrait_ingest_freshness_seconds",
    help: "Time from an event's store in JetStream to the acknowledgement of its batch (applied, committed, visible), for the oldest event of each batch.",
    buckets: [...LATENCY_BUCKETS_S, 10, 30, 60],
    registers: [this.registry],
  });
  readonly lag = new Gauge({
    name: "portrait_ingest_lag_messages",
    help: "Messages in the stream not yet delivered to the partition's consumer, at its last acknowledged batch.",
    labelNames: ["partition"] as const,
    registers: [this.registry],
  });
  readonly inflightBatches = new Gauge({
    name: "portrait_ingest_inflight_batches",
    help: "Batches handed to shards and not yet acknowledged.",
    registers: [this.registry],
  });
  readonly heldBatches = new Gauge({
    name: "portrait_ingest_batches_held",
    help: "Batches waiting on the main thread for room in their shard's queue (the engine option maxShardQueueEvents), by shard.",
    labelNames: ["shard"] as const,
    registers: [this.registry],
    collect: () => {
      this.shardBatchesHeld().forEach((n, shard) => this.heldBatches.set({ shard: String(shard) }, n));
    },
  });
  readonly watermark = new Gauge({
    name: "portrait_ingest_event_time_watermark_seconds",
    help: "Latest event timestamp applied, Unix epoch seconds.",
    registers: [this.registry],
  });
  readonly requests = new Counter({
    name: "portrait_api_requests_total",
    help: "Request-reply queries by endpoint and result code (OK or an error code).",
    labelNames: ["endpoint", "code"] as const,
    registers: [this.registry],
  });
  readonly requestSeconds = new Histogram({
    name: "portrait_api_request_seconds",
    help: "Time from receiving a query to sending its reply.",
    labelNames: ["endpoint"] as const,
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  });
  readonly actorsCached = new Gauge({
    name: "portrait_shard_actors_cached",
    help: "Actors held in memory, by shard.",
    labelNames: ["shard"] as const,
    registers: [this.registry],
    collect: async () => {
      for (const st of await this.#scrapeShards()) this.actorsCached.set({ shard: String(st.shard) }, st.actorsCached);
    },
  });
  readonly actorCacheBytes = new Gauge({
    name: "portrait_shard_actor_cache_bytes",
    help: "Estimated bytes of the actors held in memory, by shard (bounded by the engine option maxActorBytesPerShard).",
    labelNames: ["shard"] as const,
    registers: [this.registry],
    collect: async () => {
      for (const st of await this.#scrapeShards()) this.actorCacheBytes.set({ shard: String(st.shard) }, st.actorBytes);
    },
  });
  readonly threadHeap = new Gauge({
    name: "portrait_thread_heap_bytes",
    help: "V8 heap of each engine thread (main, shard-<i>, recs), bytes: used, total (reserved by V8), external (ArrayBuffers and other off-heap memory V8 accounts to the thread), limit (the most the heap may reach: the worker heap bounds maxShardHeapBytes and recs.maxHeapBytes plus the young generation). A busy shard's figures are those its last batch reported.",
    labelNames: ["thread", "kind"] as const,
    registers: [this.registry],
    collect: async () => {
      const set = (thread: string, h: HeapStats) => {
        this.threadHeap.set({ thread, kind: "used" }, h.usedBytes);
        this.threadHeap.set({ thread, kind: "total" }, h.totalBytes);
        this.threadHeap.set({ thread, kind: "external" }, h.externalBytes);
        this.threadHeap.set({ thread, kind: "limit" }, h.limitBytes);
      };
      set("main", heapStats());
      const [shards, workers] = await Promise.all([this.#scrapeShards(), this.#scrapeWorkers()]);
      for (const st of shards) set(`shard-${st.shard}`, st.heap);
      for (const w of workers) set(w.thread, w.heap);
    },
  });
  readonly recsItemEventsQueued = new Gauge({
    name: "portrait_recs_item_events_queued",
    help: "Item events the shards posted to the recs worker and it has not observed yet (its input queue, bounded by the recs option maxQueuedItemEvents; exact).",
    registers: [this.registry],
    collect: () => {
      const queued = this.recsQueuedItemEvents();
      if (queued !== undefined) this.recsItemEventsQueued.set(queued);
    },
  });
  readonly recsStateEntries = new Gauge({
    name: "portrait_recs_state_entries",
    help: "Entries in each bounded table of the recs worker, by table: catalog items, co-visitation items, trending items, sessions (session-kNN), session-index items, items with sequential rules. Each is capped by its recs option (README \"Recommendations\").",
    labelNames: ["table"],
    registers: [this.registry],
    collect: async () => {
      for (const w of await this.#scrapeWorkers()) for (const [table, n] of Object.entries(w.tables ?? {})) this.recsStateEntries.set({ table }, n);
    },
  });
  readonly recsStateBytes = new Gauge({
    name: "portrait_recs_state_bytes",
    help: "Estimated heap bytes of each table of the recs worker's state, by table (src/recs/recs-bytes.ts); their sum is bounded by the recs option maxStateBytes, past which the entries touched longest ago across the tables are dropped.",
    labelNames: ["table"],
    registers: [this.registry],
    collect: async () => {
      for (const w of await this.#scrapeWorkers()) for (const [table, n] of Object.entries(w.tableBytes ?? {})) this.recsStateBytes.set({ table }, n);
    },
  });
  readonly recsItemEventsDropped = new Counter({
    name: "portrait_recs_item_events_dropped_total",
    help: "Item events the shards did not post to the recs worker because its queue stayed full (maxQueuedItemEvents) for maxItemEventWaitMs: co-visitation, trending and item statistics miss them; profiles are unaffected.",
    registers: [this.registry],
    collect: async () => {
      for (const st of await this.#scrapeShards()) {
        const seen = this.#droppedSeen.get(st.shard) ?? 0;
        if (st.itemEventsDropped > seen) {
          this.recsItemEventsDropped.inc(st.itemEventsDropped - seen);
          this.#droppedSeen.set(st.shard, st.itemEventsDropped);
        }
      }
    },
  });
  readonly recsItemEventsWaited = new Counter({
    name: "portrait_recs_item_events_waited_total",
    help: "Item events a shard posted to the recs worker only after waiting for room in its queue (back-pressure on ingest, at most recs.maxItemEventWaitMs per batch); none of them was dropped.",
    registers: [this.registry],
    collect: async () => {
      for (const st of await this.#scrapeShards()) {
        const seen = this.#waitedSeen.get(st.shard) ?? 0;
        if (st.itemEventsWaited > seen) {
          this.recsItemEventsWaited.inc(st.itemEventsWaited - seen);
          this.#waitedSeen.set(st.shard, st.itemEventsWaited);
        }
      }
    },
  });
  readonly identity = new Counter({
    name: "portrait_identity_total",
    help: "Identity work of the shards (README \"Identity\"), by kind: identifies (merges started), merges (hand-overs folded), duplicate_merges (hand-overs whose merge id was folded before), forwarded (events of an alias sent to its primary's partition), forgotten_handovers (hand-overs dropped because their primary was forgotten while they were in flight), alias_reads (alias-table reads on ingest).",
    labelNames: ["kind"] as const,
    registers: [this.registry],
    collect: async () => {
      for (const st of await this.#scrapeShards()) {
        if (st.identity === undefined) continue;
        for (const [kind, v] of [["identifies", st.identity.identifies], ["merges", st.identity.merges], ["duplicate_merges", st.identity.duplicateMerges],
          ["forwarded", st.identity.forwarded], ["forgotten_handovers", st.identity.forgottenHandovers], ["alias_reads", st.identity.aliasReads]] as const) {
          const key = `${st.shard}/${kind}`;
          const seen = this.#identitySeen.get(key) ?? 0;
          if (v > seen) {
            this.identity.inc({ kind }, v - seen);
            this.#identitySeen.set(key, v);
          }
        }
      }
    },
  });
  readonly modelInfo = new Gauge({
    name: "portrait_model_info",
    help: "1 for each model version the engine runs.",
    labelNames: ["model", "version"] as const,
    registers: [this.registry],
  });
  readonly lstmSteps = new Counter({
    name: "portrait_lstm_steps_total",
    help: "LSTM cell steps run in the shards (one per applied event when the LSTM runs).",
    registers: [this.registry],
  });
  readonly lstmSeconds = new Histogram({
    name: "portrait_lstm_batch_seconds",
    help: "Time to step the LSTM for one event batch (all waves).",
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  });
  readonly riskFlags = new Counter({
    name: "portrait_risk_flags_total",
    help: "Users newly flagged by a risk signal (velocity, refundAbuse, accountSharing; README \"Risk signals\"), counted when their score reaches 1.",
    labelNames: ["signal"] as const,
    registers: [this.registry],
  });
  readonly recImpressions = new Counter({
    name: "portrait_recs_impressions_total",
    help: "rec_impression events applied, by the model_version they carry.",
    labelNames: ["model_version"] as const,
    registers: [this.registry],
  });
  readonly recClicks = new Counter({
    name: "portrait_recs_clicks_total",
    help: "rec_click events applied, by the model_version they carry.",
    labelNames: ["model_version"] as const,
    registers: [this.registry],
  });
  readonly feedbackLogged = new Counter({
    name: "portrait_feedback_logged_total",
    help: "Logged recommendation feedback written to the training log, by kind (impression, click).",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly feedbackReplies = new Gauge({
    name: "portrait_recs_feedback_replies_kept",
    help: "Served recommend replies kept on the main thread for judging logged feedback (engine options feedbackMaxRequests, feedbackWindowMs, feedbackKeep).",
    registers: [this.registry],
    collect: () => {
      const n = this.feedbackRepliesKept();
      if (n !== undefined) this.feedbackReplies.set(n);
    },
  });
  readonly recsExplored = new Counter({
    name: "portrait_recs_explored_total",
    help: "Recommend replies that explored (a random order of the exploration pool).",
    registers: [this.registry],
  });
  readonly recCtr = new Gauge({
    name: "portrait_recs_ctr",
    help: "Online click-through rate per model version: rec_click / rec_impression events applied since start.",
    labelNames: ["model_version"] as const,
    registers: [this.registry],
    collect: async () => {
      const imps = new Map((await this.recImpressions.get()).values.map((v) => [String(v.labels.model_version), v.value]));
      for (const v of (await this.recClicks.get()).values) {
        const n = imps.get(String(v.labels.model_version)) ?? 0;
        if (n > 0) this.recCtr.set({ model_version: String(v.labels.model_version) }, v.value / n);
      }
      for (const [version, n] of imps) if (n > 0 && !(await this.recClicks.get()).values.some((v) => v.labels.model_version === version)) this.recCtr.set({ model_version: version }, 0);
    },
  });
  readonly ready = new Gauge({
    name: "portrait_engine_ready",
    help: "1 when the engine consumes and answers queries, 0 while starting or draining.",
    registers: [this.registry],
  });

  #watermarkMs = 0;
  /** Per shard, the itemEventsDropped already counted in recsItemEventsDropped. */
  readonly #droppedSeen = new Map<number, number>();
  /** Per shard and kind, the identity counts already counted in `identity`. */
  readonly #identitySeen = new Map<string, number>();
  /** Per shard, the itemEventsWaited already counted in recsItemEventsWaited. */
  readonly #waitedSeen = new Map<number, number>();
  #shardScrape: Promise<ShardStats[]> | undefined;
  #workerScrape: Promise<WorkerThreadStats[]> | undefined;

  /** One shardStats() call shared by the gauges of a scrape (their collects run concurrently). */
  #scrapeShards(): Promise<ShardStats[]> {
    if (this.#shardScrape === undefined) {
      const p = this.shardStats().catch(() => []);
      this.#shardScrape = p;
      void p.finally(() => (this.#shardScrape = undefined));
    }
    return this.#shardScrape;
  }

  #scrapeWorkers(): Promise<WorkerThreadStats[]> {
    if (this.#workerScrape === undefined) {
      const p = this.workerStats().catch(() => []);
      this.#workerScrape = p;
      void p.finally(() => (this.#workerScrape = undefined));
    }
    return this.#workerScrape;
  }

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "portrait_" });
    // prom-client also exports three sums of its labelled gauges under *_total names, a suffix Prometheus keeps
    // for counters; the labelled gauges (portrait_nodejs_active_{handles,requests,resources}{type}) carry the same.
    for (const name of ["active_handles_total", "active_requests_total", "active_resources_total"]) this.registry.removeSingleMetric(`portrait_nodejs_${name}`);
  }

  /** The latest event timestamp applied, Unix epoch ms. */
  get watermarkMs(): number {
    return this.#watermarkMs;
  }

  /** Current value of a counter or gauge, summed over its labels (for the demo, benchmarks and tests). */
  async total(metric: Counter | Gauge): Promise<number> {
    return (await metric.get()).values.reduce((a, v) => a + v.value, 0);
  }

  /** portrait_query_stage_seconds' children by QUERY_STAGES order, made at the first observation. */
  #queryStages: Histogram.Internal<"stage">[] | undefined;

  /** The stages of one answered message of profile lookups (CallPort's CallTimes): one observation per message, whatever its calls (an observation costs µs on main). */
  readonly observeQueryTimes = (t: { postedMs: number; startMs: number; endMs: number; receivedMs: number; calls: number }): void => {
    const h = (this.#queryStages ??= QUERY_STAGES.map((stage) => this.queryStageSeconds.labels({ stage })));
    const post = Math.max(0, t.startMs - t.postedMs) / 1000;
    const run = Math.max(0, t.endMs - t.startMs) / 1000;
    const ret = Math.max(0, t.receivedMs - t.endMs) / 1000;
    h[0]!.observe(post);
    h[1]!.observe(run);
    h[2]!.observe(ret);
  };

  /** Moves the event-time watermark forward (shards report their own, possibly older, clocks). */
  observeWatermark(ms: number): void {
    if (ms <= this.#watermarkMs) return;
    this.#watermarkMs = ms;
    this.watermark.set(ms / 1000);
  }
}

/**
 * Cluster mode's metrics (README "Scale-out"), registered only when the
 * engine runs with `cluster`: a single-node engine has none of them.
 */
export class ClusterMetrics {
  readonly partitionsOwned: Gauge<"node">;
  readonly takeovers: Counter<"node">;
  readonly takeoverSeconds: Histogram<"node">;
  readonly fenced: Counter<"node">;
  readonly changelogRecords: Counter<"node">;
  readonly changelogBytes: Counter<"node">;
  readonly changelogSeconds: Histogram<"node">;
  readonly changelogRestoredRecords: Counter<"node">;
  readonly strayConsumers: Counter<"node">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.partitionsOwned = new Gauge({ name: "portrait_cluster_partitions_owned", help: "Partitions this node serves under a lease.", labelNames: ["node"], registers });
    this.takeovers = new Counter({ name: "portrait_cluster_takeovers_total", help: "Partitions this node took over (restored from the changelog and started consuming).", labelNames: ["node"], registers });
    this.takeoverSeconds = new Histogram({
      name: "portrait_cluster_takeover_seconds", help: "From taking a partition's lease to consuming it: changelog read, mark, LMDB restore, consumer created.",
      labelNames: ["node"], buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30], registers,
    });
    this.fenced = new Counter({ name: "portrait_cluster_fenced_total", help: "Partitions this node stopped committing for because another node owns them (a refused changelog record or lease renewal).", labelNames: ["node"], registers });
    this.changelogRecords = new Counter({ name: "portrait_changelog_records_total", help: "User states published to the partitions' changelogs (in writes; compactions not counted).", labelNames: ["node"], registers });
    this.changelogBytes = new Counter({ name: "portrait_changelog_bytes_total", help: "Bytes of changelog writes published (compressed, as stored; compactions not counted).", labelNames: ["node"], registers });
    this.changelogSeconds = new Histogram({
      name: "portrait_changelog_append_seconds", help: "Time from a batch's LMDB commit to its changelog records being stored (the acknowledgement waits for it).",
      labelNames: ["node"], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers,
    });
    this.changelogRestoredRecords = new Counter({ name: "portrait_changelog_restored_records_total", help: "Changelog records read on takeovers.", labelNames: ["node"], registers });
    this.strayConsumers = new Counter({
      name: "portrait_cluster_stray_consumers_deleted_total", help: "Earlier owners' consumers of this node's partitions deleted by its periodic sweep (left by a fenced owner or by a creation carried out across a broker restart).",
      labelNames: ["node"], registers,
    });
  }
}
