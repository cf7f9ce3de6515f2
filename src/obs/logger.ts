/**
 * Structured logs (pino, JSON lines on stdout). One root logger per thread;
 * components take `log.child({ component, shard })`. Never log event payloads
 * or user ids at info level or above.
 */
import { pino, type Logger } from "pino";

export type { Logger };

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { pid: process.pid, ...bindings } });
}
