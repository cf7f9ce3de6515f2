/**
 * A decoded shop event in one fixed shape, for the profile path of a batch
 * (applyEvent, risk, audiences, the LSTM step, the recs worker's item
 * events), and its decoder straight from a batch's bytes.
 *
 * Why one shape: protobufjs's decoded `Event` keeps its defaults on the
 * prototype and gets an own property only for each field present on the
 * wire, in wire order, so events with different fields present have
 * different hidden classes. Every read of an event field downstream was then
 * a polymorphic or megamorphic property access, and a double read that way
 * (timestamp, price) is boxed: the LSTM step alone allocated ~2.5 KiB per
 * event and was deoptimised for "wrong map" again and again
 * (`--trace-deopt` on bench/shard-apply.ts). This literal shape makes those
 * reads monomorphic.
 *
 * Only the fields these readers use are kept; identity and social events,
 * which re-encode or forward the decoded event, keep the `Event`.
 */
import { checkEvent, NO_INTERNAL_FIELDS, wrongPartition, type DecodeFailure, type EventValidationOptions } from "./event-validation.js";
import { EventType, type Event } from "./proto.js";
import { utf8Slice } from "./protobuf-runtime.js";

/** The shop fields of an Event (the shard's ProfileEvent, ItemEvent, LstmEvent and feedback read them), and the review the shard adds. */
export interface ShopEvent extends Pick<Event, "eventId" | "userId" | "type" | "timestampMs" | "itemId" | "categoryId" | "categoryPath" | "brand" | "price" |
  "quantity" | "currency" | "sessionId" | "orderId" | "searchQuery" | "attributes" | "rating" | "reviewText" | "recRequestId" | "modelVersion"> {
  recPropensity: number | null;
  /** A REVIEW's text as the shard's sentiment model read it; undefined until then. */
  review: { sentiment: number; aspects: string[] } | undefined;
}

/** The fixed-shape copy of a validated shop event (every field always present, in this order: the same as decodeShopEvent's literal). */
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

/** The attributes of an event that has none (read only: risk and the sentiment model look keys up). */
const NO_ATTRIBUTES: { [k: string]: string } = Object.freeze({});

const NO_BYTES = new Uint8Array(0);
// The decoder's cursor: one event at a time, on one thread.
let buf: Uint8Array = NO_BYTES;
let pos = 0;
/** Set when the bytes leave what decodeShopEvent reads as protobufjs would; the event then goes to decodeEvent. */
let irregular = false;
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const f64View = new DataView(f64.buffer);

function giveUp(): number {
  irregular = true;
  pos = Number.MAX_SAFE_INTEGER;
  return 0;
}

/** protobufjs's Reader.uint32 (int32 is it | 0), for a varint of at most 5 bytes that ends before `end`. */
function varint32(end: number): number {
  let v = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    if (pos >= end) return giveUp();
    const b = buf[pos++]!;
    v = (v | ((b & 127) << shift)) >>> 0;
    if (b < 128) return v;
  }
  if (pos >= end) return giveUp();
  const b = buf[pos++]!;
  // protobufjs skips 5 more bytes here without reading them.
  if (b >= 128) return giveUp();
  return (v | ((b & 15) << 28)) >>> 0;
}

/** protobufjs's Reader.uint64 as a number, for a varint of at most 7 bytes (49 bits: exact both ways) that ends before `end`. */
function varint49(end: number): number {
  let v = 0;
  let scale = 1;
  for (let i = 0; i < 7; i++) {
    if (pos >= end) return giveUp();
    const b = buf[pos++]!;
    v += (b & 127) * scale;
    if (b < 128) return v;
    scale *= 128;
  }
  return giveUp();
}

/** protobufjs's Reader.double (little-endian IEEE 754). */
function double(end: number): number {
  if (pos + 8 > end) return giveUp();
  for (let i = 0; i < 8; i++) f64Bytes[i] = buf[pos + i]!;
  pos += 8;
  return f64View.getFloat64(0, true);
}

/** A length-delimited string (protobuf-runtime.ts's Reader.string). */
function string(end: number): string {
  const n = varint32(end);
  const start = pos;
  if (irregular || start + n > end) {
    giveUp();
    return "";
  }
  pos = start + n;
  return utf8Slice.call(buf, start, pos);
}

/** One entry of the attributes map (field 16) into `into`, as protobufjs merges it; `into` is a new object or NO_ATTRIBUTES. */
function attribute(into: { [k: string]: string }, end: number): { [k: string]: string } {
  const n = varint32(end);
  const entryEnd = pos + n;
  if (irregular || entryEnd > end) {
    giveUp();
    return into;
  }
  let k = "";
  let v = "";
  while (pos < entryEnd) {
    const tag = varint32(entryEnd);
    if (tag === 10) k = string(entryEnd);
    else if (tag === 18) v = string(entryEnd);
    else giveUp();
  }
  if (irregular || k === "__proto__") {
    giveUp();
    return into;
  }
  const out = into === NO_ATTRIBUTES ? {} : into;
  out[k] = v;
  return out;
}

/**
 * Decodes and validates the event at `data[start, end)` of a batch as
 * decodeEvent does (the same checks in the same order, so the same reason
 * and detail), without protobufjs's `Event`, its reader or a view of the
 * bytes: the fields go straight into the ShopEvent literal. It takes an
 * event of a shop type (VIEW to REC_CLICK and the invalid numbers) with
 * only the fields shops set, each with its proto wire type and a regular
 * encoding; for anything else (identity and social types, the engine's
 * internal fields, unknown fields, a truncated or odd encoding) it returns
 * undefined, and the event is decoded by decodeEvent.
 */
export function decodeShopEvent(data: Uint8Array, start: number, end: number, partition: number, nowMs: number, o: EventValidationOptions): ShopEvent | DecodeFailure | undefined {
  if (end - start > o.maxEventBytes) return undefined;
  buf = data;
  pos = start;
  irregular = false;
  let eventId = "", userId = "", itemId = "", categoryId = "", categoryPath = "", brand = "", currency = "", sessionId = "";
  let orderId = "", searchQuery = "", reviewText = "", recRequestId = "", modelVersion = "";
  let type = 0, timestampMs = 0, price = 0, quantity = 0, rating = 0;
  let recPropensity: number | null = null;
  let attributes = NO_ATTRIBUTES;
  while (pos < end) {
    // The tag: field number << 3 | wire type (2 length-delimited, 0 varint, 1 64-bit).
    switch (varint32(end)) {
      case 1 << 3 | 2: eventId = string(end); break;
      case 2 << 3 | 2: userId = string(end); break;
      case 3 << 3 | 0: type = varint32(end) | 0; break;
      case 4 << 3 | 0: timestampMs = varint49(end); break;
      case 5 << 3 | 2: itemId = string(end); break;
      case 6 << 3 | 2: categoryId = string(end); break;
      case 7 << 3 | 2: categoryPath = string(end); break;
      case 8 << 3 | 2: brand = string(end); break;
      case 9 << 3 | 1: price = double(end); break;
      case 10 << 3 | 0: quantity = varint32(end); break;
      case 11 << 3 | 2: currency = string(end); break;
      case 12 << 3 | 2: sessionId = string(end); break;
      case 13 << 3 | 2: searchQuery = string(end); break;
      case 14 << 3 | 2: reviewText = string(end); break;
      case 15 << 3 | 0: rating = varint32(end); break;
      case 16 << 3 | 2: attributes = attribute(attributes, end); break;
      case 17 << 3 | 2: orderId = string(end); break;
      case 18 << 3 | 2: recRequestId = string(end); break;
      case 19 << 3 | 2: modelVersion = string(end); break;
      case 25 << 3 | 1: recPropensity = double(end); break;
      default: giveUp();
    }
  }
  buf = NO_BYTES;
  if (irregular || (type >= EventType.IDENTIFY && type <= EventType.SOCIAL_NOTICE)) return undefined;
  const x: ShopEvent = {
    eventId,
    userId,
    type,
    timestampMs,
    itemId,
    categoryId,
    categoryPath,
    brand,
    price,
    quantity,
    currency,
    sessionId,
    orderId,
    searchQuery,
    attributes,
    rating,
    reviewText,
    recRequestId,
    modelVersion,
    recPropensity,
    review: undefined,
  };
  return checkEvent(x, NO_INTERNAL_FIELDS, nowMs, o) ?? wrongPartition(userId, partition, o) ?? x;
}
