/**
 * An estimate of the memory a user's state takes in a shard (V8 heap plus
 * typed-array backing stores), for the actor cache's byte bound. It walks the
 * plain data a UserState is made of (objects, arrays, strings, numbers,
 * Uint8Arrays) with V8's 64-bit layout without pointer compression (Node's):
 * an 8-byte slot per field or element, headers of 24 (object) and 32 (array
 * with its backing store) bytes, 8 spare slots per array, 16 + length for a one-byte string, 16 for a
 * boxed number that is not a small integer, and a typed array's view object
 * beside its bytes. bench/actor-memory.ts compares it with the heap measured
 * after GC for states built by the generator's events.
 */

const OBJECT = 24;
const ARRAY = 32;
const SLOT = 8;
const STRING = 16;
const HEAP_NUMBER = 16;
/** A typed array's view object (its bytes come on top). */
export const TYPED_ARRAY_BYTES = 96;

const boxed = (n: number) => (Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 ? 0 : HEAP_NUMBER);

/** Estimated bytes of a plain-data value (what UserState is made of). */
export function approxBytes(v: unknown): number {
  switch (typeof v) {
    case "string":
      return STRING + ((v.length + 7) & ~7);
    case "number":
      return boxed(v);
    case "object": {
      if (v === null) return 0;
      if (ArrayBuffer.isView(v)) return TYPED_ARRAY_BYTES + v.byteLength;
      if (Array.isArray(v)) {
        // Arrays grown by push or splice keep spare capacity (V8 grows them by half plus 16): 8 slots on average.
        let n = ARRAY + SLOT * (v.length + 8);
        // A packed array of numbers stores doubles unboxed.
        // An index loop: for...of allocates an iterator result per element where V8 does not optimise this recursive walk.
        for (let i = 0; i < v.length; i++) {
          const x: unknown = v[i];
          if (typeof x !== "number") n += approxBytes(x);
        }
        return n;
      }
      let n = OBJECT;
      for (const k in v) n += SLOT + approxBytes((v as Record<string, unknown>)[k]);
      return n;
    }
    default:
      return 0;
  }
}
