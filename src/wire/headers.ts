/**
 * NATS header names that are part of Portrait's wire contract: clients and
 * tools in any language read them (README "Error codes", "Dead letters").
 */

/**
 * On an error reply to a request (beside the NATS services headers
 * `Nats-Service-Error-Code` and `Nats-Service-Error`): the stable string
 * error code (src/errors.ts ErrorCode). The body is an ErrorReply in the
 * request's encoding.
 */
export const ERROR_CODE_HEADER = "Portrait-Error-Code";

/** Headers of a dead letter; its body is the original message, byte for byte. */
export const DLQ_HEADERS = Object.freeze({
  /** Why it was dead-lettered: a DeadLetterReason code (src/wire/event-validation.ts). */
  reason: "Portrait-Dlq-Reason",
  /** A human-readable detail of the reason. */
  detail: "Portrait-Dlq-Detail",
  /** The subject the event was published on. */
  subject: "Portrait-Source-Subject",
  /** The event's sequence in the event stream. */
  seq: "Portrait-Source-Seq",
});

/** On an UNAVAILABLE error reply (cluster mode: the user's partition is moving): how long to wait before asking again, ms. */
export const RETRY_AFTER_HEADER = "Portrait-Retry-After-Ms";
