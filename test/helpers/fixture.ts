/**
 * The engine test fixture: one real nats-server (port -1, temp JetStream store) per
 * describe block or file, one connection to it, and a factory for in-process engines
 * with temp LMDB data dirs. Call it at the top of a file or describe block; it
 * registers its own beforeAll/afterAll, and afterAll undoes everything it started,
 * in reverse start order: the test's own cleanups, engines, data dirs, the
 * connection, the server.
 */
import { connect, type ConnectionOptions, type NatsConnection } from "nats";
import { afterAll, beforeAll } from "vitest";
import type { NatsServerHandle } from "../../src/bus/nats-server-launcher.js";
import type { EngineOptions } from "../../src/config/engine-options.js";
import type { Engine } from "../../src/engine.js";
import { removeDir, startTestEngine } from "./engine.js";
import { startTestNats, tmpDir } from "./nats.js";

export interface EngineFixture {
  /** The server (started in beforeAll). */
  readonly nats: NatsServerHandle;
  /** A plain connection to it (opened in beforeAll). */
  readonly nc: NatsConnection;
  /** Starts an engine on this server (a fresh temp data dir unless `o.dataDir`); closed and its data dir removed in afterAll. */
  startEngine(o?: EngineOptions): Promise<Engine>;
  /** A temp dir removed in afterAll. */
  tmpDir(prefix: string): string;
  /** Runs in afterAll before the engines close (last registered first), e.g. to close a client or kill a child engine. */
  onCleanup(fn: () => unknown): void;
}

/** `natsConfig`: extra nats-server config; `natsConnect`: options of the fixture's connection. */
export function useEngineFixture(opts: { natsConfig?: string; natsConnect?: ConnectionOptions } = {}): EngineFixture {
  let nats: NatsServerHandle | undefined;
  let nc: NatsConnection | undefined;
  const engines: Engine[] = [];
  const dirs: string[] = [];
  const cleanups: Array<() => unknown> = [];
  const started = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`the engine fixture's ${what} is not started yet (use it inside a test or hook)`);
    return v;
  };

  beforeAll(async () => {
    nats = await startTestNats(opts.natsConfig);
    nc = await connect({ ...opts.natsConnect, servers: nats.url });
  });

  afterAll(async () => {
    for (const fn of cleanups.splice(0).reverse()) await fn();
    await Promise.all(engines.map((e) => e.close()));
    engines.forEach((e) => removeDir(e.config.dataDir));
    dirs.forEach(removeDir);
    await nc?.close();
    await nats?.stop();
  });

  return {
    get nats() {
      return started(nats, "server");
    },
    get nc() {
      return started(nc, "connection");
    },
    async startEngine(o = {}) {
      const engine = await startTestEngine(started(nats, "server").url, o);
      engines.push(engine);
      return engine;
    },
    tmpDir(prefix) {
      const dir = tmpDir(prefix);
      dirs.push(dir);
      return dir;
    },
    onCleanup(fn) {
      cleanups.push(fn);
    },
  };
}
