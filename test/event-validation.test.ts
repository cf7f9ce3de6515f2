import { describe, expect, it } from "vitest";
import { fnv1a32, partitionOf } from "../src/bus/partition.js";
import { decodeEvent, type EventValidationOptions } from "../src/wire/event-validation.js";
import { EventType, pb, type IEvent } from "../src/wire/proto.js";

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

  it("wire - the partition hash is FNV-1a 32 of the UTF-8 bytes (README test vectors)", () => {
    expect(fnv1a32(new Uint8Array())).toBe(0x811c9dc5);
    expect(fnv1a32(new TextEncoder().encode("a"))).toBe(0xe40c292c);
    expect(fnv1a32(new TextEncoder().encode("foobar"))).toBe(0xbf9cf968);
    expect(partitionOf("17850", 16)).toBe(fnv1a32(new TextEncoder().encode("17850")) % 16);
    expect(partitionOf("Zoë", 16)).toBe(fnv1a32(new TextEncoder().encode("Zoë")) % 16);
  });
});

describe("bus - JetStream reply subjects", () => {
  it("bus - ackInfo reads the stream sequence and pending count of both reply formats", async () => {
    const { ackInfo } = await import("../src/bus/partition-consumer.js");
    expect(ackInfo("$JS.ACK.PORTRAIT_EVENTS.portrait-p3.1.4711.12.1700000000000000000.42")).toEqual({ seq: 4711, pending: 42 });
    expect(ackInfo("$JS.ACK.hub.ACCHASH.PORTRAIT_EVENTS.portrait-p3.2.4711.12.1700000000000000000.42.rnd")).toEqual({ seq: 4711, pending: 42 });
    expect(() => ackInfo("_INBOX.abc")).toThrow(/not a JetStream reply subject/);
  });
});
