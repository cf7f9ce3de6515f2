/**
 * A recommendation, end to end: the user's context from the owning shard,
 * candidates and their DeepFM rows from the recs worker, scores from the
 * inference pool (micro-batched with concurrent requests), top K.
 * The order is the ranking policy's (src/recs/ranking-policy.ts): DeepFM
 * scores only when the policy serves DeepFM, else the recs worker's order.
 *
 * Hot swap: a request is pinned, when it starts, to the ranker pairing that
 * is current then (the DeepFM version, its feature schema, and the LSTM
 * version whose state it reads) and every step names that pairing, so a
 * reply is produced entirely by one pairing and says which (`modelVersion`,
 * `lstmVersion`). `setPairing` makes a new pairing current and resolves once
 * the requests pinned to the earlier one have finished; the components then
 * let the earlier versions go (src/engine-models.ts).
 */
import { randomUUID } from "node:crypto";
import { OverloadedError, fromWire } from "../errors.js";
import type { InferencePool } from "../inference/inference-pool.js";
import type { QueryDeadline, RecContextResult } from "../contracts.js";
import type { RecsHost } from "./recs-host.js";
import { drawPlannedSlate, EXPLORATION_DEFAULTS, explorationPlan, type ExplorationOptions } from "./exploration.js";
import type { FeedbackLog } from "./feedback-log.js";

/** Exploration and logged feedback of the replies (README "The feedback loop"). */
export interface RecommenderFeedback {
  exploration: ExplorationOptions;
  /** Where every served reply is kept for judging its feedback. */
  log?: FeedbackLog;
  /** Uniform [0, 1) numbers for exploration (Math.random by default). */
  random?: () => number;
  /** Told of each reply that explored (a metric). */
  onExplored?: () => void;
}

export interface RecommendQuery {
  userId: string;
  k: number;
  page: string;
  categoryId: string;
  exclude: string[];
  asOfMs: number;
  candidates: number;
}

export interface RecommendView {
  /** Best first (an exploring reply: its random draw, in drawn order); `propensity`: the probability that this reply's policy put the item in its slot (src/recs/exploration.ts). */
  items: Array<{ itemId: string; score: number; reason: string; sources: string[]; propensity: number }>;
  modelVersion: string;
  /** The LSTM version whose user state the candidates and the ranker read ("" = none). */
  lstmVersion: string;
  backend: string;
  candidateSources: Record<string, number>;
  candidates: number;
  knownUser: boolean;
  requestId: string;
  /** True when this reply explored (a random draw from the ranker's pool or, with explorationSourceShare, a candidate source's). */
  explored: boolean;
}

export interface ContextSource {
  getRecContext(partition: number, userId: string, asOfMs: number, deadline?: QueryDeadline, lstmVersion?: string): Promise<RecContextResult>;
}

/** What ranks a recommendation: switched whole (see the file comment). */
export interface RankerPairing {
  /** The LSTM version the user's context is read with; undefined = the shard's running one (or none). */
  lstmVersion: string | undefined;
  /** The DeepFM version (loaded in the pool and the recs worker); undefined = no DeepFM, the recs worker's order. */
  deepfm: { dir: string; version: string; backend: string } | undefined;
}

class Pinned {
  readonly pairing: RankerPairing;
  inflight = 0;
  #idle: (() => void) | undefined;
  constructor(pairing: RankerPairing) {
    this.pairing = pairing;
  }
  done(): void {
    if (--this.inflight === 0 && this.#idle !== undefined) this.#idle();
  }
  /** Resolves once no request is pinned to this pairing. */
  drained(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => (this.#idle = resolve));
  }
}

export class Recommender {
  readonly #shards: ContextSource;
  readonly #recs: RecsHost;
  #pool: InferencePool | undefined;
  readonly #partitionOf: (userId: string) => number;
  #current: Pinned;
  readonly #feedback: RecommenderFeedback;

  constructor(shards: ContextSource, recs: RecsHost, pool: InferencePool | undefined, partitionOf: (userId: string) => number, pairing?: RankerPairing, feedback?: RecommenderFeedback) {
    this.#feedback = feedback ?? { exploration: EXPLORATION_DEFAULTS };
    this.#shards = shards;
    this.#recs = recs;
    this.#pool = pool;
    this.#partitionOf = partitionOf;
    this.#current = new Pinned(pairing ?? { lstmVersion: undefined, deepfm: pool !== undefined ? { dir: "", version: pool.version, backend: pool.backend } : undefined });
  }

  get modelVersion(): string {
    return this.#current.pairing.deepfm?.version ?? "";
  }

  get pairing(): RankerPairing {
    return this.#current.pairing;
  }

  /**
   * Makes `pairing` current for the requests that start from now on (its
   * DeepFM must be loaded in `pool` and the recs worker, its LSTM in the
   * shards); resolves once every request pinned to the earlier pairing has finished.
   */
  setPairing(pairing: RankerPairing, pool: InferencePool | undefined): Promise<void> {
    const old = this.#current;
    this.#current = new Pinned(pairing);
    if (pool !== undefined) this.#pool = pool;
    return old.drained();
  }

  /** `deadline`: past it the remaining steps are skipped (OVERLOADED; the API has answered the caller already). */
  async recommend(q: RecommendQuery, deadline?: QueryDeadline): Promise<RecommendView> {
    const pinned = this.#current;
    pinned.inflight++;
    try {
      return await this.#recommend(q, pinned.pairing, deadline);
    } finally {
      pinned.done();
    }
  }

  async #recommend(q: RecommendQuery, pairing: RankerPairing, deadline?: QueryDeadline): Promise<RecommendView> {
    const ctx = await this.#shards.getRecContext(this.#partitionOf(q.userId), q.userId, q.asOfMs, deadline, pairing.lstmVersion);
    if (!ctx.ok) throw fromWire(ctx.error);
    if (deadline !== undefined && Date.now() > deadline.deadlineMs) throw new OverloadedError("the recommendation's deadline passed before its candidates");
    const prep = await this.#recs.prepare({
      userId: q.userId, context: ctx.context, exclude: q.exclude, count: q.candidates,
      ...(q.categoryId !== "" ? { category: q.categoryId } : {}),
      deepfmVersion: pairing.deepfm?.version ?? null,
    });
    if (!prep.ok) throw fromWire(prep.error);
    const { candidates, ids, dense, sources, ranking } = prep.prepared;
    // The recs worker writes DeepFM rows only when its ranking policy serves DeepFM; else its order is served.
    let scores: ArrayLike<number>;
    const ranker = pairing.deepfm;
    const deepfm = this.#pool !== undefined && ranker !== undefined && ids !== undefined;
    if (deepfm && candidates.length > 0) {
      scores = await this.#pool!.score(ids, dense, candidates.length, ranker.dir === "" ? undefined : ranker.dir);
    } else {
      scores = candidates.map((c) => c.score);
    }
    const order = candidates.map((_, i) => i).sort((a, b) => scores[b]! - scores[a]! || candidates[b]!.prior - candidates[a]!.prior);
    const fb = this.#feedback;
    const ranked = order.map((i) => candidates[i]!);
    const plan = explorationPlan(ranked, q.k, fb.exploration);
    const slate = drawPlannedSlate(plan, fb.exploration, fb.random);
    const items = slate.order.map((g, j) => {
      const i = order[g]!;
      return { itemId: candidates[i]!.itemId, score: scores[i]!, reason: candidates[i]!.reason, sources: candidates[i]!.sources as string[], propensity: slate.propensities[j]! };
    });
    const requestId = randomUUID();
    const modelVersion = deepfm ? ranker.version : `ranking ${ranking}`;
    if (slate.explored) fb.onExplored?.();
    if (fb.log?.keeping === true) {
      // e(a) is logged only when a source arm may explore (else it is 1 / pool size, as records before it).
      const withSources = fb.exploration.sourceShare > 0;
      const logged = (g: number) => ({
        itemId: ranked[g]!.itemId, scores: ranked[g]!.scores, prior: ranked[g]!.prior, ...(withSources ? { explore: plan.explore.get(g) ?? 0 } : {}),
      });
      const extra = withSources ? [...plan.explore.keys()].filter((g) => g >= slate.poolSize).sort((a, b) => a - b) : [];
      fb.log.served({
        requestId, servedAtMs: Date.now(), policy: modelVersion, share: fb.exploration.share, explored: slate.explored, k: items.length,
        pool: Array.from({ length: slate.poolSize }, (_, g) => logged(g)),
        ...(extra.length > 0 ? { extra: extra.map(logged) } : {}),
        ...(slate.explored ? { arm: slate.arm } : {}),
        shown: items.map((it, slot) => ({ itemId: it.itemId, slot, propensity: it.propensity })),
      });
    }
    return {
      items,
      explored: slate.explored,
      modelVersion,
      lstmVersion: ctx.context.lstmVersion ?? "",
      backend: deepfm ? ranker.backend : "none",
      candidateSources: sources as Record<string, number>,
      candidates: candidates.length,
      knownUser: ctx.context.known,
      requestId,
    };
  }
}

/** The order a reply was served in, for people: "ranking source:sknn", or "DeepFM <version> on <backend>". */
export function describeOrder(modelVersion: string, backend: string): string {
  return modelVersion.startsWith("ranking ") ? modelVersion : `DeepFM ${modelVersion} on ${backend}`;
}
