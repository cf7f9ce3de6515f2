/**
 * Strict parsers for the text fields of the data sets. Each returns
 * `undefined` for text it does not accept, so a reader can skip the row with a
 * reason instead of publishing NaN or a guessed value.
 */

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?$/;

/** A base-10 integer within the safe range ("12", "-3"). */
export function parseInteger(text: string): number | undefined {
  if (!INTEGER.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** A finite decimal number ("2.55", "-1", ".5"). */
export function parseDecimal(text: string): number | undefined {
  if (!DECIMAL.test(text)) return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

/** Unix seconds, possibly fractional ("1396437466.94"), as epoch milliseconds. */
export function parseUnixSeconds(text: string): number | undefined {
  const s = parseDecimal(text);
  // Rounding absorbs the binary error of `s * 1000` (1396437466.94 * 1000 is not exact).
  return s === undefined || s < 0 ? undefined : Math.round(s * 1000);
}

/** "YYYY-MM-DD[ HH:MM[:SS]]" read as if it were UTC, in ms. */
function parseWallClock(text: string): number | undefined {
  const m = DATE_TIME.exec(text);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1).map((p) => (p === undefined ? 0 : Number(p)));
  const ms = Date.UTC(year!, month! - 1, day!, hour!, minute!, second!);
  // Date.UTC rolls "2011-02-30" over into March; a real date survives the round trip.
  const d = new Date(ms);
  if (d.getUTCFullYear() !== year || d.getUTCMonth() !== month! - 1 || d.getUTCDate() !== day) return undefined;
  if (hour! > 23 || minute! > 59 || second! > 59) return undefined;
  return ms;
}

/**
 * A UTC date or date-time: "2016-05-09", "2019-10-01 00:00:00",
 * "2019-10-01 00:00:00 UTC", "2019-10-01T00:00:00Z".
 */
export function parseUtcDateTime(text: string): number | undefined {
  return parseWallClock(text.replace(/(?:\s*UTC|Z)$/, ""));
}

const offsetFormats = new Map<string, Intl.DateTimeFormat>();

/** The zone's UTC offset (ms, east positive) at instant `utcMs`. */
function zoneOffsetMs(timeZone: string, utcMs: number): number {
  let fmt = offsetFormats.get(timeZone);
  if (!fmt) {
    fmt = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    offsetFormats.set(timeZone, fmt);
  }
  const p: Record<string, number> = {};
  for (const part of fmt.formatToParts(utcMs)) if (part.type !== "literal") p[part.type] = Number(part.value);
  const wall = Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!, p.second!);
  return wall - (utcMs - (((utcMs % 1000) + 1000) % 1000));
}

/**
 * A local date-time in an IANA time zone ("2011-06-01 10:00:00" in
 * "Europe/London") as epoch ms UTC. A time repeated when clocks go back is
 * read as the first (summer-time) one; a time skipped when clocks go forward
 * is read with the offset in force before the change, as `Date` does.
 */
export function zonedDateTimeToUtcMs(text: string, timeZone: string): number | undefined {
  const wall = parseWallClock(text);
  if (wall === undefined) return undefined;
  // Zones change offset at most once in two days: the offsets a day either
  // side are the only candidates, and when they agree there is no change near.
  const before = zoneOffsetMs(timeZone, wall - 86_400_000);
  const after = zoneOffsetMs(timeZone, wall + 86_400_000);
  if (before === after) return wall - before;
  const fits = (offset: number) => zoneOffsetMs(timeZone, wall - offset) === offset;
  const first = Math.max(before, after);
  const second = Math.min(before, after);
  if (fits(first)) return wall - first;
  if (fits(second)) return wall - second;
  return wall - before;
}

/**
 * `zonedDateTimeToUtcMs` for one zone, remembering the last answer: the rows
 * of an invoice share one timestamp, so this skips most Intl calls.
 */
export function zonedDateTimeParser(timeZone: string): (text: string) => number | undefined {
  let lastText: string | undefined;
  let lastMs: number | undefined;
  return (text) => {
    if (text !== lastText) {
      lastText = text;
      lastMs = zonedDateTimeToUtcMs(text, timeZone);
    }
    return lastMs;
  };
}
