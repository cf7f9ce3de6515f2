/**
 * Starts and stops a private redis-server child process for the Redis
 * baseline's tests and scratch runs, so that they never touch the machine's
 * shared Redis at 127.0.0.1:6379.
 *
 * Same pattern as src/bus/nats-server-launcher.ts: the binary is looked up
 * with that module's findNatsServerBinary (a generic "executable on PATH or
 * at this path" lookup once a name is given; its nats-specific error is
 * replaced by ours), the server gets a free 127.0.0.1 port and a private temp
 * dir, readiness is a PING answered with +PONG before a deadline, and stop()
 * sends SIGTERM (SIGKILL after a grace period) and removes the temp dir. The
 * server keeps nothing on disk: `--save "" --appendonly no`.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { findNatsServerBinary } from "../../src/bus/nats-server-launcher.js";
import { freePort, terminateServer, trackChild, type ExitInfo, type RunningServer } from "../../src/bus/server-process.js";

export interface RedisServerOptions {
  /** Path or bare name (searched on PATH) of the binary; default "redis-server" on PATH, then /usr/bin/redis-server. */
  binary?: string;
  /** Max ms to wait for the first PONG (default 10000). */
  readyTimeoutMs?: number;
  /** Extra command-line arguments, e.g. ["--maxmemory", "256mb"]. Must not set port, bind, dir, save or appendonly. */
  extraArgs?: string[];
  /** Called with each line the server prints (default: ignored). */
  onLog?: (line: string) => void;
}

export interface RedisServerHandle {
  /** "redis://127.0.0.1:<port>". */
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** SIGTERM then wait for exit (SIGKILL after 5 s); idempotent; removes the server's temp dir. */
  stop(): Promise<void>;
}

/** Thrown when no redis-server binary can be found. */
export class RedisServerNotFoundError extends Error {
  override readonly name = "RedisServerNotFoundError";
}

const DEFAULT_READY_TIMEOUT_MS = 10_000;
const KILL_AFTER_MS = 5_000;
const POLL_MS = 20;
const LOG_TAIL_LINES = 50;
/** Attempts when the free port we picked was taken by someone else before the server bound it. */
const PORT_ATTEMPTS = 3;
const FALLBACK_BINARY = "/usr/bin/redis-server";

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));


/**
 * Absolute path of the redis-server binary.
 * @throws RedisServerNotFoundError
 */
export function findRedisServerBinary(binary?: string): string {
  const candidates = binary === undefined ? ["redis-server", FALLBACK_BINARY] : [binary];
  for (const c of candidates) {
    try {
      return findNatsServerBinary(c);
    } catch {
      // not this one
    }
  }
  throw new RedisServerNotFoundError(
    `redis-server binary not found: no executable ${binary === undefined ? `"redis-server" on PATH or at ${FALLBACK_BINARY}` : JSON.stringify(binary)}. ` +
      `Install it with "apt-get install redis-server" (Debian/Ubuntu), or pass its path.`,
  );
}

/** True when a Redis at 127.0.0.1:port answers PING with +PONG within timeoutMs. */
export function pingRedis(port: number, timeoutMs = 500, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((done) => {
    let buf = "";
    let settled = false;
    const socket = netConnect({ host, port });
    const finish = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      done(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.setEncoding("latin1");
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk: string) => {
      buf += chunk;
      if (buf.includes("\r\n")) finish(buf.startsWith("+PONG"));
    });
    socket.on("error", () => finish(false));
    socket.on("close", () => finish(false));
  });
}


type Running = RunningServer;


/** Spawns on `port` and waits for PONG; on failure kills the child and throws with its last log lines (`portTaken` when it could not bind). */
async function launch(binary: string, port: number, dir: string, o: RedisServerOptions): Promise<Running> {
  const args = [
    "--port", String(port),
    "--bind", "127.0.0.1",
    "--save", "",
    "--appendonly", "no",
    "--dir", dir,
    "--daemonize", "no",
    "--logfile", "",
    ...(o.extraArgs ?? []),
  ];
  const tail: string[] = [];
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  let exitInfo: ExitInfo | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<ExitInfo>((res) => {
    child.once("close", (code, signal) => {
      exitInfo = { code, signal };
      res(exitInfo);
    });
  });
  child.once("error", (err) => {
    spawnError = err;
  });
  if (child.pid !== undefined) trackChild(child);
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream, crlfDelay: Infinity }).on("line", (line) => {
      tail.push(line);
      if (tail.length > LOG_TAIL_LINES) tail.shift();
      o.onLog?.(line);
    });
  }
  const timeoutMs = o.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const fail = async (why: string): Promise<never> => {
    if (!exitInfo && child.pid !== undefined) {
      child.kill("SIGKILL");
      await exited;
    }
    const logs = tail.length ? `\n--- last redis-server output ---\n${tail.join("\n")}` : "";
    const err = new Error(`redis-server (${binary}) ${why}${logs}`) as Error & { portTaken?: boolean };
    err.portTaken = tail.some((l) => /address already in use/i.test(l));
    throw err;
  };
  for (;;) {
    if (spawnError) return fail(`could not be started: ${spawnError.message}`);
    if (exitInfo) return fail(`exited before becoming ready (code ${exitInfo.code ?? "none"}, signal ${exitInfo.signal ?? "none"})`);
    if (Date.now() > deadline) return fail(`did not answer PING within ${timeoutMs} ms`);
    const remaining = Math.max(50, Math.min(500, deadline - Date.now()));
    if (await pingRedis(port, remaining)) break;
    await Promise.race([delay(POLL_MS), exited]);
  }
  return { child, exited, isExited: () => exitInfo !== undefined };
}

/**
 * Start a private, non-persistent redis-server on a free 127.0.0.1 port and
 * resolve once it answers PING.
 * @throws RedisServerNotFoundError when the binary is missing; Error when it exits early or is not ready in time.
 */
export async function startRedisServer(o: RedisServerOptions = {}): Promise<RedisServerHandle> {
  const binary = findRedisServerBinary(o.binary);
  const dir = mkdtempSync(join(tmpdir(), "portrait-redis-"));
  let running: Running | undefined;
  let port = 0;
  try {
    for (let attempt = 1; running === undefined; attempt++) {
      port = await freePort();
      try {
        running = await launch(binary, port, dir, o);
      } catch (err) {
        // Another process took the port between freePort() and the bind: pick again.
        if (attempt < PORT_ATTEMPTS && (err as { portTaken?: boolean }).portTaken) continue;
        throw err;
      }
    }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const r = running;
  let stopping: Promise<void> | undefined;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: r.child.pid as number,
    stop() {
      stopping ??= (async () => {
        await terminateServer(r, KILL_AFTER_MS);
        rmSync(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}
