/**
 * IEEE 754 binary16 ("half") conversion for stored LSTM states
 * (UserState.lstm): the cell computes in float32, and each step's (h, c) is
 * rounded to the nearest half (ties to even) so that what a profile stores
 * (2 bytes a value) is exactly what the live state holds: a user stepped in
 * memory and one reloaded from LMDB go on identically. Magnitudes beyond the
 * largest half (65504) saturate to it; NaN stays NaN.
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The binary16 bits nearest to `x` (round to nearest, ties to even; saturating). */
export function toHalfBits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 : sign | 0x7bff;
  const e = exp - 112; // the half exponent field: exp - 127 + 15
  if (e <= 0) {
    // A subnormal half (or zero): value = h * 2^-24.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  if (e >= 0x1f) return sign | 0x7bff;
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++;
  if (h >= 0x7c00) h = 0x7bff;
  return sign | h;
}

/** The value of binary16 bits. */
export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m !== 0 ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** Rounds every value of `a` to its nearest half, in place, and writes the halves little-endian into `out` (2 bytes each) when given. */
export function roundToHalf(a: Float32Array, out?: Uint8Array): void {
  for (let i = 0; i < a.length; i++) {
    f32[0] = a[i]!;
    const b = u32[0]!;
    const exp = (b >>> 23) & 0xff;
    let h: number;
    // A normal half (exponent field 1..30): round the float32's mantissa to 10 bits (ties to even) on its bits.
    const r = exp >= 113 && exp <= 142 ? ((b + 0xfff + ((b >>> 13) & 1)) & 0xffffe000) >>> 0 : 0;
    if (r !== 0 && ((r >>> 23) & 0xff) <= 142) {
      h = ((r >>> 16) & 0x8000) | ((((r >>> 23) & 0xff) - 112) << 10) | ((r >>> 13) & 0x3ff);
      u32[0] = r;
      a[i] = f32[0]!;
    } else {
      // Zero, subnormal, beyond the largest half, NaN.
      h = toHalfBits(a[i]!);
      a[i] = fromHalfBits(h);
    }
    if (out !== undefined) {
      out[2 * i] = h & 0xff;
      out[2 * i + 1] = h >>> 8;
    }
  }
}

/** Reads little-endian halves (2 bytes each) into `out`. */
export function readHalves(bytes: Uint8Array, out: Float32Array): void {
  for (let i = 0; i < out.length; i++) out[i] = fromHalfBits(bytes[2 * i]! | (bytes[2 * i + 1]! << 8));
}
