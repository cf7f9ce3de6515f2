/**
 * Open-loop load: request i is due at start + i / rate whatever happened
 * before, and its latency is measured from that intended time to the reply,
 * so queueing behind a slow request and the sender's own lateness both count
 * (no coordinated omission). Latencies go into HDR histograms in µs.
 */
import * as hdr from "hdr-histogram-js";
import { PortraitError } from "../../src/errors.js";
import { sleep } from "./ipc.js";

/** An HDR histogram of µs from 1 µs to 120 s at 3 significant digits. */
export const newHist = (): hdr.Histogram =>
  hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });

export type Histogram = hdr.Histogram;

export interface PassResult {
  rate: number;
  scheduled: number;
  ok: number;
  errors: Record<string, number>;
  /** OK replies per second, over the schedule (or until the last reply if later). */
  achieved: number;
  /** Intended send time to reply, µs. */
  lat: hdr.Histogram;
  /** Actual send time to reply, µs (the difference is the sender's own lateness). */
  service: hdr.Histogram;
  /** Largest lateness of a send behind its intended time, ms. */
  maxSendLagMs: number;
}

/** The stable code of a failed request: PortraitError's code, a NATS error's code, else OTHER. */
export const errorCode = (err: unknown): string =>
  err instanceof PortraitError ? err.code : String((err as { code?: string })?.code ?? "OTHER");

/**
 * Sends rate x seconds requests on a fixed schedule, checking every ~1 ms
 * (Node timers) and sending all that are due. At most `maxOutstanding` are in
 * flight; one due beyond that is not sent and counts as CLIENT_LIMIT. Waits at
 * most `timeoutMs` + 5 s after the last send for the replies.
 */
export async function openLoop(rate: number, seconds: number, maxOutstanding: number, timeoutMs: number, send: (i: number) => Promise<unknown>): Promise<PassResult> {
  const scheduled = Math.max(1, Math.round(rate * seconds));
  const lat = newHist();
  const service = newHist();
  const errors: Record<string, number> = {};
  let ok = 0;
  let outstanding = 0;
  let i = 0;
  let lastReply = 0;
  let maxSendLagMs = 0;
  const start = performance.now() + 2;
  const interval = 1000 / rate;
  const fail = (code: string) => (errors[code] = (errors[code] ?? 0) + 1);
  let allSent!: () => void;
  const sent = new Promise<void>((r) => (allSent = r));
  const tick = () => {
    const now = performance.now();
    while (i < scheduled && start + i * interval <= now) {
      const intended = start + i * interval;
      const k = i++;
      if (outstanding >= maxOutstanding) {
        fail("CLIENT_LIMIT");
        continue;
      }
      outstanding++;
      const t = performance.now();
      maxSendLagMs = Math.max(maxSendLagMs, t - intended);
      send(k).then(
        () => {
          const done = performance.now();
          lat.recordValue(Math.max(1, Math.round((done - intended) * 1000)));
          service.recordValue(Math.max(1, Math.round((done - t) * 1000)));
          lastReply = Math.max(lastReply, done);
          ok++;
        },
        (err: unknown) => fail(errorCode(err)),
      ).finally(() => outstanding--);
    }
    if (i < scheduled) setTimeout(tick, Math.max(0, start + i * interval - performance.now() - 0.2));
    else allSent();
  };
  setTimeout(tick, 2);
  await sent;
  const deadline = performance.now() + timeoutMs + 5000;
  while (outstanding > 0 && performance.now() < deadline) await sleep(2);
  if (outstanding > 0) errors.UNSETTLED = outstanding;
  const end = Math.max(start + seconds * 1000, lastReply);
  return { rate, scheduled, ok, errors, achieved: ok / ((end - start) / 1000), lat, service, maxSendLagMs };
}

/** p-th percentile of a µs histogram in ms, or NaN when empty. */
export const pctMs = (h: hdr.Histogram, p: number): number => (h.totalCount > 0 ? h.getValueAtPercentile(p) / 1000 : NaN);

export const errText = (e: Record<string, number>) => Object.entries(e).map(([k, v]) => `${k} ${v}`).join(", ") || "0";
