// Generates src/models/lstm-kernel-wasm.ts: the WebAssembly SIMD kernel of the
// LSTM step (src/models/lstm-runtime.ts): its pre-activations, its gates and
// the cell update, as base64 bytes.
// The bytes are committed; this script is their source (no toolchain needed):
//
//   node scripts/gen-lstm-kernel.mjs          rewrites the module
//   node scripts/gen-lstm-kernel.mjs --check  exits 1 when the module differs from what this script makes
//
// The module exports its memory and these functions (the first in the text format):
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
//
//   step(r, h, z, H, p0..p4, s)   the whole step of one state s (f32 [2H]: h then c) in place: h = s[0..H) in
//                                 doubles, preact, then for each column k (two at a time)
//                                 i, f, o = 1 / (1 + exp(-z)) of gates 0, 1, 3; g = tanh(z) of gate 2;
//                                 c = f * c_prev + i * g; s[H + k] = (f32) c; s[k] = (f32) (o * tanh(c))
//                                 (the JS loop of lstm-runtime.ts, the same rounded operations in doubles)
//   exp(x), tanh(x)               ports of V8's Math.exp and Math.tanh (fdlibm's exp, expm1 and tanh as in
//                                 v8/src/base/ieee754.cc; see below), which return Math's bits
//   expv(p, n)                    the n doubles at p replaced by their exp, two lanes at a time (the two-lane
//                                 exp the sigmoids use, exposed for the tests and the runtime's load-time probe)
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
const preactBody = [...locals, ...preact];

// ---- The gates: ports of V8's Math.exp and Math.tanh (fdlibm's exp, expm1 and tanh as in v8/src/base/ieee754.cc) ----
// Scalar f64 code, operation for operation the C: the same constants, the same branches on the high word, the same
// rounded operations in the same order and no fused multiply-add (WebAssembly has none), so each returns the bits
// Math.exp / Math.tanh return (test/lstm-kernel.test.ts checks them against each other; lstm-runtime.ts checks again at load).
const F64 = 0x7c, EMPTY = 0x40;
const f64c = (v) => { const b = Buffer.alloc(8); b.writeDoubleLE(v); return [0x44, ...b]; };
const f64w = (hi, lo) => { const b = Buffer.alloc(8); b.writeUInt32LE(lo >>> 0, 0); b.writeUInt32LE(hi >>> 0, 4); return f64c(b.readDoubleLE(0)); };
const op = {
  f64: { add: [0xa0], sub: [0xa1], mul: [0xa2], div: [0xa3], neg: [0x9a], abs: [0x99], eq: [0x61], lt: [0x63], gt: [0x64], load: f64load, store: (o) => [0x39, 3, ...uleb(o)], promoteF32: [0xbb], convertI32S: [0xb7], reinterpretI64: [0xbf] },
  f32: { load: (o) => [0x2a, 2, ...uleb(o)], store: (o) => [0x38, 2, ...uleb(o)], demoteF64: [0xb6] },
  i32: { ...i32, sub: [0x6b], and: [0x71], shrS: [0x75], eq: [0x46], eqz: [0x45], ne: [0x47], ltS: [0x48], gtS: [0x4a], gtU: [0x4b], leS: [0x4c], geS: [0x4e], geU: [0x4f], truncF64S: [0xaa], wrapI64: [0xa7] },
  i64: { const: (n) => [0x42, ...sleb64(BigInt(n))], and: [0x83], shl: [0x86], shrU: [0x88], ne: [0x52], extendI32U: [0xad], reinterpretF64: [0xbd] },
};
/** Signed LEB128 of a 64-bit integer (sleb works on 32 bits). */
const sleb64 = (n) => {
  const b = [];
  for (;;) {
    const x = Number(n & 0x7fn);
    n >>= 7n;
    if ((n === 0n && (x & 0x40) === 0) || (n === -1n && (x & 0x40) !== 0)) return [...b, x];
    b.push(x | 0x80);
  }
};
const if_ = (bt, then, els) => [0x04, bt, ...then.flat(), ...(els ? [0x05, ...els.flat()] : []), 0x0b];
const ret = [0x0f];
const call = (f) => [0x10, ...uleb(f)];
const select = [0x1b];
const code = (...parts) => parts.flat();
/** The high word of local x (i32). */
const high = (x) => [...local.get(x), ...op.i64.reinterpretF64, ...op.i64.const(32), ...op.i64.shrU, ...op.i32.wrapI64];
/** The double whose high word is the i32 on the stack and whose low word is 0 (INSERT_WORDS(d, hi, 0)). */
const fromHigh = [...op.i64.extendI32U, ...op.i64.const(32), ...op.i64.shl, ...op.f64.reinterpretI64];
/** x is NaN (not infinite) given that its high word is >= 0x7ff00000: any bit of its mantissa set. */
const mantissaSet = (x) => [...local.get(x), ...op.i64.reinterpretF64, ...op.i64.const(0xfffffffffffffn), ...op.i64.and, ...op.i64.const(0), ...op.i64.ne];

// Function indices: 0 preact, 1 step, 2 exp, 3 expm1, 4 tanh.
const EXP = 2, EXPM1 = 3, TANH = 4;
const ln2HI = [0x3fe62e42, 0xfee00000], ln2LO = [0x3dea39ef, 0x35793c76], invln2 = [0x3ff71547, 0x652b82fe];
const oThreshold = [0x40862e42, 0xfefa39ef];

/**
 * exp's c = x - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5)))) from locals x and t: scalar (k = f64w, o = op.f64)
 * or two lanes (a v128 constant maker, o = V.f64).
 */
const EXP_P = [[0x3fc55555, 0x5555553e], [0xbf66c16c, 0x16bebd93], [0x3f11566a, 0xaf25de2c], [0xbebbbd41, 0xc5d26bf1], [0x3e663769, 0x72bea4d0]];
const expPoly = (x, t, k, o) => code(
  local.get(x), local.get(t), ...EXP_P.slice(0, 4).map((p) => code(k(...p), local.get(t))), k(...EXP_P[4]),
  o.mul, o.add, o.mul, o.add, o.mul, o.add, o.mul, o.add, o.mul, o.sub,
);

// exp(x): locals x=0 | hx=1 xsb=2 k=3 (i32) | hi=4 lo=5 t=6 c=7 y=8 twopk=9 (f64).
const expBody = (() => {
  const X = 0, HX = 1, XSB = 2, K = 3, HI = 4, LO = 5, T = 6, C = 7, Y = 8, TWOPK = 9;
  return code(
    vec([[...uleb(3), I32], [...uleb(6), F64]]),
    high(X), local.tee(HX), i32.const(31), op.i32.shrU, local.set(XSB),
    local.get(HX), i32.const(0x7fffffff), op.i32.and, local.set(HX),
    // |x| >= 709.78...: NaN, +-inf, overflow, underflow.
    local.get(HX), i32.const(0x40862e42), op.i32.geU,
    if_(EMPTY, [
      local.get(HX), i32.const(0x7ff00000), op.i32.geU,
      if_(EMPTY, [
        mantissaSet(X), if_(EMPTY, [local.get(X), local.get(X), op.f64.add, ret]),
        local.get(X), f64c(0), local.get(XSB), op.i32.eqz, select, ret,
      ]),
      local.get(X), f64w(...oThreshold), op.f64.gt, if_(EMPTY, [f64c(1e300), f64c(1e300), op.f64.mul, ret]),
      local.get(X), f64w(0xc0874910, 0xd52d3051), op.f64.lt, if_(EMPTY, [f64w(0x01700000, 0), f64w(0x01700000, 0), op.f64.mul, ret]),
    ]),
    // Argument reduction.
    local.get(HX), i32.const(0x3fd62e42), op.i32.gtU,
    if_(EMPTY, [
      local.get(HX), i32.const(0x3ff0a2b2), op.i32.ltU,
      if_(EMPTY, [
        local.get(X), f64c(1), op.f64.eq, if_(EMPTY, [f64w(0x4005bf0a, 0x8b145769), ret]),
        // hi = x - ln2HI[xsb]; lo = ln2LO[xsb]; k = 1 - xsb - xsb
        local.get(X), f64w(...ln2HI), f64w(ln2HI[0] | 0x80000000, ln2HI[1]), local.get(XSB), op.i32.eqz, select, op.f64.sub, local.set(HI),
        f64w(...ln2LO), f64w(ln2LO[0] | 0x80000000, ln2LO[1]), local.get(XSB), op.i32.eqz, select, local.set(LO),
        i32.const(1), local.get(XSB), op.i32.sub, local.get(XSB), op.i32.sub, local.set(K),
      ], [
        // k = (int)(invln2 * x + halF[xsb]); t = k; hi = x - t * ln2HI; lo = t * ln2LO
        f64w(...invln2), local.get(X), op.f64.mul, f64c(0.5), f64c(-0.5), local.get(XSB), op.i32.eqz, select, op.f64.add, op.i32.truncF64S, local.tee(K),
        op.f64.convertI32S, local.set(T),
        local.get(X), local.get(T), f64w(...ln2HI), op.f64.mul, op.f64.sub, local.set(HI),
        local.get(T), f64w(...ln2LO), op.f64.mul, local.set(LO),
      ]),
      local.get(HI), local.get(LO), op.f64.sub, local.set(X),
    ], [
      local.get(HX), i32.const(0x3e300000), op.i32.ltU,
      if_(EMPTY, [
        // if (huge + x > one) return one + x
        f64c(1e300), local.get(X), op.f64.add, f64c(1), op.f64.gt, if_(EMPTY, [f64c(1), local.get(X), op.f64.add, ret]),
      ], [i32.const(0), local.set(K)]),
    ]),
    // x is now in the primary range.
    local.get(X), local.get(X), op.f64.mul, local.set(T),
    local.get(K), i32.const(-1021), op.i32.geS,
    if_(EMPTY, [i32.const(0x3ff00000), local.get(K), i32.const(20), op.i32.shl, op.i32.add, fromHigh, local.set(TWOPK)],
      [i32.const(0x3ff00000), local.get(K), i32.const(1000), op.i32.add, i32.const(20), op.i32.shl, op.i32.add, fromHigh, local.set(TWOPK)]),
    expPoly(X, T, f64w, op.f64), local.set(C),
    // k == 0: return one - ((x * c) / (c - 2.0) - x)
    local.get(K), op.i32.eqz,
    if_(EMPTY, [f64c(1), local.get(X), local.get(C), op.f64.mul, local.get(C), f64c(2), op.f64.sub, op.f64.div, local.get(X), op.f64.sub, op.f64.sub, ret]),
    // y = one - ((lo - (x * c) / (2.0 - c)) - hi)
    f64c(1), local.get(LO), local.get(X), local.get(C), op.f64.mul, f64c(2), local.get(C), op.f64.sub, op.f64.div, op.f64.sub, local.get(HI), op.f64.sub, op.f64.sub, local.set(Y),
    local.get(K), i32.const(-1021), op.i32.geS,
    if_(EMPTY, [
      local.get(K), i32.const(1024), op.i32.eq, if_(EMPTY, [local.get(Y), f64c(2), op.f64.mul, f64w(0x7fe00000, 0), op.f64.mul, ret]),
      local.get(Y), local.get(TWOPK), op.f64.mul, ret,
    ]),
    local.get(Y), local.get(TWOPK), op.f64.mul, f64w(0x01700000, 0), op.f64.mul,
    0x0b,
  );
})();

// expm1(x): locals x=0 | hx=1 xsb=2 k=3 (i32) | hi=4 lo=5 c=6 t=7 e=8 hxs=9 hfx=10 r1=11 y=12 twopk=13 (f64).
const expm1Body = (() => {
  const X = 0, HX = 1, XSB = 2, K = 3, HI = 4, LO = 5, C = 6, T = 7, E = 8, HXS = 9, HFX = 10, R1 = 11, Y = 12, TWOPK = 13;
  return code(
    vec([[...uleb(3), I32], [...uleb(10), F64]]),
    high(X), local.tee(HX), i32.const(0x80000000 | 0), op.i32.and, local.set(XSB),
    local.get(HX), i32.const(0x7fffffff), op.i32.and, local.set(HX),
    // |x| >= 56 ln2: NaN, +-inf, overflow, -1.
    local.get(HX), i32.const(0x4043687a), op.i32.geU,
    if_(EMPTY, [
      local.get(HX), i32.const(0x40862e42), op.i32.geU,
      if_(EMPTY, [
        local.get(HX), i32.const(0x7ff00000), op.i32.geU,
        if_(EMPTY, [
          mantissaSet(X), if_(EMPTY, [local.get(X), local.get(X), op.f64.add, ret]),
          local.get(X), f64c(-1), local.get(XSB), op.i32.eqz, select, ret,
        ]),
        local.get(X), f64w(...oThreshold), op.f64.gt, if_(EMPTY, [f64c(1e300), f64c(1e300), op.f64.mul, ret]),
      ]),
      local.get(XSB),
      if_(EMPTY, [local.get(X), f64c(1e-300), op.f64.add, f64c(0), op.f64.lt, if_(EMPTY, [f64c(1e-300), f64c(1), op.f64.sub, ret])]),
    ]),
    // Argument reduction.
    local.get(HX), i32.const(0x3fd62e42), op.i32.gtU,
    if_(EMPTY, [
      local.get(HX), i32.const(0x3ff0a2b2), op.i32.ltU,
      if_(EMPTY, [
        local.get(XSB), op.i32.eqz,
        if_(EMPTY, [
          local.get(X), f64w(...ln2HI), op.f64.sub, local.set(HI), f64w(...ln2LO), local.set(LO), i32.const(1), local.set(K),
        ], [
          local.get(X), f64w(...ln2HI), op.f64.add, local.set(HI), f64w(ln2LO[0] | 0x80000000, ln2LO[1]), local.set(LO), i32.const(-1), local.set(K),
        ]),
      ], [
        f64w(...invln2), local.get(X), op.f64.mul, f64c(0.5), f64c(-0.5), local.get(XSB), op.i32.eqz, select, op.f64.add, op.i32.truncF64S, local.tee(K),
        op.f64.convertI32S, local.set(T),
        local.get(X), local.get(T), f64w(...ln2HI), op.f64.mul, op.f64.sub, local.set(HI),
        local.get(T), f64w(...ln2LO), op.f64.mul, local.set(LO),
      ]),
      local.get(HI), local.get(LO), op.f64.sub, local.set(X),
      local.get(HI), local.get(X), op.f64.sub, local.get(LO), op.f64.sub, local.set(C),
    ], [
      local.get(HX), i32.const(0x3c900000), op.i32.ltU,
      if_(EMPTY, [
        // t = huge + x; return x - (t - (huge + x))
        f64c(1e300), local.get(X), op.f64.add, local.set(T),
        local.get(X), local.get(T), f64c(1e300), local.get(X), op.f64.add, op.f64.sub, op.f64.sub, ret,
      ], [i32.const(0), local.set(K)]),
    ]),
    // x is now in the primary range.
    f64c(0.5), local.get(X), op.f64.mul, local.set(HFX),
    local.get(X), local.get(HFX), op.f64.mul, local.set(HXS),
    // r1 = one + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))))
    f64c(1), local.get(HXS),
    f64w(0xbfa11111, 0x111110f4), local.get(HXS),
    f64w(0x3f5a01a0, 0x19fe5585), local.get(HXS),
    f64w(0xbf14ce19, 0x9eaadbb7), local.get(HXS),
    f64w(0x3ed0cfca, 0x86e65239), local.get(HXS), f64w(0xbe8afdb7, 0x6e09c32d), op.f64.mul, op.f64.add,
    op.f64.mul, op.f64.add, op.f64.mul, op.f64.add, op.f64.mul, op.f64.add, op.f64.mul, op.f64.add, local.set(R1),
    // t = 3.0 - r1 * hfx; e = hxs * ((r1 - t) / (6.0 - x * t))
    f64c(3), local.get(R1), local.get(HFX), op.f64.mul, op.f64.sub, local.set(T),
    local.get(HXS), local.get(R1), local.get(T), op.f64.sub, f64c(6), local.get(X), local.get(T), op.f64.mul, op.f64.sub, op.f64.div, op.f64.mul, local.set(E),
    // k == 0: return x - (x * e - hxs)
    local.get(K), op.i32.eqz,
    if_(EMPTY, [local.get(X), local.get(X), local.get(E), op.f64.mul, local.get(HXS), op.f64.sub, op.f64.sub, ret]),
    i32.const(0x3ff00000), local.get(K), i32.const(20), op.i32.shl, op.i32.add, fromHigh, local.set(TWOPK),
    // e = x * (e - c) - c; e -= hxs
    local.get(X), local.get(E), local.get(C), op.f64.sub, op.f64.mul, local.get(C), op.f64.sub, local.get(HXS), op.f64.sub, local.set(E),
    // k == -1: return 0.5 * (x - e) - 0.5
    local.get(K), i32.const(-1), op.i32.eq,
    if_(EMPTY, [f64c(0.5), local.get(X), local.get(E), op.f64.sub, op.f64.mul, f64c(0.5), op.f64.sub, ret]),
    // k == 1: x < -0.25 ? -2.0 * (e - (x + 0.5)) : one + 2.0 * (x - e)
    local.get(K), i32.const(1), op.i32.eq,
    if_(EMPTY, [
      local.get(X), f64c(-0.25), op.f64.lt,
      if_(EMPTY, [f64c(-2), local.get(E), local.get(X), f64c(0.5), op.f64.add, op.f64.sub, op.f64.mul, ret]),
      f64c(1), f64c(2), local.get(X), local.get(E), op.f64.sub, op.f64.mul, op.f64.add, ret,
    ]),
    // k <= -2 || k > 56: y = one - (e - x); y = k == 1024 ? y * 2.0 * 8.98846567431158e+307 : y * twopk; return y - one
    local.get(K), i32.const(-2), op.i32.leS, local.get(K), i32.const(56), op.i32.gtS, [0x72], // i32.or
    if_(EMPTY, [
      f64c(1), local.get(E), local.get(X), op.f64.sub, op.f64.sub, local.set(Y),
      local.get(K), i32.const(1024), op.i32.eq,
      if_(EMPTY, [local.get(Y), f64c(2), op.f64.mul, f64c(8.98846567431158e307), op.f64.mul, local.set(Y)], [local.get(Y), local.get(TWOPK), op.f64.mul, local.set(Y)]),
      local.get(Y), f64c(1), op.f64.sub, ret,
    ]),
    local.get(K), i32.const(20), op.i32.ltS,
    if_(F64, [
      // t = 1 - 2^-k (high word 0x3ff00000 - (0x200000 >> k)); y = t - (e - x); y * twopk
      i32.const(0x3ff00000), i32.const(0x200000), local.get(K), op.i32.shrS, op.i32.sub, fromHigh,
      local.get(E), local.get(X), op.f64.sub, op.f64.sub, local.get(TWOPK), op.f64.mul,
    ], [
      // t = 2^-k; y = x - (e + t); y += one; y * twopk
      local.get(X), local.get(E), i32.const(0x3ff), local.get(K), op.i32.sub, i32.const(20), op.i32.shl, fromHigh, op.f64.add, op.f64.sub,
      f64c(1), op.f64.add, local.get(TWOPK), op.f64.mul,
    ]),
    0x0b,
  );
})();

// tanh(x): locals x=0 | jx=1 ix=2 (i32) | z=3 t=4 (f64).
const tanhBody = (() => {
  const X = 0, JX = 1, IX = 2, Z = 3, T = 4;
  return code(
    vec([[...uleb(2), I32], [...uleb(2), F64]]),
    high(X), local.tee(JX), i32.const(0x7fffffff), op.i32.and, local.set(IX),
    // inf or NaN: one / x +- one
    local.get(IX), i32.const(0x7ff00000), op.i32.geU,
    if_(EMPTY, [
      local.get(JX), i32.const(0), op.i32.geS,
      if_(EMPTY, [f64c(1), local.get(X), op.f64.div, f64c(1), op.f64.add, ret]),
      f64c(1), local.get(X), op.f64.div, f64c(1), op.f64.sub, ret,
    ]),
    local.get(IX), i32.const(0x40360000), op.i32.ltU,
    if_(EMPTY, [
      local.get(IX), i32.const(0x3e300000), op.i32.ltU,
      if_(EMPTY, [f64c(1e300), local.get(X), op.f64.add, f64c(1), op.f64.gt, if_(EMPTY, [local.get(X), ret])]),
      local.get(IX), i32.const(0x3ff00000), op.i32.geU,
      if_(EMPTY, [
        // t = expm1(two * fabs(x)); z = one - two / (t + two)
        f64c(2), local.get(X), op.f64.abs, op.f64.mul, call(EXPM1), local.set(T),
        f64c(1), f64c(2), local.get(T), f64c(2), op.f64.add, op.f64.div, op.f64.sub, local.set(Z),
      ], [
        // t = expm1(-two * fabs(x)); z = -t / (t + two)
        f64c(-2), local.get(X), op.f64.abs, op.f64.mul, call(EXPM1), local.set(T),
        local.get(T), op.f64.neg, local.get(T), f64c(2), op.f64.add, op.f64.div, local.set(Z),
      ]),
    ], [
      // z = one - tiny
      f64c(1), f64c(1e-300), op.f64.sub, local.set(Z),
    ]),
    local.get(Z), local.get(Z), op.f64.neg, local.get(JX), i32.const(0), op.i32.geS, [0x1b],
    0x0b,
  );
})();

// exp2(x): exp of each lane of an f64x2, the same bits as exp on each: where both lanes are below 708 in magnitude
// (no overflow, underflow, NaN or infinity: k = -1021..1021), fdlibm's three remaining branches computed on both lanes
// and chosen per lane (v128.bitselect), else exp on each lane.
//   A |x| > 0.5 ln2 (high word > 0x3fd62e42): k = (int)(invln2 * x + copysign(0.5, x)), hi = x - k ln2HI, lo = k ln2LO,
//     r = hi - lo, exp = (1 - ((lo - r c / (2 - c)) - hi)) 2^k (x == 1: E). Between 0.5 ln2 and 1.5 ln2 fdlibm sets
//     k = +-1, hi = x -+ ln2HI, lo = +-ln2LO instead: there the formula gives k = +-1 too, so the same hi and lo.
//   B 2^-28 <= |x| <= 0.5 ln2: k = 0, exp = 1 - ((x c) / (c - 2) - x).
//   C |x| < 2^-28: exp = 1 + x.
// where c = r - t (P1 + t (P2 + t (P3 + t (P4 + t P5)))), t = r r (r = x in B).
// locals: x=0 | ax=1 ca=2 t=3 k64=4 hi=5 lo=6 xr=7 tt=8 c=9 ra=10 rb=11 (v128).
const V = {
  const: (lo, hi = lo) => { const b = Buffer.alloc(16); b.writeDoubleLE(lo, 0); b.writeDoubleLE(hi, 8); return simd(0x0c, ...b); },
  bits: (hi32, lo32) => { const b = Buffer.alloc(8); b.writeUInt32LE(lo32 >>> 0, 0); b.writeUInt32LE(hi32 >>> 0, 4); return b.readDoubleLE(0); },
  and: simd(0x4e), bitselect: simd(0x52), allTrue64: simd(0xc3),
  f64: { eq: simd(0x47), lt: simd(0x49), ge: simd(0x4c), abs: simd(0xec), neg: simd(0xed), add: simd(0xf0), sub: simd(0xf1), mul: simd(0xf2), div: simd(0xf3), extract: (l) => simd(0x21, l), replace: (l) => simd(0x22, l), splat: simd(0x14), convertLowI32: simd(0xfe), promoteLow: simd(0x5f) },
  f32: { demoteZero: simd(0x5e) },
  i32: { truncSatF64Zero: simd(0xfc) },
  i64: { extendLowI32S: simd(0xc7), shl: simd(0xcb), add: simd(0xce) },
  load: (o) => simd(0x00, 4, ...uleb(o)), load64Zero: (o) => simd(0x5d, 3, ...uleb(o)), store64Lane: (o, l) => simd(0x5b, 3, ...uleb(o), l),
};
const EXP2 = 5;
const exp2Body = (() => {
  const X = 0, AX = 1, CA = 2, T = 3, K64 = 4, HI = 5, LO = 6, XR = 7, TT = 8, C = 9, RA = 10, RB = 11;
  const c2 = (hi32, lo32) => V.const(V.bits(hi32, lo32));
  return code(
    vec([[...uleb(11), V128]]),
    local.get(X), V.f64.abs, local.tee(AX), V.const(708), V.f64.lt, V.allTrue64, op.i32.eqz,
    if_(EMPTY, [
      local.get(X), V.f64.extract(0), call(EXP), V.f64.splat, local.get(X), V.f64.extract(1), call(EXP), V.f64.replace(1), ret,
    ]),
    local.get(AX), c2(0x3fd62e43, 0), V.f64.ge, local.set(CA),
    // t = k (A), else 0: k = trunc(invln2 * x + copysign(0.5, x))
    c2(...invln2), local.get(X), V.f64.mul, local.get(X), V.const(0.5), c2(0x80000000, 0), V.bitselect, V.f64.add, V.i32.truncSatF64Zero,
    local.tee(K64), V.f64.convertLowI32, local.get(CA), V.and, local.set(T),
    local.get(K64), V.i64.extendLowI32S, local.get(CA), V.and, local.set(K64),
    local.get(X), local.get(T), c2(...ln2HI), V.f64.mul, V.f64.sub, local.set(HI),
    local.get(T), c2(...ln2LO), V.f64.mul, local.set(LO),
    local.get(HI), local.get(LO), V.f64.sub, local.get(X), local.get(CA), V.bitselect, local.tee(XR), local.get(XR), V.f64.mul, local.set(TT),
    expPoly(XR, TT, c2, V.f64), local.set(C),
    // A: (1 - ((lo - (xr * c) / (2 - c)) - hi)) * 2^k, E where x == 1
    V.const(1), local.get(LO), local.get(XR), local.get(C), V.f64.mul, V.const(2), local.get(C), V.f64.sub, V.f64.div, V.f64.sub, local.get(HI), V.f64.sub, V.f64.sub,
    local.get(K64), op.i64.const(1023), simd(0x12) /* i64x2.splat */, V.i64.add, i32.const(52), V.i64.shl, V.f64.mul, local.set(RA),
    c2(0x4005bf0a, 0x8b145769), local.get(RA), local.get(X), V.const(1), V.f64.eq, V.bitselect, local.set(RA),
    // B: 1 - ((x * c) / (c - 2) - x); C (|x| < 2^-28): 1 + x
    V.const(1), local.get(XR), local.get(C), V.f64.mul, local.get(C), V.const(2), V.f64.sub, V.f64.div, local.get(XR), V.f64.sub, V.f64.sub, local.set(RB),
    V.const(1), local.get(X), V.f64.add, local.get(RB), local.get(AX), V.const(2 ** -28), V.f64.lt, V.bitselect, local.set(RB),
    local.get(RA), local.get(RB), local.get(CA), V.bitselect,
    0x0b,
  );
})();

// step: params r=0 h=1 z=2 H=3 p0..p4=4..8 s=9 | k4=10 zk=11 sc=12 (i32) | i=13 f=14 g=15 o=16 c=17 (v128: columns k, k+1).
//   h[k] = s[k] (f32 -> f64), k < H; preact(r, h, z, H, p0..p4);
//   for k < H, two at a time: i = sigmoid(z[k]), f = sigmoid(z[H+k]), g = tanh(z[2H+k]), o = sigmoid(z[3H+k]),
//              c = f * s[H+k] + i * g; s[H+k] = (f32) c; s[k] = (f32) (o * tanh(c))
//   where sigmoid(x) = 1 / (1 + exp(-x)) (exp2: both lanes at once), tanh on each lane: the JS loop of
//   lstm-runtime.ts, the same rounded operations in doubles (f64x2 operations are lane-wise IEEE ones).
const stepBody = (() => {
  const S = 9, K4 = 10, ZK = 11, SC = 12, GI = 13, GF = 14, GG = 15, GO = 16, GC = 17;
  // The pair of z columns k, k+1 of gate q: z + 8 * (q * H + k) = zk + q * 8H.
  const zq = (q) => (q === 0 ? local.get(ZK) : [...local.get(ZK), ...local.get(H), ...i32.const(3), ...i32.shl, ...(q === 1 ? [] : [...i32.const(q), ...i32.mul]), ...i32.add]);
  const sig = (q) => code(V.const(1), V.const(1), zq(q), V.load(0), V.f64.neg, call(EXP2), V.f64.add, V.f64.div);
  /** tanh of each lane of the v128 on the stack, through local l. */
  const tanh2 = (l) => code(local.set(l), local.get(l), V.f64.extract(0), call(TANH), V.f64.splat, local.get(l), V.f64.extract(1), call(TANH), V.f64.replace(1));
  return code(
    vec([[...uleb(3), I32], [...uleb(5), V128]]),
    // h[k] = s[k]
    i32.const(0), local.set(K4),
    loop(
      local.get(HP), local.get(K4), i32.const(1), i32.shl, i32.add,
      local.get(S), local.get(K4), i32.add, op.f32.load(0), op.f64.promoteF32, op.f64.store(0),
      local.get(K4), i32.const(4), i32.add, local.tee(K4), local.get(H), i32.const(2), i32.shl, i32.ltU, brIf(0),
    ),
    local.get(R), local.get(HP), local.get(Z), local.get(H), local.get(P), local.get(P + 1), local.get(P + 2), local.get(P + 3), local.get(P + 4), call(0),
    i32.const(0), local.set(K4),
    loop(
      // Two columns k, k+1 (k4 = 4k: the byte offset in s; zk = z + 8k; sc = the address of c[k] in s).
      local.get(Z), local.get(K4), i32.const(1), i32.shl, i32.add, local.set(ZK),
      local.get(S), local.get(H), i32.const(2), i32.shl, i32.add, local.get(K4), i32.add, local.set(SC),
      sig(0), local.set(GI),
      sig(1), local.set(GF),
      zq(2), V.load(0), tanh2(GG), local.set(GG),
      sig(3), local.set(GO),
      // c = f * c_prev + i * g
      local.get(GF), local.get(SC), V.load64Zero(0), V.f64.promoteLow, V.f64.mul, local.get(GI), local.get(GG), V.f64.mul, V.f64.add, local.set(GC),
      local.get(SC), local.get(GC), V.f32.demoteZero, V.store64Lane(0, 0),
      // h = o * tanh(c)
      local.get(S), local.get(K4), i32.add, local.get(GO), local.get(GC), tanh2(GF), V.f64.mul, V.f32.demoteZero, V.store64Lane(0, 0),
      local.get(K4), i32.const(8), i32.add, local.tee(K4), local.get(H), i32.const(2), i32.shl, i32.ltU, brIf(0),
    ),
    0x0b,
  );
})();

// expv(p, n): the n doubles at p (n even) replaced by their exp2, two at a time: exp2 exposed for the tests.
const expvBody = code(
  vec([]),
  loop(
    local.get(0), local.get(0), V.load(0), call(EXP2), v128.store(0),
    local.get(0), i32.const(16), i32.add, local.set(0),
    local.get(1), i32.const(2), op.i32.sub, local.tee(1), i32.const(0), op.i32.gtS, brIf(0),
  ),
  0x0b,
);

const fn = (body) => [...uleb(body.length), ...body];
const bytes = Uint8Array.from([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  ...section(1, vec([
    [0x60, ...vec(Array.from({ length: 9 }, () => [I32])), ...vec([])], // type 0: preact (i32 x 9) -> ()
    [0x60, ...vec(Array.from({ length: 10 }, () => [I32])), ...vec([])], // type 1: step (i32 x 10) -> ()
    [0x60, ...vec([[F64]]), ...vec([[F64]])], // type 2: (f64) -> f64
    [0x60, ...vec([[V128]]), ...vec([[V128]])], // type 3: (v128) -> v128
    [0x60, ...vec([[I32], [I32]]), ...vec([])], // type 4: (i32, i32) -> ()
  ])),
  ...section(3, vec([uleb(0), uleb(1), uleb(2), uleb(2), uleb(2), uleb(3), uleb(4)])), // funcs: preact, step, exp, expm1, tanh, exp2, expv
  ...section(5, vec([[0x00, ...uleb(1)]])), // memory 0: min 1 page (the runtime grows it)
  ...section(7, vec([
    [...str("memory"), 0x02, 0x00],
    [...str("preact"), 0x00, 0x00],
    [...str("step"), 0x00, 0x01],
    [...str("exp"), 0x00, ...uleb(EXP)],
    [...str("tanh"), 0x00, ...uleb(TANH)],
    [...str("expv"), 0x00, ...uleb(6)],
  ])),
  ...section(10, vec([fn(preactBody), fn(stepBody), fn(expBody), fn(expm1Body), fn(tanhBody), fn(exp2Body), fn(expvBody)])),
]);

const ts = `// Generated by scripts/gen-lstm-kernel.mjs (its source and the text format are there); do not edit.
/** The LSTM step (pre-activations: projected rows + h·R; the gates; the cell update) as a WebAssembly SIMD module (${bytes.length} bytes), base64. */
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
