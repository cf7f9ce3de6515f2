/**
 * Dataset readers turn the real public data sets (../shared/data, see
 * ../shared/DATA.md) into Portrait events. Replay, training and evaluation all
 * read data through them.
 */
import type { IEvent } from "../wire/proto.js";

/** The data-set formats `portrait replay --format` accepts. */
export const DATASET_FORMATS = ["taobao", "rees46", "online-retail", "yoochoose", "diginetica", "amazon-reviews"] as const;
export type DatasetFormat = (typeof DATASET_FORMATS)[number];

/**
 * An event as read from a data set: the protobuf message's fields, with
 * `eventId`, `userId`, `type` and `timestampMs` always set. Event ids come
 * from the row's content (`<format>:<line>:<hash of the row>`, see
 * read-table.ts `rowEventId`): replaying the same file twice publishes the same
 * ids and JetStream deduplicates them, and another file's events keep theirs
 * whatever the file is called.
 */
export type DatasetEvent = IEvent & {
  eventId: string;
  userId: string;
  type: NonNullable<IEvent["type"]>;
  timestampMs: number;
};

export interface ReadOptions {
  /** Stop after this many events (default: no limit). */
  limit?: number;
  /** Read and leave out this many events first (a replay's resume point); they do not count toward `limit`. */
  skipEvents?: number;
  /** Called for each row that cannot become an event, with the 1-based line number and why. */
  onSkip?: (line: number, reason: string) => void;
}

/** Reads one data set file as a stream of events, in file order. */
export type DatasetReader = (file: string, options?: ReadOptions) => AsyncIterable<DatasetEvent>;
