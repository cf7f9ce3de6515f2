/**
 * The stored profile layout (db `profiles`, src/store/profile-store.ts): a
 * user's state written field by field, in a fixed order, by code made for it,
 * instead of msgpackr walking the objects (a record structure looked up per
 * object, a type dispatch per value: ~16 % of a shard's CPU, bench/RESULTS.md
 * "Speed: profiles in a layout of their own").
 * The store puts these bytes as one msgpack bin value, so a profile written
 * before (a msgpack record) still reads as it is: the decoded value is an
 * object then, and a Uint8Array for this layout.
 *
 * Layout, version 2 (byte 0); every number below is a NUM, every count a NUM:
 * - NUM: one byte 0..0xef is that integer; 0xf0 + uint16, 0xf1 + uint32,
 *   0xf2 + uint48 (timestamps), 0xf3 + float64 (any other number, NaN and
 *   infinities included; -0 is written as 0, as msgpack did), all
 *   little-endian;
 * - STR: byte length (NUM) then UTF-8;
 * - a list: its length, then its elements;
 * - then: the optional fields present (bits: 1 = bought ... 512 = mg, in
 *   the order below), n, counts, purchased, refunded, currency, orders,
 *   orderIds, lastPurchaseMs, firstSeenMs, lastSeenMs, affRefMs, cat, brand, band (a table: length,
 *   keys, scores), sCount, sEventsDone, sDurationDone, sId, sStartMs, sLastMs,
 *   sEvents, recent; then the optional ones present, in this order: bought,
 *   tl (length, a mode byte, per entry type, time, item: with mode 0 each
 *   time is lastSeenMs minus it, with mode 1 the time itself), lstm (length,
 *   bytes), lstmV, aud (p, d, cart, sc, scn, scS: what the `memberships` db
 *   does not hold), rv (n, nText, w, s, cat, brand: length, keys, w, s; asp),
 *   rk (RISK below), so (o, i, ss, sr, fo,
 *   fr: length, per friend hash, categories, shares), al (length, per entry
 *   key, partition), mg.
 * - RISK, the risk state (src/actors/risk.ts): a mask (NUM) of what is
 *   written: 1 sp (else sp = pk), 2 pp, 4 cp, 8 none of b, pk and bt (all 0:
 *   no action yet), 16 f, 32 rt, 64 q, 128 qo, 256 qk (each absent one is 0,
 *   qk -1); 512 the rates and b as NUMs (else float32, 4 bytes: a state of
 *   this version keeps them as float32 values); 1024 bt as it is (else
 *   lastSeenMs minus it); 2048 the ids' times as they are (else lastSeenMs
 *   minus them). Then [b, pk, [sp], [pp], bt], [f], [cp], [rt], [q], [qo],
 *   [qk], the ids' count n and, if n > 0,
 *   a NUM whose bit i says id i is a device, then per id its hash (a device's
 *   -id - 1) as 4 bytes, little-endian, and its time.
 * Version 1 (read, no longer written) held rk as packRisk's flat array
 * (its length, then its numbers).
 *
 * A field added to UserState (or to the parts written here) does not compile
 * until it has its place below (the `Covered` checks).
 */
import type { AudienceState } from "../actors/audience-types.js";
import { RISK_FIXED, unpackRisk, type RiskState } from "../actors/risk.js";
import type { FriendInterest, SocialState } from "../actors/social.js";
import type { AffinityTable, ReviewState, SentimentTable, UserState } from "../actors/user-profile.js";

/** The layout's version (its first byte). Version 1 (the risk state as packRisk's array) is read too. */
export const PROFILE_LAYOUT_VERSION = 2;

/** Optional fields of UserState, in the order of their presence bits (bit 0 = bought). */
type Optional = "bought" | "tl" | "lstm" | "lstmV" | "aud" | "rv" | "rk" | "so" | "al" | "mg";
type Written = "v" | "n" | "counts" | "purchased" | "refunded" | "currency" | "orders" | "orderIds" | "lastPurchaseMs" |
  "firstSeenMs" | "lastSeenMs" | "affRefMs" | "cat" | "brand" | "band" | "sCount" | "sEventsDone" | "sDurationDone" |
  "sId" | "sStartMs" | "sLastMs" | "sEvents" | "recent" | Optional;
/** Compiles only while every field of `T` is among `W`. */
type Covered<T, W> = [Exclude<keyof T, W>] extends [never] ? true : never;
const USER_STATE_COVERED: Covered<UserState, Written> = true;
/** AudienceState: the `memberships` db holds m, due, w and q; tm is no longer written. */
const AUD_COVERED: Covered<AudienceState, "p" | "d" | "cart" | "sc" | "scn" | "scS" | "m" | "due" | "w" | "q" | "tm"> = true;
const REVIEW_COVERED: Covered<ReviewState, "n" | "nText" | "w" | "s" | "cat" | "brand" | "asp"> = true;
const SOCIAL_COVERED: Covered<SocialState, "o" | "i" | "ss" | "sr" | "fo" | "fr"> = true;
void [USER_STATE_COVERED, AUD_COVERED, REVIEW_COVERED, SOCIAL_COVERED];

const U16 = 0xf0;
const U32 = 0xf1;
const U48 = 0xf2;
const F64 = 0xf3;
const TWO_48 = 2 ** 48;

/** The encoder's buffer, grown as needed; encodeProfile's result is a view of it, valid until the next call. */
let buf: Buffer = Buffer.allocUnsafeSlow(4096);
let view: DataView = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
let pos = 0;
/** Where the value being encoded starts in `buf` (0, or its place in the arena: encodeProfileBin). */
let base = 0;
/** Whether `buf` is the arena now (a new one is of ARENA_BYTES at least, not twice the one it replaces). */
let inArena = false;

/** Room for n more bytes; a larger buffer holds the value encoded so far at its start (base 0) if there is not. */
function room(n: number): void {
  if (pos + n <= buf.length) return;
  const used = pos - base;
  const next = Buffer.allocUnsafeSlow(inArena ? Math.max(ARENA_BYTES, 2 * (used + n)) : Math.max(buf.length * 2, used + n));
  buf.copy(next, 0, base, pos);
  buf = next;
  view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  pos = used;
  base = 0;
}

/**
 * The buffer profiles are encoded into for the store's puts (encodeProfileBin),
 * one after the other: lmdb-js reads a put's value when its transaction
 * commits, so bytes once handed out are never written again; a full arena is
 * replaced by a new one (lmdb-js holds the old one until its puts committed).
 * Small, as msgpackr's buffers are (8 KiB): an arena dies young, in a
 * scavenge; one of 256 KiB outlived them, and its external bytes in the old
 * generation brought full GCs (bench/shard-apply.ts, 0 → 0.2 per 10,000 events).
 */
const ARENA_BYTES = 16 * 1024;
/** A profile starts in a new arena when fewer bytes than this are left (a typical profile is ~1 KB). */
const ARENA_MIN_FREE = 4 * 1024;
/** Bytes before a profile in the arena for its msgpack bin header (type byte, up to 4 bytes of length). */
const BIN_HEADER = 5;
/** The arena with the last value's bounds (lmdb-js reads `start` and `end` of a buffer put as binary: no view per value). */
export type BinValue = Buffer & { start: number; end: number };
let arena = Buffer.allocUnsafeSlow(ARENA_BYTES) as BinValue;
let arenaView = new DataView(arena.buffer, arena.byteOffset, arena.byteLength);
let arenaPos = 0;

function num(x: number): void {
  room(9);
  if (x >>> 0 === x) {
    if (x < U16) {
      buf[pos++] = x;
    } else if (x < 0x10000) {
      buf[pos++] = U16;
      view.setUint16(pos, x, true);
      pos += 2;
    } else {
      buf[pos++] = U32;
      view.setUint32(pos, x, true);
      pos += 4;
    }
  } else if (x > 0 && x < TWO_48 && Number.isInteger(x)) {
    buf[pos++] = U48;
    view.setUint32(pos, x % 0x100000000, true);
    view.setUint16(pos + 4, Math.floor(x / 0x100000000), true);
    pos += 6;
  } else {
    buf[pos++] = F64;
    view.setFloat64(pos, x, true);
    pos += 8;
  }
}

function str(s: string): void {
  const n = s.length;
  if (n * 3 < U16) {
    // At most 3 bytes of UTF-8 per UTF-16 unit: the length fits one byte; ASCII written here, the rest by Buffer.
    room(1 + n * 3);
    const start = pos++;
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      buf[pos++] = c;
    }
    if (i < n) pos += buf.write(s.slice(i), pos, "utf8");
    buf[start] = pos - start - 1;
    return;
  }
  const bytes = Buffer.byteLength(s, "utf8");
  num(bytes);
  room(bytes);
  pos += buf.write(s, pos, "utf8");
}

function nums(a: readonly number[]): void {
  num(a.length);
  for (let i = 0; i < a.length; i++) num(a[i]!);
}

function strs(a: readonly string[]): void {
  num(a.length);
  for (let i = 0; i < a.length; i++) str(a[i]!);
}

function table(t: AffinityTable): void {
  strs(t.keys);
  nums(t.scores);
}

function sentimentTable(t: SentimentTable): void {
  strs(t.keys);
  nums(t.w);
  nums(t.s);
}

/** An id's hash: 4 bytes, little-endian. */
function u32(x: number): void {
  room(4);
  view.setUint32(pos, x, true);
  pos += 4;
}

function f32(x: number): void {
  room(4);
  view.setFloat32(pos, x, true);
  pos += 4;
}

/** Whether x is a float32 value (Math.fround keeps it). */
const isF32 = (x: number) => Math.fround(x) === x || Number.isNaN(x);

/** The risk state in its compact form (RISK in the header). */
function risk(r: RiskState, last: number): void {
  const b = r[0]!;
  const bt = r[1]!;
  const sp = r[2]!;
  const pp = r[3]!;
  const f = r[4]!;
  const pk = r[5]!;
  const q = r[6]!;
  const qo = r[7]!;
  const qk = r[8]!;
  const cp = r[9]!;
  const rt = r[10]!;
  const intLast = Number.isInteger(last);
  let idTimes = intLast;
  for (let i = RISK_FIXED + 1; i < r.length && idTimes; i += 2) {
    const t = r[i]!;
    idTimes = Number.isInteger(t) && t <= last;
  }
  const asF32 = isF32(b) && isF32(pk) && isF32(sp) && isF32(pp);
  const btRel = intLast && Number.isInteger(bt) && bt <= last;
  const idle = Object.is(b, 0) && Object.is(pk, 0) && Object.is(bt, 0);
  const mask = (!Object.is(sp, pk) ? 1 : 0) | (!Object.is(pp, 0) ? 2 : 0) | (!Object.is(cp, 0) ? 4 : 0) | (idle ? 8 : 0) |
    (!Object.is(f, 0) ? 16 : 0) | (!Object.is(rt, 0) ? 32 : 0) | (!Object.is(q, 0) ? 64 : 0) | (!Object.is(qo, 0) ? 128 : 0) |
    (!Object.is(qk, -1) ? 256 : 0) | (asF32 ? 0 : 512) | (btRel || idle ? 0 : 1024) | (idTimes ? 0 : 2048);
  num(mask);
  const real = asF32 ? f32 : num;
  if (!idle) {
    real(b);
    real(pk);
  }
  if (mask & 1) real(sp);
  if (mask & 2) real(pp);
  if (!idle) num(btRel ? last - bt : bt);
  if (mask & 16) num(f);
  if (mask & 4) num(cp);
  if (mask & 32) num(rt);
  if (mask & 64) num(q);
  if (mask & 128) num(qo);
  if (mask & 256) num(qk);
  const n = (r.length - RISK_FIXED) >> 1;
  num(n);
  if (n === 0) return;
  let kinds = 0;
  for (let k = 0; k < n; k++) if (r[RISK_FIXED + 2 * k]! < 0) kinds += 2 ** k;
  num(kinds);
  for (let i = RISK_FIXED; i + 1 < r.length; i += 2) {
    const id = r[i]!;
    u32(id < 0 ? -id - 1 : id);
    num(idTimes ? last - r[i + 1]! : r[i + 1]!);
  }
}

/** Whether every entry's time is an integer (mode 0: written as lastSeenMs minus it, exact; else mode 1: as it is). */
function tlDeltas(tl: readonly [number, number, string][], last: number): boolean {
  if (!Number.isInteger(last)) return false;
  for (let i = 0; i < tl.length; i++) if (!Number.isInteger(tl[i]![1])) return false;
  return true;
}

/**
 * The stored bytes of a state's profile part (the `memberships` db holds the
 * rest of its audience state). A view of the encoder's buffer: valid until
 * the next call (the store's put copies it at once).
 */
export function encodeProfile(s: UserState): Uint8Array {
  pos = 0;
  base = 0;
  writeProfile(s);
  return buf.subarray(0, pos);
}

/**
 * The value the store puts for a state's profile part: the msgpack bin of
 * encodeProfile's bytes (what msgpackr wrote for them, byte for byte), in
 * the arena, between the returned buffer's `start` and `end` (changed by the
 * next call: lmdb-js reads them within the put). Encoded in place, not
 * copied from the encoder's buffer into msgpackr's.
 */
export function encodeProfileBin(s: UserState): BinValue {
  const ownBuf = buf;
  const ownView = view;
  if (arena.length - arenaPos < ARENA_MIN_FREE) {
    arena = Buffer.allocUnsafeSlow(ARENA_BYTES) as BinValue;
    arenaView = new DataView(arena.buffer, arena.byteOffset, arena.byteLength);
    arenaPos = 0;
  }
  buf = arena;
  view = arenaView;
  inArena = true;
  base = arenaPos;
  pos = base + BIN_HEADER;
  try {
    writeProfile(s);
    // A profile larger than the arena's rest moved to a new one (room).
    if (buf !== arena) {
      arena = buf as BinValue;
      arenaView = view;
    }
  } finally {
    buf = ownBuf;
    view = ownView;
    inArena = false;
  }
  const len = pos - base - BIN_HEADER;
  let start: number;
  if (len < 0x100) {
    start = base + 3;
    arena[start] = 0xc4;
    arena[start + 1] = len;
  } else if (len < 0x10000) {
    start = base + 2;
    arena[start] = 0xc5;
    arenaView.setUint16(start + 1, len);
  } else {
    start = base;
    arena[start] = 0xc6;
    arenaView.setUint32(start + 1, len);
  }
  arena.start = start;
  arena.end = pos;
  arenaPos = pos;
  return arena;
}

function writeProfile(s: UserState): void {
  room(1);
  buf[pos++] = PROFILE_LAYOUT_VERSION;
  // Named one by one (a keyed loop over OPTIONAL was a generic property lookup each).
  const bits = (s.bought !== undefined ? 1 : 0) | (s.tl !== undefined ? 2 : 0) | (s.lstm !== undefined ? 4 : 0) | (s.lstmV !== undefined ? 8 : 0) |
    (s.aud !== undefined ? 16 : 0) | (s.rv !== undefined ? 32 : 0) | (s.rk !== undefined ? 64 : 0) | (s.so !== undefined ? 128 : 0) |
    (s.al !== undefined ? 256 : 0) | (s.mg !== undefined ? 512 : 0);
  num(bits);
  num(s.n);
  nums(s.counts);
  num(s.purchased);
  num(s.refunded);
  str(s.currency);
  num(s.orders);
  strs(s.orderIds);
  num(s.lastPurchaseMs);
  num(s.firstSeenMs);
  num(s.lastSeenMs);
  num(s.affRefMs);
  table(s.cat);
  table(s.brand);
  table(s.band);
  num(s.sCount);
  num(s.sEventsDone);
  num(s.sDurationDone);
  str(s.sId);
  num(s.sStartMs);
  num(s.sLastMs);
  num(s.sEvents);
  strs(s.recent);
  if (s.bought !== undefined) strs(s.bought);
  const tl = s.tl;
  if (tl !== undefined) {
    num(tl.length);
    const last = s.lastSeenMs;
    const deltas = tlDeltas(tl, last);
    num(deltas ? 0 : 1);
    for (let i = 0; i < tl.length; i++) {
      const e = tl[i]!;
      num(e[0]);
      num(deltas ? last - e[1] : e[1]);
      str(e[2]);
    }
  }
  const lstm = s.lstm;
  if (lstm !== undefined) {
    num(lstm.length);
    room(lstm.length);
    buf.set(lstm, pos);
    pos += lstm.length;
  }
  if (s.lstmV !== undefined) str(s.lstmV);
  const a = s.aud;
  if (a !== undefined) {
    num(a.p);
    nums(a.d);
    num(a.cart);
    strs(a.sc);
    nums(a.scn);
    num(a.scS);
  }
  const rv = s.rv;
  if (rv !== undefined) {
    num(rv.n);
    num(rv.nText);
    num(rv.w);
    num(rv.s);
    sentimentTable(rv.cat);
    sentimentTable(rv.brand);
    table(rv.asp);
  }
  if (s.rk !== undefined) risk(s.rk, s.lastSeenMs);
  const so = s.so;
  if (so !== undefined) {
    num(so.o);
    num(so.i);
    num(so.ss);
    num(so.sr);
    nums(so.fo);
    num(so.fr.length);
    for (let i = 0; i < so.fr.length; i++) {
      const f = so.fr[i]!;
      num(f[0]);
      strs(f[1]);
      nums(f[2]);
    }
  }
  const al = s.al;
  if (al !== undefined) {
    num(al.length);
    for (let i = 0; i < al.length; i++) {
      str(al[i]![0]);
      num(al[i]![1]);
    }
  }
  if (s.mg !== undefined) strs(s.mg);
}

// Decoding: `src` and `at` are the bytes being read and the offset in them (any Uint8Array: no Buffer view made).
let src: Uint8Array = buf;
let at = 0;
/** A float64's bytes, copied in to be read (little-endian, as written). */
const F64_BYTES = new Uint8Array(8);
const F64_VALUE = new Float64Array(F64_BYTES.buffer);
const F32_BYTES = new Uint8Array(4);
const F32_VALUE = new Float32Array(F32_BYTES.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Arguments of String.fromCharCode for ASCII strings up to SHORT bytes, one array per length (no array per string). */
const SHORT = 32;
const CHARS: number[][] = [];
for (let n = 0; n <= SHORT; n++) CHARS.push(new Array<number>(n).fill(0));
const utf8 = new TextDecoder();

function rnum(): number {
  const b = src[at++]!;
  if (b < U16) return b;
  let x: number;
  switch (b) {
    case U16:
      x = src[at]! | (src[at + 1]! << 8);
      at += 2;
      return x;
    case U32:
      x = (src[at]! | (src[at + 1]! << 8) | (src[at + 2]! << 16)) + src[at + 3]! * 0x1000000;
      at += 4;
      return x;
    case U48:
      x = (src[at]! | (src[at + 1]! << 8) | (src[at + 2]! << 16)) + src[at + 3]! * 0x1000000 + (src[at + 4]! | (src[at + 5]! << 8)) * 0x100000000;
      at += 6;
      return x;
    case F64:
      for (let i = 0; i < 8; i++) F64_BYTES[LITTLE_ENDIAN ? i : 7 - i] = src[at + i]!;
      at += 8;
      return F64_VALUE[0]!;
    default:
      throw new RangeError(`profile layout: byte ${b} at ${at - 1} starts no number`);
  }
}

function rstr(): string {
  const n = rnum();
  const end = at + n;
  if (end > src.length) throw new RangeError(`profile layout: a string of ${n} bytes at ${at} goes past the end`);
  if (n <= SHORT) {
    const c = CHARS[n]!;
    let i = 0;
    for (; i < n; i++) {
      const x = src[at + i]!;
      if (x >= 0x80) break;
      c[i] = x;
    }
    if (i === n) {
      at = end;
      return String.fromCharCode.apply(null, c);
    }
  }
  const s = utf8.decode(src.subarray(at, end));
  at = end;
  return s;
}

function rnums(): number[] {
  const n = rnum();
  const a: number[] = [];
  for (let i = 0; i < n; i++) a.push(rnum());
  return a;
}

function rstrs(): string[] {
  const n = rnum();
  const a: string[] = [];
  for (let i = 0; i < n; i++) a.push(rstr());
  return a;
}

function rtable(): AffinityTable {
  const keys = rstrs();
  return { keys, scores: rnums() };
}

function rsentimentTable(): SentimentTable {
  const keys = rstrs();
  const w = rnums();
  return { keys, w, s: rnums() };
}

/** A float32, little-endian (as written). */
function rf32(): number {
  for (let i = 0; i < 4; i++) F32_BYTES[LITTLE_ENDIAN ? i : 3 - i] = src[at + i]!;
  at += 4;
  return F32_VALUE[0]!;
}

/** A risk state of its compact form (RISK in the header). */
function rrisk(last: number): RiskState {
  const mask = rnum();
  const real = mask & 512 ? rnum : rf32;
  const idle = (mask & 8) !== 0;
  const b = idle ? 0 : real();
  const pk = idle ? 0 : real();
  const sp = mask & 1 ? real() : pk;
  const pp = mask & 2 ? real() : 0;
  const btx = idle ? 0 : rnum();
  const bt = idle || mask & 1024 ? btx : last - btx;
  const f = mask & 16 ? rnum() : 0;
  const cp = mask & 4 ? rnum() : 0;
  const rt = mask & 32 ? rnum() : 0;
  const q = mask & 64 ? rnum() : 0;
  const qo = mask & 128 ? rnum() : 0;
  const qk = mask & 256 ? rnum() : -1;
  // A double array from the start (as newRiskState makes it): 0.5 first, then b.
  const r: RiskState = [0.5, bt, sp, pp, f, pk, q, qo, qk, cp, rt];
  r[0] = b;
  const n = rnum();
  if (n === 0) return r;
  let kinds = rnum();
  for (let k = 0; k < n; k++) {
    const h = (src[at]! | (src[at + 1]! << 8) | (src[at + 2]! << 16)) + src[at + 3]! * 0x1000000;
    at += 4;
    const device = kinds % 2 === 1;
    kinds = Math.floor(kinds / 2);
    const t = rnum();
    r.push(device ? -h - 1 : h, mask & 2048 ? t : last - t);
  }
  return r;
}

/**
 * Where the layout's bytes start in a stored profile value (as the profiles
 * db holds it, decompressed): after the header of its msgpack bin, or -1 for
 * a value of the layout before (a msgpack record or map).
 */
export function layoutStart(value: Uint8Array): number {
  switch (value[0]) {
    case 0xc4:
      return 2;
    case 0xc5:
      return 3;
    case 0xc6:
      return 5;
    default:
      return -1;
  }
}

/**
 * The state of bytes written by encodeProfile, from `start` to the end of
 * `bytes` (its audience state without memberships: m empty, due 0, for the
 * store to fill). Copies what it keeps: `bytes` may be a buffer that the next
 * read overwrites.
 */
export function decodeProfile(bytes: Uint8Array, start = 0): UserState {
  src = bytes;
  at = start;
  const version = src[at++];
  if (version !== PROFILE_LAYOUT_VERSION && version !== 1) throw new RangeError(`profile layout version ${version} is not known to this build`);
  const bits = rnum();
  // Object literals in one order: every decoded state has one shape.
  const n = rnum();
  const counts = rnums();
  const purchased = rnum();
  const refunded = rnum();
  const currency = rstr();
  const orders = rnum();
  const orderIds = rstrs();
  const lastPurchaseMs = rnum();
  const firstSeenMs = rnum();
  const lastSeenMs = rnum();
  const affRefMs = rnum();
  const cat = rtable();
  const brand = rtable();
  const band = rtable();
  const sCount = rnum();
  const sEventsDone = rnum();
  const sDurationDone = rnum();
  const sId = rstr();
  const sStartMs = rnum();
  const sLastMs = rnum();
  const sEvents = rnum();
  const recent = rstrs();
  const s: UserState = {
    v: 1, n, counts, purchased, refunded, currency, orders, orderIds, lastPurchaseMs, firstSeenMs, lastSeenMs, affRefMs,
    cat, brand, band, sCount, sEventsDone, sDurationDone, sId, sStartMs, sLastMs, sEvents, recent,
  };
  if (bits & 1) s.bought = rstrs();
  if (bits & 2) {
    const len = rnum();
    const deltas = rnum() === 0;
    const tl = new Array<[number, number, string]>(len);
    for (let i = 0; i < len; i++) {
      const type = rnum();
      const t = rnum();
      tl[i] = [type, deltas ? lastSeenMs - t : t, rstr()];
    }
    s.tl = tl;
  }
  if (bits & 4) {
    const len = rnum();
    // A Uint8Array of its own (as the state's LSTM step makes it), not a view of the source.
    const lstm = new Uint8Array(len);
    for (let i = 0; i < len; i++) lstm[i] = src[at + i]!;
    s.lstm = lstm;
    at += len;
  }
  if (bits & 8) s.lstmV = rstr();
  if (bits & 16) {
    const p = rnum();
    const d = rnums();
    const cart = rnum();
    const sc = rstrs();
    const scn = rnums();
    const scS = rnum();
    s.aud = { p, d, cart, sc, scn, scS, m: Object.create(null) as AudienceState["m"], due: 0 };
  }
  let rv: ReviewState | undefined;
  if (bits & 32) {
    const rn = rnum();
    const nText = rnum();
    const w = rnum();
    const sum = rnum();
    const rcat = rsentimentTable();
    const rbrand = rsentimentTable();
    rv = { n: rn, nText, w, s: sum, cat: rcat, brand: rbrand, asp: rtable() };
  }
  // rk before rv, the order applyEvent adds them in (rk at a user's first event, rv at the first review): a state
  // decoded with both and one that got its first review in memory have one shape (a second one sent applyEvent
  // back to be compiled again).
  if (bits & 64) s.rk = version === 1 ? unpackRisk(rnums()) : rrisk(lastSeenMs);
  if (rv !== undefined) s.rv = rv;
  if (bits & 128) {
    const o = rnum();
    const i = rnum();
    const ss = rnum();
    const sr = rnum();
    const fo = rnums();
    const len = rnum();
    const fr = new Array<FriendInterest>(len);
    for (let k = 0; k < len; k++) {
      const h = rnum();
      const cats = rstrs();
      fr[k] = [h, cats, rnums()];
    }
    s.so = { o, i, ss, sr, fo, fr };
  }
  if (bits & 256) {
    const len = rnum();
    const al = new Array<[string, number]>(len);
    for (let k = 0; k < len; k++) {
      const key = rstr();
      al[k] = [key, rnum()];
    }
    s.al = al;
  }
  if (bits & 512) s.mg = rstrs();
  const left = src.length - at;
  src = buf;
  if (left !== 0) throw new RangeError(`profile layout: ${left} bytes ${left > 0 ? "left after the state" : "missing"}`);
  return s;
}
