/**
 * The recs worker thread: owns the recommendation index (catalog,
 * co-visitation, trending) and the item statistics the DeepFM item fields
 * read, fed with the item events every shard posts after each committed
 * batch. Per request it generates candidates and writes their DeepFM rows.
 * Its input queue is bounded (recs option maxQueuedItemEvents, shared by the
 * shards): when ingest outruns this thread the shards wait for room
 * (back-pressure on ingest), and drop a batch's item events only after
 * maxItemEventWaitMs (a stuck thread), so that recommendation requests never
 * wait behind more than the bound.
 *
 * The index is statistics, not state with a guarantee: it is rebuilt from the
 * live stream after a restart (and from catalog upserts, which are durable in
 * their own stream).
 */
import * as Comlink from "comlink";
import type { MessagePort } from "node:worker_threads";
import { EVENT_WEIGHTS } from "../actors/user-profile.js";
import { BadRequestError, OverloadedError, toWire } from "../errors.js";
import { readManifest } from "../models/artifacts.js";
import { checkDeepFmSchema, writeDeepFmRow, type DeepFmSchema, type ItemInfo } from "../models/deepfm-features.js";
import { heapStats } from "../obs/heap.js";
import { createLogger, type Logger } from "../obs/logger.js";
import { receiveItemEvents, type ItemEventBatch } from "../threads/item-event-queue.js";
import { exposeWorker, stallThread } from "../threads/worker-thread.js";
import { pb, plainBytes } from "../wire/proto.js";
import { fromCatalogUpsertMessage } from "./catalog.js";
import { countSources, generateCandidates } from "./candidates.js";
import { boundRecsIndex, createRecsIndex, observeItemEvent, type RecsIndex } from "./recs-index.js";
import type { CompiledRecsOptions } from "./recs-options.js";
import { orderCandidates, policyScore, resolvePolicy, type RankingPolicy } from "./ranking-policy.js";
import type { PrepareRequest, PrepareResult, RecsApi, RecsInit, RecsStats, UpsertResult } from "./recs-protocol.js";
import type { CandidateSource } from "./sources.js";
import type { ItemEvent } from "./types.js";

/** Interaction counts of an item, as the DeepFM trainer counts them (src/examples/deepfm-rows.ts). */
interface ItemCounts { popularity: number; users: number; firstMs: number; lastMs: number }

class Recs implements RecsApi {
  #o!: CompiledRecsOptions;
  #index!: RecsIndex;
  #schema: DeepFmSchema | undefined;
  /** Schemas by DeepFM version: the latest and those kept for pinned requests. */
  readonly #schemas = new Map<string, DeepFmSchema>();
  #policy!: RankingPolicy;
  /** The configured policy, served again when no feedback ranker is. */
  #configured!: RankingPolicy;
  #log!: Logger;
  readonly #counts = new Map<string, ItemCounts>();
  readonly #categoryCounts = new Map<string, { n: number }>();
  readonly #ports: MessagePort[] = [];
  #itemEvents = 0;
  #upserts = 0;
  #queued!: Int32Array;
  readonly #event: ItemEvent = {
    userId: "", itemId: "", type: 0 as ItemEvent["type"], timestampMs: 0, categoryId: "", categoryPath: "", brand: "", price: 0, currency: "", title: "",
  };

  async init(init: RecsInit): Promise<void> {
    this.#o = init.recs;
    this.#queued = init.itemEventsQueued;
    this.#index = createRecsIndex(this.#o);
    this.#log = createLogger(init.logLevel, { component: "recs" });
    this.#policy = this.#configured = resolvePolicy(this.#o.ranking);
    this.#log.info({ policy: this.#policy.name, from: this.#policy.from }, "ranking policy");
    if (init.deepfmDir !== undefined) this.setDeepFm(init.deepfmDir, []);
  }

  setDeepFm(dir: string | null, keep: string[]): string {
    let version = "";
    if (dir !== null) {
      const m = readManifest(dir);
      const schema = checkDeepFmSchema((m.features as { schema: DeepFmSchema }).schema);
      version = m.version;
      this.#schemas.set(version, schema);
      this.#schema = schema;
    } else {
      this.#schema = undefined;
    }
    for (const v of [...this.#schemas.keys()]) if (v !== version && !keep.includes(v)) this.#schemas.delete(v);
    return version;
  }

  setRanker(ranker: { version: string; weights: Partial<Record<CandidateSource, number>> } | null): void {
    this.#policy = ranker === null
      ? this.#configured
      : Object.freeze({ name: "blend", weights: Object.freeze({ ...ranker.weights }), from: `ranker@${ranker.version}` });
    this.#log.info({ policy: this.#policy.name, from: this.#policy.from }, "ranking policy");
  }

  addItemEventPort(port: MessagePort): void {
    receiveItemEvents(port, this.#queued, {
      observe: (b, from, to) => this.#observe(b, from, to),
      forget: (userKey) => {
        this.#index.covisitation.forgetUser(userKey);
        this.#index.sessions.forgetUser(userKey);
      },
    });
    this.#ports.push(port);
  }

  #observe(b: ItemEventBatch, from: number, to: number): void {
    for (let i = from; i < to; i++) {
      const type = b.types[i]!;
      const t = b.timestampsMs[i]!;
      // One event object, refilled per event: the index keeps its fields (strings), never the object.
      const e = this.#event;
      e.userId = b.userIds[i]!;
      e.itemId = b.itemIds[i]!;
      e.type = type;
      e.timestampMs = t;
      e.categoryId = b.categoryIds[i]!;
      e.categoryPath = b.categoryPaths[i]!;
      e.brand = b.brands[i]!;
      e.price = b.prices[i]!;
      e.currency = b.currencies[i]!;
      const item = observeItemEvent(this.#index, e);
      if (item !== undefined && (EVENT_WEIGHTS[type] ?? 0) > 0) {
        // Keyed by the catalog's copy of the id (observeItemEvent): a new entry keeps no event's string.
        const itemId = item.itemId;
        let c = this.#counts.get(itemId);
        if (c === undefined) {
          // Bounded like the catalog: forget counts of items the catalog dropped. At 2 x maxItems, so that
          // a sweep frees at least maxItems entries (O(1) amortised): at 1 x, once the catalog was full
          // every new item swept the whole map (708 µs per new item at 30,000 items, measured).
          // The catalog may hold fewer under the byte bound (maxStateBytes): the sweep follows its size, plus a margin.
          if (this.#counts.size >= Math.min(2 * this.#o.catalog.maxItems, 2 * this.#index.catalog.size + 1024)) this.#sweep();
          c = { popularity: 0, users: 0, firstMs: t, lastMs: t };
          this.#counts.set(itemId, c);
        }
        c.popularity++;
        c.users += b.newToUser[i]!;
        if (t > c.lastMs) c.lastMs = t;
        if (t < c.firstMs) c.firstMs = t;
        const cat = item.categoryId;
        if (cat !== "") {
          const k = this.#categoryCounts.get(cat);
          if (k !== undefined) k.n++;
          else this.#categoryCounts.set(cat, { n: 1 });
        }
      }
    }
    this.#itemEvents += to - from;
  }

  #sweep(): void {
    for (const id of this.#counts.keys()) if (this.#index.catalog.get(id) === undefined) this.#counts.delete(id);
  }

  prepare(req: PrepareRequest): PrepareResult {
    try {
      const c = req.context;
      const session = c.known ? this.#index.sessions.forRequest(c.userKey, c.asOfMs) : undefined;
      const policy = this.#policy;
      const candidates = orderCandidates(policy, generateCandidates({
        userId: req.userId, known: c.known, recentItems: c.recentItems, topCategories: c.topCategories,
        nextCategories: c.nextCategories, purchasedItems: c.purchasedItems, exclude: req.exclude,
        ...(req.category ? { category: req.category } : {}), nowMs: c.asOfMs, ...(session !== undefined ? { session } : {}),
        ...(c.known && !this.#o.candidates.excludePurchased ? { history: this.#index.sessions.history(c.userKey) } : {}),
      }, this.#index, req.count > 0 ? { ...this.#o.candidates, count: req.count } : this.#o.candidates));
      // DeepFM rows only when the policy serves DeepFM: without rows the candidates keep this order.
      const wanted = req.deepfmVersion;
      const pinned = wanted === undefined ? this.#schema : wanted === null ? undefined : this.#schemas.get(wanted);
      if (typeof wanted === "string" && pinned === undefined) {
        return { ok: false, error: toWire(new OverloadedError(`the recs worker no longer holds DeepFM ${wanted}'s schema (a model swap finished meanwhile); try again`)) };
      }
      const s = policy.name === "deepfm" ? pinned : undefined;
      let ids: Int32Array | undefined;
      let dense: Float32Array | undefined;
      if (s !== undefined) {
        const F = s.fields.length;
        ids = new Int32Array(candidates.length * F);
        dense = s.denseDim > 0 ? new Float32Array(candidates.length * s.denseDim) : new Float32Array(0);
        const h = s.denseDim > 0 ? (c.lstmH !== undefined && c.lstmH.length === s.denseDim ? c.lstmH : new Float32Array(s.denseDim)) : undefined;
        candidates.forEach((cand, r) => {
          const item = this.#index.catalog.get(cand.itemId)!;
          const n = this.#counts.get(cand.itemId);
          const info: ItemInfo = {
            itemId: cand.itemId, categoryId: item.categoryId, brand: item.brand, price: item.price,
            popularity: n?.popularity ?? 0, users: n?.users ?? 0, firstMs: n?.firstMs ?? 0, lastMs: n?.lastMs ?? 0,
            categoryPopularity: item.categoryId !== "" ? this.#categoryCounts.get(item.categoryId)?.n ?? 0 : 0,
          };
          writeDeepFmRow(s, c.user, info, c.asOfMs, h, ids!, dense!, r);
        });
        if (s.denseDim === 0) dense = undefined;
      }
      const prepared = {
        candidates: candidates.map((x) => ({ itemId: x.itemId, sources: x.sources, reason: x.reason, prior: x.prior, score: policyScore(policy, x), scores: x.scores })),
        ids, dense, sources: countSources(candidates), ranking: policy.from.startsWith("ranker@") ? policy.from : policy.name,
      };
      const transfer = [ids?.buffer, dense?.buffer].filter((b): b is ArrayBuffer => b !== undefined);
      return Comlink.transfer({ ok: true, prepared }, transfer);
    } catch (err) {
      this.#log.error({ err }, "recommendation candidates failed");
      return { ok: false, error: toWire(err) };
    }
  }

  upsert(bytes: Uint8Array): UpsertResult {
    try {
      let m;
      try {
        m = pb.CatalogUpsert.decode(plainBytes(bytes));
      } catch (err) {
        throw new BadRequestError(`not a CatalogUpsert message: ${(err as Error).message}`);
      }
      this.#index.catalog.upsert(fromCatalogUpsertMessage(m));
      boundRecsIndex(this.#index);
      this.#upserts++;
      return { ok: true };
    } catch (err) {
      return { ok: false, error: toWire(err) };
    }
  }

  stats(): RecsStats {
    return {
      items: this.#index.catalog.size, covisitationItems: this.#index.covisitation.size, trendingItems: this.#index.trending.size,
      sessions: this.#index.sessions.size, sessionIndexItems: this.#index.sessions.itemCount, ruleItems: this.#index.rules.size,
      stateBytes: this.#index.bytes.byTable(), stateEvictions: this.#index.bytes.evictions,
      itemEvents: this.#itemEvents, upserts: this.#upserts, heap: heapStats(),
    };
  }

  async faultStall(ms: number): Promise<void> {
    stallThread(ms);
  }

  close(): void {
    for (const p of this.#ports) p.close();
  }
}

exposeWorker(new Recs(), "recs.worker");
