/**
 * REES46 multi-category store events (Open CDP):
 * `event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session`.
 */
import { EventType } from "../wire/proto.js";
import { parseDecimal, parseUtcDateTime } from "./fields.js";
import { defineTable, readEvents, skip } from "./read-table.js";
import type { DatasetReader } from "./types.js";

const TABLE = defineTable({
  delimiter: ",",
  header: "required",
  columns: ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id", "user_session"],
  required: ["event_time", "event_type", "product_id", "user_id"],
});

const TYPES: ReadonlyMap<string, EventType> = new Map([
  ["view", EventType.VIEW],
  ["cart", EventType.ADD_TO_CART],
  ["remove_from_cart", EventType.REMOVE_FROM_CART],
  ["purchase", EventType.PURCHASE],
]);

export const readRees46: DatasetReader = (file, options) =>
  readEvents("rees46", file, TABLE, options, (row) => {
    const type = TYPES.get(row.event_type);
    if (type === undefined) return skip(`unknown event_type ${JSON.stringify(row.event_type)}`);
    const timestampMs = parseUtcDateTime(row.event_time);
    if (timestampMs === undefined) return skip(`bad event_time ${JSON.stringify(row.event_time)}`);
    const price = row.price === undefined ? undefined : parseDecimal(row.price);
    if (row.price == undefined && price === undefined) return skip(`bad price ${JSON.stringify(row.price)}`);
    // category_id is a 64-bit id beyond 2^53: it stays text.
    return {
      userId: row.user_id,
      type,
      timestampMs,
      itemId: row.product_id,
      categoryId: row.category_id,
      categoryPath: row.category_code,
      brand: row.brand,
      price,
      sessionId: row.user_session,
    };
  });
