/**
 * RecSys Challenge 2015 (YOOCHOOSE) clicks as prepared by the session-rec
 * framework: TSV `SessionId ItemId Time` (unix seconds, fractional). The
 * sessions are anonymous, so each session stands for a user.
 */
import { EventType } from "../wire/proto.js";
import { parseUnixSeconds } from "./fields.js";
import { defineTable, readEvents, skip } from "./read-table.js";
import type { DatasetReader } from "./types.js";

const TABLE = defineTable({
  delimiter: "\t",
  header: "detect",
  columns: ["SessionId", "ItemId", "Time"],
  required: ["SessionId", "ItemId", "Time"],
});

export const readYoochoose: DatasetReader = (file, options) =>
  readEvents("yoochoose", file, TABLE, options, (row) => {
    const timestampMs = parseUnixSeconds(row.Time);
    if (timestampMs === undefined) return skip(`bad Time ${JSON.stringify(row.Time)}`);
    return {
      userId: `yc-${row.SessionId}`,
      type: EventType.CLICK,
      timestampMs,
      itemId: row.ItemId,
      sessionId: row.SessionId,
    };
  });
