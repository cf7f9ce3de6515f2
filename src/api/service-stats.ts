/**
 * The figures an endpoint reports in `$SRV.STATS`, for handlers that answer
 * asynchronously. nats.js's services framework times a handler only while it
 * runs synchronously (to the millisecond) and counts an error only when the
 * handler throws, so our endpoints (which reply later, with typed error
 * replies) showed no errors and ~1 ms each. This takes the endpoint's figures
 * over: one request per reply, its whole time in ns, one error per error
 * reply. It reaches into the framework's endpoint record (`handlers[].stats`,
 * nats.js 2.x); test/services-stats.test.ts fails if that changes.
 */
import type { Service } from "nats";

interface EndpointStatsRecord {
  name: string;
  num_requests: number;
  processing_time: number;
  average_processing_time: number;
  num_errors: number;
  last_error?: string;
  countLatency(start: number): void;
}

export interface EndpointStats {
  /** One request answered after `ms`; `error` is the error reply's message, if it was one. */
  done(ms: number, error?: string): void;
}

export function asyncEndpointStats(service: Service, name: string): EndpointStats {
  const handlers = (service as unknown as { handlers?: { name: string; stats?: EndpointStatsRecord }[] }).handlers;
  const stats = handlers?.find((h) => h.name === name)?.stats;
  if (stats === undefined) throw new Error(`nats.js services: no stats record for endpoint ${name} (has the framework changed?)`);
  // The framework's own count would add a second, synchronous-only request per reply.
  stats.countLatency = () => undefined;
  return {
    done(ms, error) {
      stats.num_requests++;
      stats.processing_time += Math.round(ms * 1e6);
      stats.average_processing_time = Math.round(stats.processing_time / stats.num_requests);
      if (error !== undefined) {
        stats.num_errors++;
        stats.last_error = error;
      }
    },
  };
}
