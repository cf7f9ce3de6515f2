// protobufjs runtime settings, applied before the generated code loads
// (proto.ts imports this module first).
import $protobuf from "protobufjs/minimal.js";

// 64-bit integer fields decode as JavaScript numbers, not Long objects: every
// 64-bit value of the contract (timestamps, counts) stays below 2^53.
$protobuf.util.Long = undefined as unknown as typeof $protobuf.util.Long;
$protobuf.configure();

// protobufjs's own UTF-8 reader turns invalid bytes into arbitrary characters;
// decode like the WHATWG decoder instead, so invalid UTF-8 becomes U+FFFD and
// validation can see it. ASCII, the common case, stays on a fast path.
const decoder = new TextDecoder("utf-8");
$protobuf.util.utf8.read = (buf: Uint8Array, start: number, end: number): string => {
  if (end - start < 64) {
    let ascii = true;
    for (let i = start; i < end; i++) {
      if (buf[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return String.fromCharCode.apply(null, buf.subarray(start, end) as unknown as number[]);
  }
  return decoder.decode(buf.subarray(start, end));
};
