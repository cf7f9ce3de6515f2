/**
 * The dataset readers against the real data sets (../shared/data, or
 * PORTRAIT_DATASETS). Expected values are copied from the raw files
 * (`zcat <file> | sed -n <line>p`). A few edge cases the real files do not
 * contain use small gzip files written to a temp directory.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { DEFAULT_DATA_FILES, readDataset, readers, resolveDataFile } from "../src/data/datasets.js";
import { FORMAT_PROBE_ROWS } from "../src/data/read-table.js";
import { zonedDateTimeToUtcMs } from "../src/data/fields.js";
import { DATASET_FORMATS } from "../src/data/types.js";
import type { DatasetEvent, DatasetFormat, ReadOptions } from "../src/data/types.js";
import { ErrorCode, PortraitError } from "../src/errors.js";
import { EventType } from "../src/wire/proto.js";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const DATA_DIR = process.env.PORTRAIT_DATASETS ?? resolve(REPO_ROOT, "../shared/data");

/** The real file, or a failure that names it and says where the data sets are expected. */
function dataFile(format: DatasetFormat, file?: string): string {
  try {
    return resolveDataFile(DATA_DIR, format, file);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`missing test data: ${why} (tests look in ${DATA_DIR}; set PORTRAIT_DATASETS to override)`);
  }
}

interface Read {
  events: DatasetEvent[];
  skips: { line: number; reason: string }[];
}

async function read(format: DatasetFormat, file: string, options: ReadOptions = {}): Promise<Read> {
  const skips: Read["skips"] = [];
  const events: DatasetEvent[] = [];
  const onSkip = (line: number, reason: string) => skips.push({ line, reason });
  for await (const e of readDataset(format, file, { ...options, onSkip })) events.push(e);
  return { events, skips };
}

let scratch: string | undefined;
/** A gzipped file with `text` in a temp directory (for cases the real files lack). */
function gzFile(name: string, text: string): string {
  scratch ??= mkdtempSync(join(tmpdir(), "portrait-data-"));
  const file = join(scratch, name);
  writeFileSync(file, gzipSync(text));
  return file;
}
afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const countTypes = (events: DatasetEvent[]) => {
  const counts = new Map<EventType, number>();
  for (const e of events) counts.set(e.type, (counts.get(e.type) ?? 0) + 1);
  return counts;
};

/** An event id as read-table.ts makes it: `<format>:<line>:<16 hex digits of the row's hash>`. */
const idAt = (format: DatasetFormat, line: number) => expect.stringMatching(new RegExp(`^${format}:${line}:[0-9a-f]{16}$`));
const lineOf = (e: DatasetEvent): number => Number(e.eventId.split(":")[1]);

describe("data readers", () => {
  it("data - registry: every format has a reader and an existing default file", () => {
    for (const format of DATASET_FORMATS) {
      expect(typeof readers[format]).toBe("function");
      expect(dataFile(format)).toBe(resolve(DATA_DIR, DEFAULT_DATA_FILES[format]));
    }
  });

  it("data - registry: a missing file is DATA_NOT_FOUND naming the path; only a missing default file says where the data lives", async () => {
    const missing = join(DATA_DIR, "no-such-dir/none.csv.gz");
    const thrownBy = (f: () => unknown): PortraitError => {
      try {
        f();
      } catch (err) {
        return err as PortraitError;
      }
      throw new Error("nothing thrown");
    };
    const named = thrownBy(() => resolveDataFile(DATA_DIR, "taobao", "no-such-dir/none.csv.gz"));
    expect(named).toBeInstanceOf(PortraitError);
    expect(named.code).toBe(ErrorCode.DATA_NOT_FOUND);
    expect(named.message).toContain(missing);
    expect(named.message).not.toContain("--datasets");
    const empty = mkdtempSync(join(tmpdir(), "portrait-no-datasets-"));
    const byDefault = thrownBy(() => resolveDataFile(empty, "taobao"));
    expect(byDefault.code).toBe(ErrorCode.DATA_NOT_FOUND);
    expect(byDefault.message).toContain(join(empty, DEFAULT_DATA_FILES.taobao));
    expect(byDefault.message).toContain("../shared/data");
    expect(byDefault.message).toContain("--datasets");
    for (const format of DATASET_FORMATS) {
      await expect(read(format, missing)).rejects.toMatchObject({ code: ErrorCode.DATA_NOT_FOUND });
    }
  });

  describe("taobao", () => {
    it("data - taobao: first event equals the raw first line, limit respected", async () => {
      // 543462,1715,1464116,pv,1511658000
      const { events, skips } = await read("taobao", dataFile("taobao"), { limit: 200 });
      expect(events).toHaveLength(200);
      expect(skips).toEqual([]);
      expect(events[0]).toEqual({
        eventId: idAt("taobao", 1),
        userId: "543462",
        type: EventType.VIEW,
        timestampMs: 1_511_658_000_000,
        itemId: "1715",
        categoryId: "1464116",
      });
      expect(lineOf(events[199]!)).toBe(200);
      // The first 200 lines hold 172 pv, 13 cart, 12 fav, 3 buy.
      expect(countTypes(events)).toEqual(
        new Map([
          [EventType.VIEW, 172],
          [EventType.ADD_TO_CART, 13],
          [EventType.FAVORITE, 12],
          [EventType.PURCHASE, 3],
        ]),
      );
    });

    it("data - taobao: the whole timeslice file has the documented behaviour mix", async () => {
      const { events, skips } = await read("taobao", dataFile("taobao"));
      expect(skips).toEqual([]);
      expect(events).toHaveLength(110_300);
      expect(countTypes(events)).toEqual(
        new Map([
          [EventType.VIEW, 98_361],
          [EventType.ADD_TO_CART, 6_063],
          [EventType.FAVORITE, 3_383],
          [EventType.PURCHASE, 2_493],
        ]),
      );
      const first = events.reduce((t, e) => Math.min(t, e.timestampMs), Number.POSITIVE_INFINITY);
      const last = events.reduce((t, e) => Math.max(t, e.timestampMs), 0);
      expect(first).toBe(Date.UTC(2017, 10, 26, 1, 0, 0));
      expect(last).toBe(Date.UTC(2017, 10, 26, 3, 10, 11));
    });

    it("data - taobao: an unknown behaviour or short row is skipped with its line and reason", async () => {
      const file = gzFile("taobao-bad.csv.gz", "1,2,3,pv,1511658000\n1,2,3,like,1511658000\n\n1,2,3\n4,5,6,buy,1511658001\n");
      const { events, skips } = await read("taobao", file);
      expect(events.map((e) => [e.eventId, e.type])).toEqual([
        [idAt("taobao", 1), EventType.VIEW],
        [idAt("taobao", 5), EventType.PURCHASE],
      ]);
      expect(skips).toEqual([
        { line: 2, reason: 'unknown behavior "like"' },
        { line: 4, reason: "expected 5 fields, found 3" },
      ]);
    });

    it("data - taobao: a quote that never closes is one skip at the line it opens", async () => {
      const file = gzFile("taobao-quote.csv.gz", '1,2,3,pv,1511658000\n1,"2,3,pv,1511658000\n1,2,3,pv,1511658000\n');
      const { events, skips } = await read("taobao", file);
      expect(events.map((e) => e.eventId)).toEqual([idAt("taobao", 1)]);
      expect(skips).toEqual([{ line: 2, reason: expect.stringMatching(/^malformed: Quote Not Closed/) }]);
    });

    it("data - event ids come from the rows: a file read twice keeps its ids, another file of the same name gets its own", async () => {
      scratch ??= mkdtempSync(join(tmpdir(), "portrait-data-"));
      const a = gzFile("small.csv.gz", "1,2,3,pv,1511658000\n4,5,6,buy,1511658001\n");
      mkdirSync(join(scratch, "other"), { recursive: true });
      const b = join(scratch, "other", "small.csv.gz");
      writeFileSync(b, gzipSync("7,2,3,pv,1511658000\n4,5,6,buy,1511658002\n"));
      const first = (await read("taobao", a)).events.map((e) => e.eventId);
      expect((await read("taobao", a)).events.map((e) => e.eventId)).toEqual(first);
      const other = (await read("taobao", b)).events.map((e) => e.eventId);
      expect(other).toHaveLength(2);
      for (const id of other) expect(first).not.toContain(id);
    });

    it("data - a plain (uncompressed) file reads like its gzip twin, whatever its name says", async () => {
      const text = "1,2,3,pv,1511658000\n4,5,6,buy,1511658001\n";
      const plain = join(scratch!, "plain.csv.gz");
      writeFileSync(plain, text);
      const gz = gzFile("twin.csv", text);
      const a = await read("taobao", plain);
      const b = await read("taobao", gz);
      expect(a.events).toHaveLength(2);
      expect(a.events).toEqual(b.events);
    });

    it("data - a file of another format is DATA_FORMAT, not DATA_NOT_FOUND", async () => {
      // REES46 rows read as Taobao: every row has the wrong width.
      const rees = Array.from({ length: FORMAT_PROBE_ROWS + 5 }, (_, i) =>
        `2019-10-01 00:00:0${i % 10} UTC,view,44600062,2103807459595387724,,shiseido,35.79,${i},72d76fde`).join("\n");
      const wrongWidth = gzFile("rees-as-taobao.csv.gz", rees + "\n");
      await expect(read("taobao", wrongWidth)).rejects.toMatchObject({ code: ErrorCode.DATA_FORMAT, message: expect.stringContaining("make no taobao event") });
      // Taobao rows read as REES46: the first line is no REES46 header.
      const taobao = gzFile("taobao-as-rees.csv.gz", "1,2,3,pv,1511658000\n");
      await expect(read("rees46", taobao)).rejects.toMatchObject({ code: ErrorCode.DATA_FORMAT, message: expect.stringContaining("lacks") });
    });
  });

  describe("rees46", () => {
    it("data - rees46: first event equals the raw first row, limit respected", async () => {
      // line 2: 2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3-4e00-8c23-a032dfed738c
      const { events, skips } = await read("rees46", dataFile("rees46"), { limit: 200 });
      expect(events).toHaveLength(200);
      expect(skips).toEqual([]);
      expect(events[0]).toEqual({
        eventId: idAt("rees46", 2),
        userId: "541312140",
        type: EventType.VIEW,
        timestampMs: Date.UTC(2019, 9, 1, 0, 0, 0),
        itemId: "44600062",
        categoryId: "2103807459595387724",
        brand: "shiseido",
        price: 35.79,
        sessionId: "72d76fde-8bb3-4e00-8c23-a032dfed738c",
      });
      expect(events[0]).not.toHaveProperty("categoryPath", "");
      expect(events[0]!.categoryPath).toBeUndefined();
    });

    it("data - rees46: purchase and cart map, category ids stay exact strings", async () => {
      const { events } = await read("rees46", dataFile("rees46"), { limit: 400 });
      const byLine = (line: number) => events.find((e) => lineOf(e) === line);
      // line 164: 2019-10-01 00:02:14 UTC,purchase,1004856,2053013555631882655,electronics.smartphone,samsung,130.76,543272936,8187d148-...
      expect(byLine(164)).toMatchObject({
        type: EventType.PURCHASE,
        timestampMs: Date.UTC(2019, 9, 1, 0, 2, 14),
        categoryId: "2053013555631882655",
        categoryPath: "electronics.smartphone",
        brand: "samsung",
        price: 130.76,
        userId: "543272936",
      });
      // line 333: ...,cart,5100816,2053013553375346967,,xiaomi,29.51,550121407,...
      expect(byLine(333)).toMatchObject({ type: EventType.ADD_TO_CART, itemId: "5100816", categoryId: "2053013553375346967", brand: "xiaomi" });
      expect(byLine(333)!.categoryPath).toBeUndefined();
    });
  });

  describe("online-retail", () => {
    it("data - online-retail: first event equals the raw first row, limit respected", async () => {
      // line 2: 536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
      const { events } = await read("online-retail", dataFile("online-retail"), { limit: 200 });
      expect(events).toHaveLength(200);
      expect(events[0]).toEqual({
        eventId: idAt("online-retail", 2),
        userId: "17850",
        type: EventType.PURCHASE,
        // December: London is on GMT, no offset.
        timestampMs: Date.UTC(2010, 11, 1, 8, 26, 0),
        itemId: "85123A",
        price: 2.55,
        quantity: 6,
        currency: "GBP",
        orderId: "536365",
        attributes: { description: "WHITE HANGING HEART T-LIGHT HOLDER", country: "United Kingdom" },
      });
    });

    it("data - online-retail: a C invoice is a REFUND with a positive quantity", async () => {
      // line 143: C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom
      const { events } = await read("online-retail", dataFile("online-retail"), { limit: 200 });
      const refund = events.find((e) => lineOf(e) === 143);
      expect(refund).toEqual({
        eventId: idAt("online-retail", 143),
        userId: "14527",
        type: EventType.REFUND,
        timestampMs: Date.UTC(2010, 11, 1, 9, 41, 0),
        itemId: "D",
        price: 27.5,
        quantity: 1,
        currency: "GBP",
        orderId: "C536379",
        attributes: { description: "Discount", country: "United Kingdom" },
      });
      expect(events.filter((e) => e.type === EventType.REFUND).every((e) => e.orderId!.startsWith("C") && e.quantity! > 0)).toBe(true);
    });

    it("data - online-retail: rows without CustomerID are skipped via onSkip", async () => {
      // line 624: 536414,22139,,56,2010-12-01 11:52:00,0.0,,United Kingdom (first line without a CustomerID)
      const { events, skips } = await read("online-retail", dataFile("online-retail"), { limit: 700 });
      expect(events).toHaveLength(700);
      expect(skips[0]).toEqual({ line: 624, reason: "missing CustomerID" });
      expect(skips.every((s) => s.reason === "missing CustomerID")).toBe(true);
      const lines = new Set(events.map(lineOf));
      for (const s of skips) expect(lines.has(s.line)).toBe(false);
      // Every line up to the last event is either an event or a skip.
      expect(events.length + skips.length).toBe(lineOf(events.at(-1)!) - 1);
      expect(events.every((e) => /^\d+$/.test(e.userId))).toBe(true);
    });

    it("data - online-retail: London local time becomes UTC (BST in summer, GMT in winter)", async () => {
      expect(zonedDateTimeToUtcMs("2011-06-01 10:00:00", "Europe/London")).toBe(Date.UTC(2011, 5, 1, 9, 0, 0));
      expect(zonedDateTimeToUtcMs("2010-12-01 08:26:00", "Europe/London")).toBe(Date.UTC(2010, 11, 1, 8, 26, 0));
      expect(zonedDateTimeToUtcMs("2011-12-09 12:50:00", "Europe/London")).toBe(Date.UTC(2011, 11, 9, 12, 50, 0));
      // 2011 clock changes: 27 March 01:00 UTC forward, 30 October 01:00 UTC back.
      expect(zonedDateTimeToUtcMs("2011-03-27 00:59:00", "Europe/London")).toBe(Date.UTC(2011, 2, 27, 0, 59));
      expect(zonedDateTimeToUtcMs("2011-03-27 02:00:00", "Europe/London")).toBe(Date.UTC(2011, 2, 27, 1, 0));
      expect(zonedDateTimeToUtcMs("2011-10-30 00:30:00", "Europe/London")).toBe(Date.UTC(2011, 9, 29, 23, 30));
      expect(zonedDateTimeToUtcMs("2011-10-30 01:30:00", "Europe/London")).toBe(Date.UTC(2011, 9, 30, 0, 30));
      expect(zonedDateTimeToUtcMs("2011-10-30 02:00:00", "Europe/London")).toBe(Date.UTC(2011, 9, 30, 2, 0));
      expect(zonedDateTimeToUtcMs("2011-02-30 10:00:00", "Europe/London")).toBeUndefined();

      // Real line 209117 (a June invoice) through the reader.
      const file = gzFile(
        "online_retail_june.csv.gz",
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n" +
          "555159,22916,HERB MARKER THYME,12,2011-06-01 09:06:00,0.65,15124.0,United Kingdom\n",
      );
      const { events } = await read("online-retail", file);
      expect(events[0]!.timestampMs).toBe(Date.UTC(2011, 5, 1, 8, 6, 0));
    });

    it("data - online-retail: quoted descriptions, bad quantities and negative prices", async () => {
      const file = gzFile(
        "online_retail_edge.csv.gz",
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n" +
          '536381,82567,"AIRLINE LOUNGE,METAL SIGN",2,2010-12-01 09:41:00,2.1,15311.0,United Kingdom\n' +
          '536477,22041,"RECORD FRAME 7"" SINGLE SIZE ",48,2010-12-01 12:27:00,2.1,16210.0,\n' +
          "536478,22041,X,-3,2010-12-01 12:27:00,2.1,16210.0,United Kingdom\n" +
          "536479,22041,X,3,2010-12-01 12:27:00,-2.1,16210.0,United Kingdom\n",
      );
      const { events, skips } = await read("online-retail", file);
      expect(events.map((e) => e.attributes)).toEqual([
        { description: "AIRLINE LOUNGE,METAL SIGN", country: "United Kingdom" },
        { description: 'RECORD FRAME 7" SINGLE SIZE' },
      ]);
      expect(skips).toEqual([
        { line: 4, reason: "quantity -3 on invoice 536478" },
        { line: 5, reason: "negative UnitPrice -2.1" },
      ]);
    });
  });

  describe("yoochoose", () => {
    it("data - yoochoose: header skipped, first event equals the raw first row, limit respected", async () => {
      // line 1: SessionId\tItemId\tTime; line 2: 3\t214716935\t1396437466.94
      const { events, skips } = await read("yoochoose", dataFile("yoochoose"), { limit: 200 });
      expect(events).toHaveLength(200);
      expect(skips).toEqual([]);
      expect(events[0]).toEqual({
        eventId: idAt("yoochoose", 2),
        userId: "yc-3",
        type: EventType.CLICK,
        timestampMs: 1_396_437_466_940,
        itemId: "214716935",
        sessionId: "3",
      });
      expect(events.every((e) => e.type === EventType.CLICK && e.userId === `yc-${e.sessionId}`)).toBe(true);
    });

    it("data - yoochoose: a file without a header starts with data on line 1", async () => {
      const file = gzFile("yc-noheader.txt.gz", "11\t214821275\t1396839069.277\n11\t214821371\t1396839081\n");
      const { events } = await read("yoochoose", file);
      expect(events.map((e) => [e.eventId, e.timestampMs])).toEqual([
        [idAt("yoochoose", 1), 1_396_839_069_277],
        [idAt("yoochoose", 2), 1_396_839_081_000],
      ]);
    });
  });

  describe("diginetica", () => {
    it("data - diginetica: purchases, first event equals the raw first row, with its category", async () => {
      // line 2: 150;18278;17100868;2016-05-06;16421;25911 and product-categories: 25911;822
      // line 3: 151;NA;6454547;2016-05-06;16290;175874 and 175874;747
      const { events, skips } = await read("diginetica", dataFile("diginetica"), { limit: 200 });
      expect(events).toHaveLength(200);
      expect(skips).toEqual([]);
      expect(events[0]).toEqual({
        eventId: idAt("diginetica", 2),
        userId: "18278",
        type: EventType.PURCHASE,
        timestampMs: Date.UTC(2016, 4, 6) + 17_100_868,
        itemId: "25911",
        categoryId: "822",
        sessionId: "150",
        orderId: "16421",
      });
      expect(events[1]).toMatchObject({ userId: "dg-s151", sessionId: "151", itemId: "175874", categoryId: "747", orderId: "16290" });
      expect(events.every((e) => e.type === EventType.PURCHASE && e.orderId !== undefined)).toBe(true);
    });

    it("data - diginetica: the item-views file is told apart by its header and becomes VIEWs", async () => {
      // header session_id;user_id;item_id;timeframe;eventdate; line 2: 1;NA;81766;526309;2016-05-09 and 81766;1010
      const file = dataFile("diginetica", "diginetica/sample_train-item-views.csv.gz");
      const { events } = await read("diginetica", file, { limit: 200 });
      expect(events).toHaveLength(200);
      expect(events[0]).toEqual({
        eventId: idAt("diginetica", 2),
        userId: "dg-s1",
        type: EventType.VIEW,
        timestampMs: Date.UTC(2016, 4, 9) + 526_309,
        itemId: "81766",
        categoryId: "1010",
        sessionId: "1",
      });
      expect(events.every((e) => e.type === EventType.VIEW && e.orderId === undefined)).toBe(true);
    });

    it("data - diginetica: without a categories file beside it, events have no category", async () => {
      const file = gzFile("train-purchases.csv.gz", "sessionId;userId;timeframe;eventdate;ordernumber;itemId\n150;18278;17100868;2016-05-06;16421;25911\n");
      const { events } = await read("diginetica", file);
      expect(events).toHaveLength(1);
      expect(events[0]!.categoryId).toBeUndefined();
    });
  });

  describe("amazon-reviews", () => {
    it("data - amazon-reviews: first event equals the raw first row, without the reviewer's name", async () => {
      // line 1: A2IBPI20UZIR0U,1384719342,"cassandra tu ""Yeah, well, that's just like, u...","[0, 0]","Not much to write
      // about here, ...",5,good,1393545600,"02 28, 2014"
      const { events, skips } = await read("amazon-reviews", dataFile("amazon-reviews"), { limit: 200 });
      expect(events).toHaveLength(200);
      expect(skips).toEqual([]);
      expect(events[0]).toEqual({
        eventId: idAt("amazon-reviews", 1),
        userId: "A2IBPI20UZIR0U",
        type: EventType.REVIEW,
        timestampMs: 1_393_545_600_000,
        itemId: "1384719342",
        rating: 5,
        reviewText: expect.stringMatching(/^Not much to write about here, .* despite their pricing,$/),
        attributes: { summary: "good" },
      });
      expect(JSON.stringify(events[0])).not.toContain("cassandra");
      expect(events.every((e) => e.type === EventType.REVIEW && Number.isInteger(e.rating) && e.rating! >= 1 && e.rating! <= 5)).toBe(true);
    });
  });
});
