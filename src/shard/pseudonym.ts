/**
 * User-id pseudonymisation (engine option `pseudonymKeyFile`, README
 * "Pseudonymisation").
 *
 * When a key is configured, a user id is replaced, where it enters the shard
 * (an event after decoding; a profile, recommendation or forget query), by
 * `p_` + the first 22 characters of base64url(HMAC-SHA256(key, UTF-8 id))
 * (132 bits). Everything below the shard (actors, LMDB keys, the recs
 * worker's co-visitation, logs) sees only the pseudonym. Partitioning happens
 * before, on the raw id: publishers compute it, so the partition of a user is
 * not a secret.
 *
 * The key is the key file's bytes without trailing line breaks, at least 16
 * bytes; it is read once at start and never logged. Another key maps every
 * user to another pseudonym, making the stored state unreachable; the store
 * keeps `keyCheck(key)` to refuse such a start (ProfileStore.checkPseudonymKey).
 */
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { ConfigError } from "../errors.js";

/** Maps a raw user id to the id the engine keeps state under. */
export type Pseudonymise = (userId: string) => string;

export const MIN_KEY_BYTES = 16;
const KEY_CHECK_INPUT = "portrait pseudonym key check v1";

export function pseudonym(key: Uint8Array, userId: string): string {
  return "p_" + createHmac("sha256", key).update(userId, "utf8").digest("base64url").slice(0, 22);
}

/** The identity without a key. */
export function pseudonymiser(key: Uint8Array | undefined): Pseudonymise {
  return key === undefined ? (id) => id : (id) => pseudonym(key, id);
}

/** An HMAC of a fixed string: tells keys apart without revealing them. */
export function keyCheck(key: Uint8Array): string {
  return createHmac("sha256", key).update(KEY_CHECK_INPUT, "utf8").digest("base64url");
}

/** Reads a key file; CONFIG error when it is missing, unreadable or too short (the message never holds key bytes). */
export function readPseudonymKey(file: string): Uint8Array {
  let b: Buffer;
  try {
    b = readFileSync(file);
  } catch (err) {
    throw new ConfigError(`cannot read options.pseudonymKeyFile ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let n = b.length;
  while (n > 0 && (b[n - 1] === 0x0a || b[n - 1] === 0x0d)) n--;
  if (n < MIN_KEY_BYTES) {
    throw new ConfigError(`options.pseudonymKeyFile ${file} must hold at least ${MIN_KEY_BYTES} bytes of secret (e.g. openssl rand -base64 32 > ${file})`);
  }
  return new Uint8Array(b.subarray(0, n));
}
