/**
 * Replays a real data set through the client: reads it as a stream, paces it
 * on an open-loop schedule when a rate is given, and publishes with bounded
 * in-flight acknowledgements.
 */
import type { PortraitClient, PublishResult } from "../client/portrait-client.js";
import { readDataset } from "../data/datasets.js";
import type { DatasetEvent, DatasetFormat } from "../data/types.js";

export interface ReplayOptions {
  /** Events per second; undefined = as fast as acknowledgements allow. */
  rate?: number | undefined;
  /** Stop after this many events. */
  limit?: number | undefined;
  /** Read and leave out this many events first (the resume point an interrupted replay printed). */
  skip?: number | undefined;
  /** Stops reading when aborted; what was read is still published and acknowledged before replay resolves. */
  signal?: AbortSignal | undefined;
  onProgress?: (published: number) => void;
  /** Sees every event before it is published (the demo counts users with it). */
  onEvent?: (e: DatasetEvent) => void;
}

export interface ReplayResult extends PublishResult {
  /** Events read and published (after the skipped ones). */
  read: number;
  skippedRows: number;
  seconds: number;
  /** True when the signal stopped the replay before the end of the file (or the limit). */
  interrupted: boolean;
  /** `--skip` value that resumes after the last event published: skip + read. */
  resumeSkip: number;
}

async function* paced(events: AsyncIterable<DatasetEvent>, rate: number | undefined, signal: AbortSignal | undefined, onEvent?: (e: DatasetEvent) => void): AsyncIterable<DatasetEvent> {
  const start = performance.now();
  let i = 0;
  for await (const e of events) {
    if (signal?.aborted) return;
    if (rate !== undefined) {
      const due = start + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    }
    i++;
    onEvent?.(e);
    yield e;
  }
}

export async function replay(client: PortraitClient, format: DatasetFormat, file: string, o: ReplayOptions = {}): Promise<ReplayResult> {
  let read = 0;
  let skippedRows = 0;
  const t0 = performance.now();
  const events = readDataset(format, file, {
    ...(o.limit !== undefined ? { limit: o.limit } : {}),
    ...(o.skip !== undefined ? { skipEvents: o.skip } : {}),
    onSkip: () => void skippedRows++,
  });
  const counted = paced(events, o.rate, o.signal, (e) => {
    read++;
    o.onEvent?.(e);
  });
  const r = await client.publishMany(counted, o.onProgress);
  return {
    ...r, read, skippedRows, seconds: (performance.now() - t0) / 1000,
    interrupted: o.signal?.aborted === true, resumeSkip: (o.skip ?? 0) + read,
  };
}
