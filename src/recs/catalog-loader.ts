/**
 * Seeds a catalog from a data set (the only I/O of src/recs). Every event
 * goes through `Catalog.observe`, so the catalog learns what each format
 * carries:
 * - online-retail: price, currency (GBP) and the product description as title;
 * - rees46: category id, category path (category_code), brand and price;
 * - taobao: category id;
 * - diginetica: category id (from product-categories.csv.gz beside the event
 *   file), and every item of that file is added with its category;
 * - yoochoose, amazon-reviews: item ids only.
 */
import { readDataset } from "../data/datasets.js";
import { loadDigineticaCategories } from "../data/diginetica.js";
import type { DatasetFormat } from "../data/types.js";
import type { Catalog } from "./catalog.js";
import { toItemEvent } from "./recs-index.js";

export interface LoadCatalogOptions {
  /**
   * Read at most this many events (default: the whole file). For diginetica
   * it also caps the items added from product-categories.csv.gz.
   */
  limit?: number;
  /** Called every 10,000 events and at the end; `total` is `limit`, or 0 when there is none. */
  onProgress?: (done: number, total: number, note: string) => void;
}

export interface LoadCatalogResult {
  /** Events read (rows the reader skipped are not counted). */
  events: number;
  /** Items added from a side file (diginetica categories). */
  sideItems: number;
  /** Catalog size afterwards. */
  items: number;
}

export async function loadCatalogFromDataset(
  catalog: Catalog, format: DatasetFormat, file: string, options: LoadCatalogOptions = {},
): Promise<LoadCatalogResult> {
  const total = options.limit ?? 0;
  let events = 0;
  for await (const e of readDataset(format, file, { limit: options.limit })) {
    const ie = toItemEvent(e);
    if (ie !== undefined) catalog.observe(ie);
    if (++events % 10_000 === 0) options.onProgress?.(events, total, "events");
  }
  let sideItems = 0;
  if (format === "diginetica") {
    const max = options.limit ?? Infinity;
    for (const [itemId, categoryId] of await loadDigineticaCategories(file)) {
      if (sideItems >= max) break;
      catalog.upsert({ itemId, categoryId });
      sideItems++;
    }
  }
  options.onProgress?.(events, total, "done");
  return { events, sideItems, items: catalog.size };
}
