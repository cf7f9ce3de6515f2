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
const utf8Slice = (Buffer.prototype as unknown as { utf8Slice(this: Uint8Array, start: number, end: number): string }).utf8Slice;
$protobuf.util.utf8.read = (buf: Uint8Array, start: number, end: number): string => utf8Slice.call(buf, start, end);
