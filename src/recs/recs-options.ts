/**
 * Options of the recommendation index (catalog, co-visitation, trending) and
 * of candidate generation. Units are in the names; every field has a default.
 * `compileRecsOptions` validates them once (unknown keys and bad values throw
 * a ConfigError naming the option) and returns a frozen config.
 *
 * Memory is bounded by the `max*` options. Measured on the Taobao time slice
 * (85k items, 66k users, 110k events; node 20, heap after a full GC): catalog
 * 15 MB (~190 B per item), co-visitation 37 MB (~450 B per item including
 * the users' last items), trending 13 MB (~165 B per item), not counting
 * the id strings (shared with the events there; in the engine each table
 * keeps the id string of the first event it saw, ~30 B). Worst cases with the defaults:
 * catalog ~60 MB (300k items); co-visitation ~150 MB (200k items with full
 * lists of 30 neighbours at ~16 B each, 200k users at ~100 B); trending
 * ~35 MB (200k items, plus 8 B per top-list slot: 1,000 global and 100 per
 * category for 20k categories).
 *
 * The counts alone do not bound the bytes (a session's size, a title's, the
 * lists' lengths vary), so `maxStateBytes` bounds them too: the tables keep
 * a running estimate of their heap (src/recs/recs-bytes.ts) and, past the
 * bound, the entries touched longest ago across the tables go first.
 */
import { ConfigError } from "../errors.js";
import { usableMemoryBytes, workerHeapBounds } from "../obs/heap.js";
import { CANDIDATE_SOURCES, isPolicyName, type CandidateSource, type RankingPolicyName } from "./sources.js";
import { EVENT_TYPE_NAMES, EVENT_TYPE_SLOTS, type EventTypeName } from "../wire/proto.js";

export interface CatalogOptions {
  /**
   * Most items the catalog holds. Beyond it the least recently touched item
   * (observed in an event or upserted) is dropped; an item touched within the
   * last maxItems / 2 touches is never dropped. Default 300,000.
   */
  maxItems?: number;
  /**
   * Most ids of dropped items that were unavailable to remember, so that an
   * event for such an item does not bring it back as available (oldest
   * forgotten first). Default 100,000.
   */
  maxUnavailableEvicted?: number;
}

export interface CovisitationOptions {
  /** Half-life of co-visitation scores on event time, ms. Default 24 hours. */
  halfLifeMs?: number;
  /** Two consecutive item events of a user are linked only when at most this far apart, ms. Default 30 minutes. */
  sessionGapMs?: number;
  /** Most neighbours kept per item; a new neighbour replaces the weakest only when its weight is larger. Default 30. */
  maxNeighbours?: number;
  /** Most items tracked (least recently touched dropped, as in the catalog). Default 200,000. */
  maxItems?: number;
  /** Most users whose last item is remembered (least recently active dropped). Default 200,000. */
  maxUsers?: number;
}

/** The recent sessions session-kNN and sequential rules read (src/recs/session-store.ts). */
export interface SessionOptions {
  /** A user's item event more than this far from the session's last event (event time) starts a new session, ms. Default 30 minutes. */
  sessionGapMs?: number;
  /**
   * A request uses the user's last session (for session-kNN and sequential
   * rules) while its last event is at most this old at the request's time,
   * ms. Default 30 minutes (the session gap: only a session still going);
   * longer suits shops whose users come back days later (the last basket).
   */
  lastSessionMaxAgeMs?: number;
  /** Most sessions kept (the oldest started dropped); also bounds the users whose current session is known. Default 200,000. */
  maxSessions?: number;
  /** Most sessions remembered per user (the current one included), for the repeat source. Default 10. */
  maxUserSessions?: number;
  /** Most events kept per session (the oldest dropped) and most distinct items per session. Default 50. */
  maxSessionItems?: number;
  /** Most recent sessions listed per item in the inverted index (session-kNN's candidate neighbours). Default 500. */
  maxSessionsPerItem?: number;
  /** Most items in the inverted index (least recently touched dropped). Default 200,000. */
  maxItems?: number;
}

/** Sequential rules i -> j within a session (src/recs/sequential-rules.ts). */
export interface SequentialRulesOptions {
  /** Most items back a rule reaches (i at distance d <= steps before j adds 1/d). Default 10. */
  steps?: number;
  /** Most successors kept per item. Default 50. */
  maxSuccessors?: number;
  /** Most items with rules (least recently touched dropped). Default 200,000. */
  maxItems?: number;
}

/** Session-kNN over recent sessions (V-SKNN, src/recs/session-knn.ts). */
export interface SessionKnnOptions {
  /** Neighbour sessions scored. Default 100. */
  k?: number;
  /** Candidate neighbours: the most recent sessions sharing an item with the current one. Default 500. */
  sampleSize?: number;
}

export interface TrendingOptions {
  /** Half-life of the popularity scores on event time, ms. Default 1 hour. */
  halfLifeMs?: number;
  /** Most items with a score (least recently touched dropped). Default 200,000. */
  maxItems?: number;
  /** Most categories with a top list (least recently touched dropped). Default 20,000. */
  maxCategories?: number;
  /** Length of the maintained global top list: the most `topGlobal` can return. Default 1,000. */
  globalListSize?: number;
  /** Length of each category's maintained top list: the most `topInCategory` can return. Default 100. */
  categoryListSize?: number;
}

/**
 * Share of the candidate count each source may fill in the first pass, each a
 * fraction in [0, 1], summing to at most 1. Slots a source cannot fill (and
 * the rest when the shares sum to less than 1) are filled in a second pass,
 * one item per source in turn, in source order (sknn, rules, covisit,
 * next-category, category, recent, repeat, trending). Set a share to 0 to use a source for backfill
 * only.
 */
export interface CandidateQuotas {
  /** Session-kNN over recent sessions. Default 0.25. */
  sknn?: number;
  /** Sequential rules from the current session's last item. Default 0.15. */
  rules?: number;
  /** Neighbours of the user's recent items. Default 0.2. */
  covisit?: number;
  /** Top items of the LSTM's predicted next categories. Default 0.05. */
  nextCategory?: number;
  /** Top items of the page category and the user's top categories. Default 0.1. */
  category?: number;
  /** The user's own recent items (repeat views are frequent in real logs). Default 0.05. */
  recent?: number;
  /** Items the user bought before and the items of the user's earlier sessions (only when excludePurchased is off). Default 0.05. */
  repeat?: number;
  /** Globally trending items. Default 0.15. */
  trending?: number;
}

export interface CandidateOptions {
  /** Candidates per request (fewer when the index has fewer eligible items). Default 200. */
  count?: number;
  /** Leave out the items in the request's `purchasedItems` (on for durable goods, off for replenishment shops). Default true. */
  excludePurchased?: boolean;
  /** Let the user's recently viewed items (the profile's recent items and the current session) be recommended. Default true. */
  allowRecent?: boolean;
  /** Each source's share of the count (CandidateQuotas). */
  quotas?: CandidateQuotas;
  /** How many of the newest recent items seed co-visitation. Default 5. */
  covisitSeeds?: number;
  /** How many of the user's top categories feed the category source. Default 5. */
  topCategories?: number;
  /** How many predicted next categories feed the next-category source. Default 3. */
  nextCategories?: number;
}

/** Which order of the candidates is served (src/recs/ranking-policy.ts). */
export interface RankingOptions {
  /**
   * "auto" (default): the policy file's policy when `policyFile` is given,
   * else one source's order (DEFAULT_POLICY, "source:sknn"), never DeepFM.
   * Or one of "source:<sknn|rules|covisit|next-category|category|recent|trending|popular>",
   * "prior" (sum of normalised source scores), "blend" (`weights`), "deepfm".
   */
  policy?: "auto" | RankingPolicyName;
  /** JSON written by `portrait eval prequential --targets next-click --write-policy`: the chosen policy and its validation numbers. Default "" (none). */
  policyFile?: string;
  /** Per-source weights of "blend", each finite and >= 0. Default none (all 0). */
  weights?: Partial<Record<CandidateSource, number>>;
}

export interface RecsOptions {
  /** The item catalog's bounds (CatalogOptions). */
  catalog?: CatalogOptions;
  /** Co-visitation: decay, session gap, bounds (CovisitationOptions). */
  covisitation?: CovisitationOptions;
  /** Trending: decay, bounds, top-list sizes (TrendingOptions). */
  trending?: TrendingOptions;
  /** Candidate generation per request (CandidateOptions). */
  candidates?: CandidateOptions;
  /** Recent sessions for session-kNN and the rules: gap, bounds (SessionOptions). */
  sessions?: SessionOptions;
  /** Sequential rules: reach and bounds (SequentialRulesOptions). */
  sequentialRules?: SequentialRulesOptions;
  /** Session-kNN: neighbours and sample (SessionKnnOptions). */
  sessionKnn?: SessionKnnOptions;
  /** Which order is served (RankingOptions). */
  ranking?: RankingOptions;
  /**
   * Weight of each event type in co-visitation and trending, by lower-case
   * type name ("view", "add_to_cart", ...), finite and >= 0; events of a type
   * with weight 0 are ignored by both. Defaults: view 1, click 1,
   * add_to_cart 3, favorite 2, purchase 5, rec_click 1, all others 0
   * (a search has no item, an impression is not interest, a removal or a
   * refund is not popularity). Given keys replace the default of that type only.
   */
  eventWeights?: Partial<Record<EventTypeName, number>>;
  /**
   * Most item events queued for the recs worker, shared by all shards
   * (posted after their batches committed and not yet observed by the
   * worker), integer in [1, 1e9]. A shard whose batch would take the queue
   * beyond it waits for room (maxItemEventWaitMs), and drops that batch's
   * item events only when the wait runs out, counted in
   * `portrait_recs_item_events_dropped_total`: co-visitation, trending and
   * the item statistics are approximate derived state and miss those events;
   * profiles are unaffected (every event is still applied and committed).
   * Keep it above the batch size (`maxBatchMessages`): a batch with more item
   * events than this is always dropped. Bounds the memory of the worker's
   * input queue and how long a recommendation (served by the same thread)
   * can wait behind queued item events. Default 50,000 item events.
   */
  maxQueuedItemEvents?: number;
  /**
   * What a shard does when its batch's item events do not fit the queue
   * (maxQueuedItemEvents): it waits for the recs worker to make room, and the
   * batch's acknowledgement waits with it (back-pressure: ingest runs at the
   * pace the recs worker takes in item events, and nothing is dropped). A
   * batch is dropped and counted only when the worker observed nothing for
   * this long, ms, integer in [0, 60000] (a stuck worker must not stop
   * ingest; a slow one only slows it). 0 drops at once (drop-newest, the
   * behaviour before this option). Keep it well below the consumer's
   * ackWaitMs. Default 5,000 ms.
   */
  maxItemEventWaitMs?: number;
  /**
   * Most bytes of heap the recommendation state may take (catalog,
   * co-visitation, trending, sessions and the item -> sessions index,
   * sequential rules), as the tables estimate it (src/recs/recs-bytes.ts;
   * `portrait_recs_state_bytes{table}`), integer >= 1 MiB. Past it the
   * entries touched longest ago across the tables are dropped (the oldest
   * sessions by their start) down to 90 % of it, on top of the count caps.
   * Default (also when 0) an eighth of the machine's memory (or of the
   * cgroup's limit when lower); when only `maxHeapBytes` is given, what fits
   * it (the inverse of its default), if less.
   */
  maxStateBytes?: number;
  /**
   * Bound of the recs worker's V8 heap (its old generation, Worker
   * `resourceLimits.maxOldGenerationSizeMb`), bytes: as the engine option
   * `maxShardHeapBytes` for the shards (V8 collects and compacts harder as
   * the heap nears it; a worker that outgrows it fails out of memory and
   * stops the engine). Default (also when 0) 1.5 x `maxStateBytes` + 512 MiB
   * (src/obs/heap.ts); when both are given, it must be at least that.
   */
  maxHeapBytes?: number;
}

export type CompiledCatalogOptions = Readonly<Required<CatalogOptions>>;
export type CompiledCovisitationOptions = Readonly<Required<CovisitationOptions>>;
export type CompiledTrendingOptions = Readonly<Required<TrendingOptions>>;
export type CompiledSessionOptions = Readonly<Required<SessionOptions>>;
export type CompiledSequentialRulesOptions = Readonly<Required<SequentialRulesOptions>>;
export type CompiledSessionKnnOptions = Readonly<Required<SessionKnnOptions>>;
export interface CompiledRankingOptions {
  readonly policy: "auto" | RankingPolicyName;
  readonly policyFile: string;
  readonly weights: Readonly<Partial<Record<CandidateSource, number>>>;
}
export interface CompiledCandidateOptions {
  readonly count: number;
  readonly excludePurchased: boolean;
  readonly allowRecent: boolean;
  readonly quotas: Readonly<Required<CandidateQuotas>>;
  readonly covisitSeeds: number;
  readonly topCategories: number;
  readonly nextCategories: number;
}
export interface CompiledRecsOptions {
  readonly catalog: CompiledCatalogOptions;
  readonly covisitation: CompiledCovisitationOptions;
  readonly trending: CompiledTrendingOptions;
  readonly candidates: CompiledCandidateOptions;
  readonly sessions: CompiledSessionOptions;
  readonly sequentialRules: CompiledSequentialRulesOptions;
  readonly sessionKnn: CompiledSessionKnnOptions;
  readonly ranking: CompiledRankingOptions;
  /** Weight per EventType number (index 0 unused). */
  readonly eventWeights: readonly number[];
  readonly maxQueuedItemEvents: number;
  readonly maxItemEventWaitMs: number;
  readonly maxStateBytes: number;
  readonly maxHeapBytes: number;
}

const HOUR_MS = 3_600_000;

const DEFAULT_EVENT_WEIGHTS: Readonly<Partial<Record<EventTypeName, number>>> = Object.freeze({
  view: 1, click: 1, add_to_cart: 3, favorite: 2, purchase: 5, rec_click: 1,
});

/** The default of every recs option; its keys (and its groups' keys) are the known options. */
export const RECS_DEFAULTS = Object.freeze({
  catalog: Object.freeze({ maxItems: 300_000, maxUnavailableEvicted: 100_000 }),
  covisitation: Object.freeze({
    halfLifeMs: 24 * HOUR_MS, sessionGapMs: 30 * 60_000, maxNeighbours: 30, maxItems: 200_000, maxUsers: 200_000,
  }),
  trending: Object.freeze({
    halfLifeMs: HOUR_MS, maxItems: 200_000, maxCategories: 20_000, globalListSize: 1_000, categoryListSize: 100,
  }),
  candidates: Object.freeze({
    count: 200,
    excludePurchased: true,
    allowRecent: true,
    quotas: Object.freeze({ sknn: 0.25, rules: 0.15, covisit: 0.2, nextCategory: 0.05, category: 0.1, recent: 0.05, repeat: 0.05, trending: 0.15 }),
    covisitSeeds: 5,
    topCategories: 5,
    nextCategories: 3,
  }),
  sessions: Object.freeze({ sessionGapMs: 30 * 60_000, lastSessionMaxAgeMs: 30 * 60_000, maxSessions: 200_000, maxUserSessions: 10, maxSessionItems: 50, maxSessionsPerItem: 500, maxItems: 200_000 }),
  sequentialRules: Object.freeze({ steps: 10, maxSuccessors: 50, maxItems: 200_000 }),
  sessionKnn: Object.freeze({ k: 100, sampleSize: 500 }),
  eventWeights: DEFAULT_EVENT_WEIGHTS,
  maxQueuedItemEvents: 50_000,
  maxItemEventWaitMs: 5_000,
  /** 0: defaultRecsStateBytes() (it depends on the machine). */
  maxStateBytes: 0,
  /** 0: 1.5 x maxStateBytes + 512 MiB (workerHeapFor). */
  maxHeapBytes: 0,
});

/** The default of maxStateBytes: an eighth of the memory (the machine's, or the cgroup's limit when lower). */
export function defaultRecsStateBytes(): number {
  return Math.max(MIN_STATE_BYTES, Math.floor(usableMemoryBytes() / 8));
}

const MIN_STATE_BYTES = 1 << 20;

/** The queue count is an Int32 shared between threads: a bound far below 2^31 leaves room for a batch on top. */
const MAX_QUEUED_ITEM_EVENTS_LIMIT = 1_000_000_000;

/** Longest maxItemEventWaitMs: a minute, below the default ackWaitMs. */
const MAX_ITEM_EVENT_WAIT_MS = 60_000;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function group(name: string, v: unknown, known: readonly string[]): Record<string, unknown> {
  if (v === undefined) return {};
  if (!isRecord(v)) throw new ConfigError(`${name === "" ? "recs options" : `options.${name}`} must be an object, got ${JSON.stringify(v)}`);
  for (const k of Object.keys(v)) {
    if (!known.includes(k)) throw new ConfigError(`unknown recs option ${JSON.stringify(name === "" ? k : `${name}.${k}`)}`);
  }
  return v;
}

function positive(name: string, v: unknown, integer: boolean): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
    throw new ConfigError(`options.${name} must be a positive ${integer ? "integer" : "number"}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function fraction(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > 1) {
    throw new ConfigError(`options.${name} must be a number in [0, 1], got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(name: string, v: unknown): boolean {
  if (typeof v !== "boolean") throw new ConfigError(`options.${name} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

/** Fills the integer/number fields of one group from its defaults. */
function numbers<T extends Record<string, number>>(name: string, given: unknown, defaults: T, integers: readonly (keyof T)[]): Readonly<T> {
  const g = group(name, given, Object.keys(defaults));
  const out: Record<string, number> = {};
  for (const k of Object.keys(defaults)) {
    out[k] = positive(`${name}.${k}`, g[k] ?? defaults[k], integers.includes(k));
  }
  return Object.freeze(out) as Readonly<T>;
}

function compileWeights(given: unknown): readonly number[] {
  const names = EVENT_TYPE_NAMES.slice(1);
  const g = group("eventWeights", given, names);
  const w = new Array<number>(EVENT_TYPE_SLOTS).fill(0);
  for (let i = 1; i < EVENT_TYPE_SLOTS; i++) {
    const name = EVENT_TYPE_NAMES[i] as EventTypeName;
    const v = g[name] ?? DEFAULT_EVENT_WEIGHTS[name] ?? 0;
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new ConfigError(`options.eventWeights.${name} must be a finite number >= 0, got ${JSON.stringify(v)}`);
    }
    w[i] = v;
  }
  return Object.freeze(w);
}

function compileCandidates(given: unknown): CompiledCandidateOptions {
  const d = RECS_DEFAULTS.candidates;
  const g = group("candidates", given, Object.keys(d));
  const q = group("candidates.quotas", g.quotas, Object.keys(d.quotas));
  const quotas = Object.freeze({
    sknn: fraction("candidates.quotas.sknn", q.sknn ?? d.quotas.sknn),
    rules: fraction("candidates.quotas.rules", q.rules ?? d.quotas.rules),
    covisit: fraction("candidates.quotas.covisit", q.covisit ?? d.quotas.covisit),
    nextCategory: fraction("candidates.quotas.nextCategory", q.nextCategory ?? d.quotas.nextCategory),
    category: fraction("candidates.quotas.category", q.category ?? d.quotas.category),
    recent: fraction("candidates.quotas.recent", q.recent ?? d.quotas.recent),
    repeat: fraction("candidates.quotas.repeat", q.repeat ?? d.quotas.repeat),
    trending: fraction("candidates.quotas.trending", q.trending ?? d.quotas.trending),
  });
  const sum = quotas.sknn + quotas.rules + quotas.covisit + quotas.nextCategory + quotas.category + quotas.recent + quotas.repeat + quotas.trending;
  if (sum > 1 + 1e-9) {
    throw new ConfigError(`options.candidates.quotas must sum to at most 1, got ${+sum.toFixed(6)} (shares of the candidate count)`);
  }
  return Object.freeze({
    count: positive("candidates.count", g.count ?? d.count, true),
    excludePurchased: bool("candidates.excludePurchased", g.excludePurchased ?? d.excludePurchased),
    allowRecent: bool("candidates.allowRecent", g.allowRecent ?? d.allowRecent),
    quotas,
    covisitSeeds: positive("candidates.covisitSeeds", g.covisitSeeds ?? d.covisitSeeds, true),
    topCategories: positive("candidates.topCategories", g.topCategories ?? d.topCategories, true),
    nextCategories: positive("candidates.nextCategories", g.nextCategories ?? d.nextCategories, true),
  });
}

function compileRanking(given: unknown): CompiledRankingOptions {
  const g = group("ranking", given, ["policy", "policyFile", "weights"]);
  const policy = g.policy ?? "auto";
  if (policy !== "auto" && !isPolicyName(policy)) {
    throw new ConfigError(`options.ranking.policy must be "auto", "prior", "blend", "deepfm" or "source:<${CANDIDATE_SOURCES.join("|")}>", got ${JSON.stringify(policy)}`);
  }
  const policyFile = g.policyFile ?? "";
  if (typeof policyFile !== "string") throw new ConfigError(`options.ranking.policyFile must be a string, got ${JSON.stringify(policyFile)}`);
  const w = group("ranking.weights", g.weights, CANDIDATE_SOURCES);
  const weights: Partial<Record<CandidateSource, number>> = {};
  for (const [k, v] of Object.entries(w)) {
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new ConfigError(`options.ranking.weights.${k} must be a finite number >= 0, got ${JSON.stringify(v)}`);
    weights[k as CandidateSource] = v;
  }
  return Object.freeze({ policy: policy as "auto" | RankingPolicyName, policyFile, weights: Object.freeze(weights) });
}

/** Validates `o` and fills defaults. Throws ConfigError on an unknown key or a bad value. */
export function compileRecsOptions(o: RecsOptions = {}): CompiledRecsOptions {
  const top = group("", o, [...Object.keys(RECS_DEFAULTS), "ranking"]);
  const maxQueued = positive("maxQueuedItemEvents", top.maxQueuedItemEvents ?? RECS_DEFAULTS.maxQueuedItemEvents, true);
  if (maxQueued > MAX_QUEUED_ITEM_EVENTS_LIMIT) {
    throw new ConfigError(`options.maxQueuedItemEvents must be at most ${MAX_QUEUED_ITEM_EVENTS_LIMIT}, got ${maxQueued}`);
  }
  const maxWait = top.maxItemEventWaitMs ?? RECS_DEFAULTS.maxItemEventWaitMs;
  if (typeof maxWait !== "number" || !Number.isInteger(maxWait) || maxWait < 0 || maxWait > MAX_ITEM_EVENT_WAIT_MS) {
    throw new ConfigError(`options.maxItemEventWaitMs must be an integer in [0, ${MAX_ITEM_EVENT_WAIT_MS}], got ${JSON.stringify(maxWait)}`);
  }
  const givenState = top.maxStateBytes === undefined || top.maxStateBytes === 0 ? undefined : top.maxStateBytes;
  if (givenState !== undefined && (typeof givenState !== "number" || !Number.isSafeInteger(givenState) || givenState < MIN_STATE_BYTES)) {
    throw new ConfigError(`options.maxStateBytes must be an integer >= ${MIN_STATE_BYTES}, got ${JSON.stringify(givenState)}`);
  }
  const givenHeap = top.maxHeapBytes === undefined || top.maxHeapBytes === 0 ? undefined : top.maxHeapBytes;
  const bounds = workerHeapBounds({ heap: givenHeap as number | undefined, state: givenState }, defaultRecsStateBytes(),
    { heap: "maxHeapBytes", state: "maxStateBytes" }, MIN_STATE_BYTES);
  if (typeof bounds === "string") throw new ConfigError(bounds);
  return Object.freeze({
    catalog: numbers("catalog", top.catalog, RECS_DEFAULTS.catalog, ["maxItems", "maxUnavailableEvicted"]),
    covisitation: numbers("covisitation", top.covisitation, RECS_DEFAULTS.covisitation, ["maxNeighbours", "maxItems", "maxUsers"]),
    trending: numbers("trending", top.trending, RECS_DEFAULTS.trending, ["maxItems", "maxCategories", "globalListSize", "categoryListSize"]),
    candidates: compileCandidates(top.candidates),
    sessions: numbers("sessions", top.sessions, RECS_DEFAULTS.sessions, ["maxSessions", "maxUserSessions", "maxSessionItems", "maxSessionsPerItem", "maxItems"]),
    sequentialRules: numbers("sequentialRules", top.sequentialRules, RECS_DEFAULTS.sequentialRules, ["steps", "maxSuccessors", "maxItems"]),
    sessionKnn: numbers("sessionKnn", top.sessionKnn, RECS_DEFAULTS.sessionKnn, ["k", "sampleSize"]),
    ranking: compileRanking(top.ranking),
    eventWeights: compileWeights(top.eventWeights),
    maxQueuedItemEvents: maxQueued,
    maxItemEventWaitMs: maxWait,
    maxStateBytes: bounds.state,
    maxHeapBytes: bounds.heap,
  });
}
