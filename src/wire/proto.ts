/**
 * The generated protobuf classes (see proto/ and scripts/compile-proto.mjs)
 * and the names the rest of the code uses for them.
 */
import "./protobuf-runtime.js";
import { portrait } from "./gen/portrait.js";

export const pb = portrait.v1;
export type IEvent = portrait.v1.IEvent;
export type Event = portrait.v1.Event;
export type ICatalogUpsert = portrait.v1.ICatalogUpsert;

/**
 * A plain Uint8Array view of the same bytes. protobufjs reads Node Buffers
 * through a path that does not bounds-check strings (a truncated message can
 * decode "successfully"); plain arrays get the strict reader.
 */
export function plainBytes(b: Uint8Array): Uint8Array {
  return Buffer.isBuffer(b) ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : b;
}

/** Numeric event types, as in proto/portrait/v1/event.proto. */
export const EventType = portrait.v1.EventType;
export type EventType = portrait.v1.EventType;

/**
 * Lower-case names of the valid event types, indexed by their number
 * (index 0, EVENT_TYPE_UNSPECIFIED, is not valid). These names key
 * `Profile.counts` and are what the CLI and the data readers use.
 */
export const EVENT_TYPE_NAMES = [
  "unspecified",
  "view",
  "click",
  "search",
  "add_to_cart",
  "remove_from_cart",
  "favorite",
  "purchase",
  "refund",
  "review",
  "rec_impression",
  "rec_click",
] as const;
export type EventTypeName = Exclude<(typeof EVENT_TYPE_NAMES)[number], "unspecified">;

/** Number of slots in a per-type count array (index = EventType number). */
export const EVENT_TYPE_SLOTS = EVENT_TYPE_NAMES.length;
