// protobufjs runtime settings, applied before the generated code loads
// (proto.ts imports this module first).
import $protobuf from "protobufjs/minimal.js";

// 64-bit integer fields decode as JavaScript numbers, not Long objects: every
// 64-bit value of the contract (timestamps, counts) stays below 2^53.
$protobuf.util.Long = undefined as unknown as typeof $protobuf.util.Long;
$protobuf.configure();

// protobufjs's own UTF-8 reader turns invalid bytes into arbitrary characters;
// Node's native decoder turns them into U+FFFD, which validation can see, and
// is faster. It accepts any Uint8Array, not only Buffers.
/** Node's native UTF-8 decoder on any Uint8Array (invalid bytes become U+FFFD). */
export const utf8Slice = (Buffer.prototype as unknown as { utf8Slice(this: Uint8Array, start: number, end: number): string }).utf8Slice;
$protobuf.util.utf8.read = (buf: Uint8Array, start: number, end: number): string => utf8Slice.call(buf, start, end);

// Strings are read straight from the reader's buffer: the default reads a `bytes` view first (one typed-array
// allocation per string field, ~6 per event on the shards' hot path). Same bounds check and error as protobufjs's.
type ReaderInternals = { buf: Uint8Array; pos: number; len: number; uint32(): number };
$protobuf.Reader.prototype.string = function readString(this: ReaderInternals): string {
  const length = this.uint32();
  const start = this.pos;
  const end = start + length;
  if (end > this.len) throw RangeError(`index out of range: ${this.pos} + ${length} > ${this.len}`);
  this.pos = end;
  return utf8Slice.call(this.buf, start, end);
} as unknown as () => string;
