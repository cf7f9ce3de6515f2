/**
 * Amazon product reviews (J. McAuley, UCSD), 5-core CSV export, no header:
 * `reviewerID,asin,reviewerName,helpful,reviewText,overall,summary,unixReviewTime,reviewTime`.
 * reviewerName is personal data and is deliberately never read into an event.
 */
import { EventType } from "../wire/proto.js";
import { parseDecimal, parseInteger } from "./fields.js";
import { defineTable, readEvents, skip } from "./read-table.js";
import type { DatasetReader } from "./types.js";

const TABLE = defineTable({
  delimiter: ",",
  header: "none",
  columns: [
    "reviewerID",
    "asin",
    "reviewerName",
    "helpful",
    "reviewText",
    "overall",
    "summary",
    "unixReviewTime",
    "reviewTime",
  ],
  required: ["reviewerID", "asin", "overall", "unixReviewTime"],
});

export const readAmazonReviews: DatasetReader = (file, options) =>
  readEvents("amazon-reviews", file, TABLE, options, (row) => {
    // Some exports write the star rating as "5.0".
    const rating = parseDecimal(row.overall);
    if (rating === undefined || !Number.isInteger(rating) || rating < 1 || rating > 5) {
      return skip(`bad overall rating ${JSON.stringify(row.overall)}`);
    }
    const seconds = parseInteger(row.unixReviewTime);
    if (seconds === undefined) return skip(`bad unixReviewTime ${JSON.stringify(row.unixReviewTime)}`);
    return {
      userId: row.reviewerID,
      type: EventType.REVIEW,
      timestampMs: seconds * 1000,
      itemId: row.asin,
      rating,
      reviewText: row.reviewText,
      attributes: row.summary === undefined ? undefined : { summary: row.summary },
    };
  });
