/**
 * Where training reads its events: the shop's own JetStream stream (the
 * engine's event stream, read with an ordered consumer) or a public data set
 * file. Either way the result is the same list of profile events, sorted by
 * event time (stable: stream or file order within one time), which the example
 * builders replay through the engine's own `applyEvent`.
 *
 * From the stream, events are decoded and validated with the engine's own
 * `decodeEvent`: what the engine dead-lettered is skipped here too (counted).
 * `sinceMs` / `untilMs` bound the event time: [since, until).
 */
import { connectNats, type NatsOptions } from "../bus/connect.js";
import { readEventStream } from "../bus/stream-reader.js";
import { subjects } from "../bus/subjects.js";
import { readDataset, resolveDataFile } from "../data/datasets.js";
import type { DatasetEvent, DatasetFormat } from "../data/types.js";
import { BadRequestError } from "../errors.js";
import { toUserEvent, type UserEvent } from "../examples/churn-data.js";
import { streamSource } from "../models/evidence.js";
import { decodeEvent } from "../wire/event-validation.js";

export interface TrainingEvents {
  /** "stream:<stream name>" or "file:<format>:<path>". */
  source: string;
  events: UserEvent[];
  /** Messages read (stream) or rows read (file), and what was skipped: undecodable, invalid, or outside [since, until). */
  read: number;
  skipped: { invalid: number; outOfWindow: number };
}

export interface StreamEventsOptions extends NatsOptions {
  /** Subject prefix of the deployment (default "portrait"). */
  prefix?: string;
  /** Partition count of the deployment; events on a wrong partition are skipped as the engine dead-letters them. Default: not checked. */
  partitions?: number;
  sinceMs?: number;
  untilMs?: number;
  onProgress?: (read: number, lastSeq: number) => void;
}

function inWindow(t: number, o: { sinceMs?: number | undefined; untilMs?: number | undefined }): boolean {
  return (o.sinceMs === undefined || t >= o.sinceMs) && (o.untilMs === undefined || t < o.untilMs);
}

function sortByTime(events: UserEvent[]): UserEvent[] {
  return events.sort((a, b) => a.timestampMs - b.timestampMs);
}

export async function streamEvents(o: StreamEventsOptions): Promise<TrainingEvents> {
  if (o.sinceMs !== undefined && o.untilMs !== undefined && !(o.sinceMs < o.untilMs)) {
    throw new BadRequestError(`--since (${new Date(o.sinceMs).toISOString()}) must be before --until (${new Date(o.untilMs).toISOString()})`);
  }
  const s = subjects(o.prefix ?? "portrait");
  const nc = await connectNats({ ...o, name: "portrait-train" });
  const events: UserEvent[] = [];
  const skipped = { invalid: 0, outOfWindow: 0 };
  let read = 0;
  try {
    const jsm = await nc.jetstreamManager();
    try {
      await jsm.streams.info(s.eventStream);
    } catch (err) {
      throw new BadRequestError(`no event stream ${s.eventStream} at ${o.natsUrl ?? "the NATS server"} (is --prefix right?): ${(err as Error).message}`, { cause: err });
    }
    const validation = { partitions: o.partitions ?? 1, maxEventBytes: Number.MAX_SAFE_INTEGER, maxFutureSkewMs: Number.MAX_SAFE_INTEGER };
    const r = await readEventStream(nc.jetstream(), jsm, s, (m) => {
      const d = decodeEvent(m.data, o.partitions !== undefined ? m.partition : 0, Date.now(), validation);
      if (!d.ok) {
        skipped.invalid++;
        return;
      }
      const e = d.event;
      if (!inWindow(e.timestampMs, o)) {
        skipped.outOfWindow++;
        return;
      }
      events.push(toUserEvent(e as unknown as DatasetEvent));
    }, { ...(o.onProgress !== undefined ? { onProgress: o.onProgress } : {}) });
    read = r.read;
  } finally {
    await nc.close();
  }
  return { source: streamSource(s.eventStream), events: sortByTime(events), read, skipped };
}

export async function fileEvents(
  dataDir: string, format: DatasetFormat, file: string | undefined, o: { limit?: number; sinceMs?: number; untilMs?: number } = {},
): Promise<TrainingEvents> {
  const path = resolveDataFile(dataDir, format, file);
  const events: UserEvent[] = [];
  const skipped = { invalid: 0, outOfWindow: 0 };
  let read = 0;
  for await (const e of readDataset(format, path, o.limit === undefined ? undefined : { limit: o.limit })) {
    read++;
    if (!inWindow(e.timestampMs, o)) {
      skipped.outOfWindow++;
      continue;
    }
    events.push(toUserEvent(e));
  }
  return { source: `file:${format}:${path.split("/").at(-1)}`, events: sortByTime(events), read, skipped };
}
