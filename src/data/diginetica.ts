/**
 * DIGINETICA (CIKM Cup 2016), `;`-separated with a header. Two event files
 * share this reader, told apart by their header:
 * - train-purchases: `sessionId;userId;timeframe;eventdate;ordernumber;itemId`
 * - train-item-views: `session_id;user_id;item_id;timeframe;eventdate`
 * Item categories come from `product-categories.csv.gz` beside them, when present.
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { EventType } from "../wire/proto.js";
import { parseInteger, parseUtcDateTime } from "./fields.js";
import { assertReadable, defineTable, readEvents, readRows, skip } from "./read-table.js";
import type { DatasetReader } from "./types.js";

export const CATEGORIES_FILE = "product-categories.csv.gz";

const EVENTS = defineTable({
  delimiter: ";",
  header: "required",
  columns: ["sessionId", "userId", "itemId", "timeframe", "eventdate", "ordernumber"],
  required: ["sessionId", "itemId", "timeframe", "eventdate"],
  optional: ["ordernumber"],
});

const CATEGORIES = defineTable({
  delimiter: ";",
  header: "required",
  columns: ["itemId", "categoryId"],
  required: ["itemId", "categoryId"],
});

/** itemId → categoryId from the categories file beside `eventFile` (empty when there is none). */
export async function loadDigineticaCategories(eventFile: string): Promise<Map<string, string>> {
  const categories = new Map<string, string>();
  const file = join(dirname(eventFile), CATEGORIES_FILE);
  if (!existsSync(file)) return categories;
  for await (const rec of readRows(file, CATEGORIES)) {
    if ("row" in rec) categories.set(rec.row.itemId, rec.row.categoryId);
  }
  return categories;
}

export const readDiginetica: DatasetReader = async function* (file, options) {
  // A missing event file should say so, not fail after loading 184k categories.
  await assertReadable(file);
  const categories = await loadDigineticaCategories(file);
  yield* readEvents("diginetica", file, EVENTS, options, (row, present) => {
    const date = parseUtcDateTime(row.eventdate);
    if (date === undefined) return skip(`bad eventdate ${JSON.stringify(row.eventdate)}`);
    // timeframe: ms since the session's start (the date has no time of day).
    const offset = parseInteger(row.timeframe);
    if (offset === undefined || offset < 0) return skip(`bad timeframe ${JSON.stringify(row.timeframe)}`);
    const purchase = present.has("ordernumber");
    if (purchase && row.ordernumber === undefined) return skip("missing ordernumber");
    return {
      // "NA" marks an anonymous session.
      userId: row.userId === undefined || row.userId === "NA" ? `dg-s${row.sessionId}` : row.userId,
      type: purchase ? EventType.PURCHASE : EventType.VIEW,
      timestampMs: date + offset,
      itemId: row.itemId,
      categoryId: categories.get(row.itemId),
      sessionId: row.sessionId,
      orderId: purchase ? row.ordernumber : undefined,
    };
  });
};
