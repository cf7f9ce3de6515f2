/**
 * Seeded fuzzer for the event gate (src/wire/event-validation.ts) and the
 * engine behind it. Payload families:
 *   valid     well-formed events of "fuzz" users;
 *   field     one field of a valid event made bad (or made odd but legal), with
 *             the dead-letter reason the README promises ("OK" = applied);
 *   bitflip, truncate, splice, concat, edit, random
 *             byte-level damage of valid encodings, or plain random bytes
 *             (no single expected verdict: decodeEvent must return one).
 * The module is reusable (test/bad-input.test.ts); run as a script it is the
 * long fuzz run:
 *
 *   npx tsx bench/fuzz-events.ts [--payloads 1000000] [--engine-payloads 200000] [--seed 1]
 *                                [--bystanders 300] [--partitions 8] [--workers 2] [--time-limit-s 900] [--no-record]
 *
 * Phase 1 decodes --payloads payloads in process (counts by reason; exceptions
 * and verdicts that differ from a field mutation's expected reason must be 0).
 * Phase 2 preloads --engine-payloads payloads, interleaved with good events of
 * bystander users, into a private nats-server and lets an engine consume them;
 * then applied + dead-lettered must equal stored, the applied count and the
 * dead letters per reason must equal the in-process verdicts, the engine must
 * still be ready, and every bystander profile must equal the reference built
 * with applyEvent from its good events alone.
 *
 * CLUSTER_UNSUPPORTED never comes out here: only a cluster node's shard gives
 * it (the engine phase runs one engine without --cluster); test/cluster.test.ts
 * checks it.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { isDeepStrictEqual, parseArgs } from "node:util";
import { compileProfileOptions } from "../src/actors/profile-options.js";
import { applyEvent, newUserState, profileView, type UserState } from "../src/actors/user-profile.js";
import { partitionOf } from "../src/wire/partition.js";
import { DeadLetterReason, MIN_TIMESTAMP_MS, decodeEvent, type EventValidationOptions } from "../src/wire/event-validation.js";
import { EventType, pb, type Event, type IEvent } from "../src/wire/proto.js";
import { seededRandom } from "../src/models/seeded-random.js";

export type FuzzKind = "valid" | "field" | "bitflip" | "truncate" | "splice" | "concat" | "edit" | "random";
export type Verdict = DeadLetterReason | "OK";

export interface FuzzPayload {
  bytes: Uint8Array;
  /** The partition whose subject it is published on. */
  partition: number;
  kind: FuzzKind;
  /** For "valid" and "field": the verdict the README promises. */
  expect?: Verdict;
  /** For "field": which mutation. */
  mutation?: string;
}

export interface FuzzContext {
  seed: number;
  partitions: number;
  /** Users whose events may be valid (or become valid by accident). */
  users: readonly string[];
  /** Users (bystanders) that get only mutations with a non-OK expected verdict; none when empty. */
  victims?: readonly string[];
  /** Event times of valid events: baseMs + i ms, so keep baseMs + count well before now. */
  baseMs: number;
  /** The validating engine's clock and options (currency should be set, e.g. "GBP"). */
  nowMs: number;
  validation: EventValidationOptions;
  /** Largest payload generated for TOO_LARGE, bytes (keep under the NATS max_payload). Default maxEventBytes + 16 KiB. */
  maxOversizeBytes?: number;
}

const enc = (e: IEvent): Uint8Array => pb.Event.encode(e).finish();

/** Invalid UTF-8 sequences, 3 bytes each (so they replace a 3-byte ASCII marker). */
const BAD_UTF8: readonly (readonly number[])[] = [
  [0xff, 0xfe, 0xfd], // never valid
  [0xed, 0xa0, 0x80], // a UTF-16 surrogate encoded as UTF-8
  [0xc0, 0xaf, 0x41], // overlong "/"
  [0xe2, 0x82, 0x41], // truncated 3-byte sequence
  [0x80, 0x80, 0x80], // lone continuation bytes
  [0xf8, 0x88, 0x80], // 5-byte form
];
const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1a, 0x08, 0x20, 0x49, 0x82] as const;

interface Rng {
  (): number;
  int(n: number): number;
  pick<T>(a: readonly T[]): T;
}

function rng(seed: number): Rng {
  const r = seededRandom(seed) as Rng;
  r.int = (n) => Math.floor(r() * n);
  r.pick = (a) => a[r.int(a.length)]!;
  return r;
}

const TYPES = [EventType.VIEW, EventType.CLICK, EventType.SEARCH, EventType.ADD_TO_CART, EventType.REMOVE_FROM_CART, EventType.FAVORITE,
  EventType.PURCHASE, EventType.REFUND, EventType.REVIEW, EventType.REC_IMPRESSION, EventType.REC_CLICK] as const;

/** A valid event of `user` at `t` (every optional field sometimes set). */
export function validEvent(r: Rng, id: string, user: string, t: number): IEvent {
  const type = r() < 0.5 ? EventType.VIEW : r.pick(TYPES);
  const e: IEvent = { eventId: id, userId: user, type, timestampMs: t };
  if (type === EventType.SEARCH) e.searchQuery = r.pick(["red shoes", "tv", "Zoë's ☂", "x".repeat(1 + r.int(60))]);
  else e.itemId = `it${r.int(400)}`;
  if (r() < 0.7) e.categoryId = `c${r.int(30)}`;
  if (r() < 0.2) e.categoryPath = "home.kitchen.knives";
  if (r() < 0.4) e.brand = r.pick(["Acme", "acme", "Bosch", "Ünï"]);
  if (type === EventType.PURCHASE || type === EventType.REFUND || type === EventType.ADD_TO_CART || r() < 0.1) {
    e.price = Math.round(r() * 50000) / 100;
    if (r() < 0.6) e.quantity = 1 + r.int(5);
    if (r() < 0.5) e.currency = "GBP";
  }
  if (type === EventType.PURCHASE && r() < 0.7) e.orderId = `o${r.int(50)}`;
  if (r() < 0.3) e.sessionId = `s${r.int(20)}`;
  if (type === EventType.REVIEW) {
    e.rating = r.int(6);
    if (r() < 0.5) e.reviewText = "fine ".repeat(1 + r.int(20));
  }
  if (type === EventType.REC_IMPRESSION || type === EventType.REC_CLICK) {
    e.recRequestId = `rq${r.int(1000)}`;
    e.modelVersion = r() < 0.5 ? "deepfm@1" : "";
  }
  if (r() < 0.1) e.attributes = Object.fromEntries(Array.from({ length: 1 + r.int(5) }, (_, k) => [`k${k}`, `v${r.int(9)}`]));
  return e;
}

/** Replaces the ASCII marker "@@@" (first occurrence) in `bytes` with an invalid UTF-8 sequence. */
function withBadUtf8(bytes: Uint8Array, r: Rng): Uint8Array {
  const i = Buffer.from(bytes).indexOf("@@@");
  if (i < 0) throw new Error("fuzz: marker not found");
  const out = bytes.slice();
  out.set(r.pick(BAD_UTF8), i);
  return out;
}

/** A varint field `field` with the value given as raw 7-bit groups (for values a JS number cannot carry). */
function rawVarintField(field: number, groups: number[]): Uint8Array {
  const bytes = [(field << 3) | 0];
  groups.forEach((g, i) => bytes.push(i < groups.length - 1 ? g | 0x80 : g));
  return Uint8Array.from(bytes);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

type Mutation = (e: IEvent, c: FuzzContext, r: Rng) => { bytes?: Uint8Array; event?: IEvent; partition?: number; expect: Verdict };

/**
 * Field-level mutations: name → mutation of a valid event and the verdict
 * the README promises. Names with "(legal" expect OK; see forVictims for which
 * may be aimed at a bystander.
 */
const MUTATIONS: Record<string, Mutation> = {
  "type out of range": (e, _c, r) => ({ event: { ...e, type: r.pick([0, EventType.SOCIAL_NOTICE + 1, EventType.SOCIAL_NOTICE + 2, 99, 2 ** 31 - 1, -1]) as EventType }, expect: "UNKNOWN_TYPE" }),
  "identify without primary": (e) => ({ event: { ...e, type: EventType.IDENTIFY, primaryUserId: "" }, expect: "IDENTIFY_MISSING_PRIMARY" }),
  "identify with itself": (e) => ({ event: { ...e, type: EventType.IDENTIFY, primaryUserId: e.userId! }, expect: "IDENTIFY_SAME_ID" }),
  "follow without target": (e, _c, r) => ({ event: { ...e, type: r.pick([EventType.FOLLOW, EventType.UNFOLLOW]), targetUserId: "" }, expect: "MISSING_TARGET" }),
  "follow of oneself": (e, _c, r) => ({ event: { ...e, type: r.pick([EventType.FOLLOW, EventType.UNFOLLOW]), targetUserId: e.userId! }, expect: "SELF_TARGET" }),
  "social notice from outside": (e) => ({ event: { ...e, type: EventType.SOCIAL_NOTICE, forwarded: false, socialNotice: { kind: 1, fromKey: "x" } }, expect: "BAD_NOTICE" }),
  "social notice batch with a bad notice": (e, _c, r) => ({
    event: { ...e, type: EventType.SOCIAL_NOTICE, forwarded: r() < 0.5, socialNotices: [{ kind: 1, fromKey: "x", toKey: "y" }, r.pick([{ kind: 9 as never, fromKey: "x", toKey: "y" }, { kind: 2, fromKey: "x" }, { kind: 4, toKey: "y" }])] },
    expect: "BAD_NOTICE",
  }),
  "forwarded from outside (no engine signature)": (e) => ({ event: { ...e, forwarded: true }, expect: "FORGED_INTERNAL" }),
  "hand-over from outside": (e, _c, r) => ({ event: { ...e, type: EventType.IDENTITY_HANDOVER, mergeId: r() < 0.5 ? "m" : "", handoverState: new Uint8Array([123, 125]) }, expect: "BAD_HANDOVER" }),
  "price NaN/Infinity": (e, _c, r) => ({ event: { ...e, price: r.pick([NaN, Infinity, -Infinity]) }, expect: "BAD_PRICE" }),
  "price negative": (e, _c, r) => ({ event: { ...e, price: r.pick([-0.01, -1, -1e300, -Number.MIN_VALUE]) }, expect: "BAD_PRICE" }),
  "price absurd": (e, _c, r) => ({ event: { ...e, price: r.pick([1e9 + 0.01, 1e15, 1e300, Number.MAX_VALUE]) }, expect: "BAD_PRICE" }),
  "price edge (legal)": (e, _c, r) => ({ event: { ...e, price: r.pick([1e9, Number.MIN_VALUE, -0, 0]) }, expect: "OK" }),
  "quantity huge": (e, _c, r) => ({ event: { ...e, quantity: r.pick([1e6 + 1, 2 ** 31, 2 ** 32 - 1]) }, expect: "BAD_QUANTITY" }),
  "quantity negative (uint32 wraps)": (e, _c, r) => ({ event: { ...e, quantity: r.pick([-1, -1000]) }, expect: "BAD_QUANTITY" }),
  "quantity edge (legal)": (e) => ({ event: { ...e, quantity: 1e6 }, expect: "OK" }),
  "rating above 5": (e, _c, r) => ({ event: { ...e, rating: r.pick([6, 255, 2 ** 32 - 1]) }, expect: "BAD_RATING" }),
  "timestamp zero/absent": (e, _c, r) => {
    const x: IEvent = { ...e, timestampMs: 0 };
    if (r() < 0.5) delete x.timestampMs;
    return { event: x, expect: "BAD_TIMESTAMP" };
  },
  "timestamp far past": (e, _c, r) => ({ event: { ...e, timestampMs: r.pick([1, 86_400_000, MIN_TIMESTAMP_MS - 1, Date.UTC(1999, 11, 31)]) }, expect: "BAD_TIMESTAMP" }),
  "timestamp far future": (e, c, r) => ({
    event: { ...e, timestampMs: r.pick([c.nowMs + c.validation.maxFutureSkewMs + 86_400_000, Date.UTC(2200, 0, 1), 2 ** 53 - 1]) },
    expect: "BAD_TIMESTAMP",
  }),
  "timestamp 2^64-1 (raw varint)": (e) => {
    const x = { ...e };
    delete x.timestampMs;
    return { bytes: concat(enc(x), rawVarintField(4, [...Array<number>(9).fill(0x7f), 0x01])), expect: "BAD_TIMESTAMP" };
  },
  "timestamp 2000-01-01 (legal)": (e) => ({ event: { ...e, timestampMs: MIN_TIMESTAMP_MS }, expect: "OK" }),
  "event id empty/absent": (e, _c, r) => {
    const x: IEvent = { ...e, eventId: "" };
    if (r() < 0.5) delete x.eventId;
    return { event: x, expect: "MISSING_EVENT_ID" };
  },
  "user id empty/absent": (e, c, r) => {
    const x: IEvent = { ...e, userId: "" };
    if (r() < 0.5) delete x.userId;
    return { event: x, partition: r.int(c.partitions), expect: "MISSING_USER_ID" };
  },
  "event id over 128": (e, _c, r) => ({ event: { ...e, eventId: "e".repeat(129 + r.int(200)) }, expect: "BAD_ID" }),
  "user id over 256": (e, c, r) => {
    const u = "u".repeat(257 + r.int(300));
    return { event: { ...e, userId: u }, partition: partitionOf(u, c.partitions), expect: "BAD_ID" };
  },
  "event id invalid UTF-8": (e, _c, r) => ({ bytes: withBadUtf8(enc({ ...e, eventId: `x@@@${r.int(1e6)}` }), r), expect: "BAD_ID" }),
  "user id invalid UTF-8": (e, c, r) => ({ bytes: withBadUtf8(enc({ ...e, userId: `fz@@@${r.int(99)}` }), r), partition: r.int(c.partitions), expect: "BAD_ID" }),
  "item id invalid UTF-8 (legal: kept as U+FFFD)": (e, _c, r) => ({ bytes: withBadUtf8(enc({ ...e, type: EventType.VIEW, itemId: "@@@it" }), r), expect: "OK" }),
  "item id missing": (e, _c, r) => ({ event: { ...e, type: r.pick(TYPES.filter((t) => t !== EventType.SEARCH)), itemId: "" }, expect: "MISSING_ITEM_ID" }),
  "search without query": (e) => ({ event: { ...e, type: EventType.SEARCH, searchQuery: "" }, expect: "MISSING_QUERY" }),
  "string field too long": (e, _c, r) => {
    const f = r.pick(["itemId", "categoryId", "brand", "sessionId", "orderId", "categoryPath", "searchQuery", "reviewText"] as const);
    const limit = f === "categoryPath" || f === "searchQuery" ? 1024 : f === "reviewText" ? 16 * 1024 : 256;
    return { event: { ...e, [f]: "z".repeat(limit + 1 + r.int(100)) }, expect: "FIELD_TOO_LONG" };
  },
  "ids at their limits (legal)": (e, c) => {
    const u = `${e.userId}-${"w".repeat(Math.max(0, 250 - e.userId!.length))}`;
    return { event: { ...e, eventId: "e".repeat(128), userId: u, itemId: "é".repeat(256) }, partition: partitionOf(u, c.partitions), expect: "OK" };
  },
  "too many attributes": (e, _c, r) => ({
    event: { ...e, attributes: Object.fromEntries(Array.from({ length: 33 + r.int(40) }, (_, k) => [`a${k}`, "v"])) }, expect: "FIELD_TOO_LONG",
  }),
  // Logged feedback whose propensity is legal goes on to be judged against the served replies (UNKNOWN_REC_REQUEST here):
  // not a decodeEvent verdict, so only the propensities decodeEvent refuses are fuzzed.
  "rec propensity outside (0, 1]": (e, _c, r) => ({
    event: { ...e, type: r.pick([EventType.REC_IMPRESSION, EventType.REC_CLICK]), itemId: e.itemId || "it1", recRequestId: "rq1", recPropensity: r.pick([0, -0.5, 1.0000001, 2, NaN, Infinity, -Infinity]) },
    expect: "BAD_PROPENSITY",
  }),
  "rec propensity on another type": (e, _c, r) => ({
    event: { ...e, type: r.pick([EventType.VIEW, EventType.PURCHASE]), itemId: e.itemId || "it1", recRequestId: "rq1", recPropensity: 0.5 }, expect: "BAD_PROPENSITY",
  }),
  "rec propensity without request id": (e) => ({ event: { ...e, type: EventType.REC_IMPRESSION, itemId: e.itemId || "it1", recRequestId: "", recPropensity: 0.5 }, expect: "BAD_PROPENSITY" }),
  "32 attributes (legal)": (e) => ({ event: { ...e, attributes: Object.fromEntries(Array.from({ length: 32 }, (_, k) => [`a${k}`, "v"])) }, expect: "OK" }),
  "wrong currency": (e, _c, r) => ({ event: { ...e, currency: r.pick(["USD", "EUR", "gbp", "GB", "€"]) }, expect: "CURRENCY_MISMATCH" }),
  "wrong partition": (e, c, r) => ({ event: e, partition: (partitionOf(e.userId!, c.partitions) + 1 + r.int(c.partitions - 1)) % c.partitions, expect: "WRONG_PARTITION" }),
  "oversized payload": (e, c, r) => {
    const max = c.maxOversizeBytes ?? c.validation.maxEventBytes + 16_384;
    const n = c.validation.maxEventBytes + 1 + r.int(max - c.validation.maxEventBytes);
    return { event: { ...e, attributes: { pad: "p".repeat(n) } }, expect: "TOO_LARGE" };
  },
  "unknown fields appended (legal)": (e, _c, r) => ({
    bytes: concat(enc(e), Uint8Array.from([(100 << 3) & 0x7f | 0x80, 100 >> 4, r.int(128)]), Uint8Array.from([0xa2, 0x06, 0x02, 0x68, 0x69])), expect: "OK",
  }),
  "invalid wire type": (e, _c, r) => ({ bytes: concat(enc(e), Uint8Array.from([(r.int(15) + 1) << 3 | r.pick([6, 7])])), expect: "MALFORMED" }),
  "length past the end": (e) => ({ bytes: concat(enc(e), Uint8Array.from([0x2a, 0x7f, 0x61])), expect: "MALFORMED" }),
};
export const MUTATION_NAMES = Object.keys(MUTATIONS);
/** Mutations that may be aimed at a bystander: never accepted, and the user id is left alone. */
const forVictims = (name: string): boolean => !name.includes("(legal") && !name.startsWith("user id");

/** Shares of the payload families (valid, field, bitflip, truncate, splice, concat, edit, random). */
const KIND_WEIGHTS: readonly [FuzzKind, number][] = [
  ["valid", 0.14], ["field", 0.4], ["bitflip", 0.14], ["truncate", 0.09], ["splice", 0.08], ["concat", 0.03], ["edit", 0.05], ["random", 0.07],
];

/**
 * `count` seeded payloads. The i-th valid base event has event id
 * `fz<seed>-<i>` and time baseMs + i (the fuzz users' own, in order).
 */
export function* fuzzPayloads(count: number, c: FuzzContext): Generator<FuzzPayload> {
  const r = rng(c.seed);
  const P = c.partitions;
  const victims = c.victims ?? [];
  const base = (i: number, user?: string): IEvent => validEvent(r, `fz${c.seed}-${i}`, user ?? r.pick(c.users), c.baseMs + i);
  const oversizeEvery = 500; // TOO_LARGE payloads are big: keep them rare
  for (let i = 0; i < count; i++) {
    let x = r();
    let kind: FuzzKind = "random";
    for (const [k, w] of KIND_WEIGHTS) {
      if (x < w) {
        kind = k;
        break;
      }
      x -= w;
    }
    if (kind === "valid") {
      const e = base(i);
      yield { bytes: enc(e), partition: partitionOf(e.userId!, P), kind, expect: "OK" };
      continue;
    }
    if (kind === "field") {
      let name = i % oversizeEvery === 0 ? "oversized payload" : r.pick(MUTATION_NAMES);
      while (name === "oversized payload" && i % oversizeEvery !== 0) name = r.pick(MUTATION_NAMES);
      const m = MUTATIONS[name]!;
      const e = base(i);
      // A bad mutation that leaves the user id alone is aimed at a bystander half the time.
      const user = forVictims(name) && victims.length > 0 && r() < 0.5 ? r.pick(victims) : e.userId!;
      const out = m({ ...e, userId: user }, c, r);
      const bytes = out.bytes ?? enc(out.event!);
      yield { bytes, partition: out.partition ?? partitionOf(user, P), kind, expect: out.expect, mutation: name };
      continue;
    }
    if (kind === "random") {
      const n = r() < 0.05 ? 0 : r.int(r() < 0.8 ? 64 : 600);
      const b = new Uint8Array(n);
      for (let k = 0; k < n; k++) b[k] = r.int(256);
      yield { bytes: b, partition: r.int(P), kind };
      continue;
    }
    const e = base(i);
    const a = enc(e);
    const p = partitionOf(e.userId!, P);
    let b: Uint8Array;
    if (kind === "bitflip") {
      b = a.slice();
      const flips = 1 + r.int(8);
      for (let k = 0; k < flips; k++) b[r.int(b.length)]! ^= 1 << r.int(8);
    } else if (kind === "truncate") {
      b = a.slice(0, r.int(a.length));
    } else if (kind === "splice") {
      const other = enc(base(i));
      b = concat(a.subarray(0, r.int(a.length + 1)), other.subarray(r.int(other.length + 1)));
    } else if (kind === "concat") {
      // Protobuf merge: the second message's fields win, maps merge.
      b = concat(a, enc(base(i, e.userId!)));
    } else {
      b = a.slice();
      const edits = 1 + r.int(3);
      for (let k = 0; k < edits; k++) {
        const at = r.int(b.length + 1);
        const op = r.int(3);
        const v = r() < 0.7 ? r.pick(INTERESTING) : r.int(256);
        if (op === 0 && b.length > 0) b[Math.min(at, b.length - 1)] = v;
        else if (op === 1) b = concat(b.subarray(0, at), Uint8Array.of(v), b.subarray(at));
        else b = concat(b.subarray(0, at), b.subarray(at + 1));
      }
    }
    yield { bytes: b, partition: p, kind };
  }
}

export interface DecodeFuzzStats {
  payloads: number;
  ok: number;
  byReason: Map<Verdict, number>;
  byKind: Map<FuzzKind, Map<Verdict, number>>;
  /** decodeEvent threw (must be 0); the first few as samples. */
  exceptions: number;
  exceptionSamples: { payload: FuzzPayload; error: string }[];
  /** A field mutation (or a valid event) got another verdict than the expected one (must be 0). */
  mismatches: number;
  mismatchSamples: { payload: FuzzPayload; got: Verdict; detail: string }[];
  /** A decoded-OK event that applyEvent threw on or that left a non-finite money total (must be 0). */
  applyFailures: number;
  applyFailureSamples: { payload: FuzzPayload; error: string }[];
  /** Decoded-OK events of a victim (bystander) user (must be 0). */
  victimsHit: number;
  seconds: number;
}

function bump<K>(m: Map<K, number>, k: K, n = 1): void {
  m.set(k, (m.get(k) ?? 0) + n);
}

/** The verdict of one payload. */
export function verdict(p: FuzzPayload, c: FuzzContext): { v: Verdict; detail: string; event?: Event } {
  const r = decodeEvent(p.bytes, p.partition, c.nowMs, c.validation);
  return r.ok ? { v: "OK", detail: "", event: r.event } : { v: r.reason, detail: r.detail };
}

/**
 * Decodes `payloads` in process and checks: no exception, expected verdicts
 * of field mutations, and applyEvent on each accepted event (into per-user
 * states, all fuzz users) neither throws nor makes money non-finite.
 * Stops early when `deadlineMs` (epoch) passes.
 */
export function runDecodeFuzz(payloads: Iterable<FuzzPayload>, c: FuzzContext, deadlineMs = Infinity): DecodeFuzzStats {
  const t0 = performance.now();
  const s: DecodeFuzzStats = {
    payloads: 0, ok: 0, byReason: new Map(), byKind: new Map(), exceptions: 0, exceptionSamples: [], mismatches: 0, mismatchSamples: [],
    applyFailures: 0, applyFailureSamples: [], victimsHit: 0, seconds: 0,
  };
  const states = new Map<string, UserState>();
  const victims = new Set(c.victims ?? []);
  const profile = compileProfileOptions();
  for (const p of payloads) {
    if (s.payloads % 4096 === 0 && Date.now() > deadlineMs) break;
    s.payloads++;
    let v: ReturnType<typeof verdict>;
    try {
      v = verdict(p, c);
    } catch (err) {
      if (s.exceptions++ < 20) s.exceptionSamples.push({ payload: p, error: String((err as Error)?.stack ?? err) });
      continue;
    }
    bump(s.byReason, v.v);
    let k = s.byKind.get(p.kind);
    if (!k) s.byKind.set(p.kind, (k = new Map()));
    bump(k, v.v);
    if (p.expect !== undefined && p.expect !== v.v && s.mismatches++ < 50) s.mismatchSamples.push({ payload: p, got: v.v, detail: v.detail });
    if (v.event) {
      s.ok++;
      const e = v.event;
      if (victims.has(e.userId)) s.victimsHit++;
      let st = states.get(e.userId);
      if (!st) {
        if (states.size > 10_000) states.clear();
        states.set(e.userId, (st = newUserState()));
      }
      try {
        applyEvent(st, e, profile);
        if (!Number.isFinite(st.purchased) || !Number.isFinite(st.refunded)) throw new Error(`money not finite: ${st.purchased} / ${st.refunded}`);
      } catch (err) {
        if (s.applyFailures++ < 20) s.applyFailureSamples.push({ payload: p, error: String(err) });
      }
    }
  }
  s.seconds = (performance.now() - t0) / 1000;
  return s;
}

/** Hex of the first bytes, for reports. */
export function hexHead(b: Uint8Array, n = 48): string {
  return Buffer.from(b.subarray(0, n)).toString("hex") + (b.length > n ? `… (${b.length} B)` : "");
}

// ---------------------------------------------------------------- the long run

/** Good events of bystander users: the i-th one of a stream (user round-robin). */
export function bystanderEvent(prefix: string, bystanders: readonly string[], i: number, baseMs: number): IEvent {
  const r = rng(1_000_003 + i);
  const u = bystanders[i % bystanders.length]!;
  return validEvent(r, `${prefix}-by-${i}`, u, baseMs + i * 1000);
}

/** Reference states: good events applied in order with applyEvent. */
export function referenceStates(events: Iterable<IEvent>, profile: Parameters<typeof applyEvent>[2]): Map<string, UserState> {
  const out = new Map<string, UserState>();
  for (const e of events) {
    const d = pb.Event.decode(enc(e));
    let s = out.get(d.userId);
    if (!s) out.set(d.userId, (s = newUserState()));
    applyEvent(s, d, profile);
  }
  return out;
}

async function main(): Promise<void> {
  const { values: a } = parseArgs({
    options: {
      payloads: { type: "string", default: "1000000" },
      "engine-payloads": { type: "string", default: "200000" },
      seed: { type: "string", default: "1" },
      bystanders: { type: "string", default: "300" },
      partitions: { type: "string", default: "8" },
      workers: { type: "string", default: "2" },
      "time-limit-s": { type: "string", default: "900" },
      "no-record": { type: "boolean", default: false },
    },
  });
  const N = Number(a.payloads);
  const NE = Number(a["engine-payloads"]);
  const SEED = Number(a.seed);
  const B = Number(a.bystanders);
  const P = Number(a.partitions);
  const W = Number(a.workers);
  const deadline = Date.now() + Number(a["time-limit-s"]) * 1000;
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const { printTable, appendResults } = await import("./report.js");

  // An internal key as an engine has one (src/bus/internal-key.ts): a forwarded event needs its signature.
  const validation: EventValidationOptions = { partitions: P, maxEventBytes: 65_536, maxFutureSkewMs: 86_400_000, currency: "GBP", internalKey: randomBytes(32) };
  const users = Array.from({ length: 2000 }, (_, k) => `fz-${k}`);
  const bystanders = Array.from({ length: B }, (_, k) => `BYSTANDER-${k}`);
  const BASE = Date.UTC(2024, 0, 1);
  const ctx = (seed: number): FuzzContext => ({ seed, partitions: P, users, victims: bystanders, baseMs: BASE, nowMs: Date.now(), validation });

  // Phase 1: in process.
  log(`phase 1: ${N} payloads through decodeEvent...`);
  const c1 = ctx(SEED);
  const s1 = runDecodeFuzz(fuzzPayloads(N, c1), c1, deadline - 0.5 * (deadline - Date.now()));
  log(`phase 1: ${s1.payloads} payloads in ${s1.seconds.toFixed(1)} s; exceptions ${s1.exceptions}, mismatches ${s1.mismatches}`);
  for (const m of s1.mismatchSamples.slice(0, 5)) log(`  mismatch ${m.payload.mutation}: expected ${m.payload.expect}, got ${m.got} (${m.detail}) ${hexHead(m.payload.bytes)}`);
  for (const x of s1.exceptionSamples.slice(0, 5)) log(`  exception: ${x.error} ${hexHead(x.payload.bytes)}`);

  // Phase 2: through an engine.
  const { connect } = await import("nats");
  const { startNatsServer } = await import("../src/bus/nats-server-launcher.js");
  const { ensureStreams } = await import("../src/bus/streams.js");
  const { subjects } = await import("../src/bus/subjects.js");
  const { Engine } = await import("../src/engine.js");
  const work = mkdtempSync(join(tmpdir(), "portrait-fuzz-"));
  const server = await startNatsServer({ storeDir: join(work, "nats") });
  const nc = await connect({ servers: server.url, noAsyncTraces: true });
  const prefix = "fuzz";
  const s = subjects(prefix);
  const c2 = ctx(SEED + 1);
  const expected = new Map<Verdict, number>();
  const good: IEvent[] = [];
  let published = 0;
  let byStray = 0;
  const t2 = performance.now();
  let engine: import("../src/engine.js").Engine | undefined;
  const rows: string[][] = [];
  const problems: string[] = [];
  try {
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, s, { eventRetentionMs: 0, duplicateWindowMs: 120_000, dlqRetentionMs: 86_400_000 });
    log(`phase 2: preloading ${NE} fuzz payloads + bystander events (${B} bystanders)...`);
    let gi = 0;
    let sinceFlush = 0;
    const bystanderSet = new Set(bystanders);
    for (const p of fuzzPayloads(NE, c2)) {
      const v = verdict(p, c2);
      bump(expected, v.v);
      if (v.event && bystanderSet.has(v.event.userId)) byStray++;
      nc.publish(s.events(p.partition), p.bytes);
      published++;
      if (published % 10 === 0) {
        const e = bystanderEvent(prefix, bystanders, gi++, BASE);
        good.push(e);
        bump(expected, "OK");
        nc.publish(s.events(partitionOf(e.userId!, P)), enc(e));
        published++;
      }
      if (++sinceFlush >= 5000) {
        sinceFlush = 0;
        await nc.flush();
      }
    }
    await nc.flush();
    const waitUntil = Date.now() + 120_000;
    let stored = 0;
    while ((stored = (await jsm.streams.info(s.eventStream)).state.messages) < published && Date.now() < waitUntil) await new Promise((r) => setTimeout(r, 100));
    log(`phase 2: published ${published}, stored ${stored}; starting the engine...`);
    const tEngine = performance.now();
    engine = await Engine.start({
      natsUrl: server.url, embeddedNats: "never", subjectPrefix: prefix, partitions: P, workers: W, dataDir: join(work, "engine"),
      httpPort: -1, logLevel: "error", currency: "GBP",
    });
    const m = engine.metrics;
    let applied = 0;
    let dead = 0;
    let skipped = 0;
    let lastLog = Date.now();
    for (;;) {
      applied = await m.total(m.eventsApplied);
      dead = await m.total(m.deadLetters);
      skipped = await m.total(m.eventsSkipped);
      if (applied + dead + skipped >= stored) break;
      if (Date.now() > deadline) {
        problems.push(`time limit: the engine handled ${applied + dead + skipped} of ${stored}`);
        break;
      }
      if (Date.now() - lastLog > 10_000) {
        log(`engine: applied ${applied}, dead-lettered ${dead} of ${stored}`);
        lastLog = Date.now();
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const engineSeconds = (performance.now() - tEngine) / 1000;
    const ready = engine.ready;
    const deadBy = new Map<string, number>();
    for (const v of (await m.deadLetters.get()).values) bump(deadBy, String(v.labels.reason), v.value);
    const dlqStored = (await jsm.streams.info(s.dlqStream)).state.messages;

    // Bystanders: every profile equals the reference from their good events alone.
    const ref = referenceStates(good, engine.config.profile);
    const asOf = BASE + 86_400_000 * 30;
    const { PortraitClient } = await import("../src/client/portrait-client.js");
    const client = new PortraitClient(nc, { subjectPrefix: prefix, partitions: P, requestTimeoutMs: 30_000 });
    let equal = 0;
    for (const u of bystanders) {
      const want = profileView(u, ref.get(u) ?? newUserState(), asOf, engine.config.profile);
      const got = await client.getProfile(u, { asOfMs: asOf }).catch((err: unknown) => err as Error);
      if (!(got instanceof Error)) delete got.predictions;
      if (!(got instanceof Error) && isDeepStrictEqual(got, want)) equal++;
      else if (problems.length < 20) problems.push(`bystander ${u} differs: ${got instanceof Error ? got.message : JSON.stringify({ counts: got.counts, money: got.money })} vs ${JSON.stringify({ counts: want.counts, money: want.money })}`);
    }

    if (s1.exceptions > 0) problems.push(`${s1.exceptions} decodeEvent exceptions`);
    if (s1.mismatches > 0) problems.push(`${s1.mismatches} verdicts differ from the expected reason`);
    if (s1.applyFailures > 0) problems.push(`${s1.applyFailures} applyEvent failures`);
    if (s1.victimsHit > 0) problems.push(`${s1.victimsHit} accepted events of bystanders in phase 1`);
    if (!ready) problems.push("engine not ready after the run");
    if (applied + dead !== stored || skipped !== 0) problems.push(`applied ${applied} + dead-lettered ${dead} + skipped ${skipped} != stored ${stored}`);
    if (applied !== (expected.get("OK") ?? 0)) problems.push(`applied ${applied}, in-process verdicts OK ${expected.get("OK") ?? 0}`);
    for (const [reason, n] of expected) if (reason !== "OK" && (deadBy.get(reason) ?? 0) !== n) problems.push(`${reason}: engine ${deadBy.get(reason) ?? 0}, in-process ${n}`);
    if (dlqStored !== dead) problems.push(`DLQ stream holds ${dlqStored}, dead letters counted ${dead}`);

    const reasons = [...new Set([...s1.byReason.keys(), ...expected.keys()])].sort((x, y) => (x === "OK" ? -1 : y === "OK" ? 1 : x < y ? -1 : 1));
    for (const r of reasons) rows.push([r, String(s1.byReason.get(r) ?? 0), String(expected.get(r) ?? 0), r === "OK" ? String(applied) : String(deadBy.get(r) ?? 0)]);
    rows.push(["total", String(s1.payloads), String(published), String(applied + dead)]);
    const kinds = [...s1.byKind.entries()].map(([k, v]) => `${k} ${[...v.values()].reduce((x, y) => x + y, 0)}`).join(", ");
    const notes = [
      `- Phase 1 (in process): ${s1.payloads} seeded payloads (seed ${SEED}) through decodeEvent in ${s1.seconds.toFixed(1)} s (${Math.round(s1.payloads / s1.seconds)}/s); families: ${kinds}. ` +
        `Exceptions ${s1.exceptions}; field mutations whose verdict differs from the documented reason ${s1.mismatches}; accepted events that made applyEvent throw or money non-finite ${s1.applyFailures}; accepted events of bystanders ${s1.victimsHit}.`,
      `- Phase 2 (engine): ${published - good.length} fuzz payloads (seed ${SEED + 1}) + ${good.length} good events of ${B} bystanders, preloaded by core publish into a private nats-server (${P} partitions), ` +
        `consumed by an engine (${W} shard workers, bundled models, currency GBP) in ${engineSeconds.toFixed(1)} s: stored ${stored}, applied ${applied}, dead-lettered ${dead}, skipped ${skipped}; DLQ stream ${dlqStored}; engine ready after: ${ready}; ` +
        `bystander profiles equal to the applyEvent reference: ${equal} of ${B}; fuzz payloads that decoded as a bystander's valid event: ${byStray}. Half of the bad field mutations were aimed at bystanders.`,
      `- Columns: verdicts in process (phase 1), verdicts in process of the phase-2 stream, what the engine did with it (applied / portrait_ingest_dead_letters_total{reason}).`,
      problems.length === 0 ? "- Every check passed." : `- PROBLEMS: ${problems.join("; ")}`,
    ];
    log(`phase 2 done in ${((performance.now() - t2) / 1000).toFixed(1)} s`);
    const header = ["verdict", "phase 1 decodeEvent", "phase 2 expected", "phase 2 engine"];
    printTable("bad-input fuzz", header, rows);
    for (const n of notes) console.log(n);
    if (!a["no-record"]) {
      appendResults("bad-input fuzz", `npx tsx bench/fuzz-events.ts --payloads ${N} --engine-payloads ${NE} --seed ${SEED} --bystanders ${B} --partitions ${P} --workers ${W}`, header, rows, notes);
    }
    if (problems.length > 0) process.exitCode = 1;
  } finally {
    await engine?.close();
    await nc.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
