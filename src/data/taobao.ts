/**
 * Taobao UserBehavior (Alibaba Tianchi): `user_id,item_id,category_id,behavior,unix_ts`, no header.
 */
import { EventType } from "../wire/proto.js";
import { parseInteger } from "./fields.js";
import { defineTable, readEvents, skip } from "./read-table.js";
import type { DatasetReader } from "./types.js";

const TABLE = defineTable({
  delimiter: ",",
  header: "none",
  columns: ["user_id", "item_id", "category_id", "behavior", "unix_ts"],
  required: ["user_id", "item_id", "behavior", "unix_ts"],
});

const TYPES: ReadonlyMap<string, EventType> = new Map([
  ["pv", EventType.VIEW],
  ["cart", EventType.ADD_TO_CART],
  ["fav", EventType.FAVORITE],
  ["buy", EventType.PURCHASE],
]);

export const readTaobao: DatasetReader = (file, options) =>
  readEvents("taobao", file, TABLE, options, (row) => {
    const type = TYPES.get(row.behavior);
    if (type === undefined) return skip(`unknown behavior ${JSON.stringify(row.behavior)}`);
    const seconds = parseInteger(row.unix_ts);
    if (seconds === undefined) return skip(`bad unix_ts ${JSON.stringify(row.unix_ts)}`);
    return {
      userId: row.user_id,
      type,
      timestampMs: seconds * 1000,
      itemId: row.item_id,
      categoryId: row.category_id,
    };
  });
