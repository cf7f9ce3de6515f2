/**
 * Connecting to NATS, for the engine and the client alike. Reconnects forever
 * by default: a broker restart is a pause, not a failure.
 */
import { connect, type ConnectionOptions, type NatsConnection } from "nats";

export interface NatsConnectOptions {
  /** Server URL(s), comma-separated. */
  url: string;
  /** Connection name shown by the server (`nats server report connections`). */
  name: string;
  user?: string | undefined;
  pass?: string | undefined;
  token?: string | undefined;
  /** Give up after this many failed reconnects; -1 = never. Default -1. */
  maxReconnectAttempts?: number;
  /** Timeout of the first connection, ms. Default 5000. */
  timeoutMs?: number;
}

export function connectNats(o: NatsConnectOptions): Promise<NatsConnection> {
  const opts: ConnectionOptions = {
    servers: o.url.split(",").map((s) => s.trim()),
    name: o.name,
    maxReconnectAttempts: o.maxReconnectAttempts ?? -1,
    reconnectTimeWait: 250,
    timeout: o.timeoutMs ?? 5000,
    pingInterval: 10_000,
    // nats.js otherwise builds an Error per request for async stack traces: a third of a publisher's CPU.
    noAsyncTraces: true,
  };
  if (o.user !== undefined) opts.user = o.user;
  if (o.pass !== undefined) opts.pass = o.pass;
  if (o.token !== undefined) opts.token = o.token;
  return connect(opts);
}
