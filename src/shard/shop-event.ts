/**
 * A decoded shop event in one fixed shape, for the profile path of a batch
 * (applyEvent, risk, audiences, the LSTM step, the recs worker's item
 * events).
 *
 * Why: protobufjs's decoded `Event` keeps its defaults on the prototype and
 * gets an own property only for each field present on the wire, in wire
 * order, so events with different fields present have different hidden
 * classes. Every read of an event field downstream was then a polymorphic or
 * megamorphic property access, and a double read that way (timestamp,
 * price) is boxed: the LSTM step alone allocated ~2.5 KiB per event and was
 * deoptimised for "wrong map" again and again (`--trace-deopt` on
 * bench/shard-apply.ts). One copy into this literal shape per event
 * makes those reads monomorphic.
 *
 * Only the fields these readers use are copied; identity and social events,
 * which re-encode or forward the decoded event, keep the `Event`.
 */
import type { ProfileEvent } from "../actors/user-profile.js";
import type { Event } from "../wire/proto.js";

/** What the profile path reads of an event: ProfileEvent, and what ItemEvent, LstmEvent, the review and the feedback add. */
export interface ShopEvent extends ProfileEvent {
  eventId: string;
  userId: string;
  categoryPath: string;
  searchQuery: string;
  attributes: { [k: string]: string };
  rating: number;
  reviewText: string;
  recRequestId: string;
  modelVersion: string;
  recPropensity: number | null;
  review: { sentiment: number; aspects: string[] } | undefined;
}

/** The fixed-shape copy of a validated shop event (every field always present, in this order). */
export function shopEvent(e: Event): ShopEvent {
  return {
    eventId: e.eventId,
    userId: e.userId,
    type: e.type,
    timestampMs: e.timestampMs,
    itemId: e.itemId,
    categoryId: e.categoryId,
    categoryPath: e.categoryPath,
    brand: e.brand,
    price: e.price,
    quantity: e.quantity,
    currency: e.currency,
    sessionId: e.sessionId,
    orderId: e.orderId,
    searchQuery: e.searchQuery,
    attributes: e.attributes,
    rating: e.rating,
    reviewText: e.reviewText,
    recRequestId: e.recRequestId,
    modelVersion: e.modelVersion,
    recPropensity: e.recPropensity ?? null,
    review: undefined,
  };
}
