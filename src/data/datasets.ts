/**
 * The dataset registry: which reader reads which format, and where each
 * format's default file lies inside the data directory (../shared/data by
 * default; see ../shared/DATA.md).
 */
import { statSync } from "node:fs";
import { resolve } from "node:path";
import { ErrorCode, PortraitError } from "../errors.js";
import { readAmazonReviews } from "./amazon-reviews.js";
import { readDiginetica } from "./diginetica.js";
import { readOnlineRetail } from "./online-retail.js";
import { readRees46 } from "./rees46.js";
import { readTaobao } from "./taobao.js";
import { readYoochoose } from "./yoochoose.js";
import { STDIN_PATH } from "./read-table.js";
import type { DatasetEvent, DatasetFormat, DatasetReader, ReadOptions } from "./types.js";

export const readers: Readonly<Record<DatasetFormat, DatasetReader>> = Object.freeze({
  taobao: readTaobao,
  rees46: readRees46,
  "online-retail": readOnlineRetail,
  yoochoose: readYoochoose,
  diginetica: readDiginetica,
  "amazon-reviews": readAmazonReviews,
});

/** Each format's default file, relative to the data directory. */
export const DEFAULT_DATA_FILES: Readonly<Record<DatasetFormat, string>> = Object.freeze({
  taobao: "taobao/UserBehavior_timeslice.csv.gz",
  rees46: "rees46/2019-Oct_head_sample.csv.gz",
  "online-retail": "online-retail/online_retail.csv.gz",
  yoochoose: "yoochoose-100k/yoochoose-clicks-100k_train_tr.txt.gz",
  diginetica: "diginetica/train-purchases.csv.gz",
  "amazon-reviews": "amazon-reviews/Musical_instruments_reviews_partial.csv.gz",
});

/** Reads `file` (a path, not resolved against a data directory) as `format`. */
export function readDataset(format: DatasetFormat, file: string, options?: ReadOptions): AsyncIterable<DatasetEvent> {
  return readers[format](file, options);
}

/**
 * The absolute path of `file` (default: the format's default file), resolved
 * against `dataDir` unless absolute; "-" (standard input) as it is. Throws a
 * `DATA_NOT_FOUND` PortraitError when it is not an existing file; only a
 * missing default file gets the hint about where the data sets live.
 */
export function resolveDataFile(dataDir: string, format: DatasetFormat, file?: string): string {
  if (file === STDIN_PATH) return file;
  const path = resolve(dataDir, file ?? DEFAULT_DATA_FILES[format]);
  const stat = statSync(path, { throwIfNoEntry: false });
  if (stat?.isFile()) return path;
  throw new PortraitError(
    ErrorCode.DATA_NOT_FOUND,
    `${format} data file ${stat ? "is not a file" : "not found"}: ${path}` + (file !== undefined ? "" : ". " +
      "The data sets live in ../shared/data beside the repository (see ../shared/DATA.md); " +
      "set --datasets (or PORTRAIT_DATASETS) to the directory that holds them."),
  );
}
