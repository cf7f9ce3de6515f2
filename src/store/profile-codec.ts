/**
 * The stored encoding of a UserState: one compact binary layout, replacing
 * msgpack of the whole object (which wrote every field name's structure and
 * every number as a float64 on every change).
 *
 * Layout (all integers are unsigned LEB128 varints unless said otherwise):
 *   byte 0     PROFILE_MAGIC (0xc1: a byte msgpack never writes, so a record
 *              stored by the previous layout, msgpack, is told apart by it)
 *   byte 1     PROFILE_LAYOUT_VERSION
 *   varint     F, the number of fields written (the first F of FIELDS)
 *   bitmap     ceil(F / 8) bytes: bit i set when field i is present
 *   fields     each present field, in FIELDS order, by its kind:
 *     num      a number: an integer with |n| < 2^50 (not -0) as varint
 *              (zigzag(n) x 2); anything else as the varint 1 then a
 *              float64 (little-endian). NaN and ±Infinity are refused.
 *     str      varint byte length, UTF-8
 *     nums     varint count, then num each
 *     strs     varint count, then str each
 *     aff      an AffinityTable: varint count, then per entry str key, float64 score
 *     tl       the timeline: varint count, then per entry num type, num time, str
 *     bytes    varint length, raw bytes
 *
 * Adding a field to UserState: add it to newUserState (its default for
 * records written before it) and append one line to FIELDS with its kind
 * (the compiler requires every key of UserState there). Fields are never
 * reordered or removed: a record keeps F, so records written before a field
 * existed decode with that field's default, and no version bump is needed.
 * PROFILE_LAYOUT_VERSION changes only when an existing field's encoding does.
 */
import { newUserState, type AffinityTable, type UserState } from "../actors/user-profile.js";
import { ErrorCode, PortraitError } from "../errors.js";

/** First byte of every record in this layout (0xc1 is "never used" in msgpack). */
export const PROFILE_MAGIC = 0xc1;
/** Version of the layout below; a record of another version is refused (STORAGE_FAILED). */
export const PROFILE_LAYOUT_VERSION = 2;

type Kind = "num" | "str" | "nums" | "strs" | "aff" | "tl" | "bytes";

/**
 * Every field of UserState and its kind, in stored order (append only).
 * `satisfies Record<keyof UserState, Kind>`: a field added to UserState and
 * not here is a compile error.
 */
export const FIELDS = {
  v: "num",
  n: "num",
  counts: "nums",
  purchased: "num",
  refunded: "num",
  currency: "str",
  orders: "num",
  orderIds: "strs",
  lastPurchaseMs: "num",
  firstSeenMs: "num",
  lastSeenMs: "num",
  affRefMs: "num",
  cat: "aff",
  brand: "aff",
  band: "aff",
  sCount: "num",
  sEventsDone: "num",
  sDurationDone: "num",
  sId: "str",
  sStartMs: "num",
  sLastMs: "num",
  sEvents: "num",
  recent: "strs",
  bought: "strs",
  tl: "tl",
  lstm: "bytes",
  lstmV: "str",
} as const satisfies Record<keyof UserState, Kind>;

const NAMES = Object.keys(FIELDS) as (keyof UserState)[];
const KINDS = NAMES.map((k) => FIELDS[k]) as Kind[];

function bad(message: string): PortraitError {
  return new PortraitError(ErrorCode.STORAGE_FAILED, `profile codec: ${message}`);
}

const utf8 = new TextEncoder();
const utf8d = new TextDecoder("utf-8", { fatal: false });

class Writer {
  buf = new Uint8Array(4096);
  view = new DataView(this.buf.buffer);
  at = 0;

  room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.at + n));
    next.set(this.buf.subarray(0, this.at));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  varint(v: number): void {
    this.room(8);
    while (v >= 0x80) {
      this.buf[this.at++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.at++] = v;
  }

  num(x: number, field: string): void {
    if (!Number.isFinite(x)) throw bad(`${field} is ${x}: only finite numbers are stored`);
    if (Number.isInteger(x) && Math.abs(x) < 2 ** 50 && !Object.is(x, -0)) {
      this.varint((x >= 0 ? x * 2 : -x * 2 - 1) * 2);
      return;
    }
    this.room(9);
    this.buf[this.at++] = 1;
    this.view.setFloat64(this.at, x, true);
    this.at += 8;
  }

  f64(x: number, field: string): void {
    if (!Number.isFinite(x)) throw bad(`${field} is ${x}: only finite numbers are stored`);
    this.room(8);
    this.view.setFloat64(this.at, x, true);
    this.at += 8;
  }

  str(s: string): void {
    const n = s.length;
    // ASCII fast path: one byte per character.
    let ascii = true;
    for (let i = 0; i < n; i++) if (s.charCodeAt(i) > 0x7f) { ascii = false; break; }
    if (ascii) {
      this.varint(n);
      this.room(n);
      for (let i = 0; i < n; i++) this.buf[this.at++] = s.charCodeAt(i);
      return;
    }
    const bytes = utf8.encode(s);
    this.varint(bytes.length);
    this.bytes(bytes);
  }

  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.at);
    this.at += b.length;
  }
}

class Reader {
  at = 0;
  readonly view: DataView;

  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  varint(): number {
    let v = 0;
    let scale = 1;
    for (;;) {
      if (this.at >= this.buf.length) throw bad("record ends inside a number");
      const b = this.buf[this.at++]!;
      v += (b & 0x7f) * scale;
      if (b < 0x80) return v;
      scale *= 0x80;
      if (scale > 2 ** 56) throw bad("number too long");
    }
  }

  num(): number {
    const w = this.varint();
    if (w === 1) return this.f64();
    const z = w / 2;
    return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  }

  f64(): number {
    if (this.at + 8 > this.buf.length) throw bad("record ends inside a float");
    const x = this.view.getFloat64(this.at, true);
    this.at += 8;
    return x;
  }

  str(): string {
    const n = this.varint();
    const end = this.at + n;
    if (end > this.buf.length) throw bad("record ends inside a string");
    const b = this.buf;
    let s = "";
    if (n <= 64) {
      let ascii = true;
      for (let i = this.at; i < end; i++) {
        const c = b[i]!;
        if (c > 0x7f) { ascii = false; break; }
        s += String.fromCharCode(c);
      }
      if (ascii) {
        this.at = end;
        return s;
      }
    }
    s = utf8d.decode(b.subarray(this.at, end));
    this.at = end;
    return s;
  }

  bytes(): Uint8Array {
    const n = this.varint();
    if (this.at + n > this.buf.length) throw bad("record ends inside bytes");
    // A copy into a plain Uint8Array: the record may be a Buffer view that LMDB reuses (getBinaryFast), and Buffer#slice does not copy.
    const out = new Uint8Array(n);
    out.set(this.buf.subarray(this.at, this.at + n));
    this.at += n;
    return out;
  }
}

function writeField(w: Writer, kind: Kind, name: string, v: unknown): void {
  switch (kind) {
    case "num": return w.num(v as number, name);
    case "str": return w.str(v as string);
    case "nums": {
      const a = v as number[];
      w.varint(a.length);
      for (const x of a) w.num(x, name);
      return;
    }
    case "strs": {
      const a = v as string[];
      w.varint(a.length);
      for (const x of a) w.str(x);
      return;
    }
    case "aff": {
      const t = v as AffinityTable;
      if (t.keys.length !== t.scores.length) throw bad(`${name}: ${t.keys.length} keys but ${t.scores.length} scores`);
      w.varint(t.keys.length);
      for (let i = 0; i < t.keys.length; i++) {
        w.str(t.keys[i]!);
        w.f64(t.scores[i]!, name);
      }
      return;
    }
    case "tl": {
      const a = v as [number, number, string][];
      w.varint(a.length);
      for (const [type, t, s] of a) {
        w.num(type, name);
        w.num(t, name);
        w.str(s);
      }
      return;
    }
    case "bytes": {
      const b = v as Uint8Array;
      w.varint(b.length);
      w.bytes(b);
      return;
    }
  }
}

function readField(r: Reader, kind: Kind): unknown {
  switch (kind) {
    case "num": return r.num();
    case "str": return r.str();
    case "nums": {
      const n = r.varint();
      const a = new Array<number>(n);
      for (let i = 0; i < n; i++) a[i] = r.num();
      return a;
    }
    case "strs": {
      const n = r.varint();
      const a = new Array<string>(n);
      for (let i = 0; i < n; i++) a[i] = r.str();
      return a;
    }
    case "aff": {
      const n = r.varint();
      const keys = new Array<string>(n);
      const scores = new Array<number>(n);
      for (let i = 0; i < n; i++) {
        keys[i] = r.str();
        scores[i] = r.f64();
      }
      return { keys, scores } satisfies AffinityTable;
    }
    case "tl": {
      const n = r.varint();
      const a = new Array<[number, number, string]>(n);
      for (let i = 0; i < n; i++) a[i] = [r.num(), r.num(), r.str()];
      return a;
    }
    case "bytes": return r.bytes();
  }
}

const shared = new Writer();

/** The record of `state` in this layout (a fresh copy). Throws STORAGE_FAILED for a number that is not finite. */
export function encodeProfile(state: UserState): Uint8Array {
  const w = shared;
  w.at = 0;
  const F = NAMES.length;
  const maskBytes = Math.ceil(F / 8);
  w.room(4 + maskBytes);
  w.buf[w.at++] = PROFILE_MAGIC;
  w.buf[w.at++] = PROFILE_LAYOUT_VERSION;
  w.varint(F);
  const maskAt = w.at;
  w.buf.fill(0, maskAt, maskAt + maskBytes);
  w.at += maskBytes;
  const s = state as unknown as Record<string, unknown>;
  for (let i = 0; i < F; i++) {
    const v = s[NAMES[i]!];
    if (v === undefined) continue;
    w.buf[maskAt + (i >> 3)]! |= 1 << (i & 7);
    writeField(w, KINDS[i]!, NAMES[i]!, v);
  }
  return w.buf.slice(0, w.at);
}

/** True when `bytes` is a record of this layout (else it is one of the previous layout, msgpack). */
export function isProfileRecord(bytes: Uint8Array): boolean {
  return bytes.length > 0 && bytes[0] === PROFILE_MAGIC;
}

/**
 * The state of a record written by encodeProfile. Fields the record does not
 * have (written before they existed) take newUserState's default; an absent
 * optional field stays absent. Throws STORAGE_FAILED on a record that is not
 * in this layout or is cut short.
 */
export function decodeProfile(bytes: Uint8Array): UserState {
  if (!isProfileRecord(bytes)) throw bad("not a profile record of the binary layout");
  const r = new Reader(bytes);
  r.at = 1;
  const version = r.buf[r.at++];
  if (version !== PROFILE_LAYOUT_VERSION) throw bad(`layout version ${version}, this engine reads ${PROFILE_LAYOUT_VERSION}`);
  const F = r.varint();
  if (F > NAMES.length) throw bad(`record has ${F} fields, this engine knows ${NAMES.length} (written by a newer engine?)`);
  const maskAt = r.at;
  r.at += Math.ceil(F / 8);
  const s = newUserState() as unknown as Record<string, unknown>;
  for (let i = 0; i < F; i++) {
    if ((r.buf[maskAt + (i >> 3)]! & (1 << (i & 7))) === 0) {
      delete s[NAMES[i]!];
      continue;
    }
    s[NAMES[i]!] = readField(r, KINDS[i]!);
  }
  if (r.at !== bytes.length) throw bad(`${bytes.length - r.at} bytes after the last field`);
  return s as unknown as UserState;
}
