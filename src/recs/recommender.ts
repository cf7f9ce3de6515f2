/**
 * A recommendation, end to end: the user's context from the owning shard,
 * candidates and their DeepFM rows from the recs worker, scores from the
 * inference pool (micro-batched with concurrent requests), top K.
 * The order is the ranking policy's (src/recs/ranking-policy.ts): DeepFM
 * scores only when the policy serves DeepFM, else the recs worker's order.
 */
import { randomUUID } from "node:crypto";
import { OverloadedError, fromWire } from "../errors.js";
import type { InferencePool } from "../inference/inference-pool.js";
import type { QueryDeadline, RecContextResult } from "../contracts.js";
import type { RecsHost } from "./recs-host.js";

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
  items: Array<{ itemId: string; score: number; reason: string; sources: string[] }>;
  modelVersion: string;
  backend: string;
  candidateSources: Record<string, number>;
  candidates: number;
  knownUser: boolean;
  requestId: string;
}

export interface ContextSource {
  getRecContext(partition: number, userId: string, asOfMs: number, deadline?: QueryDeadline): Promise<RecContextResult>;
}

export class Recommender {
  readonly #shards: ContextSource;
  readonly #recs: RecsHost;
  readonly #pool: InferencePool | undefined;
  readonly #partitionOf: (userId: string) => number;

  constructor(shards: ContextSource, recs: RecsHost, pool: InferencePool | undefined, partitionOf: (userId: string) => number) {
    this.#shards = shards;
    this.#recs = recs;
    this.#pool = pool;
    this.#partitionOf = partitionOf;
  }

  get modelVersion(): string {
    return this.#pool?.version ?? "";
  }

  /** `deadline`: past it the remaining steps are skipped (OVERLOADED; the API has answered the caller already). */
  async recommend(q: RecommendQuery, deadline?: QueryDeadline): Promise<RecommendView> {
    const ctx = await this.#shards.getRecContext(this.#partitionOf(q.userId), q.userId, q.asOfMs, deadline);
    if (!ctx.ok) throw fromWire(ctx.error);
    if (deadline !== undefined && Date.now() > deadline.deadlineMs) throw new OverloadedError("the recommendation's deadline passed before its candidates");
    const prep = await this.#recs.prepare({
      userId: q.userId, context: ctx.context, exclude: q.exclude, count: q.candidates,
      ...(q.categoryId !== "" ? { category: q.categoryId } : {}),
    });
    if (!prep.ok) throw fromWire(prep.error);
    const { candidates, ids, dense, sources, ranking } = prep.prepared;
    // The recs worker writes DeepFM rows only when its ranking policy serves DeepFM; else its order is served.
    let scores: ArrayLike<number>;
    const deepfm = this.#pool !== undefined && ids !== undefined;
    if (deepfm && candidates.length > 0) {
      scores = await this.#pool!.score(ids, dense, candidates.length);
    } else {
      scores = candidates.map((c) => c.score);
    }
    const order = candidates.map((_, i) => i).sort((a, b) => scores[b]! - scores[a]! || candidates[b]!.prior - candidates[a]!.prior);
    const items = order.slice(0, q.k).map((i) => ({
      itemId: candidates[i]!.itemId, score: scores[i]!, reason: candidates[i]!.reason, sources: candidates[i]!.sources as string[],
    }));
    return {
      items,
      modelVersion: deepfm ? this.#pool!.version : `ranking ${ranking}`,
      backend: deepfm ? this.#pool!.backend : "none",
      candidateSources: sources as Record<string, number>,
      candidates: candidates.length,
      knownUser: ctx.context.known,
      requestId: randomUUID(),
    };
  }
}

/** The order a reply was served in, for people: "ranking source:sknn", or "DeepFM <version> on <backend>". */
export function describeOrder(modelVersion: string, backend: string): string {
  return modelVersion.startsWith("ranking ") ? modelVersion : `DeepFM ${modelVersion} on ${backend}`;
}
