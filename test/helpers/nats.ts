/** Test helpers: a real nats-server per test file, temp dirs, and condition waits (never sleeps). */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JsMsg, NatsConnection } from "nats";
import { ErrorCode, PortraitError } from "../../src/errors.js";
import { startNatsServer, type NatsServerHandle } from "../../src/bus/nats-server-launcher.js";

/** A fresh directory under the OS temp dir; the caller removes it. */
export function tmpDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix.endsWith("-") ? prefix : `${prefix}-`));
}

/**
 * Start a JetStream nats-server on a free 127.0.0.1 port with a fresh store.
 * The launcher removes that store on stop(); call stop() in afterAll.
 */
export async function startTestNats(extraConfig?: string): Promise<NatsServerHandle> {
  try {
    return await startNatsServer({ extraConfig, readyTimeoutMs: 20_000 });
  } catch (err) {
    if (err instanceof PortraitError && err.code === ErrorCode.NATS_SERVER_NOT_FOUND) {
      throw new Error(`These tests need a real nats-server (>= 2.9) binary: ${err.message}`, { cause: err });
    }
    throw err;
  }
}

function describeValue(v: unknown): string {
  if (v instanceof Error) return `${v.name}: ${v.message}`;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/**
 * Poll fn until it returns a truthy value and resolve with it. Throws after
 * timeoutMs (default 20000) with `message` plus the last value or error seen.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; message?: string } = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const intervalMs = opts.intervalMs ?? 20;
  const deadline = Date.now() + timeoutMs;
  let last: { value?: T; error?: unknown } = {};
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      last = { value };
    } catch (error) {
      last = { error };
    }
    if (Date.now() >= deadline) {
      const seen = "error" in last ? `last error: ${describeValue(last.error)}` : `last value: ${describeValue(last.value)}`;
      throw new Error(`${opts.message ?? "condition not met"} (after ${timeoutMs} ms; ${seen})`, {
        cause: "error" in last ? last.error : undefined,
      });
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * `fn()`, tried again while it fails with OVERLOADED (the engine shed the
 * request before running it, as a loaded engine may while a backlog drains),
 * every `intervalMs`, for at most `timeoutMs`; any other outcome is returned
 * or thrown as it is.
 */
export async function unlessOverloaded<T>(fn: () => Promise<T>, opts: { timeoutMs?: number; intervalMs?: number } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if ((err as { code?: unknown }).code !== "OVERLOADED" || Date.now() >= deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
  }
}

/** The first `n` messages of a stream (e.g. a prefix's DLQ stream), read with an ephemeral consumer; fails after 30 s with fewer. */
export async function readStream(nc: NatsConnection, stream: string, n: number): Promise<JsMsg[]> {
  const c = await nc.jetstream().consumers.get(stream);
  const out: JsMsg[] = [];
  await waitFor(async () => {
    const m = await c.next({ expires: 1000 });
    if (m) out.push(m);
    return out.length >= n;
  }, { timeoutMs: 30_000, message: `expected ${n} messages in ${stream}` });
  return out;
}
