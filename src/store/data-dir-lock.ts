/**
 * One engine per data dir. Two engines on one LMDB environment would both take
 * the partitions' consumers, answer from stale actor caches and break each
 * other's commit chains, so the second one is refused.
 *
 * The lock is a listening Unix socket whose name is derived from the data
 * dir's real path. On Linux it lives in the abstract namespace: the kernel
 * releases it when the process dies, however it dies (SIGKILL included), and
 * binding it is atomic, so there is no stale lock and no race between two
 * starters. Elsewhere it is a socket file `<dataDir>/engine.sock`; a file left
 * by a dead process refuses connections and is replaced.
 *
 * The holder answers every connection with its owner description (pid, start
 * time, NATS URL, HTTP port) and closes it; that is how the refusal names the
 * running engine.
 *
 * Scope: processes in the same network namespace (the abstract namespace is
 * per network namespace). Two containers sharing a volume but not a network
 * namespace are not kept apart by it.
 */
import { createHash } from "node:crypto";
import { mkdirSync, realpathSync, unlinkSync } from "node:fs";
import { connect, createServer, type Server } from "node:net";
import { join } from "node:path";
import { ConfigError } from "../errors.js";

/** What a refused starter is told about the engine that holds the lock. */
export interface LockOwner {
  pid: number;
  startedAt: string;
  natsUrl?: string;
  httpPort?: number;
}

function socketPath(dataDir: string): string {
  if (process.platform === "linux") {
    const id = createHash("sha256").update(realpathSync(dataDir)).digest("hex").slice(0, 32);
    return `\0portrait-engine-${id}`;
  }
  return join(dataDir, "engine.sock");
}

/** Reads the holder's description, or undefined when nobody answers (a stale socket file). */
function askOwner(path: string): Promise<LockOwner | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = connect(path);
    const timer = setTimeout(() => s.destroy(), 2000);
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("error", () => undefined);
    s.on("close", () => {
      clearTimeout(timer);
      try {
        resolve(chunks.length > 0 ? (JSON.parse(Buffer.concat(chunks).toString("utf8")) as LockOwner) : undefined);
      } catch {
        resolve(undefined);
      }
    });
  });
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

export class DataDirLock {
  readonly #server: Server;
  readonly #path: string;
  #owner: LockOwner;
  #released = false;

  private constructor(server: Server, path: string, owner: LockOwner) {
    this.#server = server;
    this.#path = path;
    this.#owner = owner;
  }

  /**
   * Takes the lock of `dataDir` (created if missing) for this process, or
   * throws a `CONFIG` error naming the engine that holds it.
   */
  static async acquire(dataDir: string): Promise<DataDirLock> {
    mkdirSync(dataDir, { recursive: true });
    const path = socketPath(dataDir);
    const owner: LockOwner = { pid: process.pid, startedAt: new Date().toISOString() };
    let lock: DataDirLock | undefined;
    const server = createServer((s) => s.end(JSON.stringify(lock?.owner ?? owner)));
    // The lock must not keep a process alive that has nothing else to do.
    server.unref();
    for (let attempt = 0; ; attempt++) {
      try {
        await listen(server, path);
        lock = new DataDirLock(server, path, owner);
        return lock;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
        const holder = await askOwner(path);
        if (holder !== undefined || attempt > 0 || path.startsWith("\0")) {
          const who = holder === undefined ? "another process"
            : `the engine with pid ${holder.pid}, started ${holder.startedAt}` +
              `${holder.natsUrl !== undefined ? `, NATS ${holder.natsUrl}` : ""}${holder.httpPort !== undefined ? `, metrics on port ${holder.httpPort}` : ""}`;
          throw new ConfigError(`data dir ${dataDir} is in use by ${who}; stop it first, or give this engine another --data-dir`);
        }
        // A socket file nobody answers on: left by a process that died.
        unlinkSync(path);
      }
    }
  }

  /** The description given to refused starters. */
  get owner(): LockOwner {
    return this.#owner;
  }

  /** Adds what the running engine knows once started (its NATS URL, its HTTP port). */
  describe(more: Partial<Omit<LockOwner, "pid" | "startedAt">>): void {
    this.#owner = { ...this.#owner, ...more };
  }

  /** Releases the lock. Idempotent. */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    await new Promise<void>((r) => this.#server.close(() => r()));
    if (!this.#path.startsWith("\0")) {
      try {
        unlinkSync(this.#path);
      } catch {
        // Already gone.
      }
    }
  }
}
