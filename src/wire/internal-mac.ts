/**
 * The engine's signature on the messages only it may publish on the events
 * subjects (README "Identity"): identity hand-overs and events forwarded from
 * an alias to its primary. A publisher may publish on those subjects, so
 * without it a forged hand-over could write any state into any profile.
 *
 * The signature is an HMAC-SHA256, under the deployment's internal key
 * (src/bus/internal-key.ts), of the encoded `Event` without it, appended as
 * the last field (`internal_mac`, field 99, 32 bytes): a fixed 35-byte
 * trailer, so checking it needs no re-encoding.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

/** Field 99, wire type 2 (length-delimited), as a varint; then the length, 32. */
const TRAILER_HEAD = [0x9a, 0x06, 0x20] as const;
const MAC_BYTES = 32;
const TRAILER_BYTES = TRAILER_HEAD.length + MAC_BYTES;

/** `event` (an encoded Event without internal_mac) with the engine's signature appended. */
export function signInternal(key: Uint8Array, event: Uint8Array): Uint8Array {
  const out = new Uint8Array(event.byteLength + TRAILER_BYTES);
  out.set(event, 0);
  out.set(TRAILER_HEAD, event.byteLength);
  out.set(createHmac("sha256", key).update(event).digest(), event.byteLength + TRAILER_HEAD.length);
  return out;
}

/** True when `bytes` ends with the engine's signature of what precedes it. */
export function verifyInternal(key: Uint8Array, bytes: Uint8Array): boolean {
  const at = bytes.byteLength - TRAILER_BYTES;
  if (at < 0) return false;
  for (let i = 0; i < TRAILER_HEAD.length; i++) if (bytes[at + i] !== TRAILER_HEAD[i]) return false;
  const want = createHmac("sha256", key).update(bytes.subarray(0, at)).digest();
  return timingSafeEqual(want, bytes.subarray(at + TRAILER_HEAD.length));
}
