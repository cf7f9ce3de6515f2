/**
 * Portrait's errors. Every error the system reports carries a stable string
 * `code` (part of the API: request-reply error replies, dead-letter reasons,
 * CLI exit messages) and an optional `cause`.
 *
 * - Terminal errors describe input that will never succeed (a poison event,
 *   a bad query): they are dead-lettered or answered, never retried.
 * - Retryable errors describe a transient condition (overload, a broker that
 *   is away): the caller may try again later.
 *
 * `instanceof` does not survive a thread boundary or the wire: send
 * `toWire(err)` (a plain {code, message}) and rebuild it with `fromWire`
 * (comlink calls both for errors thrown across a thread: src/threads/).
 */

/** Stable error codes. Keep in sync with README "Error codes" (a test checks). */
export const ErrorCode = {
  /** A query or option is malformed or fails validation. Terminal. */
  BAD_REQUEST: "BAD_REQUEST",
  /** A profile was asked for a user the engine has never seen. Terminal. */
  UNKNOWN_USER: "UNKNOWN_USER",
  /** A bounded queue is full; try again later. Retryable. */
  OVERLOADED: "OVERLOADED",
  /** A request did not get a reply in time. Retryable. */
  TIMEOUT: "TIMEOUT",
  /** No engine answers on the subject (no responders). Retryable. */
  NO_RESPONDERS: "NO_RESPONDERS",
  /** Cluster mode: the user's partition is moving between engine nodes (or its owner does not answer); the reply's Portrait-Retry-After-Ms header says when to try again. Retryable. */
  UNAVAILABLE: "UNAVAILABLE",
  /** A JetStream publish was not acknowledged. Retryable. */
  PUBLISH_FAILED: "PUBLISH_FAILED",
  /** NATS refused the connection (wrong user/password, token, nkey or creds), or the TLS handshake failed (the server's certificate is not trusted or does not name the host). Terminal: fix the options. */
  AUTH_FAILED: "AUTH_FAILED",
  /** Options or persisted configuration are invalid or conflict. Terminal. */
  CONFIG: "CONFIG",
  /** The nats-server binary needed to start an embedded server is missing. Terminal. */
  NATS_SERVER_NOT_FOUND: "NATS_SERVER_NOT_FOUND",
  /** A worker thread exited while requests were pending. Retryable. */
  WORKER_EXITED: "WORKER_EXITED",
  /** A data file is missing or unreadable. Terminal. */
  DATA_NOT_FOUND: "DATA_NOT_FOUND",
  /** A data file is not of the format it is read as (a header without the format's columns, or no row that makes an event). Terminal. */
  DATA_FORMAT: "DATA_FORMAT",
  /** LMDB could not commit (disk full, I/O error): the engine stops without acknowledging the batch. Retryable after the cause is fixed. */
  STORAGE_FAILED: "STORAGE_FAILED",
  /** An audience definition is invalid: unknown field, wrong type, an unknown or cyclic audience reference, too many rules. The message names the audience and the field. Terminal. */
  BAD_AUDIENCE: "BAD_AUDIENCE",
  /** No audience has this id. Terminal. */
  UNKNOWN_AUDIENCE: "UNKNOWN_AUDIENCE",
  /** The model registry's Object Store or KV bucket does not exist on this NATS server (no engine with the registry on has started, or another --prefix). Terminal: start an engine or `portrait models push` first. */
  REGISTRY_MISSING: "REGISTRY_MISSING",
  /** A model artifact in the registry or a local cache is corrupt: a digest mismatch, a missing file its manifest names, or a file that does not parse. Terminal: push the version again. */
  MODEL_CORRUPT: "MODEL_CORRUPT",
  /** A model's manifest is of a schema this engine cannot run: an unknown name or format, or a ranker paired with another LSTM version than the one promoted. Terminal. */
  MODEL_INCOMPATIBLE: "MODEL_INCOMPATIBLE",
  /** A promotion was refused: the challenger's evaluation does not beat the champion and every baseline on the same window, or it has none (use --force). Terminal. */
  PROMOTION_REFUSED: "PROMOTION_REFUSED",
  /** An unexpected failure inside the engine. */
  INTERNAL: "INTERNAL",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The HTTP-like numbers sent in the NATS services `Nats-Service-Error-Code` header. */
export const errorStatus: Readonly<Record<ErrorCode, number>> = Object.freeze({
  BAD_REQUEST: 400,
  UNKNOWN_USER: 404,
  OVERLOADED: 503,
  TIMEOUT: 504,
  NO_RESPONDERS: 503,
  UNAVAILABLE: 503,
  PUBLISH_FAILED: 503,
  AUTH_FAILED: 401,
  CONFIG: 500,
  NATS_SERVER_NOT_FOUND: 500,
  WORKER_EXITED: 503,
  DATA_NOT_FOUND: 404,
  DATA_FORMAT: 422,
  STORAGE_FAILED: 507,
  BAD_AUDIENCE: 422,
  UNKNOWN_AUDIENCE: 404,
  REGISTRY_MISSING: 404,
  MODEL_CORRUPT: 422,
  MODEL_INCOMPATIBLE: 422,
  PROMOTION_REFUSED: 409,
  INTERNAL: 500,
});

/**
 * The codes for which trying again later may succeed (PortraitError.retryable);
 * the others are terminal, or a bug (INTERNAL). README's "retry?" column and
 * the "Retryable."/"Terminal." notes above say the same (test/docs.test.ts).
 */
export const retryableCodes: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "OVERLOADED", "TIMEOUT", "NO_RESPONDERS", "UNAVAILABLE", "PUBLISH_FAILED", "WORKER_EXITED", "STORAGE_FAILED",
]);

/** Base of every Portrait error. */
export class PortraitError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
  /** True when trying again later may succeed. */
  get retryable(): boolean {
    return retryableCodes.has(this.code);
  }
}

export class BadRequestError extends PortraitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.BAD_REQUEST, message, options);
  }
}
export class UnknownUserError extends PortraitError {
  constructor(userId: string) {
    super(ErrorCode.UNKNOWN_USER, unknownUserMessage(userId));
  }
}
function unknownUserMessage(userId: string): string {
  return `no profile for user ${JSON.stringify(userId)}`;
}
/** `toWire(new UnknownUserError(userId))` without building an Error (its stack): a shard answers it for every lookup of an id it never saw. */
export function unknownUserWire(userId: string): WireError {
  return { code: ErrorCode.UNKNOWN_USER, message: unknownUserMessage(userId) };
}
export class OverloadedError extends PortraitError {
  constructor(message = "the engine is overloaded; try again later") {
    super(ErrorCode.OVERLOADED, message);
  }
}
/** Cluster mode: the user's partition has no serving owner right now (UNAVAILABLE); `retryAfterMs` is the hint sent in the Portrait-Retry-After-Ms header. */
export class UnavailableError extends PortraitError {
  readonly retryAfterMs: number;
  constructor(message: string, retryAfterMs: number) {
    super(ErrorCode.UNAVAILABLE, message);
    this.retryAfterMs = retryAfterMs;
  }
}
export class ConfigError extends PortraitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.CONFIG, message, options);
  }
}

/** A registry bucket is missing (REGISTRY_MISSING). */
export class RegistryMissingError extends PortraitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.REGISTRY_MISSING, message, options);
  }
}
/** A model artifact is corrupt (MODEL_CORRUPT). */
export class ModelCorruptError extends PortraitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.MODEL_CORRUPT, message, options);
  }
}
/** A model manifest is of an incompatible schema (MODEL_INCOMPATIBLE). */
export class ModelIncompatibleError extends PortraitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.MODEL_INCOMPATIBLE, message, options);
  }
}
/** A promotion was refused (PROMOTION_REFUSED). */
export class PromotionRefusedError extends PortraitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.PROMOTION_REFUSED, message, options);
  }
}

/**
 * Plain form of an error for thread messages, comlink rejections and reply
 * bodies: `toWire` on the sending side, `fromWire` on the receiving side.
 */
export interface WireError {
  code: ErrorCode;
  message: string;
}

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === "string" && Object.hasOwn(ErrorCode, s);
}

/** A PortraitError keeps its code; anything else is INTERNAL with its message. */
export function toWire(err: unknown): WireError {
  if (err instanceof PortraitError) return { code: err.code, message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: ErrorCode.INTERNAL, message };
}

/**
 * Rebuilds an error sent as `toWire(err)`: the subclass of its code where one
 * can be rebuilt from the message, else a PortraitError with the code. An
 * unknown code (a newer peer) becomes INTERNAL.
 */
export function fromWire(e: WireError): PortraitError {
  switch (e.code) {
    case ErrorCode.BAD_REQUEST: return new BadRequestError(e.message);
    case ErrorCode.OVERLOADED: return new OverloadedError(e.message);
    case ErrorCode.CONFIG: return new ConfigError(e.message);
    case ErrorCode.REGISTRY_MISSING: return new RegistryMissingError(e.message);
    case ErrorCode.MODEL_CORRUPT: return new ModelCorruptError(e.message);
    case ErrorCode.MODEL_INCOMPATIBLE: return new ModelIncompatibleError(e.message);
    case ErrorCode.PROMOTION_REFUSED: return new PromotionRefusedError(e.message);
    default: return new PortraitError(isErrorCode(e.code) ? e.code : ErrorCode.INTERNAL, e.message);
  }
}
