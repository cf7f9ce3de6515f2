/**
 * The contract between the main thread and the recs worker: what a
 * recommendation request asks for and what comes back (candidates, and
 * their DeepFM rows as typed arrays, transferred).
 */
import type { RecContext } from "../contracts.js";
import type { HeapStats } from "../obs/heap.js";
import type { WireError } from "../errors.js";
import type { CompiledRecsOptions } from "./recs-options.js";
import type { CandidateSource } from "./candidates.js";

export interface RecsInit {
  /** Compiled once with the engine's options (compileRecsOptions); the worker gets a structured clone. */
  recs: CompiledRecsOptions;
  /** The DeepFM version directory whose feature schema the rows follow; absent = candidates only (ranked by prior). */
  deepfmDir?: string;
  logLevel: string;
  /** The item-event queue count shared with the shards (ItemEventSink.queued): the worker subtracts each batch it observed. */
  itemEventsQueued: Int32Array;
}

export interface PrepareRequest {
  userId: string;
  context: RecContext;
  exclude: string[];
  category?: string;
  /** Candidates wanted (0 = the configured default). */
  count: number;
  /**
   * The DeepFM version whose feature schema the rows follow (the request's
   * pinned ranker, src/recs/recommender.ts); null = no rows; absent = the
   * latest one set. OVERLOADED (retryable) when the worker no longer holds it.
   */
  deepfmVersion?: string | null;
}

export interface PreparedCandidate {
  itemId: string;
  sources: CandidateSource[];
  reason: string;
  prior: number;
  /** The ranking policy's score (the served order without DeepFM; best first). */
  score: number;
  /** Each finding source's normalised score (the ranking policy's features; logged with the exploration pool). */
  scores: Partial<Record<CandidateSource, number>>;
}

export interface Prepared {
  candidates: PreparedCandidate[];
  /** DeepFM rows, one per candidate, when a schema is loaded: ids [rows, fields], dense [rows, denseDim] or undefined. */
  ids: Int32Array | undefined;
  dense: Float32Array | undefined;
  sources: Partial<Record<CandidateSource, number>>;
  /** The ranking policy that ordered the candidates (src/recs/ranking-policy.ts), e.g. "source:sknn", "deepfm", or "ranker@<version>" (a promoted feedback ranker). */
  ranking: string;
}

export type PrepareResult = { ok: true; prepared: Prepared } | { ok: false; error: WireError };

export type UpsertResult = { ok: true } | { ok: false; error: WireError };

export interface RecsStats {
  items: number;
  covisitationItems: number;
  trendingItems: number;
  /** Sessions kept for session-kNN, items in their inverted index, items with sequential rules. */
  sessions: number;
  sessionIndexItems: number;
  ruleItems: number;
  /** Estimated heap bytes per table (bounded in sum by maxStateBytes; src/recs/recs-bytes.ts). */
  stateBytes: Record<string, number>;
  /** Entries the byte bound evicted since start. */
  stateEvictions: number;
  /** Item events observed since start. */
  itemEvents: number;
  upserts: number;
  heap: HeapStats;
}

export interface RecsApi {
  init(init: RecsInit): Promise<void>;
  /** Candidates and their DeepFM rows for one request. */
  prepare(req: PrepareRequest): PrepareResult;
  /** Applies a catalog upsert (CatalogUpsert protobuf bytes); BAD_REQUEST errors come back as data. */
  upsert(bytes: Uint8Array): UpsertResult;
  /** Adds a port on which a shard posts ItemEventBatch messages. */
  addItemEventPort(port: import("node:worker_threads").MessagePort): void;
  /**
   * Loads the feature schema of the DeepFM version in `dir` (null = none)
   * and makes it the latest; keeps the schemas of the versions in `keep`
   * (still pinned by requests in flight) and drops the others. Returns the version.
   */
  setDeepFm(dir: string | null, keep: string[]): string;
  /**
   * Serves a feedback-trained ranker (src/train/train-ranker.ts) instead of
   * the configured ranking policy: its per-source weights, named
   * "ranker@<version>"; null = back to the configured policy.
   */
  setRanker(ranker: { version: string; weights: Partial<Record<CandidateSource, number>> } | null): void;
  stats(): RecsStats;
  /** Fault injection, tests only: blocks the thread for `ms` (item events and requests sent meanwhile wait). */
  faultStall(ms: number): Promise<void>;
  close(): void;
}
