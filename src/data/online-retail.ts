/**
 * UCI Online Retail (dataset 352): one row per invoice line,
 * `InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country`.
 */
import { EventType } from "../wire/proto.js";
import { parseDecimal, parseInteger, zonedDateTimeParser } from "./fields.js";
import { defineTable, readEvents, skip } from "./read-table.js";
import type { DatasetReader } from "./types.js";

const TABLE = defineTable({
  delimiter: ",",
  header: "required",
  columns: ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"],
  // CustomerID first: 135k lines lack it, and that is the reason worth reporting.
  required: ["CustomerID", "InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice"],
});

/** The shop's invoice dates are UK wall-clock time, BST in summer. */
export const SHOP_TIME_ZONE = "Europe/London";

export const readOnlineRetail: DatasetReader = (file, options) => {
  const parseInvoiceDate = zonedDateTimeParser(SHOP_TIME_ZONE);
  return readEvents("online-retail", file, TABLE, options, (row) => {
    const quantity = parseInteger(row.Quantity);
    if (quantity === undefined) return skip(`bad Quantity ${JSON.stringify(row.Quantity)}`);
    const price = parseDecimal(row.UnitPrice);
    if (price === undefined) return skip(`bad UnitPrice ${JSON.stringify(row.UnitPrice)}`);
    if (price < 0) return skip(`negative UnitPrice ${row.UnitPrice}`);
    const timestampMs = parseInvoiceDate(row.InvoiceDate);
    if (timestampMs === undefined) return skip(`bad InvoiceDate ${JSON.stringify(row.InvoiceDate)}`);
    // Cancellations carry the cancelled quantity as a negative number.
    const cancelled = row.InvoiceNo.startsWith("C");
    if (quantity === 0 || (!cancelled && quantity < 0)) {
      return skip(`quantity ${quantity} on ${cancelled ? "cancellation" : "invoice"} ${row.InvoiceNo}`);
    }
    const attributes: Record<string, string> = {};
    if (row.Description !== undefined) attributes.description = row.Description;
    if (row.Country !== undefined) attributes.country = row.Country;
    return {
      // pandas exported the ids as floats: "17850.0".
      userId: row.CustomerID.replace(/\.0+$/, ""),
      type: cancelled ? EventType.REFUND : EventType.PURCHASE,
      timestampMs,
      itemId: row.StockCode,
      price,
      quantity: Math.abs(quantity),
      currency: "GBP",
      orderId: row.InvoiceNo,
      attributes: Object.keys(attributes).length > 0 ? attributes : undefined,
    };
  });
};
