/**
 * The recommendation index: the catalog, co-visitation and trending tables
 * fed together from one stream of item events. Single-threaded; the engine
 * hosts one per recs worker and feeds it every item event.
 */
import type { IEvent } from "../wire/proto.js";
import { Catalog } from "./catalog.js";
import { Covisitation } from "./covisitation.js";
import type { CompiledRecsOptions } from "./recs-options.js";
import { Trending } from "./trending.js";
import type { ItemEvent } from "./types.js";

export interface RecsIndex {
  readonly catalog: Catalog;
  readonly covisitation: Covisitation;
  readonly trending: Trending;
}

export function createRecsIndex(options: CompiledRecsOptions): RecsIndex {
  return {
    catalog: new Catalog(options.catalog),
    covisitation: new Covisitation(options.covisitation, options.eventWeights),
    trending: new Trending(options.trending, options.eventWeights),
  };
}

/**
 * Applies one item event to all three tables. The catalog goes first, and
 * trending counts the item under the category the catalog holds for it
 * afterwards: the event's own, unless the event has none or is older than the
 * item's last sighting. O(1) amortised (see each table).
 */
export function observeItemEvent(index: RecsIndex, e: ItemEvent): void {
  const item = index.catalog.observe(e);
  if (item === undefined) return;
  index.covisitation.observe(e);
  index.trending.observe(e, item.categoryId);
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
