/**
 * Partitioning contract. A user's partition is FNV-1a (32-bit) of the UTF-8
 * bytes of the user id, modulo the deployment's partition count P. Publishers
 * in any language must compute the same value (README "Publishing events"
 * lists test vectors); the engine dead-letters an event found on another
 * partition's subject (WRONG_PARTITION), because ordering per user depends on it.
 */

const encoder = new TextEncoder();
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** The FNV-1a 32-bit state after `bytes`, from state `h`. */
function fnvBytes(h: number, bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, FNV_PRIME);
  }
  return h;
}

/** FNV-1a 32-bit hash of the bytes, as an unsigned integer. */
export function fnv1a32(bytes: Uint8Array): number {
  return fnvBytes(FNV_OFFSET, bytes) >>> 0;
}

/** FNV-1a 32-bit of a string's UTF-8 bytes, without allocating for ASCII strings. */
export function fnv1a32String(s: string): number {
  return fnv1a32Update(FNV_OFFSET, s) >>> 0;
}

/** FNV-1a 32-bit's starting state (fnv1a32Update). */
export const FNV1A32_OFFSET = FNV_OFFSET;

/**
 * The FNV-1a 32-bit state after `s`'s UTF-8 bytes, from state `h`
 * (FNV1A32_OFFSET to start; `>>> 0` of the result is the hash): hashes a
 * concatenation part by part without building it, and allocates only for a
 * part with non-ASCII characters.
 */
export function fnv1a32Update(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // UTF-8 of the rest (the ASCII before it is its own UTF-8).
    if (c >= 0x80) return fnvBytes(h, encoder.encode(s.slice(i)));
    h ^= c;
    h = Math.imul(h, FNV_PRIME);
  }
  return h;
}

/** The partition (0..partitions-1) of a user id. */
export function partitionOf(userId: string, partitions: number): number {
  return fnv1a32String(userId) % partitions;
}
