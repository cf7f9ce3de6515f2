/**
 * Types shared by the recommendation index (catalog, co-visitation,
 * trending) and candidate generation.
 */
import type { EventType } from "../wire/proto.js";

/**
 * An item event as the recommendation index consumes it: the few fields of a
 * validated `Event` it reads. Optional fields may be absent, "" or 0, all of
 * which mean "not given". Events without an item (SEARCH) are ignored.
 */
export interface ItemEvent {
  /** The shop's user id; links the user's consecutive items in co-visitation. */
  userId: string;
  /** The shop's item id. */
  itemId: string;
  /** Event type; its weight (RecsOptions.eventWeights) decides what co-visitation and trending count. */
  type: EventType;
  /** Event time, Unix epoch ms. All decays run on this clock, not on arrival time. */
  timestampMs: number;
  /** Leaf category id. When absent, trending uses the category the catalog knows. */
  categoryId?: string;
  /** Category path ("electronics.smartphone"). Catalog only. */
  categoryPath?: string;
  /** Brand. Catalog only. */
  brand?: string;
  /** Unit price in major units of `currency`; 0 = unknown. Catalog only. */
  price?: number;
  /** ISO 4217 code of `price`. Catalog only. */
  currency?: string;
  /** Product title or description text. Catalog only. */
  title?: string;
}

/** An item and a decayed score (evaluated at the query's `nowMs`), best first in lists. */
export interface ScoredItem {
  itemId: string;
  score: number;
}

/** A key and a score: a profile affinity or a model prediction (same shape as the profile's `AffinityView`). */
export interface ScoredKey {
  key: string;
  score: number;
}
