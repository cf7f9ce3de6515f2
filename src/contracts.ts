/**
 * Types that several layers share: the query contract between the API, the
 * shards and the recs worker. Type declarations only; they cross threads, so
 * they hold plain data and typed arrays, and errors travel as WireError
 * (rebuilt with fromWire). A type owned by one side lives with it instead:
 * the batch contract in src/bus/event-batch.ts, thread stats in src/obs/,
 * the shard's own API in src/shard/shard-protocol.ts.
 */
import type { WireError } from "./errors.js";
import type { DeepFmUserFeatures } from "./models/deepfm-features.js";

/**
 * When a query arrived in the engine and by when it must be started (Unix
 * epoch ms, one clock for every thread): a shard that reaches the query after
 * `deadlineMs` answers OVERLOADED without doing the work.
 */
export interface QueryDeadline {
  receivedMs: number;
  deadlineMs: number;
}

/** The encoding of a request, and so of its reply (a JSON request starts with `{`). */
export type ReplyEncoding = "protobuf" | "json";

/** A profile reply, encoded by the shard in the request's encoding, or an error. */
export type ProfileResult = { ok: true; body: Uint8Array } | { ok: false; error: WireError };

/** What a recommendation request needs from the user's profile. */
export interface RecContext {
  /** False when the user has no profile. */
  known: boolean;
  /** The id the user's state is kept under: the pseudonym when pseudonymisation is on, else the user id. */
  userKey: string;
  /** The time the request is evaluated at (the shard's event clock unless the request named one). */
  asOfMs: number;
  recentItems: string[];
  topCategories: Array<{ key: string; score: number }>;
  /** The LSTM's next categories; empty without an LSTM. */
  nextCategories: Array<{ key: string; score: number }>;
  purchasedItems: string[];
  /** The DeepFM user fields. */
  user: DeepFmUserFeatures;
  /** The user's LSTM hidden state (the DeepFM dense input), when the LSTM runs. */
  lstmH: Float32Array | undefined;
  lstmVersion?: string | undefined;
}

export type RecContextResult = { ok: true; context: RecContext } | { ok: false; error: WireError };
