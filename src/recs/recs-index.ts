/**
 * The recommendation index: the catalog, co-visitation, trending, recent
 * sessions and sequential rules, fed together from one stream of item events. Single-threaded; the engine
 * hosts one per recs worker and feeds it every item event.
 */
import type { IEvent } from "../wire/proto.js";
import { Catalog, type CatalogItem } from "./catalog.js";
import { Covisitation } from "./covisitation.js";
import { Interner } from "./interner.js";
import { RecsBytes, shrinkTo, type Evictable } from "./recs-bytes.js";
import type { CompiledRecsOptions, CompiledSessionKnnOptions } from "./recs-options.js";
import { SequentialRules } from "./sequential-rules.js";
import { SessionStore } from "./session-store.js";
import { Trending } from "./trending.js";
import type { ItemEvent } from "./types.js";

export interface RecsIndex {
  readonly catalog: Catalog;
  readonly covisitation: Covisitation;
  readonly trending: Trending;
  /** Recent sessions and the item -> sessions index (session-kNN, sequential rules). */
  readonly sessions: SessionStore;
  readonly rules: SequentialRules;
  readonly sessionKnnOptions: CompiledSessionKnnOptions;
  /** Weight per EventType number: events of weight 0 do not enter sessions. */
  readonly eventWeights: readonly number[];
  /** The tables' estimated bytes and shared clock (recs option maxStateBytes). */
  readonly bytes: RecsBytes;
  readonly maxStateBytes: number;
  /** Every table the byte bound evicts from. */
  readonly evictables: readonly Evictable[];
  /** The item ids and user ids interned to the slots the tables are keyed by (src/recs/interner.ts). */
  readonly itemIds: Interner;
  readonly userIds: Interner;
}

/** The byte bound evicts down to this share of maxStateBytes, so that evictions come in runs. */
const SHRINK_TO = 0.9;

export function createRecsIndex(options: CompiledRecsOptions): RecsIndex {
  const bytes = new RecsBytes();
  const itemIds = new Interner();
  const userIds = new Interner();
  const catalog = new Catalog(options.catalog, bytes, itemIds);
  const covisitation = new Covisitation(options.covisitation, options.eventWeights, bytes, itemIds, userIds);
  const trending = new Trending(options.trending, options.eventWeights, bytes, itemIds);
  const sessions = new SessionStore(options.sessions, bytes, itemIds, userIds, options.sequentialRules.steps);
  const rules = new SequentialRules(options.sequentialRules, bytes, itemIds);
  return {
    catalog, covisitation, trending, sessions, rules,
    sessionKnnOptions: options.sessionKnn,
    eventWeights: options.eventWeights,
    bytes,
    maxStateBytes: options.maxStateBytes,
    evictables: [catalog.evictable, ...covisitation.evictables, ...trending.evictables, ...sessions.evictables, rules.evictable],
    itemIds, userIds,
  };
}

/**
 * Keeps the index within maxStateBytes: past it, evicts the entries touched longest ago across the tables down to
 * 90 % of it. O(1) amortised per event; returns the entries evicted.
 */
export function boundRecsIndex(index: RecsIndex): number {
  return shrinkTo(index.bytes, index.evictables, index.maxStateBytes, index.maxStateBytes * SHRINK_TO);
}

/**
 * Applies one item event to every table (sessions and rules only for events
 * of weight > 0; the rules read the session before the event joins it). The catalog goes first, and
 * trending counts the item under the category the catalog holds for it
 * afterwards: the event's own, unless the event has none or is older than the
 * item's last sighting. O(1) amortised (see each table). Returns the item as
 * the catalog holds it afterwards (undefined for an event without an item).
 */
export function observeItemEvent(index: RecsIndex, e: ItemEvent): Readonly<CatalogItem> | undefined {
  if (!e.itemId) return undefined;
  // The item id is hashed once, here: the catalog holds the item from now on (its slot is retained), and every
  // table after reads its entry by the slot. The user's slot only for events the user tables count (a slot created
  // and not inserted would be held by no table).
  const slot = index.itemIds.slot(e.itemId);
  const item = index.catalog.observe(e, slot);
  if (item === undefined) return undefined;
  // The other tables get the catalog's copy of the item id, not the event's: what they keep (session lists and
  // sets, rule successors, new keys) then shares one string per item instead of retaining each event's copy, and
  // their lookups find a key that is the same string (V8 compares by pointer before contents; its hash is cached).
  // The fields as arguments, not an event object per table.
  const itemId = item.itemId;
  const user = (index.eventWeights[e.type] ?? 0) > 0 ? index.userIds.slot(e.userId) : -1;
  index.covisitation.observeFields(e.type, e.timestampMs, itemId, e.userId, slot, user);
  index.trending.observeFields(e.type, e.timestampMs, itemId, item.categoryId, slot);
  // The rules see the session before the event joins it (in the same lookup of the user).
  if (user >= 0) index.sessions.observe(e.userId, itemId, e.timestampMs, index.rules, user, slot);
  if (index.bytes.total > index.maxStateBytes) boundRecsIndex(index);
  return item;
}

/**
 * The item event of a decoded `Event` (or a data-set event, which has the
 * same fields). The title comes from the `title` attribute, else the
 * `description` attribute (the Online Retail reader puts the product
 * description there). Returns undefined for events without an item or user.
 */
export function toItemEvent(e: IEvent): ItemEvent | undefined {
  if (!e.itemId || !e.userId || !e.type) return undefined;
  const attrs = e.attributes;
  return {
    userId: e.userId,
    itemId: e.itemId,
    type: e.type,
    timestampMs: e.timestampMs ?? 0,
    categoryId: e.categoryId ?? "",
    categoryPath: e.categoryPath ?? "",
    brand: e.brand ?? "",
    price: e.price ?? 0,
    currency: e.currency ?? "",
    title: attrs?.title ?? attrs?.description ?? "",
  };
}
