import { isDeepStrictEqual } from "node:util";
import { describe, expect, it } from "vitest";
import { fnv1a32, partitionOf } from "../src/wire/partition.js";
import { decodeEvent, type EventValidationOptions } from "../src/wire/event-validation.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";
import { decodeShopEvent, shopEvent } from "../src/wire/shop-event.js";
import { fuzzPayloads, type FuzzContext } from "../bench/fuzz-events.js";

const P = 8;
const o: EventValidationOptions = { partitions: P, maxEventBytes: 4096, maxFutureSkewMs: 60_000, currency: "GBP" };
const now = Date.UTC(2024, 0, 1);
const base: IEvent = { eventId: "e1", userId: "alice", type: EventType.PURCHASE, timestampMs: now - 1000, itemId: "sku", price: 9.5, quantity: 2, currency: "GBP" };
const p = partitionOf("alice", P);
const enc = (e: IEvent) => pb.Event.encode(e).finish();
const reason = (bytes: Uint8Array, partition = p) => {
  const r = decodeEvent(bytes, partition, now, o);
  return r.ok ? "OK" : r.reason;
};

describe("wire - event validation", () => {
  it("wire - a valid event decodes with its fields", () => {
    const r = decodeEvent(enc(base), p, now, o);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.event.toJSON()).toMatchObject({ eventId: "e1", userId: "alice", type: "PURCHASE", price: 9.5, quantity: 2 });
  });

  it("wire - each rule has its dead-letter reason", () => {
    const cases: [string, Uint8Array, number?][] = [
      ["MALFORMED", new Uint8Array([0xff, 0xff, 0xff])],
      ["MALFORMED", enc(base).subarray(0, 12)],
      ["TOO_LARGE", enc({ ...base, reviewText: "x".repeat(5000) })],
      ["MISSING_EVENT_ID", enc({ ...base, eventId: "" })],
      ["MISSING_USER_ID", enc({ ...base, userId: "" }), partitionOf("", P)],
      ["BAD_ID", enc({ ...base, userId: "u".repeat(300) }), partitionOf("u".repeat(300), P)],
      ["UNKNOWN_TYPE", enc({ ...base, type: 0 as EventType })],
      ["UNKNOWN_TYPE", enc({ ...base, type: 42 as EventType })],
      ["BAD_TIMESTAMP", enc({ ...base, timestampMs: 0 })],
      ["BAD_TIMESTAMP", enc({ ...base, timestampMs: now + 3_600_000 })],
      ["BAD_PRICE", enc({ ...base, price: -1 })],
      ["BAD_PRICE", enc({ ...base, price: Number.NaN })],
      ["BAD_PRICE", enc({ ...base, price: 2e9 })],
      ["BAD_QUANTITY", enc({ ...base, quantity: 2_000_000 })],
      ["BAD_RATING", enc({ ...base, type: EventType.REVIEW, rating: 6 })],
      ["MISSING_ITEM_ID", enc({ ...base, itemId: "" })],
      ["MISSING_QUERY", enc({ ...base, type: EventType.SEARCH, itemId: "" })],
      ["FIELD_TOO_LONG", enc({ ...base, itemId: "i".repeat(300) })],
      ["FIELD_TOO_LONG", enc({ ...base, attributes: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, "v"])) })],
      ["CURRENCY_MISMATCH", enc({ ...base, currency: "USD" })],
      ["WRONG_PARTITION", enc(base), (p + 1) % P],
      ["MISSING_TARGET", enc({ ...base, type: EventType.FOLLOW, itemId: "" })],
      ["MISSING_TARGET", enc({ ...base, type: EventType.UNFOLLOW, itemId: "" })],
      ["SELF_TARGET", enc({ ...base, type: EventType.FOLLOW, itemId: "", targetUserId: base.userId })],
      ["SELF_TARGET", enc({ ...base, type: EventType.SHARE, targetUserId: base.userId })],
      ["MISSING_ITEM_ID", enc({ ...base, type: EventType.SHARE, itemId: "", targetUserId: "bob" })],
      ["BAD_ID", enc({ ...base, type: EventType.FOLLOW, targetUserId: "b".repeat(257) })],
      ["BAD_NOTICE", enc({ ...base, type: EventType.SOCIAL_NOTICE, socialNotice: { kind: 1, fromKey: "bob" } })],
      ["BAD_NOTICE", enc({ ...base, type: EventType.SOCIAL_NOTICE, forwarded: true })],
      ["OK", enc({ ...base, type: EventType.FOLLOW, itemId: "", targetUserId: "bob" })],
      ["OK", enc({ ...base, type: EventType.SHARE, targetUserId: "" })],
      ["OK", enc({ ...base, type: EventType.SOCIAL_NOTICE, forwarded: true, socialNotice: { kind: 1, fromKey: "bob", fromPartition: 2 } })],
      // The batch form (social_notices): each notice needs a known kind, from_key and to_key; at most 256; not with social_notice.
      ["OK", enc({ ...base, type: EventType.SOCIAL_NOTICE, forwarded: true, socialNotices: [{ kind: 1, fromKey: "bob", toKey: "al" }, { kind: 5, fromKey: "cy", toKey: "di", categories: ["c"], shares: [1] }] })],
      ["BAD_NOTICE", enc({ ...base, type: EventType.SOCIAL_NOTICE, socialNotices: [{ kind: 1, fromKey: "bob", toKey: "al" }] })],
      ["BAD_NOTICE", enc({ ...base, type: EventType.SOCIAL_NOTICE, forwarded: true, socialNotices: [{ kind: 1, fromKey: "bob", toKey: "al" }, { kind: 6 as never, fromKey: "bob", toKey: "al" }] })],
      ["BAD_NOTICE", enc({ ...base, type: EventType.SOCIAL_NOTICE, forwarded: true, socialNotices: [{ kind: 1, fromKey: "bob" }] })],
      ["BAD_NOTICE", enc({ ...base, type: EventType.SOCIAL_NOTICE, forwarded: true, socialNotices: [{ kind: 1, toKey: "al" }] })],
      ["BAD_NOTICE", enc({ ...base, type: EventType.SOCIAL_NOTICE, forwarded: true, socialNotice: { kind: 1, fromKey: "bob" }, socialNotices: [{ kind: 1, fromKey: "bob", toKey: "al" }] })],
      ["BAD_NOTICE", enc({ ...base, type: EventType.SOCIAL_NOTICE, forwarded: true, socialNotices: Array.from({ length: 257 }, () => ({ kind: 1, fromKey: "bob", toKey: "al" })) })],
    ];
    for (const [want, bytes, part] of cases) expect(reason(bytes, part ?? p), want).toBe(want);
  });

  it("wire - a user id that is not valid UTF-8 is BAD_ID", () => {
    const good = enc({ ...base, userId: "ab" });
    const i = Buffer.from(good).indexOf(Buffer.from("ab"));
    const bad = good.slice();
    bad[i] = 0xff;
    const r = decodeEvent(bad, partitionOf("\uFFFDb", P), now, o);
    expect(r.ok ? "OK" : r.reason).toBe("BAD_ID");
  });

  it("wire - a search needs no item and an empty currency is accepted", () => {
    expect(reason(enc({ ...base, type: EventType.SEARCH, itemId: "", searchQuery: "red shoes" }))).toBe("OK");
    expect(reason(enc({ ...base, attributes: Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`k${i}`, "v"])) }))).toBe("OK");
    expect(reason(enc({ ...base, currency: "" }))).toBe("OK");
  });

  it("wire - boundary values: the limits themselves are accepted, one past them is not", () => {
    expect(reason(enc({ ...base, price: 1e9 }))).toBe("OK");
    expect(reason(enc({ ...base, price: -0 }))).toBe("OK");
    expect(reason(enc({ ...base, price: Number.MIN_VALUE }))).toBe("OK");
    expect(reason(enc({ ...base, price: -Number.MIN_VALUE }))).toBe("BAD_PRICE");
    expect(reason(enc({ ...base, price: Number.NEGATIVE_INFINITY }))).toBe("BAD_PRICE");
    expect(reason(enc({ ...base, quantity: 1e6 }))).toBe("OK");
    expect(reason(enc({ ...base, quantity: -1 }))).toBe("BAD_QUANTITY"); // uint32: -1 travels as 4294967295
    expect(reason(enc({ ...base, rating: 5 }))).toBe("OK");
    expect(reason(enc({ ...base, timestampMs: 946_684_800_000 }))).toBe("OK");
    expect(reason(enc({ ...base, timestampMs: 946_684_799_999 }))).toBe("BAD_TIMESTAMP");
    expect(reason(enc({ ...base, timestampMs: now + 60_000 }))).toBe("OK");
    expect(reason(enc({ ...base, timestampMs: now + 60_001 }))).toBe("BAD_TIMESTAMP");
    expect(reason(enc({ ...base, type: -1 as EventType }))).toBe("UNKNOWN_TYPE");
    expect(reason(enc({ ...base, type: EventType.REC_CLICK }))).toBe("OK");
    // The last type the contract knows is SOCIAL_NOTICE (README "Social ties"); one above it is unknown.
    expect(reason(enc({ ...base, type: (EventType.SOCIAL_NOTICE + 1) as EventType }))).toBe("UNKNOWN_TYPE");
    expect(reason(enc({ ...base, eventId: "e".repeat(128) }))).toBe("OK");
    expect(reason(enc({ ...base, eventId: "e".repeat(129) }))).toBe("BAD_ID");
    expect(reason(enc({ ...base, itemId: "i".repeat(256) }))).toBe("OK");
    const u256 = "u".repeat(256);
    expect(reason(enc({ ...base, userId: u256 }), partitionOf(u256, P))).toBe("OK");
    // timestamp_ms = 2^64 - 1 as a raw varint (no JS number encodes it exactly).
    const noTime = { ...base };
    delete noTime.timestampMs;
    expect(reason(Uint8Array.from([...enc(noTime), 0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]))).toBe("BAD_TIMESTAMP");
    // A varint longer than 10 bytes, a wire type 6/7, a group end without start: MALFORMED, never a throw.
    expect(reason(Uint8Array.from([...enc(base), 0x20, ...Array<number>(11).fill(0xff), 0x01]))).toBe("MALFORMED");
    expect(reason(Uint8Array.from([...enc(base), 0x0e]))).toBe("MALFORMED");
    expect(reason(Uint8Array.from([...enc(base), 0xa4, 0x06]))).toBe("MALFORMED");
    // Unknown fields (a newer publisher) are skipped.
    expect(reason(Uint8Array.from([...enc(base), 0xa0, 0x06, 0x01, 0xa2, 0x06, 0x02, 0x68, 0x69]))).toBe("OK");
    // An empty payload is an Event with every field unset.
    expect(reason(new Uint8Array(0))).toBe("MISSING_EVENT_ID");
  });

  it("wire - invalid UTF-8 in an event id is BAD_ID; in an item id it is kept, as U+FFFD", () => {
    const withBad = (e: IEvent, seq: number[]) => {
      const b = enc(e);
      b.set(seq, Buffer.from(b).indexOf("@@@"));
      return b;
    };
    for (const seq of [[0xed, 0xa0, 0x80], [0xc0, 0xaf, 0x41], [0x80, 0x80, 0x80], [0xe2, 0x82, 0x41]]) {
      expect(reason(withBad({ ...base, eventId: "e@@@" }, seq))).toBe("BAD_ID");
      const r = decodeEvent(withBad({ ...base, itemId: "i@@@" }, seq), p, now, o);
      expect(r.ok).toBe(true);
      if (r.ok) expect(r.event.itemId).toContain("\uFFFD");
    }
  });

  it("wire - decodeShopEvent gives decodeEvent's verdict and the same fields, or leaves the event to decodeEvent", () => {
    const validation = { ...o, internalKey: new Uint8Array(32).fill(7) };
    const c: FuzzContext = { seed: 5, partitions: P, users: Array.from({ length: 50 }, (_, k) => `sf-${k}`), baseMs: now - 3_600_000, nowMs: now, validation };
    const noTime = { ...base };
    delete noTime.timestampMs;
    const odd: [string, Uint8Array][] = [
      ["a field given twice (the last one counts)", Uint8Array.from([...enc(base), ...enc({ itemId: "sku2", price: 3 })])],
      ["attributes in two entries, and a key given twice", Uint8Array.from([...enc({ ...base, attributes: { a: "1", b: "2" } }), ...enc({ attributes: { a: "3" } })])],
      ["an attribute named __proto__", enc({ ...base, attributes: { ["__proto__"]: "x" } })],
      ["a map entry with an unknown field", Uint8Array.from([...enc(base), 0x82, 0x01, 0x05, 0x0a, 0x01, 0x6b, 0x18, 0x01])],
      ["a non-canonical tag (field 1 in two bytes)", Uint8Array.from([0x8a, 0x00, 0x02, 0x65, 0x32, ...enc({ ...base, eventId: "" })])],
      ["a string field as a varint", Uint8Array.from([...enc(base), 0x28, 0x01])],
      ["an unknown field", Uint8Array.from([...enc(base), 0xa0, 0x06, 0x01])],
      ["forwarded = false on the wire", enc({ ...base, forwarded: false, hops: 0 })],
      ["forwarded", enc({ ...base, forwarded: true })],
      ["an identify", enc({ ...base, type: EventType.IDENTIFY, primaryUserId: "bob" })],
      ["timestamp 2^53 - 1", enc({ ...base, timestampMs: 2 ** 53 - 1 })],
      ["timestamp 2^64 - 1", Uint8Array.from([...enc(noTime), 0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])],
      ["a truncated price", enc(base).subarray(0, enc(base).indexOf(0x49) + 4)],
      ["rec_propensity", enc({ ...base, type: EventType.REC_CLICK, recRequestId: "rq", recPropensity: 0.25 })],
      ["empty", new Uint8Array(0)],
    ];
    const payloads = [...odd.map(([what, bytes]) => ({ what, bytes, partition: p })),
      ...[...fuzzPayloads(8_000, c)].map((f, i) => ({ what: `fuzz ${i} ${f.kind} ${f.mutation ?? ""}`, bytes: f.bytes, partition: f.partition }))];
    const differ: string[] = [];
    let fast = 0;
    let left = 0;
    for (const { what, bytes, partition } of payloads) {
      // Inside a batch's buffer, between other bytes: the decoder must read only its own.
      const data = new Uint8Array(bytes.length + 10).fill(0x8a);
      data.set(bytes, 5);
      const got = decodeShopEvent(data, 5, 5 + bytes.length, partition, now, validation);
      if (got === undefined) {
        left++;
        continue;
      }
      fast++;
      const want = decodeEvent(bytes, partition, now, validation);
      const same = "ok" in got ? JSON.stringify(got) === JSON.stringify(want) : want.ok && isDeepStrictEqual({ ...got, attributes: { ...got.attributes } }, shopEvent(want.event));
      if (!same) differ.push(`${what}: ${JSON.stringify(got)} against ${JSON.stringify(want)}`);
    }
    expect(differ).toEqual([]);
    // Both paths are taken: most payloads are read directly, the odd ones are left to protobufjs.
    expect(fast).toBeGreaterThan(4_000);
    expect(left).toBeGreaterThan(500);
    const byWhat = new Map(odd.map(([what, bytes]) => [what, decodeShopEvent(bytes, 0, bytes.length, p, now, validation) === undefined ? "left" : "read"]));
    expect(Object.fromEntries(byWhat)).toEqual({
      "a field given twice (the last one counts)": "read", "attributes in two entries, and a key given twice": "read", "an attribute named __proto__": "left",
      "a map entry with an unknown field": "left", "a non-canonical tag (field 1 in two bytes)": "read", "a string field as a varint": "left", "an unknown field": "left",
      "forwarded = false on the wire": "left", "forwarded": "left", "an identify": "left", "timestamp 2^53 - 1": "left", "timestamp 2^64 - 1": "left",
      "a truncated price": "left", "rec_propensity": "read", "empty": "read",
    });
  });

  it("wire - the partition hash is FNV-1a 32 of the UTF-8 bytes (README test vectors)", () => {
    expect(fnv1a32(new Uint8Array())).toBe(0x811c9dc5);
    expect(fnv1a32(new TextEncoder().encode("a"))).toBe(0xe40c292c);
    expect(fnv1a32(new TextEncoder().encode("foobar"))).toBe(0xbf9cf968);
    expect(partitionOf("17850", 16)).toBe(fnv1a32(new TextEncoder().encode("17850")) % 16);
    expect(partitionOf("Zoë", 16)).toBe(fnv1a32(new TextEncoder().encode("Zoë")) % 16);
  });
});

describe("bus - JetStream reply subjects", () => {
  it("bus - ackInfo reads the stream and delivery sequences, store time and pending count of both reply formats", async () => {
    const { ackInfo } = await import("../src/bus/partition-consumer.js");
    expect(ackInfo("$JS.ACK.PORTRAIT_EVENTS.portrait-p3.1.4711.12.1700000000123000000.42")).toEqual({ seq: 4711, dseq: 12, pending: 42, storedMs: 1_700_000_000_123 });
    expect(ackInfo("$JS.ACK.hub.ACCHASH.PORTRAIT_EVENTS.portrait-p3.2.4711.12.1700000000123000000.42.rnd")).toEqual({ seq: 4711, dseq: 12, pending: 42, storedMs: 1_700_000_000_123 });
    expect(() => ackInfo("_INBOX.abc")).toThrow(/not a JetStream reply subject/);
  });

  it("bus - ackSeqs reads the same sequences as ackInfo from the reply subject's bytes", async () => {
    const { ackInfo, ackSeqs } = await import("../src/bus/partition-consumer.js");
    const enc = new TextEncoder();
    for (const reply of [
      "$JS.ACK.PORTRAIT_EVENTS.portrait-p3.1.4711.12.1700000000123000000.42",
      "$JS.ACK.hub.ACCHASH.PORTRAIT_EVENTS.portrait-p3.2.4711.12.1700000000123000000.42.rnd",
      "$JS.ACK.S.c.1.9007199254740991.1.0.0",
    ]) {
      const info = ackInfo(reply);
      expect([...ackSeqs(enc.encode(reply))!], reply).toEqual([info.seq, info.dseq]);
    }
    expect(ackSeqs(enc.encode("_INBOX.abc"))).toBeUndefined();
    expect(ackSeqs(enc.encode("$JS.ACK.S.c.1.x7.1.0.0"))).toBeUndefined();
    expect(ackSeqs(enc.encode("$JS.ACK.S.c.1..1.0.0"))).toBeUndefined();
  });
});

describe("bus - batch builder", () => {
  it("bus - BatchBuilder packs each message's bytes and sequence as packBatch does, growing past its first sizes, and starts over after take", async () => {
    const { BatchBuilder, packBatch } = await import("../src/bus/event-batch.js");
    const msgs = Array.from({ length: 40 }, (_, i) => Uint8Array.from({ length: i === 20 ? 40_000 : i * 37 % 300 }, (_v, j) => (i + j) & 0xff));
    const b = new BatchBuilder(8);
    expect(b.take(3)).toBeUndefined();
    for (let round = 0; round < 2; round++) {
      // Each message sits in a larger buffer (as in a socket chunk), after 5 bytes of headers.
      msgs.forEach((m, i) => {
        const chunk = new Uint8Array(m.length + 9);
        chunk.set(m, 5);
        b.push(chunk, 5, 5 + m.length, 100 + i);
      });
      expect(b.count).toBe(msgs.length);
      const got = b.take(3)!;
      const want = packBatch(3, msgs, (m) => m, (_m, i) => 100 + i);
      expect([...got.offsets]).toEqual([...want.offsets]);
      expect([...got.seqs]).toEqual([...want.seqs]);
      expect([...got.data]).toEqual([...want.data]);
      expect(got.partition).toBe(3);
      expect(b.count).toBe(0);
    }
  });
});
