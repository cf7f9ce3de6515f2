// 64-bit integer fields decode as JavaScript numbers, not Long objects: every
// 64-bit value of the contract (timestamps, counts) stays below 2^53.
// Imported by proto.ts before the generated code, which reads util.Long at load.
import $protobuf from "protobufjs/minimal.js";

$protobuf.util.Long = undefined as unknown as typeof $protobuf.util.Long;
$protobuf.configure();
