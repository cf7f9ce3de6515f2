// Generates src/models/lstm-kernel-wasm.ts: the WebAssembly SIMD kernel of the
// LSTM step's pre-activations (src/models/lstm-runtime.ts), as base64 bytes.
// The bytes are committed; this script is their source (no toolchain needed):
//
//   node scripts/gen-lstm-kernel.mjs          rewrites the module
//   node scripts/gen-lstm-kernel.mjs --check  exits 1 when the module differs from what this script makes
//
// The module exports its memory and one function, in the text format:
//
//   (func $preact (param $r i32) (param $h i32) (param $z i32) (param $H i32) (param $p0 i32) ... (param $p4 i32)
//     ;; z[j] = p0[j] + p1[j] + p2[j] + p3[j] + p4[j] + sum over k = 0..H-1 of h[k] * r[k][j], for j = 0..4H-1, in doubles:
//     ;; the gates' pre-activations. p_f: f32 [4H], the projected row of field f (lstm-runtime.ts);
//     ;; r: f64 [H][4H] (the recurrent kernel as stored, row k = h[k]'s weights); h: f64 [H]; z: f64 [4H].
//     for each block of 16 columns jb:             ;; 4H is a multiple of 16 (H % 4 == 0)
//       acc_i = f64x2.promote_low_f32x4 (v128.load64_zero p0[jb + 2i]), i = 0..7   ;; f64x2 lanes: columns jb+2i, jb+2i+1
//       acc_i = f64x2.add acc_i (f64x2.promote_low_f32x4 (v128.load64_zero p_f[jb + 2i])), f = 1..4
//       for k = 0..H-1:
//         hk = f64x2.splat (f64.load h[k])
//         acc_i = f64x2.add acc_i (f64x2.mul hk (v128.load r[k][jb + 2i]))
//       v128.store z[jb + 2i] acc_i)
//
// Each column is summed in the order p0..p4 then k = 0..H-1, one rounded
// multiply and one rounded add per term (WebAssembly has no fused
// multiply-add here): exactly what the JS loop does in doubles, so the two
// give the same bits.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const out = join(dirname(fileURLToPath(import.meta.url)), "..", "src", "models", "lstm-kernel-wasm.ts");

const uleb = (n) => {
  const b = [];
  do {
    let x = n & 0x7f;
    n >>>= 7;
    if (n !== 0) x |= 0x80;
    b.push(x);
  } while (n !== 0);
  return b;
};
const sleb = (n) => {
  const b = [];
  for (;;) {
    const x = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (x & 0x40) === 0) || (n === -1 && (x & 0x40) !== 0)) return [...b, x];
    b.push(x | 0x80);
  }
};
const str = (s) => [...uleb(s.length), ...Buffer.from(s, "utf8")];
const vec = (items) => [...uleb(items.length), ...items.flat()];
const section = (id, body) => [id, ...uleb(body.length), ...body];

const I32 = 0x7f, V128 = 0x7b;
// Instructions.
const local = { get: (i) => [0x20, ...uleb(i)], set: (i) => [0x21, ...uleb(i)], tee: (i) => [0x22, ...uleb(i)] };
const i32 = { const: (n) => [0x41, ...sleb(n)], add: [0x6a], mul: [0x6c], ltU: [0x49], shl: [0x74], shrU: [0x76] };
const f64load = (offset) => [0x2b, 3, ...uleb(offset)];
const simd = (op, ...imm) => [0xfd, ...uleb(op), ...imm];
const v128 = { load: (offset) => simd(0x00, 4, ...uleb(offset)), store: (offset) => simd(0x0b, 4, ...uleb(offset)), load64Zero: (offset) => simd(0x5d, 3, ...uleb(offset)) };
const f64x2 = { splat: simd(0x14), add: simd(0xf0), mul: simd(0xf2), promoteLow: simd(0x5f) };
const loop = (...body) => [0x03, 0x40, ...body.flat(), 0x0b];
const brIf = (depth) => [0x0d, ...uleb(depth)];

// $preact's locals: params 0..8 ($r $h $z $H $p0..$p4), then:
const R = 0, HP = 1, Z = 2, H = 3, P = 4;
const ROW = 9; // bytes of one r row: 4H * 8
const JB = 10; // byte offset of the column block in z and in r's rows (the p_f offset is half of it)
const K8 = 11; // byte offset of h[k]
const RP = 12; // address of r[k][jb]
const HK = 13; // the splat h[k]
const ACC = 14; // acc0..acc7: locals 14..21
const BLOCK = 8; // v128 accumulators per block (16 columns)

const projected = (f, i) => [...local.get(P + f), ...local.get(JB), ...i32.const(1), ...i32.shrU, ...i32.add, ...v128.load64Zero(8 * i), ...f64x2.promoteLow];
const preact = [
  ...local.get(H), ...i32.const(5), ...i32.shl, ...local.set(ROW),
  ...i32.const(0), ...local.set(JB),
  ...loop(
    ...Array.from({ length: BLOCK }, (_, i) => [
      ...projected(0, i),
      ...[1, 2, 3, 4].flatMap((f) => [...projected(f, i), ...f64x2.add]),
      ...local.set(ACC + i),
    ]),
    local.get(R), local.get(JB), i32.add, local.set(RP),
    i32.const(0), local.set(K8),
    loop(
      local.get(HP), local.get(K8), i32.add, f64load(0), f64x2.splat, local.set(HK),
      ...Array.from({ length: BLOCK }, (_, i) => [
        ...local.get(ACC + i), ...local.get(HK), ...local.get(RP), ...v128.load(16 * i), ...f64x2.mul, ...f64x2.add, ...local.set(ACC + i),
      ]),
      local.get(RP), local.get(ROW), i32.add, local.set(RP),
      // while ((k8 += 8) < H * 8)
      local.get(K8), i32.const(8), i32.add, local.tee(K8), local.get(H), i32.const(3), i32.shl, i32.ltU, brIf(0),
    ),
    ...Array.from({ length: BLOCK }, (_, i) => [...local.get(Z), ...local.get(JB), ...i32.add, ...local.get(ACC + i), ...v128.store(16 * i)]),
    // while ((jb += 128) < row)
    local.get(JB), i32.const(16 * BLOCK), i32.add, local.tee(JB), local.get(ROW), i32.ltU, brIf(0),
  ),
  0x0b,
];
const locals = vec([[...uleb(4), I32], [...uleb(1 + BLOCK), V128]]);
const body = [...locals, ...preact];

const bytes = Uint8Array.from([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  ...section(1, vec([[0x60, ...vec(Array.from({ length: 9 }, () => [I32])), ...vec([])]])), // type 0: (i32 x 9) -> ()
  ...section(3, vec([uleb(0)])), // func 0: type 0
  ...section(5, vec([[0x00, ...uleb(1)]])), // memory 0: min 1 page (the runtime grows it)
  ...section(7, vec([[...str("memory"), 0x02, 0x00], [...str("preact"), 0x00, 0x00]])),
  ...section(10, vec([[...uleb(body.length), ...body]])),
]);

const ts = `// Generated by scripts/gen-lstm-kernel.mjs (its source and the text format are there); do not edit.
/** The LSTM step's pre-activations (projected rows + h·R) as a WebAssembly SIMD module (${bytes.length} bytes), base64. */
export const LSTM_KERNEL_WASM = "${Buffer.from(bytes).toString("base64")}";
`;

if (!WebAssembly.validate(bytes)) throw new Error("gen-lstm-kernel: the generated module does not validate");
if (process.argv.includes("--check")) {
  let now = "";
  try {
    now = readFileSync(out, "utf8");
  } catch {}
  if (now !== ts) {
    console.error(`gen-lstm-kernel: ${out} differs from what the script makes; run node scripts/gen-lstm-kernel.mjs`);
    process.exit(1);
  }
} else {
  writeFileSync(out, ts);
  console.log(`gen-lstm-kernel: ${bytes.length} bytes -> ${out}`);
}
