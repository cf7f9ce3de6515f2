/**
 * Decoding and validation of incoming events: the only gate between the
 * stream and the actors. Pure and deterministic (apart from the clock passed
 * in), so a redelivered event gets the same verdict as the first time.
 */
import { partitionOf } from "./partition.js";
import { verifyInternal } from "./internal-mac.js";
import { EventType, pb, plainBytes, type Event } from "./proto.js";

/**
 * Why an event was dead-lettered. The code is the last token of the
 * dead-letter subject (`<prefix>.dlq.<REASON>`) and the `Portrait-Dlq-Reason`
 * header. Stable: part of the API (README "Dead letters").
 */
export const DeadLetterReason = {
  /** The bytes are not a protobuf `Event` (truncated, garbage, wrong message). */
  MALFORMED: "MALFORMED",
  /** The payload is larger than maxEventBytes. */
  TOO_LARGE: "TOO_LARGE",
  /** event_id is empty. */
  MISSING_EVENT_ID: "MISSING_EVENT_ID",
  /** user_id is empty. */
  MISSING_USER_ID: "MISSING_USER_ID",
  /** event_id or user_id is too long or not valid UTF-8. */
  BAD_ID: "BAD_ID",
  /** type is EVENT_TYPE_UNSPECIFIED or a number this engine does not know. */
  UNKNOWN_TYPE: "UNKNOWN_TYPE",
  /** timestamp_ms is missing, before 2000-01-01 or too far in the future. */
  BAD_TIMESTAMP: "BAD_TIMESTAMP",
  /** price is not finite, negative, or above 1e9. */
  BAD_PRICE: "BAD_PRICE",
  /** quantity is above 1e6. */
  BAD_QUANTITY: "BAD_QUANTITY",
  /** rating is above 5. */
  BAD_RATING: "BAD_RATING",
  /** An item event without item_id. */
  MISSING_ITEM_ID: "MISSING_ITEM_ID",
  /** A SEARCH without search_query. */
  MISSING_QUERY: "MISSING_QUERY",
  /** A string field is longer than its documented limit, or too many attributes. */
  FIELD_TOO_LONG: "FIELD_TOO_LONG",
  /** currency differs from the engine's configured currency. */
  CURRENCY_MISMATCH: "CURRENCY_MISMATCH",
  /** The event's user hashes to another partition than the subject it came on. */
  WRONG_PARTITION: "WRONG_PARTITION",
  /** An IDENTIFY without primary_user_id (one id only). */
  IDENTIFY_MISSING_PRIMARY: "IDENTIFY_MISSING_PRIMARY",
  /** An IDENTIFY whose primary_user_id is its user_id. */
  IDENTIFY_SAME_ID: "IDENTIFY_SAME_ID",
  /** An IDENTIFY whose primary is already an alias of its user_id (A -> B, then B -> A), or an event forwarded round an alias loop. */
  IDENTIFY_CYCLE: "IDENTIFY_CYCLE",
  /** An IDENTITY_HANDOVER without merge_id or state, or not marked forwarded (only the engine publishes them). */
  BAD_HANDOVER: "BAD_HANDOVER",
  /** An event marked forwarded (a hand-over, an event forwarded from an alias, a social notice) without the engine's valid signature (internal_mac). */
  FORGED_INTERNAL: "FORGED_INTERNAL",
  /** A FOLLOW or UNFOLLOW without target_user_id. */
  MISSING_TARGET: "MISSING_TARGET",
  /** A FOLLOW, UNFOLLOW or SHARE whose target_user_id is its user_id (a self-follow). */
  SELF_TARGET: "SELF_TARGET",
  /** An UNFOLLOW of an id the user does not follow (as far as the followed ids its profile keeps tell). Judged by the actor, before the event changes anything. */
  NOT_FOLLOWING: "NOT_FOLLOWING",
  /** A SOCIAL_NOTICE not made by the engine (not forwarded; without social_notice or social_notices; a notice without its kind, its sender or, in a batch, its recipient; more than 256 notices). */
  BAD_NOTICE: "BAD_NOTICE",
  /** rec_propensity is present but not in (0, 1], or present on another type than REC_IMPRESSION / REC_CLICK, or without rec_request_id. */
  BAD_PROPENSITY: "BAD_PROPENSITY",
  /**
   * Logged feedback (rec_propensity present) whose rec_request_id names no
   * reply this engine served within feedbackWindowMs (or whose item was not
   * in it). Judged after the batch (src/recs/feedback-log.ts): the event fed
   * the profile like any rec_impression / rec_click; it is kept out of the training log.
   */
  UNKNOWN_REC_REQUEST: "UNKNOWN_REC_REQUEST",
  /** Logged feedback whose rec_propensity differs from the one served for that item in that reply. Judged like UNKNOWN_REC_REQUEST. */
  PROPENSITY_MISMATCH: "PROPENSITY_MISMATCH",
  /** A logged REC_CLICK before any logged REC_IMPRESSION of the same item in the same reply. Judged like UNKNOWN_REC_REQUEST. */
  CLICK_WITHOUT_IMPRESSION: "CLICK_WITHOUT_IMPRESSION",
  /**
   * Cluster mode (README "Scale-out"): an IDENTIFY, IDENTITY_HANDOVER, FOLLOW,
   * UNFOLLOW, SHARE or SOCIAL_NOTICE. Their effects on other users (the alias
   * table, hand-overs, notices) live in the owner's LMDB and outbox, which a
   * takeover does not carry yet; so they are refused rather than lost. Judged
   * by the shard, never by decodeEvent.
   */
  CLUSTER_UNSUPPORTED: "CLUSTER_UNSUPPORTED",
} as const;
export type DeadLetterReason = (typeof DeadLetterReason)[keyof typeof DeadLetterReason];

/** The reasons judged against the served replies after a batch (src/recs/feedback-log.ts), never by decodeEvent. */
export const JUDGED_AFTER_BATCH: ReadonlySet<DeadLetterReason> = new Set<DeadLetterReason>(["UNKNOWN_REC_REQUEST", "PROPENSITY_MISMATCH", "CLICK_WITHOUT_IMPRESSION"]);

export interface EventValidationOptions {
  /** Partition count P of the deployment. */
  partitions: number;
  /** Largest accepted payload, bytes. */
  maxEventBytes: number;
  /** How far past the engine's wall clock a timestamp may be, ms. */
  maxFutureSkewMs: number;
  /** When set, the only accepted non-empty currency (ISO 4217). */
  currency?: string | undefined;
  /** The deployment's internal key: when set, an event marked forwarded needs its signature (src/wire/internal-mac.ts). */
  internalKey?: Uint8Array | undefined;
}

/** Why an event is dead-lettered, as decodeEvent (and the shards' decodeShopEvent) tell it. */
export interface DecodeFailure {
  ok: false;
  reason: DeadLetterReason;
  detail: string;
}

export type DecodeResult = { ok: true; event: Event } | DecodeFailure;

/** The fields of an Event that the checks read, apart from the engine-internal and social ones (InternalFields). */
export type CheckedFields = Pick<Event, "eventId" | "userId" | "type" | "timestampMs" | "price" | "quantity" | "rating" | "itemId" | "categoryId" |
  "categoryPath" | "brand" | "sessionId" | "orderId" | "searchQuery" | "reviewText" | "attributes" | "currency" | "recPropensity" | "recRequestId">;

/** The engine-internal and social fields of an Event that the checks read. */
export type InternalFields = Pick<Event, "primaryUserId" | "mergeId" | "handoverState" | "forwarded" | "targetUserId" | "socialNotice" | "socialNotices">;

/** InternalFields of an event that has none of them on the wire (a shop event of types VIEW to REC_CLICK as shops publish it). */
export const NO_INTERNAL_FIELDS: InternalFields = Object.freeze({
  primaryUserId: "", mergeId: "", handoverState: new Uint8Array(0), forwarded: false, targetUserId: "", socialNotice: null, socialNotices: Object.freeze([]) as unknown as [],
});

/** 2000-01-01T00:00:00Z: no shop event is older. */
export const MIN_TIMESTAMP_MS = 946_684_800_000;
const MAX_PRICE = 1e9;
const MAX_QUANTITY = 1e6;
const MAX_ID_CHARS = 256;
const MAX_EVENT_ID_CHARS = 128;
const MAX_QUERY_CHARS = 1024;
const MAX_REVIEW_CHARS = 16 * 1024;
const MAX_ATTRIBUTES = 32;
/** Most notices in one SOCIAL_NOTICE batch (proto `Event.social_notices`). */
export const MAX_NOTICES_PER_MESSAGE = 256;

function validNoticeKind(k: number | null | undefined): boolean {
  return k != null && k >= pb.SocialNotice.Kind.FOLLOWED && k <= pb.SocialNotice.Kind.INTERESTS;
}

function fail(reason: DeadLetterReason, detail: string): DecodeFailure {
  return { ok: false, reason, detail };
}

/** Counts without allocating a key array: this runs for every event. */
function tooManyAttributes(a: Record<string, string>): boolean {
  let n = 0;
  for (const _ in a) if (++n > MAX_ATTRIBUTES) return true;
  return false;
}

function badText(s: string): boolean {
  // Invalid UTF-8 decodes to U+FFFD; lone surrogates cannot come from UTF-8.
  return s.includes("\uFFFD") || !s.isWellFormed();
}

/**
 * Decodes and validates one event that arrived on `partition`'s subject.
 * `nowMs` is the engine's wall clock, for the future-skew check.
 */
export function decodeEvent(bytes: Uint8Array, partition: number, nowMs: number, o: EventValidationOptions): DecodeResult {
  if (bytes.byteLength > o.maxEventBytes) return fail("TOO_LARGE", `payload is ${bytes.byteLength} bytes, limit ${o.maxEventBytes}`);
  let e: Event;
  try {
    e = pb.Event.decode(plainBytes(bytes));
  } catch (err) {
    return fail("MALFORMED", `not a portrait.v1.Event: ${(err as Error).message}`);
  }
  const bad = checkEvent(e, e, nowMs, o);
  if (bad !== undefined) return bad;
  // Only the engine forwards: its signature is checked before the event's key or partition is trusted.
  if (e.forwarded && o.internalKey !== undefined && !verifyInternal(o.internalKey, bytes)) {
    return fail("FORGED_INTERNAL", "forwarded is set but the engine's signature (internal_mac) is missing or wrong: only the engine publishes hand-overs and forwarded events");
  }
  // A forwarded event's user_id is the engine's key and its partition the engine's choice (README "Identity").
  return (e.forwarded ? undefined : wrongPartition(e.userId, partition, o)) ?? { ok: true, event: e };
}

/** The partition check of an event that is not forwarded: its user must hash to the partition it arrived on. */
export function wrongPartition(userId: string, partition: number, o: EventValidationOptions): DecodeFailure | undefined {
  const p = partitionOf(userId, o.partitions);
  return p !== partition ? fail("WRONG_PARTITION", `user belongs to partition ${p}, event arrived on ${partition}`) : undefined;
}

/**
 * The checks of a decoded event, in the order that decides the reason of an
 * event with several faults; `x` holds its internal fields (`e` itself for a
 * protobuf Event). The signature and the partition are checked after these.
 */
export function checkEvent(e: CheckedFields, x: InternalFields, nowMs: number, o: EventValidationOptions): DecodeFailure | undefined {
  if (e.eventId === "") return fail("MISSING_EVENT_ID", "event_id is empty");
  if (e.eventId.length > MAX_EVENT_ID_CHARS || badText(e.eventId)) return fail("BAD_ID", "event_id is too long or not valid UTF-8");
  if (e.userId === "") return fail("MISSING_USER_ID", "user_id is empty");
  if (e.userId.length > MAX_ID_CHARS || badText(e.userId)) return fail("BAD_ID", "user_id is too long or not valid UTF-8");
  const t = e.type as number;
  if (!(Number.isInteger(t) && t > 0 && t <= EventType.SOCIAL_NOTICE)) return fail("UNKNOWN_TYPE", `unknown event type ${t}`);
  const ts = e.timestampMs;
  if (!(ts >= MIN_TIMESTAMP_MS)) return fail("BAD_TIMESTAMP", `timestamp_ms ${ts} is missing or before 2000-01-01`);
  if (ts > nowMs + o.maxFutureSkewMs) return fail("BAD_TIMESTAMP", `timestamp_ms ${ts} is more than ${o.maxFutureSkewMs} ms in the future`);
  if (!Number.isFinite(e.price) || e.price < 0 || e.price > MAX_PRICE) return fail("BAD_PRICE", `price ${e.price} is not in [0, 1e9]`);
  if (e.quantity > MAX_QUANTITY) return fail("BAD_QUANTITY", `quantity ${e.quantity} is above 1e6`);
  if (e.rating > 5) return fail("BAD_RATING", `rating ${e.rating} is not in 0..5`);
  if (t === EventType.IDENTIFY) {
    if (x.primaryUserId === "") return fail("IDENTIFY_MISSING_PRIMARY", "an IDENTIFY needs primary_user_id (the id user_id merges into)");
    if (x.primaryUserId.length > MAX_ID_CHARS || badText(x.primaryUserId)) return fail("BAD_ID", "primary_user_id is too long or not valid UTF-8");
    if (x.primaryUserId === e.userId) return fail("IDENTIFY_SAME_ID", "primary_user_id is user_id: an id cannot merge into itself");
  } else if (t === EventType.IDENTITY_HANDOVER) {
    if (!x.forwarded || x.mergeId === "" || x.handoverState.length === 0) {
      return fail("BAD_HANDOVER", "an IDENTITY_HANDOVER is engine-internal: forwarded, merge_id and handover_state are required");
    }
  } else if (t === EventType.FOLLOW || t === EventType.UNFOLLOW) {
    if (x.targetUserId === "") return fail("MISSING_TARGET", "a FOLLOW or UNFOLLOW needs target_user_id (the user followed)");
  } else if (t === EventType.SOCIAL_NOTICE) {
    const n = x.socialNotice;
    if (!x.forwarded) return fail("BAD_NOTICE", "a SOCIAL_NOTICE is engine-internal: forwarded is required");
    if (x.socialNotices.length > 0) {
      // The batch form: every notice is checked before any is applied (a batch is applied whole or dead-lettered whole).
      if (n != null || x.socialNotices.length > MAX_NOTICES_PER_MESSAGE) return fail("BAD_NOTICE", `a SOCIAL_NOTICE batch carries 1..${MAX_NOTICES_PER_MESSAGE} notices in social_notices and no social_notice`);
      for (const y of x.socialNotices) {
        if (!validNoticeKind(y.kind) || !y.fromKey || !y.toKey || y.toKey.length > MAX_ID_CHARS) {
          return fail("BAD_NOTICE", "every notice of a SOCIAL_NOTICE batch needs a known kind, from_key and to_key");
        }
      }
    } else if (n == null || !(n.kind! > 0) || !n.fromKey) {
      return fail("BAD_NOTICE", "a SOCIAL_NOTICE is engine-internal: forwarded, social_notice (or social_notices) with its kind and from_key are required");
    }
  } else if (t === EventType.SEARCH) {
    if (e.searchQuery === "") return fail("MISSING_QUERY", "a SEARCH needs search_query");
  } else if (e.itemId === "") {
    return fail("MISSING_ITEM_ID", "this event type needs item_id");
  }
  if (x.targetUserId !== "" && (t === EventType.FOLLOW || t === EventType.UNFOLLOW || t === EventType.SHARE)) {
    if (x.targetUserId.length > MAX_ID_CHARS || badText(x.targetUserId)) return fail("BAD_ID", "target_user_id is too long or not valid UTF-8");
    if (x.targetUserId === e.userId) return fail("SELF_TARGET", `${t === EventType.SHARE ? "a share with" : "a follow or unfollow of"} oneself: target_user_id is user_id`);
  }
  if (
    e.itemId.length > MAX_ID_CHARS || e.categoryId.length > MAX_ID_CHARS || e.categoryPath.length > MAX_QUERY_CHARS ||
    e.brand.length > MAX_ID_CHARS || e.sessionId.length > MAX_ID_CHARS || e.orderId.length > MAX_ID_CHARS ||
    e.searchQuery.length > MAX_QUERY_CHARS || e.reviewText.length > MAX_REVIEW_CHARS || x.mergeId.length > MAX_ID_CHARS
  ) {
    return fail("FIELD_TOO_LONG", "a string field is longer than its limit (README \"Event fields\")");
  }
  if (tooManyAttributes(e.attributes)) return fail("FIELD_TOO_LONG", `more than ${MAX_ATTRIBUTES} attributes`);
  if (o.currency && e.currency !== "" && e.currency !== o.currency) {
    return fail("CURRENCY_MISMATCH", `currency ${JSON.stringify(e.currency)} is not the engine's ${o.currency}`);
  }
  if (e.recPropensity != null) {
    const q = e.recPropensity;
    if (t !== EventType.REC_IMPRESSION && t !== EventType.REC_CLICK) return fail("BAD_PROPENSITY", "rec_propensity is only for REC_IMPRESSION and REC_CLICK");
    if (!(q > 0 && q <= 1)) return fail("BAD_PROPENSITY", `rec_propensity ${q} is not in (0, 1]`);
    if (e.recRequestId === "") return fail("BAD_PROPENSITY", "rec_propensity without rec_request_id");
  }
  return undefined;
}
