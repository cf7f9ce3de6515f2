/**
 * The stream plumbing every dataset reader shares: read a file (gzip or plain,
 * told apart by gzip's magic bytes; "-" is standard input), parse it as
 * delimited text, name its columns, and turn rows into events with
 * content-derived ids, a limit and skip reporting. A reader only supplies a
 * `TableSpec` and a row → event function.
 */
import { createHash } from "node:crypto";
import { access, constants, open } from "node:fs/promises";
import { pipeline, Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { parse } from "csv-parse";
import type { CsvError } from "csv-parse";
import { ErrorCode, PortraitError } from "../errors.js";
import type { DatasetEvent, DatasetFormat, ReadOptions } from "./types.js";

/** Bounds memory when a stray quote would otherwise swallow the rest of a file into one field. */
const MAX_RECORD_BYTES = 1 << 20;

/** The path that means standard input. */
export const STDIN_PATH = "-";

/**
 * When this many data rows in a row at the start of a file make no event, the
 * file is not of the format it was read as (`DATA_FORMAT`), rather than a file
 * of that format whose rows are all skipped.
 */
export const FORMAT_PROBE_ROWS = 1000;

export interface TableSpec<C extends string, R extends C = never> {
  /** Field separator: ",", ";" or "\t". */
  delimiter: string;
  /**
   * "none": no header line, `columns` name the fields in order.
   * "required": the first line is a header and columns are found in it by name.
   * "detect": the first line is a header when it holds every column name,
   * otherwise it is data and `columns` name the fields in order.
   * Names match ignoring case and underscores ("session_id" = "sessionId").
   */
  header: "none" | "required" | "detect";
  columns: readonly C[];
  /** Rows where one of these is empty are skipped ("missing <column>"). */
  required?: readonly R[];
  /** Columns a header may lack; their values are then undefined. */
  optional?: readonly C[];
}

/** A row's values by column name: trimmed, `undefined` when empty or absent (never for a required column). */
export type Row<C extends string, R extends C = never> = Readonly<Record<R, string> & Record<Exclude<C, R>, string | undefined>>;

/** One data row, or the reason a line could not become one. */
export type TableRecord<C extends string, R extends C = never> =
  | { line: number; row: Row<C, R>; present: ReadonlySet<C> }
  | { line: number; skip: string };

/** Declares a table, inferring its column names from the literal. */
export function defineTable<C extends string, R extends C = never>(spec: TableSpec<C, R>): TableSpec<C, R> {
  return spec;
}

export interface Skip {
  skip: string;
}
export const skip = (reason: string): Skip => ({ skip: reason });

/** What a reader makes of a row; `readEvents` adds the event id. */
export type EventFields = Omit<DatasetEvent, "eventId">;

type RawRecord = { line: number; fields: string[] } | { line: number; skip: string };

function normalizeColumn(name: string): string {
  return name.replace(/_/g, "").toLowerCase();
}

function unreadable(file: string, err: unknown, verb: string): PortraitError {
  const why = err instanceof Error ? err.message : String(err);
  return new PortraitError(ErrorCode.DATA_NOT_FOUND, `cannot ${verb} data file ${file}: ${why}`, { cause: err });
}

function notOfFormat(file: string, why: string): PortraitError {
  return new PortraitError(ErrorCode.DATA_FORMAT, `data file ${file} does not look like the format it is read as: ${why}`);
}

/** Throws the `DATA_NOT_FOUND` error reading `file` would, without reading it. */
export async function assertReadable(file: string): Promise<void> {
  if (file === STDIN_PATH) return;
  try {
    await access(file, constants.R_OK);
  } catch (err) {
    throw unreadable(file, err, "open");
  }
}

function countLineBreaks(fields: readonly string[]): number {
  let n = 0;
  for (const f of fields) for (let i = f.indexOf("\n"); i !== -1; i = f.indexOf("\n", i + 1)) n++;
  return n;
}

/** The bytes of `src`, gunzipped when they start with gzip's magic bytes (1f 8b). Stopping early closes `src`. */
async function* decompressed(src: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const it = src[Symbol.asyncIterator]();
  let gunzip: ReturnType<typeof createGunzip> | undefined;
  try {
    let head = Buffer.alloc(0);
    let ended = false;
    while (head.length < 2) {
      const n = await it.next();
      if (n.done) {
        ended = true;
        break;
      }
      head = Buffer.concat([head, n.value]);
    }
    const rest = async function* (): AsyncGenerator<Buffer> {
      if (head.length > 0) yield head;
      if (ended) return;
      for (let n = await it.next(); !n.done; n = await it.next()) yield n.value;
    };
    if (head[0] === 0x1f && head[1] === 0x8b) {
      gunzip = createGunzip();
      pipeline(Readable.from(rest()), gunzip, () => {});
      yield* gunzip;
    } else {
      yield* rest();
    }
  } finally {
    gunzip?.destroy();
    await it.return?.();
  }
}

/** Parsed records of a delimited file (gzip or plain; "-" = stdin), with the 1-based line each starts on. */
async function* readRecords(file: string, delimiter: string): AsyncGenerator<RawRecord> {
  let source: Readable;
  if (file === STDIN_PATH) {
    source = process.stdin;
  } else {
    try {
      source = (await open(file)).createReadStream();
    } catch (err) {
      throw unreadable(file, err, "open");
    }
  }
  // Lines are counted here rather than with the parser's `info` option, which
  // copies a snapshot object per record and doubles the parse time. Empty lines
  // therefore come through as records, to be counted and dropped.
  const parser = parse({
    delimiter,
    bom: true,
    relax_quotes: true,
    relax_column_count: true,
    skip_records_with_error: true,
    max_record_size: MAX_RECORD_BYTES,
  });
  // With relaxed quotes the parser only gives up on a record whose quote never
  // closes (or outgrows MAX_RECORD_BYTES), which runs to the end of the file:
  // it is reported after the last good record, at the line it starts on.
  const failures: string[] = [];
  parser.on("skip", (err: CsvError) => failures.push(err.message));
  // Errors reach us through the parser, which pipeline destroys with them.
  pipeline(Readable.from(decompressed(source)), parser, () => {});
  let line = 1;
  try {
    for await (const record of parser as AsyncIterable<string[]>) {
      const start = line;
      // A quoted field may span lines.
      line += 1 + countLineBreaks(record);
      const fields = record.map((f) => f.trim());
      if (fields.length === 1 && fields[0] === "") continue;
      yield { line: start, fields };
    }
  } catch (err) {
    throw unreadable(file, err, "read");
  } finally {
    parser.destroy();
  }
  for (const why of failures) yield { line, skip: `malformed: ${why}` };
}

/**
 * Turns the records of `file` into rows by column name, header first: returns
 * undefined for the header line and throws a `DATA_FORMAT` PortraitError
 * when a header lacks a column the spec needs.
 */
function rowDecoder<C extends string, R extends C>(
  file: string,
  spec: TableSpec<C, R>,
): (rec: RawRecord) => TableRecord<C, R> | undefined {
  let index: readonly (number | undefined)[] | undefined;
  let width = spec.columns.length;
  let present: ReadonlySet<C> = new Set(spec.columns);
  const readHeader = (fields: readonly string[]): boolean => {
    index = spec.columns.map((_, i) => i);
    if (spec.header === "none") return false;
    const names = fields.map(normalizeColumn);
    const found = spec.columns.map((c) => names.indexOf(normalizeColumn(c)));
    if (spec.header === "detect" && found.some((i) => i < 0)) return false;
    const lacking = spec.columns.filter((c, i) => found[i]! < 0 && !spec.optional?.includes(c));
    if (lacking.length > 0) {
      throw notOfFormat(file, `its header ${JSON.stringify(fields.join(spec.delimiter))} lacks ${lacking.join(", ")}`);
    }
    index = found.map((i) => (i >= 0 ? i : undefined));
    width = names.length;
    present = new Set(spec.columns.filter((_, i) => found[i]! >= 0));
    return true;
  };
  return (rec) => {
    if ("skip" in rec) return rec;
    if (index === undefined && readHeader(rec.fields)) return undefined;
    if (rec.fields.length !== width) return { line: rec.line, skip: `expected ${width} fields, found ${rec.fields.length}` };
    const row: Record<string, string | undefined> = {};
    for (let i = 0; i < spec.columns.length; i++) {
      const at = index![i];
      const value = at === undefined ? undefined : rec.fields[at];
      row[spec.columns[i]!] = value === "" ? undefined : value;
    }
    const missing = spec.required?.find((c) => row[c] === undefined);
    if (missing !== undefined) return { line: rec.line, skip: `missing ${missing}` };
    // The check above is what makes the required columns strings.
    return { line: rec.line, row: row as unknown as Row<C, R>, present };
  };
}

/**
 * The rows of a delimited file, by column name. Throws a `DATA_NOT_FOUND`
 * PortraitError when the file cannot be opened or read, and `DATA_FORMAT`
 * when a required header lacks a column; a bad row becomes a skip record.
 */
export async function* readRows<C extends string, R extends C = never>(
  file: string,
  spec: TableSpec<C, R>,
): AsyncGenerator<TableRecord<C, R>> {
  const decode = rowDecoder(file, spec);
  for await (const rec of readRecords(file, spec.delimiter)) {
    const out = decode(rec);
    if (out) yield out;
  }
}

/**
 * The event id of a row: `<format>:<line>:<hash>`, the hash being the first 16
 * hex digits of SHA-1 over the row's fields. Replaying the same file again
 * gives the same ids (JetStream drops them as duplicates); another file's rows
 * differ in content and are not dropped, whatever the file is called.
 */
export function rowEventId(format: DatasetFormat, line: number, fields: readonly string[]): string {
  return `${format}:${line}:${createHash("sha1").update(fields.join("\x1f")).digest("hex").slice(0, 16)}`;
}

/**
 * Events from a delimited file: `toEvent` maps each row (it also gets the
 * columns the file has), and every row that is not an event goes to
 * `options.onSkip`; `options.skipEvents` events are read and left out. Event
 * ids come from `rowEventId`. Throws `DATA_FORMAT` when the first
 * FORMAT_PROBE_ROWS data rows make no event.
 */
export async function* readEvents<C extends string, R extends C = never>(
  format: DatasetFormat,
  file: string,
  spec: TableSpec<C, R>,
  options: ReadOptions | undefined,
  toEvent: (row: Row<C, R>, present: ReadonlySet<C>) => EventFields | Skip,
): AsyncGenerator<DatasetEvent> {
  const limit = options?.limit ?? Number.POSITIVE_INFINITY;
  let toSkip = options?.skipEvents ?? 0;
  const onSkip = options?.onSkip;
  const decode = rowDecoder(file, spec);
  let count = 0;
  let events = 0;
  let rows = 0;
  let firstSkip = "";
  // Not built on readRows: an async generator less per row reads a third faster.
  for await (const raw of readRecords(file, spec.delimiter)) {
    // Checked before reading on as well as after yielding, so limit 0 still opens (and checks) the file.
    if (count >= limit) return;
    const rec = decode(raw);
    if (!rec) continue;
    rows++;
    const out = "skip" in rec ? rec : toEvent(rec.row, rec.present);
    if ("skip" in out) {
      if (events === 0) {
        firstSkip ||= `line ${rec.line}: ${out.skip}`;
        if (rows >= FORMAT_PROBE_ROWS) throw notOfFormat(file, `its first ${rows} rows make no ${format} event (first: ${firstSkip})`);
      }
      onSkip?.(rec.line, out.skip);
      continue;
    }
    events++;
    if (toSkip > 0) {
      toSkip--;
      continue;
    }
    yield { eventId: rowEventId(format, rec.line, "fields" in raw ? raw.fields : []), ...out };
    if (++count >= limit) return;
  }
}
